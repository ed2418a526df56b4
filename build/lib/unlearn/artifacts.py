"""Content-addressed artifact cache: build what is missing, once, atomically.

An artifact (judge, base model, oracle, unlearned model) lives in `<root>/<kind>/<key>/`, where key is
a hash of everything that produced it (the config subset, the data fingerprint, the parents' keys).
A changed hyperparameter gives a new key, so a stale artifact is never reused. Builds run in a
temporary folder under a file lock and are renamed into place only when complete, so concurrent jobs
build an artifact once and a crash never leaves a half-written one (the next build of that key removes
a dead builder's temporary folder). The `<key>.lock` files stay: they are empty and harmless.

A job that finds another building the same artifact waits for it, at most `BUILD_LOCK_TIMEOUT_S` (24 h: far
longer than any build of this project's configs, so only a hung builder reaches it); then it fails with one
line naming the lock file (unlearn/io.py: file_lock).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from unlearn.errors import UserError
from unlearn.io import file_lock, fsync_dir, fsync_file, write_error
from unlearn.model import code_version

log = logging.getLogger(__name__)
PROVENANCE = "provenance.json"
BUILD_LOCK_TIMEOUT_S = 24 * 3600.0  # how long a job waits for another building the same artifact


def key_of(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


def artifact(root: str | Path, kind: str, spec: dict, build: Callable[[Path], dict], *,
             lock_timeout_s: float = BUILD_LOCK_TIMEOUT_S) -> Path:
    """Return the folder of artifact (kind, spec), calling build(tmp_folder) -> provenance if absent."""
    root = Path(root)
    key = key_of(spec)
    final = root / kind / key
    if (final / PROVENANCE).is_file():
        return final
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the artifact folder {final.parent} ({e.strerror}); "
                        "set paths.artifacts to a writable folder") from e
    # another job building the same artifact: wait for it
    with file_lock(final.parent / f"{key}.lock", timeout_s=lock_timeout_s, holder=f"building {kind} {key}",
                   setting="paths.artifacts"):
        if (final / PROVENANCE).is_file():
            return final
        if final.exists():  # an incomplete folder (provenance missing): rebuild it
            shutil.rmtree(final)
        for stale in final.parent.glob(f".{key}.tmp-*"):  # left by a killed builder (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        tmp = final.parent / f".{key}.tmp-{os.getpid()}"
        log.info("building %s %s", kind, key)
        t0 = time.perf_counter()
        try:
            tmp.mkdir()
            info = build(tmp)
            provenance = {"kind": kind, "key": key, "spec": spec, "code_version": code_version(),
                          "build_wall_s": round(time.perf_counter() - t0, 3), **info}
            (tmp / PROVENANCE).write_text(json.dumps(provenance, indent=1, default=str))
            for f in tmp.iterdir():  # the files reach the disk before the folder becomes visible
                fsync_file(f)
            os.replace(tmp, final)
            fsync_dir(final.parent)
        except OSError as e:
            if e.filename and not Path(e.filename).resolve().is_relative_to(final.parent.resolve()):
                # not this artifact's folder (e.g. reading data or a parent artifact): the top-level handler names it
                raise
            raise write_error(final, e, "paths.artifacts") from e
        except Exception as e:  # safetensors reports a failed write as its own error type, with the errno
            m = re.search(r"I/O error: .*os error (\d+)", str(e))
            if type(e).__name__ != "SafetensorError" or not m:
                raise
            raise write_error(final, OSError(int(m.group(1)), os.strerror(int(m.group(1)))), "paths.artifacts") from e
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def provenance(folder: Path) -> dict:
    return json.loads((Path(folder) / PROVENANCE).read_text())


def external_provenance(folder: Path) -> dict:
    """A folder from outside the cache (unlearned.checkpoint, original.checkpoint, oracle.checkpoint): its key is a
    hash of its files' content, so a changed checkpoint never reuses another's records."""
    folder = Path(folder)
    return {"kind": "external", "key": "ext-" + _content_hash(folder), "external": str(folder.resolve()),
            "code_version": None}


CONTENT = (".json", ".safetensors", ".yml", ".yaml", ".bin", ".pt", ".pth")  # configs and weights, any kind


def _content_hash(folder: Path) -> str:
    """Every config and weight file under the folder (a pipeline's unet/ and scheduler/, a testbed's ckpts/),
    by path relative to it; a save_pretrained folder hashes as it did before subfolders counted."""
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.suffix in CONTENT:
            h.update(p.relative_to(folder).as_posix().encode())
            with open(p, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()[:16]
