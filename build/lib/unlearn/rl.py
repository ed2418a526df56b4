"""Random label: SalUn's loss without the saliency mask (Fan et al., ICLR 2024, their "RL" baseline; the
reference's RL runs the same loop as saliency_unlearn with the mask off). The forget images are anchored
to the fixed class (c_f + 1) mod K through the current model's own detached prediction; alpha * L_DDPM(D_r)
pixel-summed (see unlearn/salun.py for every choice and the ablation switches)."""

from __future__ import annotations

import torch

from unlearn.methods_common import UnlearnData, UnlearnStats
from unlearn.salun import salun


def rl(model, data: UnlearnData, *, steps: int = 1000, batch_size: int = 128, lr: float = 1e-4, alpha: float = 1e-3,
       retain_batch_size: int = 128, anchor: str = "next", target: str = "current", retain_pixels: str = "sum",
       retain_label_dropout: float = 0.1, forget_label_dropout: float = 0.1, grad_clip: float = 1.0,
       generator: torch.Generator | None = None) -> UnlearnStats:
    return salun(model, data, steps=steps, batch_size=batch_size, lr=lr, alpha=alpha, mask_density=None,
                 retain_batch_size=retain_batch_size, anchor=anchor, target=target, retain_pixels=retain_pixels,
                 retain_label_dropout=retain_label_dropout, forget_label_dropout=forget_label_dropout,
                 grad_clip=grad_clip, generator=generator)
