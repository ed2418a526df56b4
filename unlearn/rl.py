"""Random label: SalUn's loss without the saliency mask (Fan et al., ICLR 2024, their "RL" baseline).
The forget images are re-labelled as a random other class via a frozen copy's prediction; alpha * L_DDPM(D_r)."""

from __future__ import annotations

import torch

from unlearn.methods_common import UnlearnData, UnlearnStats
from unlearn.salun import salun


def rl(model, data: UnlearnData, *, steps: int = 1000, batch_size: int = 128, lr: float = 1e-4, alpha: float = 1e-3,
       retain_batch_size: int = 128, grad_clip: float = 1.0, generator: torch.Generator | None = None) -> UnlearnStats:
    return salun(model, data, steps=steps, batch_size=batch_size, lr=lr, alpha=alpha, mask_density=None,
                 retain_batch_size=retain_batch_size, grad_clip=grad_clip, generator=generator)
