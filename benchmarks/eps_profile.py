"""Where along the diffusion a model's noise prediction for c_f goes wrong: a diagnostic for REPORT finding 8.

    python benchmarks/eps_profile.py [--models original,unlearned,relearned,oracle+relearn] [hydra overrides]

Real images of c_f that no attacker holds (the held-out half and the test split) are noised to x_t at a
grid of t, with the same noise for every model. For each model and t, with label c_f:

    shrink  = E||eps_theta(x_t, c_f, t)||^2 / E||eps||^2       1: full-size noise estimate; 0: SAFEMax's optimum
    err     = E||eps_theta(x_t, c_f, t) - eps||^2 / E||eps||^2  0: exact; 1: no better than predicting 0
    err_w   = err of the guided estimate (1 + w) eps(x_t, c_f) - w eps(x_t, null), w from the config

Model roles as in benchmarks/ra_point.py ('+relearn': after --relearn-steps of the relearn attack, k = 10).
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

if __package__:  # imported (tests)
    from benchmarks.ra_point import load_model, relearn_context
else:  # run as a script: ra_point sits beside it
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from ra_point import load_model, relearn_context  # noqa: E402
from evaluation.diagnostics import T_GRID, profile  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="original,unlearned,relearned,oracle+relearn")
    ap.add_argument("--relearn-steps", type=int, default=30)
    ap.add_argument("overrides", nargs="*")
    a = ap.parse_args()

    cfg, ctx = relearn_context(a.overrides)
    fc, w = ctx.forget_class, float(cfg.sampler.guidance_w)
    x0 = torch.cat([ctx.ds.heldout(fc), ctx.ds.x_test[ctx.ds.y_test == fc]])
    rows = {}
    for role in a.models.split(","):
        model, name = load_model(ctx, role, a.relearn_steps)
        rows[name] = profile(model.eval(), ctx.schedule, x0, fc, w, seed=ctx.seed)
    print(f"data {ctx.ds.name}, model {ctx.arch_name}, c_f = {fc}, seed {ctx.seed}, {len(x0)} real c_f images x 4 "
          f"noise draws, guidance w = {w}")
    names = list(rows)
    for metric, i in (("shrink = |eps_theta|^2 / |eps|^2", 0), ("err = |eps_theta - eps|^2 / |eps|^2", 1),
                      (f"err_w (guided, w = {w:g})", 2)):
        print(f"\n{metric}")
        print(f"{'t':>5} " + " ".join(f"{n:>16}" for n in names))
        for t in T_GRID:
            print(f"{t:5d} " + " ".join(f"{rows[n][t][i]:16.3f}" for n in names))


if __name__ == "__main__":
    main()
