"""Kopf handlers: each one reads what Kopf hands it and makes one call into the Gate.

Indices (kept by Kopf from its watch streams, no list call per event):
- `signing_keys`: fleet (namespace) -> the SigningKeys of that fleet,
- `rollback_floors`: (fleet, product, tier) -> floor, for the admission webhook,
- `release_phases` / `key_phases`: label tuples for the phase gauges.
Kopf passes indices as keyword arguments named after them; its typed handler protocols do not
list them, so they are read from `**kwargs` through the typed accessors below.
"""
from __future__ import annotations

from typing import Any

import kopf

from flashgate.operator import admission
from flashgate.operator.gate import FleetKey, Gate
from flashgate.operator.store import GROUP, VERSION

KEYS = (GROUP, VERSION, "signingkeys")
RELEASES = (GROUP, VERSION, "firmwarereleases")
FLOORS = (GROUP, VERSION, "rollbackfloors")

FloorKey = tuple[str, str, str]


def _gate(memo: Any) -> Gate:
    gate: Gate = memo.gate
    return gate


def _fleet_keys(kwargs: dict[str, Any], fleet: str | None) -> list[FleetKey]:
    index: kopf.Index[str, FleetKey] = kwargs["signing_keys"]
    return list(index.get(fleet or "", ()))


def _floor(kwargs: dict[str, Any], key: FloorKey) -> int | None:
    index: kopf.Index[FloorKey, int] = kwargs["rollback_floors"]
    return max(index.get(key, ()), default=None)


@kopf.index(*KEYS)
def signing_keys(namespace: str | None, name: str, spec: kopf.Spec, status: kopf.Status,
                 **_: Any) -> dict[str, FleetKey]:
    return {namespace or "": FleetKey(name=name, spec=dict(spec), status=dict(status))}


@kopf.index(*FLOORS)
def rollback_floors(namespace: str | None, spec: kopf.Spec, **_: Any) -> dict[FloorKey, int]:
    return {(namespace or "", spec["product"], spec["tier"]): int(spec["securityVersion"])}


@kopf.index(*RELEASES)
def release_phases(namespace: str | None, status: kopf.Status,
                   **_: Any) -> dict[tuple[str, str], None]:
    return {(namespace or "", status.get("phase") or "Pending"): None}


@kopf.index(*KEYS)
def key_phases(namespace: str | None, spec: kopf.Spec, status: kopf.Status,
               **_: Any) -> dict[tuple[str, str, str], None]:
    return {(namespace or "", spec.get("tier", ""), status.get("phase") or "Pending"): None}


@kopf.on.create(*RELEASES)
@kopf.on.resume(*RELEASES)
async def reconcile_release(body: kopf.Body, namespace: str | None, retry: int, memo: Any,
                            **kwargs: Any) -> None:
    await _gate(memo).reconcile_release(body=body, fleet_keys=_fleet_keys(kwargs, namespace),
                                        retry=retry)


@kopf.daemon(*KEYS, cancellation_timeout=5)
async def watch_key(body: kopf.Body, namespace: str | None, memo: Any,
                    stopped: kopf.DaemonStopped, **kwargs: Any) -> None:
    """One loop per SigningKey: phases change with time alone (activation, end of overlap,
    expiry), so the key is re-evaluated at its next transition, on time, without any edit."""
    retry = 0
    while not stopped:
        delay = await _gate(memo).reconcile_key(
            body=body, fleet_keys=_fleet_keys(kwargs, namespace), retry=retry)
        retry = retry + 1 if body.status.get("reason") == "VerifierUnavailable" else 0
        await stopped.wait(delay)


@kopf.on.field(*KEYS, field="spec.revoked")
async def key_revoked(body: kopf.Body, namespace: str | None, new: Any, memo: Any,
                      logger: kopf.Logger, **kwargs: Any) -> None:
    """Distrust is cheap and immediate: the key's phase and the channels change now."""
    if not new or namespace is None:
        return
    gate = _gate(memo)
    await gate.reconcile_key(body=body, fleet_keys=_fleet_keys(kwargs, namespace))
    key_id = body.status.get("keyId") or admission.key_id_of(body.spec)
    if key_id:
        withdrawn = await gate.withdraw_signed_by(fleet=namespace, key_id=key_id,
                                                  key_name=body.metadata.name or "")
        logger.info("revoked key %s: withdrew %s", body.metadata.name, withdrawn or "nothing")


@kopf.on.validate(*RELEASES, id="firmwarerelease", operations=["CREATE"])
def validate_release(spec: kopf.Spec, namespace: str | None, **kwargs: Any) -> None:
    fleet = namespace or ""
    problems = admission.release_problems(
        fleet=fleet, spec=spec,
        floor=_floor(kwargs, (fleet, str(spec.get("product")), str(spec.get("tier")))),
        keys=[(k.name, k.spec) for k in _fleet_keys(kwargs, fleet)])
    if problems:
        raise kopf.AdmissionError("FirmwareRelease refused: " + "; ".join(problems), code=400)


@kopf.on.validate(*KEYS, id="signingkey", operations=["CREATE", "UPDATE"])
def validate_key(spec: kopf.Spec, **_: Any) -> None:
    problems = admission.key_problems(spec)
    if problems:
        raise kopf.AdmissionError("SigningKey refused: " + "; ".join(problems), code=400)
