"""Shared test helpers: compose any entry point's config, shrunk to CPU-test size."""

from __future__ import annotations

import io
import os
import runpy
import subprocess
import sys
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig

import evaluation.entry  # noqa: F401 - registers the attack entry configs (relearn, finetune, ...) with Hydra
import evaluation.worst_case  # noqa: F401 - registers the worst_case entry config
from unlearn.model import Arch
from unlearn.paths import CONFIGS

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
SHARED_TESTBED = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "testbed_ddpm"  # see its README.md

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


def run_cli(entry: str, args: list[str], cwd: Path, monkeypatch, env_root: Path | None = None):
    """`python -m entry args` in this process: the module's __main__ code (the same CLI function a shell runs) with
    this argv, folder and environment (env_root: UNLEARN_ARTIFACTS / UNLEARN_RESULTS under it); returns what a shell
    would see (a CompletedProcess: exit code, stdout, stderr), without an interpreter start-up."""
    monkeypatch.chdir(cwd)
    if env_root is not None:
        monkeypatch.setenv("UNLEARN_ARTIFACTS", str(env_root / "artifacts"))
        monkeypatch.setenv("UNLEARN_RESULTS", str(env_root / "results"))
    monkeypatch.setenv("HYDRA_FULL_ERROR", os.environ.get("HYDRA_FULL_ERROR", ""))  # restored after the test
    monkeypatch.setattr(sys, "argv", [entry, *args])
    out, err, code = io.StringIO(), io.StringIO(), 0
    with redirect_stdout(out), redirect_stderr(err), warnings.catch_warnings():
        # warnings reach stderr as in a fresh interpreter (its default filters: each once per place), not pytest
        warnings.resetwarnings()
        warnings.simplefilter("default")
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # hidden outside __main__ by default
        warnings.showwarning = lambda msg, cat, fn, ln, file=None, line=None: sys.stderr.write(
            warnings.formatwarning(msg, cat, fn, ln, line))
        # runpy's note that the module is already imported here (a fresh interpreter would not print it)
        warnings.filterwarnings("ignore", message=".*found in sys.modules after import of package",
                                category=RuntimeWarning)
        try:
            runpy.run_module(entry, run_name="__main__", alter_sys=True)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        finally:  # a run stopped while Hydra resolved its run folder leaves Hydra's global config set: a new
            HydraConfig.instance().cfg = None  # process would start without it

    return subprocess.CompletedProcess([entry, *args], code, out.getvalue(), err.getvalue())


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    """One artifact/results root shared by the tiny-model tests (the tiny base model is built once)."""
    return tmp_path_factory.mktemp("tiny")
