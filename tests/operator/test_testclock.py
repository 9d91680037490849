"""The test-only clock offset of the operator (flashgate/operator/testclock.py)."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from flashgate.operator.testclock import ENVIRONMENT, OffsetClock, operator_clock


def test_unset_the_clock_is_time_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENVIRONMENT, raising=False)
    assert operator_clock() is time.time


def test_the_offset_follows_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "offset"
    monkeypatch.setenv(ENVIRONMENT, str(path))
    clock = operator_clock()
    assert isinstance(clock, OffsetClock)
    assert abs(clock() - time.time()) < 1  # no file yet: no offset
    path.write_text("7200\n")
    assert abs(clock() - time.time() - 7200) < 1
    replacement = tmp_path / "offset.new"
    replacement.write_text("-30")
    replacement.replace(path)  # as the chaos loop writes it: atomically
    assert abs(clock() - time.time() + 30) < 1
    path.write_text("not a number")
    assert abs(clock() - time.time() + 30) < 1  # the last good value stands
