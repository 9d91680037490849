"""A real Prometheus (hack/promserver.py) scrapes the real operator and sidecar of this session
with flashgate's alert rules: a tampered release fires FlashgateReleaseRejected with its fleet,
tier and reason, a good one does not, the pager's gauges carry what the cluster holds, and every
query of the dashboard runs without error."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from dashboard import load, queries
from promserver import PrometheusServer

from .conftest import Fleet, GateSystem

pytestmark = pytest.mark.e2e


@pytest.fixture
def prometheus(gate_system: GateSystem, tmp_path: Path) -> Any:
    targets = {"flashgate-operator": [f"127.0.0.1:{gate_system.metrics_port}"],
               "flashgate-verifier": [f"127.0.0.1:{gate_system.sidecar_port}"]}
    with PrometheusServer(tmp_path / "prometheus", targets) as prom:
        prom.wait_for("both targets up", lambda: len(prom.query("up == 1")) == 2)
        yield prom


def value(prom: PrometheusServer, expr: str) -> float | None:
    found = prom.query(expr)
    return float(found[0]["value"][1]) if found else None


def test_a_tampered_release_pages_and_a_good_one_does_not(
        gate_system: GateSystem, prometheus: PrometheusServer) -> None:
    prom = prometheus
    good = Fleet(gate_system, gate_system.kube.namespace("good"))
    bad = Fleet(gate_system, gate_system.kube.namespace("bad"))
    signers = {f.namespace: f.signing_key("app", "application") for f in (good, bad)}
    good.apply(good.release_doc("fw-1", [signers[good.namespace]], security_version=4))
    bad.apply(bad.release_doc("fw-1", [signers[bad.namespace]], security_version=4,
                              served=b"firmware IMAGE " * 1000))
    good.wait_phase("firmwarerelease", "fw-1", {"Published"})
    bad.wait_phase("firmwarerelease", "fw-1", {"Rejected"})

    def rejected_alert() -> list[dict[str, Any]]:
        return [a for a in prom.alerts("FlashgateReleaseRejected")
                if a["labels"].get("namespace") == bad.namespace]

    (alert,) = prom.wait_for("the rejection alert", rejected_alert, timeout=20)
    assert alert["state"] in ("pending", "firing")
    assert alert["labels"] == {"alertname": "FlashgateReleaseRejected", "severity": "warning",
                               "namespace": bad.namespace, "tier": "application",
                               "reason": "HashMismatch"}
    assert "--field-selector reason=HashMismatch" in alert["annotations"]["description"]
    assert alert["annotations"]["runbook_url"] == "docs/runbooks.md#flashgatereleaserejected"
    # The command the alert gives names the release, and its event says why.
    events = bad.kubectl("get", "events", "--field-selector", "reason=HashMismatch",
                         "-o", "jsonpath={.items[*].involvedObject.name}").stdout.split()
    assert events == ["fw-1"]

    # The good fleet's publication has been scraped, and rules evaluated since: no alert of it.
    prom.wait_for("the publication scraped", lambda: value(
        prom, f'flashgate_release_publications_total{{namespace="{good.namespace}"}}') == 1)
    time.sleep(2.5)  # two more evaluation rounds
    assert [a for a in prom.alerts() if a["labels"].get("namespace") == good.namespace] == []

    # What the pager's other alerts read, as the cluster holds it.
    ns = good.namespace
    assert value(prom, f'flashgate_rollback_floor_security_version{{namespace="{ns}"}}') == 4
    assert value(prom, f'flashgate_tier_without_active_key{{namespace="{ns}"}}') == 0
    key = good.get("signingkey", "app")
    not_after = value(prom, 'flashgate_signing_key_not_after_timestamp_seconds'
                            f'{{namespace="{ns}", signingkey="app", phase="Active"}}')
    assert not_after == good.now + 30 * 86400
    assert key["status"]["trustedUntil"] == time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                          time.gmtime(not_after))
    assert value(prom, "flashgate_verifier_reachable") == 1
    assert value(prom, "flashgate_operator_ready") == 1
    assert value(prom, f'flashgate_release_verified_bytes_total{{namespace="{ns}"}}') == \
        len(b"firmware image " * 1000)
    assert value(prom, 'sum(flashgate_verifier_fetch_bytes_total{scheme="file"})') >= \
        len(b"firmware image " * 1000) + len(b"firmware IMAGE " * 1000)


def test_every_dashboard_query_runs(gate_system: GateSystem, prometheus: PrometheusServer,
                                    fleet: Fleet) -> None:
    signer = fleet.signing_key("app", "application")
    fleet.apply(fleet.release_doc("fw-1", [signer], security_version=2))
    fleet.wait_phase("firmwarerelease", "fw-1", {"Published"})
    prom = prometheus
    prom.wait_for("the publication scraped", lambda: value(
        prom, f'flashgate_rollback_floor_security_version{{namespace="{fleet.namespace}"}}'))
    board = load()
    found = queries(board, namespace=fleet.namespace, rate_interval="30s")
    assert {q.panel for q in found} == {p["title"] for p in board["panels"]}
    for q in found:  # each runs without error (PrometheusError otherwise)
        end = time.time()
        prom.query(q.expr) if q.instant else prom.query_range(q.expr, end - 60, end, 5)
    # Panels of what this fleet holds show it (the others may be empty in a quiet fleet); rates
    # need two samples of a counter, so a few scrapes.
    for q in found:
        if q.panel in ("Operator ready", "Sidecar reachable", "Releases by phase",
                       "Keys by phase", "Key expiry", "Rollback floors", "Verification latency",
                       "Bytes verified"):
            prom.wait_for(f"{q.panel}: {q.expr}", lambda q=q: prom.query(q.expr) if q.instant
                          else prom.query_range(q.expr, time.time() - 60, time.time(), 5),
                          timeout=15)
