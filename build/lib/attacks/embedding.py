"""Class-embedding inversion: the weights stay frozen; only a free embedding vector for c_f is learned.

Threat model (../shared/spec/attacks.md, id `embedding`; Concept Inversion, Pham et al. ICLR'24, and
UnlearnDiffAtk, ECCV'24, translated to class embeddings): if unlearning only re-routed the forgotten
row of the class-embedding table, a new row can find the knowledge that is still in the network.
The row the sampler reads for label c_f is replaced by a free vector v (`RowOverride`); every UNet
weight, the original table included, is left bit-identical (a test checks it).

    mode=data      Adam on the eps-loss with label c_f on k attacker-pool images (budget = steps)
    mode=datafree  no images: maximise log p(c_f | x) of the *attacker's* classifier (attacks/attacker_clf.py,
                   never the judge) on images sampled through a short differentiable DDIM with v
    init           forgotten (row c_f) | null_row (row K) | mean (mean of the retained classes' rows)

    python -m attacks.embedding unlearned=safemax attack.init=mean
    python -m attacks.embedding unlearned=safemax attack.mode=datafree
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from omegaconf import DictConfig
from torch import nn

from attacks.attacker_clf import get_attacker_clf
from attacks.common import AttackState, Plan, Prior, Traits, check_k, optimize
from unlearn.checkpoints import class_table_name, null_vector
from unlearn.diffusion import Schedule, ddim_loop, eps_loss
from unlearn.methods_common import batch_of
from unlearn.model import null_class
from unlearn.pipeline import Context

# budget 0 is the untouched model only when the free vector starts at the forgotten row itself
TRAITS = Traits(untouched_at_zero=lambda params: params.get("init") == "forgotten")
INITS = ("forgotten", "null_row", "mean")  # "null" would read as YAML null on the command line
MODES = ("data", "datafree")


class RowOverride(nn.Module):
    """An embedding table whose row `row` reads the free vector instead (the table itself is untouched)."""

    def __init__(self, table: nn.Embedding, row: int, init: torch.Tensor):
        super().__init__()
        self.table, self.row = table, row
        self.vector = nn.Parameter(init.detach().clone())

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        e = self.table(labels)
        return torch.where((labels == self.row)[:, None], self.vector.to(e.dtype)[None], e)


def init_vector(model, forget_class: int, init: str) -> torch.Tensor:
    table, num_classes = getattr(model, class_table_name(model)), null_class(model)
    w = table.weight.detach()
    if init == "forgotten":
        return w[forget_class]
    if init == "null_row":
        return null_vector(model)
    return w[[c for c in range(num_classes) if c != forget_class]].mean(0)


def attach(model, forget_class: int, init: str) -> nn.Parameter:
    """Freeze the model and route label forget_class through a free vector; returns that vector."""
    model.requires_grad_(False)
    name = class_table_name(model)
    setattr(model, name, RowOverride(getattr(model, name), forget_class, init_vector(model, forget_class, init)))
    return getattr(model, name).vector


def invert(model, images: torch.Tensor, *, forget_class: int, schedule: Schedule, budgets: list[int],
           init: str = "forgotten", lr: float = 1e-2, batch_size: int = 10,
           generator: torch.Generator | None = None) -> Iterator[AttackState]:
    """Data-based inversion: eps-loss with label forget_class on `images`, only the vector trains."""
    device = next(model.parameters()).device
    images = images.to(device)
    labels = torch.full((batch_size,), forget_class, device=device, dtype=torch.long)
    vector = attach(model, forget_class, init)
    return optimize(model, [vector],
                    lambda: eps_loss(model, schedule, batch_of(images, batch_size, generator), labels, generator),
                    budgets, lr=lr, batch_size=batch_size, nfe_per_step=batch_size, desc="embedding")


def invert_datafree(model, classifier: nn.Module, image_shape: tuple[int, int, int], *, forget_class: int,
                    schedule: Schedule, budgets: list[int], init: str = "mean", lr: float = 1e-2,
                    batch_size: int = 16, sample_steps: int = 5, prior: Prior = Prior(),
                    generator: torch.Generator | None = None) -> Iterator[AttackState]:
    """Data-free inversion: maximise the attacker classifier's log p(c_f) of images sampled with v
    through `sample_steps` differentiable DDIM steps (unguided). NFE per step = batch x sample_steps.
    prior: the classifier's training cost, booked into every point."""
    device = next(model.parameters()).device
    labels = torch.full((batch_size,), forget_class, device=device, dtype=torch.long)
    vector = attach(model, forget_class, init)
    null = null_class(model)

    def loss():
        x = torch.randn((batch_size, *image_shape), generator=generator).to(device)
        x0 = ddim_loop(model, schedule, x, labels, null, 0.0, sample_steps)
        return nn.functional.cross_entropy(classifier(x0), labels)

    return optimize(model, [vector], loss, budgets, lr=lr, batch_size=batch_size,
                    nfe_per_step=batch_size * sample_steps, desc="embedding datafree", prior=prior)


def setting(a: DictConfig) -> str:
    return ("datafree " if a.mode == "datafree" else "") + f"init={a.init}"


def plans(cfg: DictConfig, ctx: Context) -> list[Plan]:
    """The attack's checks across settings; one plan: invert with k attacker images, or data-free."""
    a = cfg.attack
    budgets = list(a.budgets)
    if a.mode == "data":
        pool = ctx.ds.attacker_pool(ctx.forget_class)
        k = check_k(a.k, pool, ctx.forget_class)

        def states(model, gen):
            images = pool[torch.randperm(len(pool), generator=gen)[:k]]
            return invert(model, images, forget_class=ctx.forget_class, schedule=ctx.schedule, budgets=budgets,
                          init=a.init, lr=float(a.lr), batch_size=int(a.batch_size), generator=gen)
    else:
        clf, clf_cost = get_attacker_clf(ctx)

        def states(model, gen):
            return invert_datafree(model, clf, ctx.ds.image_shape, forget_class=ctx.forget_class,
                                   schedule=ctx.schedule, budgets=budgets, init=a.init, lr=float(a.lr),
                                   batch_size=int(a.batch_size), sample_steps=int(a.sample_steps), prior=clf_cost,
                                   generator=gen)

    return [Plan(setting(a), states)]


if __name__ == "__main__":
    from evaluation.entry import main

    main("embedding")
