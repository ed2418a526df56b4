"""What every unlearning method receives and returns (plain dataclasses, no config, no file I/O)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unlearn.diffusion import Schedule


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
    sample_gradients: int  # images that contributed a gradient, summed over steps
    final_forget_loss: float
    final_retain_loss: float | None

    @classmethod
    def from_losses(cls, steps: int, per_step_batch: int, forget_losses: list, retain_losses: list):
        def tail(v):
            return round(torch.stack(v[-50:]).mean().item(), 5) if v else None

        return cls(steps, steps * per_step_batch, tail(forget_losses), tail(retain_losses))


def batch_of(tensors, batch_size: int, generator: torch.Generator | None):
    """A random batch (with replacement) from one tensor or a tuple of aligned tensors."""
    many = isinstance(tensors, tuple)
    first = tensors[0] if many else tensors
    idx = torch.randint(0, first.shape[0], (batch_size,), generator=generator).to(first.device)
    return tuple(t[idx] for t in tensors) if many else first[idx]
