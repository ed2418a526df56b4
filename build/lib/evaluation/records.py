"""Records: one JSON line per evaluated point, appended atomically, deduplicated by key.

Every write holds an exclusive lock on `<records>.lock` (so concurrent jobs of a sweep serialise; a writer waits
at most `RECORDS_LOCK_TIMEOUT_S`, then fails with one line naming the lock file), repairs a
torn last line left by a killed writer (drops it), skips the record if its key is already present, writes
the whole line and fsyncs. A write that fails part-way (full disk, file-size limit) is rolled back to the
previous size, so the file never holds half a record. `replace=True` (the `overwrite=true` option) drops
the old line of that key: the file is rewritten to a temporary file and renamed over the old one.
Readers skip a torn last line. So a killed job loses at most the point it was computing, and a rerun
adds only the points that are missing.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import sys
from contextlib import contextmanager
from pathlib import Path

from evaluation.schema import SCHEMA
from unlearn.diffusion import sampler_label
from unlearn.errors import ArgParser, UserError
from unlearn.io import atomic_write, file_lock, remove_dead_temporaries, write_error
from unlearn.paths import RESULTS_ENV, results_root


def _valid_lines(text: str) -> list[str]:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    elif lines:
        lines.pop()  # no trailing newline: a torn write, ignore it
    return [ln for ln in lines if ln.strip()]


RECORDS_LOCK_TIMEOUT_S = 600.0  # an append takes milliseconds, an overwrite=true rewrite seconds
COMMITTED = Path(__file__).resolve().parent.parent / "data" / "records"  # the records REPORT.md is built from


def _record(path: Path, i: int, line: str) -> dict:
    """Line i of a records file as a record (a JSON object with a text key), or one line naming the fix."""
    try:
        rec = json.loads(line)
        if not isinstance(rec, dict) or not isinstance(rec.get("key"), str):
            raise ValueError("not a record: no text key")
    except ValueError as e:
        raise UserError(f"{path}:{i} is not a record line ({e}); fix or delete that line") from e
    return rec


def read_records(path: str | Path, strict: bool = True) -> list[dict]:
    """All records of a file (missing file: []); `.gz` files are read through gzip. A malformed complete line is
    an error when strict."""
    path = Path(path)
    if not path.exists():
        return []
    if path.suffix == ".gz":
        try:
            text = gzip.decompress(path.read_bytes()).decode()
        except (OSError, EOFError, UnicodeDecodeError) as e:
            raise UserError(f"{path} is not a readable gzip file of records ({type(e).__name__}); re-export it with "
                            "python -m evaluation.records export") from e
    else:
        try:
            text = path.read_text()
        except UnicodeDecodeError as e:
            raise UserError(f"{path} is not a text file of records (byte {e.start} is not UTF-8); move it away or "
                            "delete it, then rerun") from e
    out, seen = [], {}
    for i, line in enumerate(_valid_lines(text), 1):
        try:
            rec = _record(path, i, line)
        except UserError:
            if strict:
                raise
            continue
        version = rec.get("schema", 1)  # 1: written before evaluation/schema.py; the same fields
        if not isinstance(version, int) or not 1 <= version <= SCHEMA:
            raise UserError(f"{path}:{i} has record schema {version!r}; this toolkit reads 1..{SCHEMA}: update it")
        if rec["key"] in seen:  # never written by this toolkit (it skips or replaces a key): a hand merge
            raise UserError(f"{path}:{i} repeats the key of line {seen[rec['key']]}; delete one of the two lines")
        seen[rec["key"]] = i
        out.append(rec)
    return out


def existing_keys(path: str | Path) -> set[str]:
    """The keys a rerun skips."""
    return {r["key"] for r in read_records(path, strict=False)}


def check_records_file(path: str | Path) -> None:
    """At start-up, before anything is built: a damaged records file (binary, a bad line, a repeated key) fails
    with one line now, and the temporary file of an `overwrite=true` rewrite whose writer was killed before its
    rename is removed (only a dead process's: unlearn/io.py)."""
    remove_dead_temporaries(Path(path))
    read_records(path)


@contextmanager
def _locked(path: Path, timeout_s: float):
    """An exclusive lock shared by every writer of `path` (a side file: the records file itself may be
    replaced by a rename, which a lock on its inode would not survive)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_error(path, e, "paths.results") from e
    with file_lock(path.with_name(path.name + ".lock"), timeout_s=timeout_s, holder=f"writing {path.name}",
                   setting="paths.results"):
        yield


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _finite(value):
    """NaN and inf (an undefined TPR, an unresolvable CI) as null: JSON has no NaN, and strict readers refuse it."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def to_json(record: dict) -> str:
    """One record as strict JSON (sorted keys; NaN / inf as null): the only way records are written."""
    return json.dumps(_finite(record), sort_keys=True, default=str, allow_nan=False)


def append_record(path: str | Path, record: dict, replace: bool = False, *,
                  lock_timeout_s: float = RECORDS_LOCK_TIMEOUT_S) -> bool:
    """Append `record` unless its key exists (replace=True: drop the existing line first); True if written."""
    path = Path(path)
    line = (to_json(record) + "\n").encode()
    with _locked(path, lock_timeout_s):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise write_error(path, e, "paths.results") from e
        try:
            size = os.fstat(fd).st_size
            text = os.pread(fd, size, 0).decode() if size else ""
            if text and not text.endswith("\n"):
                tail = text[text.rfind("\n") + 1:]
                try:  # a complete record that lacks its newline (a hand edit): keep it
                    json.loads(tail)
                    os.pwrite(fd, b"\n", size)
                    text += "\n"
                except ValueError:  # a torn line from a killed writer: drop it
                    text = text[: text.rfind("\n") + 1]
                    os.ftruncate(fd, len(text.encode()))
                size = len(text.encode())
            lines = _valid_lines(text)
            keys = [_record(path, i, ln)["key"] for i, ln in enumerate(lines, 1)]
            if record["key"] in keys:
                if not replace:
                    return False
                kept = "".join(ln + "\n" for ln, k in zip(lines, keys) if k != record["key"])
                with atomic_write(path) as tmp:
                    tmp.write_bytes(kept.encode() + line)
                return True
            try:
                os.lseek(fd, size, os.SEEK_SET)
                _write_all(fd, line)
                os.fsync(fd)
            except BaseException as e:  # a full disk, or a signal mid-write (SIGINT, SIGTERM)
                try:  # roll back a partial line so the file ends on a complete record
                    os.ftruncate(fd, size)
                except OSError:
                    pass
                if isinstance(e, OSError):
                    raise write_error(path, e, "paths.results") from e
                raise
            return True
        finally:
            os.close(fd)


# Fields that say who computed a point, when, where and how fast: they differ between two runs that compute
# the same point (and, in a concurrent sweep, a reference point shared by two jobs is written by whichever
# finishes first, so its run_id names that job). Everything else in a record is its content.
WRITER_FIELDS = ("time", "code_version", "model_code_version", "device", "torch", "run_id",
                 "audit_wall_s", "audit_device_s")


def content(record: dict) -> dict:
    """A record without its writer fields and timings: equal for equal computations (same config, seed,
    device and CPU threads)."""
    out = {k: v for k, v in record.items() if k not in (*WRITER_FIELDS, "schema")}  # equal across schema versions
    for part in ("budget", "eval"):
        if isinstance(out.get(part), dict):
            out[part] = {k: v for k, v in out[part].items() if k not in ("wall_s", "device_s")}
    return out


def sampler_name(record: dict, with_eta: bool = True) -> str:
    """A record's evaluation sampler as a label: DDIM-25, DDPM-1000 (1000 steps, eta 1), ... no-clip. Records
    made before the clip switch existed have no "clip" field: they were clipped. with_eta=False leaves eta out
    (sampler probes name it in their setting)."""
    s = record["sampler"]
    return sampler_label(int(s["steps"]), float(s["eta"]) if with_eta else 0.0, s.get("clip", True) is not False,
                         s.get("variance", "ddim"))


def record_files(source: str | Path) -> list[Path]:
    """A records file, or every *.jsonl / *.jsonl.gz in a folder (a results root or data/records), sorted."""
    source = Path(source)
    if source.is_dir():
        return sorted([*source.glob("*.jsonl"), *source.glob("*.jsonl.gz")])
    return [source]


def results_dir() -> Path:
    """The results root the Hydra apps write (paths.results): $UNLEARN_RESULTS, else results/ (one resolver for
    both: unlearn/paths.py)."""
    root = results_root()
    if not root:
        raise UserError(f"{RESULTS_ENV} is set but empty; unset it or set it to the results folder")
    return Path(root)


def add_source_arguments(ap, default: str) -> None:
    """--records PATH | --results: the records a plain command reads (`default` names what it reads without
    either), the same way for every command."""
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--records", default=None, metavar="PATH",
                       help=f"a records file (.jsonl / .jsonl.gz), a results root or a folder of record files "
                            f"(default: {default})")
    group.add_argument("--results", action="store_true",
                       help=f"the results root the runs wrote: paths.results as the Hydra apps resolve it "
                            f"(${RESULTS_ENV}, else results/); another root: --records <root>")


def source_of(args, default: str | Path | None = None) -> Path:
    """The source add_source_arguments' options name: --records, --results, else `default` (None: the results
    root, paths.results)."""
    if args.records is not None:
        return Path(args.records)
    if args.results or default is None:
        return results_dir()
    return Path(default)


def read_source(source: str | Path) -> list[dict]:
    """read_all, but a source that does not exist is one line naming the fix (read_all reads it as empty)."""
    source = Path(source)
    if not source.exists():
        raise UserError(f"records source {source} does not exist; give a records file (.jsonl / .jsonl.gz), a "
                        f"results root (--results, or set {RESULTS_ENV}) or data/records")
    return read_all(source)


def read_all(source: str | Path) -> list[dict]:
    """The records of `source` (see record_files), one per key (a later file's record wins)."""
    by_key: dict[str, dict] = {}
    for f in record_files(source):
        for r in read_records(f):
            by_key[r["key"]] = r
    return list(by_key.values())


def export(src: str | Path, dst: str | Path, fresh: bool = False) -> int:
    """Merge the records of `src` into the compressed file `dst` (one per key, src wins; fresh=True: only src's,
    dropping what dst held), sorted by key, gzip without a timestamp (the same records give the same bytes: a
    rerun changes nothing in git). Returns the number of records written."""
    dst = Path(dst)
    merged = {} if fresh else {r["key"]: r for r in read_records(dst)}
    merged.update({r["key"]: r for r in read_all(src)})
    lines = "".join(to_json(merged[k]) + "\n" for k in sorted(merged))
    with atomic_write(dst, "--to") as tmp:
        tmp.write_bytes(gzip.compress(lines.encode(), compresslevel=9, mtime=0))
    return len(merged)


def main(argv: list[str] | None = None) -> int:
    """python -m evaluation.records export [results/records.jsonl] [--to data/records/<dataset>.jsonl.gz]"""
    ap = ArgParser(prog="python -m evaluation.records",
                   description="Commit records: merge a results file into data/records/ (gzip JSONL).")
    sub = ap.add_subparsers(dest="cmd", required=True)
    ex = sub.add_parser("export", help="merge a records.jsonl (or a results root) into a committed .jsonl.gz")
    ex.add_argument("source", nargs="?", default=None,
                    help=f"records file or results root (default: paths.results: ${RESULTS_ENV}, else results/)")
    ex.add_argument("--to", default=str(COMMITTED / "digits.jsonl.gz"))
    ex.add_argument("--fresh", action="store_true", help="write only the source's records (drop the old ones)")
    a = ap.parse_args(argv)
    try:
        source = results_dir() if a.source is None else Path(a.source)
        if not source.exists() or not record_files(source):
            raise UserError(f"no records at {source}; give a records file or a results root (or set {RESULTS_ENV})")
        n = export(source, a.to, a.fresh)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{a.to}: {n} records from {source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
