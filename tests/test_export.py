"""python -m evaluation.export: the flat records and the curve tables as CSV or parquet, written atomically;
bad input is one line, exit 2, and nothing written."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from evaluation import export
from evaluation.export import main, pick_format, plain
from tests.test_evaluation import _rec as class_rec
from tests.test_summary import _curve, _hand
from unlearn.errors import UserError


def _records(path):
    recs = _hand(fc=0) + _hand(fc=1) + _curve("oracle", [0.0, 0.1, 0.2], fc=0, setting="lora")  # no unlearned
    for i, r in enumerate(recs):
        r.update(study="s1" if r["setting"] != "lora" else "refs", dataset="digits", judge_id="j",
                 time=f"2026-01-01T00:00:{i:02d}", guard={"fid_cf": 10.0, "retained_ra": 0.95, "retained_n": 90})
    recs += [{**class_rec("safemax", c, 0.1, 0.8, {"lam": 1}), "key": f"c{c}"} for c in range(2)]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return recs


def test_export_writes_the_flat_records_and_the_curve_tables(tmp_path, capsys):
    recs = _records(tmp_path / "records.jsonl")
    out = tmp_path / "tables"
    assert main([str(out), "--records", str(tmp_path / "records.jsonl"), "--format", "csv"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["attack.csv", "class_accuracy.csv", "curves.csv"]  # no temps
    attack = pd.read_csv(out / "attack.csv")
    assert len(attack) == sum(r["kind"] == "attack" for r in recs) and "budget_steps" in attack
    curves = pd.read_csv(out / "curves.csv")
    assert list(curves.columns[:4]) == ["study", "dataset", "judge_id", "method"]
    assert set(curves["study"]) == {"s1"} and len(curves) == 6  # 2 units x 3 budgets of the unlearned model
    row = curves[(curves["forget_class"] == 0) & (curves["steps"] == 10)].iloc[0]
    assert row["nr"] == pytest.approx((0.3 - 0.1) / (0.9 - 0.1)) and row["er"] == pytest.approx(0.3 - 0.1)
    classes = pd.read_csv(out / "class_accuracy.csv")
    assert classes["per_class_entropy_0"].notna().any() and list(classes["method_args_lam"]) == [1, 1]  # a.b -> a_b
    printed = capsys.readouterr().out
    assert "curves: no table for study=refs" in printed and "3 tables from" in printed


def test_format_auto_is_parquet_only_with_pyarrow(monkeypatch):
    monkeypatch.setattr(export.importlib.util, "find_spec", lambda name: None)
    assert pick_format("auto") == "csv" and pick_format("csv") == "csv"
    with pytest.raises(UserError, match="--format parquet needs pyarrow"):
        pick_format("parquet")


def test_parquet_round_trip(tmp_path):
    pytest.importorskip("pyarrow")
    _records(tmp_path / "records.jsonl")
    assert main([str(tmp_path / "t"), "--records", str(tmp_path / "records.jsonl"), "--format", "parquet"]) == 0
    assert len(pd.read_parquet(tmp_path / "t" / "curves.parquet")) == 6


def test_cells_are_scalars():
    df = plain(pd.DataFrame({"a": [[1, 2], {"x": 1}, None], "b": ["s", 1.5, None], "c": [1, 2, 3]}))
    assert list(df["a"][:2]) == ["[1, 2]", '{"x": 1}'] and list(df["b"][:2]) == ["s", "1.5"] and df["c"].dtype == int


@pytest.mark.parametrize("case", ["missing-source", "empty-folder", "out-is-file", "out-under-file", "bad-format"])
def test_bad_input_is_one_line_and_writes_nothing(case, tmp_path, capsys):
    src, out = tmp_path / "records.jsonl", tmp_path / "tables"
    _records(src)
    args = {"missing-source": [str(out), "--records", str(tmp_path / "nope.jsonl")],
            "empty-folder": [str(out), "--records", str(tmp_path / "empty")],
            "out-is-file": [str(src), "--records", str(src)],
            "out-under-file": [str(src / "tables"), "--records", str(src)],
            "bad-format": [str(out), "--records", str(src), "--format", "xlsx"]}[case]
    (tmp_path / "empty").mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    try:
        code = main(args)
    except SystemExit as e:  # argparse's usage errors (ArgParser: one line, exit 2)
        code = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert sorted(p.name for p in tmp_path.iterdir()) == before and not out.exists()
    want = {"missing-source": "does not exist", "empty-folder": "no records in", "out-is-file": "is a file",
            "out-under-file": "cannot create the export folder", "bad-format": "invalid choice"}[case]
    assert want in err[0]
