"""The publication ledger of one product and tier of a fleet, and the channels it decides. Pure.

The ledger lives in the RollbackFloor's status (see `flashgate.api.Publication`): the floor is
the one record per (fleet, product, tier) that the API server protects (never deleted, never
lowered, written by the operator only), and every publication goes through it anyway, because the
floor is raised before a job document is written.

The rules, in the order `record` applies them:
1. A release already in the ledger (same uid) is a publication being resumed (the operator was
   restarted after recording it): it is not recorded twice.
2. A securityVersion below the floor is refused (RollbackRejected): the floor rose while the
   release was being verified.
3. A signed manifest is published at most once per fleet on a create alone. Another release
   carrying a manifest that was published before (the same signed build under another name, to
   another channel, from another URL) is refused (ReplayRejected) unless it states the intent
   `spec.republish`, which only release managers may set (an admission policy). So a channel
   never moves back to an older build, nor to another URL, by a create alone. Earlier manifests
   (below the floor) are refused by rule 2.
4. Otherwise the publication gets the next sequence number, becomes its channel's current entry
   (carrying the job document, so the channel can be restored from here), and the floor rises to
   its securityVersion if that is higher.
A channel's current entry for a tier is its publication with the highest sequence; a withdrawn
one leaves the channel without a document for that tier.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from flashgate.api import (
    FirmwareReleaseSpec,
    Publication,
    RollbackFloor,
    RollbackFloorSpec,
    rollback_floor_name,
)
from flashgate.api.published import MANAGED_BY, document_key
from flashgate.api.rollbackfloor import MAX_PUBLICATIONS, RollbackFloorStatus
from flashgate.api.schema import MAX_DOCUMENT_CHARS
from flashgate.trust.fleet import expected_manifest
from flashgate.trust.vocabulary import Reason, Tier


def manifest_digest(fleet: str, spec: FirmwareReleaseSpec) -> str:
    """SHA-256 (hex) of the release manifest the spec declares, in its one deterministic CBOR
    encoding: equal to the signed payload's digest once the verifier found them equal."""
    return hashlib.sha256(expected_manifest(fleet, spec).to_cbor()).hexdigest()


def job_document(*, fleet: str, name: str, spec: FirmwareReleaseSpec,
                 published_at: datetime) -> str:
    """The job document a device receives (docs/format.md), as the exact text published: only
    the envelopes are trusted by the device; the other fields are copies for people and routing.
    """
    document = {
        "apiVersion": "ota.flashgate.dev/v1alpha1",
        "kind": "JobDocument",
        "fleet": fleet,
        "product": spec.product,
        "channel": spec.channel,
        "tier": str(spec.tier),
        "release": name,
        "version": spec.version,
        "securityVersion": spec.security_version,
        "artifact": {"url": spec.artifact.url, "sha256": spec.artifact.sha256,
                     "size": spec.artifact.size},
        "signatures": list(spec.signatures),
        "publishedAt": rfc3339(published_at),
    }
    return json.dumps(document, indent=2, sort_keys=True)


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


SEQUENCE_ANNOTATION = "ota.flashgate.dev/sequence."
"""Per tier, on a channel ConfigMap: the ledger sequence of the job document it holds, so that a
channel write can tell an older publication from a newer one without reading the floor again."""


@dataclass(frozen=True)
class ChannelContent:
    """What a channel ConfigMap holds: per tier, a job document and its publication sequence."""

    documents: Mapping[str, str] = field(default_factory=dict)  # "<tier>.json" -> document
    sequences: Mapping[str, int] = field(default_factory=dict)  # "<tier>" -> sequence

    def without(self, tier: str) -> ChannelContent:
        return ChannelContent({k: v for k, v in self.documents.items() if k != document_key(tier)},
                              {k: v for k, v in self.sequences.items() if k != tier})

    def with_document(self, tier: str, document: str, sequence: int) -> ChannelContent:
        return ChannelContent({**self.documents, document_key(tier): document},
                              {**self.sequences, tier: sequence})


@dataclass(frozen=True)
class Candidate:
    """A verified release asking to be recorded."""

    release: str
    uid: str
    channel: str
    manifest_sha256: str
    security_version: int
    key_ids: tuple[str, ...]
    document: str
    republish: bool = False


@dataclass(frozen=True)
class Refused:
    reason: Reason
    message: str


@dataclass(frozen=True)
class Recorded:
    """The floor to write (unchanged when `new` is False) and the release's publication."""

    floor: RollbackFloor
    entry: Publication
    new: bool


def publications(floor: RollbackFloor | None) -> list[Publication]:
    """The floor's ledger, oldest first (empty when there is none)."""
    if floor is None or floor.status is None:
        return []
    return list(floor.status.publications or ())


def find(floor: RollbackFloor | None, uid: str) -> Publication | None:
    """The publication of the release with this uid, if the ledger holds one."""
    return next((p for p in publications(floor) if p.uid == uid), None)


def head(floor: RollbackFloor | None, channel: str) -> Publication | None:
    """The current entry of `channel` for this product and tier (withdrawn or not)."""
    entries = [p for p in publications(floor) if p.channel == channel]
    return max(entries, key=lambda p: p.sequence, default=None)


def new_floor(fleet: str, product: str, tier: Tier | str, security_version: int,
              status: RollbackFloorStatus | None = None) -> RollbackFloor:
    return RollbackFloor(
        metadata={"name": rollback_floor_name(product, tier), "namespace": fleet,
                  "labels": dict(MANAGED_BY)},
        spec=RollbackFloorSpec(product=product, tier=Tier(tier),
                               security_version=security_version),
        status=status or RollbackFloorStatus())


def record(floor: RollbackFloor | None, *, fleet: str, product: str, tier: Tier | str,
           candidate: Candidate, now: datetime) -> Recorded | Refused:
    """Rules 1-4 of the module docstring, for a release that the verifier accepted against the
    floor it was given (`floor` is the ledger as read just now)."""
    recorded = find(floor, candidate.uid)
    if floor is not None and recorded is not None:
        return Recorded(floor, recorded, new=False)
    if floor is not None and candidate.security_version < floor.spec.security_version:
        return Refused(Reason.RollbackRejected,
                       f"securityVersion {candidate.security_version} is below the floor "
                       f"{floor.spec.security_version} for {product}/{tier} (the floor rose "
                       "while this release was being verified)")
    status = (floor.status if floor is not None else None) or RollbackFloorStatus()
    earlier = next((p for p in publications(floor)
                    if p.manifest_sha256 == candidate.manifest_sha256), None)
    if earlier is not None and not candidate.republish:
        return Refused(Reason.ReplayRejected,
                       f"this signed manifest was published before, as release {earlier.release} "
                       f"to channel {earlier.channel} (publication {earlier.sequence}); a "
                       "manifest is published once unless a release manager states the intent "
                       "in spec.republish")
    entry = Publication(
        sequence=(status.sequence or 0) + 1, release=candidate.release, uid=candidate.uid,
        channel=candidate.channel, manifest_sha256=candidate.manifest_sha256,
        security_version=candidate.security_version, key_ids=list(candidate.key_ids),
        published_at=now,
        document=candidate.document if len(candidate.document) <= MAX_DOCUMENT_CHARS else None)
    kept = [
        # The entry it replaces no longer needs its document: the channel is restored from ours.
        p.model_copy(update={"document": None}) if p.channel == candidate.channel else p
        for p in publications(floor)
    ]
    raised = floor is None or candidate.security_version > floor.spec.security_version
    new_status = status.model_copy(update={
        "sequence": entry.sequence,
        "publications": trim([*kept, entry]),
        **({"last_raised_by": candidate.release, "last_raised_at": now} if raised else {}),
    })
    if floor is None:
        return Recorded(new_floor(fleet, product, tier, candidate.security_version, new_status),
                        entry, new=True)
    spec = floor.spec.model_copy(update={
        "security_version": max(floor.spec.security_version, candidate.security_version)})
    return Recorded(floor.model_copy(update={"spec": spec, "status": new_status}), entry,
                    new=True)


def trim(publications: Sequence[Publication]) -> list[Publication]:
    """The newest MAX_PUBLICATIONS entries, and every channel's current entry."""
    heads = {max((p for p in publications if p.channel == c), key=lambda p: p.sequence).sequence
             for c in {p.channel for p in publications}}
    newest = {p.sequence for p in sorted(publications, key=lambda p: p.sequence)
              [-MAX_PUBLICATIONS:]}
    return [p for p in publications if p.sequence in heads or p.sequence in newest]


def withdraw(floor: RollbackFloor, key_ids: Iterable[str], now: datetime) -> RollbackFloor | None:
    """The floor with every publication signed by one of `key_ids` marked withdrawn (and its
    document dropped: the channel must not offer it again); None when nothing changed."""
    revoked = set(key_ids)
    status = floor.status or RollbackFloorStatus()
    changed = False
    entries = []
    for p in publications(floor):
        if p.withdrawn_at is None and revoked.intersection(p.key_ids):
            p = p.model_copy(update={"withdrawn_at": now, "document": None})
            changed = True
        entries.append(p)
    if not changed:
        return None
    return floor.model_copy(update={"status": status.model_copy(
        update={"publications": entries})})


def channel_content(floors: Iterable[RollbackFloor], channel: str,
                    present: ChannelContent | None = None) -> ChannelContent:
    """What a channel ConfigMap must hold, from the floors (one per tier) of its product: for
    every tier whose current entry is published and not withdrawn, its job document and
    sequence. A current entry whose document was too large to keep in the ledger keeps the
    document `present` holds for that very sequence (none else can be told to be right)."""
    content = ChannelContent()
    present = present or ChannelContent()
    for floor in floors:
        tier, current = str(floor.spec.tier), head(floor, channel)
        if current is None or current.withdrawn_at is not None:
            continue
        document = current.document
        if document is None and present.sequences.get(tier) == current.sequence:
            document = present.documents.get(document_key(tier))
        if document is not None:
            content = content.with_document(tier, document, current.sequence)
    return content


def document_fields(text: str) -> Mapping[str, Any]:
    """A job document's JSON as a mapping; {} when it is not a JSON object (a forged entry)."""
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}

