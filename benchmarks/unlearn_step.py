"""Unlearning cost per method: time per optimizer step and peak memory. Prints a table.

    python benchmarks/unlearn_step.py [--steps 50] [--methods safemax,salun,...] [hydra overrides...]

Each method runs in its own process (so peak memory is its own) from the cached base model of the config
(built if missing), for --steps steps with its configured batch sizes. Per-step time excludes the method's
priors (SalUn's saliency mask, SA's Fisher and replay samples), which are reported apart. Peak memory:
CUDA max_memory_allocated on a GPU; on CPU the process's peak resident set (ru_maxrss), with the
footprint after loading the model and data (before unlearning) beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
METHODS = "safemax,safemax_forget_only,salun,rl,sa,ga"


def one(method: str, steps: int, overrides: list[str]) -> dict:
    import torch
    from hydra import compose, initialize_config_dir

    from unlearn.methods import METHODS as REGISTRY
    from unlearn.methods_common import UnlearnData
    from unlearn.pipeline import Context, full_args

    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "configs")):
        cfg = compose(config_name="unlearn", overrides=[f"unlearned={method}", *overrides])
    ctx = Context.from_cfg(cfg)
    ds, fc, dev = ctx.ds, ctx.forget_class, ctx.device
    model = ctx.load(ctx.base(), training=True)
    data = UnlearnData(forget_x=ds.x_train[ds.y_train == fc].to(dev), retain_x=ds.x_train[ds.y_train != fc].to(dev),
                       retain_y=ds.y_train[ds.y_train != fc].to(dev), forget_class=fc, num_classes=ds.num_classes,
                       schedule=ctx.schedule)
    args = {**full_args(ctx.method_name, ctx.method_args), "steps": steps}
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    stats = REGISTRY[ctx.method_name](model, data, generator=torch.Generator().manual_seed(0), **args)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    per_step_batch = (stats.sample_gradients - stats.prior_sample_gradients) / max(1, steps)
    return {"method": method, "steps": steps, "batch": per_step_batch, "wall_s": wall, "prior_s": stats.prior_wall_s,
            "step_ms": 1000 * (wall - stats.prior_wall_s) / steps,
            "peak_mib": (torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda"
                         else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "before_mib": None if dev.type == "cuda" else rss_before, "device": str(dev),
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6, "fast": ctx.fast_tag()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--methods", default=METHODS)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("overrides", nargs="*")
    a = ap.parse_args()
    if a.one:
        print(json.dumps(one(a.one, a.steps, a.overrides)))
        return
    import torch

    rows = []
    for m in a.methods.split(","):
        res = subprocess.run([sys.executable, __file__, "--one", m, "--steps", str(a.steps), *a.overrides], cwd=ROOT,
                             capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        if res.returncode != 0:
            sys.exit(f"{m} failed:\n{res.stderr[-2000:]}")
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    r0 = rows[0]
    print(f"device: {r0['device']} ({torch.get_num_threads()} threads), torch {torch.__version__}; "
          f"model {r0['params_m']:.2f}M params; {a.steps} steps; fast: {r0['fast'] or 'none (fp32)'}; "
          f"overrides: {a.overrides or 'none'}")
    mem = "peak MiB (CUDA alloc)" if r0["before_mib"] is None else "peak RSS MiB (before)"
    print(f"{'method':<20} {'batch/step':>10} {'ms/step':>9} {'priors s':>9} {mem:>24}")
    for r in rows:
        before = "" if r["before_mib"] is None else f" ({r['before_mib']:.0f})"
        print(f"{r['method']:<20} {r['batch']:10.0f} {r['step_ms']:9.1f} {r['prior_s']:9.2f} "
              f"{r['peak_mib']:>17.0f}{before:>7}")


if __name__ == "__main__":
    main()
