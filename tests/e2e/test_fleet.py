"""The fleet simulation (hack/fleetsim.py) with a few dozen devices: the six scenarios of
docs/devices.md against the real control plane, operator, sidecar, delivery service and
versitygw, each device the reference agent with its own certificate and files. Each test asserts
the scenario's counts (installed, refused by reason, stranded, bad images written, bricked) and
prints them; bench/bench_fleet.py runs the same scenarios with 1,000 devices.
"""
from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fleetsim import (
    Counts,
    SimFleet,
    Stack,
    delivery_owned,
    expired_url,
    good_release,
    leak_drill,
    planned_rotation,
    quiet,
    start_stack,
    stop_stack,
    store_owned,
)

from ..verifier_sidecar.test_s3 import s3_server_for_tests
from .conftest import GateSystem

pytestmark = pytest.mark.e2e

N = 24
SCENARIOS = ("good", "store", "path", "url", "leak", "rotation")


@dataclass
class Sim:
    stack: Stack
    namespaces: dict[str, str]

    def fleet(self, scenario: str) -> SimFleet:
        return SimFleet(self.stack, self.namespaces[scenario])


@pytest.fixture(scope="module")
def sim(gate_system: GateSystem, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sim]:
    namespaces = {s: gate_system.kube.namespace(f"sim-{s}") for s in SCENARIOS}
    quiet()
    for server in s3_server_for_tests(iam=True):
        stack = start_stack(gate_system, server, gate_system.root,
                            tmp_path_factory.mktemp("fleetsim"), list(namespaces.values()),
                            ttl=3)
        try:
            yield Sim(stack, namespaces)
        finally:
            stop_stack(stack)


def clean(counts: Counts) -> None:
    print(counts.summary(), counts.notes)
    assert (counts.bad_images, counts.bricked) == (0, 0), counts.summary()


def test_1_a_good_release_is_installed_once_by_every_device(sim: Sim) -> None:
    counts = asyncio.run(good_release(sim.fleet("good"), N))
    clean(counts)
    assert (counts.installed, counts.refused, counts.stranded) == (N, {}, 0)
    assert counts.notes["installs_per_device"] == [(1, N)]
    assert counts.notes["installs_after"] == 0
    assert counts.notes["counters_raised"] == N


def test_2_an_owned_artifact_store_gets_every_device_to_refuse(sim: Sim) -> None:
    counts = asyncio.run(store_owned(sim.fleet("store"), N))
    clean(counts)
    assert (counts.installed, counts.refused) == (0, {"HashMismatch": N})
    assert counts.notes["slot_writes"] == 0
    # What operators see: devices refusing this release, and why.
    assert counts.notes["release_table_row"] == {"devicesInstalled": 0,
                                                 "devicesRefusing": {"HashMismatch": N}}
    assert counts.notes["devices_refusing_gauge"] == N


def test_3_an_owned_delivery_path_is_a_denial_of_service_not_a_fleet(sim: Sim) -> None:
    counts = asyncio.run(delivery_owned(sim.fleet("path"), N))
    clean(counts)
    assert counts.notes["attacks"] == {
        "forged signature": {"SignatureInvalid": N},
        "old release (rollback)": {"RollbackRejected": N},
        "another tier, signed by the application key": {"KeyNotTrustedForTier": N},
        "another fleet's release": {"UnknownKey": N},
        "bundle: endorsement signed by a non-root key": {"UnknownKey": N},
        "bundle that silently drops a key": {},
        "endless artifact body": {"SizeMismatch": N},
        "trickling artifact body": {"ArtifactUnavailable": N},
    }
    assert counts.refused == {"SignatureInvalid": N, "RollbackRejected": N,
                              "KeyNotTrustedForTier": N, "UnknownKey": 2 * N, "SizeMismatch": N,
                              "ArtifactUnavailable": N}
    assert counts.notes["still_trusting_the_dropped_key"] == N
    # Once the real path answers again, the next release reaches every device.
    assert (counts.installed, counts.stranded) == (N, 0)


def test_4_a_device_that_downloads_late_asks_again_and_installs(sim: Sim) -> None:
    counts = asyncio.run(expired_url(sim.fleet("url"), N))
    clean(counts)
    assert (counts.installed, counts.refused, counts.stranded) == (N, {}, 0)
    assert counts.notes["fresh_urls_late"] == counts.notes["late_devices"] == N // 4


def test_5_the_leak_drill_strands_no_device(sim: Sim) -> None:
    offline = 6
    counts = asyncio.run(leak_drill(sim.fleet("leak"), N, offline))
    clean(counts)
    assert counts.refused == {"KeyRevoked": N - offline}, "every device holding the revocation"
    assert (counts.installed, counts.stranded) == (N, 0)
    assert counts.notes["offline_running_v2"] == offline
    assert counts.notes["devices_told_condition"] == "True"


def test_6_a_planned_rotation_strands_only_devices_that_miss_every_bundle(sim: Sim) -> None:
    counts = asyncio.run(planned_rotation(sim.fleet("rotation"), N))
    clean(counts)
    window, away, blind = (counts.notes[k] for k in ("window", "away", "blind_to_bundles"))
    assert counts.notes["window_had_the_staged_key"] == window
    assert counts.notes["installed_by_group"] == {"window": window, "away": away, "blind": 0}
    assert (counts.installed, counts.stranded) == (window + away, blind)
    assert counts.refused == {"UnknownKey": blind}
