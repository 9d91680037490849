"""Coverage-guided fuzzing of one target with atheris (libFuzzer).

    .venv/bin/python -m tests.fuzz.atheris_main TARGET [--seed DIR] [libFuzzer flags] [CORPUS...]

TARGET is one of tests.fuzz.suites.TARGETS (the trust core's parsers, or flashgate's endpoints and
input parsers); flashgate and the fuzz targets are instrumented. `--seed DIR` first writes the
target's seeds (the test vectors, or well-formed requests) into DIR, which should then be given
as the corpus. Every other argument goes to
libFuzzer (e.g. -max_total_time=30, -runs=100000, -timeout=10, -rss_limit_mb=1024,
-artifact_prefix=crashes/). A finding (an AssertionError of the target, any other exception, a
timeout, a memory blow-up) stops the run with a crash file; replay it with
`tests/fuzz/test_regressions.py` after copying it into tests/fuzz/regressions/TARGET/.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

# Every package a target reaches, instrumented as it is first imported (here).
with atheris.instrument_imports(include=["flashgate", "tests.fuzz"]):
    from tests.fuzz import suites

# Instrumented code runs a few times slower; libFuzzer's -timeout catches real hangs anyway.
_SLOWER = 10


def write_seeds(target: str, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for index, data in enumerate(suites.seeds(target)):
        (directory / f"seed-{index:04d}").write_bytes(data)


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[1] not in suites.TARGETS:
        sys.exit(f"usage: {argv[0]} {{{','.join(suites.TARGETS)}}} [--seed DIR] "
                 "[libFuzzer args]")
    target, rest = argv[1], argv[2:]
    module = suites.TARGETS[target]
    if rest[:1] == ["--seed"] and len(rest) >= 2:
        write_seeds(target, Path(rest[1]))
        rest = rest[2:]
    limit = _SLOWER * module.TIME_LIMIT

    def one_input(data: bytes) -> None:
        module.run(target, data, limit)

    atheris.Setup([argv[0], *rest], one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
