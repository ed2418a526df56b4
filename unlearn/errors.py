"""User errors: bad input that the user can fix. Entry points print one line naming the fix and exit 2.

`cli(main)` runs a Hydra entry point so that every way of failing on input is one line on stderr:
- a UserError raised by our checks (exit 2);
- a Hydra or OmegaConf composition error: an unknown option such as `unlearned=foo`, a misspelled key,
  a value of the wrong type (exit 2; Hydra's own multi-line message is folded into one line);
- an OSError that reaches the top, e.g. a run folder that cannot be created (exit 2);
- Ctrl-C / SIGINT (exit 130): records already written are kept and a rerun of the same command resumes.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import os
import re
import sys

from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException


class UserError(Exception):
    """Raised with a one-line message that names the fix."""


def _one_line(text: str) -> str:
    text = str(text).split("Config search path:")[0]  # Hydra appends its search path: noise for a user
    return " ".join(ln.strip() for ln in text.splitlines() if ln.strip())


_LITERAL = re.compile(r"(?:invalid literal for int\(\) with base 10|could not convert string to float): '(.*)'$")


def _type_error(e: Exception, cfg) -> UserError | None:
    """int('abc') / float('abc') on a config value: name the key that holds the bad text."""
    m = _LITERAL.search(str(e))
    if not m:
        return None
    def walk(node, prefix):
        if isinstance(node, dict):
            for k, v in node.items():
                yield from walk(v, f"{prefix}{k}.")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                yield from walk(v, f"{prefix}{i}.")
        else:
            yield prefix[:-1], node

    try:
        keys = [k for k, v in walk(OmegaConf.to_container(cfg, resolve=False), "") if str(v) == m.group(1)]
    except Exception:  # noqa: BLE001 - not a config: no key to name
        keys = []
    where = f"{keys[0]}={m.group(1)!r}" if keys else repr(m.group(1))
    return UserError(f"{where} is not a number; pass a number on the command line")


def exit_on_user_error(fn):
    """Wrap a Hydra task function. In a single run a UserError becomes one line and exit 2 here; in a
    multirun it is raised, so the launcher finishes the sweep's other jobs and then reports it (Hydra
    names the failing job's overrides on the line before ours)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            try:
                return fn(*args, **kwargs)
            except (ValueError, TypeError) as e:
                err = _type_error(e, args[0]) if args else None
                if err is None:
                    raise
                raise err from e
        except UserError as e:
            if _multirun():
                raise
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)

    return wrapper


def _multirun() -> bool:
    try:
        return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:  # noqa: BLE001 - outside Hydra
        return False


def cli(main) -> None:
    """Run a @hydra.main function as a command: see the module docstring."""
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises instead of printing; we print one line
    try:
        main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except (HydraException, OmegaConfBaseException) as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:  # e.g. Hydra creating its run folder under a path that is a file
        where = f" {e.filename}" if e.filename else ""
        print(f"error: {e.strerror or type(e).__name__}:{where}; check that path, or set paths.results / "
              "paths.artifacts / data.root to a usable folder", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("error: interrupted; the points already recorded are kept: rerun the same command to resume",
              file=sys.stderr)
        sys.exit(130)
