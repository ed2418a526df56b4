"""The attacker's own classifier, for data-free attacks that need a gradient toward "looks like c_f".

It is deliberately not the judge (spec control 4: the judge is never the classifier an attack optimises
against): a different architecture (an MLP, not the judge's CNN), trained on different images (the
attacker pools of every class, never the held-out halves or the test split the judge is tested on).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from attacks.common import Prior
from unlearn.artifacts import artifact, provenance
from unlearn.errors import UserError
from unlearn.pipeline import Context, check_finite


@dataclass(frozen=True)
class AttackerClfRecipe:
    hidden: int = 256
    epochs: int = 60
    lr: float = 1e-3
    batch_size: int = 64
    noise_std: float = 0.1   # input noise: some robustness to the half-denoised images it is asked about


class AttackerNet(nn.Module):
    def __init__(self, in_features: int, num_classes: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU(),
                                 nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.net(x)


def train_attacker_clf(x: torch.Tensor, y: torch.Tensor, num_classes: int, recipe: AttackerClfRecipe,
                       seed: int) -> AttackerNet:
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = AttackerNet(x[0].numel(), num_classes, recipe.hidden)
    opt = torch.optim.Adam(net.parameters(), lr=recipe.lr)
    for _ in range(recipe.epochs):
        for idx in torch.randperm(len(x), generator=g).split(recipe.batch_size):
            xb = x[idx] + recipe.noise_std * torch.randn(x[idx].shape, generator=g)
            loss = nn.functional.cross_entropy(net(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return net.eval()


def get_attacker_clf(ctx: Context, recipe: AttackerClfRecipe = AttackerClfRecipe()) -> tuple[AttackerNet, Prior]:
    """Build once per dataset (cached artifact), load on ctx.device, frozen. Returns the net and its training
    cost (epochs x pool images sample-gradients, the measured wall seconds), which every attack that uses it
    books as a prior: the cache saves time here, not the attacker's cost."""
    ds = ctx.ds
    spec = {"data": ctx.data_key(), "recipe": asdict(recipe), "seed": ctx.pretrain_seed}

    def build(folder: Path) -> dict:
        x = torch.cat([ds.attacker_pool(c) for c in range(ds.num_classes)])
        y = torch.cat([torch.full((len(ds.pool_index[c]),), c) for c in range(ds.num_classes)])
        t0 = time.perf_counter()
        net = train_attacker_clf(x, y, ds.num_classes, recipe, ctx.pretrain_seed)
        wall = time.perf_counter() - t0
        check_finite(net, [], "the attacker classifier's training", "its recipe (attacks/attacker_clf.py)")
        with torch.no_grad():
            acc = (net(ds.x_test).argmax(-1) == ds.y_test).float().mean().item()
        save_file(net.state_dict(), str(folder / "attacker_clf.safetensors"))
        (folder / "meta.json").write_text(json.dumps({"test_accuracy": acc, "recipe": asdict(recipe)}))
        return {"test_accuracy": acc, "train_sample_gradients": recipe.epochs * len(x), "train_wall_s": round(wall, 3)}

    folder = artifact(ctx.artifacts_root, "attacker_clf", spec, build)
    net = AttackerNet(ds.x_train[0].numel(), ds.num_classes, recipe.hidden)
    try:
        net.load_state_dict(load_file(str(folder / "attacker_clf.safetensors")))
        prov = provenance(folder)
    except (OSError, ValueError, RuntimeError, SafetensorError) as e:
        raise UserError(f"cached attacker classifier {folder} is missing or corrupt ({type(e).__name__}); delete "
                        "the folder and rerun to rebuild") from e
    n_pool = sum(len(ds.pool_index[c]) for c in range(ds.num_classes))
    cost = Prior(sample_gradients=int(prov.get("train_sample_gradients", recipe.epochs * n_pool)),
                 wall_s=float(prov.get("train_wall_s", 0.0)), device_s=float(prov.get("train_wall_s", 0.0)))
    return net.to(ctx.device).eval().requires_grad_(False), cost


def confused_class(ctx: Context, clf: AttackerNet) -> int:
    """The retained class most confusable with c_f for the attacker's own classifier: argmax over j != c_f of
    mean p(c_f | x) over the attacker pool of class j. Only retained-class images are fed to it (in the
    fine-tuning threat model the attacker holds no image of c_f; its classifier knows c_f as a label, as a
    public classifier would). Picks the neighbour for fine-tuning recovery; the judge is never consulted."""
    ds, fc = ctx.ds, ctx.forget_class
    with torch.no_grad():
        p_cf = {c: torch.softmax(clf(ds.attacker_pool(c).to(ctx.device)), -1)[:, fc].mean().item()
                for c in range(ds.num_classes) if c != fc}
    return max(p_cf, key=p_cf.get)
