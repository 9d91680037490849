"""Inputs that once broke a fuzz target, replayed through it: tests/fuzz/regressions/TARGET/NAME.

A crash file of atheris (or bench/fuzz_trust.py) becomes a regression test by being copied there;
the README beside them says what each one found.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fuzz.suites import TARGETS, run

REGRESSIONS = Path(__file__).resolve().parent / "regressions"
FILES = sorted(p for p in REGRESSIONS.glob("*/*") if p.parent.name in TARGETS)


def test_every_regression_file_belongs_to_a_target() -> None:
    stray = [p for p in REGRESSIONS.glob("*/*") if p.parent.name not in TARGETS]
    assert not stray
    assert FILES


@pytest.mark.parametrize("path", FILES, ids=[f"{p.parent.name}/{p.name}" for p in FILES])
def test_regression(path: Path) -> None:
    run(path.parent.name, path.read_bytes())
