"""Prometheus metrics of the delivery service, in a registry of their own.

Label values are bounded: routes and refusal reasons are closed lists, fleets are the configured
ones (a fleet label is only set once the device's certificate, or the configuration, vouches for
it; never from a URL alone), tiers and reasons the trust core's. Never release names, device ids,
paths or free text: those go to the release table (GET /v1/releases on the ops port).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# Requests are answered from memory: sub-millisecond to tens of milliseconds.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class _Documents(Collector):
    def __init__(self, counts: Callable[[], Mapping[tuple[str, ...], int]]) -> None:
        self.counts = counts

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "flashgate_delivery_documents", "Published documents (job documents and trust "
            "bundles) this replica holds, by fleet and state: served, or unservable (left out: "
            "malformed, or an artifact URL devices cannot use; see the log).",
            labels=["fleet", "state"])
        for labels, count in sorted(self.counts().items()):
            family.add_metric(list(labels), count)
        yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "flashgate_delivery_requests", "Requests answered, by route (channel, job, "
            "trust-bundle, status, other) and HTTP status code.", ["route", "code"],
            registry=r)
        self.seconds = Histogram(
            "flashgate_delivery_request_seconds", "Time to answer a request, by route.",
            ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.refusals = Counter(
            "flashgate_delivery_refusals", "Requests refused, by reason (a closed list: "
            "docs/delivery.md, Errors).", ["reason"], registry=r)
        self.presigned = Counter(
            "flashgate_delivery_presigned_urls", "Presigned artifact URLs minted, by fleet.",
            ["fleet"], registry=r)
        self.status_reports = Counter(
            "flashgate_delivery_status_reports", "Device status reports accepted, by fleet.",
            ["fleet"], registry=r)
        self.device_installs = Counter(
            "flashgate_delivery_device_installs", "Devices reporting a release newly installed, "
            "by fleet and tier (each device's install counted once per replica).",
            ["fleet", "tier"], registry=r)
        self.device_rejections = Counter(
            "flashgate_delivery_device_rejections", "Devices reporting a release newly refused, "
            "by fleet, tier and reason (each device's refusal counted once per replica); which "
            "release: GET /v1/releases on the ops port.", ["fleet", "tier", "reason"],
            registry=r)

    def watch_documents(self, counts: Callable[[], Mapping[tuple[str, ...], int]]) -> None:
        self.registry.register(_Documents(counts))

    def render(self) -> bytes:
        return generate_latest(self.registry)
