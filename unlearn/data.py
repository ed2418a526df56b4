"""Datasets and their fixed splits.

Every dataset becomes a `Dataset`: images in [-1, 1] as float32 [N, C, H, W] and int64 labels, split
once, with a fixed seed that belongs to the dataset (not to the run), into

    train                 what the base model, the judge and the unlearning methods see
    test                  never trained on; the judge's accuracy is measured here
    attacker_pool(c)      half of class c's training images: the only real c-images an attacker gets
    heldout(c)            the other half: never handed to an attacker; reference images for evaluation

Readers: `digits` (scikit-learn's load_digits, embedded, 8x8) and `mnist` (IDX files, .gz or raw).
"""

from __future__ import annotations

import gzip
import hashlib
import struct
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from unlearn.errors import UserError


@dataclass(frozen=True)
class Dataset:
    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    pool_index: dict[int, torch.Tensor]  # class -> indices into x_train of its attacker pool
    heldout_index: dict[int, torch.Tensor]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])

    def attacker_pool(self, c: int) -> torch.Tensor:
        return self.x_train[self.pool_index[c]]

    def heldout(self, c: int) -> torch.Tensor:
        return self.x_train[self.heldout_index[c]]

    @cached_property
    def fingerprint(self) -> str:
        """Content hash of the split arrays (computed once): part of every artifact key built from this data."""
        h = hashlib.sha256()
        for a in (self.x_train, self.y_train, self.x_test, self.y_test):
            h.update(a.numpy().tobytes())
        return h.hexdigest()[:16]


def _split(name: str, images: np.ndarray, labels: np.ndarray, test_fraction: float, split_seed: int) -> Dataset:
    """Stratified train/test split and per-class pool/held-out halves, both seeded by split_seed."""
    rng = np.random.default_rng(split_seed)
    classes = np.unique(labels)
    train_idx, test_idx = [], []
    for c in classes:
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = int(round(test_fraction * len(idx)))
        test_idx.append(idx[:n_test])
        train_idx.append(idx[n_test:])
    train_idx, test_idx = np.sort(np.concatenate(train_idx)), np.sort(np.concatenate(test_idx))
    x = torch.from_numpy(images.astype(np.float32))
    y = torch.from_numpy(labels.astype(np.int64))
    y_train = y[train_idx]
    pool, held = {}, {}
    for c in classes.tolist():
        idx = rng.permutation(np.flatnonzero(y_train.numpy() == c))
        pool[c] = torch.from_numpy(np.sort(idx[: len(idx) // 2]))
        held[c] = torch.from_numpy(np.sort(idx[len(idx) // 2:]))
    return Dataset(name, x[train_idx], y_train, x[test_idx], y[test_idx], int(classes.max()) + 1, pool, held)


def load_digits_dataset(test_fraction: float = 0.2, split_seed: int = 0) -> Dataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = d.images[:, None] / 8.0 - 1.0  # 0..16 -> [-1, 1]
    return _split("digits", images, d.target, test_fraction, split_seed)


IDX_LAYOUT = ("expected <root>/t10k-images-idx3-ubyte[.gz] and <root>/t10k-labels-idx1-ubyte[.gz] "
              "(or train-*), big-endian IDX as distributed by LeCun et al.")


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (magic 2051: images N x H x W; 2049: labels N), gzipped or raw."""
    raw = gzip.open(path, "rb").read() if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 8:
        raise UserError(f"{path} is not an IDX file (only {len(raw)} bytes); {IDX_LAYOUT}")
    magic, n = struct.unpack(">II", raw[:8])
    if magic == 2049:
        dims, offset = (n,), 8
    elif magic == 2051:
        if len(raw) < 16:
            raise UserError(f"{path}: truncated IDX header; {IDX_LAYOUT}")
        rows, cols = struct.unpack(">II", raw[8:16])
        dims, offset = (n, rows, cols), 16
    else:
        raise UserError(f"{path}: bad IDX magic number {magic} (want 2049 labels / 2051 images); {IDX_LAYOUT}")
    expected = int(np.prod(dims))
    if len(raw) - offset != expected:
        raise UserError(f"{path}: IDX header promises {expected} bytes of data but the file holds "
                        f"{len(raw) - offset} (truncated or corrupt); re-copy the file")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)


def _find_idx(root: Path, stem: str) -> Path:
    for split in ("t10k", "train"):
        for suffix in ("", ".gz"):
            for folder in (root, root / "MNIST" / "raw"):
                p = folder / f"{split}-{stem}{suffix}"
                if p.is_file():
                    return p
    raise UserError(f"no MNIST {stem} file under data.root={root}: {IDX_LAYOUT}")


def load_mnist_dataset(root: str | None, test_fraction: float = 0.2, split_seed: int = 0,
                       max_images: int | None = None) -> Dataset:
    """MNIST from local IDX files. Prefers the t10k files (what ../shared/data/mnist holds);
    images are kept at 28x28 and scaled to [-1, 1]."""
    if not root:
        raise UserError(f"data=mnist needs data.root=<folder with the IDX files>; {IDX_LAYOUT}")
    root_path = Path(root).expanduser()
    if not root_path.is_dir():
        raise UserError(f"data.root={root} is not a folder; {IDX_LAYOUT}")
    images = read_idx(_find_idx(root_path, "images-idx3-ubyte"))
    labels = read_idx(_find_idx(root_path, "labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise UserError(f"MNIST files under {root} disagree: images {images.shape}, labels {labels.shape}")
    if max_images:
        images, labels = images[:max_images], labels[:max_images]
    return _split("mnist", images[:, None] / 127.5 - 1.0, labels, test_fraction, split_seed)


def load_dataset(name: str, root: str | None = None, test_fraction: float = 0.2, split_seed: int = 0,
                 max_images: int | None = None) -> Dataset:
    if name == "digits":
        return load_digits_dataset(test_fraction, split_seed)
    if name == "mnist":
        return load_mnist_dataset(root, test_fraction, split_seed, max_images)
    raise UserError(f"unknown dataset {name!r}; valid: digits, mnist")


def check_class(ds: Dataset, forget_class: int) -> None:
    if not 0 <= forget_class < ds.num_classes:
        raise UserError(f"data.forget_class={forget_class} is out of range for {ds.name} "
                        f"(classes 0..{ds.num_classes - 1})")
    if len(ds.pool_index.get(forget_class, [])) == 0:
        raise UserError(f"class {forget_class} has no training images in {ds.name}; pick another data.forget_class")
