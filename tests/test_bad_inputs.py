"""The bad-input catalogue (README, "Bad input"): every entry run through the real command line.

Each case runs in-process through the module's own `python -m` code (runpy, the same CLI function: argv, exit
code and stderr as a shell sees them), so the catalogue costs no interpreter start-ups; a handful (SUBPROCESS)
also run as real subprocesses, as do the signal and full-disk tests. Each case must give: a non-zero exit,
exactly one line on stderr that names the fix, and nothing half-done left behind (no torn record line, no
temporary file or folder, no artifact without its provenance).
A meta-test checks that every row of the README's catalogue has a case here.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import resource
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from evaluation.records import read_records
from tests.conftest import TINY, TINY_ARCH, TINY_ATTACK, TINY_METHOD, run_cli
from unlearn.io import remove_dead_temporaries
from unlearn.model import Arch, build_unet

ROOT = Path(__file__).resolve().parent.parent
TINY_ALL = [*TINY, *TINY_METHOD, *TINY_ATTACK, "eval.n_retained_per_class=2"]


# ---------------------------------------------------------------- fixtures: files in the real formats, bad


def _idx(path: Path, arr: np.ndarray, magic: int) -> None:
    head = struct.pack(">II", magic, len(arr)) + (struct.pack(">II", *arr.shape[1:]) if magic == 2051 else b"")
    path.write_bytes(head + arr.astype(np.uint8).tobytes())


def _mnist(folder: Path, labels: list[int]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    _idx(folder / "t10k-images-idx3-ubyte", rng.integers(0, 255, (len(labels), 28, 28)), 2051)
    _idx(folder / "t10k-labels-idx1-ubyte", np.array(labels), 2049)
    return folder


def _checkpoint(folder: Path, image: int = 8, arch: Arch = TINY_ARCH) -> Path:
    build_unet(arch, (1, image, image), 10).save_pretrained(str(folder), safe_serialization=True)
    return folder


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def setup_class_absent(d: Path) -> list[str]:
    labels = [c for c in range(10) if c != 5 for _ in range(6)] + [9]  # no 5 at all
    return ["data=mnist", f"data.root={_mnist(d / 'mnist', labels)}", "data.forget_class=5"]


def setup_empty_pool(d: Path) -> list[str]:
    labels = [c for c in range(10) if c != 5 for _ in range(6)] + [5]  # one 5: it goes to the held-out half
    return ["data=mnist", f"data.root={_mnist(d / 'mnist', labels)}", "data.forget_class=5"]


def setup_mnist_missing_file(d: Path) -> list[str]:
    (d / "empty").mkdir()
    return ["data=mnist", f"data.root={d / 'empty'}"]


def setup_malformed_idx(d: Path) -> list[str]:
    root = _mnist(d / "mnist", list(range(10)) * 6)
    (root / "t10k-images-idx3-ubyte").write_bytes(b"GARBAGE! this is not an IDX file")
    return ["data=mnist", f"data.root={root}"]


def setup_truncated_idx(d: Path) -> list[str]:
    root = _mnist(d / "mnist", list(range(10)) * 6)
    f = root / "t10k-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:5000])
    return ["data=mnist", f"data.root={root}"]


def _cifar(d: Path, payload) -> list[str]:
    root = d / "cifar" / "cifar-10-batches-py"
    root.mkdir(parents=True)
    (root / "data_batch_1").write_bytes(payload if isinstance(payload, bytes) else pickle.dumps(payload, protocol=2))
    return ["data=cifar10", f"data.root={d / 'cifar'}"]


def setup_malformed_cifar(d: Path) -> list[str]:
    return _cifar(d, b"\x80\x02}q\x00(X\x04\x00\x00\x00datagarbage")


def setup_cifar_wrong_shape(d: Path) -> list[str]:
    return _cifar(d, {b"data": np.zeros((4, 100), np.uint8), b"labels": [0, 1, 2, 3]})


def setup_cifar_code_pickle(d: Path) -> list[str]:
    return _cifar(d, {b"data": _Evil(), b"labels": [0]})


def setup_missing_checkpoint(d: Path) -> list[str]:
    return [f"unlearned.checkpoint={d / 'nope'}"]


def setup_pickle_code_folder(d: Path) -> list[str]:
    ck = _checkpoint(d / "ckpt")
    (ck / "diffusion_pytorch_model.safetensors").unlink()
    (ck / "diffusion_pytorch_model.bin").write_bytes(pickle.dumps({"conv_in.weight": _Evil()}, protocol=2))
    return [f"unlearned.checkpoint={ck}"]


def setup_pipeline_other_schedule(d: Path) -> list[str]:
    _checkpoint(d / "pipe" / "unet")
    (d / "pipe" / "scheduler").mkdir()
    (d / "pipe" / "scheduler" / "scheduler_config.json").write_text(json.dumps(
        {"_class_name": "DDPMScheduler", "beta_schedule": "squaredcos_cap_v2", "num_train_timesteps": 1000}))
    return [f"unlearned.checkpoint={d / 'pipe'}"]


def setup_pickle_file(d: Path) -> list[str]:
    torch.save({"w": torch.zeros(2)}, d / "model.pt")
    return [f"unlearned.checkpoint={d / 'model.pt'}"]


def setup_corrupt_checkpoint(d: Path) -> list[str]:
    ck = _checkpoint(d / "ckpt")
    (ck / "diffusion_pytorch_model.safetensors").write_bytes(os.urandom(4096))
    return [f"unlearned.checkpoint={ck}"]


def setup_truncated_checkpoint(d: Path) -> list[str]:
    ck = _checkpoint(d / "ckpt")
    f = ck / "diffusion_pytorch_model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    return [f"unlearned.checkpoint={ck}"]


def setup_nan_checkpoint(d: Path) -> list[str]:
    model = build_unet(TINY_ARCH, (1, 8, 8), 10)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    model.save_pretrained(str(d / "ckpt"), safe_serialization=True)
    return [f"unlearned.checkpoint={d / 'ckpt'}"]


def setup_shape_mismatch(d: Path) -> list[str]:
    ck = _checkpoint(d / "ckpt")
    cfg = json.loads((ck / "config.json").read_text())
    cfg["block_out_channels"] = [16, 16]
    (ck / "config.json").write_text(json.dumps(cfg))
    return [f"unlearned.checkpoint={ck}"]


def setup_other_dataset(d: Path) -> list[str]:
    return [f"unlearned.checkpoint={_checkpoint(d / 'ckpt', image=28)}"]


def setup_checkpoint_for_reference(d: Path) -> list[str]:
    return ["unlearned=original", f"unlearned.checkpoint={_checkpoint(d / 'ckpt')}"]


def setup_unwritable_results(d: Path) -> list[str]:
    (d / "afile").write_text("")
    return [f"paths.results={d / 'afile' / 'results'}"]


def setup_unwritable_artifacts(d: Path) -> list[str]:
    (d / "afile").write_text("")
    return [f"paths.artifacts={d / 'afile' / 'artifacts'}"]


def setup_malformed_records(d: Path) -> list[str]:
    (d / "records.jsonl").write_text('{"key": "a"}\nnot json\n')
    return ["--records", str(d / "records.jsonl"), "--report", str(d / "REPORT.md")]


def _records(d: Path, text: bytes) -> list[str]:
    (d / "results").mkdir(parents=True, exist_ok=True)
    (d / "results" / "records.jsonl").write_bytes(text)
    return []


def setup_binary_records(d: Path) -> list[str]:
    return _records(d, b"\x89PNG\r\n\x1a\n\xff\xfe binary\n")


def setup_record_non_text_key(d: Path) -> list[str]:
    return _records(d, b'{"key": 5, "kind": "attack"}\n')


def setup_duplicate_keys(d: Path) -> list[str]:
    return _records(d, b'{"key": "a", "schema": 2}\n{"key": "b", "schema": 2}\n{"key": "a", "schema": 2}\n')


def setup_future_schema(d: Path) -> list[str]:
    return _records(d, b'{"key": "a", "schema": 99}\n')


def setup_truncated_judge(d: Path) -> list[str]:
    from evaluation.harness import get_judge
    from tests.conftest import compose_cfg
    from unlearn.pipeline import Context

    cfg = compose_cfg("relearn", TINY_ALL, d)
    judge = Path(get_judge(Context.from_cfg(cfg), cfg.judge).meta["folder"]) / "judge.safetensors"
    judge.write_bytes(judge.read_bytes()[:100])
    return [*TINY_ALL, f"paths.artifacts={d}/artifacts"]


def setup_empty_mnist(d: Path) -> list[str]:
    root = d / "mnist"
    root.mkdir()
    _idx(root / "t10k-images-idx3-ubyte", np.zeros((0, 28, 28)), 2051)
    _idx(root / "t10k-labels-idx1-ubyte", np.zeros(0), 2049)
    return ["data=mnist", f"data.root={root}"]


def setup_mnist_label_255(d: Path) -> list[str]:
    return ["data=mnist", f"data.root={_mnist(d / 'mnist', [*range(10)] * 6 + [255])}"]


def setup_inception_code(d: Path) -> list[str]:
    (d / "inception.pth").write_bytes(pickle.dumps({"w": _Evil()}, protocol=2))
    return [f"eval.inception_weights={d / 'inception.pth'}"]


def setup_inception_not_state_dict(d: Path) -> list[str]:
    torch.save([1, 2, 3], d / "inception.pth")
    return [f"eval.inception_weights={d / 'inception.pth'}"]


def setup_os_error_in_run(d: Path) -> list[str]:
    (d / "results" / "records.jsonl").mkdir(parents=True)  # an OSError inside the task, not one of our checks
    return []


@dataclass
class Case:
    args: list[str]
    expect: str                                   # regex the one stderr line must match
    entry: str = "attacks.relearn"
    setup: Callable[[Path], list[str]] | None = None
    builds: bool = False                          # needs the tiny models built (shared artifacts folder)
    skip_if: bool = False
    fails_at: int = 0                             # the budget it fails at: points below it are valid and kept
    slow: bool = False                            # trains tiny models of its own: the slow tier
    extra: list[str] = field(default_factory=list)


CASES: dict[str, Case] = {
    "unknown-method": Case(["unlearned=foo"], r"Could not find 'unlearned/foo'.*Available options.*safemax"),
    "unknown-hyperparameter": Case(["unlearned=safemax", "+unlearned.args.lamda=2"],
                                   r"no hyperparameter lamda; valid: .*lam", entry="unlearn.run"),
    "unknown-attack": Case(["attack=foo"], r"Could not find 'attack/foo'.*relearn_lora"),
    "ema-swap-own-checkpoint": Case(["attack.transforms=[ema_swap]"], r"attack.transforms has ema_swap, but the "
                                    r"unlearned model is a toolkit checkpoint, which holds the EMA weights only; drop "
                                    r"ema_swap, or attack testbed run folders", entry="attacks.deploy"),
    "unknown-dataset": Case(["data=cifar100"], r"Could not find 'data/cifar100'.*cifar10"),
    "unknown-key": Case(["attack.kk=3"], r"Could not override 'attack.kk'"),
    "not-a-number": Case(["eval.n=abc"], r"eval.n='abc': not an integer; use an integer in \[1, 1000000\]"),
    "class-out-of-range": Case(["data.forget_class=12"],
                               r"data.forget_class=12 is out of range for digits \(classes 0..9\)"),
    "class-absent": Case([], r"class 5 has no training images in mnist; pick another", setup=setup_class_absent),
    "empty-attacker-pool": Case([], r"attacker pool of class 5 is empty", setup=setup_empty_pool),
    "k-larger-than-pool": Case(["attack.k=1000"], r"attack.k=1000 but the attacker pool of class 0 holds \d+ images"),
    "negative-budget": Case(["attack.budgets=[-1,10]"], r"attack.budgets=\[-1, 10\]: element -1 out of range; use a "
                            r"non-empty strictly increasing list, each an integer in \[0, 10000000\]"),
    "unsorted-budgets": Case(["attack.budgets=[10,0]"], r"attack.budgets=\[10, 0\]: not strictly increasing"),
    "scalar-budgets": Case(["attack.budgets=5"], r"attack.budgets=5: not a list; use a non-empty strictly increasing"),
    "zero-samples": Case(["eval.n=0"], r"eval.n=0: out of range; use an integer in \[1, 1000000\]"),
    "bad-sampler-clip": Case(["sampler.clip=maybe"], r"sampler.clip='maybe': not true or false; use true or false"),
    "bad-sampler-variance": Case(["sampler.variance=large"], r"sampler.variance='large': not a valid choice; use one "
                                 r"of ddim, beta"),
    "wrong-data-root": Case(["data=mnist", "data.root=/nonexistent/mnist"],
                            r"data.root=/nonexistent/mnist is not a folder"),
    "mnist-file-missing": Case([], r"no MNIST images-idx3-ubyte file under data.root", setup=setup_mnist_missing_file),
    "malformed-idx": Case([], r"bad IDX magic number", setup=setup_malformed_idx),
    "truncated-idx": Case([], r"truncated or corrupt\); re-copy the file", setup=setup_truncated_idx),
    "malformed-cifar": Case([], r"is not a CIFAR-10 python batch", setup=setup_malformed_cifar),
    "cifar-wrong-shape": Case([], r"want uint8 \[N, 3072\]", setup=setup_cifar_wrong_shape),
    "cifar-code-in-pickle": Case([], r"names posix.system, which a CIFAR batch never does \(refused\)",
                                 setup=setup_cifar_code_pickle),
    "missing-checkpoint": Case([], r"unlearned.checkpoint .*nope does not exist; give a save_pretrained folder",
                               setup=setup_missing_checkpoint),
    "pickle-checkpoint-code": Case([], r"diffusion_pytorch_model.bin is refused: torch.load\(weights_only=True\) "
                                   r"rejects it \(it names posix.system", setup=setup_pickle_code_folder),
    "pipeline-other-schedule": Case([], r"pipeline .*pipe was trained with the schedule beta_schedule=squaredcos_cap_v2"
                                    r".* but the toolkit samples with beta_schedule=linear",
                                    setup=setup_pipeline_other_schedule),
    "pickle-checkpoint-file": Case([], r"model.pt is a pickle file, not a folder; give the folder that holds the "
                                   r"weights", setup=setup_pickle_file),
    "corrupt-checkpoint": Case([], r"safetensors is truncated or corrupt", setup=setup_corrupt_checkpoint),
    # garbage is never recorded as recovery: NaN samples would be clamped into images the judge calls a class
    "nan-weights-checkpoint": Case([*TINY_ALL], r"the model's samples hold NaN or inf .*nothing was recorded",
                                   setup=setup_nan_checkpoint, builds=True),
    "nan-weights-audit": Case([*TINY_ALL], r"the audit's .* scores hold NaN or inf.*nothing was recorded",
                              entry="attacks.mia", setup=setup_nan_checkpoint, builds=True),
    "nan-guidance": Case(["sampler.guidance_w=nan"], r"sampler.guidance_w=nan: not finite; use a finite number"),
    "truncated-checkpoint": Case([], r"safetensors is truncated or corrupt", setup=setup_truncated_checkpoint),
    "shape-mismatched-checkpoint": Case([], r"weights do not match its config.json \(.* is \(\d+",
                                        setup=setup_shape_mismatch),
    "checkpoint-other-dataset": Case([], r"is for 28x28x1 images .* data is 8x8x1 .*pick the data= it was trained on",
                                     setup=setup_other_dataset),
    "checkpoint-for-reference": Case([], r"not the reference 'original'", setup=setup_checkpoint_for_reference),
    "bad-reference": Case(["references=[salun]"], r"references=\['salun'\]: element 'salun' not a valid choice; "
                                                 r"use a list, each one of original, oracle"),
    "no-cuda": Case(["device=cuda"], r"CUDA is not available; use device=auto or device=cpu",
                    skip_if=torch.cuda.is_available()),
    "unlearning-diverges": Case(["unlearned=ga", "unlearned.args.lr=1e6", *TINY, *TINY_METHOD],
                                r"method ga diverged .*lower unlearned.args.lr and rerun \(nothing was saved\)",
                                entry="unlearn.run", builds=True),
    "attack-diverges": Case([*TINY_ALL, "attack.lr=1e6"], r"the loss became NaN or inf before step 2; lower attack.lr",
                            builds=True, fails_at=2),
    "unwritable-results": Case([], r"Not a directory: .*afile/results.*; check that path, or set paths.results",
                               setup=setup_unwritable_results),
    "unwritable-artifacts": Case([*TINY_ALL], r"set paths.artifacts to a writable folder",
                                 setup=setup_unwritable_artifacts),
    "malformed-records": Case([], r"records.jsonl:2 is not a record line .*fix or delete that line",
                              entry="evaluation.report", setup=setup_malformed_records),
    # start-up checks of single settings (unlearn/settings.py): one line naming the key, the value and the range
    "bool-overwrite-no": Case(["overwrite=no"], r"overwrite='no': not true or false; use true or false"),
    "bool-exclude-forget-no": Case(["exclude_forget=no"], r"exclude_forget='no': not true or false",
                                   entry="unlearn.pretrain"),
    "bool-fast-yes": Case(["fast.cpu=yes"], r"fast.cpu='yes': not true or false"),
    "nan-k": Case(["attack.k=nan"], r"attack.k=nan: not an integer; use an integer in \[1, 1000000\]"),
    "inf-samples": Case(["eval.n=inf"], r"eval.n=inf: not an integer"),
    "nan-sampler-steps": Case(["sampler.steps=nan"], r"sampler.steps=nan: not an integer; use an integer in "
                              r"\[1, 1000\]"),
    "too-many-sampler-steps": Case(["sampler.steps=5000"], r"sampler.steps=5000: out of range; use an integer in "
                                   r"\[1, 1000\]"),
    "unknown-device": Case(["device=tpu"], r"device='tpu': not valid; use auto, cpu, cuda or cuda:N"),
    "negative-seed": Case(["seed=-1"], r"seed=-1: out of range; use an integer in \[0, 4294967295\]"),
    "huge-seed": Case(["seed=99999999999"], r"seed=99999999999: out of range"),
    "zero-threads": Case(["threads=0"], r"threads=0: out of range; use null or an integer in \[1, 1024\]"),
    "empty-results-path": Case(["paths.results=''"], r"paths.results='': not valid; use a folder path"),
    "empty-artifacts-path": Case(["paths.artifacts=''"], r"paths.artifacts='': not valid; use a folder path"),
    "zero-train-batch": Case(["model.train.batch_size=0"], r"model.train.batch_size=0: out of range",
                             entry="unlearn.pretrain"),
    "negative-train-steps": Case(["model.train.steps=-5"], r"model.train.steps=-5: out of range",
                                 entry="unlearn.pretrain"),
    "negative-unlearn-steps": Case(["unlearned.args.steps=-5"], r"unlearned.args.steps=-5: out of range",
                                   entry="unlearn.run"),
    "zero-unlearn-lr": Case(["unlearned.args.lr=0"], r"unlearned.args.lr=0: out of range; use a finite number in "
                            r"\(0, 1e\+06\]", entry="unlearn.run"),
    "negative-attack-lr": Case(["attack.lr=-1"], r"attack.lr=-1: out of range"),
    "zero-judge-epochs": Case(["judge.recipe.epochs=0"], r"judge.recipe.epochs=0: out of range"),
    "test-fraction-out-of-range": Case(["data.test_fraction=1.5"], r"data.test_fraction=1.5: out of range; use a "
                                       r"finite number in \(0, 1\)"),
    "zero-max-images": Case(["data.max_images=0"], r"data.max_images=0: out of range; use null or an integer"),
    "nan-in-budgets": Case(["attack.budgets=[0,nan]"], r"attack.budgets=\[0, nan\]: element nan not an integer"),
    "mia-t-out-of-range": Case(["attack.t=[2000]"], r"attack.t=\[2000\]: element 2000 out of range; use a non-empty "
                               r"list, each an integer in \[0, 999\]", entry="attacks.mia"),
    "fpr-out-of-range": Case(["attack.fprs=[1.5]"], r"attack.fprs=\[1.5\]: element 1.5 out of range",
                             entry="attacks.mia"),
    "secmi-grid": Case(["attack.secmi_k=30"], r"attack.secmi_t=100, attack.secmi_k=30: secmi_t must be a multiple",
                       entry="attacks.mia"),
    "zero-sampler-batch": Case(["sampler.batch_size=0"], r"sampler.batch_size=0: out of range"),
    "zero-class-samples": Case(["eval.n_per_class=0"], r"eval.n_per_class=0: out of range",
                               entry="evaluation.classes"),
    "negative-eta": Case(["sampler.eta=-1"], r"sampler.eta=-1: out of range; use a finite number in \[0, 10\]"),
    "text-split-seed": Case(["data.split_seed=abc"], r"data.split_seed='abc': not an integer"),
    "list-for-number": Case(["eval.n=[1,2]"], r"eval.n=\[1, 2\]: not an integer"),
    "unknown-added-key": Case(["+foo=1"], r"foo is not a setting of this command; remove it"),
    "bad-finetune-data": Case(["attack.data=pool"], r"attack.data='pool': not a valid choice; use one of retain, "
                              r"neighbour, own", entry="attacks.finetune"),
    "bad-embedding-init": Case(["attack.init=zero"], r"attack.init='zero': not a valid choice",
                               entry="attacks.embedding"),
    "zero-mask-density": Case(["unlearned=salun", "unlearned.args.mask_density=0"],
                              r"unlearned.args.mask_density=0: out of range; use null or a finite number in \(0, 1\]",
                              entry="unlearn.run"),
    # settings that must agree with each other
    "groups-do-not-divide": Case(["model.arch.norm_num_groups=3"], r"norm_num_groups=3 must divide every channel"),
    "levels-mismatch": Case(["model.arch.block_out_channels=[8,16,32]"], r"model.arch has 3 block_out_channels, 2 "
                            r"down_block_types and 2 up_block_types"),
    "attention-channels": Case(["model.arch.block_out_channels=[4,4]", "model.arch.norm_num_groups=4",
                                "model.arch.add_attention=true"],
                               r"model.arch: a level with attention needs a multiple of 8 channels"),
    "unset-mandatory": Case(["eval.n=???"], r"^error: eval.n must be given$"),
    "path-like-name": Case(["unlearned.name=../x"], r"unlearned.name='../x': not valid; use a name of letters"),
    # damaged files
    "binary-records": Case([], r"records.jsonl is not a text file of records .*move it away or delete it",
                           setup=setup_binary_records),
    "record-non-text-key": Case([], r"records.jsonl:1 is not a record line \(not a record: no text key\)",
                                setup=setup_record_non_text_key),
    "duplicate-record-keys": Case([], r"records.jsonl:3 repeats the key of line 1; delete one of the two lines",
                                  setup=setup_duplicate_keys),
    "future-record-schema": Case([], r"records.jsonl:1 has record schema 99; this toolkit reads 1..4",
                                 setup=setup_future_schema),
    "truncated-judge-cache": Case([], r"judge checkpoint .* is missing or corrupt \(SafetensorError\); delete the "
                                  r"folder and rerun to rebuild", setup=setup_truncated_judge),
    "empty-mnist": Case([], r"the MNIST files under .* hold no images; re-copy them", setup=setup_empty_mnist),
    "mnist-label-255": Case([], r"MNIST labels must be in 0..9, found 0..255", setup=setup_mnist_label_255),
    "inception-code-pickle": Case([], r"eval.inception_weights=.*inception.pth is refused: "
                                  r"torch.load\(weights_only=True\) rejects it \(it names posix.system, which a state "
                                  r"dict never does\)",
                                  setup=setup_inception_code),
    "inception-not-state-dict": Case([], r"inception.pth holds list, not a state dict of tensors",
                                     setup=setup_inception_not_state_dict),
    "inception-missing": Case(["eval.inception_weights=/nonexistent/pt_inception.pth"],
                              r"eval.inception_weights=/nonexistent/pt_inception.pth is not a file"),
    # the commands that are not Hydra apps
    "report-unknown-argument": Case(["--bogus"], r"unrecognized arguments: --bogus; see python -m evaluation.report "
                                    r"--help", entry="evaluation.report"),
    "table-non-finite-w": Case(["--w", "nan"], r"argument --w: invalid finite value: 'nan'; see python -m "
                               r"evaluation.unlearning_table --help", entry="evaluation.unlearning_table"),
    "os-error-in-run": Case([], r"^error: Is a directory: .*records.jsonl; check that path, or set paths.results",
                            setup=setup_os_error_in_run),
}
# The single-setting rules (unlearn/settings.py) share one code path: the fast tier runs one case per kind of rule
# (integer, number, boolean, choice, text, list, unknown key) among the older cases and these; the rest run slow.
SLOW_RULE_CASES = {
    "bool-exclude-forget-no", "bool-fast-yes", "inf-samples", "nan-sampler-steps", "too-many-sampler-steps",
    "negative-seed", "huge-seed", "zero-threads", "empty-artifacts-path", "zero-train-batch", "negative-train-steps",
    "negative-unlearn-steps", "zero-unlearn-lr", "negative-attack-lr", "zero-judge-epochs",
    "test-fraction-out-of-range", "zero-max-images", "fpr-out-of-range", "zero-sampler-batch",
    "zero-class-samples", "negative-eta", "text-split-seed", "bad-embedding-init", "zero-mask-density",
    "unsorted-budgets", "scalar-budgets", "bad-sampler-variance",
}
# Entries tested by their own functions below (signals, a full disk) or in tests/test_sweeps.py (SIGKILL).
OTHER_TESTS = {"disk-full-record": "test_disk_full_during_record_write",
               "disk-full-artifact": "test_disk_full_during_artifact_write",
               "sigint": "test_sigint_mid_run",
               "sigterm": "test_sigterm_during_a_build",
               "overwrite-killed-temp": "test_a_killed_overwrite_leaves_no_temporary_file_behind",
               "sigkill": "tests/test_sweeps.py::test_sigkill_then_rerun_loses_and_duplicates_nothing",
               "bad-progress-switch":
                   "tests/test_progress.py::test_a_bad_switch_is_one_line_and_exit_2_before_anything_runs"}


def _env(root: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "UNLEARN_ARTIFACTS": str(root / "artifacts"),
            "UNLEARN_RESULTS": str(root / "results")}


def _run(entry: str, args: list[str], cwd: Path, env_root: Path, preexec=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", entry, *args], cwd=cwd, env=_env(env_root), capture_output=True,
                          text=True, timeout=600, preexec_fn=preexec)


# cases also run as a real subprocess: a Hydra composition error, a UserError from a check, a hostile pickle
SUBPROCESS = ("unknown-method", "attack-diverges", "cifar-code-in-pickle", "pickle-checkpoint-code",
              "malformed-records")


def _assert_clean(root: Path) -> None:
    """No half-done output: temporary files/folders, artifact folders without provenance, torn record lines."""
    assert not [p for p in root.rglob("*") if ".tmp" in p.name], list(root.rglob("*.tmp*"))
    for kind in (root / "artifacts").glob("*"):
        for art in kind.iterdir():
            if art.is_dir():
                assert (art / "provenance.json").is_file(), f"half-written artifact {art}"
    for rec in (p for p in root.rglob("records.jsonl") if p.is_file()):
        text = rec.read_bytes()
        assert not text or text.endswith(b"\n"), f"torn last line in {rec}"


def _one_error_line(res: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr[-3000:]
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Path:
    """Artifacts shared by the cases that build tiny models."""
    return tmp_path_factory.mktemp("bad_inputs_shared")


@pytest.mark.parametrize("name, process", [pytest.param(n, False, marks=[pytest.mark.slow] * (CASES[n].slow or
                                                                                              n in SLOW_RULE_CASES))
                                           for n in sorted(CASES)]
                         + [pytest.param(n, True, marks=pytest.mark.slow) for n in SUBPROCESS])
def test_bad_input_gets_one_line_and_nonzero_exit(name, process, tmp_path, shared, monkeypatch):
    case = CASES[name]
    if case.skip_if:
        pytest.skip("CUDA is available here")
    args = [*case.args, *(case.setup(tmp_path) if case.setup else [])]
    env_root = shared if case.builds else tmp_path
    records = env_root / "results" / "records.jsonl"
    before, top = (records.read_bytes() if records.is_file() else None), sorted(os.listdir("/"))
    res = (_run(case.entry, args, tmp_path, env_root) if process
           else run_cli(case.entry, args, tmp_path, monkeypatch, env_root))
    # nothing recorded by the failed run (the shared root holds other cases' records), except, for an attack that
    # diverges, the points before the divergence (budget 0: the untouched model, a valid measurement)
    if case.fails_at:
        new = read_records(records)[0 if before is None else before.count(b"\n"):]
        assert all(r["budget"]["steps"] < case.fails_at for r in new), new
    else:
        assert (records.read_bytes() if records.is_file() else None) == before
    assert sorted(os.listdir("/")) == top  # no run folder at the filesystem root (paths.results='')
    assert res.returncode == 2, (res.returncode, res.stderr[-3000:])
    line = _one_error_line(res)
    assert re.search(case.expect, line), line
    assert not (tmp_path / "pwned.txt").exists()  # nothing in a data file was executed
    _assert_clean(tmp_path)
    _assert_clean(env_root)


def test_every_catalogue_row_has_a_test():
    readme = (ROOT / "README.md").read_text()
    block = readme[readme.index("<!-- catalogue -->"):readme.index("<!-- /catalogue -->")]
    rows = re.findall(r"^\| `([a-z0-9-]+)` \|", block, re.M)
    assert len(rows) >= 80
    assert set(rows) == set(CASES) | set(OTHER_TESTS), set(rows) ^ (set(CASES) | set(OTHER_TESTS))


# ---------------------------------------------------------------- signals and a full disk


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A root with the tiny models built and the main job's points recorded once."""
    root = tmp_path_factory.mktemp("bad_inputs_built")
    res = _run("attacks.relearn", TINY_ALL, root, root)
    assert res.returncode == 0, res.stderr[-3000:]
    return root


def _limit_file_size(n_bytes: int):
    def set_limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (n_bytes, n_bytes))  # writes past n bytes fail (EFBIG)

    return set_limit


@pytest.mark.slow
def test_disk_full_during_record_write(built, tmp_path):
    records = built / "results" / "records.jsonl"
    before = records.read_bytes()
    assert len(before) > 5000  # larger than every file the job writes before its first record
    # a new point (another attack lr), written when the records file may grow by only 100 bytes
    res = _run("attacks.relearn", [*TINY_ALL, "attack.lr=2e-4"], tmp_path, built,
               preexec=_limit_file_size(len(before) + 100))
    assert res.returncode == 2, res.stderr[-3000:]
    assert re.search(r"cannot write .*records.jsonl: File too large \(disk or quota full\); free space",
                     _one_error_line(res))
    assert records.read_bytes() == before  # the partial line was rolled back
    _assert_clean(built)
    res = _run("attacks.relearn", [*TINY_ALL, "attack.lr=2e-4"], tmp_path, built)  # space again: it resumes
    assert res.returncode == 0, res.stderr[-3000:]
    assert records.read_bytes().startswith(before) and len(read_records(records)) == before.count(b"\n") + 6


@pytest.mark.slow
def test_disk_full_during_artifact_write(tmp_path):
    # 20 kB is less than the judge's weights: its artifact cannot be written
    res = _run("attacks.relearn", TINY_ALL, tmp_path, tmp_path, preexec=_limit_file_size(20_000))
    assert res.returncode == 2, res.stderr[-3000:]
    assert re.search(r"cannot write .*artifacts/judge/\w+: File too large \(disk or quota full\); free space or set "
                     r"paths.artifacts", _one_error_line(res))
    assert not [p for p in (tmp_path / "artifacts" / "judge").iterdir() if p.is_dir()]  # no artifact, no temp folder
    _assert_clean(tmp_path)


def _signal_when(proc: subprocess.Popen, ready: Callable[[], bool], sig: int, settle: float = 0.0,
                 poll: float = 0.02) -> str:
    """Send `sig` to `proc` once `ready()` (then `settle` seconds more); its stderr. The child never outlives this."""
    try:
        t0 = time.monotonic()
        while not ready() and time.monotonic() - t0 < 120:
            time.sleep(poll)
        time.sleep(settle)
        assert proc.poll() is None, "the run ended before the signal: the test proves nothing"
        proc.send_signal(sig)
        return proc.communicate(timeout=60)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_sigint_mid_run(built, tmp_path):
    records = built / "results" / "records.jsonl"
    n0 = len(read_records(records))
    # a runner started in the background ignores SIGINT and its children inherit that: restore the default so
    # the child's Python installs its KeyboardInterrupt handler; never leave the child behind
    proc = subprocess.Popen([sys.executable, "-m", "attacks.relearn", *TINY_ALL, "attack.budgets=[0,2,3000]",
                             "attack.lr=3e-4"], cwd=tmp_path, env=_env(built), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    # inside the 3000-step attack
    err = _signal_when(proc, lambda: len(read_records(records)) >= n0 + 2, signal.SIGINT, settle=0.3, poll=0.05)
    assert proc.returncode == 130, err[-3000:]
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines == ["error: interrupted; the points already recorded are kept: rerun the same command to resume"]
    assert len(read_records(records)) == n0 + 2  # budgets 0 and 2 of the unlearned model kept
    _assert_clean(built)


@pytest.mark.slow
def test_sigterm_during_a_build(tmp_path):
    """SIGTERM (timeout, SLURM, kill) while an artifact is being built: exit 143, one line, the build's temporary
    folder removed; the rerun builds it and finishes."""
    proc = subprocess.Popen([sys.executable, "-m", "attacks.relearn", *TINY_ALL], cwd=tmp_path, env=_env(tmp_path),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    err = _signal_when(proc, lambda: bool(list((tmp_path / "artifacts").glob("*/.*.tmp-*"))), signal.SIGTERM)
    assert proc.returncode == 143, err[-3000:]
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines == ["error: terminated (SIGTERM); the points already recorded are kept: rerun the same command to "
                     "resume"], err[-3000:]
    _assert_clean(tmp_path)
    res = _run("attacks.relearn", TINY_ALL, tmp_path, tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert len(read_records(tmp_path / "results" / "records.jsonl")) == 6


def test_a_killed_overwrite_leaves_no_temporary_file_behind(tmp_path, monkeypatch):
    """`overwrite=true` rewrites records.jsonl through a temporary file; a writer SIGKILLed before its rename leaves
    it behind. The next run (any run that reads the records) removes it: its writer's process is gone."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    results = tmp_path / "results"
    results.mkdir()
    (results / "records.jsonl").write_text("")
    stale = results / f".records.jsonl.tmp-{socket.gethostname()}-{dead.pid}-abcdef"
    live = results / f".records.jsonl.tmp-{socket.gethostname()}-{os.getpid()}-abcdef"
    stale.write_text('{"key": "half a rewrite"')
    live.write_text("")  # a live writer's (this process): never touched
    res = run_cli("attacks.relearn", ["attack.k=1000"], tmp_path, monkeypatch, tmp_path)  # fails after the check
    assert res.returncode == 2 and _one_error_line(res).startswith("error: attack.k=1000")
    assert not stale.exists() and live.exists()
    other_host = results / f".records.jsonl.tmp-{socket.gethostname()}-3-{dead.pid}-abcdef"  # host "<ours>-3"
    other_host.write_text("")
    remove_dead_temporaries(results / "records.jsonl")
    assert other_host.exists()
