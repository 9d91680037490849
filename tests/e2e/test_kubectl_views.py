"""What a platform team sees with kubectl, after the real operator decided: a Rejected release
described as a story, `kubectl get flashgate` listing every kind with what matters, the API
server filtering releases by phase, and `flashgate status` (also `kubectl flashgate status`)
leading with what the alerts page about."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .conftest import Fleet

pytestmark = pytest.mark.e2e


def test_kubectl_tells_a_rejection_and_lists_the_fleet(fleet: Fleet) -> None:
    app = fleet.signing_key("app", "application")
    fleet.apply(fleet.release_doc("fw-good", [app], security_version=3))
    fleet.apply(fleet.release_doc("fw-bad", [app], security_version=4,
                                  served=b"firmware IMAGE " * 1000))
    fleet.wait_phase("firmwarerelease", "fw-good", {"Published"})
    bad = fleet.wait_phase("firmwarerelease", "fw-bad", {"Rejected"})

    # describe: the checks in order (passed, passed, failed with expected vs observed), then
    # the event that says the same.
    text = fleet.kubectl("describe", "firmwarerelease", "fw-bad").stdout
    status_part = text.split("\nStatus:")[1].split("\nEvents:")[0]
    checks = [(line.split()[1], previous.split()[1]) for previous, line in
              zip(status_part.splitlines(), status_part.splitlines()[1:], strict=False)
              if line.strip().startswith("Type:")]
    assert checks == [("SignatureVerified", "True"), ("RollbackChecked", "True"),
                      ("IntegrityVerified", "False"), ("Ready", "False")]
    message = bad["status"]["message"]
    assert message.startswith("artifact sha256 is ") and "the signed sha256 is" in message
    conditions = {c["type"]: (c["status"], c["reason"]) for c in bad["status"]["conditions"]}
    assert conditions == {"SignatureVerified": ("True", "Passed"),
                          "RollbackChecked": ("True", "Passed"),
                          "IntegrityVerified": ("False", "HashMismatch"),
                          "Ready": ("False", "HashMismatch")}
    events = text.split("Events:")[1]
    assert "Warning  HashMismatch" in events and "flashgate-operator" in events
    assert fleet.event_reasons("fw-bad") == ["HashMismatch"]  # a quick verdict: no Verifying

    # kubectl get flashgate: every kind of the category, with phase, tier, reason, expiry.
    rows = [line.split() for line in
            fleet.kubectl("get", "flashgate", "-o", "wide").stdout.splitlines()]
    names = {row[0] for row in rows if row}
    assert {"firmwarerelease.ota.flashgate.dev/fw-good",
            "firmwarerelease.ota.flashgate.dev/fw-bad", "signingkey.ota.flashgate.dev/app",
            "rollbackfloor.ota.flashgate.dev/gw-3000.application",
            "revocationlist.ota.flashgate.dev/revocations"} <= names
    (bad_row,) = [r for r in rows if r and r[0].endswith("/fw-bad")]
    assert bad_row[1:4] == ["Rejected", "application", "gw-3000"] and "HashMismatch" in bad_row
    (key_row,) = [r for r in rows if r and r[0].endswith("/app")]
    assert key_row[1:3] == ["Active", "application"]
    every = [line.split() for line in
             fleet.kube.kubectl("get", "flashgate", "-A").stdout.splitlines()]
    assert [fleet.namespace, "firmwarerelease.ota.flashgate.dev/fw-bad", "Rejected"] in \
        [row[:3] for row in every]
    until = fleet.get("signingkey", "app")["status"]["trustedUntil"]  # when it ends, not <invalid>
    assert [fleet.namespace, "signingkey.ota.flashgate.dev/app", "Active", "application",
            until] in [row[:5] for row in every]

    # The API server filters by phase, tier and reason (the alerts' and runbooks' commands).
    def selected(selector: str) -> list[str]:
        return fleet.kubectl("get", "firmwarereleases", "--field-selector", selector,
                             "-o", "jsonpath={.items[*].metadata.name}").stdout.split()

    assert selected("status.phase=Rejected,spec.tier=application") == ["fw-bad"]
    assert selected("status.reason=HashMismatch") == ["fw-bad"]
    assert selected("status.phase!=Published,status.phase!=Rejected,"
                    "status.phase!=Withdrawn") == []
    assert fleet.kubectl("get", "signingkeys", "--field-selector", "status.phase=Active",
                         "-o", "name").stdout.split() == ["signingkey.ota.flashgate.dev/app"]

    # flashgate status: the alerts' view first.
    status = subprocess.run(
        [sys.executable, "-m", "flashgate.signing", "status", "-n", fleet.namespace],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "KUBECONFIG": str(fleet.kube.kubeconfig)})
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    section = lines[lines.index("NEEDS ATTENTION") + 1:lines.index("TRUST SET") - 1]
    assert [line.split()[:4] for line in section] == [
        ["WHAT", "NAME", "TIER", "DETAIL"],
        ["rejected", "fw-bad", "application", "HashMismatch:"]]
