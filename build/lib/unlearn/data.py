"""Datasets and their fixed splits.

Every dataset becomes a `Dataset`: images in [-1, 1] as float32 [N, C, H, W] and int64 labels, split
once, with a fixed seed that belongs to the dataset (not to the run), into

    train                 what the base model, the judge and the unlearning methods see
    test                  never trained on; the judge's accuracy is measured here
    attacker_pool(c)      half of class c's training images: the only real c-images an attacker gets
    heldout(c)            the other half: never handed to an attacker; reference images for evaluation

Readers: `digits` (scikit-learn's load_digits, embedded, 8x8), `mnist` (IDX files, .gz or raw) and
`cifar10` (the python-pickle batches, read by an unpickler that admits numpy arrays and nothing else).
MNIST and CIFAR-10 images are pooled from the files found and split here like every dataset.
"""

from __future__ import annotations

import gzip
import hashlib
import pickle
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
    from sklearn.datasets import load_digits  # scikit-learn is imported only when its data set is asked for

    d = load_digits()
    images = d.images[:, None] / 8.0 - 1.0  # 0..16 -> [-1, 1]
    return _split("digits", images, d.target, test_fraction, split_seed)


IDX_LAYOUT = ("expected <root>/t10k-images-idx3-ubyte[.gz] and <root>/t10k-labels-idx1-ubyte[.gz] "
              "(or train-*), big-endian IDX as distributed by LeCun et al.")


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (magic 2051: images N x H x W; 2049: labels N), gzipped or raw."""
    try:
        raw = gzip.open(path, "rb").read() if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError; a cut .gz raises EOFError
        raise UserError(f"{path} cannot be read ({type(e).__name__}: {e}); re-copy the file; {IDX_LAYOUT}") from e
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
    if not len(labels):
        raise UserError(f"the MNIST files under {root} hold no images; re-copy them; {IDX_LAYOUT}")
    if labels.max() > 9:
        raise UserError(f"MNIST labels must be in 0..9, found {labels.min()}..{labels.max()} in the files under "
                        f"{root}; re-copy them")
    if max_images:
        images, labels = images[:max_images], labels[:max_images]
    return _split("mnist", images[:, None] / 127.5 - 1.0, labels, test_fraction, split_seed)


CIFAR_LAYOUT = ("expected <root>/cifar-10-batches-py/{data_batch_1..5,test_batch} (or those files in root "
                "itself): the python version from https://www.cs.toronto.edu/~kriz/cifar.html, unpacked")
CIFAR_FILES = [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """CIFAR batches are pickles; a pickle can name any callable. Admit only what numpy arrays need."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
               # protocol 5 (numpy >= 1.16 with pickle 5): an array rebuilt from its raw bytes
               ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it names {module}.{name}, which a CIFAR batch never does (refused)")


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch -> (uint8 images [N, 3, 32, 32], int64 labels [N])."""
    try:
        with open(path, "rb") as f:
            d = _NumpyOnlyUnpickler(f, encoding="latin1").load()
        d = {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}
        data = np.asarray(d["data"])
        labels = np.asarray(d["labels"], dtype=np.int64)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, AttributeError, IndexError,
            UnicodeDecodeError, OverflowError, MemoryError) as e:
        raise UserError(f"{path} is not a CIFAR-10 python batch ({type(e).__name__}: {str(e)[:100]}); "
                        f"{CIFAR_LAYOUT}") from e
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise UserError(f"{path}: CIFAR batch holds data {data.dtype}{list(data.shape)} and {len(labels)} labels "
                        f"(want uint8 [N, 3072] and N labels); re-copy the file; {CIFAR_LAYOUT}")
    if len(labels) and not (0 <= labels.min() and labels.max() < 10):
        raise UserError(f"{path}: CIFAR-10 labels must be in 0..9, found {labels.min()}..{labels.max()}; "
                        "re-copy the file")
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar10_dataset(root: str | None, test_fraction: float = 0.2, split_seed: int = 0,
                         max_images: int | None = None) -> Dataset:
    """CIFAR-10 from local python batches: every batch found (train and test) pooled, then split here."""
    if not root:
        raise UserError(f"data=cifar10 needs data.root=<folder>; {CIFAR_LAYOUT}")
    root_path = Path(root).expanduser()
    if not root_path.is_dir():
        raise UserError(f"data.root={root} is not a folder; {CIFAR_LAYOUT}")
    folder = root_path / "cifar-10-batches-py" if (root_path / "cifar-10-batches-py").is_dir() else root_path
    files = [folder / n for n in CIFAR_FILES if (folder / n).is_file()]
    if not files:
        raise UserError(f"no CIFAR-10 batch under data.root={root}; {CIFAR_LAYOUT}")
    parts = [read_cifar_batch(f) for f in files]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    if max_images:
        images, labels = images[:max_images], labels[:max_images]
    return _split("cifar10", images / 127.5 - 1.0, labels, test_fraction, split_seed)


def load_dataset(name: str, root: str | None = None, test_fraction: float = 0.2, split_seed: int = 0,
                 max_images: int | None = None) -> Dataset:
    if name == "digits":
        return load_digits_dataset(test_fraction, split_seed)
    if name == "mnist":
        return load_mnist_dataset(root, test_fraction, split_seed, max_images)
    if name == "cifar10":
        return load_cifar10_dataset(root, test_fraction, split_seed, max_images)
    raise UserError(f"unknown dataset {name!r}; valid: digits, mnist, cifar10")


def check_class(ds: Dataset, forget_class: int) -> None:
    if not 0 <= forget_class < ds.num_classes:
        raise UserError(f"data.forget_class={forget_class} is out of range for {ds.name} "
                        f"(classes 0..{ds.num_classes - 1})")
    n_train = int((ds.y_train == forget_class).sum())
    if n_train == 0:
        raise UserError(f"class {forget_class} has no training images in {ds.name}; pick another data.forget_class")
    if len(ds.pool_index[forget_class]) == 0:
        raise UserError(f"the attacker pool of class {forget_class} is empty ({ds.name} holds {n_train} training "
                        "image(s) of it; the pool is half of them): use more data or another data.forget_class")
