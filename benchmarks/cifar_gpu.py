"""The CIFAR-size anchors of issue 7 (model=cifar, 35.75M parameters), naive fp32 vs the fast path. GPU work.

    python benchmarks/cifar_gpu.py                    # on a CUDA machine: prints the table for REPORT.md
    python benchmarks/cifar_gpu.py --smoke            # a seconds-long run of the same code (CPU; tests use it)

Timing only: random weights and random 32x32x3 images stand in for a trained model and CIFAR-10 (the
cost of a step does not depend on what the weights are). Rows:
- SAFEMax 1000 steps at batch 128: forget-only (the paper's objective, the anchor's setting) and with this
  project's retain term (a second batch of 128 per step); time and peak memory;
- one RA point: 500 guided samples (DDIM-50, conditional + null in one batch);
- a relearn curve: 6 budgets up to 1000 steps (k = 10, batch 10), 500 samples per point, on the unlearned
  model and the oracle.
Each row runs with every fast switch off (fp32, NCHW, no TF32, no cuDNN autotuning) and with the fast path
(bf16 autocast, TF32, channels_last; `--compile` adds torch.compile); each path is warmed up before its
timings.
"""

from __future__ import annotations

import argparse
import time

import torch

from attacks.relearn import relearn
from unlearn.diffusion import Schedule, ddim_sample
from unlearn.fast import Fast
from unlearn.methods_common import UnlearnData
from unlearn.model import Arch, build_unet, device_name, null_class
from unlearn.safemax import safemax

CIFAR = Arch(block_out_channels=(128, 256, 256, 256),
             down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
             up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
             layers_per_block=2, norm_num_groups=32, add_attention=True)
SMOKE = Arch(block_out_channels=(32, 32), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
             up_block_types=("AttnUpBlock2D", "UpBlock2D"), layers_per_block=1, norm_num_groups=8)


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timed(fn, dev) -> tuple[float, float | None]:
    """(wall seconds, peak GiB allocated on CUDA or None)."""
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    _sync(dev)
    t0 = time.perf_counter()
    fn()
    _sync(dev)
    return time.perf_counter() - t0, (torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args()
    dev = torch.device(a.device)
    arch, size = (SMOKE, 16) if a.smoke else (CIFAR, 32)
    steps, batch, n, sample_steps = (2, 4, 4, 2) if a.smoke else (1000, 128, 500, 50)
    budgets = [0, 1, 2] if a.smoke else [0, 10, 30, 100, 300, 1000]
    g = torch.Generator().manual_seed(0)
    shape = (3, size, size)
    forget = torch.rand((500, *shape), generator=g).to(dev) * 2 - 1
    retain = torch.rand((4500, *shape), generator=g).to(dev) * 2 - 1
    retain_y = torch.randint(1, 10, (4500,), generator=g).to(dev)
    schedule = Schedule.linear(device=dev)
    data = UnlearnData(forget, retain, retain_y, 0, 10, schedule)
    torch.manual_seed(0)
    base = build_unet(arch, shape, 10).to(dev)
    params = sum(p.numel() for p in base.parameters()) / 1e6
    rows = []
    for label, fast in (("naive fp32", Fast(bf16=False, tf32=False, channels_last=False)),
                        ("fast", Fast(compile=a.compile, cpu=a.smoke))):
        fast.backend(dev)

        def fresh(training=True):
            m = build_unet(arch, shape, 10).to(dev)
            m.load_state_dict(base.state_dict())
            return fast.model(m, dev, training=training)

        # warm-up outside the timings (CUDA context, cuBLAS handles, cuDNN autotuning), for each path alike
        w = fresh()
        safemax(w, data, steps=3, batch_size=batch, beta=1.0, retain_batch_size=batch,
                generator=torch.Generator().manual_seed(0))
        ddim_sample(w.eval(), schedule, torch.zeros(min(n, 8), dtype=torch.long), shape, null_class(w), 1.0, 2, 0.0,
                    torch.Generator().manual_seed(1), batch_size=n)
        _sync(dev)
        for name, beta in (("SAFEMax forget-only", 0.0), ("SAFEMax + retain", 1.0)):
            m = fresh()
            t, mem = timed(lambda: safemax(m, data, steps=steps, batch_size=batch, beta=beta, retain_batch_size=batch,
                                           generator=torch.Generator().manual_seed(0)), dev)
            rows.append((label, f"{name}: {steps} steps, batch {batch}", t, mem))
        m = fresh(training=False).eval()
        labels = torch.zeros(n, dtype=torch.long)
        t, mem = timed(lambda: ddim_sample(m, schedule, labels, shape, null_class(m), 1.0, sample_steps, 0.0,
                                           torch.Generator().manual_seed(1), batch_size=n), dev)
        rows.append((label, f"RA point: {n} samples, DDIM-{sample_steps}, guided", t, mem))

        def curve():
            for _ in ("unlearned", "oracle"):
                mm = fresh()
                for state in relearn(mm, forget[:10], forget_class=0, schedule=schedule, budgets=budgets,
                                     batch_size=10, generator=torch.Generator().manual_seed(0)):
                    ddim_sample(state.model, schedule, labels, shape, null_class(mm), 1.0, sample_steps, 0.0,
                                torch.Generator().manual_seed(1), batch_size=n)

        t, mem = timed(curve, dev)
        rows.append((label, f"relearn curve: {len(budgets)} budgets to {budgets[-1]} steps x {n} samples, + oracle",
                     t, mem))
    print(f"device: {device_name(dev)}, torch {torch.__version__}; model {params:.2f}M params"
          f"{' (smoke: not the CIFAR size)' if a.smoke else ''}; compile: {a.compile}")
    print(f"{'path':<11} {'work':<70} {'wall s':>8} {'peak GiB':>9}")
    for label, work, t, mem in rows:
        print(f"{label:<11} {work:<70} {t:8.2f} {'-' if mem is None else f'{mem:.2f}':>9}")


if __name__ == "__main__":
    main()
