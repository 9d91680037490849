"""Scale, at a size CI can afford: a restart with 2,000 decided releases in a fleet, and fleets
split between two operators.

The restart is the case that once left the gate closed: an operator that, at start, did work per
object for every object it watched (quadratic in the number of objects) published nothing for
over ten minutes with 10,000 releases. Here the operator is killed, the next release is created,
and it must be Published within a bound far below that (bench/bench_operator.py measures the
10,000 case).
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from kubernetes import client, config

from .conftest import Fleet, GateSystem

pytestmark = pytest.mark.e2e

DECIDED = 2000
BOUND_SECONDS = 20


def _api(gate_system: GateSystem) -> client.CustomObjectsApi:
    configuration = client.Configuration()
    config.load_kube_config(str(gate_system.kube.kubeconfig), client_configuration=configuration)
    configuration.connection_pool_maxsize = 16
    return client.CustomObjectsApi(client.ApiClient(configuration))


def _decided_release(fleet: Fleet, index: int) -> dict[str, Any]:
    doc = fleet.release_doc(f"old-{index}", [], product=f"p-{index}", data=b"x")
    return doc


def test_restart_with_thousands_of_releases_publishes_the_next_one_quickly(
        fleet: Fleet, gate_system: GateSystem, no_webhook: None) -> None:
    app = fleet.signing_key("app", "application")
    api = _api(gate_system)
    gate_system.stop_operator(kill=True)
    docs = [_decided_release(fleet, i) for i in range(DECIDED)]

    def create_decided(doc: dict[str, Any]) -> None:
        name = doc["metadata"]["name"]
        api.create_namespaced_custom_object("ota.flashgate.dev", "v1alpha1", fleet.namespace,
                                            "firmwarereleases", doc)
        api.patch_namespaced_custom_object_status(
            "ota.flashgate.dev", "v1alpha1", fleet.namespace, "firmwarereleases", name,
            {"status": {"phase": "Rejected", "reason": "ThresholdNotMet", "message": "unsigned",
                        "observedGeneration": 1}})

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create_decided, docs))
    started = time.monotonic()
    gate_system.start_operator(register_webhook=False, wait_ready=False)
    fleet.apply(fleet.release_doc("next", [app], security_version=3))
    status = fleet.wait_phase("firmwarerelease", "next", {"Published", "Rejected"},
                              timeout=BOUND_SECONDS + 30)["status"]
    took = time.monotonic() - started
    assert status["phase"] == "Published", status
    assert took < BOUND_SECONDS, f"the next release took {took:.1f}s after the restart"
    # Decided releases stay decided: nothing was verified or written again.
    assert fleet.get("firmwarerelease", "old-0")["status"]["phase"] == "Rejected"
    gate_system.stop_operator()
    gate_system.start_operator()  # as the package's other tests expect it


def test_fleets_split_between_two_operators(gate_system: GateSystem, fleet: Fleet) -> None:
    """Correctness does not depend on one replica; scaling out is operators per set of
    namespaces. A second operator serving only its fleets publishes there, and the first
    operator (all namespaces) agreeing on the same objects changes nothing (one Published event,
    one ledger entry)."""
    second = GateSystem(gate_system.kube, gate_system.workdir / "split", root=gate_system.root,
                        sidecar_port=gate_system.sidecar_port)
    second.workdir.mkdir(exist_ok=True)
    other = Fleet(gate_system, gate_system.kube.namespace("split"))
    second.start_operator(register_webhook=False, namespaces=[other.namespace])
    try:
        key = other.signing_key("app", "application")
        other.apply(other.release_doc("split-1", [key], security_version=2))
        assert other.wait_phase("firmwarerelease", "split-1", {"Published", "Rejected"})[
            "status"]["phase"] == "Published"
        other.wait_for(lambda: "Published" in other.event_reasons("split-1"), "the event")
        time.sleep(1)
        assert other.event_reasons("split-1").count("Published") == 1
        floor = other.get("rollbackfloor", "gw-3000.application")
        assert [p["release"] for p in floor["status"]["publications"]] == ["split-1"]
    finally:
        second.stop_operator()
