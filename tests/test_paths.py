"""Where runs write (unlearn/paths.py): paths.results from UNLEARN_RESULTS, and run / sweep folders that end in the
overrides that distinguish runs (Hydra's override_dirname less seed, paths and bookkeeping keys)."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from evaluation import export, gate, records, report, unlearning_table
from tests.conftest import CONFIGS
from tests.test_evaluation import _rec
from unlearn.paths import TAG_MAX, run_tag

ENTRIES = ["relearn", "finetune", "worst_case", "classes", "weights", "unlearn", "pretrain"]


def _dirs(name: str, overrides: list[str]) -> tuple[str, str, str]:
    """(run dir, sweep subdir, the override part) of an entry as Hydra resolves them."""
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIGS)):
        cfg = compose(config_name=name, overrides=overrides, return_hydra_config=True)
    return str(cfg.hydra.run.dir), str(cfg.hydra.sweep.subdir), run_tag(cfg.hydra.job.override_dirname)


def test_runs_differing_in_attack_lr_get_different_folders():
    lo, hi = _dirs("relearn", ["attack.lr=1e-4"]), _dirs("relearn", ["attack.lr=1e-3"])
    assert lo[0] != hi[0] and lo[1] != hi[1]
    assert lo[0].endswith("/relearn/digits/safemax_c0_s0/attack.lr=1e-4") and lo[2] == "attack.lr=1e-4"


@pytest.mark.parametrize("name", ENTRIES)
def test_every_entry_names_its_distinguishing_overrides(name):
    a, b = _dirs(name, ["sampler.steps=3"]), _dirs(name, ["sampler.steps=5"])
    assert a[0] != b[0] and a[1] != b[1] and a[0].endswith("/sampler.steps=3") and a[1].endswith("/sampler.steps=3")
    plain = _dirs(name, [])
    assert plain[2] == "" and plain[0].rstrip("/") == a[0].removesuffix("/sampler.steps=3")  # the folder as before


@pytest.mark.parametrize("name", ENTRIES)
def test_seed_paths_and_bookkeeping_keys_leave_the_override_part_alone(name, tmp_path):
    base = _dirs(name, ["sampler.steps=3"])
    other = _dirs(name, ["sampler.steps=3", "seed=7", f"paths.results={tmp_path}/r", f"paths.artifacts={tmp_path}/a",
                         "device=cpu", "threads=1", "overwrite=true", "data.forget_class=2"])
    assert other[2] == base[2] == "sampler.steps=3"
    assert other[0].startswith(f"{tmp_path}/r/") and other[0].endswith("/sampler.steps=3")


def test_results_root_comes_from_unlearn_results(tmp_path, monkeypatch):
    monkeypatch.setenv("UNLEARN_RESULTS", str(tmp_path / "env"))
    run_dir, _, _ = _dirs("relearn", [])
    assert run_dir.startswith(f"{tmp_path}/env/relearn/")
    monkeypatch.delenv("UNLEARN_RESULTS")
    assert _dirs("relearn", [])[0].startswith("results/relearn/")


def test_run_tag_is_one_safe_folder_name():
    assert run_tag("") == "" and run_tag("attack.lr=1e-3") == "attack.lr=1e-3"
    assert run_tag("unlearned.checkpoint=/a/../b") == "unlearned.checkpoint=_a_.._b"
    long = ",".join(f"attack.k{i}={i}" for i in range(40))
    tag = run_tag(long)
    assert len(tag) == TAG_MAX and tag.startswith("attack.k0=0,") and tag != run_tag(long + ",x=1")


def test_plain_commands_find_records_through_unlearn_results(tmp_path, monkeypatch, capsys):
    """A records file under a results root named only by UNLEARN_RESULTS is what the plain commands read: the
    unlearning table by default, the report, export and gate with --results, records export by default."""
    root = tmp_path / "elsewhere"
    root.mkdir()
    recs = [{**_rec("safemax", c, 0.1, 0.8), "key": f"k{c}", "n_per_class": 100, "judge_id": "j", "device": "cpu",
             "judge_test_accuracy": 0.98, "fid_features": "judge:j", "per_class_ra": {str(c): 0.1},
             "min_class_ra": 0.1} for c in range(2)]
    (root / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    monkeypatch.setenv("UNLEARN_RESULTS", str(root))
    monkeypatch.chdir(tmp_path)  # no results/ here: only the variable leads to the records
    assert records.results_dir() == root
    assert unlearning_table.main([]) == 0 and "safemax" in capsys.readouterr().out
    assert export.main(["--results", str(tmp_path / "t"), "--format", "csv"]) == 0  # a flag: no value
    assert len(pd.read_csv(tmp_path / "t" / "class_accuracy.csv")) == 2
    (tmp_path / "R.md").write_text("# R\n")
    assert report.main(["--results", "--report", str(tmp_path / "R.md")]) == 0
    assert f"from {root}" in capsys.readouterr().out and "safemax" in (tmp_path / "R.md").read_text()
    assert records.main(["export", "--to", str(tmp_path / "c.jsonl.gz")]) == 0
    assert len(records.read_all(tmp_path / "c.jsonl.gz")) == 2
    shutil.copy(records.COMMITTED / "worst_case_digits.jsonl.gz", root)  # a grid's records, for the gate
    read = ["--results", "--study", "worst_case_digits", "--method", "sa", "--max-er", "0.1", "--at", "0"]
    assert gate.main(read) == 1 and "gate FAIL: sa at 0 steps" in capsys.readouterr().out
    monkeypatch.setenv("UNLEARN_RESULTS", "")
    capsys.readouterr()
    assert unlearning_table.main([]) == 2
    assert capsys.readouterr().err.strip() == ("error: UNLEARN_RESULTS is set but empty; unset it or set it to the "
                                               "results folder")
    monkeypatch.setenv("UNLEARN_RESULTS", str(tmp_path / "none"))
    assert unlearning_table.main([]) == 2 and "does not exist" in capsys.readouterr().err
