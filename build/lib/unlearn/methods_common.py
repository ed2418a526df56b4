"""What every unlearning method receives and returns (plain dataclasses, no config, no file I/O)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from unlearn.diffusion import Schedule, eps_loss


@dataclass(frozen=True)
class UnlearnData:
    forget_x: torch.Tensor  # D_f: training images of the forgotten class, on the device
    retain_x: torch.Tensor  # D_r: the other training images
    retain_y: torch.Tensor
    forget_class: int
    num_classes: int  # K; the null class is index K
    schedule: Schedule


@dataclass(frozen=True)
class UnlearnStats:
    steps: int
    sample_gradients: int  # images that contributed a gradient, summed over steps (priors included)
    final_forget_loss: float
    final_retain_loss: float | None
    prior_sample_gradients: int = 0  # of which priors (SalUn's mask, SA's Fisher) took this many
    prior_nfe: int = 0               # network evaluations spent on priors without a gradient (SA's replay sampling)
    prior_wall_s: float = 0.0        # wall seconds of the priors (inside the method's total)
    forward_nfe: int = 0             # forward passes without a gradient in the loop (SalUn's anchor targets)

    @classmethod
    def from_losses(cls, steps: int, per_step_batch: int, forget_losses: list, retain_losses: list,
                    forward_nfe: int = 0):
        def tail(v):
            return round(torch.stack(v[-50:]).mean().item(), 5) if v else None

        return cls(steps, steps * per_step_batch, tail(forget_losses), tail(retain_losses), forward_nfe=forward_nfe)

    def with_prior(self, sample_gradients: int, nfe: int = 0, wall_s: float = 0.0) -> UnlearnStats:
        return replace(self, sample_gradients=self.sample_gradients + sample_gradients,
                       prior_sample_gradients=sample_gradients, prior_nfe=nfe, prior_wall_s=round(wall_s, 3))


def batch_of(tensors, batch_size: int, generator: torch.Generator | None):
    """A random batch (with replacement) from one tensor or a tuple of aligned tensors."""
    many = isinstance(tensors, tuple)
    first = tensors[0] if many else tensors
    idx = torch.randint(0, first.shape[0], (batch_size,), generator=generator).to(first.device)
    return tuple(t[idx] for t in tensors) if many else first[idx]


def retain_loss(model, data: UnlearnData, batch_size: int, generator: torch.Generator | None) -> torch.Tensor:
    """L_DDPM on a random batch of retained images with their own labels: every method's retain term."""
    xr, yr = batch_of((data.retain_x, data.retain_y), batch_size, generator)
    return eps_loss(model, data.schedule, xr, yr, generator)


def with_retain(loss: torch.Tensor, weight: float, model, data: UnlearnData, batch_size: int,
                generator: torch.Generator | None, log: list) -> torch.Tensor:
    """loss + weight * retain_loss (logged in `log`); the loss unchanged when weight is 0."""
    if weight <= 0:
        return loss
    retain = retain_loss(model, data, batch_size, generator)
    log.append(retain.detach())
    return loss + weight * retain
