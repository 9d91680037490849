"""What the operator does for a FirmwareRelease and a SigningKey, between Kopf and the world.

Kopf handlers (handlers.py) stay thin and call into `Gate`. The Gate never decides trust itself:
every signature, endorsement and digest is checked by the verifier sidecar, and the operator
publishes only on its `accepted` verdict. When the sidecar cannot be reached nothing is published
(fail closed) and the release is retried with backoff.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf

from flashgate.operator.metrics import Metrics
from flashgate.operator.status import (
    condition,
    job_document,
    merge_conditions,
    parse_rfc3339,
    release_conditions,
    rfc3339,
)
from flashgate.operator.store import FleetStore, FloorMoved
from flashgate.trust import Reason
from flashgate.trust.durations import parse_duration
from flashgate.trust.rotation import DEFAULT_OVERLAP, KeyPhase, KeyState, key_phase
from flashgate.verifier_api.client import VerifierClient, VerifierUnavailable
from flashgate.verifier_api.models import KeyRequest, ReleaseRequest

FINAL_PHASES = {"Published", "Rejected", "Withdrawn"}
KEY_RECHECK_SECONDS = 2.0  # how late a new key (say a successor) is noticed by the others;
# time-driven transitions themselves are exact: each loop sleeps until the next one.


@dataclass(frozen=True)
class FleetKey:
    """A SigningKey as the operator's index holds it."""

    name: str
    spec: Mapping[str, Any]
    status: Mapping[str, Any]


def endorsed_of(status: Mapping[str, Any], generation: int | None = None) -> bool | None:
    """The Endorsed condition as a tri-state; None when not checked (for this generation)."""
    for cond in status.get("conditions") or ():
        if cond.get("type") == "Endorsed":
            if generation is not None and cond.get("observedGeneration") != generation:
                return None
            return {"True": True, "False": False}.get(cond.get("status", ""))
    return None


def key_state(key: FleetKey, endorsed: bool | None = None) -> KeyState:
    spec = key.spec
    replaces = spec.get("replaces")
    return KeyState(
        name=key.name,
        endorsed=endorsed_of(key.status) if endorsed is None else endorsed,
        revoked=bool(spec.get("revoked")),
        not_before=parse_rfc3339(spec["notBefore"]),
        not_after=parse_rfc3339(spec["notAfter"]),
        activate_at=parse_rfc3339(spec["activateAt"]) if spec.get("activateAt") else None,
        replaces=replaces,
        overlap_seconds=parse_duration(spec.get("overlap") or DEFAULT_OVERLAP) if replaces else 0,
    )


@dataclass
class Gate:
    verifier: VerifierClient
    store: FleetStore
    metrics: Metrics
    clock: Callable[[], float] = time.time
    retry_max_delay: float = 30.0
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("flashgate.operator"))

    def backoff(self, retry: int) -> float:
        return float(min(2 ** retry, self.retry_max_delay))

    # ---- FirmwareRelease ------------------------------------------------------------------

    async def reconcile_release(self, *, body: kopf.Body, fleet_keys: Iterable[FleetKey],
                                retry: int) -> None:
        name, fleet = body.metadata.name, body.metadata.namespace
        spec, status = dict(body.spec), dict(body.status)
        generation = int(body.metadata.get("generation", 1))
        assert name is not None and fleet is not None
        if status.get("phase") in FINAL_PHASES and status.get("observedGeneration") == generation:
            return  # already decided (a resume after a restart): never publish twice
        await self._status(fleet, name, {"phase": "Verifying", "observedGeneration": generation})

        now = self.clock()
        keys = list(fleet_keys)
        states = [key_state(k) for k in keys]
        retired = {s.name for s in states
                   if key_phase(s, states, int(now)).phase == KeyPhase.Retired}
        floor = await asyncio.to_thread(self.store.get_floor, fleet, spec["product"], spec["tier"])
        request = ReleaseRequest.model_validate({
            "fleet": fleet, "name": name, "release": spec, "floor": floor, "now": int(now),
            "keys": [{"name": k.name, "spec": dict(k.spec), "retired": k.name in retired}
                     for k in keys],
        })
        try:
            verdict = await self.verifier.verify_release(request)
        except VerifierUnavailable as error:
            self.metrics.verifier_unavailable.labels("release").inc()
            message = f"verifier sidecar unavailable, nothing published; retrying: {error}"
            await self._release_outcome(body, Reason.VerifierUnavailable, message, "Pending")
            kopf.event(body, type="Warning", reason="VerifierUnavailable", message=message)
            raise kopf.TemporaryError(message, delay=self.backoff(retry)) from error
        self.metrics.verification_seconds.labels(spec["tier"]).observe(verdict.seconds)

        if verdict.verdict != "accepted":
            await self._reject(body, Reason(verdict.reason or Reason.SignatureInvalid),
                               verdict.message)
            return
        evidence = {"verifiedKeyIds": list(verdict.key_ids), "verifiedSha256": verdict.sha256}
        try:
            # The floor goes up before the job document is written: a device may see the new
            # release only once nothing older can be published again.
            await asyncio.to_thread(self.store.raise_floor, fleet, spec["product"], spec["tier"],
                                    int(spec["securityVersion"]), name, self.clock())
        except FloorMoved as moved:
            await self._reject(body, Reason.RollbackRejected,
                               f"securityVersion {spec['securityVersion']} is below the floor "
                               f"{moved.floor} for {spec['product']}/{spec['tier']} (the floor "
                               "rose while this release was being verified)", evidence)
            return
        document = job_document(fleet=fleet, name=name, spec=spec, published_at=self.clock())
        published = await asyncio.to_thread(self.store.publish, fleet, name, spec, document)
        message = (f"published to {published.where}: signed by {', '.join(verdict.key_ids)}, "
                   f"sha256 {verdict.sha256}, {verdict.size} bytes")
        await self._release_outcome(body, None, message, "Published", {
            **evidence, "publishedAt": published.published_at, "publishedTo": published.where})
        if not published.already:
            self.metrics.publications.labels(fleet, spec["tier"]).inc()
            kopf.event(body, type="Normal", reason="Published", message=message)

    async def _reject(self, body: kopf.Body, reason: Reason, message: str,
                      extra: Mapping[str, Any] | None = None) -> None:
        self.metrics.rejections.labels(body.metadata.namespace, body.spec["tier"], reason).inc()
        await self._release_outcome(body, reason, message, "Rejected", extra)
        kopf.event(body, type="Warning", reason=str(reason), message=message)

    async def _release_outcome(self, body: kopf.Body, reason: Reason | None, message: str,
                               phase: str, extra: Mapping[str, Any] | None = None) -> None:
        generation = int(body.metadata.get("generation", 1))
        conditions = release_conditions(reason, message, phase == "Published", generation,
                                        self.clock())
        await self._status(body.metadata.namespace, body.metadata.name, {
            "phase": phase, "reason": str(reason) if reason else None, "message": message,
            "observedGeneration": generation,
            "conditions": merge_conditions(body.status.get("conditions"), conditions),
            **(extra or {})})

    async def _status(self, fleet: str | None, name: str | None, status: dict[str, Any],
                      plural: str = "firmwarereleases") -> None:
        assert fleet is not None and name is not None
        await asyncio.to_thread(self.store.patch_status, plural, fleet, name, status)

    # ---- SigningKey -----------------------------------------------------------------------

    async def reconcile_key(self, *, body: kopf.Body, fleet_keys: Iterable[FleetKey],
                            retry: int = 0) -> float:
        """Check the endorsement (once per generation, through the sidecar), derive the phase
        from the rotation state machine, write status when it changed. Returns how long to
        sleep before looking again (the next time-driven transition, bounded)."""
        name, fleet = body.metadata.name, body.metadata.namespace
        assert name is not None and fleet is not None
        spec, status = dict(body.spec), dict(body.status)
        generation = int(body.metadata.get("generation", 1))
        now = self.clock()
        new_status: dict[str, Any] = {"observedGeneration": generation}
        conditions: list[dict[str, Any]] = []

        endorsed = endorsed_of(status, generation)
        if endorsed is None:
            try:
                verdict = await self.verifier.verify_key(
                    KeyRequest.model_validate({"fleet": fleet, "spec": spec}))
            except VerifierUnavailable as error:
                self.metrics.verifier_unavailable.labels("key").inc()
                await self._status(fleet, name, {
                    "phase": "Pending", "reason": "VerifierUnavailable",
                    "message": f"verifier sidecar unavailable; retrying: {error}",
                    "observedGeneration": generation}, plural="signingkeys")
                return self.backoff(retry)
            endorsed = verdict.endorsed
            new_status["keyId"] = verdict.key_id
            conditions.append(condition(
                "Endorsed", endorsed, "RootEndorsed" if endorsed else str(verdict.reason),
                verdict.message, generation, now))
        else:
            conditions.extend(c for c in status.get("conditions") or () if c["type"] == "Endorsed")

        this = FleetKey(name, spec, status)
        others = [k for k in fleet_keys if k.name != name]
        states = [key_state(this, endorsed), *(key_state(k) for k in others)]
        results = [key_phase(s, states, int(now)) for s in states]
        result = results[0]
        trusted = result.phase in (KeyPhase.Staged, KeyPhase.Active, KeyPhase.Retiring)
        conditions.append(condition("Trusted", trusted, result.reason, result.message,
                                    generation, now))
        conditions.append(condition("Ready", result.phase == KeyPhase.Active, result.reason,
                                    result.message, generation, now))
        new_status.update({
            "phase": str(result.phase), "reason": result.reason, "message": result.message,
            "trustedFrom": rfc3339(result.trusted_from) if result.trusted_from else None,
            "trustedUntil": rfc3339(result.trusted_until) if result.trusted_until else None,
            "nextTransition": rfc3339(result.next_transition) if result.next_transition else None,
            "conditions": merge_conditions(status.get("conditions"), conditions),
        })
        if any(status.get(k) != v for k, v in new_status.items()):
            await self._status(fleet, name, new_status, plural="signingkeys")
            if status.get("phase") != new_status["phase"]:
                kopf.event(body, type="Normal", reason=str(result.phase),
                           message=f"SigningKey is {result.phase}: {result.message}")

        # Wake at the next time-driven transition of any key of the fleet (a successor's
        # activation retires this one), and at least every KEY_RECHECK_SECONDS.
        upcoming = [r.next_transition for r in results
                    if r.next_transition and r.next_transition > now]
        return max(0.5, min([KEY_RECHECK_SECONDS, *(t - now for t in upcoming)]))

    async def withdraw_signed_by(self, *, fleet: str, key_id: str, key_name: str) -> list[str]:
        """A revoked key's releases leave their channels and are marked Withdrawn."""
        withdrawn = []
        releases = await asyncio.to_thread(self.store.list_objects, "firmwarereleases", fleet)
        for release in releases:
            status = release.get("status") or {}
            signed_by = status.get("verifiedKeyIds") or ()
            if status.get("phase") != "Published" or key_id not in signed_by:
                continue
            name, spec = release["metadata"]["name"], release["spec"]
            removed = await asyncio.to_thread(self.store.withdraw, fleet, name, spec)
            where = "removed from" if removed else "no longer current in"
            message = (f"withdrawn: SigningKey {key_name} ({key_id[:12]}…) that signed it was "
                       f"revoked; {where} its channel")
            ready = condition("Ready", False, str(Reason.KeyRevoked), message,
                              int(release["metadata"].get("generation", 1)), self.clock())
            await self._status(fleet, name, {
                "phase": "Withdrawn", "reason": str(Reason.KeyRevoked), "message": message,
                "conditions": merge_conditions(status.get("conditions"), [
                    *(c for c in status.get("conditions") or () if c["type"] != "Ready"), ready])})
            self.metrics.withdrawals.labels(fleet, spec["tier"]).inc()
            raw: Any = release  # an object read from the API is what Kopf calls a RawBody
            kopf.event(kopf.Body(raw), type="Warning", reason="Withdrawn", message=message)
            withdrawn.append(name)
        return withdrawn
