"""Device status reports: what a device has installed, and the last release it refused and why.

`POST /v1/fleets/{fleet}/devices/{device}/status` carries a `DeviceStatus` (docs/delivery.md,
"Device status"). A refusal is the first sign that the delivery path or the artifact store is
under attack (devices refusing release X with HashMismatch: someone replaced the bytes), so each
replica turns reports into:
- counters with bounded labels (fleet, tier, reason; never release names), counting each device's
  new installs and new refusals once: a device repeats its state in every report, so the last
  state of up to `max_devices` devices is remembered (least recently reporting forgotten first);
- a table per (fleet, tier, release) of how many devices reported installing or refusing it (by
  reason), at most `max_releases` rows (least recently updated dropped first), served as JSON to
  operators on the ops port.
Counts are per replica since it started: with several replicas, sum them (a device that reports
to two replicas is counted by both). Nothing here is trusted for a decision.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from flashgate.api.schema import DNS_SUBDOMAIN_PATTERN, MAX_SECURITY_VERSION
from flashgate.trust.vocabulary import Reason, Tier

MAX_STATUS_BYTES = 16 * 1024
DEFAULT_MAX_DEVICES = 100_000
DEFAULT_MAX_RELEASES = 1_000


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid",
                              frozen=True)


ReleaseName = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN,
                    description="the FirmwareRelease name (the job document's `release`)")


class Installed(_Model):
    release: str = ReleaseName
    security_version: int = Field(ge=0, le=MAX_SECURITY_VERSION)


class Rejection(_Model):
    release: str = ReleaseName
    tier: Tier
    reason: Reason = Field(description="why the device refused it, from the closed list")
    message: str | None = Field(default=None, max_length=512, description="for people; never "
                                                                          "a metric label")


class DeviceStatus(_Model):
    """What a device reports; every field optional (a fresh device has installed nothing)."""

    installed: dict[Tier, Installed] = Field(default_factory=dict)
    last_rejection: Rejection | None = None


@dataclass
class ReleaseRow:
    installed: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    updated: float = 0.0


Remembered = tuple[frozenset[tuple[str, str]], tuple[str, str, str] | None]
"""A device's last state: (tier, release) pairs installed; its last refusal (release, tier,
reason)."""


@dataclass
class StatusBook:
    max_devices: int = DEFAULT_MAX_DEVICES
    max_releases: int = DEFAULT_MAX_RELEASES
    clock: Callable[[], float] = time.time
    devices: OrderedDict[tuple[str, str], Remembered] = field(default_factory=OrderedDict)
    releases: OrderedDict[tuple[str, str, str], ReleaseRow] = field(default_factory=OrderedDict)
    dropped_rows: int = 0

    def report(self, fleet: str, device: str, status: DeviceStatus
               ) -> tuple[list[str], list[tuple[str, str]]]:
        """Record a report; returns what is new since this device's last report here: the tiers
        it installed a release on, and its (tier, reason) refusal if it is a new one."""
        installed = frozenset((str(t), i.release) for t, i in status.installed.items())
        rejection = status.last_rejection
        refused = (rejection.release, str(rejection.tier), str(rejection.reason)) \
            if rejection is not None else None
        before = self.devices.pop((fleet, device), (frozenset(), None))
        self.devices[(fleet, device)] = (installed, refused)
        while len(self.devices) > self.max_devices:
            self.devices.popitem(last=False)
        new_installs = sorted(installed - before[0])
        for tier, release in new_installs:
            self._row(fleet, tier, release).installed += 1
        new_refusals = []
        if refused is not None and refused != before[1]:
            release, tier, reason = refused
            row = self._row(fleet, tier, release)
            row.refused[reason] = row.refused.get(reason, 0) + 1
            new_refusals.append((tier, reason))
        return [tier for tier, _ in new_installs], new_refusals

    def _row(self, fleet: str, tier: str, release: str) -> ReleaseRow:
        key = (fleet, tier, release)
        row = self.releases.pop(key, None) or ReleaseRow()
        row.updated = self.clock()
        self.releases[key] = row
        while len(self.releases) > self.max_releases:
            self.releases.popitem(last=False)
            self.dropped_rows += 1
        return row

    def table(self, fleet: str | None = None) -> dict[str, Any]:
        """The JSON of GET /v1/releases (ops port): rows newest first."""
        rows = [{"fleet": f, "tier": t, "release": r, "devicesInstalled": row.installed,
                 "devicesRefusing": dict(sorted(row.refused.items())),
                 "lastReport": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(row.updated))}
                for (f, t, r), row in reversed(self.releases.items())
                if fleet is None or f == fleet]
        return {"apiVersion": "ota.flashgate.dev/v1alpha1", "kind": "DeviceReleaseReport",
                "maxRows": self.max_releases, "droppedRows": self.dropped_rows,
                "trackedDevices": len(self.devices), "maxTrackedDevices": self.max_devices,
                "releases": rows}
