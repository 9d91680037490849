"""Prometheus metrics of the sidecar, in a registry of their own (made per app, not global)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Downloads range from kilobytes to gigabytes: seconds up to the default total time limit.
FETCH_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class Metrics:
    """Counters of verdicts and fetches, exposed at GET /metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.verifications = Counter(
            "flashgate_verifier_verifications", "Verifications answered, by kind "
            "(release, key), verdict (accepted, rejected, endorsed, not_endorsed) and reason.",
            ["kind", "verdict", "reason"], registry=r)
        self.verification_seconds = Histogram(
            "flashgate_verifier_verification_seconds", "Time to answer a verification, "
            "artifact download included.", ["kind"], buckets=FETCH_BUCKETS, registry=r)
        self.fetch_bytes = Counter(
            "flashgate_verifier_fetch_bytes", "Artifact bytes read and hashed, by URL scheme.",
            ["scheme"], registry=r)
        self.fetch_seconds = Histogram(
            "flashgate_verifier_fetch_seconds", "Artifact fetch time, by URL scheme and outcome "
            "(ok or the rejection reason).", ["scheme", "outcome"], buckets=FETCH_BUCKETS,
            registry=r)
        self.fetches_in_flight = Gauge(
            "flashgate_verifier_fetches_in_flight", "Artifact downloads running now.",
            registry=r)
        self.fetches_waiting = Gauge(
            "flashgate_verifier_fetches_waiting", "Verifications waiting for a download slot "
            "(maxConcurrentFetches).", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
