"""Fine-tuning recovery: ordinary fine-tuning that never sees the forgotten class, then sampling with c_f.

Threat model (../shared/spec/attacks.md, id `finetune`; DiMRA, Yuan et al. 2025; concept resurgence,
Suriyakumar et al. 2024): a downstream user fine-tunes the unlearned model on data without c_f. Does c_f
come back anyway? The attacker's data (attack.data):
    retain     the attacker pools of every retained class, with their labels
    neighbour  the attacker pool of one class only: the one the attacker's own classifier (attacks/attacker_clf.py,
               never the judge) most confuses with c_f; its training cost is booked as a prior
    own        the model's own samples of the retained classes (data-free), drawn before fine-tuning; the
               sampling is booked as a prior (NFE and seconds)
    foreign    other real data the attacker holds, of the retained classes only: MNIST or digits images from
               attack.foreign_root (IDX files; `digits` for scikit-learn's), resized to the model's image size
               (area averaging) with their labels; for digits, MNIST's 28x28 t10k images; for MNIST, the 8x8 digits
Loss: the pre-training loss (eps-loss, labels dropped to the null class with attack.label_dropout, so the
guidance branch keeps training too). Budget = optimizer steps x batch.

    python -m attacks.finetune unlearned=safemax
    python -m attacks.finetune unlearned=safemax attack.data=neighbour
    python -m attacks.finetune unlearned=safemax attack.data=foreign attack.foreign_root=../shared/data/mnist
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from omegaconf import DictConfig, OmegaConf

from attacks.attacker_clf import confused_class, get_attacker_clf
from attacks.common import AttackState, Plan, Prior, optimize
from unlearn.data import load_dataset
from unlearn.diffusion import Schedule, ddim_sample, eps_loss, sampling_nfe
from unlearn.errors import UserError
from unlearn.methods_common import batch_of
from unlearn.model import Timer, null_class
from unlearn.pipeline import Context

DATA = ("retain", "neighbour", "own", "foreign")


def finetune(model, images: torch.Tensor, labels: torch.Tensor, *, schedule: Schedule, budgets: list[int],
             lr: float = 1e-4, batch_size: int = 32, label_dropout: float = 0.1, prior: Prior = Prior(),
             generator: torch.Generator | None = None) -> Iterator[AttackState]:
    """Fine-tune `model` in place on (images, labels) with the pre-training loss; a state per budget."""
    device = next(model.parameters()).device
    images, labels = images.to(device), labels.to(device)
    null = null_class(model)

    def loss():
        x0, y = batch_of((images, labels), batch_size, generator)
        drop = (torch.rand(y.shape, generator=generator) < label_dropout).to(device)
        return eps_loss(model, schedule, x0, torch.where(drop, torch.full_like(y, null), y), generator)

    return optimize(model, model.parameters(), loss, budgets, lr=lr, batch_size=batch_size,
                    nfe_per_step=batch_size, desc="finetune", prior=prior)


OWN_STEPS = 25  # DDIM steps (unguided) for the data-free variant's own samples


def foreign_images(root: str | None, shape: tuple[int, int, int],
                   exclude: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Real images from another dataset (MNIST IDX files under `root`, or `digits`), every class but `exclude`,
    resized by area averaging to `shape` (channels must agree), in [-1, 1], with their labels and the dataset's
    name:fingerprint (what records key by: never the path)."""
    if not root:
        raise UserError("attack.data=foreign needs attack.foreign_root=<folder with MNIST IDX files> (or digits)")
    other = load_dataset("digits") if root == "digits" else load_dataset("mnist", root=root)
    x = torch.cat([other.x_train, other.x_test]).float()
    y = torch.cat([other.y_train, other.y_test])
    if x.shape[1] != shape[0]:
        raise UserError(f"attack.foreign_root={root} holds {x.shape[1]}-channel images, the model {shape[0]}; "
                        "give images with as many channels")
    keep = y != exclude
    x = torch.nn.functional.adaptive_avg_pool2d(x[keep], shape[1:]) if x.shape[2:] != shape[1:] else x[keep]
    return x.clamp(-1, 1), y[keep], f"{other.name}:{other.fingerprint}"


def attacker_data(ctx: Context, data: str, neighbour: int | None, model=None, n_own: int = 0,
                  generator: torch.Generator | None = None,
                  foreign_root: str | None = None) -> tuple[torch.Tensor, torch.Tensor, Prior]:
    """The attacker's fine-tuning set (never an image of c_f) and what it cost to make (own: the sampling)."""
    ds, fc = ctx.ds, ctx.forget_class
    if data == "foreign":
        x, y, _ = foreign_images(foreign_root, ds.image_shape, fc)
        return x, y, Prior()
    classes = [neighbour] if data == "neighbour" else [c for c in range(ds.num_classes) if c != fc]
    if data == "own":
        y = torch.tensor(classes).repeat_interleave(n_own)
        timer = Timer(ctx.device)
        with timer:
            x = ddim_sample(model, ctx.schedule, y, ds.image_shape, null_class(model), 0.0, OWN_STEPS, 0.0, generator)
        return x, y, Prior(nfe=sampling_nfe(len(y), OWN_STEPS, 0.0), wall_s=timer.wall_s, device_s=timer.device_s)
    xs = [ds.attacker_pool(c) for c in classes]
    return torch.cat(xs), torch.cat([torch.full((len(x),), c) for c, x in zip(classes, xs)]), Prior()


def setting(a: DictConfig, neighbour: int | None) -> str:
    return {"retain": "retain", "neighbour": f"neighbour c={neighbour}", "own": f"own n={int(a.n_own)}",
            "foreign": "foreign"}[a.data]


def plans(cfg: DictConfig, ctx: Context) -> list[Plan]:
    """The attack's checks across settings; one plan: fine-tune on attack.data (never an image of c_f)."""
    a = cfg.attack
    neighbour, clf_cost = None, Prior()
    params = OmegaConf.to_container(a, resolve=True)
    root = params.pop("foreign_root", None)  # the data's identity is keyed, not its path (or nothing, unused)
    if a.data == "foreign":  # a bad folder is refused now, before any model is built
        params["foreign"] = foreign_images(root, ctx.ds.image_shape, ctx.forget_class)[2]
    if a.data == "neighbour":
        clf, clf_cost = get_attacker_clf(ctx)
        neighbour = confused_class(ctx, clf)

    def states(model, gen):
        x, y, data_cost = attacker_data(ctx, a.data, neighbour, model, int(a.n_own), gen, a.get("foreign_root"))
        assert not (y == ctx.forget_class).any()
        return finetune(model, x, y, schedule=ctx.schedule, budgets=list(a.budgets), lr=float(a.lr),
                        batch_size=int(a.batch_size), label_dropout=float(a.label_dropout),
                        prior=clf_cost + data_cost, generator=gen)

    return [Plan(setting(a, neighbour), states, params=params)]


if __name__ == "__main__":
    from evaluation.entry import main

    main("finetune")
