"""Everything the operator reads from and writes to the cluster, behind one interface.

`Store` is what the reconcilers need; `KubeStore` implements it on the API server and the tests'
`MemoryStore` (tests/operator/fakes.py) in memory, so the gate's logic runs in milliseconds there
and the e2e suite checks the wiring.

Writes that matter for safety are read-modify-write with optimistic concurrency: `update_*` takes
a pure function from the current object to the new one, writes with the resourceVersion it read,
and on 409 Conflict reads again and calls the function again. So a second operator replica, or a
restart in the middle of a publication, either sees the other's write and agrees with it, or
loses the race and retries. Reads used for a decision after a write are fresh GETs (linearizable),
never a watch cache.
"""
from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Protocol, TypeVar

from flashgate.api import (
    GROUP,
    REVOCATION_LIST_NAME,
    VERSION,
    RevocationList,
    RollbackFloor,
    rollback_floor_name,
)
from flashgate.api.published import (
    CHANNEL_LABEL,
    CHANNEL_LABELS,
    CHANNEL_SELECTOR,
    MANAGED_BY,
    PRODUCT_LABEL,
    channel_name,
)
from flashgate.kube.client import CONFIGMAPS, JSON, ApiError, Kube, Resource
from flashgate.operator.ledger import SEQUENCE_ANNOTATION, ChannelContent

R = TypeVar("R")

FIRMWARE_RELEASES = Resource(GROUP, VERSION, "firmwarereleases", "FirmwareRelease")
SIGNING_KEYS = Resource(GROUP, VERSION, "signingkeys", "SigningKey")
ROLLBACK_FLOORS = Resource(GROUP, VERSION, "rollbackfloors", "RollbackFloor")
REVOCATION_LISTS = Resource(GROUP, VERSION, "revocationlists", "RevocationList")
EVENTS = Resource("", "v1", "events", "Event")
VALIDATING_WEBHOOKS = Resource("admissionregistration.k8s.io", "v1",
                               "validatingwebhookconfigurations",
                               "ValidatingWebhookConfiguration")

COMPONENT = "flashgate-operator"
_CONFLICT_RETRIES = 16

FloorUpdate = Callable[[RollbackFloor | None], tuple[RollbackFloor | None, R]]
"""From the floor as read (None: there is none) to the floor to write (None: write nothing) and
what the caller wants back."""
ChannelUpdate = Callable[[ChannelContent], ChannelContent | None]
"""From what a channel ConfigMap holds (empty: there is none) to what it must hold (None:
unchanged)."""
DataUpdate = Callable[[Mapping[str, str]], Mapping[str, str] | None]
"""From a ConfigMap's data (empty: there is none) to its new data (None: unchanged)."""
RevocationUpdate = Callable[[RevocationList | None], RevocationList | None]


class TooManyWriters(Exception):
    """An object changed under every one of our attempts to write it."""


class Store(Protocol):
    """What the reconcilers read and write (see the module docstring)."""

    async def get_release(self, fleet: str, name: str) -> JSON | None: ...

    async def patch_status(self, resource: Resource, fleet: str, name: str, status: JSON,
                           resource_version: str | None = None) -> JSON | None:
        """Merge `status` into the object's status; with `resource_version`, only if the object
        still has it (None back on a conflict or when the object is gone)."""
        ...

    async def get_floor(self, fleet: str, product: str, tier: str) -> RollbackFloor | None: ...

    async def update_floor(self, fleet: str, product: str, tier: str,
                           update: FloorUpdate[R]) -> R: ...

    async def list_floors(self, fleet: str) -> list[RollbackFloor]: ...

    async def update_channel(self, fleet: str, product: str, channel: str,
                             update: ChannelUpdate) -> bool:
        """True when the ConfigMap was written."""
        ...

    async def list_channels(self, fleet: str) -> list[JSON]: ...

    async def update_configmap(self, fleet: str, name: str, labels: Mapping[str, str],
                               update: DataUpdate) -> bool:
        """Another ConfigMap the operator publishes (the trust bundle), read-modify-write."""
        ...

    def wrote(self, fleet: str, name: str, configmap: JSON) -> bool:
        """Whether this ConfigMap's content is what this store itself last wrote there (a watch
        event of our own write is not drift)."""
        ...

    async def get_revocations(self, fleet: str) -> RevocationList | None: ...

    async def update_revocations(self, fleet: str, update: RevocationUpdate) -> None: ...

    async def announce(self, obj: JSON, what: str, type_: str, reason: str,
                       message: str) -> bool:
        """Post the one event that says `what` happened to `obj` (e.g. "published"): False when
        it was already posted, by this process before a restart or by another replica."""
        ...

    async def event(self, obj: JSON, type_: str, reason: str, message: str) -> None: ...


def _floor_json(floor: RollbackFloor) -> JSON:
    return floor.to_k8s()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class KubeStore:
    """`Store` on the API server."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self.instance = os.environ.get("POD_NAME") or socket.gethostname()
        self._written: dict[tuple[str, str], str] = {}

    # ---- releases and keys ----------------------------------------------------------------

    async def _get(self, resource: Resource, fleet: str, name: str) -> JSON | None:
        """The object, or None when there is none."""
        try:
            return await self.kube.get(resource, fleet, name)
        except ApiError as error:
            if error.not_found:
                return None
            raise

    async def get_release(self, fleet: str, name: str) -> JSON | None:
        return await self._get(FIRMWARE_RELEASES, fleet, name)

    async def patch_status(self, resource: Resource, fleet: str, name: str, status: JSON,
                           resource_version: str | None = None) -> JSON | None:
        patch: JSON = {"status": status}
        if resource_version is not None:
            patch["metadata"] = {"resourceVersion": resource_version}
        try:
            return await self.kube.patch(resource, fleet, name, patch, subresource="status")
        except ApiError as error:
            if error.conflict or error.not_found:
                return None
            raise

    # ---- rollback floors and their ledgers ------------------------------------------------

    async def _read_floor(self, fleet: str, name: str) -> JSON | None:
        return await self._get(ROLLBACK_FLOORS, fleet, name)

    async def get_floor(self, fleet: str, product: str, tier: str) -> RollbackFloor | None:
        raw = await self._read_floor(fleet, rollback_floor_name(product, tier))
        return RollbackFloor.model_validate(raw) if raw is not None else None

    async def update_floor(self, fleet: str, product: str, tier: str,
                           update: FloorUpdate[R]) -> R:
        name = rollback_floor_name(product, tier)
        for _ in range(_CONFLICT_RETRIES):
            raw = await self._read_floor(fleet, name)
            current = RollbackFloor.model_validate(raw) if raw is not None else None
            new, result = update(current)
            if new is None:
                return result
            if await self._write_floor(fleet, name, raw, new):
                return result
        raise TooManyWriters(f"RollbackFloor {fleet}/{name}: too many concurrent writers")

    async def _write_floor(self, fleet: str, name: str, raw: JSON | None,
                           new: RollbackFloor) -> bool:
        """Spec, then status (two subresources); False when either lost a race."""
        body = _floor_json(new)
        status = body.pop("status", None)
        try:
            if raw is None:
                written = await self.kube.create(ROLLBACK_FLOORS, fleet, body)
            elif body["spec"] != raw.get("spec"):
                body["metadata"] = {**raw["metadata"], **body.get("metadata", {}),
                                    "resourceVersion": raw["metadata"]["resourceVersion"]}
                written = await self.kube.replace(ROLLBACK_FLOORS, fleet, name, body)
            else:
                written = raw
            if status is not None and status != (raw or {}).get("status"):
                await self.kube.replace(ROLLBACK_FLOORS, fleet, name, {
                    "apiVersion": f"{GROUP}/{VERSION}", "kind": "RollbackFloor",
                    "metadata": {"name": name, "namespace": fleet,
                                 "resourceVersion": written["metadata"]["resourceVersion"]},
                    "status": status}, subresource="status")
        except ApiError as error:
            if error.conflict:
                return False
            raise
        return True

    async def list_floors(self, fleet: str) -> list[RollbackFloor]:
        floors: list[RollbackFloor] = []
        async for page in self.kube.list_pages(ROLLBACK_FLOORS, fleet):
            floors.extend(RollbackFloor.model_validate(item) for item in page.get("items") or ())
        return floors

    # ---- channels ---------------------------------------------------------------------------

    async def update_channel(self, fleet: str, product: str, channel: str,
                             update: ChannelUpdate) -> bool:
        labels = {**CHANNEL_LABELS, PRODUCT_LABEL: product, CHANNEL_LABEL: channel}

        def on_configmap(data: Mapping[str, str], annotations: Mapping[str, str]
                         ) -> tuple[Mapping[str, str], Mapping[str, str]] | None:
            new = update(channel_content({"data": data,
                                          "metadata": {"annotations": annotations}}))
            if new is None:
                return None
            kept = {k: v for k, v in annotations.items() if not k.startswith(SEQUENCE_ANNOTATION)}
            return dict(new.documents), {**kept, **{f"{SEQUENCE_ANNOTATION}{tier}": str(n)
                                                    for tier, n in new.sequences.items()}}

        return await self._update(fleet, channel_name(product, channel), labels, on_configmap)

    async def update_configmap(self, fleet: str, name: str, labels: Mapping[str, str],
                               update: DataUpdate) -> bool:
        def on_configmap(data: Mapping[str, str], annotations: Mapping[str, str]
                         ) -> tuple[Mapping[str, str], Mapping[str, str]] | None:
            new = update(data)
            return None if new is None else (new, annotations)

        return await self._update(fleet, name, labels, on_configmap)

    async def _update(self, fleet: str, name: str, labels: Mapping[str, str],
                      update: Callable[[Mapping[str, str], Mapping[str, str]],
                                       tuple[Mapping[str, str], Mapping[str, str]] | None]
                      ) -> bool:
        labels = {**MANAGED_BY, **labels}
        for _ in range(_CONFLICT_RETRIES):
            cm = await self._get(CONFIGMAPS, fleet, name)
            metadata = dict((cm or {}).get("metadata") or {})
            data = dict((cm or {}).get("data") or {})
            annotations = dict(metadata.get("annotations") or {})
            new = update(data, annotations)
            relabel = any(metadata.get("labels", {}).get(k) != v for k, v in labels.items())
            if new is None and not relabel:
                return False
            written_data, written_annotations = (new if new is not None else (data, annotations))
            body: JSON = {"apiVersion": "v1", "kind": "ConfigMap",
                          "metadata": {**metadata, "name": name, "namespace": fleet,
                                       "labels": {**metadata.get("labels", {}), **labels},
                                       "annotations": dict(written_annotations)},
                          "data": dict(written_data)}
            try:
                if cm is None:
                    await self.kube.create(CONFIGMAPS, fleet, body)
                else:  # carries metadata.resourceVersion: a concurrent write makes it a 409
                    await self.kube.replace(CONFIGMAPS, fleet, name, body)
            except ApiError as error:
                if error.conflict:
                    continue
                raise
            self._written[(fleet, name)] = content_digest(body)
            return True
        raise TooManyWriters(f"ConfigMap {fleet}/{name}: too many concurrent writers")

    def wrote(self, fleet: str, name: str, configmap: JSON) -> bool:
        return self._written.get((fleet, name)) == content_digest(configmap)

    async def list_channels(self, fleet: str) -> list[JSON]:
        found: list[JSON] = []
        async for page in self.kube.list_pages(CONFIGMAPS, fleet, label_selector=CHANNEL_SELECTOR):
            found.extend(page.get("items") or ())
        return found

    # ---- revocations ------------------------------------------------------------------------

    async def get_revocations(self, fleet: str) -> RevocationList | None:
        raw = await self._get(REVOCATION_LISTS, fleet, REVOCATION_LIST_NAME)
        return RevocationList.model_validate(raw) if raw is not None else None

    async def update_revocations(self, fleet: str, update: RevocationUpdate) -> None:
        for _ in range(_CONFLICT_RETRIES):
            current = await self.get_revocations(fleet)
            new = update(current)
            if new is None:
                return
            body = new.to_k8s()
            body["metadata"] = {**(current.metadata if current else {}),
                                "name": REVOCATION_LIST_NAME, "namespace": fleet,
                                "labels": dict(MANAGED_BY)}
            try:
                if current is None:
                    await self.kube.create(REVOCATION_LISTS, fleet, body)
                else:
                    await self.kube.replace(REVOCATION_LISTS, fleet, REVOCATION_LIST_NAME, body)
            except ApiError as error:
                if error.conflict:
                    continue
                raise
            return
        raise TooManyWriters(f"RevocationList {fleet}: too many concurrent writers")

    # ---- events -----------------------------------------------------------------------------

    def _event(self, obj: JSON, type_: str, reason: str, message: str) -> JSON:
        metadata = obj.get("metadata") or {}
        now = _now()
        return {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"namespace": metadata.get("namespace")},
            "involvedObject": {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"),
                               "name": metadata.get("name"),
                               "namespace": metadata.get("namespace"),
                               "uid": metadata.get("uid")},
            "type": type_, "reason": reason, "message": message[:1024],
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT, "reportingInstance": self.instance[:128],
        }

    async def announce(self, obj: JSON, what: str, type_: str, reason: str,
                       message: str) -> bool:
        body = self._event(obj, type_, reason, message)
        # A name derived from the object and what happened makes the event its own proof of
        # having been posted: a second attempt (a restart, another replica) is a 409.
        body["metadata"]["name"] = f"flashgate.{obj['metadata']['uid']}.{what}"
        try:
            await self.kube.create(EVENTS, body["metadata"]["namespace"], body)
        except ApiError as error:
            if error.conflict:
                return False
            raise
        return True

    async def event(self, obj: JSON, type_: str, reason: str, message: str) -> None:
        body = self._event(obj, type_, reason, message)
        body["metadata"]["generateName"] = f"{obj['metadata'].get('name', 'flashgate')}."
        await self.kube.create(EVENTS, body["metadata"]["namespace"], body)


def channel_content(configmap: JSON) -> ChannelContent:
    """What a channel ConfigMap holds: its job documents and their sequences (annotations)."""
    annotations = (configmap.get("metadata") or {}).get("annotations") or {}
    sequences = {}
    for key, value in annotations.items():
        if key.startswith(SEQUENCE_ANNOTATION):
            try:
                sequences[key.removeprefix(SEQUENCE_ANNOTATION)] = int(value)
            except ValueError:
                continue  # forged: the guard restores it
    return ChannelContent(dict(configmap.get("data") or {}), sequences)


def content_digest(configmap: JSON) -> str:
    """A digest of what a ConfigMap publishes (its data and flashgate's annotations), to
    recognise it."""
    annotations = (configmap.get("metadata") or {}).get("annotations") or {}
    ours = {k: v for k, v in annotations.items() if k.startswith("ota.flashgate.dev/")}
    digest = hashlib.sha256()
    for part in (configmap.get("data") or {}, ours):
        for key in sorted(part):
            digest.update(key.encode() + b"\0" + str(part[key]).encode() + b"\0")
        digest.update(b"\1")
    return digest.hexdigest()
