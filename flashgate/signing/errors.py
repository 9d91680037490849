"""The signing station's one base error, and the usage error that exits 2.

The CLI catches `StationError` in one place (`cli.main`): it prints the message and the hint, and
exits with `exit_code` (1: a trust, token or HSM failure; 2: the command was not usable as given).
"""

from __future__ import annotations


class StationError(Exception):
    """A failure the user can act on: what went wrong, and a hint of what to do next.

    Attributes:
        message: What went wrong, with the expected and observed values where there are some.
        hint: What to do next, or "" when there is nothing useful to add.
        exit_code: 1 for trust, token and HSM failures (the default).
    """

    exit_code = 1

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(StationError):
    """The command cannot run as given: a flag combination, a missing or unreadable input, an
    output that already exists, a malformed file. Nothing was signed."""

    exit_code = 2
