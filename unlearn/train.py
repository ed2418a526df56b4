"""Train the base class-conditional DDPM (or, with `exclude_class`, the retrained oracle); unlearn/pipeline.py
caches the result (python -m unlearn.pretrain builds it from the command line).

Recipe: eps-prediction DDPM loss (Algorithm 1), label dropout to the null class K (for CFG), Adam with
linear warm-up, EMA weights saved as the checkpoint.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from unlearn.data import Dataset
from unlearn.diffusion import Schedule, eps_loss
from unlearn.fast import Fast
from unlearn.model import Arch, Timer, build_unet, ema_of
from unlearn.progress import bar

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainRecipe:
    steps: int = 1500
    batch_size: int = 128
    lr: float = 2e-3
    warmup_steps: int = 100
    ema_decay: float = 0.995
    label_dropout: float = 0.1
    grad_clip: float = 1.0


def train_ddpm(ds: Dataset, arch: Arch, recipe: TrainRecipe, seed: int, device: torch.device,
               exclude_class: int | None = None, fast: Fast | None = None):
    """Train from scratch; returns (EMA model, stats). exclude_class drops that class (the oracle)."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    keep = ds.y_train != exclude_class if exclude_class is not None else torch.ones_like(ds.y_train, dtype=torch.bool)
    x_all, y_all = ds.x_train[keep].to(device), ds.y_train[keep].to(device)
    null = ds.num_classes
    model = build_unet(arch, ds.image_shape, ds.num_classes).to(device).train()
    if fast is not None:
        model = fast.model(model, device, training=True)
    ema = ema_of(model, recipe.ema_decay)
    opt = torch.optim.Adam(model.parameters(), lr=recipe.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, recipe.warmup_steps)))
    schedule = Schedule.linear(device=device)
    timer = Timer(device)
    losses = []
    with timer:
        for _step in bar(range(recipe.steps), desc="pretrain"):
            idx = torch.randint(0, len(x_all), (recipe.batch_size,), generator=g).to(device)
            x0, y = x_all[idx], y_all[idx]
            drop = torch.rand(y.shape, generator=g).to(device) < recipe.label_dropout
            y = torch.where(drop, torch.full_like(y, null), y)
            loss = eps_loss(model, schedule, x0, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
            opt.step()
            sched.step()
            ema.update_parameters(model)
            losses.append(loss.detach())
    tail = torch.stack(losses[-100:]).mean().item()
    stats = {"train_images": int(len(x_all)), "final_loss": round(tail, 5), "wall_s": round(timer.wall_s, 2),
             "device_s": round(timer.device_s, 2), "sample_gradients": recipe.steps * recipe.batch_size,
             "params": sum(p.numel() for p in model.parameters())}
    log.info("pretrained %s (excluded class %s): loss %.4f in %.0fs", ds.name, exclude_class, tail, timer.wall_s)
    return ema.module, stats
