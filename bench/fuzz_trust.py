#!/usr/bin/env python3
"""A long coverage-guided fuzzing run (atheris) of the trust core's parsers and of flashgate's
endpoints and input parsers, with figures.

    .venv/bin/python bench/fuzz_trust.py --seconds 600               # each target 10 minutes
    .venv/bin/python bench/fuzz_trust.py --runs 200000 --targets cbor,release
    .venv/bin/python bench/fuzz_trust.py --suite endpoints --seconds 300
    .venv/bin/python bench/fuzz_trust.py --seconds 60 --out /tmp/fuzz  # keep corpus and crashes

The targets are those of tests/fuzz/suites.py: the trust core's (tests/fuzz/targets.py: each
compares the core with an independent reference, bounds time, and checks one encoding per
meaning) and the endpoints' (tests/fuzz/endpoints.py: the sidecar's HTTP API, the admission
webhook, the signing station's YAML and command line, the sidecar's configuration; never an
unexpected exception or a 500, never a hang). Each runs in its own process
(tests/fuzz/atheris_main.py), --jobs at a time, from the test vectors plus whatever corpus --out
already holds. A finding stops that target's process; it is restarted on the same corpus until its
time or runs are used up. Afterwards the whole corpus is replayed under coverage.py.

It prints, per target and in total: executions, executions per second, corpus size, libFuzzer's
edge coverage and peak RSS; then line and branch coverage, by the corpus, of the modules each
suite reaches (tests/fuzz/suites.py COVERED); then every crash as a file with the command that
reproduces it and how to make it a regression test. Exit status 1 when there was a crash.
Figures drift between machines.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))



@dataclass
class Outcome:
    target: str
    executions: int = 0
    seconds: float = 0.0
    edges: int = 0
    peak_rss_mb: int = 0
    crashes: list[Path] = field(default_factory=list)
    restarts: int = 0


def _stat(name: str, text: str) -> int:
    found = re.findall(rf"stat::{name}:\s+(\d+)", text)
    return int(found[-1]) if found else 0


def fuzz(target: str, out: Path, seconds: float | None, runs: int | None) -> Outcome:
    """Fuzz one target until its seconds or runs are used up, restarting after each finding."""
    corpus, crashes = out / "corpus" / target, out / "crashes" / target
    crashes.mkdir(parents=True, exist_ok=True)
    outcome = Outcome(target)
    started = time.monotonic()
    while True:
        budget = []
        if seconds is not None:
            left = seconds - (time.monotonic() - started)
            if left < 1:
                break
            budget.append(f"-max_total_time={int(left)}")
        if runs is not None:
            if outcome.executions >= runs:
                break
            budget.append(f"-runs={runs - outcome.executions}")
        before = set(crashes.iterdir())
        result = subprocess.run(
            [
                sys.executable, "-m", "tests.fuzz.atheris_main", target, "--seed", str(corpus),
                *budget, "-timeout=10", "-rss_limit_mb=1024", "-print_final_stats=1",
                f"-artifact_prefix={crashes}/", str(corpus),
            ],
            cwd=REPO, capture_output=True, text=True,
        )  # fmt: skip
        (out / f"{target}.log").open("a").write(result.stderr)
        outcome.executions += _stat("number_of_executed_units", result.stderr)
        outcome.peak_rss_mb = max(outcome.peak_rss_mb, _stat("peak_rss_mb", result.stderr))
        edges = re.findall(r"cov: (\d+)", result.stderr)
        outcome.edges = max([outcome.edges, *map(int, edges)])
        new = sorted(set(crashes.iterdir()) - before)
        outcome.crashes += new
        if result.returncode == 0:
            break
        if not new:  # a failure that left no input behind: the log says why
            sys.exit(f"{target}: atheris exited {result.returncode}\n{result.stderr[-3000:]}")
        outcome.restarts += 1
        if outcome.restarts > 20:
            break
    outcome.seconds = time.monotonic() - started
    return outcome


def replay(target: str, directories: list[str]) -> None:
    """Run every file of `directories` through `target` (no time limit: coverage slows it)."""
    from tests.fuzz.suites import TARGETS

    for directory in directories:
        for path in sorted(Path(directory).iterdir()):
            # A failing input is the fuzzing run's crash to report; here it only counts coverage.
            with contextlib.suppress(AssertionError):
                TARGETS[target].run(target, path.read_bytes(), time_limit=None)


def coverage_report(out: Path, targets: list[str]) -> str:
    from tests.fuzz.suites import COVERED, suite_of

    data = out / ".coverage"
    for target in targets:
        subprocess.run(
            [
                sys.executable, "-m", "coverage", "run", "--branch", "--parallel-mode",
                f"--data-file={data}", "--include=*/flashgate/*", __file__, "--replay",
                target, str(out / "corpus" / target),
            ],
            cwd=REPO, check=True,
        )  # fmt: skip
    subprocess.run(
        [sys.executable, "-m", "coverage", "combine", f"--data-file={data}", "-q"],
        cwd=out,
        check=True,
    )
    include = ",".join(f"*/{m}" for s in sorted({suite_of(t) for t in targets})
                       for m in COVERED[s])
    result = subprocess.run(
        [
            sys.executable, "-m", "coverage", "report", f"--data-file={data}",
            f"--include={include}", "--show-missing", "--precision=1",
        ],
        cwd=REPO, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return result.stdout


def main() -> int:
    from tests.fuzz.suites import SUITES, TARGETS

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, help="per target (default 60 unless --runs)")
    parser.add_argument("--runs", type=int, help="executions per target")
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated")
    parser.add_argument("--suite", choices=sorted(SUITES), help="all the targets of one suite")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, help="corpus, crashes and logs (default: a new dir)")
    parser.add_argument("--replay", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.replay:
        replay(args.replay[0], args.replay[1:])
        return 0
    targets = list(SUITES[args.suite].TARGETS) if args.suite else args.targets.split(",")
    unknown = set(targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets {sorted(unknown)}; known: {', '.join(TARGETS)}")
    seconds = args.seconds if args.seconds or args.runs else 60.0
    out = args.out or Path(tempfile.mkdtemp(prefix="fuzz-trust-"))
    out.mkdir(parents=True, exist_ok=True)

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        outcomes = list(pool.map(lambda t: fuzz(t, out, seconds, args.runs), targets))
    wall = time.monotonic() - started

    print(f"fuzzing: {len(targets)} targets, {args.jobs} at a time, {wall:.0f} s wall; in {out}")
    print(f"{'target':14} {'executions':>12} {'exec/s':>9} {'corpus':>7} {'edges':>6} "
          f"{'RSS MB':>7} {'crashes':>8}")  # fmt: skip
    for o in outcomes:
        corpus = len(list((out / "corpus" / o.target).iterdir()))
        print(f"{o.target:14} {o.executions:>12,} {o.executions / o.seconds:>9,.0f} {corpus:>7} "
              f"{o.edges:>6} {o.peak_rss_mb:>7} {len(o.crashes):>8}")  # fmt: skip
    total = sum(o.executions for o in outcomes)
    busy = sum(o.seconds for o in outcomes)
    print(
        f"{'total':14} {total:>12,} {total / busy:>9,.0f} (per process; {total / wall:,.0f} "
        "per second of wall time)"
    )
    print("\ncoverage of the modules the targets reach, by the corpus (coverage.py, lines and "
          "branches):")
    print(coverage_report(out, targets))

    crashes = [(o.target, path) for o in outcomes for path in o.crashes]
    for target, path in crashes:
        name = f"{target}-{path.name.split('-')[-1][:12]}"
        print(f"CRASH {target}: {path}")
        print(
            f'  reproduce: .venv/bin/python -c "from tests.fuzz.suites import run; '
            f"run('{target}', open('{path}', 'rb').read())\""
        )
        print(f"  as a regression test: cp {path} tests/fuzz/regressions/{target}/{name} && "
              f".venv/bin/pytest tests/fuzz/test_regressions.py -k '{target}/{name}'")  # fmt: skip
    if not crashes:
        print("no crashes")
    return 1 if crashes else 0


if __name__ == "__main__":
    sys.exit(main())
