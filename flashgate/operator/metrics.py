"""Prometheus metrics of the operator, in a registry of their own (no global state).

Counters are incremented where things happen; the gauges of releases and keys by phase are read
from the operator's in-memory indices at scrape time, so they are right after a restart too.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# (namespace, phase) -> number of objects; built by the caller from a Kopf index at scrape time.
PhaseCounts = Callable[[], Mapping[tuple[str, ...], int]]


class _PhaseGauge(Collector):
    def __init__(self, name: str, doc: str, labels: list[str], counts: PhaseCounts) -> None:
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

    def watch_phases(self, releases: PhaseCounts, keys: PhaseCounts) -> None:
        self.registry.register(_PhaseGauge(
            "flashgate_releases", "FirmwareReleases by fleet (namespace) and phase.",
            ["namespace", "phase"], releases))
        self.registry.register(_PhaseGauge(
            "flashgate_signing_keys", "SigningKeys by fleet (namespace), tier and phase.",
            ["namespace", "tier", "phase"], keys))


def count_by(entries: Iterable[tuple[tuple[str, ...], Any]]) -> dict[tuple[str, ...], int]:
    counts: dict[tuple[str, ...], int] = {}
    for labels, _ in entries:
        counts[labels] = counts.get(labels, 0) + 1
    return counts
