"""The SalUn / Selective-Amnesia DDPM testbed's model, loaded from the testbed's own checkpoints.

Selective Amnesia (Heng & Soh, NeurIPS 2023), SalUn (Fan et al., ICLR 2024) and the methods compared with
them train and unlearn one model: `Conditional_Model` in OPTML-Group/Unlearn-Saliency
DDPM/models/diffusion.py (the same class as clear-nus/selective-amnesia ddpm/models/diffusion.py), Ho et
al.'s CIFAR-10 UNet with a learned class embedding added to the timestep embedding in every ResnetBlock.
`TestbedUNet` rebuilds it with the same state-dict names; `load_testbed` reads a run folder the way the
testbed's sampler does (DDPM/runners/diffusion.py, Diffusion.sample).

Notation (testbed -> here):

    c, cond_drop_prob = 1.0          class_labels == n_classes: the learned `null_classes_emb`
    _forward_with_cond_scale         unlearn.diffusion.guided_eps: (1 + w) eps(x_t, y) - w eps(x_t, null)
    cond_scale                       guidance_w
    states[0] / states[-1]           the weights / the EMA shadow in ckpts/ckpt.pth
    generalized_steps_conditional    testbed_ddim (eta = 0, x0 never clipped)

Inferred or changed, named:
- [quirk kept] every ResnetBlock's embedding projection takes 4 * ch + 512 inputs (its cemb_channels=512 is
  never overridden), so the reference only runs with ch = 128; another ch is refused (`TestbedConfig`).
- [changed] the reference drops labels at random inside the model while training (cond_drop_prob); here the
  caller passes the null label, as everywhere in this project, so `forward` is deterministic.
"""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from unlearn.diffusion import Schedule, ddim_step, guided_eps
from unlearn.errors import UserError
from unlearn.model import resolve_device

CONFIG_FILE = "config.yml"
CKPT_FILE = "ckpts/ckpt.pth"
CEMB_WIDTH = 512  # ResnetBlock's cemb_channels default, which Conditional_Model never overrides
TESTBED_CH = CEMB_WIDTH // 4  # the class embedding is 4 * ch wide: the only ch the reference runs with
DATA_PARALLEL_PREFIX = "module."  # states[0] of a model trained under nn.DataParallel (the testbed's default)

# the testbed's get_beta_schedule (float64, then float32): start, end, T -> beta_1..T
BETA_SCHEDULES = {
    "linear": lambda s, e, n: np.linspace(s, e, n, dtype=np.float64),
    "quad": lambda s, e, n: np.linspace(s**0.5, e**0.5, n, dtype=np.float64) ** 2,
    "const": lambda s, e, n: e * np.ones(n, dtype=np.float64),
    "jsd": lambda s, e, n: 1.0 / np.linspace(n, 1, n, dtype=np.float64),
    "sigmoid": lambda s, e, n: 1 / (np.exp(-np.linspace(-6, 6, n)) + 1) * (e - s) + s,
}


# TestbedConfig field -> (config.yml key, type); `tuple`: a yaml list of integers
CONFIG_KEYS = {
    "image_size": ("data.image_size", int), "n_classes": ("data.n_classes", int),
    "in_channels": ("model.in_channels", int), "out_ch": ("model.out_ch", int), "ch": ("model.ch", int),
    "ch_mult": ("model.ch_mult", tuple), "num_res_blocks": ("model.num_res_blocks", int),
    "attn_resolutions": ("model.attn_resolutions", tuple), "dropout": ("model.dropout", float),
    "resamp_with_conv": ("model.resamp_with_conv", bool), "model_type": ("model.type", str),
    "ema": ("model.ema", bool), "beta_schedule": ("diffusion.beta_schedule", str),
    "beta_start": ("diffusion.beta_start", float), "beta_end": ("diffusion.beta_end", float),
    "num_timesteps": ("diffusion.num_diffusion_timesteps", int),
}


@dataclass(frozen=True)
class TestbedConfig:
    """The config.yml keys (CONFIG_KEYS) that the testbed's model, loader and sampler read; training keys
    (cond_drop_prob, ema_rate, optim, ...) are not needed here and not read."""

    __test__ = False  # its name starts with "Test": not a pytest class

    image_size: int
    n_classes: int  # label n_classes is the null class
    in_channels: int
    out_ch: int
    ch: int
    ch_mult: tuple[int, ...]
    num_res_blocks: int
    attn_resolutions: tuple[int, ...]
    dropout: float
    resamp_with_conv: bool
    model_type: str  # "bayesian" adds a `logvar` parameter, as in the reference
    ema: bool  # sample with the EMA shadow states[-1]
    beta_schedule: str
    beta_start: float
    beta_end: float
    num_timesteps: int

    def __post_init__(self):
        """Refuse what the reference cannot build, or builds and then fails on at its first forward pass."""
        if self.ch != TESTBED_CH:
            raise UserError(f"model.ch={self.ch}: the testbed's ResnetBlocks take a {CEMB_WIDTH}-wide class "
                            f"embedding whatever ch is, so its model only runs with 4 * ch = {CEMB_WIDTH}; "
                            f"set model.ch: {TESTBED_CH}")
        if not self.ch_mult or min(self.ch_mult) < 1:
            raise UserError(f"model.ch_mult={list(self.ch_mult)}: give one positive integer per level, "
                            "e.g. [1, 2, 2, 2]")
        halvings = len(self.ch_mult) - 1
        if self.image_size < 1 or self.image_size % 2**halvings:
            raise UserError(f"data.image_size={self.image_size} cannot be halved {halvings} times (model.ch_mult "
                            f"has {len(self.ch_mult)} levels); use a multiple of {2**halvings} or fewer levels")
        small = [f for f in ("n_classes", "in_channels", "out_ch", "num_res_blocks", "num_timesteps")
                 if getattr(self, f) < 1]
        if small:
            raise UserError(f"{CONFIG_KEYS[small[0]][0]}={getattr(self, small[0])} in {CONFIG_FILE}: "
                            "set it to at least 1")
        if self.beta_schedule not in BETA_SCHEDULES:
            raise UserError(f"diffusion.beta_schedule={self.beta_schedule!r}: use one of the testbed's "
                            f"{sorted(BETA_SCHEDULES)}")

    @classmethod
    def from_dict(cls, raw: dict) -> TestbedConfig:
        """From the parsed yaml; a missing or mistyped key is one line naming it."""
        return cls(**{field: _value(raw, key, kind) for field, (key, kind) in CONFIG_KEYS.items()})


def _value(raw: dict, key: str, kind: type):
    """A dotted key of the yaml, type-checked (a bool is no int; an int is a float; tuple: a list of ints)."""
    node = raw
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise UserError(f"{CONFIG_FILE} has no {key}; add it (the testbed's configs/cifar10_train.yml "
                            "names every key)")
        node = node[part]
    item = int if kind is tuple else kind
    items = node if kind is tuple and isinstance(node, list) else [node]
    if (kind is tuple) != isinstance(node, list) or not all(
            type(v) is item or (item is float and type(v) is int) for v in items):
        what = "a list of integers" if kind is tuple else f"a {item.__name__}"
        raise UserError(f"{CONFIG_FILE}: {key} must be {what}, got {node!r}")
    return tuple(node) if kind is tuple else kind(node)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of DDPM (Ho et al. 2020, from tensor2tensor): [sin(t f_i), cos(t f_i)] with
    f_i = 10000^(-i / (dim/2 - 1)), i < dim/2; a zero column pads an odd dim. float32, as the reference."""
    half = dim // 2
    freq = torch.exp(torch.arange(half, dtype=torch.float32) * -(math.log(10000) / (half - 1))).to(t.device)
    angle = t.float()[:, None] * freq[None, :]
    return F.pad(torch.cat([angle.sin(), angle.cos()], dim=1), (0, dim % 2))


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=1e-6)


class _ResBlock(nn.Module):
    """h = conv1(silu(norm1(x))) + W silu([temb, cemb]); out = shortcut(x) + conv2(dropout(silu(norm2(h))))."""

    def __init__(self, c_in: int, c_out: int, temb_width: int, dropout: float):
        super().__init__()
        self.norm1, self.conv1 = _norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.temb_cemb_proj = nn.Linear(temb_width + CEMB_WIDTH, c_out)
        self.norm2, self.dropout = _norm(c_out), nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        if c_in != c_out:  # the reference's 1x1 shortcut (its conv_shortcut option is never switched on)
            self.nin_shortcut = nn.Conv2d(c_in, c_out, 1)

    def forward(self, x, temb, cemb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb_cemb_proj(F.silu(torch.cat([temb, cemb], dim=-1)))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h


class _Attention(nn.Module):
    """Single-head self-attention over the H*W positions with 1x1-conv q, k, v, a residual output."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = _norm(channels)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(channels, channels, 1) for _ in range(4))

    def forward(self, x):
        b, c, hgt, wid = x.shape
        h = self.norm(x)
        q, k, v = (conv(h).reshape(b, c, hgt * wid) for conv in (self.q, self.k, self.v))
        weights = torch.softmax(torch.bmm(q.transpose(1, 2), k) * c**-0.5, dim=2)  # [b, query, key]
        out = torch.bmm(v, weights.transpose(1, 2)).reshape(b, c, hgt, wid)
        return x + self.proj_out(out)


class _Resample(nn.Module):
    """x2 up (nearest, then a 3x3 conv) or /2 down (pad right/bottom by 1, 3x3 conv stride 2; avg pool
    without conv)."""

    def __init__(self, channels: int, with_conv: bool, up: bool):
        super().__init__()
        self.up = up
        if with_conv:
            self.conv = nn.Conv2d(channels, channels, 3, stride=1 if up else 2, padding=1 if up else 0)

    def forward(self, x):
        if self.up:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            return self.conv(x) if hasattr(self, "conv") else x
        if hasattr(self, "conv"):
            return self.conv(F.pad(x, (0, 1, 0, 1)))
        return F.avg_pool2d(x, kernel_size=2, stride=2)


def _embedding_mlp(ch: int) -> nn.Module:
    mlp = nn.Module()
    mlp.dense = nn.ModuleList([nn.Linear(ch, 4 * ch), nn.Linear(4 * ch, 4 * ch)])
    return mlp


def _mlp(mlp: nn.Module, h: torch.Tensor) -> torch.Tensor:
    return mlp.dense[1](F.silu(mlp.dense[0](h)))


class TestbedUNet(nn.Module):
    """The testbed's `Conditional_Model`, state-dict key for key. `m(x, t, class_labels=y)` -> eps [N, C, H, W].

    Labels 0..n_classes-1 take rows of `classes_emb`; label n_classes (`self.null_class`) takes the learned
    `null_classes_emb`, the vector the reference puts in place of the class embedding on its unconditional
    pass (cond_drop_prob = 1); either then goes through the class MLP `cemb`, as in the reference."""

    __test__ = False  # its name starts with "Test": not a pytest class
    # the layers the LoRA relearning attack adapts (attacks/lora.py): the ResnetBlocks' convs and their time+class
    # projection, and the attention's 1x1-conv q, k, v and output
    lora_targets = ("conv1", "conv2", "temb_cemb_proj", "q", "k", "v", "proj_out")

    def __init__(self, config: TestbedConfig):
        super().__init__()
        ch, levels = config.ch, len(config.ch_mult)
        self.ch, self.null_class, self.resolution = ch, config.n_classes, config.image_size
        if config.model_type == "bayesian":
            self.logvar = nn.Parameter(torch.zeros(config.num_timesteps))
        self.temb, self.cemb = _embedding_mlp(ch), _embedding_mlp(ch)
        self.classes_emb = nn.Embedding(config.n_classes, ch)
        self.null_classes_emb = nn.Parameter(torch.randn(ch))
        self.conv_in = nn.Conv2d(config.in_channels, ch, 3, padding=1)
        widths = [ch * m for m in (1, *config.ch_mult)]  # widths[i]: into level i; widths[i + 1]: level i's blocks
        self.down = nn.ModuleList(_level(config, widths, i, up=False) for i in range(levels))
        self.mid = nn.Module()
        self.mid.block_1 = _ResBlock(widths[-1], widths[-1], 4 * ch, config.dropout)
        self.mid.attn_1 = _Attention(widths[-1])
        self.mid.block_2 = _ResBlock(widths[-1], widths[-1], 4 * ch, config.dropout)
        self.up = nn.ModuleList(_level(config, widths, i, up=True) for i in range(levels))
        self.norm_out, self.conv_out = _norm(widths[1]), nn.Conv2d(widths[1], config.out_ch, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor) -> torch.Tensor:
        if x.shape[2] != self.resolution or x.shape[3] != self.resolution:
            raise UserError(f"the testbed model takes {self.resolution}x{self.resolution} images, got "
                            f"{x.shape[2]}x{x.shape[3]}; use the data its config.yml names")
        t = t.expand(x.shape[0]) if t.dim() == 0 else t
        temb = _mlp(self.temb, timestep_embedding(t, self.ch).to(x.dtype))
        is_null = class_labels == self.null_class
        cemb = self.classes_emb(class_labels.masked_fill(is_null, 0))
        cemb = _mlp(self.cemb, torch.where(is_null[:, None], self.null_classes_emb, cemb))
        skips = [self.conv_in(x)]
        for level in self.down:
            for j, block in enumerate(level.block):
                h = block(skips[-1], temb, cemb)
                skips.append(level.attn[j](h) if len(level.attn) else h)
            if hasattr(level, "downsample"):
                skips.append(level.downsample(skips[-1]))
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(skips[-1], temb, cemb)), temb, cemb)
        for level in reversed(self.up):
            for j, block in enumerate(level.block):
                h = block(torch.cat([h, skips.pop()], dim=1), temb, cemb)
                h = level.attn[j](h) if len(level.attn) else h
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


def _level(config: TestbedConfig, widths: list[int], i: int, up: bool) -> nn.Module:
    """Level i of the down path (num_res_blocks blocks, widths[i] -> widths[i + 1], then /2 except the last) or
    of the up path (num_res_blocks + 1 blocks, each taking one skip; the last skip is the level's input width;
    then x2 except level 0). Attention after every block where the level's resolution is in attn_resolutions."""
    level, top, out = nn.Module(), len(config.ch_mult) - 1, widths[i + 1]
    if up:
        below = widths[i + 2] if i < top else out  # what the level below (or the middle) hands up
        skips = [out] * config.num_res_blocks + [widths[i]]
        ins = [(below if j == 0 else out) + skip for j, skip in enumerate(skips)]
    else:
        ins = [widths[i]] + [out] * (config.num_res_blocks - 1)
    level.block = nn.ModuleList(_ResBlock(c_in, out, 4 * config.ch, config.dropout) for c_in in ins)
    attend = config.image_size // 2**i in config.attn_resolutions
    level.attn = nn.ModuleList(_Attention(out) for _ in ins if attend)
    if up and i > 0:
        level.upsample = _Resample(out, config.resamp_with_conv, up=True)
    if not up and i < top:
        level.downsample = _Resample(out, config.resamp_with_conv, up=False)
    return level


def testbed_schedule(config: TestbedConfig, device: torch.device | str = "cpu") -> Schedule:
    """The testbed's alpha_bar: betas from its schedule in float64, cast to float32, then the cumulative product
    of (1 - beta) in float32 (its compute_alpha), so DDIM sees the very numbers the testbed does."""
    beta = BETA_SCHEDULES[config.beta_schedule](config.beta_start, config.beta_end, config.num_timesteps)
    alpha_bar = torch.cumprod(1.0 - torch.from_numpy(beta).float(), dim=0)
    return Schedule(alpha_bar=alpha_bar.to(device), num_train_timesteps=config.num_timesteps)


def testbed_timesteps(num_timesteps: int, steps: int) -> list[int]:
    """The testbed's "uniform" skip: range(0, T, T // steps), ascending. When steps does not divide T this
    has more than `steps` entries (T = 1000, steps = 3: 0, 333, 666, 999), as in the testbed."""
    if not 1 <= steps <= num_timesteps:
        raise UserError(f"the testbed's DDIM takes 1 to {num_timesteps} steps, got {steps}")
    return list(range(0, num_timesteps, num_timesteps // steps))


def testbed_ddim(model: TestbedUNet, schedule: Schedule, x_T: torch.Tensor, labels: torch.Tensor,
                 timesteps: list[int], guidance_w: float) -> torch.Tensor:
    """The testbed's deterministic guided DDIM (generalized_steps_conditional at eta = 0): from x_T over
    `timesteps` (ascending, as testbed_timesteps gives them), visited from the last to the first, each step
    `ddim_step` (DDIM eq. 12) to the previous entry, and from the first to x_0 (alpha_bar = 1). x0_hat is
    never clipped and the result is not clamped (the testbed clamps in inverse_data_transform)."""
    x = x_T
    for t, t_prev in zip(reversed(timesteps), reversed([-1, *timesteps[:-1]])):
        t_batch = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        eps = guided_eps(model, x, t_batch, labels, model.null_class, guidance_w)
        x = ddim_step(schedule, eps, t, t_prev, x, eta=0.0, noise=None, clip_x0=False)
    return x


def read_testbed_config(folder: Path) -> TestbedConfig:
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise UserError(f"{path} does not exist; give the testbed's run folder (its --ckpt_folder, holding "
                        f"{CONFIG_FILE} and {CKPT_FILE}), with the training config saved there as {CONFIG_FILE}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise UserError(f"{path} is not valid yaml ({str(e).splitlines()[0]}); fix or re-save it") from e
    if not isinstance(raw, dict):
        raise UserError(f"{path} holds no data / model / diffusion sections; give the testbed's config")
    return TestbedConfig.from_dict(raw)


def read_testbed_states(path: Path) -> list:
    """ckpts/ckpt.pth: the testbed's positional list [weights, optimizer, (epoch,) step, (EMA shadow)], read
    with weights_only=True (never plain unpickling)."""
    if not path.is_file():
        raise UserError(f"{path} does not exist; give the testbed's run folder, with its checkpoint at {CKPT_FILE}")
    try:
        states = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as e:
        raise UserError(f"{path} cannot be read as a weights-only checkpoint ({str(e).splitlines()[0][:120]}); "
                        "re-save it from the testbed with torch.save(states, ...)") from e
    if not isinstance(states, (list, tuple)) or not states or not _is_weights(states[0]):
        raise UserError(f"{path} is not in the testbed's layout (a list whose first entry is the model's "
                        "state_dict); save it as the testbed does")
    return list(states)


def holds_shadow(states: list) -> bool:
    """Whether the checkpoint's list ends with an EMA shadow beside the weights states[0]."""
    return len(states) >= 2 and _is_weights(states[-1])


def _is_weights(entry) -> bool:
    return isinstance(entry, dict) and bool(entry) and all(isinstance(v, torch.Tensor) for v in entry.values())


def _unwrap(weights: dict) -> dict:
    """Drop nn.DataParallel's "module." prefix (the testbed trains and saves the wrapped model)."""
    if all(k.startswith(DATA_PARALLEL_PREFIX) for k in weights):
        return {k[len(DATA_PARALLEL_PREFIX):]: v for k, v in weights.items()}
    return dict(weights)


def testbed_weights(states: list, ema: bool, parameter_names: set[str]) -> dict[str, torch.Tensor]:
    """The weights the testbed samples with: states[0], its parameters replaced by the EMA shadow states[-1]
    when model.ema is true (EMAHelper.ema_copy: load states[0], then copy shadow[name] into every parameter;
    the shadow is keyed by parameter name without DataParallel's prefix and holds no buffers)."""
    weights = _unwrap(states[0])
    if not ema:
        return weights
    if not holds_shadow(states):
        raise UserError(f"config.yml says model.ema: true but {CKPT_FILE} holds no EMA shadow (its last entry is "
                        f"a {type(states[-1]).__name__}); set model.ema: false to load the raw weights states[0]")
    shadow = _unwrap(states[-1])
    if set(shadow) != parameter_names:
        odd = sorted(parameter_names ^ set(shadow))
        raise UserError(f"the EMA shadow in {CKPT_FILE} does not match the model of config.yml ({len(odd)} names "
                        f"differ, e.g. {odd[0]}); give the config.yml it was trained with")
    return {**weights, **shadow}


def swapped_weights(folder: str | Path) -> dict[str, torch.Tensor]:
    """The parameters of the entry the testbed does not sample with: the raw weights states[0] when model.ema is
    true, the EMA shadow when it is false (the ema_swap deployment transform: a user may deploy either).
    Keyed by parameter name, as the shadow is (it holds every parameter and no buffers)."""
    folder = Path(folder).expanduser()
    config = read_testbed_config(folder)
    states = read_testbed_states(folder / CKPT_FILE)
    if not holds_shadow(states):
        raise UserError(f"{folder / CKPT_FILE} holds no EMA shadow beside its weights, so there is no other set of "
                        "weights to deploy; drop ema_swap from attack.transforms")
    shadow = _unwrap(states[-1])
    other = _unwrap(states[0]) if config.ema else shadow
    missing = sorted(set(shadow) - set(other))
    if missing:
        raise UserError(f"{folder / CKPT_FILE}: the EMA shadow names {missing[0]}, which its weights states[0] lack; "
                        "give the checkpoint as the testbed saved it")
    return {n: other[n] for n in shadow}


def _check_weights(model: nn.Module, weights: dict[str, torch.Tensor], path: Path) -> None:
    want = model.state_dict()
    missing, extra = sorted(set(want) - set(weights)), sorted(set(weights) - set(want))
    wrong = [k for k in want if k in weights and weights[k].shape != want[k].shape]
    if missing or extra or wrong:
        what = (f"{wrong[0]} is {tuple(weights[wrong[0]].shape)} in the checkpoint but {tuple(want[wrong[0]].shape)} "
                f"from {CONFIG_FILE}" if wrong else f"{len(missing)} missing, {len(extra)} unexpected tensors, "
                f"e.g. {(missing or extra)[0]}")
        raise UserError(f"{path} does not match the model of {CONFIG_FILE} ({what}); give the {CONFIG_FILE} "
                        "it was trained with")


def load_testbed(folder: str | Path, device: str | torch.device = "cpu") -> tuple[TestbedUNet, TestbedConfig]:
    """A testbed run folder (config.yml + ckpts/ckpt.pth) -> (model in eval mode on `device`, its config).

    The weights are those the testbed samples with (`testbed_weights`): the EMA shadow when model.ema is true,
    else states[0]. Names and shapes are checked before loading, then loaded with strict=True."""
    folder = Path(folder).expanduser()
    config = read_testbed_config(folder)
    states = read_testbed_states(folder / CKPT_FILE)
    model = TestbedUNet(config)
    weights = testbed_weights(states, config.ema, {n for n, _ in model.named_parameters()})
    _check_weights(model, weights, folder / CKPT_FILE)
    model.load_state_dict(weights, strict=True)
    model.testbed_folder = folder  # where the other entry lives (the ema_swap deployment transform reads it)
    return model.to(resolve_device(device) if isinstance(device, str) else device).eval(), config
