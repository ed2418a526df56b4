"""Deployment transforms: the model a user deploys is rarely the one that was unlearned. Zero-budget attacks.

Threat model (issue 15, item 4; quantization recovers forgotten content in LLMs, Zhang et al. ICLR'25): the
released weights are cast or quantized for deployment, or perturbed; does c_f come back? Each transform is
applied to the weights in place (the network then runs in fp32 as every other point: this measures what the
stored weights lose, not the arithmetic of a low-precision kernel), then the model is scored:

    none    the weights as released (the control: budget 0 is the unattacked model)
    fp16    every weight rounded to float16 (round-to-nearest-even; overflow becomes inf and is refused)
    bf16    every weight rounded to bfloat16
    int8    conv and linear weights quantized per output channel, symmetric round-to-nearest, scale = max|w| / 127
            (biases, norms and the class-embedding table stay in fp32, as int8 deployments keep them)
    noise   Gaussian noise on every weight tensor, std = attack.noise_std x that tensor's own std
    ema_swap  the other set of weights in the checkpoint: the raw weights where the model samples with its EMA
            shadow, the shadow where it samples with the raw ones. Only a testbed checkpoint holds both (this
            toolkit saves the EMA weights alone, so ema_swap on one of its checkpoints is refused before running)

Budgets beyond 0 relearn the transformed model (attacks/relearn.py, on k attacker images): transform, then
relearn.

    python -m attacks.deploy unlearned=safemax
    python -m attacks.deploy unlearned=safemax attack.transforms=[int8] attack.budgets=[0,300]
    python -m attacks.deploy unlearned=salun unlearned.checkpoint=<testbed folder> attack.transforms=[none,ema_swap]
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn

from attacks.common import AttackState, Plan, Traits, check_k
from attacks.relearn import relearn
from unlearn.checkpoints import checkpoint_kind
from unlearn.errors import UserError
from unlearn.pipeline import Context
from unlearn.testbed import CKPT_FILE, swapped_weights

# budget 0 is the released model only for the identity transform
TRAITS = Traits(untouched_at_zero=lambda params: params.get("transform") == "none")


@torch.no_grad()
def round_weights(model: nn.Module, dtype: torch.dtype) -> None:
    for p in model.parameters():
        p.copy_(p.to(dtype).to(p.dtype))


@torch.no_grad()
def quantize_int8(model: nn.Module) -> None:
    """Per-output-channel symmetric int8 (levels -127..127) of every conv and linear weight, dequantized."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            w = m.weight
            scale = w.abs().amax(dim=tuple(range(1, w.dim())), keepdim=True) / 127
            q = torch.where(scale > 0, (w / scale.clamp(min=torch.finfo(w.dtype).tiny)).round().clamp(-127, 127), 0)
            w.copy_(q * scale)


@torch.no_grad()
def add_weight_noise(model: nn.Module, std: float, generator: torch.Generator) -> None:
    for p in model.parameters():
        if p.numel() > 1:
            p.add_(torch.randn(p.shape, generator=generator).to(p.device) * (std * p.std()))


@torch.no_grad()
def swap_ema(model: nn.Module, others: dict[Path, dict[str, torch.Tensor]] | None = None) -> None:
    """Replace the parameters by the checkpoint's other entry (unlearn.testbed.swapped_weights), taken from
    `others` (keyed by resolved run folder, read once by check_ema_swap) or else read from the folder now."""
    module = getattr(model, "_orig_mod", model)  # a compiled model shares its parameters with the plain one
    folder = getattr(module, "testbed_folder", None)
    if folder is None:
        raise UserError("ema_swap needs a checkpoint holding both EMA and raw weights (a testbed run folder); "
                        "this model holds one set: drop ema_swap from attack.transforms")
    folder = Path(folder).resolve()
    weights = others[folder] if others and folder in others else swapped_weights(folder)
    params = dict(module.named_parameters())
    if set(weights) != set(params):
        raise UserError(f"{folder / CKPT_FILE}: its other entry does not name the model's parameters; give the "
                        "config.yml it was trained with")
    for name, w in weights.items():
        params[name].copy_(w)


TRANSFORMS: dict[str, Callable[[nn.Module, float, torch.Generator], None]] = {
    "none": lambda model, std, gen: None,
    "fp16": lambda model, std, gen: round_weights(model, torch.float16),
    "bf16": lambda model, std, gen: round_weights(model, torch.bfloat16),
    "int8": lambda model, std, gen: quantize_int8(model),
    "noise": lambda model, std, gen: add_weight_noise(model, std, gen),
    "ema_swap": lambda model, std, gen: swap_ema(model),
}


def check_ema_swap(cfg: DictConfig, ctx: Context) -> dict[Path, dict[str, torch.Tensor]]:
    """ema_swap is refused, before anything runs, unless every model the job scores (Context.roles) is a testbed
    checkpoint that holds both sets of weights (the toolkit's own checkpoints, and the models it builds, hold the
    EMA ones only). Returns each one's other weights, read here once, keyed by resolved run folder."""
    others = {}
    for role in ctx.roles(cfg.get("references") or []):
        folder = ctx.checkpoints.get(role)
        if folder is None or checkpoint_kind(folder) != "testbed":
            raise UserError(f"attack.transforms has ema_swap, but the {role} model is a toolkit checkpoint, which "
                            "holds the EMA weights only; drop ema_swap, or attack testbed run folders holding both "
                            f"({role}.checkpoint=<folder>)")
        try:
            others[Path(folder).resolve()] = swapped_weights(folder)
        except UserError as e:
            raise UserError(f"attack.transforms has ema_swap, but the {role} model cannot take it: {e}") from None
    return others


def deploy(model, images: torch.Tensor, generator: torch.Generator, *, transform: str, noise_std: float,
           forget_class: int, schedule, budgets: list[int], lr: float, batch_size: int,
           others: dict[Path, dict[str, torch.Tensor]] | None = None) -> Iterator[AttackState]:
    """Transform the weights in place; yield the transformed model at budget 0 and, for budgets > 0, its state
    after relearning on `images` (label forget_class). `others`: ema_swap's weights, read once (check_ema_swap)."""
    if transform == "ema_swap":
        swap_ema(model, others)
    else:
        TRANSFORMS[transform](model, noise_std, generator)
    if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        raise UserError(f"the {transform} transform made the weights non-finite (a weight beyond the format's range); "
                        f"drop {transform} from attack.transforms for this model")
    if budgets == [0]:
        yield AttackState(model.eval(), 0, 0, 0, 0.0, 0.0)
        return
    yield from relearn(model, images, forget_class=forget_class, schedule=schedule, budgets=budgets, lr=lr,
                       batch_size=batch_size, generator=generator)


def plans(cfg: DictConfig, ctx: Context) -> list[Plan]:
    """One plan per transform; its recorded settings are the transform's own (noise_std only for noise)."""
    a = cfg.attack
    others = check_ema_swap(cfg, ctx) if "ema_swap" in a.transforms else {}
    budgets = [int(b) for b in a.budgets]
    pool = ctx.ds.attacker_pool(ctx.forget_class)
    k = check_k(a.k, pool, ctx.forget_class)
    relearning = {"k": k, "lr": float(a.lr), "batch_size": int(a.batch_size)} if budgets != [0] else {}

    def states(transform: str):
        def run(model, gen):
            images = pool[torch.randperm(len(pool), generator=gen)[:k]]
            return deploy(model, images, gen, transform=transform, noise_std=float(a.noise_std), others=others,
                          forget_class=ctx.forget_class, schedule=ctx.schedule, budgets=budgets, lr=float(a.lr),
                          batch_size=int(a.batch_size))
        return run

    def setting(t: str) -> str:
        return (f"noise std={float(a.noise_std):g}" if t == "noise" else t) + (f" k={k}" if relearning else "")

    def params(t: str) -> dict:
        noise = {"noise_std": float(a.noise_std)} if t == "noise" else {}
        return {"name": "deploy", "transform": t, **noise, **relearning, "budgets": budgets}

    return [Plan(setting(t), states(t), params=params(t)) for t in a.transforms]


if __name__ == "__main__":
    from evaluation.entry import main

    main("deploy")
