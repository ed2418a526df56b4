"""From a config to models: find or build the base model, the oracle and unlearned models.

`Context` is the only place that reads `cfg`; everything below it takes plain arguments.
"""

from __future__ import annotations

import inspect
import logging
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from unlearn.artifacts import artifact, external_provenance, provenance
from unlearn.checkpoints import check_checkpoint, checkpoint_kind, checkpoint_schedule, load_checkpoint, schedule_name
from unlearn.data import Dataset, check_class, load_dataset
from unlearn.diffusion import Schedule
from unlearn.errors import UserError
from unlearn.fast import Fast
from unlearn.methods import METHODS, REFERENCES, RETRAINED
from unlearn.methods_common import UnlearnData
from unlearn.model import Arch, Timer, resolve_device, save_unet
from unlearn.train import TrainRecipe, train_ddpm

log = logging.getLogger(__name__)


def check_method_args(name: str, args: dict) -> None:
    """Fail at start-up on an unknown method or a misspelled hyperparameter."""
    if name in (*REFERENCES, *RETRAINED):
        if args:
            raise UserError(f"method {name!r} takes no args, got {sorted(args)}")
        return
    if name not in METHODS:
        raise UserError(f"unknown method {name!r}; valid: {', '.join(sorted([*METHODS, *REFERENCES, *RETRAINED]))}")
    params = inspect.signature(METHODS[name]).parameters
    valid = {p for p, v in params.items() if v.kind is inspect.Parameter.KEYWORD_ONLY and p != "generator"}
    unknown = sorted(set(args) - valid)
    if unknown:
        raise UserError(f"method {name!r} has no hyperparameter {', '.join(unknown)}; "
                        f"valid: {', '.join(sorted(valid))}")


def check_finite(model: torch.nn.Module, losses: list, what: str, knob: str) -> None:
    """A diverged run (NaN or inf in the weights or a final loss) stops before anything is saved."""
    bad_loss = any(not math.isfinite(v) for v in losses if v is not None)
    if bad_loss or not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        raise UserError(f"{what} diverged (NaN or inf in the {'loss' if bad_loss else 'weights'}); lower {knob} "
                        "and rerun (nothing was saved)")


def full_args(name: str, args: dict) -> dict:
    """The method's hyperparameters with its defaults filled in: a changed default makes a new artifact."""
    sig = inspect.signature(METHODS[name])
    return {p: args.get(p, v.default) for p, v in sig.parameters.items()
            if v.kind is inspect.Parameter.KEYWORD_ONLY and p != "generator"}


@dataclass
class Context:
    data_spec: dict
    forget_class: int
    arch_name: str
    arch: Arch
    recipe: TrainRecipe
    method_name: str   # unlearned=<name>: the config file's name and the registry key (unlearn/methods.py)
    method_label: str  # what records call the model: the name (+ @<checkpoint key> for a user's checkpoint)
    method_args: dict
    seed: int
    pretrain_seed: int
    device: torch.device
    artifacts_root: Path
    fast: Fast = Fast()             # speed switches (unlearn/fast.py)
    # the user's own models, role -> folder (unlearned.checkpoint, original.checkpoint, oracle.checkpoint):
    # any kind unlearn.checkpoints accepts; a role not given is built from data (see `missing`)
    checkpoints: dict[str, Path] = field(default_factory=dict)
    missing: tuple[str, ...] = ()   # references neither given nor buildable (a testbed checkpoint's): left out

    @classmethod
    def from_cfg(cls, cfg: DictConfig) -> Context:
        d = cfg.data
        method = cfg.unlearned if "unlearned" in cfg else OmegaConf.create({"name": "original", "args": {}})
        args = OmegaConf.to_container(method.args, resolve=True) if "args" in method else {}
        check_method_args(method["name"], args)
        m = cfg.model
        if cfg.get("threads"):
            torch.set_num_threads(int(cfg.threads))
        ckpt = method.get("checkpoint")
        if ckpt and method["name"] in REFERENCES:
            raise UserError(f"unlearned.checkpoint is for an unlearned model, not the reference {method['name']!r}; "
                            f"give your own {method['name']} model as {method['name']}.checkpoint=<folder>, or attack "
                            "your unlearned model with unlearned=<method> unlearned.checkpoint=<folder>")
        given = {"unlearned": ckpt, **{r: (cfg.get(r) or {}).get("checkpoint") for r in REFERENCES}}
        if method["name"] in RETRAINED and any(given.values()):
            raise UserError(f"unlearned={method['name']} retrains the toolkit's oracle from another seed, so it "
                            "takes no checkpoint; drop the *.checkpoint overrides, or attack your own retrained "
                            "model as unlearned=<method> unlearned.checkpoint=<folder>")
        ctx = cls(
            data_spec={"name": d.name, "root": d.get("root"), "test_fraction": d.test_fraction,
                       "split_seed": d.split_seed, "max_images": d.get("max_images")},
            forget_class=int(d.forget_class), arch_name=m.name,
            arch=Arch(**OmegaConf.to_container(m.arch, resolve=True)),
            recipe=TrainRecipe(**OmegaConf.to_container(m.train, resolve=True)),
            method_name=method["name"], method_label=method["name"], method_args=args,
            seed=int(cfg.seed), pretrain_seed=int(cfg.pretrain_seed), device=resolve_device(cfg.device),
            artifacts_root=Path(cfg.paths.artifacts),
            checkpoints={r: check_checkpoint(p, f"{r}.checkpoint") for r, p in given.items() if p},
            fast=Fast.from_cfg(cfg.get("fast")),
        )
        ctx.fast.backend(ctx.device)
        refs = cfg.get("references")
        ctx.missing = ctx._check_roles(None if refs is None else list(refs))
        for folder in ctx.checkpoints.values():  # a bad checkpoint fails now, before anything is built
            ctx.load(folder)
        if "unlearned" in ctx.checkpoints:
            # its own label: records of a user's model never average into the method's own curves
            ctx.method_label = f"{ctx.method_label}@{ctx.provenance(ctx.checkpoints['unlearned'])['key']}"
        return ctx

    def _check_roles(self, references: list[str] | None) -> tuple[str, ...]:
        """The references that cannot be had (returned; said once), after refusing what cannot be compared: the
        toolkit trains UNet2DModels only, so a testbed checkpoint's references are the ones given, and every model
        compared must share one noise schedule."""
        kinds = {r: checkpoint_kind(p) for r, p in self.checkpoints.items()}
        testbed = "testbed" in kinds.values()
        if kinds.get("original") == "testbed" and "unlearned" not in kinds and self.method_name not in REFERENCES:
            raise UserError(f"original.checkpoint is a testbed model, which unlearned={self.method_name} cannot "
                            "unlearn here; give the unlearned model too: unlearned.checkpoint=<folder>")
        said, references = references is not None, references or []
        missing = tuple(r for r in references if testbed and r not in self.checkpoints and r != self.method_name)
        roles = [*references, *([] if self.method_name in REFERENCES else ["unlearned"])]
        built = [r for r in roles if r not in self.checkpoints and r not in missing]
        names = {f"{r}.checkpoint": schedule_name(p) for r, p in self.checkpoints.items()}
        names |= {f"the {r} built here": schedule_name(None) for r in built[:1]}
        (first, name), *rest = names.items() if names else [(None, None)]
        odd = next(((k, v) for k, v in rest if v != name), None)
        if odd:
            raise UserError(f"{odd[0]} has the noise schedule {odd[1]} but {first} has {name}; compare models of "
                            "one schedule")
        if said and self.method_name not in REFERENCES and "oracle" not in set(references) - set(missing):
            why = ("the toolkit does not train a testbed model: give oracle.checkpoint=<folder>" if "oracle" in missing
                   else "add oracle to references")
            log.warning("no oracle (%s): ER is unavailable; RA, NR and the guards are reported%s", why,
                        f"; also left out: {', '.join(r for r in missing if r != 'oracle')}"
                        if set(missing) - {"oracle"} else "")
        return missing

    @property
    def checkpoint(self) -> Path | None:
        """unlearned.checkpoint: the user's unlearned model, attacked instead of building one."""
        return self.checkpoints.get("unlearned")

    @cached_property
    def ds(self) -> Dataset:
        ds = load_dataset(**self.data_spec)
        check_class(ds, self.forget_class)
        return ds

    @cached_property
    def schedule(self) -> Schedule:
        """The schedule every model here is sampled and trained with: a testbed checkpoint's own (its config.yml),
        else the toolkit's (`_check_roles` refused a mix)."""
        testbed = [p for p in self.checkpoints.values() if checkpoint_kind(p) == "testbed"]
        return checkpoint_schedule(testbed[0], self.device) if testbed else Schedule.linear(device=self.device)

    def data_key(self) -> dict:
        """The data part of every artifact key: the split settings and a content hash (not the path)."""
        return {**self.data_spec, "root": None, "fingerprint": self.ds.fingerprint}

    def _ddpm(self, exclude_class: int | None, seed: int | None = None) -> Path:
        seed = self.pretrain_seed if seed is None else seed
        spec = {"data": self.data_key(), "arch": vars(self.arch), "recipe": vars(self.recipe),
                "seed": seed, "exclude_class": exclude_class,
                **self.fast_key(training=True)}

        def build(folder: Path) -> dict:
            model, stats = train_ddpm(self.ds, self.arch, self.recipe, seed, self.device, exclude_class, self.fast)
            check_finite(model, [stats["final_loss"]], "pretraining", "model.train.lr")
            save_unet(model, folder)
            return {"train": stats, "device": str(self.device)}

        return artifact(self.artifacts_root, "oracle" if exclude_class is not None else "base", spec, build)

    def base(self) -> Path:
        """The original model: original.checkpoint if given (methods then unlearn it), else built from data."""
        return self.checkpoints.get("original") or self._ddpm(None)

    def oracle(self) -> Path:
        """The oracle: oracle.checkpoint if given, else retrained here without the forget class."""
        return self.checkpoints.get("oracle") or self._ddpm(self.forget_class)

    def unlearned(self, name: str | None = None, args: dict | None = None) -> Path:
        """The checkpoint of `name` (default: the configured method) for self.forget_class."""
        if "unlearned" in self.checkpoints and name in (None, self.method_name):
            return self.checkpoints["unlearned"]
        name = name or self.method_name
        args = self.method_args if args is None else args
        if name == "original":
            return self.base()
        if name == "oracle":
            return self.oracle()
        if name in RETRAINED:  # the oracle's procedure from another seed (unlearn/methods.py)
            return self._ddpm(self.forget_class, seed=self.pretrain_seed + 1 + self.seed)
        base = self.base()
        # "method": the function's name, so a variant (safemax_forget_only) keys by the function it runs
        spec = {"base": self.provenance(base)["key"], "method": METHODS[name].__name__, "args": full_args(name, args),
                "forget_class": self.forget_class, "seed": self.seed,
                **self.fast_key(training=True)}

        def build(folder: Path) -> dict:
            model = self.load(base, training=True)
            ds, fc, dev = self.ds, self.forget_class, self.device
            data = UnlearnData(forget_x=ds.x_train[ds.y_train == fc].to(dev),
                               retain_x=ds.x_train[ds.y_train != fc].to(dev),
                               retain_y=ds.y_train[ds.y_train != fc].to(dev),
                               forget_class=fc, num_classes=ds.num_classes, schedule=self.schedule)
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            torch.manual_seed(self.seed)
            timer = Timer(dev)
            with timer:
                stats = METHODS[name](model, data, generator=torch.Generator().manual_seed(self.seed), **args)
            check_finite(model, [stats.final_forget_loss, stats.final_retain_loss], f"method {self.method_label}",
                         "unlearned.args.lr")
            save_unet(model, folder)
            peak = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None
            return {"unlearn": {**vars(stats), "wall_s": round(timer.wall_s, 2), "device_s": round(timer.device_s, 2),
                                "peak_mem_gib": peak}, "device": str(dev)}

        return artifact(self.artifacts_root, "unlearned", spec, build)

    def load(self, folder: Path, training: bool = False, fp32: bool = False):
        """A checkpoint folder as a model on this context's device, checked against this data, with the
        fast-path switches applied (fp32=True: none of them, full precision whatever the device)."""
        model = load_checkpoint(folder, self.device, expect=(self.ds.image_shape, self.ds.num_classes))
        if fp32:
            model.autocast_dtype = None
            return model
        return self.fast.model(model, self.device, training)

    def provenance(self, folder: Path) -> dict:
        """What built a model folder. The user's own checkpoints are always keyed by their content (even a copy
        of a cached artifact with a provenance.json): new weights never reuse old records."""
        if Path(folder) in self.checkpoints.values():
            return self._checkpoint_provenance[Path(folder)]
        return provenance(folder)

    @cached_property
    def _checkpoint_provenance(self) -> dict[Path, dict]:
        return {p: external_provenance(p) for p in self.checkpoints.values()}  # hashes the weights: once per run

    def fast_tag(self) -> dict:
        """The fast-path switches that change numbers here ({} on CPU by default)."""
        return self.fast.tag(self.device)

    def fast_key(self, training: bool = False) -> dict:
        """{"fast": tag} to merge into a key, or {} when no switch changes numbers (CPU keys stay as they were)."""
        tag = self.fast.tag(self.device, training)
        return {"fast": tag} if tag else {}

    def roles(self, references) -> list[str]:
        """The roles a job scores: the unlearned model, then the references (those the context cannot have,
        `missing`, left out: it said so once). Attacking a reference itself (unlearned=original / oracle): it is
        run once, under its own role."""
        own = [self.method_name] if self.method_name in REFERENCES else []
        return list(dict.fromkeys([*([] if own else ["unlearned"]),
                                   *(r for r in references if r not in self.missing), *own]))

    def model_folder(self, role: str) -> Path:
        """role: 'unlearned' (the configured method), or a reference: 'original' / 'oracle'."""
        if role in self.missing:
            raise UserError(f"no {role} model: the toolkit does not train a testbed model; give {role}.checkpoint="
                            "<folder>")
        return self.unlearned() if role == "unlearned" else self.unlearned(role, {})
