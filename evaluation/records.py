"""Records: one JSON line per evaluated point, appended atomically, deduplicated by key.

An append takes an exclusive lock on the file, repairs a torn last line left by a crash (drops it),
skips the record if its key is already present, writes the line in one call and fsyncs. Readers skip
a torn last line. So a killed job loses at most the point it was computing, and a rerun adds only
the points that are missing.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

from unlearn.errors import UserError


def _valid_lines(text: str) -> list[str]:
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    elif lines:
        lines.pop()  # no trailing newline: a torn write, ignore it
    return [ln for ln in lines if ln.strip()]


def read_records(path: str | Path, strict: bool = True) -> list[dict]:
    """All records of a file (missing file: []). A malformed complete line is an error when strict."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for i, line in enumerate(_valid_lines(path.read_text()), 1):
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict) or "key" not in rec:
                raise ValueError("not a record")
        except ValueError as e:
            if strict:
                raise UserError(f"{path}:{i} is not a record line ({e}); fix or delete that line") from e
            continue
        out.append(rec)
    return out


def existing_keys(path: str | Path) -> set[str]:
    return {r["key"] for r in read_records(path, strict=False)}


def append_record(path: str | Path, record: dict) -> bool:
    """Append `record` unless its key exists; returns True if written."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError as e:
        raise UserError(f"cannot write records to {path} ({e.strerror}); set paths.results to a writable folder") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        text = os.pread(fd, size, 0).decode() if size else ""
        if text and not text.endswith("\n"):
            tail = text[text.rfind("\n") + 1:]
            try:  # a complete record that lacks its newline (a hand edit): keep it
                json.loads(tail)
                os.write(fd, b"\n")
                text += "\n"
            except ValueError:  # a torn line from a crashed writer: drop it
                os.ftruncate(fd, text.rfind("\n") + 1)
                text = text[: text.rfind("\n") + 1]
        keys = set()
        for i, ln in enumerate(_valid_lines(text), 1):
            try:
                keys.add(json.loads(ln).get("key"))
            except (ValueError, AttributeError) as e:
                raise UserError(f"{path}:{i} is not a record line ({e}); fix or delete that line") from e
        if record["key"] in keys:
            return False
        os.write(fd, (json.dumps(record, sort_keys=True, default=str) + "\n").encode())
        os.fsync(fd)
        return True
    finally:
        os.close(fd)
