"""A short run of the chaos loop (hack/chaos/loop.py): a control plane of its own (its etcd and
kube-apiserver get killed), the real operator, sidecar and S3 server, a few iterations, each a
mixed batch with a fault of another kind at a random moment; no invariant may break and every
iteration must converge. The kinds and the timing change with the seed, printed on failure; the
long run is bench/chaos_long.py (`make chaos ARGS="--iterations 100"`)."""
from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path

import pytest
from chaos.loop import FAULTS, run_chaos

pytestmark = pytest.mark.e2e

ITERATIONS = 5


def test_a_short_chaos_run_breaks_no_invariant(tmp_path: Path) -> None:
    seed = int(os.environ.get("FLASHGATE_CHAOS_SEED") or random.randrange(1 << 31))
    faults = random.Random(seed).sample(FAULTS, ITERATIONS)
    report = asyncio.run(run_chaos(iterations=ITERATIONS, seed=seed, faults=faults,
                                   workdir=tmp_path, batch_size=6, converge_timeout=60))
    print(report.text())
    assert report.violations == [], report.text()
    assert report.iterations == ITERATIONS and sum(report.faults.values()) == ITERATIONS
    assert report.actions["good"] > 0 and report.outcomes["Published"] > 0, report.text()
