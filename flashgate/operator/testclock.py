"""A clock offset for tests: the operator's wall clock jumps when a test says so.

Key phases change with time (activation, end of an overlap, expiry) and releases are verified at
the operator's `now`. The chaos loop (hack/chaos) must move that time by hours, in seconds, while
the operator runs, as an NTP step or a resumed virtual machine does; the process's own clock
cannot be set without privileges that would move every other process's too. So the e2e harness
starts the operator with FLASHGATE_CLOCK_OFFSET_FILE naming a file that holds a number of seconds
added to time.time(), read again whenever the file changes (replace it atomically). Unset, as in
every real deployment, `operator_clock()` is time.time itself and nothing here runs.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("flashgate.operator")

ENVIRONMENT = "FLASHGATE_CLOCK_OFFSET_FILE"


def operator_clock() -> Callable[[], float]:
    """The operator's wall clock: time.time, or an `OffsetClock` when the variable is set."""
    path = os.environ.get(ENVIRONMENT)
    if not path:
        return time.time
    log.warning("%s is set: the clock is offset by the seconds in %s (tests only)",
                ENVIRONMENT, path)
    return OffsetClock(Path(path))


class OffsetClock:
    """time.time() plus the seconds written in a file (0 while there is none or it is unreadable;
    the last good value while a write is in progress)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0.0
        self._stamp: tuple[int, int, int] | None = None

    def __call__(self) -> float:
        try:
            stat = os.stat(self.path)
            stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
            if stamp != self._stamp:
                self.offset = float(self.path.read_text().strip() or 0)
                self._stamp = stamp
        except (OSError, ValueError):
            pass
        return time.time() + self.offset
