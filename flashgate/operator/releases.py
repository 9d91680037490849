"""The release gate: may this FirmwareRelease be published? One `ReleaseGate.reconcile` a release.

The gate never decides trust itself: every signature, endorsement and digest is checked by the
verifier sidecar, and the gate publishes only on its `accepted` verdict. Around that verdict it
keeps the invariants a hostile namespace attacks:

1. A release whose publication is already in its floor's ledger (a restart cut the last steps
   short) is finished, never published twice.
2. The floor is never assumed 0: when the RollbackFloor is missing although releases were
   published, it is rebuilt from the highest securityVersion known to have been published (the
   Published releases, the job documents in the channels, and what this process wrote), with a
   Warning event and a metric.
3. The verifier gets every key of the fleet with the operator's knowledge of revocation (the
   RevocationList, and any SigningKey that says revoked) and rotation.
4. After the verdict, revocation is checked again before anything is written, and once more,
   fresh from the API server, after the job document is in its channel: revocation records the
   keyId before it looks for what to withdraw, so either this check sees the revocation and the
   release withdraws itself, or the revocation's search finds the job document.
5. The floor is raised and the publication recorded in one write of the floor's ledger, which
   also refuses a signed manifest published before (ReplayRejected) without an explicit intent.
6. The job document goes to its channel only if it is still the channel's current entry.
7. The "Published" event is the proof of the announcement: it is posted once (a deterministic
   name), before the status says Published, so a restart neither loses nor repeats it, and the
   publications metric counts only the event that this process posted.
Nothing a user can write into annotations takes part in any decision.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from pydantic import ValidationError

from flashgate.api import FirmwareReleaseSpec, Publication, RollbackFloor, rollback_floor_name
from flashgate.api.published import channel_name, parse_channel_name
from flashgate.failpoints import failpoint
from flashgate.kube.client import JSON
from flashgate.operator import ledger
from flashgate.operator.conditions import (
    condition,
    merge_conditions,
    parse_conditions,
    release_conditions,
)
from flashgate.operator.fleets import FINAL_PHASES, FleetView
from flashgate.operator.metrics import Metrics
from flashgate.operator.redact import redact_text
from flashgate.operator.store import FIRMWARE_RELEASES, Store
from flashgate.trust.fleet import signer_key_ids
from flashgate.trust.vocabulary import Reason
from flashgate.verifier_api.client import VerifierUnavailable
from flashgate.verifier_api.models import ReleaseProgress, ReleaseRequest, ReleaseVerdict

log = logging.getLogger("flashgate.operator")

Recording = ledger.Refused | tuple[RollbackFloor, Publication]
"""What recording a publication gave: refused, or the floor as written and the entry."""

VERIFYING_AFTER = 3.0
"""A verification that takes longer than this is shown as Verifying (a quick one is not: that
status write would cost more than the whole verification, and under load it would add a write to
every release just when writes are scarcest)."""
UNCHECKED_SUCCESSOR_WAIT = 1.0
"""Seconds before a release whose signer's successor is not checked yet is looked at again."""
PROGRESS_EVERY = 15.0
"""How often a long wait's Verifying message is brought up to date (if it changed)."""


class Verifier(Protocol):
    async def verify_release(self, request: ReleaseRequest) -> ReleaseVerdict: ...

    async def progress(self, fleet: str, name: str) -> ReleaseProgress: ...


@dataclass(frozen=True)
class Release:
    """The parts of a FirmwareRelease object the gate works with."""

    fleet: str
    name: str
    uid: str
    generation: int
    resource_version: str
    spec: FirmwareReleaseSpec
    status: Mapping[str, Any]
    obj: JSON

    @property
    def subject(self) -> str:
        return f"{self.spec.product}/{self.spec.tier}"


@dataclass
class ReleaseGate:
    store: Store
    verifier: Verifier
    view: FleetView
    metrics: Metrics
    clock: Callable[[], float] = time.time
    retry_max_delay: float = 30.0
    # The highest securityVersion this process raised a floor to, per (fleet, product, tier):
    # one of the sources a lost floor is rebuilt from.
    known_floors: dict[tuple[str, str, str], int] = field(default_factory=dict)
    _retries: dict[tuple[str, str], int] = field(default_factory=dict)

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    # ---- the work queue's entry point -----------------------------------------------------

    async def reconcile(self, fleet: str, name: str, obj: JSON | None = None) -> float | None:
        """Decide one release; returns seconds after which to look again (the sidecar was
        unavailable), or None when it is decided or gone."""
        obj = obj if obj is not None else await self.store.get_release(fleet, name)
        if obj is None:
            return None
        metadata, status = obj.get("metadata") or {}, obj.get("status") or {}
        generation = int(metadata.get("generation") or 1)
        if status.get("phase") in FINAL_PHASES and status.get("observedGeneration") == generation:
            return None
        try:
            spec = FirmwareReleaseSpec.model_validate(obj.get("spec") or {})
        except ValidationError as exc:
            # The schema admitted it (an older CRD?) but the gate cannot read it: refuse it on
            # its own, never stall the fleet.
            await self._status(obj, generation, phase="Rejected", reason=Reason.SignatureInvalid,
                               message=f"spec cannot be read: {exc.error_count()} problems")
            return None
        release = Release(fleet=fleet, name=name, uid=str(metadata.get("uid") or ""),
                          generation=generation,
                          resource_version=str(metadata.get("resourceVersion") or ""),
                          spec=spec, status=status, obj=obj)
        return await self._decide(release)

    async def _decide(self, release: Release) -> float | None:
        spec = release.spec
        floor = await self.store.get_floor(release.fleet, spec.product, str(spec.tier))
        recorded = ledger.find(floor, release.uid)
        if floor is not None and recorded is not None:
            return await self._finish(release, floor, recorded, verdict=None)  # invariant 1
        await self.view.synced.wait()
        if self.view.unchecked_successors(release.fleet, signer_key_ids(spec.signatures)):
            # Whether a signer was rotated out is known once its successor's endorsement is
            # checked (the key reconcile asks the sidecar, right after a start or a new key).
            return UNCHECKED_SUCCESSOR_WAIT
        floor_value = (floor.spec.security_version if floor is not None
                       else await self._rebuild_floor(release))
        verdict = await self._verify(release, floor_value)
        if verdict is None:
            delay = self._backoff(release)
            return delay
        self._retries.pop((release.fleet, release.name), None)
        if self.metrics is not None:
            self.metrics.verification_seconds.labels(str(spec.tier)).observe(verdict.seconds)
        if verdict.accepted and verdict.size:
            self.metrics.verified_bytes.labels(release.fleet, str(spec.tier)).inc(verdict.size)
        if not verdict.accepted:
            await self._reject(release, Reason(verdict.reason or Reason.SignatureInvalid),
                               verdict.message)
            return None
        revoked = self.view.revoked_key_ids(release.fleet).intersection(verdict.key_ids)
        if revoked:  # invariant 4, before anything is written
            await self._reject(release, Reason.KeyRevoked, _revoked_message(revoked),
                               verdict=verdict)
            return None
        now = self.now()  # one instant: the job document's publishedAt is the ledger's
        candidate = ledger.Candidate(
            release=release.name, uid=release.uid, channel=spec.channel,
            manifest_sha256=ledger.manifest_digest(release.fleet, spec),
            security_version=spec.security_version, key_ids=tuple(verdict.key_ids),
            document=ledger.job_document(fleet=release.fleet, name=release.name, spec=spec,
                                         published_at=now),
            republish=spec.republish is not None)
        outcome = await self.store.update_floor(
            release.fleet, spec.product, str(spec.tier), lambda current: self._record(
                current, release, candidate, now))
        if isinstance(outcome, ledger.Refused):
            await self._reject(release, outcome.reason, outcome.message, verdict=verdict)
            return None
        floor_now, entry = outcome
        key = (release.fleet, spec.product, str(spec.tier))
        self.known_floors[key] = max(self.known_floors.get(key, 0), spec.security_version)
        return await self._finish(release, floor_now, entry, verdict=verdict)

    def _record(self, current: RollbackFloor | None, release: Release,
                candidate: ledger.Candidate, now: datetime) -> tuple[RollbackFloor | None,
                                                                     Recording]:
        result = ledger.record(current, fleet=release.fleet, product=release.spec.product,
                               tier=release.spec.tier, candidate=candidate, now=now)
        if isinstance(result, ledger.Refused):
            return None, result
        return (result.floor if result.new else None), (result.floor, result.entry)

    # ---- finishing a recorded publication -------------------------------------------------

    async def _finish(self, release: Release, floor: RollbackFloor, entry: Publication,
                      verdict: ReleaseVerdict | None) -> float | None:
        spec = release.spec
        if entry.withdrawn_at is None:
            current = ledger.head(floor, spec.channel)
            if current is not None and current.sequence == entry.sequence:
                await self._write_channel(release, entry)
            failpoint("after-channel-write")
            # Invariant 4, the second time: fresh from the API server, after the write.
            record = await self.store.get_revocations(release.fleet)
            revoked = (set(record.spec.keys) if record else set()) | \
                self.view.revoked_key_ids(release.fleet)
            revoked &= set(entry.key_ids)
            if revoked:
                await self.withdraw(release.fleet, revoked)
                return None
        else:
            await self._status(release.obj, release.generation, phase="Withdrawn",
                               reason=Reason.KeyRevoked,
                               message="withdrawn: a key that signed it was revoked")
            return None
        current = ledger.head(floor, spec.channel)
        superseded = current is not None and current.sequence != entry.sequence
        where = (f"ConfigMap {release.fleet}/{channel_name(spec.product, spec.channel)} "
                 f"key {spec.tier}.json")
        message = (f"published to {where}: signed by {', '.join(entry.key_ids)}"
                   + (f", sha256 {verdict.sha256}, {verdict.size} bytes" if verdict else "")
                   + (f"; since superseded there by {current.release}"
                      if superseded and current is not None else ""))
        if await self.store.announce(release.obj, "published", "Normal", "Published", message):
            self.metrics.publications.labels(release.fleet, str(spec.tier)).inc()
        await self._status(release.obj, release.generation, phase="Published", reason=None,
                           message=message, extra={
                               "verifiedKeyIds": list(entry.key_ids),
                               **({"verifiedSha256": verdict.sha256} if verdict else {}),
                               "publishedAt": ledger.rfc3339(entry.published_at),
                               "publishedTo": where})
        return None

    async def _write_channel(self, release: Release, entry: Publication) -> None:
        """Invariant 6: put the job document in the channel unless a newer publication of this
        product and tier is there already: the ConfigMap carries the ledger sequence of each
        document it holds, and it is read-modify-written, so whatever order concurrent
        publications reach it in, the newest stays."""
        spec, tier = release.spec, str(release.spec.tier)
        document = entry.document or ledger.job_document(  # too large to keep in the ledger
            fleet=release.fleet, name=release.name, spec=spec, published_at=entry.published_at)

        def update(content: ledger.ChannelContent) -> ledger.ChannelContent | None:
            if content.sequences.get(tier, 0) >= entry.sequence:
                return None  # this publication, or a newer one, is there
            return content.with_document(tier, document, entry.sequence)

        if await self.store.update_channel(release.fleet, spec.product, spec.channel, update):
            self.metrics.channel_writes.labels(release.fleet).inc()

    # ---- withdrawal (also called by the key reconciler on a revocation) -------------------

    async def withdraw(self, fleet: str, key_ids: AbstractSet[str]) -> list[str]:
        """Everything signed by `key_ids` leaves its channel; its ledger entry and its release
        say Withdrawn. Called after the revocation was recorded (see invariant 4)."""
        withdrawn: list[str] = []
        now = self.now()
        for floor in await self.store.list_floors(fleet):
            # Entries already marked withdrawn too: a publication racing this withdrawal may
            # have written its document after the mark (it then withdraws itself as well).
            entries = [p for p in ledger.publications(floor) if not key_ids.isdisjoint(p.key_ids)]
            if not entries:
                continue
            await self.store.update_floor(
                fleet, floor.spec.product, str(floor.spec.tier),
                lambda current: ((ledger.withdraw(current, key_ids, now)
                                  if current is not None else None), None))
            for entry in entries:
                await self._remove_document(fleet, floor, entry)
                withdrawn.append(entry.release)
        # Published releases whose publication fell out of a ledger, and channel documents that
        # no ledger explains, are found too.
        for published in self.view.published_by(fleet, key_ids):
            if published.name not in withdrawn:
                withdrawn.append(published.name)
        for cm in await self.store.list_channels(fleet):
            await self._scrub_channel(fleet, cm, key_ids)
        message = f"withdrawn: {_revoked_message(key_ids)}; removed from its channel"
        for name in withdrawn:
            obj = await self.store.get_release(fleet, name)
            if obj is None:
                continue
            status = obj.get("status") or {}
            if status.get("phase") == "Withdrawn":
                continue
            generation = int((obj.get("metadata") or {}).get("generation") or 1)
            await self._status(obj, generation, phase="Withdrawn", reason=Reason.KeyRevoked,
                               message=message, keep_evidence=True, conditional=False)
            if await self.store.announce(obj, "withdrawn", "Warning", "Withdrawn", message):
                self.metrics.withdrawals.labels(fleet, str((obj.get("spec") or {}).get("tier"))
                                                ).inc()
        return withdrawn

    async def _remove_document(self, fleet: str, floor: RollbackFloor,
                               entry: Publication) -> None:
        tier = str(floor.spec.tier)

        def update(content: ledger.ChannelContent) -> ledger.ChannelContent | None:
            there = ledger.document_fields(content.documents.get(f"{tier}.json", "{}"))
            if there.get("release") != entry.release:
                return None
            return content.without(tier)

        await self.store.update_channel(fleet, floor.spec.product, entry.channel, update)

    async def _scrub_channel(self, fleet: str, cm: JSON, key_ids: AbstractSet[str]) -> None:
        from flashgate.operator.channels import signer_key_ids
        parsed = parse_channel_name(str((cm.get("metadata") or {}).get("name")))
        if parsed is None:
            return

        def update(content: ledger.ChannelContent) -> ledger.ChannelContent | None:
            signed = [key.removesuffix(".json") for key, text in content.documents.items()
                      if not key_ids.isdisjoint(signer_key_ids(text))]
            for tier in signed:
                content = content.without(tier)
            return content if signed else None

        await self.store.update_channel(fleet, *parsed, update)

    # ---- verification ---------------------------------------------------------------------

    async def _verify(self, release: Release, floor: int | None) -> ReleaseVerdict | None:
        """The sidecar's verdict, or None when it could not be had (status says so)."""
        now = int(self.clock())
        request = ReleaseRequest.model_validate({
            "fleet": release.fleet, "name": release.name,
            "release": release.spec.model_dump(by_alias=True, mode="json",
                                               exclude={"republish"}),
            "floor": floor, "now": now,
            "keys": [e.to_json() for e in self.view.key_entries(
                release.fleet, now, signer_key_ids(release.spec.signatures))]})
        call = asyncio.ensure_future(self.verifier.verify_release(request))
        try:
            shown, wait = "", VERIFYING_AFTER
            while True:
                done, _ = await asyncio.wait({call}, timeout=wait)
                if done:
                    return await call
                # A long wait says where it stands, rather than a silent Verifying.
                message = await self._progress(release)
                if message != shown:
                    await self._status(release.obj, release.generation, phase="Verifying",
                                       reason=None, message=message)
                    if not shown:  # the slow path only: a quick verdict costs no write for it
                        await self.store.announce(release.obj,
                                                  f"verifying.{release.generation}", "Normal",
                                                  "Verifying", message)
                    shown = message
                wait = PROGRESS_EVERY
        except VerifierUnavailable as error:
            self.metrics.verifier_unavailable.labels("release").inc()
            message = f"verifier sidecar unavailable, nothing published; retrying: {error}"
            await self._status(release.obj, release.generation, phase="Pending",
                               reason=Reason.VerifierUnavailable, message=message)
            await self.store.event(release.obj, "Warning", "VerifierUnavailable", message)
            return None
        finally:
            if not call.done():
                call.cancel()

    async def _progress(self, release: Release) -> str:
        """What the release is waiting for, in words (from the sidecar's download slots)."""
        base = "verifying: signatures, rollback floor and artifact"
        try:
            progress = await self.verifier.progress(release.fleet, release.name)
        except VerifierUnavailable:
            return base
        if progress.state == "queued":
            return (f"{base}: queued behind {progress.ahead} download(s) of this fleet "
                    f"({progress.active} running in all)")
        if progress.state == "fetching":
            return (f"{base}: downloading, {progress.bytes_read} of "
                    f"{release.spec.artifact.size} bytes")
        return base

    def _backoff(self, release: Release) -> float:
        key = (release.fleet, release.name)
        retry = self._retries.get(key, 0)
        self._retries[key] = retry + 1
        return float(min(2 ** retry, self.retry_max_delay))

    async def _rebuild_floor(self, release: Release) -> int | None:
        """Invariant 2: the floor when the RollbackFloor is missing (None: nothing was ever
        published for this product and tier, as far as anything shows)."""
        fleet, product, tier = release.fleet, release.spec.product, str(release.spec.tier)
        sources = {
            "Published releases": self.view.published_floor(fleet, product, tier),
            "this operator's own publications": self.known_floors.get((fleet, product, tier)),
            "job documents in channels": self.view.channel_floor(fleet, product, tier),
        }
        found = {k: v for k, v in sources.items() if v is not None}
        if not found:
            return None
        value = max(found.values())
        rebuilt = ledger.new_floor(fleet, product, tier, value)
        await self.store.update_floor(fleet, product, tier, lambda current: (
            rebuilt if current is None else None, None))
        message = (f"RollbackFloor {rollback_floor_name(product, tier)} was missing; "
                   f"rebuilt at {value} from "
                   + ", ".join(f"{k} ({v})" for k, v in found.items()))
        log.warning("%s/%s: %s", fleet, release.name, message)
        await self.store.event(release.obj, "Warning", "FloorRebuilt", message)
        self.metrics.floor_rebuilds.labels(fleet, tier).inc()
        floor = await self.store.get_floor(fleet, product, tier)
        return floor.spec.security_version if floor is not None else value

    # ---- status ---------------------------------------------------------------------------

    async def _reject(self, release: Release, reason: Reason, message: str,
                      verdict: ReleaseVerdict | None = None) -> None:
        message = redact_text(message)
        if await self.store.announce(release.obj, "rejected", "Warning", str(reason), message):
            self.metrics.rejections.labels(release.fleet, str(release.spec.tier),
                                           str(reason)).inc()
        extra: dict[str, Any] = {}
        if verdict is not None and verdict.key_ids:
            extra["verifiedKeyIds"] = list(verdict.key_ids)
        await self._status(release.obj, release.generation, phase="Rejected", reason=reason,
                           message=message, extra=extra)

    async def _status(self, obj: JSON, generation: int, *, phase: str, reason: Reason | None,
                      message: str, extra: Mapping[str, Any] | None = None,
                      keep_evidence: bool = False, conditional: bool = True) -> bool:
        """Write the release's status. The gate's writes are conditional on the object it last
        saw: when someone else wrote meanwhile (a withdrawal, another replica) and the release is
        decided, their word stands; False then. A withdrawal writes unconditionally."""
        fleet, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
        for _ in range(8):
            body = self._status_body(obj, generation, phase=phase, reason=reason,
                                     message=message, extra=extra, keep_evidence=keep_evidence)
            version = obj["metadata"].get("resourceVersion") if conditional else None
            written = await self.store.patch_status(FIRMWARE_RELEASES, fleet, name, body,
                                                    resource_version=version)
            if written is not None:
                obj["status"] = written.get("status") or body
                obj["metadata"] = written.get("metadata") or obj["metadata"]
                return True
            fresh = await self.store.get_release(fleet, name)
            if fresh is None:
                return False
            status = fresh.get("status") or {}
            obj["status"], obj["metadata"] = status, fresh.get("metadata") or obj["metadata"]
            if status.get("phase") in FINAL_PHASES and \
                    status.get("observedGeneration") == generation:
                return False
        return False

    def _status_body(self, obj: JSON, generation: int, *, phase: str, reason: Reason | None,
                     message: str, extra: Mapping[str, Any] | None,
                     keep_evidence: bool) -> dict[str, Any]:
        now = self.now()
        status = obj.get("status") or {}
        message = redact_text(message)
        if phase == "Withdrawn":
            ready = condition("Ready", False, str(Reason.KeyRevoked), message, generation, now)
            conditions = merge_conditions(parse_conditions(status), [ready])
        elif phase == "Verifying":
            conditions = merge_conditions(parse_conditions(status), [
                condition(c, None, "Verifying", message, generation, now)
                for c in ("SignatureVerified", "RollbackChecked", "IntegrityVerified", "Ready")])
        else:
            conditions = merge_conditions(parse_conditions(status), release_conditions(
                reason, message, phase == "Published", generation, now))
        body: dict[str, Any] = {
            "phase": phase, "reason": str(reason) if reason else None, "message": message,
            "observedGeneration": generation,
            "conditions": [c.to_k8s() for c in conditions], **(extra or {})}
        if phase != "Published" and not keep_evidence:
            body.update({"publishedAt": None, "publishedTo": None})
        return body


def _revoked_message(key_ids: Iterable[str]) -> str:
    return "signed by revoked key " + ", ".join(sorted(key_ids))
