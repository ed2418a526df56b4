"""Every checkpoint the toolkit attacks, behind one entry point: `load_checkpoint(path, device)`.

The module it returns is called as `m(x_t, t, class_labels=y)` and gives the noise prediction eps (a tensor, or
an object with `.sample`: `unlearn.diffusion.predict_eps` reads both); label `null_class(m)` (= the number of
classes) is the null class of classifier-free guidance. Accepted, told apart by what the folder holds:

    kind        the folder holds                                  loaded by
    unet        config.json + diffusion_pytorch_model.safetensors unlearn.model.load_unet (the toolkit's own
                (or a .bin / .pt / .pth state dict)               save_pretrained folders, and anyone's)
    pipeline    unet/ + scheduler/ (a diffusers pipeline)        load_unet(unet/), after its scheduler's noise
                                                                  schedule is checked against the toolkit's
    testbed     config.yml + ckpts/ckpt.pth (SalUn / SA DDPM)    unlearn.testbed.load_testbed

Pickles are read only through torch.load(weights_only=True): a file that would run code is refused with the
reason, before anything in it runs. A testbed model is sampled with its own schedule (`checkpoint_schedule`,
from its config.yml); the guidance formula is the same everywhere (`unlearn.diffusion.guided_eps`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from unlearn.diffusion import SCHEDULE, Schedule
from unlearn.errors import UserError
from unlearn.model import check_checkpoint_folder, check_shape, load_unet, null_class, resolve_device
from unlearn.testbed import CKPT_FILE, CONFIG_FILE, TestbedUNet, load_testbed, read_testbed_config, testbed_schedule

PIPELINE_SCHEDULER = "scheduler/scheduler_config.json"
SCHEDULE_KEYS = ("beta_schedule", "beta_start", "beta_end", "num_train_timesteps", "prediction_type")


def checkpoint_kind(path: str | Path, what: str = "checkpoint") -> str:
    """"unet", "pipeline" or "testbed" (see the module docstring); a path that is none of them is one line."""
    path = Path(path).expanduser()
    if path.is_dir() and (path / CONFIG_FILE).is_file() and not (path / "config.json").is_file():
        return "testbed"
    if path.is_dir() and (path / "unet").is_dir() and (path / "scheduler").is_dir():
        return "pipeline"
    if path.is_dir() and (path / "ckpts").is_dir():
        raise UserError(f"{what} {path} looks like a testbed run folder but has no {CONFIG_FILE}; save the training "
                        f"config there as {CONFIG_FILE} (beside {CKPT_FILE})")
    check_checkpoint_folder(path, what)
    return "unet"


def check_checkpoint(path: str | Path, what: str = "checkpoint") -> Path:
    """The path, if it is a checkpoint folder of an accepted kind (nothing loaded yet, the Hub never asked)."""
    path = Path(path).expanduser()
    kind = checkpoint_kind(path, what)
    if kind == "pipeline":
        check_checkpoint_folder(path / "unet", f"{what} (the pipeline's unet/)")
        check_pipeline_schedule(path)
    if kind == "testbed":
        read_testbed_config(path)
    return path


def check_pipeline_schedule(folder: Path) -> None:
    """A diffusers pipeline's scheduler must have been trained with the toolkit's schedule (SCHEDULE): the toolkit
    samples it with its own, so another schedule would be sampled wrong. Refused with both named."""
    path = folder / PIPELINE_SCHEDULER
    if not path.is_file():
        raise UserError(f"pipeline {folder} has no {PIPELINE_SCHEDULER}; save the pipeline with "
                        "pipeline.save_pretrained(folder)")
    try:
        config = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not JSON ({str(e)[:80]}); re-save the pipeline") from e
    # diffusers' defaults for a key the file leaves out (DDPMScheduler / DDIMScheduler)
    got = {"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02, "num_train_timesteps": 1000,
           "prediction_type": "epsilon", **{k: config[k] for k in SCHEDULE_KEYS if k in config}}
    if config.get("trained_betas") is not None:
        got["beta_schedule"] = "trained_betas"
    same = all(got[k] == SCHEDULE[k] if isinstance(SCHEDULE[k], str) else
               isinstance(got[k], int | float) and abs(got[k] - SCHEDULE[k]) <= 1e-12 for k in SCHEDULE_KEYS)
    if not same:
        show = lambda d: ", ".join(f"{k}={d[k]}" for k in SCHEDULE_KEYS)  # noqa: E731
        raise UserError(f"pipeline {folder} was trained with the schedule {show(got)}, but the toolkit samples "
                        f"with {show(SCHEDULE)}; give a model trained with the toolkit's schedule")


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu",
                    expect: tuple[tuple[int, int, int], int] | None = None) -> torch.nn.Module:
    """Any accepted checkpoint folder -> the model in eval mode on `device` (see the module docstring).
    expect = (image shape, number of classes) of the data: a checkpoint for other data is refused."""
    path = check_checkpoint(path)
    device = resolve_device(device) if isinstance(device, str) else device
    kind = checkpoint_kind(path)
    if kind == "pipeline":
        return load_unet(path / "unet", device, expect)
    if kind == "unet":
        return load_unet(path, device, expect)
    if expect is not None:  # before the weights are read: a testbed checkpoint is tens of MB
        config = read_testbed_config(path)
        check_shape(path, (config.in_channels, config.image_size, config.image_size), config.n_classes, expect)
    return load_testbed(path, device)[0]


def checkpoint_schedule(path: str | Path, device: str | torch.device = "cpu") -> Schedule:
    """The schedule a checkpoint is sampled with: a testbed's from its config.yml (its betas, computed as the
    testbed does), else the toolkit's (a pipeline's was checked to equal it)."""
    if checkpoint_kind(path) == "testbed":
        return testbed_schedule(read_testbed_config(Path(path).expanduser()), device)
    return Schedule.linear(device=device)


def schedule_name(path: str | Path | None) -> str:
    """What two checkpoints must share to be compared, e.g. "linear 0.0001..0.02 over 1000 steps" (None: the
    toolkit's own, that of every model it builds)."""
    if path is not None and checkpoint_kind(path) == "testbed":
        c = read_testbed_config(Path(path).expanduser())
        return f"{c.beta_schedule} {c.beta_start:g}..{c.beta_end:g} over {c.num_timesteps} steps"
    return f"{SCHEDULE['beta_schedule']} {SCHEDULE['beta_start']:g}..{SCHEDULE['beta_end']:g} over " \
           f"{SCHEDULE['num_train_timesteps']} steps"


# The parts that some attacks train or replace (attack.part=embedding / last_up, the embedding inversion), by model:
# a UNet2DModel's `class_embedding` (rows 0..K, row K the null class) and `up_blocks[-1]`; a testbed model's
# `classes_emb` (rows 0..K-1; the null vector is the separate `null_classes_emb`) and `up[0]` (its up path runs
# from up[-1] to up[0], so up[0] is the level nearest the output).
def class_table_name(model: torch.nn.Module) -> str:
    """The attribute holding the class-embedding table (an nn.Embedding indexed by label)."""
    return "classes_emb" if isinstance(model, TestbedUNet) else "class_embedding"


def null_vector(model: torch.nn.Module) -> torch.Tensor:
    """The embedding the null label takes (before any class MLP)."""
    if isinstance(model, TestbedUNet):
        return model.null_classes_emb.detach()
    return model.class_embedding.weight.detach()[null_class(model)]


def last_up_block(model: torch.nn.Module) -> torch.nn.Module:
    """The up block nearest the output."""
    return model.up[0] if isinstance(model, TestbedUNet) else model.up_blocks[-1]
