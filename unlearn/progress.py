"""Progress bars for the long stages (training and attack steps, sampling, MIA scoring, the SA Fisher, FID), all
behind one switch: the environment variable UNLEARN_PROGRESS.

    UNLEARN_PROGRESS=1   bars always (also into a log file)
    UNLEARN_PROGRESS=0   no bars
    (unset or empty)     bars only when stderr is a terminal (tqdm's own rule)

Bars write to stderr and vanish when done (leave=False); the records, the tables and the log lines are unchanged.
A value other than these is refused by every command before it starts (unlearn.errors.cli): one line, exit 2.
"""

from __future__ import annotations

import os
import sys

from tqdm.auto import tqdm

SWITCH = "UNLEARN_PROGRESS"
_VALUES = {"1": False, "0": True, "": None}  # the value -> tqdm's `disable` (None: only on a terminal)


def problem() -> str | None:
    """What is wrong with the switch's value, naming the fix; None when it is good."""
    value = os.environ.get(SWITCH, "").strip()
    if value in _VALUES:
        return None
    return f"{SWITCH}={value!r}: use 1 (progress bars on), 0 (off) or leave it unset (bars on a terminal only)"


def disabled() -> bool | None:
    """tqdm's `disable` for the switch's value (the commands refuse a bad value before they start)."""
    if (line := problem()) is not None:
        raise ValueError(line)
    return _VALUES[os.environ.get(SWITCH, "").strip()]


def shown() -> bool:
    """Whether bars are drawn now (for libraries with a verbose flag of their own, e.g. torch-fidelity)."""
    d = disabled()
    return (not d) if d is not None else sys.stderr.isatty()


def bar(iterable=None, *, total: int | None = None, desc: str | None = None, unit: str = "it"):
    """A progress bar (tqdm) obeying the switch; use as tqdm: `for x in bar(xs, desc=...)` or `with bar(total=n)`."""
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disabled(), leave=False, dynamic_ncols=True)
