"""Crash points for tests: the process dies at a named step, as if killed with SIGKILL there.

A real `kill -9` (or a power cut) cannot be aimed between two writes, and that is exactly where a
restart must be shown to neither lose nor repeat work: the operator between its API writes (the
e2e tests start it with FLASHGATE_FAILPOINTS=after-channel-write), the device agent between the
steps of an install (docs/devices.md, "Crash safety"). FLASHGATE_FAILPOINTS is a comma-separated
list of names; unset, as in every real deployment, a failpoint is a set lookup and nothing else.
"""
from __future__ import annotations

import os
import sys

_ACTIVE = frozenset(filter(None, os.environ.get("FLASHGATE_FAILPOINTS", "").split(",")))


def failpoint(name: str) -> None:
    if name in _ACTIVE:
        print(f"{os.path.basename(sys.argv[0]) or 'flashgate'}: failpoint {name}: exiting as if "
              "killed", file=sys.stderr, flush=True)
        os._exit(137)
