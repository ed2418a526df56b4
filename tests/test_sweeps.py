"""Sweeps on real launchers (joblib, submitit_local), shared artifacts built once under concurrency, and
resume after SIGKILL at three random points: the final records equal an uninterrupted run's, 0 lost, 0 duplicated.

The sweep is configs/experiment/sweep_smoke.yaml: 12 jobs (2 methods x 2 classes x 3 seeds) on tiny models,
one CPU thread per job (so every launcher computes bit-identical points).
"""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evaluation.records import content, read_records

pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason="needs the [cluster] extra")
pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="needs the [cluster] extra")

pytestmark = pytest.mark.slow  # every test here runs real sweeps or trains a real model


ROOT = Path(__file__).resolve().parent.parent
SWEEP = ["attacks.relearn", "--multirun", "+experiment=sweep_smoke"]
JOBLIB = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
N_JOBS, N_RECORDS = 12, 48  # 12 x 2 budgets on the unlearned model + the references' 2 x 2 classes x 3 seeds x 2


def _env(root: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "UNLEARN_ARTIFACTS": str(root / "artifacts"),
            "UNLEARN_RESULTS": str(root / "results")}


def _sweep(root: Path, launcher: list[str]) -> subprocess.CompletedProcess:
    root.mkdir(parents=True, exist_ok=True)
    return subprocess.run([sys.executable, "-m", *SWEEP, *launcher], cwd=root, env=_env(root), capture_output=True,
                          text=True, timeout=900)


def _contents(root: Path) -> list[str]:
    return sorted(json.dumps(content(r), sort_keys=True) for r in read_records(root / "results" / "records.jsonl"))


def _litter(root: Path) -> list[Path]:
    """Anything a killed writer could leave half-done: temporary artifact folders, temporary files."""
    return [p for p in root.rglob("*") if ".tmp" in p.name and ".submitit" not in p.parts]


def _built(root: Path) -> collections.Counter:
    """How many times each artifact was built, from the jobs' logs (one 'building <kind> <key>' line per build)."""
    count = collections.Counter()
    for log in (root / "results" / "multirun").rglob("relearn.log"):
        for line in log.read_text().splitlines():
            if "building" in line:
                count[tuple(line.split()[-2:])] += 1
    return count


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, list[str]]:
    """The uninterrupted sweep on joblib with 2 workers."""
    root = tmp_path_factory.mktemp("sweep_ref")
    res = _sweep(root, JOBLIB)
    assert res.returncode == 0, res.stderr[-3000:]
    return root, _contents(root)


def test_joblib_sweep_of_12_jobs_builds_each_artifact_once(reference):
    root, ref = reference
    assert len(ref) == N_RECORDS and len(set(ref)) == N_RECORDS
    jobs = [p for p in (root / "results" / "multirun" / "relearn" / "digits").iterdir() if p.is_dir()]
    assert len(jobs) == N_JOBS
    built = _built(root)
    kinds = collections.Counter(kind for kind, _ in built)
    # the judge, the base model and the 2 oracles are shared by the jobs; each job has its own unlearned model
    assert kinds == {"judge": 1, "base": 1, "oracle": 2, "unlearned": 12}, built
    assert set(built.values()) == {1}, built  # never twice
    assert not _litter(root)
    recs = read_records(root / "results" / "records.jsonl")
    assert {r["study"] for r in recs} == {"sweep_smoke"} and len({r["key"] for r in recs}) == N_RECORDS


def _subset(records: list[dict]) -> list[str]:
    """The records of the jobs unlearned=safemax data.forget_class=0 seed=0,1 (their references included)."""
    return sorted(json.dumps(content(r), sort_keys=True) for r in records
                  if r["forget_class"] == 0 and r["seed"] in (0, 1) and (r["role"] != "unlearned"
                                                                          or r["method"] == "safemax"))


def test_submitit_local_sweep_gives_the_same_records(reference, tmp_path):
    """Two of the sweep's jobs on submitit's local launcher (each job its own process): the same records, bit for
    bit, as those jobs' records in the joblib sweep."""
    root, _ = reference
    res = _sweep(tmp_path, ["hydra/launcher=submitit_local", "unlearned=safemax", "data.forget_class=0", "seed=0,1"])
    assert res.returncode == 0, res.stderr[-3000:]
    want = _subset(read_records(root / "results" / "records.jsonl"))
    assert len(want) == 2 * 2 + 2 * 2 * 2  # 2 jobs x 2 budgets, and 2 references x 2 seeds x 2 budgets
    assert _contents(tmp_path) == want  # another launcher, the same computation, bit for bit
    assert set(_built(tmp_path).values()) == {1}


def _kill_when(proc, root: Path, threshold: int, delay: float) -> int:
    """SIGKILL the whole sweep (launcher and workers) once `threshold` records exist (0: once an artifact is being
    built), after `delay` seconds more; returns the number of records it left."""
    records = root / "results" / "records.jsonl"
    t0 = time.monotonic()
    while proc.poll() is None and time.monotonic() - t0 < 300:
        if threshold == 0:
            if list((root / "artifacts").glob("*/.*.tmp-*")):
                break
        elif (records.read_text().count("\n") if records.exists() else 0) >= threshold:
            break
        time.sleep(0.02)
    time.sleep(delay)
    assert proc.poll() is None, "the sweep finished before the kill: the test proves nothing"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return len(read_records(records))


def test_sigkill_then_rerun_loses_and_duplicates_nothing(reference, tmp_path):
    """SIGKILL the whole sweep at three random points (while an artifact is built, among the first records, among
    the late ones), rerunning the same command after each; the last rerun completes it."""
    _, ref = reference
    rng = random.Random()
    seed = rng.randrange(10**6)
    rng.seed(seed)
    records = tmp_path / "results" / "records.jsonl"
    tmp_path.mkdir(exist_ok=True)
    kills = []
    for threshold in (0, rng.randint(2, 16), rng.randint(24, 40)):
        proc = subprocess.Popen([sys.executable, "-m", *SWEEP, *JOBLIB], cwd=tmp_path, env=_env(tmp_path),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        target = max(threshold, len(read_records(records)) + 1) if threshold else 0  # always past this start
        try:
            kills.append(_kill_when(proc, tmp_path, target, rng.uniform(0.0, 0.3)))
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        assert kills[-1] < N_RECORDS, f"seed {seed}: {kills}"
        got = read_records(records)
        assert len({r["key"] for r in got}) == len(got), f"seed {seed}: a duplicated record after a kill"
    res = _sweep(tmp_path, JOBLIB)
    assert res.returncode == 0, f"seed {seed}: {res.stderr[-3000:]}"
    got = _contents(tmp_path)
    lost = set(ref) - set(got)
    dup = len(got) - len(set(got))
    assert not lost and not dup, f"seed {seed}, killed at {kills} records: {len(lost)} lost, {dup} duplicated"
    assert got == ref
    assert len(records.read_text().splitlines()) == N_RECORDS  # no torn or extra line either
    assert not _litter(tmp_path), f"seed {seed}: {_litter(tmp_path)}"
    print(f"seed {seed}, killed at {kills} of {N_RECORDS} records, resumed to {N_RECORDS}")
