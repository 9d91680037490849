"""What a pager needs beyond the counters: gauges computed from the operator's view of its fleets
at scrape time (so they are right after a restart too), and a probe of the verifier sidecar.

Every gauge here is read from `FleetView`, which the watches keep: nothing is listed or fetched
per scrape. Label values are bounded: fleets (namespaces), tiers, phases, products and the names
and keyIds of SigningKeys (a fleet has a few dozen); never release names, URLs or free text.
docs/metrics.md describes each metric and the alert that uses it.
"""
from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Protocol

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from flashgate.operator.fleets import FleetView
from flashgate.operator.metrics import Metrics
from flashgate.trust.rotation import KeyPhase
from flashgate.verifier_api.client import VerifierUnavailable

log = logging.getLogger("flashgate.operator")

PROBE_SECONDS = 10.0


class FleetGauges(Collector):
    """Keys' validity and trust windows, revocations, tiers without an Active key, floors, and
    the releases waiting for a decision."""

    def __init__(self, view: FleetView, clock: Callable[[], float]) -> None:
        self.view, self.clock = view, clock

    def collect(self) -> Iterator[Metric]:
        now = self.clock()
        yield from self._keys(int(now))
        yield from self._revocations()
        yield from self._floors()
        yield from self._waiting()

    def _keys(self, now: int) -> Iterator[Metric]:
        key_labels = ["namespace", "tier", "signingkey", "phase"]
        not_after = GaugeMetricFamily(
            "flashgate_signing_key_not_after_timestamp_seconds",
            "End of a SigningKey's validity (spec.notAfter), Unix seconds.", labels=key_labels)
        trusted_until = GaugeMetricFamily(
            "flashgate_signing_key_trusted_until_timestamp_seconds",
            "End of a trusted (Staged, Active, Retiring) SigningKey's trust window "
            "(status.trustedUntil: notAfter, or the end of its overlap when retiring), Unix "
            "seconds.", labels=key_labels)
        without_active = GaugeMetricFamily(
            "flashgate_tier_without_active_key",
            "1 when a tier of a fleet has SigningKeys but none of them is Active (nothing can "
            "sign its next release), else 0.", labels=["namespace", "tier"])
        for fleet in sorted(self.view.keys):
            active: dict[str, bool] = defaultdict(bool)
            for key, result in self.view.phases_of(fleet, now):
                tier, phase = str(key.spec.tier), str(result.phase)
                active[tier] |= result.phase == KeyPhase.Active
                labels = [fleet, tier, key.name, phase]
                not_after.add_metric(labels, key.spec.not_after.timestamp())
                if result.trusted_until is not None:
                    trusted_until.add_metric(labels, result.trusted_until)
            for tier in sorted(active):
                without_active.add_metric([fleet, tier], 0 if active[tier] else 1)
        yield from (not_after, trusted_until, without_active)

    def _revocations(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "flashgate_signing_key_revoked_timestamp_seconds",
            "When a key was revoked (its entry on the fleet's RevocationList), Unix seconds.",
            labels=["namespace", "tier", "key_id", "signingkey"])
        for fleet, record in sorted(self.view.revocation_lists.items()):
            for kid, entry in sorted(record.spec.keys.items()):
                family.add_metric([fleet, str(entry.tier), kid, entry.signing_key],
                                  entry.revoked_at.timestamp())
        yield family

    def _floors(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "flashgate_rollback_floor_security_version",
            "The rollback floor of a product and tier: releases below it are refused.",
            labels=["namespace", "product", "tier"])
        for (fleet, _), (product, tier, value) in sorted(self.view.floors.items()):
            family.add_metric([fleet, product, tier], value)
        yield family

    def _waiting(self) -> Iterator[Metric]:
        count = GaugeMetricFamily(
            "flashgate_releases_waiting",
            "FirmwareReleases not decided yet (Pending or Verifying, or changed since their "
            "last decision), by fleet.", labels=["namespace"])
        oldest = GaugeMetricFamily(
            "flashgate_release_oldest_waiting_timestamp_seconds",
            "Since when the longest-waiting undecided FirmwareRelease of a fleet has waited "
            "(its creation), Unix seconds.", labels=["namespace"])
        by_fleet: dict[str, list[float]] = defaultdict(list)
        for (fleet, _), since in list(self.view.waiting.items()):
            by_fleet[fleet].append(since)
        for fleet, times in sorted(by_fleet.items()):
            count.add_metric([fleet], len(times))
            oldest.add_metric([fleet], min(times))
        yield from (count, oldest)


class HealthProbe(Protocol):
    async def healthy(self) -> None: ...


async def probe_verifier(verifier: HealthProbe, metrics: Metrics,
                         interval: float = PROBE_SECONDS) -> None:
    """Ask the sidecar's /healthz every `interval` seconds; flashgate_verifier_reachable says
    whether it answered (the sidecar unreachable means nothing can be published)."""
    reachable: bool | None = None
    while True:
        try:
            await verifier.healthy()
            now_reachable = True
        except VerifierUnavailable as error:
            now_reachable = False
            if reachable is not False:
                log.warning("the verifier sidecar is unreachable: %s", error)
        metrics.verifier_reachable.set(1 if now_reachable else 0)
        reachable = now_reachable
        await asyncio.sleep(interval)
