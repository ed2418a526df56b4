"""SalUn: Fan et al., "SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency in Both
Image Classification and Generation", ICLR 2024. Read from the public SalUn DDPM code [baseline code].

1. Saliency mask: m_i = 1 for the top `mask_density` share of weights by | sum over D_f of
   d L_DDPM / d theta_i | (one global threshold over all weights).
2. Loss: || eps_theta(x_t, c_f, t) - eps_frozen(x_t, c', t) ||^2 + alpha * L_DDPM(D_r), where c' is a
   random *other* class drawn from the configured classes (not `(c_f + 1) % 10`), eps_frozen a frozen
   copy of the original model, and x_t noised from a forget image. The forget images are anchored to
   another class: low judge entropy expected.
3. Gradients are multiplied by the mask before each Adam step.
"""

from __future__ import annotations

import copy
import time

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from unlearn.errors import UserError
from unlearn.diffusion import eps_loss, predict_eps, q_sample, sample_t
from unlearn.methods_common import UnlearnData, UnlearnStats, batch_of, with_retain


def saliency_mask(model, data: UnlearnData, density: float, batch_size: int,
                  generator: torch.Generator | None) -> tuple[dict[str, torch.Tensor], int]:
    """Top-`density` mask by |summed forget-set gradient|; returns (mask per parameter, sample-gradients)."""
    if not 0 < density <= 1:
        raise UserError(f"method.args.mask_density must be in (0, 1] (or null for no mask), got {density}")
    grads = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    labels = torch.full((data.forget_x.shape[0],), data.forget_class, device=data.forget_x.device)
    for i in range(0, data.forget_x.shape[0], batch_size):
        model.zero_grad(set_to_none=True)
        x0, y = data.forget_x[i:i + batch_size], labels[i:i + batch_size]
        (eps_loss(model, data.schedule, x0, y, generator) * x0.shape[0]).backward()  # a sum over images
        for n, p in model.named_parameters():
            if p.grad is not None:
                grads[n] += p.grad
    model.zero_grad(set_to_none=True)
    flat = torch.cat([g.abs().flatten() for g in grads.values()])
    k = max(1, int(round(density * flat.numel())))
    threshold = torch.topk(flat, k, sorted=True).values[-1]
    return {n: (g.abs() >= threshold).float() for n, g in grads.items()}, int(data.forget_x.shape[0])


def random_other_class(forget_class: int, num_classes: int, n: int, generator, device) -> torch.Tensor:
    """c' ~ U(classes minus c_f), drawn from the configured number of classes."""
    r = torch.randint(0, num_classes - 1, (n,), generator=generator).to(device)
    return r + (r >= forget_class).long()


def salun(model, data: UnlearnData, *, steps: int = 1000, batch_size: int = 128, lr: float = 1e-4,
          alpha: float = 1e-3, mask_density: float | None = 0.5, retain_batch_size: int = 128,
          grad_clip: float = 1.0, generator: torch.Generator | None = None) -> UnlearnStats:
    """mask_density=None switches the mask off (that is the `rl` baseline)."""
    t0 = time.perf_counter()
    mask, prior_sg = (saliency_mask(model, data, mask_density, batch_size, generator)
                      if mask_density is not None else (None, 0))
    prior_wall = time.perf_counter() - t0
    frozen = copy.deepcopy(model).eval().requires_grad_(False)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    forget_losses, retain_losses = [], []
    for _ in tqdm(range(steps), desc="salun" if mask is not None else "rl", disable=None, leave=False):
        x0 = batch_of(data.forget_x, batch_size, generator)
        n, dev = x0.shape[0], x0.device
        t = sample_t(data.schedule, n, dev, generator)
        x_t = q_sample(data.schedule, x0, t, torch.randn(x0.shape, generator=generator).to(dev))
        c_other = random_other_class(data.forget_class, data.num_classes, n, generator, dev)
        with torch.no_grad():
            target = predict_eps(frozen, x_t, t, c_other)
        pred = predict_eps(model, x_t, t, torch.full((n,), data.forget_class, device=dev))
        loss = F.mse_loss(pred, target)
        forget_losses.append(loss.detach())
        loss = with_retain(loss, alpha, model, data, retain_batch_size, generator, retain_losses)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if mask is not None:
            for name, p in model.named_parameters():
                if p.grad is not None:
                    p.grad.mul_(mask[name])
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
    model.eval()
    stats = UnlearnStats.from_losses(steps, batch_size + (retain_batch_size if alpha > 0 else 0),
                                     forget_losses, retain_losses)
    return stats.with_prior(prior_sg, 0, prior_wall)
