"""The operator's writes to the cluster that matter for safety: rollback floors and channels.

Both are read-modify-write with optimistic concurrency (the object's resourceVersion): a second
operator replica, or a restart in the middle of a publish, either sees the other's write and
agrees with it, or gets a 409 Conflict and reads again. Publishing is idempotent (the same release
is never written twice), and the floor only moves up (RollbackFloor's CEL rule `self >= oldSelf`
enforces that in the API server too). The Kubernetes client is synchronous: callers run these
methods in a worker thread.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from flashgate.api import rollback_floor_name
from flashgate.operator.status import channel_name, rfc3339, same_release

GROUP, VERSION = "ota.flashgate.dev", "v1alpha1"
MANAGED_BY = {"app.kubernetes.io/managed-by": "flashgate"}
_CONFLICT_RETRIES = 8


def _dict(obj: object) -> dict[str, Any]:
    """The custom-objects API returns plain JSON dicts, typed as `object` by the client."""
    assert isinstance(obj, dict)
    return obj


def _won(write: Callable[..., object], *args: object) -> bool:
    """Run a create or replace; False when it lost a race (409: the object was created or changed
    since it was read), so the caller reads again and retries."""
    try:
        write(*args)
    except ApiException as error:
        if error.status == 409:
            return False
        raise
    return True


class FloorMoved(Exception):
    """The floor rose above this release between verification and publishing."""

    def __init__(self, floor: int) -> None:
        super().__init__(f"the rollback floor is now {floor}")
        self.floor = floor


@dataclass(frozen=True)
class Published:
    where: str
    published_at: str
    already: bool  # the channel held this very release already (a resumed publish)


class FleetStore:
    """Rollback floors and channel ConfigMaps of fleets (namespaces)."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self.core = client.CoreV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)

    # ---- rollback floors ------------------------------------------------------------------

    def get_floor(self, fleet: str, product: str, tier: str) -> int | None:
        try:
            obj = _dict(self.custom.get_namespaced_custom_object(
                GROUP, VERSION, fleet, "rollbackfloors", rollback_floor_name(product, tier)))
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return int(obj["spec"]["securityVersion"])

    def raise_floor(self, fleet: str, product: str, tier: str, security_version: int,
                    release: str, now: float) -> int:
        """Make the floor at least `security_version`; return it. Raises FloorMoved when the
        floor is already above it (another release won the race)."""
        name = rollback_floor_name(product, tier)
        for _ in range(_CONFLICT_RETRIES):
            try:
                obj = _dict(self.custom.get_namespaced_custom_object(
                    GROUP, VERSION, fleet, "rollbackfloors", name))
            except ApiException as error:
                if error.status != 404:
                    raise
                body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "RollbackFloor",
                        "metadata": {"name": name, "namespace": fleet, "labels": MANAGED_BY},
                        "spec": {"product": product, "tier": tier,
                                 "securityVersion": security_version}}
                if not _won(self.custom.create_namespaced_custom_object,
                            GROUP, VERSION, fleet, "rollbackfloors", body):
                    continue
                self._record_raise(fleet, name, release, now)
                return security_version
            current = int(obj["spec"]["securityVersion"])
            if current > security_version:
                raise FloorMoved(current)
            if current == security_version:
                return current
            obj["spec"]["securityVersion"] = security_version
            # replace carries metadata.resourceVersion: a concurrent write makes it a 409
            if not _won(self.custom.replace_namespaced_custom_object,
                        GROUP, VERSION, fleet, "rollbackfloors", name, obj):
                continue
            self._record_raise(fleet, name, release, now)
            return security_version
        raise RuntimeError(f"rollback floor {fleet}/{name}: too many concurrent writers")

    def _record_raise(self, fleet: str, name: str, release: str, now: float) -> None:
        self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, fleet, "rollbackfloors", name,
            {"status": {"lastRaisedBy": release, "lastRaisedAt": rfc3339(now)}})

    # ---- channels -------------------------------------------------------------------------

    def publish(self, fleet: str, name: str, spec: Mapping[str, Any],
                document: dict[str, Any]) -> Published:
        """Write the job document into the (product, channel) ConfigMap under `<tier>.json`,
        unless that key already holds this very release."""
        product, channel, tier = spec["product"], spec.get("channel") or "stable", spec["tier"]
        cm_name, key = channel_name(product, channel), f"{tier}.json"
        where = f"ConfigMap {fleet}/{cm_name} key {key}"
        for _ in range(_CONFLICT_RETRIES):
            try:
                cm = self.core.read_namespaced_config_map(cm_name, fleet)
            except ApiException as error:
                if error.status != 404:
                    raise
                body = client.V1ConfigMap(
                    metadata=client.V1ObjectMeta(name=cm_name, namespace=fleet, labels={
                        **MANAGED_BY, "ota.flashgate.dev/kind": "channel",
                        "ota.flashgate.dev/product": product,
                        "ota.flashgate.dev/channel": channel}),
                    data={key: json.dumps(document, indent=2, sort_keys=True)})
                if not _won(self.core.create_namespaced_config_map, fleet, body):
                    continue
                return Published(where, document["publishedAt"], already=False)
            existing = json.loads((cm.data or {}).get(key) or "{}")
            if same_release(existing, name, spec):
                return Published(where, existing.get("publishedAt", document["publishedAt"]),
                                 already=True)
            cm.data = {**(cm.data or {}), key: json.dumps(document, indent=2, sort_keys=True)}
            if not _won(self.core.replace_namespaced_config_map, cm_name, fleet, cm):
                continue
            return Published(where, document["publishedAt"], already=False)
        raise RuntimeError(f"channel {fleet}/{cm_name}: too many concurrent writers")

    def withdraw(self, fleet: str, name: str, spec: Mapping[str, Any]) -> bool:
        """Remove this release's job document from its channel, if it is still the one there."""
        cm_name = channel_name(spec["product"], spec.get("channel") or "stable")
        key = f"{spec['tier']}.json"
        for _ in range(_CONFLICT_RETRIES):
            try:
                cm = self.core.read_namespaced_config_map(cm_name, fleet)
            except ApiException as error:
                if error.status == 404:
                    return False
                raise
            existing = json.loads((cm.data or {}).get(key) or "{}")
            if not same_release(existing, name, spec):
                return False
            cm.data = {k: v for k, v in (cm.data or {}).items() if k != key}
            if not _won(self.core.replace_namespaced_config_map, cm_name, fleet, cm):
                continue
            return True
        raise RuntimeError(f"channel {fleet}/{cm_name}: too many concurrent writers")

    # ---- status ---------------------------------------------------------------------------

    def patch_status(self, plural: str, fleet: str, name: str, status: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, fleet, plural, name, {"status": status})

    def list_objects(self, plural: str, fleet: str) -> list[dict[str, Any]]:
        result = _dict(self.custom.list_namespaced_custom_object(GROUP, VERSION, fleet, plural))
        return list(result.get("items", []))
