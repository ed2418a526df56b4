"""A small in-house LoRA (Hu et al. 2022) for the relearning attack's low-rank variant.

Why in-house rather than peft: the project's UNets are conv-only at digits size (no attention), peft's
conv LoRA would add a dependency for ~40 lines, and the attack must keep the base weights untouched.

    W x  ->  W x + (alpha / r) * up(down(x)),   up initialised to zero (the attack starts at the model)

Linear layers get down: Linear(in, r), up: Linear(r, out). Conv2d layers get down: Conv2d(in, r, same
kernel/stride/padding), up: 1x1 Conv2d(r, out). Targets are matched as suffixes of the module's dotted name.
"""

from __future__ import annotations

import torch
from torch import nn

DEFAULT_TARGETS = ("conv1", "conv2", "time_emb_proj", "to_q", "to_k", "to_v", "to_out.0")  # diffusers' UNet2DModel
# a model class names its own (unlearn/testbed.py: the testbed's ResnetBlock and 1x1-conv attention)
TARGETS_ATTR = "lora_targets"


class LoRA(nn.Module):
    def __init__(self, base: nn.Module, rank: int, alpha: float, generator: torch.Generator | None = None):
        super().__init__()
        self.base, self.scale = base, alpha / rank
        if isinstance(base, nn.Linear):
            self.down = nn.Linear(base.in_features, rank, bias=False)
            self.up = nn.Linear(rank, base.out_features, bias=False)
        elif isinstance(base, nn.Conv2d):
            self.down = nn.Conv2d(base.in_channels, rank, base.kernel_size, base.stride, base.padding, bias=False)
            self.up = nn.Conv2d(rank, base.out_channels, 1, bias=False)
        else:
            raise TypeError(f"LoRA supports Linear and Conv2d, not {type(base).__name__}")
        nn.init.kaiming_uniform_(self.down.weight, a=5**0.5, generator=generator)  # on CPU, then moved
        nn.init.zeros_(self.up.weight)
        self.down.to(base.weight.device)
        self.up.to(base.weight.device)

    def forward(self, x):
        return self.base(x) + self.scale * self.up(self.down(x))


def add_lora(model: nn.Module, rank: int, alpha: float | None = None, targets: tuple[str, ...] | None = None,
             generator: torch.Generator | None = None) -> list[nn.Parameter]:
    """Wrap every targeted Linear / Conv2d in `model` (in place); freeze the rest; return the adapters'
    parameters. targets: the model's own `lora_targets` when it names them, else DEFAULT_TARGETS. The
    down-projections are drawn from `generator` (CPU), so every role gets the same adapters for a seed and a
    resumed run replays the same attack."""
    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    if targets is None:
        targets = tuple(getattr(getattr(model, "_orig_mod", model), TARGETS_ATTR, DEFAULT_TARGETS))
    model.requires_grad_(False)
    wrapped = []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            wanted = any(full == t or full.endswith("." + t) for t in targets)
            if wanted and isinstance(child, (nn.Linear, nn.Conv2d)):
                setattr(module, child_name, LoRA(child, rank, float(alpha if alpha is not None else rank), generator))
                wrapped.append(full)
    if not wrapped:
        raise ValueError("LoRA matched no layer; check the target names")
    return [p for m in model.modules() if isinstance(m, LoRA) for p in (*m.down.parameters(), *m.up.parameters())]
