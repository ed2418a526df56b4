"""User errors: bad input that the user can fix. Entry points print one line naming the fix and exit 2.

`cli(main)` runs a Hydra entry point so that every way of failing on input is one line on stderr:
- a UserError raised by our checks (exit 2);
- a setting that breaks its rule (unlearn/settings.py: type, finiteness, range), checked before the task runs;
- a Hydra or OmegaConf composition error: an unknown option such as `unlearned=foo`, a misspelled key,
  a value of the wrong type (exit 2; Hydra's own multi-line message is folded into one line);
- an OSError that reaches the top, e.g. a run folder that cannot be created (exit 2);
- Ctrl-C / SIGINT (exit 130) and SIGTERM (exit 143): records already written are kept, temporary files are
  removed, and a rerun of the same command resumes.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import signal
import sys

from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from unlearn import (
    paths,  # noqa: F401 - registers ${results_root:} and ${run_tag:}, as this module does ${checked:}
    progress,
)
from unlearn.settings import check, problems


class UserError(Exception):
    """Raised with a one-line message that names the fix."""


class ArgParser(argparse.ArgumentParser):
    """argparse for the commands that are not Hydra apps (evaluation.report, .records, .unlearning_table): a
    usage error is one line and exit 2 (argparse itself prints the usage block too)."""

    def error(self, message):
        print(f"error: {message}; see {self.prog} --help", file=sys.stderr)
        sys.exit(2)


def finite(text: str) -> float:
    """An argparse type: a finite number (argparse names it: "invalid finite value: 'nan'")."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def _one_line(text: str) -> str:
    text = str(text).split("Config search path:")[0]  # Hydra appends its search path: noise for a user
    return " ".join(ln.strip() for ln in text.splitlines() if ln.strip())


def _os_error_line(e: OSError) -> str:
    where = f" {e.filename}" if e.filename else ""
    return (f"{e.strerror or type(e).__name__}:{where}; check that path, or set paths.results / paths.artifacts / "
            "data.root to a usable folder")


def _settings_error(cfg: DictConfig) -> UserError | None:
    found = problems(cfg)
    if not found:
        return None
    return UserError(found[0] + (f" (and {len(found) - 1} more)" if len(found) > 1 else ""))


def _checked(path: str, *, _root_: DictConfig) -> str:
    """`${checked:${paths.results}}` in hydra.run.dir / hydra.sweep.dir: every setting is checked when Hydra
    resolves the run folder, before it creates it (a bad paths.results must not create a folder at /)."""
    if _multirun():  # a job of a sweep: its settings are checked in its task (the sweep goes on); only the folder here
        line = check("paths.results", path)
        err = UserError(line) if line else None
    else:
        err = _settings_error(_root_)
    if err is not None:
        raise err
    return path


OmegaConf.register_new_resolver("checked", _checked, replace=True)


def exit_on_user_error(fn):
    """Wrap a Hydra task function: check every setting (unlearn/settings.py), then run it. In a single run a
    UserError or an OSError becomes one line and exit 2 here (past this point Hydra would add its own "Error
    executing job" line); in a multirun it is raised, so the launcher finishes the sweep's other jobs and
    then reports it (Hydra names the failing job's overrides on the line before ours)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            err = _settings_error(args[0]) if args and isinstance(args[0], DictConfig) else None
            if err is not None:
                raise err
            return fn(*args, **kwargs)
        except (UserError, OSError, OmegaConfBaseException) as e:
            if _multirun():
                raise
            line = (_os_error_line(e) if isinstance(e, OSError) else _one_line(e)
                    if isinstance(e, OmegaConfBaseException) else e)
            print(f"error: {line}", file=sys.stderr)
            sys.exit(2)

    return wrapper


def _multirun() -> bool:
    try:
        return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:  # noqa: BLE001 - outside Hydra
        return False


class Terminated(BaseException):
    """SIGTERM (what `timeout`, SLURM and `kill` send), raised like KeyboardInterrupt so that every `finally`
    runs: temporary files and folders are removed and a record half-written is rolled back."""


def _on_sigterm(signum, frame):
    raise Terminated


def cli(main) -> None:
    """Run a @hydra.main function as a command: see the module docstring."""
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises instead of printing; we print one line
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        if (line := progress.problem()) is not None:  # before anything runs or a folder is made
            raise UserError(line)
        main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except (HydraException, OmegaConfBaseException) as e:
        cause = e
        while cause is not None and not isinstance(cause, UserError):  # ours, raised inside an interpolation
            cause = cause.__cause__ or cause.__context__
        print(f"error: {cause if cause is not None else _one_line(e)}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:  # e.g. Hydra creating its run folder under a path that is a file
        print(f"error: {_os_error_line(e)}", file=sys.stderr)
        sys.exit(2)
    except (KeyboardInterrupt, Terminated) as e:
        what = "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
        print(f"error: {what}; the points already recorded are kept: rerun the same command to resume",
              file=sys.stderr)
        sys.exit(143 if isinstance(e, Terminated) else 130)
