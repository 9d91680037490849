"""What the delivery service can serve: the channels and trust bundles of its fleets, kept from a
watch of the ConfigMaps the operator publishes (never read per request). Pure: ConfigMap events
in, ready-to-render documents out.

A job document is served as published with `artifact.url` replaced (docs/delivery.md); so each is
kept as its JSON text with a marker where the URL goes, and a request only renders the URL. A
document no device could use (not JSON, fields that contradict where it is published, an
artifact URL that is neither https:// nor a well-formed s3://) is left out, logged and counted:
the operator's channel guard restores forged channels, and nothing here decides what is trusted.
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from flashgate.api.published import (
    BUNDLE_CONFIGMAP,
    BUNDLE_KEY,
    DOCUMENT_SUFFIX,
    parse_channel_name,
)
from flashgate.delivery.links import Links, Target, Unservable
from flashgate.kube.client import JSON
from flashgate.kube.runtime import object_key
from flashgate.trust.vocabulary import Tier

log = logging.getLogger("flashgate.delivery")

_URL_MARK = "\x00flashgate-artifact-url\x00"
_URL_MARK_JSON = json.dumps(_URL_MARK)
TIERS = frozenset(str(t) for t in Tier)
API_VERSION = "ota.flashgate.dev/v1alpha1"


def _digest(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode())
        h.update(b"\x00")
    return h.hexdigest()[:32]


@dataclass(frozen=True)
class Job:
    """One tier's current job document of a channel."""

    tier: str
    target: Target
    template: str  # the document's JSON with _URL_MARK_JSON where artifact.url goes
    etag: str  # weak: the URL differs per request, what it points to does not

    def render(self, links: Links) -> str:
        return self.template.replace(_URL_MARK_JSON, json.dumps(links.link(self.target)), 1)


@dataclass(frozen=True)
class Channel:
    fleet: str
    product: str
    channel: str
    jobs: Mapping[str, Job]
    etag: str

    def render(self, links: Links) -> str:
        head = json.dumps({"apiVersion": API_VERSION, "kind": "Channel", "fleet": self.fleet,
                           "product": self.product, "channel": self.channel},
                          sort_keys=True)[:-1]
        jobs = ", ".join(f"{json.dumps(tier)}: {job.render(links)}"
                         for tier, job in sorted(self.jobs.items()))
        return f'{head}, "jobs": {{{jobs}}}}}\n'


@dataclass(frozen=True)
class TrustBundle:
    body: bytes  # exactly as published
    etag: str  # strong: the bytes are the same for everyone


@dataclass
class Catalog:
    fleets: Collection[str]
    links: Links
    channels: dict[tuple[str, str, str], Channel] = field(default_factory=dict)
    bundles: dict[str, TrustBundle] = field(default_factory=dict)
    # Documents left out, per (fleet, ConfigMap name): a gauge, and a log line when they change.
    unservable: dict[tuple[str, str], int] = field(default_factory=dict)

    def on_configmap(self, event: str, obj: JSON) -> None:
        """A Watch handler: SYNC, ADDED, MODIFIED or DELETED of a published ConfigMap."""
        fleet, name = object_key(obj)
        if fleet not in self.fleets:
            return
        data = obj.get("data") or {}
        if name == BUNDLE_CONFIGMAP:
            self._bundle(fleet, None if event == "DELETED" else data)
            return
        parsed = parse_channel_name(name)
        if parsed is None:
            return
        product, channel = parsed
        if event == "DELETED":
            self.channels.pop((fleet, product, channel), None)
            self.unservable.pop((fleet, name), None)
            return
        jobs, left_out = {}, 0
        for key, text in sorted(data.items()):
            tier = key.removesuffix(DOCUMENT_SUFFIX)
            if not key.endswith(DOCUMENT_SUFFIX) or tier not in TIERS:
                continue
            try:
                jobs[tier] = self._job(fleet, product, channel, tier, str(text))
            except Unservable as exc:
                left_out += 1
                log.warning("%s/%s %s: not delivered: %s", fleet, name, key, exc)
        self._count_unservable(fleet, name, left_out)
        etag = _digest(*(f"{tier}\x00{job.etag}" for tier, job in sorted(jobs.items())))
        self.channels[(fleet, product, channel)] = Channel(fleet, product, channel, jobs, etag)

    def _job(self, fleet: str, product: str, channel: str, tier: str, text: str) -> Job:
        try:
            doc: Any = json.loads(text)
        except ValueError:
            raise Unservable("not JSON") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("artifact"), dict) \
                or not isinstance(doc["artifact"].get("url"), str):
            raise Unservable("not a job document (no artifact.url)")
        where = {"fleet": fleet, "product": product, "channel": channel, "tier": tier}
        wrong = [f"{k} {doc.get(k)!r}" for k, v in where.items() if doc.get(k) != v]
        if wrong:
            raise Unservable(f"the document says {', '.join(wrong)}, not where it is published")
        target = self.links.target(doc["artifact"]["url"])
        doc["artifact"]["url"] = _URL_MARK
        template = json.dumps(doc, indent=2, sort_keys=True)
        return Job(tier, target, template, _digest(text))

    def _bundle(self, fleet: str, data: Mapping[str, str] | None) -> None:
        text = (data or {}).get(BUNDLE_KEY)
        left_out = 0
        if text is None:
            self.bundles.pop(fleet, None)
        else:
            try:
                parsed = json.loads(text)
                if not isinstance(parsed, dict) or parsed.get("kind") != "TrustBundle":
                    raise ValueError("not a TrustBundle")
            except ValueError as exc:
                self.bundles.pop(fleet, None)
                left_out = 1
                log.warning("%s/%s: not delivered: %s", fleet, BUNDLE_CONFIGMAP, exc)
            else:
                body = str(text).encode()
                self.bundles[fleet] = TrustBundle(body, hashlib.sha256(body).hexdigest()[:32])
        self._count_unservable(fleet, BUNDLE_CONFIGMAP, left_out)

    def _count_unservable(self, fleet: str, name: str, count: int) -> None:
        if count:
            self.unservable[(fleet, name)] = count
        else:
            self.unservable.pop((fleet, name), None)

    def counts(self) -> dict[tuple[str, ...], int]:
        """Documents by (fleet, state): served or unservable (a gauge, read at scrape time)."""
        found: dict[tuple[str, ...], int] = {}
        for (fleet, _, _), channel in list(self.channels.items()):
            if channel.jobs:
                found[(fleet, "served")] = found.get((fleet, "served"), 0) + len(channel.jobs)
        for fleet in list(self.bundles):
            found[(fleet, "served")] = found.get((fleet, "served"), 0) + 1
        for (fleet, _), count in list(self.unservable.items()):
            found[(fleet, "unservable")] = found.get((fleet, "unservable"), 0) + count
        return found
