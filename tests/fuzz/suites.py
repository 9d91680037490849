"""Every fuzz target by name: the trust core's parsers (targets.py) and flashgate's endpoints and
input parsers (endpoints.py). One registry for what runs them all: atheris (atheris_main.py,
test_atheris.py, bench/fuzz_trust.py) and the regression files (test_regressions.py).
"""

from __future__ import annotations

from types import ModuleType

from tests.fuzz import endpoints, targets

SUITES: dict[str, ModuleType] = {"trust": targets, "endpoints": endpoints}
TARGETS = {name: suite for suite in SUITES.values() for name in suite.TARGETS}

COVERED = {
    "trust": [f"flashgate/trust/{m}.py" for m in
              ("cbor", "cose", "keys", "payloads", "keyring", "release")],
    "endpoints": ["flashgate/verifier_sidecar/server.py", "flashgate/verifier_sidecar/config.py",
                  "flashgate/verifier_api/models.py", "flashgate/operator/webhook.py",
                  "flashgate/operator/admission.py", "flashgate/signing/cli.py",
                  "flashgate/signing/resources.py", "flashgate/signing/inputs.py",
                  "flashgate/signing/station.py", "flashgate/signing/files.py"],
}
"""The modules whose coverage by the corpus a long run reports, per suite."""


def suite_of(target: str) -> str:
    return next(name for name, module in SUITES.items() if module is TARGETS[target])


def run(target: str, data: bytes) -> None:
    """One input through one target, within its suite's time limit."""
    TARGETS[target].run(target, data)


def seeds(target: str) -> list[bytes]:
    seeds_of: list[bytes] = TARGETS[target].seeds(target)
    return seeds_of
