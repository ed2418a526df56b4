"""A user error: bad input that the user can fix. Entry points print its one line and exit 2."""

from __future__ import annotations

import functools
import sys


class UserError(Exception):
    """Raised with a one-line message that names the fix."""


def exit_on_user_error(fn):
    """Wrap a Hydra main: a UserError becomes one line on stderr and exit code 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)

    return wrapper
