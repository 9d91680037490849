"""Crash points for tests: the process dies at a named step, as if killed with SIGKILL there.

A real `kill -9` cannot be aimed between two API writes, and that is exactly where a restart must
be shown to neither lose nor repeat a publication; so the e2e tests start the operator with
FLASHGATE_FAILPOINTS=after-channel-write (a comma-separated list of names) and restart it. Unset,
as in every real deployment, a failpoint is a dictionary lookup and nothing else.
"""
from __future__ import annotations

import os
import sys

_ACTIVE = frozenset(filter(None, os.environ.get("FLASHGATE_FAILPOINTS", "").split(",")))


def failpoint(name: str) -> None:
    if name in _ACTIVE:
        print(f"flashgate-operator: failpoint {name}: exiting as if killed", file=sys.stderr,
              flush=True)
        os._exit(137)
