"""SigningKeys of a fleet, evaluated together: one `KeyKeeper.reconcile` a fleet.

A key's phase depends on its fleet's other keys (a successor's activation retires it; a key
revoked under one name is revoked under every name), so keys are evaluated per fleet, whenever
one of them or the fleet's RevocationList changes, and at the next time-driven transition
(activation, end of an overlap, expiry), on time, without any edit.

Revocation is recorded before anything else: a SigningKey that says revoked puts its keyId on the
fleet's RevocationList (which the API server keeps from losing entries or being deleted), so
deleting and re-creating the key, or applying its public key under another name, gives Revoked
again. Only then are the releases it signed withdrawn (see `ReleaseGate.withdraw` for why the
order matters).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from flashgate.api import (
    Condition,
    RevocationList,
    RevocationListSpec,
    RevokedKey,
    SigningKeyStatus,
)
from flashgate.api.published import BUNDLE_CONFIGMAP, BUNDLE_KEY, BUNDLE_LABELS
from flashgate.kube.client import JSON
from flashgate.operator import bundle
from flashgate.operator.conditions import condition, merge_conditions, parse_conditions
from flashgate.operator.fleets import FleetView, ParsedKey, UnusableKey
from flashgate.operator.metrics import Metrics
from flashgate.operator.releases import ReleaseGate
from flashgate.operator.store import SIGNING_KEYS, Store
from flashgate.trust.rotation import KeyPhase, PhaseResult
from flashgate.trust.vocabulary import format_time
from flashgate.verifier_api.client import VerifierUnavailable
from flashgate.verifier_api.models import KeyRequest, KeyVerdict

log = logging.getLogger("flashgate.operator")

RECHECK_SECONDS = 3600.0  # a fleet with no time-driven change ahead is still looked at hourly


class KeyVerifier(Protocol):
    async def verify_key(self, request: KeyRequest) -> KeyVerdict: ...


@dataclass
class KeyKeeper:
    store: Store
    verifier: KeyVerifier
    view: FleetView
    gate: ReleaseGate
    metrics: Metrics
    clock: Callable[[], float] = time.time
    # The sidecar's answer about each key's endorsement, per (fleet, uid), with its generation.
    verdicts: dict[tuple[str, str], tuple[int, KeyVerdict]] = field(default_factory=dict)
    # keyIds whose releases were already withdrawn by this process, per fleet.
    withdrawn: dict[str, set[str]] = field(default_factory=dict)

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    async def reconcile(self, fleet: str) -> float | None:
        await self.view.synced.wait()
        unavailable = await self._check_endorsements(fleet)
        await self._record_revocations(fleet)
        revoked = self.view.revoked_key_ids(fleet)
        fresh = revoked - self.withdrawn.get(fleet, set())
        if fresh:
            withdrawn = await self.gate.withdraw(fleet, fresh)
            log.info("%s: keys %s revoked; withdrew %s", fleet, sorted(fresh),
                     withdrawn or "nothing")
            self.withdrawn.setdefault(fleet, set()).update(fresh)
        now = self.clock()
        upcoming = []
        phases = list(self.view.phases_of(fleet, int(now)))
        published = await self._publish_bundle(fleet, phases, int(now))
        unrevocable = {m.key.name: m for m in published.unrevocable}
        if published.next_change is not None:
            upcoming.append(published.next_change - now)
        for key, result in phases:
            await self._write_status(fleet, key, result, unrevocable)
            if result.next_transition is not None and result.next_transition > now:
                upcoming.append(result.next_transition - now)
        for bad in self.view.bad_keys(fleet):
            await self._write_bad(fleet, bad)
        delay = min([RECHECK_SECONDS, *upcoming])
        if unavailable:
            delay = min(delay, 2.0)
        return max(0.5, delay)

    async def _check_endorsements(self, fleet: str) -> bool:
        """Ask the sidecar about every key generation not checked yet; True when it could not
        answer (those keys stay Pending and the fleet is looked at again soon)."""
        unavailable = False
        for key in self.view.fleet_keys(fleet):
            known = self.verdicts.get((fleet, key.uid))
            if known is not None and known[0] == key.generation:
                continue
            try:
                verdict = await self.verifier.verify_key(KeyRequest.model_validate(
                    {"fleet": fleet, "spec": key.spec.model_dump(by_alias=True, mode="json")}))
            except VerifierUnavailable:
                self.metrics.verifier_unavailable.labels("key").inc()
                unavailable = True
                continue
            self.verdicts[(fleet, key.uid)] = (key.generation, verdict)
            self.view.set_endorsed(fleet, key, verdict.endorsed)
        return unavailable

    async def _record_revocations(self, fleet: str) -> None:
        """Every SigningKey that says revoked is on the fleet's RevocationList, with its
        root-signed revocation when it carries one."""
        keys = self.view.fleet_keys(fleet)
        wanted = {k.key_id: k for k in keys if k.spec.revoked or k.spec.revocation}
        record = self.view.revocation_lists.get(fleet)
        entries = record.spec.keys if record is not None else {}
        missing = {kid: k for kid, k in wanted.items()
                   if kid not in entries
                   or (k.spec.revocation and entries[kid].revocation is None)}
        # A fleet with keys always has its list, even empty: deleting a revoked key is refused
        # until its keyId is on it (deploy/policies.yaml), and the refusal then says why.
        if not missing and (record is not None or not keys):
            return
        now = self.now()

        def update(current: RevocationList | None) -> RevocationList | None:
            recorded = dict(current.spec.keys) if current is not None else {}
            changed = False
            for kid, key in missing.items():
                entry = recorded.get(kid)
                if entry is None:
                    recorded[kid] = RevokedKey(revoked_at=now, signing_key=key.name,
                                               tier=key.spec.tier,
                                               public_key=key.spec.public_key,
                                               not_after=key.spec.not_after,
                                               revocation=key.spec.revocation)
                    changed = True
                elif entry.revocation is None and key.spec.revocation:
                    recorded[kid] = entry.model_copy(update={"revocation": key.spec.revocation})
                    changed = True
            if not changed and current is not None:
                return None
            return RevocationList(metadata={}, spec=RevocationListSpec(keys=recorded))

        await self.store.update_revocations(fleet, update)
        fresh = await self.store.get_revocations(fleet)
        if fresh is not None:  # before the watch brings it: withdrawal must not wait for it
            self.view.set_revocations(fleet, fresh)
        for kid, key in missing.items():
            log.info("%s: recorded the revocation of key %s (SigningKey %s)", fleet, kid,
                     key.name)

    async def _publish_bundle(self, fleet: str, phases: list[tuple[ParsedKey, PhaseResult]],
                              now: int) -> bundle.Bundle:
        """The fleet's trust bundle, written when it changed."""
        if not phases and fleet not in self.view.revocation_lists:
            return bundle.Bundle("")
        refused = {}  # revocations the sidecar found not root-signed for their key
        for key, _ in phases:
            known = self.verdicts.get((fleet, key.uid))
            if key.spec.revocation and known is not None and known[0] == key.generation \
                    and known[1].revocation_verified is False:
                refused[key.spec.revocation] = known[1].revocation_message or "not verified"
        built = bundle.build(fleet, phases, self.view.revocation_lists.get(fleet), now, refused)
        text = built.text

        def update(data: Mapping[str, str]) -> Mapping[str, str] | None:
            return None if data == {BUNDLE_KEY: text} else {BUNDLE_KEY: text}

        await self.store.update_configmap(fleet, BUNDLE_CONFIGMAP, BUNDLE_LABELS, update)
        return built

    async def _write_status(self, fleet: str, key: ParsedKey, result: PhaseResult,
                            unrevocable: Mapping[str, bundle.Unrevocable]) -> None:
        generation, now = key.generation, self.now()
        status: Mapping[str, Any] = key.obj.get("status") or {}
        known = self.verdicts.get((fleet, key.uid))
        verdict = known[1] if known is not None and known[0] == generation else None
        conditions: list[Condition] = []
        devices_note = ""  # said in the Revoked event too: devices are not told without the root
        if verdict is not None:
            conditions.append(condition(
                "Endorsed", verdict.endorsed,
                "RootEndorsed" if verdict.endorsed else str(verdict.reason or "NotEndorsed"),
                verdict.message, generation, now))
        trusted = result.trusted
        conditions.append(condition("Trusted", trusted, result.reason, result.message,
                                    generation, now))
        conditions.append(condition("Ready", result.phase == KeyPhase.Active, result.reason,
                                    result.message, generation, now))
        if result.phase == KeyPhase.Revoked:
            missing = unrevocable.get(key.name)
            until = format_time(int(key.spec.not_after.timestamp()))
            if missing is None:
                told = (True, "InTrustBundle",
                        "the trust bundle carries the root-signed revocation of this key")
            elif missing.refused is not None:
                told = (False, "RevocationNotRootSigned",
                        f"spec.revocation is not a root-signed revocation of this key "
                        f"({missing.refused}): devices keep trusting this key until its "
                        f"notAfter, {until}; make one with `flashgate revoke`")
            else:
                told = (False, "NoRootSignedRevocation",
                        "no root-signed revocation (spec.revocation): devices keep trusting "
                        f"this key until its notAfter, {until}; make one with `flashgate "
                        "revoke` and set spec.revocation")
            conditions.append(condition("DevicesToldOfRevocation", *told, generation, now))
            if not told[0]:
                devices_note = told[2]
        if verdict is None and result.phase == KeyPhase.Pending:
            message = "waiting for the verifier sidecar to check the endorsement"
            result = PhaseResult(KeyPhase.Pending, "AwaitingVerification", message)
        new = SigningKeyStatus(
            phase=result.phase, key_id=key.key_id, reason=result.reason,
            message=result.message,
            trusted_from=_time(result.trusted_from), trusted_until=_time(result.trusted_until),
            next_transition=_time(result.next_transition),
            conditions=merge_conditions(parse_conditions(status), conditions),
            observed_generation=generation).to_k8s()
        await self._patch(fleet, key.name, key.obj, status, new, result, devices_note)

    async def _write_bad(self, fleet: str, bad: UnusableKey) -> None:
        """A key whose spec cannot be used: Invalid, with the reason on itself; its fleet's
        other keys and releases go on as if it were not there."""
        status: Mapping[str, Any] = bad.obj.get("status") or {}
        generation = int((bad.obj.get("metadata") or {}).get("generation") or 1)
        now = self.now()
        new = SigningKeyStatus(
            phase=KeyPhase.Invalid, reason="SpecInvalid", message=bad.message,
            conditions=merge_conditions(parse_conditions(status), [
                condition("Trusted", False, "SpecInvalid", bad.message, generation, now),
                condition("Ready", False, "SpecInvalid", bad.message, generation, now)]),
            observed_generation=generation).to_k8s()
        await self._patch(fleet, bad.name, bad.obj, status, new,
                          PhaseResult(KeyPhase.Invalid, "SpecInvalid", bad.message))

    async def _patch(self, fleet: str, name: str, obj: JSON, old: Mapping[str, Any], new: JSON,
                     result: PhaseResult, note: str = "") -> None:
        fields = ("phase", "keyId", "reason", "message", "trustedFrom", "trustedUntil",
                  "nextTransition", "observedGeneration", "conditions")
        if all(old.get(f) == new.get(f) for f in fields):
            return
        patch = {f: new.get(f) for f in fields}
        written = await self.store.patch_status(SIGNING_KEYS, fleet, name, patch)
        if written is None:
            return
        obj["status"] = written.get("status") or patch
        if old.get("phase") != new.get("phase"):
            await self.store.event(obj, "Warning" if result.phase in (
                KeyPhase.Invalid, KeyPhase.Revoked, KeyPhase.Expired) else "Normal",
                str(result.phase), f"SigningKey is {result.phase}: {result.message}"
                + (f"; {note}" if note else ""))


def _time(seconds: int | None) -> datetime | None:
    return datetime.fromtimestamp(seconds, UTC) if seconds is not None else None
