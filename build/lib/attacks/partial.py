"""Partial diffusion from real c_f images: noise them part of the way, denoise with label c_f. No weights change.

Threat model (SDEdit-style image-to-image; issue 15, item 3): the attacker holds k real images of c_f from the
attacker pool and the released model, and trains nothing. Each image is noised to x_t with t the sampler's
grid step at strength s (t ~ s T), then denoised with label c_f by the evaluation sampler (its steps t' <= t).
At small s any model returns what it was given, the oracle too: only the excess over the oracle under the same
procedure is leakage. Each strength is one point (no budget curve; budget 0 is not the unattacked model); its
cost is the sampling: N x (steps from t) x (1 or 2) network evaluations.

    python -m attacks.partial unlearned=safemax                               # s in {0.2, 0.4, 0.6, 0.8}
    python -m attacks.partial unlearned=safemax attack.strength=[0.5] attack.k=50
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from omegaconf import DictConfig

from attacks.common import AttackState, Plan, Traits, check_k
from unlearn.diffusion import Schedule, denoising_steps, q_sample
from unlearn.pipeline import Context
from unlearn.sampling import SamplerSpec

TRAITS = Traits(curve=False, untouched_at_zero=lambda params: False, draws_samples=True)


def start_step(strength: float, spec: SamplerSpec, num_train_timesteps: int) -> int:
    """The sampler's grid step nearest below strength x T (the grid always holds t = 0)."""
    return denoising_steps(num_train_timesteps, spec.steps, round(strength * num_train_timesteps))[0]


def denoise(model, images: torch.Tensor, generator: torch.Generator, *, strength: float, spec: SamplerSpec,
            schedule: Schedule, forget_class: int, n: int, seed: int) -> Iterator[AttackState]:
    """One point: n samples, sample i from images[i % k] noised to the strength's step (fresh noise each), denoised
    with label forget_class by `spec`."""
    t = start_step(strength, spec, schedule.num_train_timesteps)
    x0 = images[torch.arange(n) % len(images)]
    x_t = q_sample(schedule.to("cpu"), x0, torch.full((n,), t), torch.randn(x0.shape, generator=generator))
    x, timer = spec.sample(model, schedule, torch.full((n,), forget_class), tuple(x0.shape[1:]), seed, init=x_t,
                           t_start=t)
    yield AttackState(model, 0, 0, spec.nfe(n, t, schedule.num_train_timesteps), timer.wall_s, timer.device_s,
                      samples=x)


def plans(cfg: DictConfig, ctx: Context) -> list[Plan]:
    """One plan per strength; the k images are drawn from the attacker pool with the role's seeded generator."""
    a = cfg.attack
    pool = ctx.ds.attacker_pool(ctx.forget_class)
    k, n, spec = check_k(a.k, pool, ctx.forget_class), int(cfg.eval.n), SamplerSpec.from_cfg(cfg.sampler)

    def states(strength: float):
        def run(model, gen):
            images = pool[torch.randperm(len(pool), generator=gen)[:k]]
            return denoise(model, images, gen, strength=strength, spec=spec, schedule=ctx.schedule,
                           forget_class=ctx.forget_class, n=n, seed=ctx.seed)
        return run

    return [Plan(f"s={float(s):g} k={k}", states(float(s)),
                 params={"name": "partial", "strength": float(s), "k": k, "budgets": [0]})
            for s in a.strength]


if __name__ == "__main__":
    from evaluation.entry import main

    main("partial")
