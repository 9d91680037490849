"""Prometheus metrics of the operator, in a registry of their own (no global state).

Counters are incremented where things happen (and an announcement's counter only by the process
that posted its event, so a restart neither loses nor repeats a count); gauges are read from the
operator's view of its fleets at scrape time, so they are right after a restart too. Label values
are bounded: fleets (namespaces), tiers, phases and reasons; never names, URLs or free text.
"""
from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

Counts = Callable[[], Mapping[tuple[str, ...], float]]


class _Gauge(Collector):
    def __init__(self, name: str, doc: str, labels: list[str], counts: Counts) -> None:
        self.name, self.doc, self.labels, self.counts = name, doc, labels, counts

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(self.name, self.doc, labels=self.labels)
        for label_values, count in sorted(self.counts().items()):
            family.add_metric(list(label_values), count)
        yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.rejections = Counter(
            "flashgate_release_rejections_total",
            "FirmwareReleases rejected, by fleet (namespace), tier and reason.",
            ["namespace", "tier", "reason"], registry=self.registry)
        self.publications = Counter(
            "flashgate_release_publications_total",
            "FirmwareReleases published to a channel, by fleet and tier.",
            ["namespace", "tier"], registry=self.registry)
        self.withdrawals = Counter(
            "flashgate_release_withdrawals_total",
            "Published FirmwareReleases withdrawn because a key that signed them was revoked.",
            ["namespace", "tier"], registry=self.registry)
        self.verifier_unavailable = Counter(
            "flashgate_verifier_unavailable_total",
            "Requests to the verifier sidecar that failed (nothing was published; retried).",
            ["kind"], registry=self.registry)
        self.verification_seconds = Histogram(
            "flashgate_release_verification_seconds",
            "Time the verifier sidecar took for a release, download included.",
            ["tier"], registry=self.registry,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300))
        self.channel_writes = Counter(
            "flashgate_channel_writes_total",
            "Job documents written into channel ConfigMaps, by fleet.",
            ["namespace"], registry=self.registry)
        self.channel_repairs = Counter(
            "flashgate_channel_repairs_total",
            "Channel ConfigMaps found different from the publication ledger and restored.",
            ["namespace"], registry=self.registry)
        self.floor_rebuilds = Counter(
            "flashgate_floor_rebuilds_total",
            "RollbackFloors found missing and rebuilt from what was published.",
            ["namespace", "tier"], registry=self.registry)
        self.verified_bytes = Counter(
            "flashgate_release_verified_bytes_total",
            "Artifact bytes the verifier sidecar fetched and found exactly as signed, by fleet "
            "and tier (releases it accepted).", ["namespace", "tier"], registry=self.registry)
        self.verifier_reachable = Gauge(
            "flashgate_verifier_reachable",
            "1 when the verifier sidecar answered the operator's last health probe, else 0.",
            registry=self.registry)
        self.ready = Gauge(
            "flashgate_operator_ready",
            "1 once the operator has listed every fleet and decides releases (as /readyz).",
            registry=self.registry)

    def watch(self, releases: Counts, keys: Counts) -> None:
        """Gauges read at scrape time: releases by (namespace, phase), keys by (namespace, tier,
        phase)."""
        self.registry.register(_Gauge(
            "flashgate_releases", "FirmwareReleases by fleet (namespace) and phase.",
            ["namespace", "phase"], releases))
        self.registry.register(_Gauge(
            "flashgate_signing_keys", "SigningKeys by fleet (namespace), tier and phase.",
            ["namespace", "tier", "phase"], keys))

    def collect_with(self, collector: Collector) -> None:
        """Further gauges computed at scrape time (see monitoring.FleetGauges)."""
        self.registry.register(collector)


def count(labels: Iterator[tuple[str, ...]]) -> dict[tuple[str, ...], int]:
    return dict(Tally(labels))
