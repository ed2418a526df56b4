"""FID through torch-fidelity, offline: the judge's penultimate layer as the feature extractor.

The extractor is registered once per process under the name "judge" and loads the judge from the folder
passed as `feature_extractor_weights_path`. Standard Inception FID (2048-d pool features) runs when the
user gives the Inception weights file (`inception_weights=`), since torch-fidelity cannot fetch them offline.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import torch
import torch_fidelity
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

from evaluation.judge import Judge
from unlearn.errors import UserError
from unlearn.model import pickled_state_dict
from unlearn.progress import shown

FID = "frechet_inception_distance"  # torch-fidelity's result keys (whatever the extractor)
KID, KID_STD = "kernel_inception_distance_mean", "kernel_inception_distance_std"
KID_SUBSET = 1000  # KID subset size, at most: each set's size when smaller


class JudgeFeatures(FeatureExtractorBase):
    """uint8 [B, C, H, W] -> the judge's 128-d penultimate features (the judge maps [-1, 1] images)."""

    def __init__(self, name, features_list, **kwargs):
        super().__init__(name, features_list)
        self.judge = Judge.load(Path(kwargs["feature_extractor_weights_path"])).net

    @staticmethod
    def get_provided_features_list():
        return ("judge",)

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return "judge"

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return None

    def forward(self, x):
        return (self.judge.features(x.float() / 127.5 - 1.0),)


class _Images(torch.utils.data.Dataset):
    """Images in [-1, 1] as uint8; channels=3: grey images repeated to RGB (Inception's input)."""

    def __init__(self, images: torch.Tensor, channels: int | None = None):
        u8 = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        self.x = u8.expand(-1, channels, -1, -1) if channels and channels != u8.shape[1] else u8

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i]


def inception_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The Inception weights (eval.inception_weights) as tensors, loaded with weights_only=True: a file that
    would run code when unpickled, or that is not a state dict, is refused with one line."""
    fix = "give the pt_inception-2015-12-05 weights file (a state dict), or null for judge-feature FID"
    if not Path(path).is_file():
        raise UserError(f"eval.inception_weights={path} is not a file; {fix}")
    return pickled_state_dict(Path(path), f"eval.inception_weights={path}", fix, fix)


@functools.lru_cache(maxsize=2)
def _safe_copy(path: str) -> Path:
    state = inception_state(path)
    tmp = tempfile.mkdtemp(prefix="inception-")
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)  # removed when the process ends
    torch.save(state, Path(tmp) / "inception.pth")
    return Path(tmp) / "inception.pth"


def safe_inception(path: str | Path) -> Path:
    """The Inception weights to hand to torch-fidelity, which unpickles its file with weights_only=False: a copy
    this process wrote from tensors it loaded with weights_only=True (checked and written once per process; a
    file that is not a plain state dict is refused with one line)."""
    return _safe_copy(str(path))


def distances(generated: torch.Tensor, real: torch.Tensor, judge_folder: Path | None = None,
              inception_weights: str | None = None, cuda: bool = False) -> dict[str, float]:
    """FID and KID between two image sets in [-1, 1], from one feature pass: judge features by default, Inception
    if weights are given. KID (the unbiased MMD^2 of a cubic polynomial kernel, Binkowski et al. 2018) is the mean
    over torch-fidelity's 100 subsets of min(1000, |generated|, |real|) images: unbiased at small N, where FID is
    biased upward, so the two read together. Returns {"fid", "kid", "kid_std", "kid_subset"}."""
    if min(len(generated), len(real)) < 2:
        raise UserError("FID needs at least 2 images per set")
    subset = min(KID_SUBSET, len(generated), len(real))
    common = dict(fid=True, kid=True, kid_subset_size=subset, cuda=cuda, save_cpu_ram=True, cache=False,
                  verbose=shown() and len(generated) + len(real) >= 1000, batch_size=500)
    if inception_weights:
        out = torch_fidelity.calculate_metrics(input1=_Images(generated, 3), input2=_Images(real, 3),
                                               feature_extractor="inception-v3-compat",
                                               feature_extractor_weights_path=str(safe_inception(inception_weights)),
                                               **common)
    else:
        if "judge" not in FEATURE_EXTRACTORS_REGISTRY:
            register_feature_extractor("judge", JudgeFeatures)
        out = torch_fidelity.calculate_metrics(input1=_Images(generated), input2=_Images(real),
                                               feature_extractor="judge", feature_layer_fid="judge",
                                               feature_layer_kid="judge",
                                               feature_extractor_weights_path=str(judge_folder), **common)
    return {"fid": float(out[FID]), "kid": float(out[KID]), "kid_std": float(out[KID_STD]), "kid_subset": subset}


def fid(generated: torch.Tensor, real: torch.Tensor, judge_folder: Path | None = None,
        inception_weights: str | None = None, cuda: bool = False) -> float:
    """FID between two image sets in [-1, 1] (see `distances`, which gives KID beside it)."""
    return distances(generated, real, judge_folder, inception_weights, cuda)["fid"]
