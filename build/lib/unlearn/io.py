"""Crash-safe file writes: a file is either its old self or its complete new self, never half-written.

`atomic_write(path)` yields a temporary path next to `path`; on success the temporary file is fsynced and
renamed over `path` (os.replace is atomic on POSIX), on any error it is removed. An OSError (full disk,
read-only or missing folder, file-size limit) becomes a UserError that names the fix.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from unlearn.errors import UserError

FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def write_error(path: Path | str, e: OSError, setting: str) -> UserError:
    """A one-line UserError for a failed write of `path`; `setting` is the config key that moves it."""
    why = e.strerror or type(e).__name__
    if e.errno in FULL:
        return UserError(f"cannot write {path}: {why} (disk or quota full); free space or set {setting} "
                         "to another disk, then rerun the same command to resume")
    return UserError(f"cannot write {path} ({why}); set {setting} to a writable folder")


@contextmanager
def file_lock(path: Path, *, timeout_s: float, holder: str, setting: str) -> Iterator[None]:
    """Hold an exclusive lock on the file `path` (filelock.FileLock: flock on POSIX, released by the kernel when
    its holder dies; the empty lock file stays). Wait at most `timeout_s` seconds, then raise a one-line
    UserError naming the lock file; `holder` says what the other process is doing, `setting` which config key
    moves the folder (named if the lock file cannot be created)."""
    lock = FileLock(path, timeout=timeout_s, preserve_lock_file=True)
    try:
        lock.acquire()
    except Timeout as e:  # a TimeoutError, so an OSError: caught first
        raise UserError(f"{path} is still locked after {timeout_s:g} s: another run is {holder}; wait for it to "
                        f"finish or stop it, then rerun (if no such run is left, delete {path}: a stale lock)") from e
    except OSError as e:
        raise write_error(path, e, setting) from e
    try:
        yield
    finally:
        lock.release()


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: Path) -> None:
    """Make a rename inside `folder` durable (best effort: not every filesystem allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}")


def remove_dead_temporaries(path: Path) -> None:
    """Delete temporary files of `path` left by killed writers of this host (their PID is gone); a live
    writer's, or another host's, is left alone."""
    host = socket.gethostname()
    mine = re.compile(rf"\.{re.escape(path.name)}\.tmp-{re.escape(host)}-(\d+)-[0-9a-f]+")  # not host "gpu-3"'s
    for stale in path.parent.glob(f".{path.name}.tmp-{host}-*"):
        if not (m := mine.fullmatch(stale.name)):
            continue
        try:
            pid = int(m.group(1))
            os.kill(pid, 0)
        except ProcessLookupError:
            stale.unlink(missing_ok=True)
        except (ValueError, PermissionError, OSError):
            pass


@contextmanager
def atomic_write(path: Path | str, setting: str = "paths.results") -> Iterator[Path]:
    """with atomic_write(p) as tmp: write tmp -> p is replaced by tmp only if the block succeeds.
    Each writer has its own temporary name (host, pid, random), so concurrent writers of one target never
    touch each other's file: the last complete one wins. Temporaries of dead writers are removed."""
    path = Path(path)
    tmp = _tmp_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_dead_temporaries(path)
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as e:
        raise write_error(path, e, setting) from e
    finally:
        try:
            tmp.unlink()
        except OSError:
            pass


def write_text(path: Path | str, text: str, setting: str = "paths.results") -> None:
    with atomic_write(path, setting) as tmp:
        tmp.write_text(text)
