"""Selective Amnesia: Heng & Soh, "Selective Amnesia: A Continual Learning Approach to Forgetting in Deep
Generative Models", NeurIPS 2023. Read from the public SA DDPM code [baseline code].

Priors (their cost is recorded apart and in the total):
1. Generative replay: n_replay samples of the retained classes from the original model (guided DDIM).
2. Diagonal Fisher F_i = E[(d L_DDPM / d theta_i)^2] on samples of the original model (all classes),
   one random t per sample [inferred: the code sums over timesteps; one t per sample is its Monte Carlo form].
Loss per step:
    L_DDPM(u, c_f) with u ~ Uniform[-1, 1]^d       (the surrogate: noise images for the forgotten class)
  + gamma * L_DDPM(replay of retained classes)
  + lam * sum_i F_i (theta_i - theta*_i)^2          (EWC towards the original weights theta*)
[inferred] EMA of the weights is off by default at these step counts (ema_decay=None).
"""

from __future__ import annotations

import time

import torch
from tqdm.auto import tqdm

from unlearn.diffusion import ddim_sample, eps_loss
from unlearn.methods_common import UnlearnData, UnlearnStats, batch_of
from unlearn.model import EMA


def fisher_diagonal(model, x: torch.Tensor, y: torch.Tensor, schedule, generator) -> list[torch.Tensor]:
    """Per-sample squared gradients of the eps-loss, averaged: >= 0 by construction."""
    params = [p for p in model.parameters() if p.requires_grad]
    fisher = [torch.zeros_like(p) for p in params]
    for i in range(x.shape[0]):
        model.zero_grad(set_to_none=True)
        eps_loss(model, schedule, x[i:i + 1], y[i:i + 1], generator).backward()
        for f, p in zip(fisher, params):
            if p.grad is not None:
                f += p.grad.detach() ** 2
    model.zero_grad(set_to_none=True)
    return [f / x.shape[0] for f in fisher]


def sa(model, data: UnlearnData, *, steps: int = 200, batch_size: int = 64, lr: float = 1e-4, gamma: float = 1.0,
       lam: float = 10.0, n_replay: int = 500, n_fisher: int = 200, sample_steps: int = 25,
       replay_guidance_w: float = 1.0, ema_decay: float | None = None, grad_clip: float = 1.0,
       generator: torch.Generator | None = None) -> UnlearnStats:
    dev = data.forget_x.device
    t0 = time.perf_counter()
    k, null = data.num_classes, data.num_classes
    retained = torch.tensor([c for c in range(k) if c != data.forget_class])
    y_replay = retained[torch.randint(0, len(retained), (n_replay,), generator=generator)]
    model.eval()
    x_replay = ddim_sample(model, data.schedule, y_replay, tuple(data.forget_x.shape[1:]), null, replay_guidance_w,
                           sample_steps, generator=generator).to(dev)
    y_fisher = torch.randint(0, k, (n_fisher,), generator=generator)
    x_fisher = ddim_sample(model, data.schedule, y_fisher, tuple(data.forget_x.shape[1:]), null, replay_guidance_w,
                           sample_steps, generator=generator).to(dev)
    model.train()
    fisher = fisher_diagonal(model, x_fisher, y_fisher.to(dev), data.schedule, generator)
    theta_star = [p.detach().clone() for p in model.parameters()]
    prior_nfe = (n_replay + n_fisher) * sample_steps * (1 if replay_guidance_w == 0 else 2)
    prior_wall = time.perf_counter() - t0

    y_replay = y_replay.to(dev)
    ema = EMA(model, ema_decay) if ema_decay else None
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    forget_losses, retain_losses = [], []
    shape = (batch_size, *data.forget_x.shape[1:])
    y_forget = torch.full((batch_size,), data.forget_class, device=dev)
    for _ in tqdm(range(steps), desc="sa", disable=None, leave=False):
        u = (torch.rand(shape, generator=generator) * 2 - 1).to(dev)
        forget = eps_loss(model, data.schedule, u, y_forget, generator)
        xr, yr = batch_of((x_replay, y_replay), batch_size, generator)
        replay = eps_loss(model, data.schedule, xr, yr, generator)
        ewc = sum((f * (p - p0) ** 2).sum() for f, p, p0 in zip(fisher, model.parameters(), theta_star))
        loss = forget + gamma * replay + lam * ewc
        forget_losses.append(forget.detach())
        retain_losses.append(replay.detach())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        if ema is not None:
            ema.update(model)
    if ema is not None:
        model.load_state_dict(ema.model.state_dict())
    model.eval()
    return UnlearnStats.from_losses(steps, 2 * batch_size, forget_losses, retain_losses).with_prior(
        n_fisher, prior_nfe, prior_wall)
