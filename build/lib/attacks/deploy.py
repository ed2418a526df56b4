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

Budgets beyond 0 relearn the transformed model (attacks/relearn.py, on k attacker images): transform, then
relearn. EMA vs raw weights is not a transform here: this toolkit's checkpoints hold the EMA weights only.

    python -m attacks.deploy unlearned=safemax
    python -m attacks.deploy unlearned=safemax attack.transforms=[int8] attack.budgets=[0,300]
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from omegaconf import DictConfig
from torch import nn

from attacks.common import AttackState, Plan, Traits, check_k
from attacks.relearn import relearn
from unlearn.errors import UserError
from unlearn.pipeline import Context

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


TRANSFORMS: dict[str, Callable[[nn.Module, float, torch.Generator], None]] = {
    "none": lambda model, std, gen: None,
    "fp16": lambda model, std, gen: round_weights(model, torch.float16),
    "bf16": lambda model, std, gen: round_weights(model, torch.bfloat16),
    "int8": lambda model, std, gen: quantize_int8(model),
    "noise": lambda model, std, gen: add_weight_noise(model, std, gen),
}


def deploy(model, images: torch.Tensor, generator: torch.Generator, *, transform: str, noise_std: float,
           forget_class: int, schedule, budgets: list[int], lr: float, batch_size: int) -> Iterator[AttackState]:
    """Transform the weights in place; yield the transformed model at budget 0 and, for budgets > 0, its state
    after relearning on `images` (label forget_class)."""
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
    budgets = [int(b) for b in a.budgets]
    pool = ctx.ds.attacker_pool(ctx.forget_class)
    k = check_k(a.k, pool, ctx.forget_class)
    relearning = {"k": k, "lr": float(a.lr), "batch_size": int(a.batch_size)} if budgets != [0] else {}

    def states(transform: str):
        def run(model, gen):
            images = pool[torch.randperm(len(pool), generator=gen)[:k]]
            return deploy(model, images, gen, transform=transform, noise_std=float(a.noise_std),
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
