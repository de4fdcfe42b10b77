"""User errors: mistakes in the user's files or flags, reported as one line on stderr, exit 2.

Library code raises `UserError` (a ValueError) where the input, not the code, is wrong; the
entry points in experiments/ wrap their `main` with `exit_on_user_error`, so such a mistake
never shows a traceback. Anything else still does: it is a bug.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable

EXIT_USER_ERROR = 2


class UserError(ValueError):
    """A mistake in the user's input (file, column, flag, checkpoint); the message says which
    and what to do."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or directory the user named does not exist."""


class NoMoleculesError(UserError):
    """An input of which not one molecule could be featurised (every record skipped)."""


class UnknownDatasetError(UserError, KeyError):
    """A data set name that is not registered (also a KeyError, as `get_spec` always raised)."""

    def __str__(self) -> str:  # KeyError would quote the message.
        return str(self.args[0])


def one_line(message: str) -> str:
    """The message on one line (newlines of embedded file text joined with ' | ')."""
    return " | ".join(part.strip() for part in str(message).splitlines() if part.strip())


def exit_on_user_error(main: Callable) -> Callable:
    """Wraps an absl `main(argv)`: a `UserError` prints `error: <message>` as one line on stderr
    and exits with status 2."""

    @functools.wraps(main)
    def wrapped(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as error:
            print(f"error: {one_line(error)}", file=sys.stderr, flush=True)
            sys.exit(EXIT_USER_ERROR)

    return wrapped
