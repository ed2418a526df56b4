"""The class-conditional UNet (diffusers UNet2DModel), EMA, checkpoints, devices and timing."""

from __future__ import annotations

import copy
import os
import subprocess
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import torch

from unlearn.errors import UserError

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach the Hub at run time


@dataclass(frozen=True)
class Arch:
    """UNet2DModel arguments that the model/ config group sets (the image size comes from the data)."""

    block_out_channels: tuple[int, ...] = (32, 64)
    down_block_types: tuple[str, ...] = ("DownBlock2D", "AttnDownBlock2D")
    up_block_types: tuple[str, ...] = ("AttnUpBlock2D", "UpBlock2D")
    layers_per_block: int = 1
    norm_num_groups: int = 8
    add_attention: bool = True


def build_unet(arch: Arch, image_shape: tuple[int, int, int], num_classes: int):
    """UNet2DModel with num_class_embeds = K + 1: row K is the null class used by CFG."""
    from diffusers import UNet2DModel

    c, h, w = image_shape
    if h != w:
        raise UserError(f"images must be square, got {h}x{w}")
    return UNet2DModel(
        sample_size=h, in_channels=c, out_channels=c,
        block_out_channels=tuple(arch.block_out_channels), down_block_types=tuple(arch.down_block_types),
        up_block_types=tuple(arch.up_block_types), layers_per_block=arch.layers_per_block,
        norm_num_groups=arch.norm_num_groups, add_attention=arch.add_attention,
        num_class_embeds=num_classes + 1,
    )


def null_class(model) -> int:
    return model.config.num_class_embeds - 1


class EMA:
    """Exponential moving average of a model's weights: ema <- decay * ema + (1 - decay) * model."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        torch._foreach_lerp_(list(self.model.parameters()), list(model.parameters()), 1.0 - self.decay)


def save_unet(model, folder: Path) -> None:
    model.save_pretrained(str(folder), safe_serialization=True)


def load_unet(folder: Path, device="cpu"):
    """Load a save_pretrained folder (safetensors only; never pickles, never the Hub)."""
    from diffusers import UNet2DModel

    folder = Path(folder)
    if not (folder / "config.json").is_file() or not (folder / "diffusion_pytorch_model.safetensors").is_file():
        raise UserError(f"{folder} is not a UNet checkpoint folder (need config.json and "
                        "diffusion_pytorch_model.safetensors); delete it and rerun to rebuild")
    try:
        model = UNet2DModel.from_pretrained(str(folder), use_safetensors=True, local_files_only=True,
                                            low_cpu_mem_usage=False)
    except (OSError, ValueError, RuntimeError) as e:
        raise UserError(f"checkpoint {folder} is corrupt ({type(e).__name__}); delete it and rerun to rebuild") from e
    return model.to(device).eval()


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device={name} but CUDA is not available; use device=auto or device=cpu")
    return torch.device(name)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


@dataclass
class Timer:
    """Accumulates wall seconds and device seconds (CUDA events on a GPU, wall time on CPU)."""

    device: torch.device
    wall_s: float = 0.0
    device_s: float = 0.0
    _t0: float = field(default=0.0, repr=False)
    _ev: tuple | None = field(default=None, repr=False)

    def __enter__(self):
        self._t0 = time.perf_counter()
        if self.device.type == "cuda":
            self._ev = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            self._ev[0].record(torch.cuda.current_stream(self.device))
        return self

    def __exit__(self, *exc):
        if self._ev is not None:
            self._ev[1].record(torch.cuda.current_stream(self.device))
            torch.cuda.synchronize(self.device)
            self.device_s += self._ev[0].elapsed_time(self._ev[1]) / 1000.0
        dt = time.perf_counter() - self._t0
        self.wall_s += dt
        if self._ev is None:
            self.device_s += dt
        return False


@lru_cache(maxsize=1)
def code_version() -> str:
    """git commit of the code (with '+dirty' when the tree has changes), or 'unknown'."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (sha or "unknown") + ("+dirty" if dirty else "")

