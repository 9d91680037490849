"""Key rotation as resource state, on time and without edits; and a second operator replica
that must never publish twice."""
from __future__ import annotations

import time
from typing import Any

import pytest

from flashgate.trust.vocabulary import format_time as rfc3339

from .conftest import Fleet, GateSystem

pytestmark = pytest.mark.e2e


def _phase(fleet: Fleet, name: str) -> str:
    return str((fleet.get("signingkey", name).get("status") or {}).get("phase"))


def test_rotation_staged_active_retiring_retired_on_time(fleet: Fleet) -> None:
    old = fleet.signing_key("app-old", "application")
    start = int(time.time())
    new = fleet.signing_key("app-new", "application", wait="Staged", replaces="app-old",
                            overlap="4s", activate_at=start + 4)
    assert _phase(fleet, "app-old") == "Active"
    # Dual trust: a release signed by the staged successor already verifies.
    fleet.apply(fleet.release_doc("by-staged", [new], security_version=1))
    assert (fleet.wait_phase("firmwarerelease", "by-staged", {"Published", "Rejected"})
            ["status"]["phase"]) == "Published"
    # activateAt passes with no edit: the successor is Active, the old key Retiring.
    fleet.wait_phase("signingkey", "app-new", {"Active"}, timeout=15)
    retiring = fleet.wait_phase("signingkey", "app-old", {"Retiring"}, timeout=5)
    assert retiring["status"]["trustedUntil"] == rfc3339(start + 4 + 4)
    fleet.apply(fleet.release_doc("by-retiring", [old], security_version=2))
    assert (fleet.wait_phase("firmwarerelease", "by-retiring", {"Published", "Rejected"})
            ["status"]["phase"]) == "Published"
    # The overlap ends with no edit: the old key is Retired and no longer signs.
    fleet.wait_phase("signingkey", "app-old", {"Retired"}, timeout=15)
    fleet.apply(fleet.release_doc("by-retired", [old], security_version=3))
    status = fleet.wait_phase("firmwarerelease", "by-retired", {"Published", "Rejected"})["status"]
    assert (status["phase"], status["reason"]) == ("Rejected", "KeyExpired")


def test_key_expires_on_time(fleet: Fleet) -> None:
    now = int(time.time())
    fleet.signing_key("short", "config", not_before=now - 60, not_after=now + 4)
    expired = fleet.wait_phase("signingkey", "short", {"Expired"}, timeout=15)
    conditions = {c["type"]: c["status"] for c in expired["status"]["conditions"]}
    assert conditions["Trusted"] == "False" and conditions["Endorsed"] == "True"


def test_second_operator_replica_never_publishes_twice(fleet: Fleet, gate_system: GateSystem) -> None:
    """Two operators race on the same release: the floor is raised once and the job document is
    written once (optimistic concurrency + idempotent publishing; no leader election)."""
    second = GateSystem(gate_system.kube, gate_system.workdir / "replica", root=gate_system.root,
                        sidecar_port=gate_system.sidecar_port)
    second.workdir.mkdir(exist_ok=True)
    second.start_operator(register_webhook=False)
    try:
        app = fleet.signing_key("app", "application")
        for n in range(1, 6):
            fleet.apply(fleet.release_doc(f"race-{n}", [app], security_version=n))
            status: dict[str, Any] = fleet.wait_phase("firmwarerelease", f"race-{n}",
                                                      {"Published", "Rejected"})["status"]
            assert status["phase"] == "Published", status
            assert fleet.channel()["application"]["publishedAt"] == status["publishedAt"]
            fleet.wait_for(lambda n=n: "Published" in fleet.event_reasons(f"race-{n}"), "event")
        time.sleep(2)  # let the slower replica finish whatever it was doing
        for n in range(1, 6):
            assert fleet.event_reasons(f"race-{n}").count("Published") == 1
        assert fleet.floor() == 5
        assert fleet.channel()["application"]["release"] == "race-5"
    finally:
        second.stop_operator()
