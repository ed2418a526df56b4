"""The judge: a small CNN trained on the real training split, the only scorer of generated images.

Nothing in attacks/ may import this module (tests enforce it): an attack never optimizes against
the classifier that scores it. Its penultimate layer also serves as the offline FID feature space.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from unlearn.data import Dataset
from unlearn.errors import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JudgeRecipe:
    width: int = 32
    feature_dim: int = 128
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    shift: int = 1  # random translation augmentation, in pixels


class JudgeNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, width: int = 32, feature_dim: int = 128):
        super().__init__()
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, padding=1), nn.ReLU(),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
            nn.Linear(16 * w, feature_dim), nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(feature_dim, num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def _shift(x: torch.Tensor, s: int, g: torch.Generator) -> torch.Tensor:
    """Random translation by up to s pixels, background (-1) filled in."""
    if s == 0:
        return x
    pad = F.pad(x, (s, s, s, s), value=-1.0)
    h, w = x.shape[-2:]
    dy, dx = torch.randint(0, 2 * s + 1, (2,), generator=g).tolist()
    return pad[..., dy:dy + h, dx:dx + w]


class Judge:
    """A trained JudgeNet plus its test accuracy; scores images in [-1, 1]."""

    def __init__(self, net: JudgeNet, meta: dict):
        self.net = net.eval()
        self.meta = meta

    @property
    def id(self) -> str:
        return self.meta["id"]

    @torch.no_grad()
    def probs(self, images: torch.Tensor, batch_size: int = 2000) -> torch.Tensor:
        dev = next(self.net.parameters()).device
        return torch.cat([F.softmax(self.net(images[i:i + batch_size].to(dev)), -1).cpu()
                          for i in range(0, len(images), batch_size)])

    @torch.no_grad()
    def features(self, images: torch.Tensor, batch_size: int = 2000) -> torch.Tensor:
        dev = next(self.net.parameters()).device
        return torch.cat([self.net.features(images[i:i + batch_size].to(dev)).cpu()
                          for i in range(0, len(images), batch_size)])

    def save(self, folder: Path) -> None:
        save_file(self.net.state_dict(), str(folder / "judge.safetensors"))
        (folder / "judge.json").write_text(json.dumps(self.meta, indent=1))

    @classmethod
    def load(cls, folder: Path, device="cpu") -> "Judge":
        folder = Path(folder)
        try:
            meta = json.loads((folder / "judge.json").read_text())
            net = JudgeNet(meta["in_channels"], meta["num_classes"], meta["recipe"]["width"],
                           meta["recipe"]["feature_dim"])
            net.load_state_dict(load_file(str(folder / "judge.safetensors")))
        except (OSError, KeyError, ValueError, RuntimeError) as e:
            raise UserError(f"judge checkpoint {folder} is missing or corrupt ({type(e).__name__}); "
                            "delete the folder and rerun to rebuild") from e
        return cls(net.to(device), meta)


def train_judge(ds: Dataset, recipe: JudgeRecipe, seed: int, device: torch.device) -> Judge:
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = JudgeNet(ds.image_shape[0], ds.num_classes, recipe.width, recipe.feature_dim).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=recipe.lr)
    n = len(ds.x_train)
    steps = recipe.epochs * ((n + recipe.batch_size - 1) // recipe.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    net.train()
    for _ in tqdm(range(recipe.epochs), desc="judge", disable=None, leave=False):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, recipe.batch_size):
            idx = perm[i:i + recipe.batch_size]
            x = _shift(ds.x_train[idx], recipe.shift, g).to(device)
            loss = F.cross_entropy(net(x), ds.y_train[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    judge = Judge(net, {})
    pred = judge.probs(ds.x_test).argmax(-1)
    acc = (pred == ds.y_test).float().mean().item()
    per_class = {int(c): round((pred[ds.y_test == c] == c).float().mean().item(), 4)
                 for c in range(ds.num_classes)}
    judge.meta = {"in_channels": ds.image_shape[0], "num_classes": ds.num_classes, "recipe": asdict(recipe),
                  "seed": seed, "test_accuracy": round(acc, 4), "test_accuracy_per_class": per_class}
    log.info("judge test accuracy %.4f", acc)
    return judge
