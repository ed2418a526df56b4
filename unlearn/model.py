"""The class-conditional UNet (diffusers UNet2DModel), EMA, checkpoints, devices and timing."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import time
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from unlearn.diffusion import scheduler_config
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

    def __post_init__(self):
        """The settings that must agree with each other (each one alone: unlearn/settings.py)."""
        n = len(self.block_out_channels)
        if not len(self.down_block_types) == len(self.up_block_types) == n:
            raise UserError(f"model.arch has {n} block_out_channels, {len(self.down_block_types)} down_block_types "
                            f"and {len(self.up_block_types)} up_block_types; give one of each per level")
        attn = [ch for ch, b in zip(self.block_out_channels, self.down_block_types, strict=True) if "Attn" in b]
        attn += [ch for ch, b in zip(reversed(self.block_out_channels), self.up_block_types, strict=True)
                 if "Attn" in b]
        attn += [self.block_out_channels[-1]] if self.add_attention else []
        if any(ch % 8 for ch in attn):  # diffusers: heads = channels // attention_head_dim (8)
            raise UserError(f"model.arch: a level with attention needs a multiple of 8 channels, got "
                            f"block_out_channels={list(self.block_out_channels)}")
        if any(ch % self.norm_num_groups for ch in self.block_out_channels):
            raise UserError(f"model.arch.norm_num_groups={self.norm_num_groups} must divide every channel count "
                            f"(model.arch.block_out_channels={list(self.block_out_channels)})")


def build_unet(arch: Arch, image_shape: tuple[int, int, int], num_classes: int):
    """UNet2DModel with num_class_embeds = K + 1: row K is the null class used by CFG."""
    from diffusers import UNet2DModel  # heavy (about 5 s to import): only where a UNet is built or loaded

    c, h, w = image_shape
    if h != w:
        raise UserError(f"images must be square, got {h}x{w}")
    levels = len(arch.block_out_channels)
    if h % 2 ** (levels - 1):
        raise UserError(f"{h}x{w} images cannot be halved {levels - 1} times (model.arch has {levels} levels); "
                        "use fewer levels")
    return UNet2DModel(
        sample_size=h, in_channels=c, out_channels=c,
        block_out_channels=tuple(arch.block_out_channels), down_block_types=tuple(arch.down_block_types),
        up_block_types=tuple(arch.up_block_types), layers_per_block=arch.layers_per_block,
        norm_num_groups=arch.norm_num_groups, add_attention=arch.add_attention,
        num_class_embeds=num_classes + 1,
    )


def null_class(model) -> int:
    """The null label of classifier-free guidance: a UNet2DModel's last class row (num_class_embeds - 1), or the
    model's own `null_class` (unlearn/testbed.py: TestbedUNet, label n_classes)."""
    own = getattr(model, "null_class", None)
    return int(own) if own is not None else model.config.num_class_embeds - 1


def ema_of(model: torch.nn.Module, decay: float) -> AveragedModel:
    """Exponential moving average of `model`'s parameters, ema <- decay * ema + (1 - decay) * model: call
    `ema.update_parameters(model)` after each optimizer step; the averaged weights are `ema.module`.

    torch's AveragedModel with get_ema_multi_avg_fn (one torch._foreach_lerp_ per device and dtype). Its first
    update_parameters copies the model instead of averaging; that copy is made here, from the weights just
    deep-copied, so every training step is averaged (bitwise the former hand-written lerp: tests/test_ema.py).
    Parameters only (use_buffers=False: buffers are copied from the model; the UNets here hold none)."""
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=False)
    ema.eval().requires_grad_(False)
    ema.update_parameters(model)  # n_averaged 0 -> 1: the copy, before any step
    return ema


SCHEDULER_FILE = "scheduler_config.json"  # diffusers' name: DDIMScheduler.from_pretrained(folder) reads it
META_FILE = "conditioning.json"  # what from_pretrained users need besides the weights: null class, guidance, data
GUIDANCE = "eps = (1 + w) * eps(x_t, y) - w * eps(x_t, null)"  # unlearn.diffusion.guided_eps


def save_unet(model, folder: Path) -> None:
    """save_pretrained (config.json + safetensors), and beside it the toolkit's noise schedule as diffusers'
    scheduler_config.json and conditioning.json (null label, guidance formula, image shape and range), so
    `UNet2DModel.from_pretrained(folder)` + `DDIMScheduler.from_pretrained(folder)` is everything a user needs."""
    model = getattr(model, "_orig_mod", model)  # under torch.compile: the module itself
    model.to(memory_format=torch.contiguous_format).save_pretrained(str(folder), safe_serialization=True)
    c, size = model.config.in_channels, model.config.sample_size
    h, w = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
    meta = {"null_class": null_class(model), "num_classes": null_class(model), "guidance": GUIDANCE,
            "guidance_w": "w >= 0; w = 0 is purely conditional", "image_shape": [c, h, w], "pixel_range": [-1, 1],
            "prediction": "epsilon", "class_labels": "model(x_t, t, class_labels=y); y = null_class: unconditional"}
    (Path(folder) / SCHEDULER_FILE).write_text(json.dumps(scheduler_config(), indent=1))
    (Path(folder) / META_FILE).write_text(json.dumps(meta, indent=1))


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
TORCH_WEIGHTS = (".bin", ".pt", ".pth")  # a state dict in a pickle: read with torch.load(weights_only=True)
SAFE_WEIGHTS = "diffusion_pytorch_model.safetensors"
BIN_WEIGHTS = "diffusion_pytorch_model.bin"  # save_pretrained(safe_serialization=False)
FOLDER_KINDS = ("a save_pretrained folder (config.json + safetensors, or .bin / .pt / .pth weights), a testbed run "
                "folder (config.yml + ckpts/ckpt.pth) or a diffusers pipeline folder (unet/ + scheduler/)")


def weights_file(folder: Path, what: str = "checkpoint") -> Path:
    """The weights of a UNet folder: the safetensors file, else diffusers' .bin, else its one .bin / .pt / .pth."""
    if (folder / SAFE_WEIGHTS).is_file():
        return folder / SAFE_WEIGHTS
    if (folder / BIN_WEIGHTS).is_file():
        return folder / BIN_WEIGHTS
    found = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in TORCH_WEIGHTS)
    if len(found) == 1:
        return found[0]
    if found:
        raise UserError(f"{what} {folder} holds {len(found)} weight files ({', '.join(p.name for p in found[:3])}); "
                        f"keep one, or name it {SAFE_WEIGHTS} / {BIN_WEIGHTS}")
    other = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if other:
        raise UserError(f"{what} {folder} holds {other[0]}, which is read from no file but a .bin, .pt or .pth state "
                        f"dict; convert it once with model.save_pretrained(folder, safe_serialization=True)")
    raise UserError(f"{folder} is not a UNet checkpoint folder (need config.json and {SAFE_WEIGHTS}, or .bin / .pt / "
                    ".pth weights); give a save_pretrained folder, or delete a cached one and rerun to rebuild it")


def check_checkpoint_folder(folder: Path, what: str = "checkpoint") -> Path:
    """A save_pretrained folder: config.json + safetensors weights, or a state dict in a .bin / .pt / .pth file
    (read with weights_only=True, never plain unpickling). Checked before anything is loaded, so a missing path
    is never taken for a Hub id."""
    folder = Path(folder).expanduser()
    if folder.is_file():
        kind = "a pickle file" if folder.suffix in PICKLE_SUFFIXES else "a file"
        raise UserError(f"{what} {folder} is {kind}, not a folder; give the folder that holds the weights with their "
                        f"config.json: {FOLDER_KINDS}")
    if not folder.is_dir():
        raise UserError(f"{what} {folder} does not exist; give {FOLDER_KINDS}")
    weights_file(folder, what)
    if not (folder / "config.json").is_file():
        raise UserError(f"{what} {folder} has no config.json; save it with model.save_pretrained(folder)")
    return folder


def refusal_reason(e: Exception) -> str:
    """Why torch.load(weights_only=True) refused a file, in a few words (the global it names, if any)."""
    named = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) (\S+)", str(e))
    said = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", str(e))
    return (f"it names {named.group(1)}, which a state dict never does" if named else said.group(1)[:120] if said
            else (str(e).strip().splitlines() or [type(e).__name__])[0][:120])


def read_weights(path: Path, fix: str) -> dict[str, torch.Tensor]:
    """A state dict from a safetensors file, or from a pickle through torch.load(weights_only=True): a file that
    would run code or build any object but tensors is refused, with the reason, before anything in it runs."""
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise UserError(f"checkpoint {path} is truncated or corrupt ({str(e).splitlines()[0][:120]}); {fix}") from e
    return pickled_state_dict(path, f"checkpoint {path}", "save a plain state dict, or model.save_pretrained(folder)",
                              "save model.state_dict() there, or model.save_pretrained(folder)")


def pickled_state_dict(path: Path, name: str, refused_fix: str, holds_fix: str) -> dict[str, torch.Tensor]:
    """A state dict of tensors from a pickle, through torch.load(weights_only=True) only: a file that would run code
    or build any object but tensors is refused with the reason (`name` starts each one-line error)."""
    try:
        with warnings.catch_warnings():  # torch warns about a pickle protocol it did not write: noise here
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - UnpicklingError (code, a class), EOFError, zip errors: all refused
        raise UserError(f"{name} is refused: torch.load(weights_only=True) rejects it "
                        f"({refusal_reason(e)}); {refused_fix}") from e
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{name} holds {type(state).__name__}, not a state dict of tensors; {holds_fix}")
    return state


def load_unet(folder: Path, device="cpu", expect: tuple[tuple[int, int, int], int] | None = None):
    """Load a save_pretrained folder: config.json + safetensors (or a .bin / .pt / .pth state dict read with
    weights_only=True); never plain unpickling, never the Hub.

    Built from the config, then the weights are checked name by name and shape by shape before they are
    copied in, so a truncated, corrupt or mismatched file is one clear error. `expect` =
    (image shape, number of classes): a checkpoint made for other data is refused."""
    from diffusers import UNet2DModel  # heavy (about 5 s to import): only where a UNet is built or loaded

    folder = check_checkpoint_folder(folder)
    fix = "delete it and rerun to rebuild it (cached artifact) or re-export it (your own checkpoint)"
    try:
        config = json.loads((folder / "config.json").read_text())
        if config.get("_class_name", "UNet2DModel") != "UNet2DModel":
            raise ValueError(f"config.json describes a {config['_class_name']}, not a UNet2DModel")
        model = UNet2DModel.from_config(config)
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise UserError(f"checkpoint {folder} has a bad config.json ({str(e).splitlines()[0][:160]}); {fix}") from e
    if not model.config.num_class_embeds:
        raise UserError(f"checkpoint {folder} is an unconditional UNet (config.json has no num_class_embeds); "
                        "attacks on class unlearning need a class-conditional model with a null class row")
    if expect is not None:
        check_shape(folder, (model.config.in_channels, *_hw(model.config.sample_size)),
                    model.config.num_class_embeds - 1, expect)
    state = read_weights(weights_file(folder), fix)
    want = model.state_dict()
    missing, extra = sorted(set(want) - set(state)), sorted(set(state) - set(want))
    wrong = [n for n in want if n in state and state[n].shape != want[n].shape]
    if missing or extra or wrong:
        what = (f"{wrong[0]} is {tuple(state[wrong[0]].shape)} in the weights but {tuple(want[wrong[0]].shape)} "
                "in config.json" if wrong else f"{len(missing)} missing, {len(extra)} unexpected tensors "
                f"(e.g. {(missing or extra)[0]})")
        raise UserError(f"checkpoint {folder}: weights do not match its config.json ({what}); {fix}")
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


def _hw(size) -> tuple[int, int]:
    return tuple(size) if isinstance(size, (list, tuple)) else (size, size)


def check_shape(folder: Path, shape: tuple[int, int, int], num_classes: int,
                expect: tuple[tuple[int, int, int], int]) -> None:
    """A checkpoint for (C, H, W) images and num_classes classes (+ null) against the data's `expect`."""
    (c, h, w), k = expect
    if (tuple(shape), num_classes) != ((c, h, w), k):
        raise UserError(f"checkpoint {folder} is for {shape[1]}x{shape[2]}x{shape[0]} images with {num_classes + 1} "
                        f"class rows, but the data is {h}x{w}x{c} with {k} classes + null; pick the data= it was "
                        "trained on")


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device={name} but CUDA is not available; use device=auto or device=cpu")
    device = torch.device(name)
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"device={name} but this machine has {torch.cuda.device_count()} GPU(s); use cuda:0 .. "
                        f"cuda:{torch.cuda.device_count() - 1}")
    return device


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
    """git commit of the code (with '+dirty' when the tree has changes); an installed copy (no checkout around it):
    `unlearning-robustness <version>`; else 'unknown'."""
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():  # installed (site-packages): git would answer for whatever repo holds the venv
        try:
            return f"unlearning-robustness {importlib.metadata.version('unlearning-robustness')}"
        except importlib.metadata.PackageNotFoundError:
            return "unknown"
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (sha or "unknown") + ("+dirty" if dirty else "")

