"""Relearning attack: fine-tuning on k real images of the forgotten class, full-weight or LoRA.

Threat model (../shared/spec/attacks.md, ids `relearn` and `relearn-lora`): the attacker holds k real
images of c_f from the attacker pool (disjoint from the held-out images used in evaluation) and the
weights; it runs Adam on the plain eps-loss with label c_f. Budget = optimizer steps (x batch =
sample-gradients). With attack.lora_rank = r > 0 only rank-r adapters are trained (attacks/lora.py); with
attack.part only a part of the weights: `embedding` (the class-embedding table: only row c_f gets a gradient) or
`last_up` (the last up-block, the one nearest the output).
Anchors: Hu et al. ICLR'25 (LLMs); Deeb & Roger 2024 (88% of pre-unlearning accuracy recovered);
MemoRa 2025 and Erased-or-Dormant 2025 for the low-rank variant.

    python -m attacks.relearn unlearned=safemax                      # the main job
    python -m attacks.relearn unlearned=safemax attack=relearn_lora  # rank 4 adapters
    python -m attacks.relearn unlearned=safemax attack.part=embedding attack.lr=1e-2
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from omegaconf import DictConfig, OmegaConf

from attacks.common import AttackState, Plan, check_k, optimize
from attacks.lora import add_lora
from unlearn.checkpoints import class_table_name, last_up_block
from unlearn.diffusion import Schedule, eps_loss
from unlearn.errors import UserError
from unlearn.methods_common import batch_of
from unlearn.pipeline import Context

PARTS = ("all", "embedding", "last_up")


def part_parameters(model, part: str) -> list[torch.nn.Parameter]:
    """The weights an attacker of `part` trains (the rest stay bit-identical)."""
    if part == "embedding":
        return list(getattr(model, class_table_name(model)).parameters())
    if part == "last_up":
        return list(last_up_block(model).parameters())
    return list(model.parameters())


def relearn(model, images: torch.Tensor, *, forget_class: int, schedule: Schedule, budgets: list[int],
            lr: float = 1e-4, batch_size: int = 10, lora_rank: int = 0, part: str = "all",
            generator: torch.Generator | None = None) -> Iterator[AttackState]:
    """Fine-tune `model` (the weights of `part`, or LoRA adapters) in place on `images` (label forget_class);
    yield a state at each budget."""
    device = next(model.parameters()).device
    images = images.to(device)
    labels = torch.full((batch_size,), forget_class, device=device, dtype=torch.long)
    if part != "all":
        model.requires_grad_(False)
    params = add_lora(model, lora_rank, generator=generator) if lora_rank else part_parameters(model, part)
    for p in params:
        p.requires_grad_(True)
    return optimize(model, params,
                    lambda: eps_loss(model, schedule, batch_of(images, batch_size, generator), labels, generator),
                    budgets, lr=lr, batch_size=batch_size, nfe_per_step=batch_size,
                    desc=f"relearn{' lora' if lora_rank else '' if part == 'all' else ' ' + part}")


def setting(a: DictConfig) -> str:
    part = a.get("part", "all")
    return (f"lora r={int(a.lora_rank)}" if int(a.lora_rank) else "full" if part == "all" else part) + f" k={int(a.k)}"


def plans(cfg: DictConfig, ctx: Context) -> list[Plan]:
    """The attack's checks across settings; one plan: relearn on k images drawn from the attacker pool."""
    a = cfg.attack
    pool = ctx.ds.attacker_pool(ctx.forget_class)
    k = check_k(a.k, pool, ctx.forget_class)
    if int(a.lora_rank) and a.part != "all":
        raise UserError(f"attack.lora_rank={int(a.lora_rank)} with attack.part={a.part}: LoRA adapts every layer; "
                        "set attack.part=all or attack.lora_rank=0")

    def states(model, gen):
        images = pool[torch.randperm(len(pool), generator=gen)[:k]]
        return relearn(model, images, forget_class=ctx.forget_class, schedule=ctx.schedule,
                       budgets=list(a.budgets), lr=float(a.lr), batch_size=int(a.batch_size),
                       lora_rank=int(a.lora_rank), part=a.part, generator=gen)

    params = OmegaConf.to_container(a, resolve=True)
    if params.get("part") == "all":  # the default: left out, so points recorded before attack.part keep their keys
        del params["part"]
    return [Plan(setting(a), states, params=params)]


if __name__ == "__main__":
    from evaluation.entry import main

    main("relearn")
