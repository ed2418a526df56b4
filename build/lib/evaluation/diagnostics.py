"""Diagnostics behind REPORT findings, run by benchmarks/ra_point.py and benchmarks/eps_profile.py (and tested):
- `naive_ddpm`: the testbed's sampling protocol written the plain way (Algorithm 2 of Ho et al. 2020,
  sigma_t^2 = beta_t, no clipping, two forwards per step), the reference the fast path is checked against;
- `split_sample`: guided DDIM stochastic / clipped on one part of the trajectory only (finding 8's ablation);
- `profile`: where along t a model's noise prediction for c_f shrinks or errs (finding 8's diagnosis).
"""

from __future__ import annotations

import re

import torch

from unlearn.diffusion import ddim_sample, guided_eps, predict_eps, q_sample
from unlearn.errors import UserError
from unlearn.model import null_class


@torch.no_grad()
def naive_ddpm(model, schedule, labels: torch.Tensor, image_shape, null: int, w: float, gen: torch.Generator):
    """The testbed protocol, deliberately plain (see the module docstring)."""
    dev = next(model.parameters()).device
    abar = schedule.alpha_bar.double()
    abar_prev = torch.cat([torch.ones(1, dtype=abar.dtype, device=abar.device), abar[:-1]])
    beta = (1 - abar / abar_prev).float()
    y = labels.to(dev)
    y_null = torch.full_like(y, null)
    x = torch.randn((len(labels), *image_shape), generator=gen).to(dev)
    for t in reversed(range(schedule.num_train_timesteps)):
        tt = torch.full((len(labels),), t, device=dev, dtype=torch.long)
        eps_c = model(x, tt, class_labels=y).sample
        eps_u = model(x, tt, class_labels=y_null).sample
        eps = (1 + w) * eps_c - w * eps_u
        mean = (x - beta[t] / (1 - schedule.alpha_bar[t]).sqrt() * eps) / (1 - beta[t]).sqrt()
        x = mean + beta[t].sqrt() * torch.randn(x.shape, generator=gen).to(dev) if t > 0 else mean
    return x.clamp(-1, 1).cpu()


SPLIT_MODES = {"d": (0.0, True), "s": (1.0, True), "dn": (0.0, False), "sn": (1.0, False)}


def split_sample(model, schedule, labels, image_shape, null: int, w: float, steps: int, t_split: int,
                 above: tuple[float, bool], below: tuple[float, bool], gen: torch.Generator) -> torch.Tensor:
    """Guided DDIM whose (eta, clip) is `above` for steps with t >= t_split and `below` for the rest: which
    part of the trajectory needs stochasticity or clipping (REPORT section 6)."""
    return ddim_sample(model, schedule, labels, image_shape, null, w, steps, generator=gen, batch_size=len(labels),
                       modes=lambda t: above if t >= t_split else below)


def parse_split(spec: str) -> tuple[int, int, tuple, tuple] | None:
    """'split-25-500-s-d' -> (25 steps, t_split 500, above = stochastic clipped, below = deterministic clipped);
    modes: d (eta 0, clip), s (eta 1, clip), dn / sn (the same without clipping). None if not a split spec."""
    m = re.fullmatch(r"split-(\d+)-(\d+)-(d|s|dn|sn)-(d|s|dn|sn)", spec)
    if not spec.startswith("split-"):
        return None
    if not m or not 1 <= int(m.group(1)) <= 1000:
        raise UserError(f"--samplers entry {spec!r}: use split-<steps>-<t>-<above>-<below>, modes d s dn sn")
    return int(m.group(1)), int(m.group(2)), SPLIT_MODES[m.group(3)], SPLIT_MODES[m.group(4)]


T_GRID = [1, 10, 25, 50, 100, 200, 300, 500, 700, 900, 999]


@torch.inference_mode()
def profile(model, schedule, x0: torch.Tensor, fc: int, w: float, draws: int = 4, seed: int = 0) -> dict[int, tuple]:
    """{t: (shrink, err, err_w)} over x0 repeated `draws` times, noise from `seed`."""
    dev = next(model.parameters()).device
    x0 = x0.repeat(draws, 1, 1, 1).to(dev)
    y = torch.full((x0.shape[0],), fc, device=dev, dtype=torch.long)
    out = {}
    for t in T_GRID:
        g = torch.Generator().manual_seed(seed * 10_000 + t)
        eps = torch.randn(x0.shape, generator=g).to(dev)
        tt = torch.full_like(y, t)
        x_t = q_sample(schedule, x0, tt, eps)
        pred = predict_eps(model, x_t, tt, y)
        guided = guided_eps(model, x_t, tt, y, null_class(model), w)
        norm = eps.pow(2).mean()
        out[t] = ((pred.pow(2).mean() / norm).item(), ((pred - eps).pow(2).mean() / norm).item(),
                  ((guided - eps).pow(2).mean() / norm).item())
    return out
