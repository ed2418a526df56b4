"""Fast-path switches for the UNet (config group `fast`, in configs/base.yaml).

Always on (no switch: they change nothing but speed): guidance's conditional and null passes run as one
batch (`diffusion.guided_eps`), sampling runs under `torch.inference_mode` (`diffusion.ddim_sample`),
evaluation samples in batches of `sampler.batch_size`, and training loops check for NaN only at budget
points (no host-device sync per step).

Switchable, each on by default only where it is safe:
- bf16: autocast the UNet's forward passes to bfloat16 (CUDA only by default; outputs are cast back to
  float32, so losses, guidance and the DDIM update stay in float32);
- tf32: TensorFloat-32 matmuls and convolutions (CUDA only);
- channels_last: NHWC weights and activations (CUDA only: on CPU it is slower for these small models);
- compile: torch.compile the UNet (off: compiling takes minutes, and pays only for long runs).
`fast.cpu=true` applies bf16 / channels_last on CPU too (for tests and experiments; usually slower there).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Fast:
    bf16: bool = True
    tf32: bool = True
    channels_last: bool = True
    compile: bool = False
    cpu: bool = False  # also apply bf16 / channels_last on CPU

    @classmethod
    def from_cfg(cls, f) -> Fast:
        return cls(**{k: bool(f[k]) for k in cls.__dataclass_fields__ if k in f}) if f is not None else cls()

    def applies(self, device: torch.device) -> bool:
        return device.type == "cuda" or self.cpu

    def backend(self, device: torch.device) -> None:
        """Process-wide math settings for `device` (TF32 on CUDA)."""
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = self.tf32
            torch.backends.cudnn.allow_tf32 = self.tf32
            torch.backends.cudnn.benchmark = self.bf16 or self.tf32 or self.channels_last

    def tag(self, device: torch.device, training: bool = False) -> dict:
        """The switches that change numbers on `device` (part of record and artifact keys; {} for plain
        fp32 on CPU). Trained models are never compiled, so `compile` is not part of a training tag."""
        on = self.applies(device)
        out = {"bf16": on and self.bf16, "tf32": device.type == "cuda" and self.tf32,
               "channels_last": on and self.channels_last, "compile": self.compile and not training}
        return {k: v for k, v in out.items() if v}

    def model(self, model: torch.nn.Module, device: torch.device, training: bool = False) -> torch.nn.Module:
        """Apply the per-model switches; the returned module shares its parameters with `model`. A model
        that will be trained (pretraining, unlearning) is not compiled: EMA copies and weight surgery need
        the plain module."""
        if self.applies(device) and self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        model.autocast_dtype = torch.bfloat16 if self.applies(device) and self.bf16 else None
        if self.compile and not training:
            compiled = torch.compile(model)
            compiled.autocast_dtype = model.autocast_dtype
            return compiled
        return model


@contextmanager
def fp32_math():
    """Full-precision matmuls and convolutions inside the block (TF32 off on CUDA), restored after. MIA audits
    run under it: bf16 / TF32 scores of SecMI correlate only 0.96 with fp32 ones on CUDA."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module under a torch.compile wrapper (what save_pretrained and weight surgery need)."""
    return getattr(model, "_orig_mod", model)
