"""Shared test helpers: compose any entry point's config, shrunk to CPU-test size."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

import evaluation.entry  # noqa: F401 - registers the attack entry configs (relearn, finetune, ...) with Hydra
from unlearn.model import Arch

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"

# A model and recipe that build in seconds: for plumbing tests, not for science.
TINY = [
    "model.arch.block_out_channels=[8,16]", "model.arch.norm_num_groups=4", "model.train.steps=15",
    "model.train.batch_size=32", "judge.recipe.epochs=2", "sampler.steps=3",
]
TINY_METHOD = ["unlearned.args.steps=3", "unlearned.args.batch_size=8", "unlearned.args.retain_batch_size=8"]
TINY_ATTACK = ["attack.budgets=[0,2]", "eval.n=16"]
# the same tiny UNet for tests that build a model directly (no attention: fast and deterministic on CPU)
TINY_ARCH = Arch(block_out_channels=(8, 16), down_block_types=("DownBlock2D", "DownBlock2D"),
                 up_block_types=("UpBlock2D", "UpBlock2D"), layers_per_block=1, norm_num_groups=4, add_attention=False)


def compose_cfg(name: str, overrides: list[str], tmp: Path | None = None):
    paths = [f"paths.artifacts={tmp}/artifacts", f"paths.results={tmp}/results"] if tmp else []
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIGS)):
        return compose(config_name=name, overrides=[*overrides, *paths])


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    """One artifact/results root shared by the tiny-model tests (the tiny base model is built once)."""
    return tmp_path_factory.mktemp("tiny")
