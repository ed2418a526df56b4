"""Relearning attack: fine-tuning on k real images of the forgotten class, full-weight or LoRA.

Threat model (../shared/spec/attacks.md, ids `relearn` and `relearn-lora`): the attacker holds k real
images of c_f from the attacker pool (disjoint from the held-out images used in evaluation) and the
weights; it runs Adam on the plain eps-loss with label c_f. Budget = optimizer steps (x batch =
sample-gradients). With attack.lora_rank = r > 0 only rank-r adapters are trained (attacks/lora.py).
Anchors: Hu et al. ICLR'25 (LLMs); Deeb & Roger 2024 (88% of pre-unlearning accuracy recovered);
MemoRa 2025 and Erased-or-Dormant 2025 for the low-rank variant.

    python -m attacks.relearn unlearned=safemax                      # the main job
    python -m attacks.relearn unlearned=safemax attack=relearn_lora  # rank 4 adapters
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from omegaconf import DictConfig

from attacks.common import AttackState, Plan, check_k, optimize
from attacks.lora import add_lora
from unlearn.diffusion import Schedule, eps_loss
from unlearn.methods_common import batch_of
from unlearn.pipeline import Context


def relearn(model, images: torch.Tensor, *, forget_class: int, schedule: Schedule, budgets: list[int],
            lr: float = 1e-4, batch_size: int = 10, lora_rank: int = 0,
            generator: torch.Generator | None = None) -> Iterator[AttackState]:
    """Fine-tune `model` in place on `images` (label forget_class); yield a state at each budget."""
    device = next(model.parameters()).device
    images = images.to(device)
    labels = torch.full((batch_size,), forget_class, device=device, dtype=torch.long)
    params = add_lora(model, lora_rank, generator=generator) if lora_rank else list(model.parameters())
    return optimize(model, params,
                    lambda: eps_loss(model, schedule, batch_of(images, batch_size, generator), labels, generator),
                    budgets, lr=lr, batch_size=batch_size, nfe_per_step=batch_size,
                    desc=f"relearn{' lora' if lora_rank else ''}")


def setting(a: DictConfig) -> str:
    return (f"lora r={int(a.lora_rank)}" if int(a.lora_rank) else "full") + f" k={int(a.k)}"


def plans(cfg: DictConfig, ctx: Context) -> list[Plan]:
    """The attack's checks across settings; one plan: relearn on k images drawn from the attacker pool."""
    a = cfg.attack
    pool = ctx.ds.attacker_pool(ctx.forget_class)
    k = check_k(a.k, pool, ctx.forget_class)

    def states(model, gen):
        images = pool[torch.randperm(len(pool), generator=gen)[:k]]
        return relearn(model, images, forget_class=ctx.forget_class, schedule=ctx.schedule,
                       budgets=list(a.budgets), lr=float(a.lr), batch_size=int(a.batch_size),
                       lora_rank=int(a.lora_rank), generator=gen)

    return [Plan(setting(a), states)]


if __name__ == "__main__":
    from evaluation.entry import main

    main("relearn")
