#!/usr/bin/env python3
"""The chaos loop's long run (issue 13): 100 iterations, every fault kind about nine times.

    .venv/bin/python bench/chaos_long.py                       # 100 iterations
    .venv/bin/python bench/chaos_long.py --iterations 30 --seed 7 --json chaos.json

The same as `make chaos ARGS="--iterations 100"` (hack/chaos/loop.py says what an iteration is).
It prints, per iteration, the fault and the time to converge, then the report: iterations, faults
injected by kind, what the batches held and what became of the releases, invariant violations
(each named; there must be none) and the time to converge after healing (p50, p99, max). Exit
status 1 when an invariant was violated (the logs of every process are kept then). Figures drift
between machines; on 2 shared cores an iteration takes 10 to 20 s.
"""
from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "hack"), str(REPO)]

from chaos.loop import main  # noqa: E402

if __name__ == "__main__":
    args = sys.argv[1:]
    if not any(a.startswith("--iterations") for a in args):
        args = ["--iterations", "100", *args]
    sys.exit(main(args))
