"""A short coverage-guided run (atheris) of every fuzz target, from its seeds: ~2 s each.

The long run is bench/fuzz_trust.py. A finding here fails the test with libFuzzer's report and
leaves the crash file in the test's temporary directory (see tests/fuzz/atheris_main.py).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuzz.suites import TARGETS

REPO = Path(__file__).resolve().parents[2]
SECONDS = 2

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="atheris is a dev dependency on Linux only"
)


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_a_short_atheris_run_finds_nothing(target: str, tmp_path: Path) -> None:
    corpus, crashes = tmp_path / "corpus", tmp_path / "crashes"
    crashes.mkdir()
    result = subprocess.run(
        [
            sys.executable, "-m", "tests.fuzz.atheris_main", target, "--seed", str(corpus),
            f"-max_total_time={SECONDS}", "-timeout=10", "-rss_limit_mb=1024",
            f"-artifact_prefix={crashes}/", str(corpus),
        ],
        cwd=REPO, capture_output=True, text=True, timeout=SECONDS + 60,
    )  # fmt: skip
    report = result.stderr[-4000:]
    assert result.returncode == 0, (
        f"{target}: {sorted(p.name for p in crashes.iterdir())}\n{report}"
    )
    done = re.search(r"Done (\d+) runs", result.stderr)
    assert done and int(done.group(1)) >= len(list(corpus.iterdir())), report
