"""What the operator tells Prometheus (flashgate/operator/monitoring.py and the counters the gate
increments): each gauge read from a World's view, as a scrape would, and the sidecar probe
against a real sidecar app on loopback."""
from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from flashgate.operator import releases
from flashgate.operator.metrics import Metrics
from flashgate.operator.monitoring import FleetGauges, probe_verifier
from flashgate.trust.vocabulary import Reason, format_time
from flashgate.verifier_api.client import VerifierClient
from flashgate.verifier_sidecar.server import make_app

from ..verifier_sidecar.test_server import running
from ..verifier_sidecar.test_service import Fleet
from .fakes import NOW, World

DAY = 86400


def scrape(world: World) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample the operator's registry exposes, by (name, sorted labels)."""
    if not getattr(world, "gauges", None):
        world.gauges = FleetGauges(world.view, lambda: world.clock[0])  # type: ignore[attr-defined]
        world.metrics.collect_with(world.gauges)  # type: ignore[attr-defined]
    text = generate_latest(world.metrics.registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def samples(scraped: dict[tuple[str, tuple[tuple[str, str], ...]], float],
            name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: value for (n, labels), value in scraped.items() if n == name}


def test_keys_validity_trust_windows_and_tiers_without_an_active_key() -> None:
    world = World()
    world.add_key("app", notAfter=format_time(NOW + 10 * DAY))
    world.add_key("app-next", replaces="app", activateAt=format_time(NOW + 2 * DAY),
                  notAfter=format_time(NOW + 90 * DAY))
    world.add_key("boot", tier="bootloader", notBefore=format_time(NOW + DAY))
    asyncio.run(world.keys())
    got = scrape(world)

    def labels(name: str, tier: str, phase: str) -> tuple[tuple[str, str], ...]:
        return (("namespace", "fleet-a"), ("phase", phase), ("signingkey", name), ("tier", tier))

    assert samples(got, "flashgate_signing_key_not_after_timestamp_seconds") == {
        labels("app", "application", "Active"): NOW + 10 * DAY,
        labels("app-next", "application", "Staged"): NOW + 90 * DAY,
        labels("boot", "bootloader", "Pending"): NOW + 30 * DAY}
    # Only trusted keys have a trust window; the Pending one has none.
    assert samples(got, "flashgate_signing_key_trusted_until_timestamp_seconds") == {
        labels("app", "application", "Active"): NOW + 10 * DAY,
        labels("app-next", "application", "Staged"): NOW + 90 * DAY}
    assert samples(got, "flashgate_tier_without_active_key") == {
        (("namespace", "fleet-a"), ("tier", "application")): 0,
        (("namespace", "fleet-a"), ("tier", "bootloader")): 1}

    # Three days on, the successor is Active and its predecessor Retiring until the overlap
    # (the default 7 days from the successor's activation) or its own notAfter ends, whichever
    # comes first.
    world.clock[0] = NOW + 3 * DAY
    got = scrape(world)
    assert samples(got, "flashgate_signing_key_trusted_until_timestamp_seconds")[
        labels("app", "application", "Retiring")] == NOW + (2 + 7) * DAY
    assert samples(got, "flashgate_signing_key_trusted_until_timestamp_seconds")[
        labels("app-next", "application", "Active")] == NOW + 90 * DAY


def test_a_revocation_is_exported_with_its_time_and_the_tier_left_without_a_key() -> None:
    world = World()
    app = world.add_key("app")
    asyncio.run(world.keys())
    world.clock[0] = NOW + 60
    world.revoke("app")
    asyncio.run(world.keys())
    got = scrape(world)
    assert samples(got, "flashgate_signing_key_revoked_timestamp_seconds") == {
        (("key_id", app.key_id), ("namespace", "fleet-a"), ("signingkey", "app"),
         ("tier", "application")): NOW + 60}
    assert samples(got, "flashgate_tier_without_active_key") == {
        (("namespace", "fleet-a"), ("tier", "application")): 1}


def test_floors_waiting_releases_bytes_and_rejections() -> None:
    world = World()
    app = world.add_key("app")
    asyncio.run(world.keys())
    world.add_release("v3", [app], security_version=3)
    world.add_release("bad", [app], security_version=4)
    world.verifier.rejections["bad"] = (Reason.HashMismatch, "sha256 differs")
    got = scrape(world)
    fleet = (("namespace", "fleet-a"),)
    assert samples(got, "flashgate_releases_waiting") == {fleet: 2}
    assert samples(got, "flashgate_release_oldest_waiting_timestamp_seconds") == {fleet: NOW}
    assert samples(got, "flashgate_rollback_floor_security_version") == {}

    asyncio.run(world.decide("v3"))
    asyncio.run(world.decide("bad"))
    got = scrape(world)
    assert samples(got, "flashgate_releases_waiting") == {}
    assert samples(got, "flashgate_release_oldest_waiting_timestamp_seconds") == {}
    assert samples(got, "flashgate_rollback_floor_security_version") == {
        (("namespace", "fleet-a"), ("product", "gw"), ("tier", "application")): 3}
    size = len(b"v3")  # the fake's artifact is the release's name
    assert samples(got, "flashgate_release_verified_bytes_total") == {
        (("namespace", "fleet-a"), ("tier", "application")): size}
    assert samples(got, "flashgate_release_rejections_total") == {
        (("namespace", "fleet-a"), ("reason", "HashMismatch"), ("tier", "application")): 1}

    # A floor gone from a relist (only its name is known then) leaves the gauge.
    world.view.on_floor("DELETED", {"metadata": {"namespace": "fleet-a",
                                                 "name": "gw.application"}})
    assert samples(scrape(world), "flashgate_rollback_floor_security_version") == {}


def test_a_changed_spec_waits_from_when_the_operator_saw_it() -> None:
    world = World()
    app = world.add_key("app")
    asyncio.run(world.keys())
    obj = world.add_release("v1", [app])
    asyncio.run(world.decide("v1"))
    assert world.view.waiting == {}
    obj = world.store.get("FirmwareRelease", "fleet-a", "v1")
    assert obj is not None
    obj["metadata"]["generation"] = 2
    world.view.on_release("MODIFIED", obj, now=NOW + 500)
    assert world.view.waiting == {("fleet-a", "v1"): NOW + 500}


def test_a_slow_verification_tells_its_story_and_a_quick_one_writes_nothing_more(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Events of a rejected release, in order: Verifying only when the verdict takes longer
    than VERIFYING_AFTER (the fast path adds no API write), then the failed check."""
    monkeypatch.setattr(releases, "VERIFYING_AFTER", 0.05)
    world = World()
    app = world.add_key("app")
    asyncio.run(world.keys())
    for name in ("quick", "slow"):
        world.add_release(name, [app])
        world.verifier.rejections[name] = (Reason.HashMismatch, "sha256 differs")
    writes = next(world.store.versions)
    asyncio.run(world.decide("quick"))
    quick_writes = next(world.store.versions) - writes - 1
    world.verifier.delay = 0.2
    asyncio.run(world.decide("slow"))
    assert world.store.reasons("quick") == ["HashMismatch"]
    assert world.store.reasons("slow") == ["Verifying", "HashMismatch"]
    assert quick_writes == 1  # the status; events are not stored objects in the fake
    # Looked at again with the same generation: no second Verifying event.
    obj = world.store.get("FirmwareRelease", "fleet-a", "slow")
    assert obj is not None
    obj["status"] = {"phase": "Pending"}
    world.store.put("FirmwareRelease", obj)
    asyncio.run(world.decide("slow"))
    assert world.store.reasons("slow") == ["Verifying", "HashMismatch"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_probe_says_whether_the_real_sidecar_answers(tmp_path: Path) -> None:
    metrics = Metrics()

    async def probe_once(target: str) -> float:
        async with VerifierClient(target, timeout=2) as client:
            task = asyncio.create_task(probe_verifier(client, metrics, interval=60))
            await asyncio.sleep(0.3)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        value = metrics.registry.get_sample_value("flashgate_verifier_reachable")
        assert value is not None
        return value

    async def scenario() -> None:
        (tmp_path / "artifacts").mkdir()
        async with running(make_app(Fleet(tmp_path / "artifacts").settings())) as base:
            assert await probe_once(base) == 1
        assert await probe_once(base) == 0  # the same address, nothing listening now
        assert await probe_once(f"http://127.0.0.1:{free_port()}") == 0

    asyncio.run(scenario())


def test_docs_metrics_md_describes_exactly_what_is_exported() -> None:
    import re

    from flashgate.delivery.metrics import Metrics as DeliveryMetrics
    from flashgate.operator.fleets import FleetView
    from flashgate.verifier_sidecar.metrics import Metrics as SidecarMetrics

    def names(text: str) -> set[str]:
        return {line.split()[2] for line in text.splitlines()
                if line.startswith("# HELP ") and not line.split()[2].endswith("_created")}

    operator = Metrics()
    operator.watch(dict, dict)
    operator.collect_with(FleetGauges(FleetView(), lambda: NOW))
    exported = (names(generate_latest(operator.registry).decode())
                | names(SidecarMetrics().render().decode()))
    delivery = names(generate_latest(DeliveryMetrics().registry).decode())
    docs = (Path(__file__).resolve().parents[2] / "docs" / "metrics.md").read_text()
    documented = set(re.findall(r"^### `(flashgate_[a-z_]+)`", docs, re.MULTILINE))
    # Every metric of the operator's pod; of the delivery service's (docs/delivery.md has them
    # all), those an alert reads.
    assert documented - delivery == exported
    assert documented & delivery == {"flashgate_delivery_device_rejections_total"}
