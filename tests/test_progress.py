"""Issue 16 item 5: progress bars behind one switch (UNLEARN_PROGRESS), a concise log line per point, and the MIA
ROC corners a record keeps."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from attacks import mia
from evaluation.harness import point_line
from evaluation.plots import plot_roc
from tests.conftest import TINY, TINY_ARCH
from unlearn import progress
from unlearn.diffusion import Schedule, ddim_sample
from unlearn.model import build_unet

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("value, shown", [("1", True), ("0", False)])
def test_the_switch_turns_the_sampling_bar_on_and_off(value, shown, monkeypatch, capsys):
    monkeypatch.setenv(progress.SWITCH, value)
    torch.manual_seed(0)
    x = ddim_sample(build_unet(TINY_ARCH, (1, 8, 8), 10), Schedule.linear(1000), torch.zeros(3, dtype=torch.long),
                    (1, 8, 8), 10, 1.0, num_steps=5, generator=torch.Generator().manual_seed(0))
    assert x.shape == (3, 1, 8, 8)
    err = capsys.readouterr().err
    assert ("sample 3" in err) is shown, err


def test_a_bad_switch_is_one_line_and_exit_2_before_anything_runs(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), progress.SWITCH: "yes", "UNLEARN_RESULTS": str(tmp_path / "r"),
           "UNLEARN_ARTIFACTS": str(tmp_path / "a")}
    got = subprocess.run([sys.executable, "-m", "attacks.relearn", *TINY], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert got.returncode == 2, got.stderr[-2000:]
    lines = [ln for ln in got.stderr.splitlines() if ln.strip()]
    assert lines == ["error: UNLEARN_PROGRESS='yes': use 1 (progress bars on), 0 (off) or leave it unset (bars on a "
                     "terminal only)"]
    assert sorted(os.listdir(tmp_path)) == []  # no run folder, no artifact, no record


def test_one_concise_line_per_point():
    s = {"ra": 0.25, "ra_ci_low": 0.17, "ra_ci_high": 0.35}
    guard = {"ra_ondata": 0.2, "retained_ra": 0.96, "fid_cf": 12.345, "kid_cf": 0.01234, "fid_real_n": 110,
             "retained_n": 45, "fid_features": "judge:abc", "kid_subset": 100}
    line = point_line("unlearned", "full k=10", 30, s, guard)
    assert line == ("unlearned full k=10 steps=30: RA 0.250 [0.170, 0.350], on-data 0.200, retained RA 0.960, "
                    "FID c_f 12.3, KID c_f 0.0123")
    assert "{" not in line and point_line("oracle", "fp16", 0, s, {}) == "oracle fp16 steps=0: RA 0.250 [0.170, 0.350]"


def test_the_roc_corners_a_record_keeps(tmp_path):
    rng = np.random.default_rng(0)
    members, nonmembers = rng.normal(1.0, 1.0, 400), rng.normal(0.0, 1.0, 300)
    out = mia.evaluate(members, nonmembers)
    fpr, tpr = np.array(out["roc_fpr"]), np.array(out["roc_tpr"])
    assert len(fpr) <= mia.ROC_POINTS and (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
    assert (np.diff(fpr) >= 0).all() and (np.diff(tpr) >= 0).all()
    assert abs(np.trapezoid(tpr, fpr) - out["auc"]) < 0.02  # the thinned curve keeps the area
    rec = {"kind": "mia", "role": "unlearned", "method": "safemax", "score": "loss t=100 cond", "dataset": "digits",
           "forget_class": 3, "seed": 0, **out}
    assert plot_roc([rec, {**rec, "role": "oracle"}], tmp_path / "roc.png")
    assert (tmp_path / "roc.png").stat().st_size > 10_000
    assert not plot_roc([{k: v for k, v in rec.items() if not k.startswith("roc")}], tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()


@pytest.mark.parametrize("value, shown", [("1", True), ("0", False)])
def test_the_switch_turns_the_mia_fisher_and_fid_bars_on_and_off(value, shown, monkeypatch, capsys):
    """The other long stages obey the same switch: MIA scoring and SA's Fisher draw tqdm bars; FID hands the switch
    to torch-fidelity's own progress (verbose) when the sets are large enough (1000+ images) to take a while."""
    from evaluation import fid
    from unlearn.sa import fisher_diagonal

    monkeypatch.setenv(progress.SWITCH, value)
    torch.manual_seed(0)
    model, schedule = build_unet(TINY_ARCH, (1, 8, 8), 10), Schedule.linear(1000)
    x = torch.zeros(2, 1, 8, 8)
    mia.mia_scores(model.eval(), schedule, x, 0, ts=(50,), draws=1)
    fisher_diagonal(model, x, torch.zeros(2, dtype=torch.long), schedule, torch.Generator().manual_seed(0))
    err = capsys.readouterr().err
    assert ("mia 2 images" in err) is shown and ("sa fisher" in err) is shown, err

    seen = []
    monkeypatch.setattr(fid.torch_fidelity, "calculate_metrics", lambda **kw: seen.append(kw["verbose"]) or {
        fid.FID: 1.0, fid.KID: 0.0, fid.KID_STD: 0.0})
    for n in (600, 10):  # 1200 images, then 20
        fid.distances(torch.zeros(n, 1, 8, 8), torch.zeros(n, 1, 8, 8), ROOT)
    assert seen == [shown, False]
