"""Cost and accuracy of one RA point: the fast path against the testbed protocol, at equal N, in one run.

    python benchmarks/ra_point.py [--n 500] [--skip-naive] [hydra overrides, e.g. device=cuda model=...]

For the original model and the SAFEMax model (forget class from the config, default 0), N samples with
label c_f are drawn by each sampler and scored by the judge:
- `ddim-25` (the defender's default here), `ddim-50`: the fast path (unlearn.diffusion.ddim_sample:
  conditional + null in one batch, inference mode, x0 clipping, batches of sampler.batch_size);
- `ddpm-1000`: the same code with 1000 steps and eta = 1, i.e. ancestral DDPM with the posterior
  variance beta~_t and x0 clipping (the naive protocol below uses sigma_t^2 = beta_t and no clipping: the
  same number of network evaluations, a slightly different sampler);
- more with --samplers, e.g. `ddim-25-eta1` (DDIM-25, eta 1), `ddpm-1000-noclip` (no x0 clipping), and
  split samplers, `split-25-500-s-d` (DDIM-25, stochastic for t >= 500, deterministic below; modes d, s,
  dn, sn: deterministic / stochastic, with or without clipping): the ablations of REPORT section 6;
- `ddpm-1000 naive`: the testbed protocol written the plain way, here: Algorithm 2 of Ho et al. 2020
  (sigma_t^2 = beta_t), 1000 steps, the conditional and the null pass as two separate forwards, float32,
  torch.no_grad only, one batch of N.
Prints RA (with its Wilson 95% CI), NFE, wall seconds and the speed-up over the naive protocol, and the
RA difference of ddim-50 against ddpm-1000 naive (the accuracy check for the shortcut: target |diff| <= 3 pp).
"""

from __future__ import annotations

import argparse
import os
import re
import time

import torch

from attacks.relearn import relearn
from evaluation.diagnostics import naive_ddpm, parse_split, split_sample
from unlearn.diffusion import ddim_sample
from unlearn.errors import UserError
from unlearn.fast import Fast
from unlearn.model import null_class


def relearn_context(overrides: list[str]):
    """(cfg, Context) of the relearn entry point with unlearned=safemax and the user's Hydra overrides."""
    from hydra import compose, initialize_config_dir

    from unlearn.pipeline import Context

    configs = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs")
    with initialize_config_dir(version_base="1.3", config_dir=os.path.abspath(configs)):
        cfg = compose(config_name="attack_job", overrides=["+attack=relearn", "unlearned=safemax", *overrides])
    return cfg, Context.from_cfg(cfg)


def load_model(ctx, role: str, relearn_steps: int = 30, k: int = 10):
    """(model, display name) for a role: original, unlearned, oracle, each optionally '+relearn' (after
    relearn_steps of the relearn attack on k attacker-pool images, seed ctx.seed); 'relearned' is
    'unlearned+relearn'."""
    base = role.split("+")[0]
    model = ctx.load(ctx.model_folder({"relearned": "unlearned"}.get(base, base)))
    name = {"unlearned": ctx.method_label, "relearned": ctx.method_label}.get(base, base)
    if role == "relearned" or role.endswith("+relearn"):
        fc = ctx.forget_class
        gen = torch.Generator().manual_seed(ctx.seed)
        pool = ctx.ds.attacker_pool(fc)
        images = pool[torch.randperm(len(pool), generator=gen)[:k]]
        for state in relearn(model, images, forget_class=fc, schedule=ctx.schedule, budgets=[relearn_steps],
                             generator=gen):
            model = state.model
        name += f"+{relearn_steps}"
    return model, name


def parse_sampler(spec: str) -> tuple[int, float, bool]:
    """'ddim-50' -> (50, 0, clip); 'ddpm-1000' -> (1000, 1, clip); suffixes '-eta<e>' and '-noclip'."""
    m = re.fullmatch(r"ddim-(\d+)(?:-eta(\d+(?:\.\d+)?))?(-noclip)?|ddpm-1000(-noclip)?", spec)
    if not m or (m.group(1) and not 1 <= int(m.group(1)) <= 1000):
        raise SystemExit(f"error: --samplers entry {spec!r}: use ddim-<steps 1..1000>[-eta<e>][-noclip] or "
                         "ddpm-1000[-noclip]")
    if m.group(1) is None:  # ddpm-1000
        return 1000, 1.0, m.group(4) is None
    return int(m.group(1)), float(m.group(2) or 0.0), m.group(3) is None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--skip-naive", action="store_true", help="leave out the naive 1000-step protocol (slow)")
    ap.add_argument("--models", default="original,unlearned",
                    help="comma list of original, unlearned, oracle, each optionally with '+relearn' (the model "
                         "after --relearn-steps of the relearn attack, k = 10: half-recovered, where samplers can "
                         "disagree most); 'relearned' = 'unlearned+relearn'")
    ap.add_argument("--relearn-steps", type=int, default=30)
    ap.add_argument("--samplers", default="ddim-25,ddim-50,ddpm-1000",
                    help="comma list: ddim-<steps>[-eta<e>][-noclip], ddpm-1000[-noclip]; the accuracy check "
                         "compares ddim-50 (and ddim-25) with the naive protocol")
    ap.add_argument("overrides", nargs="*")
    a = ap.parse_args()

    from evaluation.harness import get_judge
    from evaluation.metrics import score, wilson_ci

    cfg, ctx = relearn_context(a.overrides)
    judge = get_judge(ctx, cfg.judge)
    w, fc, dev = float(cfg.sampler.guidance_w), ctx.forget_class, ctx.device
    labels = torch.full((a.n,), fc)
    try:
        samplers = [(spec, *(parse_split(spec) or parse_sampler(spec))) for spec in a.samplers.split(",")]
    except UserError as e:
        raise SystemExit(f"error: {e}") from e
    rows = []
    for role in a.models.split(","):
        model, name = load_model(ctx, role, a.relearn_steps)
        for label, steps, *how in samplers:
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            if label.startswith("split-"):
                x = split_sample(model, ctx.schedule, labels, ctx.ds.image_shape, null_class(model), w, steps, *how,
                                 torch.Generator().manual_seed(1))
            else:
                eta, clip = how
                x = ddim_sample(model, ctx.schedule, labels, ctx.ds.image_shape, null_class(model), w, steps, eta,
                                torch.Generator().manual_seed(1), int(cfg.sampler.batch_size), clip_x0=clip)
            rows.append((name, label, steps * a.n * (2 if w else 1), time.perf_counter() - t0, judge.probs(x)))
        if not a.skip_naive:
            plain, _ = load_model(ctx, role, a.relearn_steps)
            plain.autocast_dtype = None  # the naive protocol: float32, whatever the fast switches say
            plain = plain.to(memory_format=torch.contiguous_format)
            Fast(bf16=False, tf32=False, channels_last=False).backend(dev)  # no TF32 for it on CUDA
            t0 = time.perf_counter()
            x = naive_ddpm(plain, ctx.schedule, labels, ctx.ds.image_shape, null_class(plain), w,
                           torch.Generator().manual_seed(1))
            if dev.type == "cuda":
                torch.cuda.synchronize()
            rows.append((name, "ddpm-1000 naive", 1000 * a.n * 2, time.perf_counter() - t0, judge.probs(x)))
            ctx.fast.backend(dev)

    from unlearn.model import device_name

    print(f"device: {device_name(dev)}, torch {torch.__version__}; data {ctx.ds.name}, model {ctx.arch_name}, "
          f"c_f = {fc}, N = {a.n}, guidance w = {w}, fast = {ctx.fast_tag() or 'none (fp32)'}")
    print(f"{'model':<12} {'sampler':<16} {'NFE':>9} {'wall s':>8} {'x naive':>8} {'RA':>6} {'95% CI':>15}")
    naive = {m: t for m, s, _, t, _ in rows if s == "ddpm-1000 naive"}
    ra = {}
    for m, s, nfe, t, probs in rows:
        sc = score(probs, fc)
        ra[(m, s)] = sc["ra"]
        lo, hi = wilson_ci(round(sc["ra"] * a.n), a.n)
        speed = f"{naive[m] / t:8.1f}" if m in naive else f"{'-':>8}"
        print(f"{m:<12} {s:<16} {nfe:9d} {t:8.2f} {speed} {sc['ra']:6.3f} [{lo:.3f}, {hi:.3f}]")
    if naive and "ddim-50" in a.samplers.split(",") and "ddim-25" in a.samplers.split(","):
        for m in naive:
            d = 100 * (ra[(m, "ddim-50")] - ra[(m, "ddpm-1000 naive")])
            d25 = 100 * (ra[(m, "ddim-25")] - ra[(m, "ddpm-1000 naive")])
            print(f"{m}: RA(ddim-50) - RA(ddpm-1000 naive) = {d:+.1f} pp (ddim-25: {d25:+.1f} pp); "
                  f"target |diff| <= 3 pp{'' if abs(d) <= 3 else '  MISSED'}")


if __name__ == "__main__":
    main()
