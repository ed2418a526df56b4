"""Dataset readers and their fixed splits, on the embedded digits and the real MNIST files."""

import gzip
import struct

import numpy as np
import pytest
import torch

from tests.conftest import SHARED_MNIST
from unlearn.data import check_class, load_dataset, read_idx
from unlearn.errors import UserError


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_digits_split_is_fixed_stratified_and_disjoint(digits):
    assert digits.x_train.shape[1:] == (1, 8, 8) and digits.num_classes == 10
    assert len(digits.x_train) + len(digits.x_test) == 1797
    assert abs(len(digits.x_test) - 0.2 * 1797) <= 10  # rounding per class
    assert digits.x_train.min() >= -1 and digits.x_train.max() <= 1
    for c in range(10):
        pool, held = set(digits.pool_index[c].tolist()), set(digits.heldout_index[c].tolist())
        assert not pool & held
        assert pool | held == set(torch.nonzero(digits.y_train == c).flatten().tolist())
        assert abs(len(pool) - len(held)) <= 1
    again = load_dataset("digits")
    assert again.fingerprint == digits.fingerprint
    assert torch.equal(again.pool_index[3], digits.pool_index[3])
    assert load_dataset("digits", split_seed=1).fingerprint != digits.fingerprint


def test_class_checks(digits):
    check_class(digits, 9)
    with pytest.raises(UserError, match="out of range .*0..9"):
        check_class(digits, 10)
    with pytest.raises(UserError, match="unknown dataset 'cifar100'"):
        load_dataset("cifar100")


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="../shared/data/mnist is not beside the checkout")
def test_mnist_reader_on_the_real_files():
    ds = load_dataset("mnist", root=str(SHARED_MNIST))
    assert ds.x_train.shape[1:] == (1, 28, 28)
    assert len(ds.x_train) + len(ds.x_test) == 10_000
    assert ds.x_train.min() == -1.0 and ds.x_train.max() == 1.0
    counts = torch.bincount(torch.cat([ds.y_train, ds.y_test]), minlength=10)
    # class counts of the MNIST t10k split (LeCun et al.)
    assert counts.tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def _idx(path, magic, dims, payload: bytes, gz=False):
    raw = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims) + payload
    (gzip.open if gz else open)(path, "wb").write(raw)
    return path


def test_idx_reader_raw_and_gz(tmp_path):
    img = np.arange(2 * 3 * 3, dtype=np.uint8)
    a = read_idx(_idx(tmp_path / "a-images-idx3-ubyte", 2051, (2, 3, 3), img.tobytes()))
    b = read_idx(_idx(tmp_path / "b-images-idx3-ubyte.gz", 2051, (2, 3, 3), img.tobytes(), gz=True))
    assert a.shape == (2, 3, 3) and np.array_equal(a, b) and a[1, 2, 2] == 17


@pytest.mark.parametrize("case,match", [
    ("truncated", "truncated or corrupt"), ("magic", "bad IDX magic"), ("empty", "not an IDX file"),
])
def test_malformed_idx_is_a_one_line_error(tmp_path, case, match):
    p = tmp_path / "x-images-idx3-ubyte"
    if case == "truncated":
        _idx(p, 2051, (2, 3, 3), bytes(10))
    elif case == "magic":
        _idx(p, 1234, (2,), bytes(2))
    else:
        p.write_bytes(b"")
    with pytest.raises(UserError, match=match) as e:
        read_idx(p)
    assert "\n" not in str(e.value)


def test_missing_mnist_root_names_the_layout(tmp_path):
    with pytest.raises(UserError, match="is not a folder; expected <root>/t10k-images"):
        load_dataset("mnist", root=str(tmp_path / "nope"))
    with pytest.raises(UserError, match="no MNIST images-idx3-ubyte file"):
        load_dataset("mnist", root=str(tmp_path))
    with pytest.raises(UserError, match="needs data.root"):
        load_dataset("mnist", root=None)
