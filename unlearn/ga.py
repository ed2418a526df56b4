"""Gradient ascent: maximize the plain diffusion loss on D_f (minimize its negative), with an optional
retain term beta * L_DDPM(D_r). The classic unlearning baseline; unbounded, so steps and lr matter."""

from __future__ import annotations

import torch

from unlearn.diffusion import eps_loss
from unlearn.methods_common import UnlearnData, UnlearnStats, batch_of, with_retain
from unlearn.progress import bar


def ga(model, data: UnlearnData, *, steps: int = 100, batch_size: int = 64, lr: float = 1e-5, beta: float = 1.0,
       retain_batch_size: int = 64, grad_clip: float = 1.0, generator: torch.Generator | None = None) -> UnlearnStats:
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    forget_losses, retain_losses = [], []
    for _ in bar(range(steps), desc="ga"):
        x0 = batch_of(data.forget_x, batch_size, generator)
        y = torch.full((x0.shape[0],), data.forget_class, device=x0.device)
        forget = eps_loss(model, data.schedule, x0, y, generator)
        forget_losses.append(forget.detach())
        loss = -forget
        loss = with_retain(loss, beta, model, data, retain_batch_size, generator, retain_losses)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
    model.eval()
    return UnlearnStats.from_losses(steps, batch_size + (retain_batch_size if beta > 0 else 0),
                                    forget_losses, retain_losses)
