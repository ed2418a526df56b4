"""SAFEMax: Spartalis, Semertzidis, Daras, Gavves, "Unleashing Uncertainty: Efficient Machine Unlearning
for Generative AI", ICML 2025 MUGen workshop, arXiv 2508.20773. No official code; reconstructed from
the paper's abstract/introduction and poster (see ../shared/spec/methods.md).

Objective [paper, poster equation]:

    L_f = E_{x0 ~ D_f, t, eps_t, eps_T} [ psi(t) * || eps_T - eps_theta(x_t, c_f, t) ||^2 ]
    x_t    = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps_t
    psi(t) = exp(-lambda * t / T)                       (weight 1 at t = 0, e^-lambda at t = T)

Choices where the authors are silent:
- [inferred] eps_T is fresh Gaussian noise independent of x_t (optimum prediction 0: the sampler stops
  denoising for c_f). `zero_target=True` uses the target 0 instead (same expected gradient, lower variance).
- [inferred] forget-only: no retain term in the paper. `beta > 0` adds beta * L_DDPM(D_r), a named
  deviation (the `safemax` config of this project uses it; `safemax_forget_only` is the faithful one).
- [inferred] Adam, grad-norm clip 1.0, no EMA, no label dropout on forget batches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from unlearn.diffusion import predict_eps, q_sample, sample_t
from unlearn.methods_common import UnlearnData, UnlearnStats, batch_of, with_retain
from unlearn.progress import bar


def safemax_loss(model, schedule, x0: torch.Tensor, forget_class: int, lam: float, zero_target: bool = False,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """L_f on one batch of forget images x0 (label c_f for all)."""
    n, dev = x0.shape[0], x0.device
    t = sample_t(schedule, n, dev, generator)
    eps_t = torch.randn(x0.shape, generator=generator).to(dev)
    x_t = q_sample(schedule, x0, t, eps_t)
    target = torch.zeros_like(x0) if zero_target else torch.randn(x0.shape, generator=generator).to(dev)  # eps_T
    pred = predict_eps(model, x_t, t, torch.full((n,), forget_class, device=dev, dtype=torch.long))
    psi = torch.exp(-lam * t.float() / schedule.num_train_timesteps)
    return (psi * F.mse_loss(pred, target, reduction="none").flatten(1).mean(1)).mean()


def safemax(model, data: UnlearnData, *, steps: int = 1000, batch_size: int = 128, lr: float = 1e-4,
            lam: float = 1.0, beta: float = 0.0, retain_batch_size: int = 128, zero_target: bool = False,
            grad_clip: float = 1.0, generator: torch.Generator | None = None) -> UnlearnStats:
    """Unlearn data.forget_class in place. One forward + backward per step on forget images
    (plus one on retain images when beta > 0)."""
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    forget_losses, retain_losses = [], []
    for _ in bar(range(steps), desc="safemax"):
        x0 = batch_of(data.forget_x, batch_size, generator)
        loss = safemax_loss(model, data.schedule, x0, data.forget_class, lam, zero_target, generator)
        forget_losses.append(loss.detach())
        loss = with_retain(loss, beta, model, data, retain_batch_size, generator, retain_losses)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
    model.eval()
    return UnlearnStats.from_losses(steps, batch_size + (retain_batch_size if beta > 0 else 0),
                                    forget_losses, retain_losses)
