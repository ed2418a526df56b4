"""Relearning attack: full-weight fine-tuning on k real images of the forgotten class.

Threat model (../shared/spec/attacks.md, id `relearn`): the attacker holds k real images of c_f from the
attacker pool (disjoint from the held-out images used in evaluation) and the weights; it runs Adam on
the plain eps-loss with label c_f. Budget = optimizer steps (x batch = sample-gradients).
Anchors: Hu et al. ICLR'25 (LLMs); Deeb & Roger 2024 (88% of pre-unlearning accuracy recovered).

    python -m attacks.relearn unlearned=safemax            # the main job
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import hydra
import torch
from omegaconf import DictConfig
from tqdm.auto import tqdm

from attacks.common import AttackState
from unlearn.diffusion import Schedule, eps_loss
from unlearn.methods_common import batch_of
from unlearn.errors import UserError
from unlearn.model import Timer
from unlearn.pipeline import Context


def relearn(model, images: torch.Tensor, *, forget_class: int, schedule: Schedule, budgets: list[int],
            lr: float = 1e-4, batch_size: int = 10, generator: torch.Generator | None = None) -> Iterator[AttackState]:
    """Fine-tune `model` in place on `images` (label forget_class); yield a state at each budget."""
    device = next(model.parameters()).device
    images = images.to(device)
    labels = torch.full((batch_size,), forget_class, device=device, dtype=torch.long)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    timer = Timer(device)
    done = 0
    bar = tqdm(total=budgets[-1], desc="relearn", disable=None, leave=False)
    for budget in budgets:
        model.train()
        with timer:
            while done < budget:
                loss = eps_loss(model, schedule, batch_of(images, batch_size, generator), labels, generator)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                done += 1
                bar.update()
        model.eval()
        yield AttackState(model, done, done * batch_size, done * batch_size, timer.wall_s, timer.device_s)
    bar.close()


def run(cfg: DictConfig) -> list[dict]:
    """The job: relearn on the unlearned model and on each reference; score every point; records."""
    from evaluation.harness import run_attack  # the harness holds the judge; this module never imports it

    a = cfg.attack
    ctx = Context.from_cfg(cfg)
    k, pool = int(a.k), ctx.ds.attacker_pool(ctx.forget_class)
    if not 1 <= k <= len(pool):
        raise UserError(f"attack.k={k} but the attacker pool of class {ctx.forget_class} holds "
                        f"{len(pool)} images; use 1 <= attack.k <= {len(pool)}")
    if int(a.batch_size) < 1 or float(a.lr) <= 0:
        raise UserError(f"attack.batch_size and attack.lr must be positive, got {a.batch_size}, {a.lr}")

    def attack(model, ctx, gen):
        images = pool[torch.randperm(len(pool), generator=gen)[:k]]
        return relearn(model, images, forget_class=ctx.forget_class, schedule=ctx.schedule,
                       budgets=list(a.budgets), lr=float(a.lr), batch_size=int(a.batch_size), generator=gen)

    return run_attack(cfg, attack, ctx)


@hydra.main(version_base="1.3", config_path=str(Path(__file__).resolve().parent.parent / "configs"),
            config_name="relearn")
def main(cfg: DictConfig) -> None:
    from unlearn.errors import exit_on_user_error

    exit_on_user_error(run)(cfg)


if __name__ == "__main__":
    main()
