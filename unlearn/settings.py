"""Every setting a command reads, checked once at start-up, before anything is built, trained or recorded.

`SETTINGS` maps each config key to its rule: the type, finiteness, the range or the choices. Every Hydra entry
point runs `problems(cfg)` first (through `unlearn.errors.exit_on_user_error`), and refuses the first problem
with one line naming the key, the value given and what is valid, e.g.

    error: eval.n=nan: not an integer; use an integer in [1, 1000000]

Rules are about one value; checks that need two values or the data (a budget list strictly increasing is one
value; `attack.k` against the attacker pool, `secmi_k <= secmi_t`, a class in range for the dataset) stay with
the code that reads them. A key no rule names is refused too (a typo added with `+`), except method
hyperparameters, which `unlearn.pipeline.check_method_args` names against the method's signature.
tests/test_settings.py composes every entry config and checks that every key has a rule.

Bounds: every number in this toolkit is >= 0, and every count has an upper bound, so no value runs for days or
allocates without end by mistake. Edit the bound here if a real run needs more.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from omegaconf import DictConfig, ListConfig, OmegaConf

BIG = 10**6          # counts: samples, images, batch sizes
LONG = 10**7         # optimizer steps
SEED_MAX = 2**32 - 1  # numpy's seed range


@dataclass(frozen=True)
class Num:
    """A number in [lo, hi] (open ends with lo_open / hi_open); integer=True: an int (not 3.0, not a bool)."""
    lo: float = 0
    hi: float = BIG
    integer: bool = False
    lo_open: bool = False
    hi_open: bool = False
    null: bool = False

    def problem(self, v) -> str | None:
        if v is None:
            return None if self.null else "must be given"
        if isinstance(v, bool) or not isinstance(v, int | float):
            return "not a number" if not self.integer else "not an integer"
        if self.integer and not isinstance(v, int):
            return "not an integer"
        if not math.isfinite(v):
            return "not finite"
        low = v <= self.lo if self.lo_open else v < self.lo
        high = v >= self.hi if self.hi_open else v > self.hi
        return "out of range" if low or high else None

    def describe(self) -> str:
        what, fmt = ("an integer", "d") if self.integer else ("a finite number", "g")
        lo = ("(" if self.lo_open else "[") + format(self.lo, fmt)
        hi = format(self.hi, fmt) + (")" if self.hi_open else "]")
        return f"{'null or ' if self.null else ''}{what} in {lo}, {hi}"


@dataclass(frozen=True)
class Bool:
    def problem(self, v) -> str | None:
        return None if isinstance(v, bool) else "not true or false"

    def describe(self) -> str:
        return "true or false"


@dataclass(frozen=True)
class Choice:
    choices: tuple
    null: bool = False

    def problem(self, v) -> str | None:
        return None if v in self.choices or (self.null and v is None) else "not a valid choice"

    def describe(self) -> str:
        return f"{'null or ' if self.null else ''}one of {', '.join(map(str, self.choices))}"


@dataclass(frozen=True)
class Text:
    """A non-empty string (a path, a name); pattern: it must match."""
    null: bool = False
    pattern: str = r".+"
    example: str = "a non-empty text"

    def problem(self, v) -> str | None:
        if v is None:
            return None if self.null else "must be given"
        if not isinstance(v, str) or not re.fullmatch(self.pattern, v):
            return "not valid"
        return None

    def describe(self) -> str:
        return f"{'null or ' if self.null else ''}{self.example}"


@dataclass(frozen=True)
class Items:
    """A non-empty list whose every element follows `each`; increasing=True: strictly increasing."""
    each: Num | Choice
    increasing: bool = False
    max_len: int = 1000
    min_len: int = 1

    def problem(self, v) -> str | None:
        if not isinstance(v, list | tuple):
            return "not a list"
        if not self.min_len <= len(v) <= self.max_len:
            return "empty" if not v else "too long"
        for x in v:
            if (p := self.each.problem(x)) is not None:
                return f"element {x!r} {p}"
        if self.increasing and any(b <= a for a, b in zip(v, v[1:], strict=False)):
            return "not strictly increasing"
        return None

    def describe(self) -> str:
        size = "a non-empty" if self.min_len else "a"
        return f"{size}{' strictly increasing' if self.increasing else ''} list, each {self.each.describe()}"


@dataclass(frozen=True)
class Overrides:
    """A mapping of names (letters, digits, _ . -) to non-empty lists of command-line overrides `key=value`."""

    def problem(self, v) -> str | None:
        if not isinstance(v, dict) or not v:
            return "not a non-empty mapping"
        for name, ov in v.items():
            if not re.fullmatch(NAME_PATTERN, str(name)):
                return f"name {name!r} not valid"
            if not isinstance(ov, list | tuple) or not ov or not all(isinstance(o, str) and "=" in o for o in ov):
                return f"entry {name!r} is not a non-empty list of key=value overrides"
        return None

    def describe(self) -> str:
        return "a mapping of names to lists of overrides, e.g. {relearn_k10: [attack=relearn, attack.k=10]}"


NAME_PATTERN = r"(?!.*\.\.)[\w.-]+"


def count(lo: int = 1, hi: int = BIG, null: bool = False) -> Num:
    return Num(lo, hi, integer=True, null=null)


def prob(hi_open: bool = True) -> Num:
    """A probability / share in [0, 1) (or [0, 1])."""
    return Num(0, 1, hi_open=hi_open)


RATE = Num(0, 1e6, lo_open=True)        # a learning rate (1e6: a run that diverges on purpose)
WEIGHT = Num(0, 1e6)                     # a loss weight or guidance weight
SEED = count(0, SEED_MAX)
STEPS = count(0, LONG)
T_STEP = count(0, 999)                  # a diffusion timestep
NAME = Text(pattern=NAME_PATTERN, example="a name of letters, digits, _ . - (it names folders)")
BLOCKS_DOWN = Choice(("DownBlock2D", "AttnDownBlock2D"))
BLOCKS_UP = Choice(("UpBlock2D", "AttnUpBlock2D"))

SETTINGS: dict[str, object] = {
    # base.yaml
    "seed": SEED, "pretrain_seed": SEED,
    "device": Text(pattern=r"auto|cpu|cuda(:\d+)?", example="auto, cpu, cuda or cuda:N"),
    "threads": count(1, 1024, null=True),
    "overwrite": Bool(), "exclude_forget": Bool(),
    "fast.bf16": Bool(), "fast.tf32": Bool(), "fast.channels_last": Bool(), "fast.compile": Bool(), "fast.cpu": Bool(),
    "paths.artifacts": Text(example="a folder path"), "paths.results": Text(example="a folder path"),
    "study": Text(null=True, pattern=NAME.pattern, example=NAME.example),
    "adversary": Text(null=True, pattern=NAME.pattern, example=NAME.example),
    "references": Items(Choice(("original", "oracle")), min_len=0),
    # data
    "data.name": Choice(("digits", "mnist", "cifar10")),
    "data.root": Text(null=True, example="a folder path"),
    "data.test_fraction": Num(0, 1, lo_open=True, hi_open=True),
    "data.split_seed": SEED, "data.max_images": count(1, null=True),
    "data.forget_class": count(0, 1000), "data.guidance_w": WEIGHT,
    # model, judge, sampler
    "model.name": NAME, "model.arch.block_out_channels": Items(count(1, 4096), max_len=8),
    "model.arch.down_block_types": Items(BLOCKS_DOWN, max_len=8),
    "model.arch.up_block_types": Items(BLOCKS_UP, max_len=8),
    "model.arch.layers_per_block": count(1, 16), "model.arch.norm_num_groups": count(1, 4096),
    "model.arch.add_attention": Bool(),
    "model.train.steps": count(1, LONG), "model.train.batch_size": count(), "model.train.lr": RATE,
    "model.train.warmup_steps": STEPS, "model.train.ema_decay": prob(), "model.train.label_dropout": prob(),
    "model.train.grad_clip": Num(0, 1e6, lo_open=True),
    "judge.name": NAME, "judge.recipe.width": count(1, 4096), "judge.recipe.feature_dim": count(1, 4096),
    "judge.recipe.epochs": count(1, 10**4), "judge.recipe.batch_size": count(), "judge.recipe.lr": RATE,
    "judge.recipe.shift": count(0, 16), "judge.recipe.off_data_fraction": Num(0, 10),
    "sampler.name": NAME,
    "sampler.steps": count(1, 1000), "sampler.eta": Num(0, 10), "sampler.clip": Bool(),
    "sampler.variance": Choice(("ddim", "beta")), "sampler.guidance_w": WEIGHT, "sampler.batch_size": count(),
    # evaluation
    "eval.n": count(), "eval.n_retained_per_class": count(0), "eval.n_per_class": count(),
    "eval.grid_per_class": count(1, 100), "eval.inception_weights": Text(null=True, example="a file path"),
    "eval.attacker_eta": Num(0, 10, null=True),
    # unlearned model: unlearned.args.* are the methods' hyperparameters (unknown ones: check_method_args)
    "unlearned.name": NAME, "unlearned.checkpoint": Text(null=True, example="a folder path"),
    # the user's own references (unlearn.checkpoints); null: built from data
    "original.checkpoint": Text(null=True, example="a folder path"),
    "oracle.checkpoint": Text(null=True, example="a folder path"),
    "unlearned.args.steps": count(1, LONG), "unlearned.args.batch_size": count(),
    "unlearned.args.retain_batch_size": count(), "unlearned.args.lr": RATE,
    "unlearned.args.grad_clip": Num(0, 1e6, lo_open=True),
    "unlearned.args.lam": WEIGHT, "unlearned.args.beta": WEIGHT, "unlearned.args.alpha": WEIGHT,
    "unlearned.args.gamma": WEIGHT, "unlearned.args.zero_target": Bool(),
    "unlearned.args.mask_density": Num(0, 1, lo_open=True, null=True),
    "unlearned.args.anchor": Choice(("next", "random")), "unlearned.args.target": Choice(("current", "frozen")),
    "unlearned.args.retain_pixels": Choice(("sum", "mean")),
    "unlearned.args.retain_label_dropout": prob(), "unlearned.args.forget_label_dropout": prob(),
    "unlearned.args.mask_guidance_w": WEIGHT, "unlearned.args.replay_guidance_w": WEIGHT,
    "unlearned.args.n_replay": count(), "unlearned.args.n_fisher": count(),
    "unlearned.args.sample_steps": count(1, 1000),
    "unlearned.args.fisher_label_dropout": prob(), "unlearned.args.fisher_input_01": Bool(),
    "unlearned.args.ema_decay": Num(0, 1, hi_open=True, null=True),
    # attacks (configs/attack/): one rule per key, shared by the attacks that read it
    "attack.name": NAME, "attack.budgets": Items(STEPS, increasing=True),
    "attack.k": count(), "attack.lr": RATE, "attack.batch_size": count(), "attack.lora_rank": count(0, 4096),
    "attack.part": Choice(("all", "embedding", "last_up")),
    "attack.data": Choice(("retain", "neighbour", "own", "foreign")),
    "attack.foreign_root": Text(null=True, example="a folder path, or digits"), "attack.n_own": count(1, 10**5),
    "attack.label_dropout": prob(), "attack.mode": Choice(("data", "datafree")),
    "attack.init": Choice(("forgotten", "null_row", "mean")), "attack.sample_steps": count(1, 1000),
    "attack.guidance_w": Items(WEIGHT), "attack.eta": Items(Num(0, 10)),
    "attack.t": Items(T_STEP), "attack.draws": count(1, 1000), "attack.pia_t": count(1, 999),
    "attack.secmi_t": count(1, 999), "attack.secmi_k": count(1, 999),
    "attack.shadow_fraction": Num(0, 1, lo_open=True, hi_open=True),
    "attack.fprs": Items(Num(0, 1, lo_open=True, hi_open=True)),
    "attack.strength": Items(Num(0, 1, lo_open=True)), "attack.guide": Choice(("classifier", "teacher")),
    "attack.project": Bool(), "attack.transforms": Items(Choice(("none", "fp16", "bf16", "int8", "noise", "ema_swap"))),
    "attack.noise_std": Num(0, 10),
    # the adversary grid (configs/grid/, python -m evaluation.worst_case)
    "grid.name": NAME, "grid.budgets": Items(STEPS, increasing=True), "grid.eval.n": count(),
    "grid.eval.n_retained_per_class": count(0), "grid.eval.attacker_eta": Num(0, 10, null=True),
    "grid.references": Items(Choice(("original", "oracle")), min_len=0), "grid.ceiling": NAME,
    "grid.controls": Items(NAME, min_len=0),
    "grid.adversaries": Overrides(),
    "grid.validation.forget_class": count(0, 1000), "grid.validation.seed": SEED,
    "grid.validation.adversaries": Items(NAME, min_len=0), "grid.validation.samplers": Items(NAME, min_len=0),
}


def _leaves(node, prefix: str = ""):
    """(key, value) of every setting: a leaf, or a dict / list given where a rule expects one value."""
    if isinstance(node, dict) and prefix[:-1] not in SETTINGS:
        for k, v in node.items():
            yield from _leaves(v, f"{prefix}{k}.")
    else:
        yield prefix[:-1], node


def problems(cfg: DictConfig) -> list[str]:
    """One line per setting of cfg that breaks its rule (or that no rule names), in key order; [] = all valid.
    A mandatory value left unset (`???`) is a problem, except data.root (the dataset's loader names its files)."""
    plain = OmegaConf.to_container(cfg, resolve=False)
    plain.pop("hydra", None)  # Hydra's own settings (and the run folder, which resolves through this check)
    try:
        resolved = OmegaConf.to_container(OmegaConf.create(plain), resolve=True)
    except Exception as e:  # noqa: BLE001 - an interpolation that cannot resolve: name it
        return [f"{type(e).__name__}: {str(e).splitlines()[0]}"]
    out = []
    for key, value in _leaves(resolved):
        if value == "???":
            if key != "data.root":  # data=mnist / cifar10: their loaders name the files they need
                out.append(f"{key} must be given")
            continue
        if key not in SETTINGS:
            if not key.startswith("unlearned.args."):
                out.append(f"{key} is not a setting of this command; remove it (a typo?)")
            continue
        if (line := check(key, value)) is not None:
            out.append(line)
    return out


def check(key: str, value) -> str | None:
    """The line for `key=value` if it breaks the key's rule, else None."""
    rule = SETTINGS[key]
    value = list(value) if isinstance(value, ListConfig) else value
    p = rule.problem(value)
    return None if p is None else f"{key}={_show(value)}: {p}; use {rule.describe()}"


def _show(v) -> str:
    return f"{v:g}" if isinstance(v, float) else ("''" if v == "" else repr(v) if isinstance(v, str) else str(v))
