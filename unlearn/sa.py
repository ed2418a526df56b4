"""Selective Amnesia: Heng & Soh, "Selective Amnesia: A Continual Learning Approach to Forgetting in Deep
Generative Models", NeurIPS 2023. Compared line by line with the reference code [baseline code]:
clear-nus/selective-amnesia ddpm/runners/diffusion.py (Diffusion.save_fim, Diffusion.train_forget) and
ddpm/functions/losses.py (noise_estimation_loss_conditional); the same code sits in OPTML-Group/
Unlearn-Saliency DDPM/runners/diffusion.py.

Priors (their cost is recorded apart and in the total):
1. Generative replay: n_replay samples of the retained classes from the original model (guided DDIM).
2. Diagonal Fisher on n_fisher samples of the original model (all classes), as the reference computes it:
       F_i = (1 / n) sum_n ( d/d theta_i  sum_{t=0}^{T-1} || eps_{n,t} - eps_theta(x_{n,t}, y_n, t) ||^2 )^2
   the eps-loss summed over pixels and over all T timesteps (fresh noise per t), differentiated per sample,
   then squared (the square of a sum, not a sum of squares), with the reference's label dropout 0.1.
   Cost: n_fisher x T sample-gradients. Timesteps are batched in chunks of `fisher_t_batch` (exact: the
   gradient of a sum is the sum of the chunks' gradients).
Loss per step (the reference's reductions: pixel sum per image, mean over the batch; no label dropout):
    L_DDPM(u, c_f), u ~ Uniform[-1, 1)^d            (the surrogate: noise images for the forgotten class)
  + gamma * L_DDPM(replay of retained classes)      (same antithetic timesteps (t, T-1-t) as the forget term)
  + lam * sum_i F_i (theta_i - theta*_i)^2          (EWC towards the original weights, no 1/2; lam = 10)
Deviations, named:
- [reference quirk, not followed] the reference's FIM loader feeds the generated images in [0, 1] (ToTensor,
  no data_transform) while the model was trained on [-1, 1]; here the Fisher sees [-1, 1] images.
  `fisher_input_01=True` reproduces the quirk.
- [scaled] the reference samples replay and Fisher images with 1000-step DDPM-like sampling at w = 2 and
  uses 500 per class; here guided DDIM (`sample_steps`, `replay_guidance_w`) and smaller sets. EMA (0.9999
  over 20000 steps there) is off at these step counts (ema_decay=None).
`pixels="mean"` (the old reduction of this project: every loss a pixel mean, Fisher at one random t) is
not kept: the issue is exactly that its EWC term was ~4e6 times weaker than the reference's.
"""

from __future__ import annotations

import time

import torch

from unlearn.diffusion import ddim_sample, eps_loss, predict_eps, q_sample, sample_t
from unlearn.methods_common import UnlearnData, UnlearnStats, batch_of
from unlearn.model import ema_of, null_class
from unlearn.progress import bar


def fisher_diagonal(model, x: torch.Tensor, y: torch.Tensor, schedule, generator: torch.Generator | None,
                    label_dropout: float = 0.1, t_batch: int = 250) -> list[torch.Tensor]:
    """The reference's diagonal Fisher (see the module docstring); >= 0 by construction. Per sample: noise
    eps [T, C, H, W] and the label-dropout draws [T] come from `generator`, in that order."""
    params = [p for p in model.parameters() if p.requires_grad]
    fisher = [torch.zeros_like(p) for p in params]
    T, dev = schedule.num_train_timesteps, x.device
    null = null_class(model)
    for i in bar(range(x.shape[0]), desc="sa fisher", unit="img"):
        model.zero_grad(set_to_none=True)
        eps = torch.randn((T, *x.shape[1:]), generator=generator).to(dev)
        drop = (torch.rand(T, generator=generator) < label_dropout).to(dev)
        labels = torch.where(drop, torch.full((T,), null, device=dev), y[i].expand(T))
        for s in range(0, T, t_batch):
            t = torch.arange(s, min(s + t_batch, T), device=dev)
            x_t = q_sample(schedule, x[i:i + 1].expand(len(t), *x.shape[1:]), t, eps[t])
            (predict_eps(model, x_t, t, labels[t]) - eps[t]).pow(2).sum().backward()  # grads add up over chunks
        for f, p in zip(fisher, params):
            if p.grad is not None:
                f += p.grad.detach() ** 2
    model.zero_grad(set_to_none=True)
    return [f / x.shape[0] for f in fisher]


def _replay_and_fisher(model, data: UnlearnData, n_replay: int, n_fisher: int, sample_steps: int, w: float,
                       fisher_label_dropout: float, fisher_input_01: bool, generator: torch.Generator | None):
    """SA's work before its first step, from the model's own samples (DDIM, guidance w): the replay set of the
    retained classes, and the Fisher diagonal at the current weights on samples of every class."""
    dev, k = data.forget_x.device, data.num_classes
    shape = tuple(data.forget_x.shape[1:])
    retained = torch.tensor([c for c in range(k) if c != data.forget_class])
    y_replay = retained[torch.randint(0, len(retained), (n_replay,), generator=generator)]
    model.eval()
    x_replay = ddim_sample(model, data.schedule, y_replay, shape, k, w, sample_steps, generator=generator).to(dev)
    y_fisher = torch.randint(0, k, (n_fisher,), generator=generator)
    x_fisher = ddim_sample(model, data.schedule, y_fisher, shape, k, w, sample_steps, generator=generator).to(dev)
    if fisher_input_01:
        x_fisher = (x_fisher + 1) / 2
    fisher = fisher_diagonal(model, x_fisher, y_fisher.to(dev), data.schedule, generator, fisher_label_dropout)
    return x_replay, y_replay.to(dev), fisher


def sa(model, data: UnlearnData, *, steps: int = 200, batch_size: int = 64, lr: float = 1e-4, gamma: float = 1.0,
       lam: float = 10.0, n_replay: int = 500, n_fisher: int = 100, sample_steps: int = 25,
       replay_guidance_w: float = 1.0, fisher_label_dropout: float = 0.1, fisher_input_01: bool = False,
       ema_decay: float | None = None, grad_clip: float = 1.0,
       generator: torch.Generator | None = None) -> UnlearnStats:
    dev = data.forget_x.device
    t0 = time.perf_counter()
    shape = tuple(data.forget_x.shape[1:])
    x_replay, y_replay, fisher = _replay_and_fisher(model, data, n_replay, n_fisher, sample_steps, replay_guidance_w,
                                                    fisher_label_dropout, fisher_input_01, generator)
    theta_star = [p.detach().clone() for p in model.parameters()]
    prior_nfe = (n_replay + n_fisher) * sample_steps * (1 if replay_guidance_w == 0 else 2)
    prior_sg = n_fisher * data.schedule.num_train_timesteps
    prior_wall = time.perf_counter() - t0

    model.train()
    ema = ema_of(model, ema_decay) if ema_decay else None
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    forget_losses, retain_losses = [], []
    y_forget = torch.full((batch_size,), data.forget_class, device=dev)
    for _ in bar(range(steps), desc="sa"):
        t = sample_t(data.schedule, batch_size, dev, generator, antithetic=True)  # shared by both terms
        u = (torch.rand((batch_size, *shape), generator=generator) * 2 - 1).to(dev)
        forget = eps_loss(model, data.schedule, u, y_forget, generator, pixels="sum", t=t)
        xr, yr = batch_of((x_replay, y_replay), batch_size, generator)
        replay = eps_loss(model, data.schedule, xr, yr, generator, pixels="sum", t=t)
        ewc = sum((f * (p - p0) ** 2).sum() for f, p, p0 in zip(fisher, model.parameters(), theta_star))
        loss = forget + gamma * replay + lam * ewc
        forget_losses.append(forget.detach())
        retain_losses.append(replay.detach())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        if ema is not None:
            ema.update_parameters(model)
    if ema is not None:
        model.load_state_dict(ema.module.state_dict())
    model.eval()
    return UnlearnStats.from_losses(steps, 2 * batch_size, forget_losses, retain_losses).with_prior(
        prior_sg, prior_nfe, prior_wall)

