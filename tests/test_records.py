"""Records: atomic append, dedupe by key, torn-line repair; metrics' golden numbers; artifact cache."""

import gzip
import json

import pytest
import torch
from filelock import FileLock

from evaluation.metrics import normalized_recovery, score, wilson_ci
from evaluation.records import append_record, existing_keys, read_records
from unlearn.artifacts import artifact, key_of, provenance
from unlearn.errors import UserError


def test_append_dedupes_and_repairs_a_torn_line(tmp_path):
    p = tmp_path / "r" / "records.jsonl"
    assert append_record(p, {"key": "a", "v": 1})
    assert not append_record(p, {"key": "a", "v": 2})  # already there: skipped
    with open(p, "a") as f:
        f.write('{"key": "b", "v"')  # a writer killed mid-line
    assert [r["key"] for r in read_records(p)] == ["a"]  # readers ignore the torn tail
    assert append_record(p, {"key": "b", "v": 3})
    assert [(r["key"], r["v"]) for r in read_records(p)] == [("a", 1), ("b", 3)]
    assert p.read_text().count("\n") == 2 and existing_keys(p) == {"a", "b"}


def test_malformed_complete_line_is_a_one_line_error(tmp_path):
    p = tmp_path / "records.jsonl"
    p.write_text(json.dumps({"key": "a"}) + "\nnot json\n")
    with pytest.raises(UserError, match=r"records.jsonl:2 is not a record line"):
        read_records(p)
    assert [r["key"] for r in read_records(p, strict=False)] == ["a"]


def test_unwritable_records_path(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UserError, match="set paths.results to a writable folder"):
        append_record(blocker / "records.jsonl", {"key": "a"})


def test_wilson_golden():
    lo, hi = wilson_ci(50, 100)
    assert (lo, hi) == pytest.approx((0.40383, 0.59617), abs=1e-4)
    lo, hi = wilson_ci(0, 500)
    assert lo == pytest.approx(0.0, abs=1e-12) and hi == pytest.approx(0.00762, abs=1e-4)
    with pytest.raises(ValueError):
        wilson_ci(0, 0)


def test_score_by_hand():
    probs = torch.tensor([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [1.0, 0.0]])
    s = score(probs, 0)
    assert s["ra"] == pytest.approx(0.5)  # rows 0 and 3
    h = [-(0.9 * torch.log(torch.tensor(0.9)) + 0.1 * torch.log(torch.tensor(0.1))).item(), 0.673012,
         -(0.2 * torch.log(torch.tensor(0.2)) + 0.8 * torch.log(torch.tensor(0.8))).item(), 0.0]
    assert s["entropy"] == pytest.approx(sum(h) / 4, abs=1e-5)
    assert s["mean_p"] == pytest.approx((0.9 + 0.4 + 0.2 + 1.0) / 4)
    assert normalized_recovery(0.55, 0.1, 1.0) == pytest.approx(0.5)


def test_artifact_built_once_keyed_by_spec_and_atomic(tmp_path):
    calls = []

    def build(folder):
        calls.append(folder)
        (folder / "w.txt").write_text("x")
        return {"n": len(calls)}

    a = artifact(tmp_path, "thing", {"lr": 1}, build)
    assert artifact(tmp_path, "thing", {"lr": 1}, build) == a and len(calls) == 1
    b = artifact(tmp_path, "thing", {"lr": 2}, build)  # a changed hyperparameter: a new artifact
    assert b != a and len(calls) == 2 and provenance(b)["spec"] == {"lr": 2}
    assert a.name == key_of({"lr": 1})

    def crash(folder):
        (folder / "half.txt").write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        artifact(tmp_path, "thing", {"lr": 3}, crash)
    assert not (tmp_path / "thing" / key_of({"lr": 3})).exists()
    assert not list((tmp_path / "thing").glob(".*tmp*"))


def test_a_held_lock_times_out_with_one_line_naming_the_lock_file_and_writes_nothing(tmp_path):
    """Another process holding the records' or an artifact's lock: after the timeout, one line that names the
    lock file and the fix; the records file and the artifact folder are left as they were."""
    path = tmp_path / "records.jsonl"
    append_record(path, {"key": "a", "v": 1})
    before = path.read_bytes()
    with FileLock(tmp_path / "records.jsonl.lock"):  # flock: a second descriptor conflicts, even in this process
        with pytest.raises(UserError) as e:
            append_record(path, {"key": "b", "v": 2}, lock_timeout_s=0.2)
    line = str(e.value)
    assert "\n" not in line and str(tmp_path / "records.jsonl.lock") in line
    assert "still locked after 0.2 s: another run is writing records.jsonl; wait for it" in line
    assert path.read_bytes() == before
    assert append_record(path, {"key": "b", "v": 2}, lock_timeout_s=0.2)  # released: it goes through

    spec = {"a": 1}
    lock = tmp_path / "art" / "judge" / f"{key_of(spec)}.lock"
    lock.parent.mkdir(parents=True)
    built = []
    with FileLock(lock), pytest.raises(UserError, match=rf"{lock} is still locked after 0.2 s: another run is "
                                                        rf"building judge {key_of(spec)}; .*delete {lock}"):
        artifact(tmp_path / "art", "judge", spec, lambda d: built.append(d) or {}, lock_timeout_s=0.2)
    assert built == [] and sorted(p.name for p in lock.parent.iterdir()) == [lock.name]


def test_artifact_build_that_fails_a_read_outside_the_cache_is_not_called_a_write_failure(tmp_path):
    """A build that cannot read an input (here a missing file outside the cache) re-raises that OSError with its
    path, for the top-level handler; a failed write into the cache becomes 'cannot write ... paths.artifacts'."""
    from unlearn.errors import UserError

    missing = tmp_path / "inputs" / "nope.bin"

    def reads(folder):
        missing.read_bytes()

    with pytest.raises(FileNotFoundError) as e:
        artifact(tmp_path / "cache", "thing", {"lr": 4}, reads)
    assert e.value.filename == str(missing)
    missing = tmp_path / "cache" / "base" / "0123" / "w.safetensors"  # a parent artifact inside the cache
    with pytest.raises(FileNotFoundError):
        artifact(tmp_path / "cache", "thing", {"lr": 4}, reads)

    def writes(folder):
        raise OSError(28, "No space left on device", str(folder / "w.bin"))

    with pytest.raises(UserError,
                       match=r"cannot write .*thing.* \(disk or quota full\); free space or set paths.artifacts"):
        artifact(tmp_path / "cache", "thing", {"lr": 5}, writes)
    assert not list((tmp_path / "cache" / "thing").glob(".*tmp*"))


def test_replace_rewrites_only_that_key_and_keeps_order(tmp_path):
    p = tmp_path / "records.jsonl"
    for k in "abc":
        append_record(p, {"key": k, "v": 1})
    assert append_record(p, {"key": "b", "v": 2}, replace=True)
    assert [(r["key"], r["v"]) for r in read_records(p)] == [("a", 1), ("c", 1), ("b", 2)]
    assert not list(tmp_path.glob(".*tmp*"))


def test_failed_write_rolls_back_the_partial_line(tmp_path, monkeypatch):
    import os as _os

    p = tmp_path / "records.jsonl"
    append_record(p, {"key": "a"})
    before = p.read_bytes()
    real = _os.write

    def half_then_full(fd, data):  # the disk fills after half a line
        if len(data) > 10:
            real(fd, bytes(data[: len(data) // 2]))
            raise OSError(28, "No space left on device")
        return real(fd, data)

    monkeypatch.setattr("evaluation.records.os.write", half_then_full)
    with pytest.raises(UserError, match=r"No space left on device \(disk or quota full\); free space"):
        append_record(p, {"key": "b", "pad": "x" * 100})
    monkeypatch.undo()
    assert p.read_bytes() == before


def test_export_commits_records_deterministically(tmp_path):
    """evaluation.records export: merge into a gzip JSONL sorted by key, no timestamp in the gzip header (the
    same records give the same bytes, so rerunning it changes nothing in git); the source wins a shared key."""
    import gzip

    from evaluation.records import export, read_all

    src = tmp_path / "records.jsonl"
    src.write_text('{"key": "b", "v": 1}\n{"key": "a", "v": 2}\n')
    dst = tmp_path / "data" / "digits.jsonl.gz"
    assert export(src, dst) == 2
    first = dst.read_bytes()
    assert export(src, dst) == 2 and dst.read_bytes() == first
    assert [json.loads(x)["key"] for x in gzip.decompress(first).decode().splitlines()] == ["a", "b"]
    src.write_text('{"key": "b", "v": 3}\n{"key": "c", "v": 4}\n')
    assert export(src, dst) == 3
    assert {r["key"]: r["v"] for r in read_all(dst.parent)} == {"a": 2, "b": 3, "c": 4}
    assert export(src, dst, fresh=True) == 2 and {r["key"] for r in read_all(dst)} == {"b", "c"}
    dst.write_bytes(b"not gzip")
    with pytest.raises(UserError, match="not a readable gzip file of records"):
        read_all(dst.parent)


def test_report_check_passes_on_a_fresh_copy_and_fails_on_a_stale_report(tmp_path, capsys):
    """--check rebuilds in memory from committed records only (no results/ folder) and compares."""
    import shutil

    from evaluation.records import export
    from evaluation.report import main
    from tests.test_evaluation import _rec

    recs = tmp_path / "run" / "records.jsonl"
    recs.parent.mkdir()
    recs.write_text("".join(json.dumps({**_rec("safemax", c, 0.1, 0.8), "key": f"k{c}", "n_per_class": 100,
                                        "judge_id": "j", "device": "cpu", "judge_test_accuracy": 0.98,
                                        "fid_features": "judge:j", "per_class_ra": {str(c): 0.1},
                                        "min_class_ra": 0.1}) + "\n" for c in range(3)))
    clone = tmp_path / "clone"
    export(recs, clone / "data" / "records" / "digits.jsonl.gz")
    report = clone / "REPORT.md"
    report.write_text("# R\n\nHand text.\n")
    data = str(clone / "data" / "records")
    assert main(["--records", data, "--report", str(report)]) == 0
    built = report.read_text()
    assert main(["--records", data, "--report", str(report), "--check"]) == 0
    shutil.rmtree(recs.parent)  # nothing but the committed records is needed
    assert main(["--records", data, "--report", str(report), "--check"]) == 0
    report.write_text(built.replace("| safemax |", "| SAFEMAX |"))
    capsys.readouterr()
    assert main(["--records", data, "--report", str(report), "--check"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "differs from what" in err[0] and "run python -m evaluation.report" in err[0]
    assert "SAFEMAX" in report.read_text()  # --check never writes


def test_a_record_of_a_newer_schema_is_refused_by_name(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text('{"key": "a", "kind": "attack"}\n{"key": "b", "kind": "attack", "schema": 2}\n'
                    '{"key": "c", "kind": "attack", "schema": 99}\n')
    with pytest.raises(UserError, match=r"records.jsonl:3 has record schema 99; this toolkit reads 1..4"):
        read_records(path)
    path.write_text('{"key": "a", "kind": "attack"}\n{"key": "b", "kind": "attack", "schema": 2}\n')
    assert [r["key"] for r in read_records(path)] == ["a", "b"]  # schema 1 (no field) and 2 are read alike


def test_records_are_strict_json_nan_as_null(tmp_path):
    """Every committed record parses with a strict parser (no NaN / Infinity tokens), and a record holding NaN
    or inf is written with null there."""
    from evaluation.records import COMMITTED, to_json

    def refuse(token):
        raise ValueError(f"non-JSON token {token}")

    for f in COMMITTED.glob("*.jsonl.gz"):
        for line in gzip.decompress(f.read_bytes()).decode().splitlines():
            json.loads(line, parse_constant=refuse)
    append_record(tmp_path / "r.jsonl", {"key": "a", "tpr": float("nan"), "m": {"x": float("inf")}, "l": [1.0]})
    line = (tmp_path / "r.jsonl").read_text()
    assert json.loads(line, parse_constant=refuse) == {"key": "a", "tpr": None, "m": {"x": None}, "l": [1.0]}
    assert to_json({"b": 1, "a": float("-inf")}) == '{"a": null, "b": 1}'


def _index(p):
    return p.with_name(p.name + ".keys")


def test_an_append_reads_the_new_lines_not_the_whole_file(tmp_path, monkeypatch):
    import evaluation.records as records

    p = tmp_path / "records.jsonl"
    for i in range(400):
        append_record(p, {"key": f"k{i}", "pad": "x" * 200})
    read = []
    real = records.os.pread
    monkeypatch.setattr(records.os, "pread", lambda fd, n, off: read.append(n) or real(fd, n, off))
    assert not append_record(p, {"key": "k3"}) and append_record(p, {"key": "new"})
    assert sum(read) < p.stat().st_size / 4  # the last lines only (the key index has the rest)
    assert [r["key"] for r in read_records(p)] == [f"k{i}" for i in range(400)] + ["new"]


@pytest.mark.parametrize("change", ["index deleted", "index torn", "index garbage", "file replaced", "file truncated",
                                    "lines added by hand"])
def test_a_stale_or_damaged_key_index_is_never_trusted(tmp_path, change):
    p = tmp_path / "records.jsonl"
    for k in "abc":
        append_record(p, {"key": k})
    if change == "index deleted":
        _index(p).unlink()
    elif change == "index torn":
        _index(p).write_text(_index(p).read_text()[:-3])
    elif change == "index garbage":
        _index(p).write_text('[1, 2, 3]\n"x"\n')
    elif change == "file replaced":  # another file, longer than the old one: the index's end offset lies inside it
        p.write_text("".join(json.dumps({"key": k, "pad": "y" * 30}) + "\n" for k in "xyz"))
    elif change == "file truncated":
        p.write_text(json.dumps({"key": "a"}) + "\n")
    else:
        with open(p, "a") as f:
            f.write(json.dumps({"key": "d"}) + "\n")
    want = {"index deleted": "abc", "index torn": "abc", "index garbage": "abc", "file replaced": "xyz",
            "file truncated": "a", "lines added by hand": "abcd"}[change]
    for k in want:  # every key the file holds is seen: nothing is appended twice
        assert not append_record(p, {"key": k})
    assert append_record(p, {"key": "z2"}) and existing_keys(p) == {*want, "z2"}
    assert not append_record(p, {"key": "z2"})
    assert [r["key"] for r in read_records(p)] == [*want, "z2"]  # read_records refuses a repeated key
