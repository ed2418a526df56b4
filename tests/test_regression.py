"""Science regression on the real default size (digits, model=small): the thresholds of the vertical slice.

Builds the judge, the base model and the SAFEMax checkpoint from scratch (about 2 minutes on 2 CPU cores)
and scores 100 samples per class. Tolerances: at n = 100 per class the binomial standard deviation is
<= 2.2 pp for accuracies >= 0.95, and the retained mean pools 900 samples (<= 0.8 pp); the slack below
is about two standard deviations, so a pass is not luck and a real regression of the model fails.
Measured on the reference machine: judge 0.981, original min class 1.00, SAFEMax forget RA 0.03,
retained 0.999 (original 1.000).
"""

import pytest

from evaluation.classes import run as classes_run
from tests.conftest import compose_cfg

pytestmark = pytest.mark.slow  # every test here runs real sweeps or trains a real model


@pytest.fixture(scope="module")
def default_root(tmp_path_factory):
    return tmp_path_factory.mktemp("default")


def test_digits_original_and_safemax_thresholds(default_root):
    orig = classes_run(compose_cfg("classes", ["unlearned=original"], default_root))
    assert orig["judge_test_accuracy"] >= 0.95
    assert orig["min_class_ra"] >= 0.90 - 0.05          # target: >= 0.90 on every class
    assert orig["retained_mean_ra"] >= 0.95
    sm = classes_run(compose_cfg("classes", ["unlearned=safemax"], default_root))
    assert sm["forget_ra"] <= 0.10 + 0.03                # target: RA <= 0.10 at budget 0
    assert sm["retained_mean_ra"] >= orig["retained_mean_ra"] - 0.05 - 0.02  # target: within 5 pp
    assert sm["unlearn"]["sample_gradients"] == 200 * (64 + 64)
