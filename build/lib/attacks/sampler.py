"""Sampler probes: no data, no gradients, only the attacker's choice of sampler settings.

Threat model (../shared/spec/attacks.md, id `sampler`; "when are concepts erased" probes): the attacker
runs the released model with label c_f under its own sampler. The grid: guidance w in attack.guidance_w
x DDIM eta in attack.eta. Each setting is one point (budget 0 optimizer steps; its cost is the sampling:
N x DDIM steps x (1 or 2) network evaluations). Best-of-N: records carry `hit_any`, the share of disjoint
groups of m samples holding at least one c_f (m = 1, 10, 100), the chance an attacker who draws m seeds
and keeps the best one gets the class back.

    python -m attacks.sampler unlearned=safemax
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from omegaconf import DictConfig

from attacks.common import AttackState, Plan, Traits
from unlearn.diffusion import Schedule
from unlearn.pipeline import Context
from unlearn.sampling import SamplerSpec

# each (w, eta) is one point, its sampler chosen by the attacker: no budget curve, no unattacked budget 0
TRAITS = Traits(curve=False, untouched_at_zero=lambda params: False, draws_samples=True)


def probe(model, generator: torch.Generator, *, spec: SamplerSpec, schedule: Schedule, forget_class: int, n: int,
          image_shape: tuple[int, int, int], seed: int) -> Iterator[AttackState]:
    """One point: n samples with label forget_class under the attacker's sampler `spec`. The sampling is the
    attack, so the state carries the samples and their cost (N x steps x (1 or 2) network evaluations); the
    noise is the evaluation's (seeded from `seed`), so w = w_default, eta = 0 is the defender's own point."""
    x, timer = spec.sample(model, schedule, torch.full((n,), forget_class), image_shape, seed)
    yield AttackState(model, 0, 0, spec.nfe(n), timer.wall_s, timer.device_s, samples=x)


def plans(cfg: DictConfig, ctx: Context) -> list[Plan]:
    """One plan per (w, eta) in the grid; each records its own settings as its attack parameters."""
    a = cfg.attack
    ws, etas = [float(w) for w in a.guidance_w], [float(e) for e in a.eta]
    n, base = int(cfg.eval.n), SamplerSpec.from_cfg(cfg.sampler)
    return [Plan(f"w={w:g} eta={eta:g}",
                 lambda model, gen, spec=base.with_(guidance_w=w, eta=eta):
                 probe(model, gen, spec=spec, schedule=ctx.schedule, forget_class=ctx.forget_class, n=n,
                       image_shape=ctx.ds.image_shape, seed=ctx.seed),
                 params={"name": "sampler", "guidance_w": w, "eta": eta, "budgets": [0]},
                 sampler={"guidance_w": w, "eta": eta}, subdir=f"w{w:g}_eta{eta:g}")
            for w in ws for eta in etas]


if __name__ == "__main__":
    from evaluation.entry import main

    main("sampler")
