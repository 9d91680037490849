"""In-memory counterparts of the operator's I/O, so its logic runs in milliseconds here.

`MemoryStore` implements `flashgate.operator.store.Store` on dicts, with the API server's
optimistic concurrency (resourceVersions, 409 on a stale write) and the same read-modify-write
contract; every operation first passes `point(name)`, where a test may interleave another task
(tests/operator/test_interleavings.py). `ScriptedVerifier` stands in for the verifier sidecar:
the test says who signed what; it refuses a revoked or retired signer as the sidecar does.
`World` wires them to the real FleetView, ReleaseGate, KeyKeeper and ChannelGuard.

These are fakes of I/O only: every decision under test is the operator's own code.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flashgate.api import REVOCATION_LIST_NAME, RevocationList, RollbackFloor, rollback_floor_name
from flashgate.api.published import channel_name
from flashgate.kube.client import JSON, Resource
from flashgate.operator.channels import ChannelGuard
from flashgate.operator.fleets import FleetView
from flashgate.operator.keys import KeyKeeper
from flashgate.operator.ledger import SEQUENCE_ANNOTATION
from flashgate.operator.metrics import Metrics
from flashgate.operator.releases import ReleaseGate
from flashgate.operator.store import (
    FIRMWARE_RELEASES,
    SIGNING_KEYS,
    ChannelUpdate,
    DataUpdate,
    FloorUpdate,
    R,
    RevocationUpdate,
    channel_content,
    content_digest,
)
from flashgate.signing.filekeys import KeySigner, generate
from flashgate.trust import Algorithm
from flashgate.trust.cose import CT_RELEASE, sign1
from flashgate.trust.vocabulary import Reason, format_time
from flashgate.verifier_api.client import VerifierUnavailable
from flashgate.verifier_api.models import (
    KeyRequest,
    KeyVerdict,
    ReleaseProgress,
    ReleaseRequest,
    ReleaseVerdict,
)

NOW = 1_790_000_000
Point = Callable[[str], Awaitable[None]]


async def no_point(_: str) -> None:
    return None


def copy_of(obj: JSON) -> JSON:
    """A deep copy (JSON round trip: several times faster than copy.deepcopy for such data)."""
    copied: JSON = json.loads(json.dumps(obj))
    return copied


@dataclass
class MemoryStore:
    """See the module docstring."""

    point: Point = no_point
    objects: dict[tuple[str, str, str], JSON] = field(default_factory=dict)
    events: list[tuple[str, str, str, str]] = field(default_factory=list)  # name, type, reason, msg
    announced: set[str] = field(default_factory=set)
    versions: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    written: dict[tuple[str, str], str] = field(default_factory=dict)

    # ---- plumbing -------------------------------------------------------------------------

    def put(self, kind: str, obj: JSON) -> JSON:
        """Store an object as the API server would: a new resourceVersion (and a uid)."""
        obj = copy_of(obj)
        metadata = obj.setdefault("metadata", {})
        metadata["resourceVersion"] = str(next(self.versions))
        metadata.setdefault("uid", f"uid-{metadata['name']}-{metadata['resourceVersion']}")
        metadata.setdefault("generation", 1)
        metadata.setdefault("creationTimestamp", format_time(NOW))
        self.objects[(kind, metadata["namespace"], metadata["name"])] = obj
        return copy_of(obj)

    def get(self, kind: str, fleet: str, name: str) -> JSON | None:
        found = self.objects.get((kind, fleet, name))
        return copy_of(found) if found is not None else None

    def list(self, kind: str, fleet: str) -> list[JSON]:
        return [copy_of(o) for (k, f, _), o in sorted(self.objects.items())
                if k == kind and f == fleet]

    # ---- Store ----------------------------------------------------------------------------

    async def get_release(self, fleet: str, name: str) -> JSON | None:
        await self.point("get release")
        return self.get("FirmwareRelease", fleet, name)

    async def patch_status(self, resource: Resource, fleet: str, name: str, status: JSON,
                           resource_version: str | None = None) -> JSON | None:
        await self.point(f"write {resource.kind} status {status.get('phase')}")
        current = self.objects.get((resource.kind, fleet, name))
        if current is None:
            return None
        if resource_version is not None and \
                current["metadata"]["resourceVersion"] != resource_version:
            return None
        merged = {**(current.get("status") or {}), **status}
        return self.put(resource.kind, {**current, "status": {
            k: v for k, v in merged.items() if v is not None}})

    async def get_floor(self, fleet: str, product: str, tier: str) -> RollbackFloor | None:
        await self.point("get floor")
        raw = self.get("RollbackFloor", fleet, rollback_floor_name(product, tier))
        return RollbackFloor.model_validate(raw) if raw is not None else None

    async def update_floor(self, fleet: str, product: str, tier: str,
                           update: FloorUpdate[R]) -> R:
        await self.point("update floor")
        name = rollback_floor_name(product, tier)
        raw = self.get("RollbackFloor", fleet, name)
        current = RollbackFloor.model_validate(raw) if raw is not None else None
        new, result = update(current)
        if new is not None:
            body = new.to_k8s()
            body["metadata"] = {**(raw or {}).get("metadata", {}), "name": name,
                                "namespace": fleet}
            self.put("RollbackFloor", body)
        return result

    async def list_floors(self, fleet: str) -> list[RollbackFloor]:
        await self.point("list floors")
        return [RollbackFloor.model_validate(o) for o in self.list("RollbackFloor", fleet)]

    async def update_channel(self, fleet: str, product: str, channel: str,
                             update: ChannelUpdate) -> bool:
        await self.point(f"update channel {channel}")
        name = channel_name(product, channel)
        current = self.get("ConfigMap", fleet, name) or {}
        new = update(channel_content(current))
        if new is None:
            return False
        labels = {"ota.flashgate.dev/kind": "channel", "ota.flashgate.dev/product": product,
                  "ota.flashgate.dev/channel": channel}
        annotations = {f"{SEQUENCE_ANNOTATION}{tier}": str(n) for tier, n in new.sequences.items()}
        self._write(fleet, name, labels, dict(new.documents), annotations)
        return True

    async def update_configmap(self, fleet: str, name: str, labels: Mapping[str, str],
                               update: DataUpdate) -> bool:
        await self.point("update configmap")
        current = self.get("ConfigMap", fleet, name) or {}
        new = update(dict(current.get("data") or {}))
        if new is None:
            return False
        self._write(fleet, name, dict(labels), dict(new), {})
        return True

    def _write(self, fleet: str, name: str, labels: dict[str, str], data: dict[str, str],
               annotations: dict[str, str]) -> None:
        written = self.put("ConfigMap", {"metadata": {"name": name, "namespace": fleet,
                                                      "labels": labels,
                                                      "annotations": annotations},
                                         "data": data})
        self.written[(fleet, name)] = content_digest(written)

    async def list_channels(self, fleet: str) -> list[JSON]:
        await self.point("list channels")
        return self.list("ConfigMap", fleet)

    def wrote(self, fleet: str, name: str, configmap: JSON) -> bool:
        return self.written.get((fleet, name)) == content_digest(configmap)

    async def get_revocations(self, fleet: str) -> RevocationList | None:
        await self.point("get revocations")
        raw = self.get("RevocationList", fleet, REVOCATION_LIST_NAME)
        return RevocationList.model_validate(raw) if raw is not None else None

    async def update_revocations(self, fleet: str, update: RevocationUpdate) -> None:
        await self.point("update revocations")
        raw = self.get("RevocationList", fleet, REVOCATION_LIST_NAME)
        current = RevocationList.model_validate(raw) if raw is not None else None
        new = update(current)
        if new is not None:
            if current is not None:  # the API server's CEL rule: entries are never removed
                assert set(current.spec.keys) <= set(new.spec.keys)
            body = new.to_k8s()
            body["metadata"] = {"name": REVOCATION_LIST_NAME, "namespace": fleet}
            self.put("RevocationList", body)

    async def announce(self, obj: JSON, what: str, type_: str, reason: str,
                       message: str) -> bool:
        await self.point(f"announce {what}")
        name = f"flashgate.{obj['metadata']['uid']}.{what}"
        if name in self.announced:
            return False
        self.announced.add(name)
        self.events.append((obj["metadata"]["name"], type_, reason, message))
        return True

    async def event(self, obj: JSON, type_: str, reason: str, message: str) -> None:
        self.events.append((obj["metadata"]["name"], type_, reason, message))

    # ---- what tests look at ---------------------------------------------------------------

    def channel(self, fleet: str, product: str = "gw", channel: str = "stable") -> dict[str, str]:
        cm = self.get("ConfigMap", fleet, channel_name(product, channel))
        return dict((cm or {}).get("data") or {})

    def phase(self, fleet: str, name: str) -> str | None:
        obj = self.get("FirmwareRelease", fleet, name) or {}
        return (obj.get("status") or {}).get("phase")

    def reasons(self, name: str) -> list[str]:
        return [reason for who, _, reason, _ in self.events if who == name]


@dataclass
class ScriptedVerifier:
    """The sidecar's verdicts as the test scripts them: a release is signed by the keys the test
    says; those signers must be in the request, not revoked, not retired."""

    signers: dict[str, tuple[str, ...]] = field(default_factory=dict)  # release -> keyIds
    rejections: dict[str, tuple[Reason, str]] = field(default_factory=dict)
    not_endorsed: set[str] = field(default_factory=set)  # keyIds
    # spec.revocation envelopes that are not a root-signed revocation of their key -> why
    forged_revocations: dict[str, str] = field(default_factory=dict)
    down: bool = False
    calls: int = 0
    delay: float = 0.0  # seconds each release verification takes

    async def verify_release(self, request: ReleaseRequest) -> ReleaseVerdict:
        self.calls += 1
        await asyncio.sleep(self.delay)
        if self.down:
            raise VerifierUnavailable("connection refused")
        spec = request.release
        if request.name in self.rejections:
            reason, message = self.rejections[request.name]
            return ReleaseVerdict(verdict="rejected", reason=reason, message=message)
        entries = {key_id_of(e.spec.public_key): e for e in request.keys}
        for kid in self.signers.get(request.name, ()):
            entry = entries.get(kid)
            if entry is None:
                return ReleaseVerdict(verdict="rejected", reason=Reason.UnknownKey, message=kid)
            if entry.revoked or entry.spec.revoked:
                return ReleaseVerdict(verdict="rejected", reason=Reason.KeyRevoked, message=kid)
            if entry.retired:
                return ReleaseVerdict(verdict="rejected", reason=Reason.KeyExpired, message=kid)
        floor = request.floor or 0
        if spec.security_version < floor:
            return ReleaseVerdict(verdict="rejected", reason=Reason.RollbackRejected,
                                  message=f"below the floor {floor}")
        return ReleaseVerdict(verdict="accepted", reason=None, message="ok",
                              key_ids=list(self.signers.get(request.name, ())),
                              sha256=spec.artifact.sha256, size=spec.artifact.size)

    async def progress(self, fleet: str, name: str) -> ReleaseProgress:
        return ReleaseProgress(state="unknown")

    async def verify_key(self, request: KeyRequest) -> KeyVerdict:
        if self.down:
            raise VerifierUnavailable("connection refused")
        kid = key_id_of(request.spec.public_key)
        endorsed = kid not in self.not_endorsed
        revocation = request.spec.revocation
        forged = self.forged_revocations.get(revocation or "")
        return KeyVerdict(endorsed=endorsed, key_id=kid, message="scripted",
                          reason=None if endorsed else Reason.UnknownKey,
                          revocation_verified=None if not revocation else forged is None,
                          revocation_message=forged)


def key_id_of(pem: str) -> str:
    from flashgate.trust.keys import key_id, spki_from_pem
    return key_id(spki_from_pem(pem))


def key_object(fleet: str, name: str, signer: KeySigner, tier: str = "application",
               **spec: Any) -> JSON:
    return {"apiVersion": "ota.flashgate.dev/v1alpha1", "kind": "SigningKey",
            "metadata": {"name": name, "namespace": fleet},
            "spec": {"tier": tier, "algorithm": str(signer.algorithm),
                     "publicKey": signer.public_pem, "notBefore": format_time(NOW - 3600),
                     "notAfter": format_time(NOW + 86400 * 30), "endorsement": "AAAA",
                     **spec}}


def release_object(fleet: str, name: str, *, security_version: int = 1, version: str = "1.0.0",
                   product: str = "gw", tier: str = "application", channel: str = "stable",
                   content: bytes | None = None, url: str | None = None,
                   **spec: Any) -> JSON:
    data = content if content is not None else name.encode()
    return {"apiVersion": "ota.flashgate.dev/v1alpha1", "kind": "FirmwareRelease",
            "metadata": {"name": name, "namespace": fleet},
            "spec": {"tier": tier, "product": product, "version": version,
                     "securityVersion": security_version, "channel": channel,
                     "artifact": {"url": url or f"https://fw.example.com/{name}.bin",
                                  "name": f"{name}.bin",
                                  "sha256": hashlib.sha256(data).hexdigest(),
                                  "size": len(data)},
                     "signatures": ["c2ln"], **spec}}


@dataclass
class World:
    """One fleet's worth of operator, on MemoryStore and ScriptedVerifier."""

    fleet: str = "fleet-a"
    store: MemoryStore = field(default_factory=MemoryStore)
    verifier: ScriptedVerifier = field(default_factory=ScriptedVerifier)
    clock: list[float] = field(default_factory=lambda: [float(NOW)])

    def __post_init__(self) -> None:
        self.view = FleetView()
        self.view.synced.set()
        self.metrics = Metrics()
        self.gate = ReleaseGate(store=self.store, verifier=self.verifier, view=self.view,
                                metrics=self.metrics, clock=lambda: self.clock[0])
        self.keeper = KeyKeeper(store=self.store, verifier=self.verifier, view=self.view,
                                gate=self.gate, metrics=self.metrics, clock=lambda: self.clock[0])
        self.guard = ChannelGuard(store=self.store, metrics=self.metrics)

    # The watches' part: what the API server has, handed to the view.

    def sync(self) -> None:
        for (kind, fleet, _), obj in list(self.store.objects.items()):
            if fleet != self.fleet:
                continue
            if kind == "SigningKey":
                self.view.on_key("MODIFIED", copy_of(obj))
            elif kind == "RevocationList":
                self.view.on_revocations("MODIFIED", copy_of(obj))
            elif kind == "FirmwareRelease":
                self.view.on_release("MODIFIED", copy_of(obj))
            elif kind == "RollbackFloor":
                self.view.on_floor("MODIFIED", copy_of(obj))

    def add_key(self, name: str, signer: KeySigner | None = None, **spec: Any) -> KeySigner:
        signer = signer or generate(Algorithm.ED25519)
        self.store.put("SigningKey", key_object(self.fleet, name, signer, **spec))
        self.sync()
        return signer

    def add_release(self, name: str, signers: list[KeySigner], **spec: Any) -> JSON:
        """A release whose envelopes are real ones by `signers` (the gate reads their kid to
        choose the keys it sends); the scripted verifier decides on the signers alone."""
        self.verifier.signers[name] = tuple(s.key_id for s in signers)
        obj = release_object(self.fleet, name, **spec)
        obj["spec"]["signatures"] = [
            base64.b64encode(sign1(s, CT_RELEASE, name.encode())).decode() for s in signers]
        obj = self.store.put("FirmwareRelease", obj)
        self.sync()
        return obj

    async def decide(self, name: str) -> float | None:
        result = await self.gate.reconcile(self.fleet, name)
        self.sync()
        return result

    async def keys(self) -> float | None:
        result = await self.keeper.reconcile(self.fleet)
        self.sync()
        return result

    def revoke(self, name: str) -> None:
        obj = self.store.get("SigningKey", self.fleet, name)
        assert obj is not None
        obj["spec"]["revoked"] = True
        obj["metadata"]["generation"] += 1
        self.store.put("SigningKey", obj)
        self.sync()


__all__ = ["FIRMWARE_RELEASES", "NOW", "SIGNING_KEYS", "MemoryStore", "ScriptedVerifier",
           "World", "key_object", "release_object"]
