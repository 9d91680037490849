"""`flashgate status`: what a fleet trusts and publishes now, read from the cluster.

The one part of the station that talks to Kubernetes, and only to read: SigningKeys (the trust
set per tier), RollbackFloors, the channel ConfigMaps the operator publishes job documents into,
and the FirmwareReleases that need attention (Rejected, Withdrawn, or not decided yet: listed with
field selectors, so the API server filters and a fleet's many published releases are not read).
`read_fleet` does the I/O; `render` is a pure function of what was read. Its first section is what
the alerts (charts/flashgate/files/alerts.yaml) page about: releases rejected or withdrawn,
releases waiting long, keys that expire soon or were revoked, tiers without an Active key.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

from flashgate.api import GROUP, VERSION
from flashgate.signing.errors import StationError
from flashgate.trust.rotation import TRUSTED_PHASES
from flashgate.trust.vocabulary import Tier, format_time

CHANNEL_SELECTOR = "app.kubernetes.io/managed-by=flashgate,ota.flashgate.dev/kind=channel"
_TIER_ORDER = MappingProxyType({str(t): i for i, t in enumerate(Tier)})
# As the alerts FlashgateSigningKeyExpiresSoon and FlashgateReleasesStuck.
EXPIRES_SOON_SECONDS = 14 * 86400
STUCK_AFTER_SECONDS = 15 * 60
ATTENTION_SELECTORS = ("status.phase=Rejected", "status.phase=Withdrawn",
                       "status.phase!=Published,status.phase!=Rejected,status.phase!=Withdrawn")
SHOWN_RELEASES = 10


@dataclass(frozen=True)
class FleetView:
    """The objects of one fleet namespace, as the API server returned them (plain dicts)."""

    fleet: str
    signing_keys: Sequence[Mapping[str, Any]]
    floors: Sequence[Mapping[str, Any]]
    channel_maps: Sequence[Mapping[str, Any]]
    releases: Sequence[Mapping[str, Any]] = field(default_factory=tuple)
    """FirmwareReleases Rejected, Withdrawn or undecided (ATTENTION_SELECTORS)."""


def current_namespace(kubeconfig: str | None, context: str | None) -> str:
    """The namespace of the kubeconfig's (current or named) context, "default" when unset."""
    from kubernetes import config  # imported here: only `status` needs the client

    try:
        # kubernetes' config loader is untyped.
        contexts, active = config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
            config_file=kubeconfig)
    except (config.ConfigException, OSError) as err:
        raise StationError(f"cannot read the kubeconfig: {err}",
                           "pass --kubeconfig or set KUBECONFIG") from err
    chosen: dict[str, Any] | None = (
        next((c for c in contexts if c.get("name") == context), None) if context else active)
    namespace = ((chosen or {}).get("context") or {}).get("namespace")
    return str(namespace) if namespace else "default"


def read_fleet(fleet: str, kubeconfig: str | None, context: str | None) -> FleetView:
    """Lists the fleet's SigningKeys, RollbackFloors and channel ConfigMaps (read only).

    Raises:
        StationError: No usable kubeconfig, the API server unreachable, the CRDs missing, or
            listing not allowed.
    """
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        api_client = config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, context=context)
    except (config.ConfigException, OSError) as err:
        raise StationError(f"cannot load the kubeconfig: {err}",
                           "pass --kubeconfig or set KUBECONFIG") from err
    with api_client:
        custom = client.CustomObjectsApi(api_client)
        core = client.CoreV1Api(api_client)
        try:
            keys = custom.list_namespaced_custom_object(GROUP, VERSION, fleet, "signingkeys")
            floors = custom.list_namespaced_custom_object(GROUP, VERSION, fleet,
                                                          "rollbackfloors")
            maps = core.list_namespaced_config_map(fleet, label_selector=CHANNEL_SELECTOR)
            releases = [r for selector in ATTENTION_SELECTORS for r in _items(
                custom.list_namespaced_custom_object(GROUP, VERSION, fleet, "firmwarereleases",
                                                     field_selector=selector))]
        except ApiException as err:
            if err.status == 404:
                raise StationError(f"the API server has no {GROUP} resources",
                                   "install the flashgate CRDs (helm install flashgate ...)"
                                   ) from err
            if err.status == 403:
                raise StationError(f"not allowed to read fleet {fleet!r}: {err.reason}",
                                   "ask for get/list on signingkeys, rollbackfloors, "
                                   "firmwarereleases and configmaps in that namespace") from err
            if err.status == 400 and "field label" in str(err.body):
                raise StationError("the API server cannot select FirmwareReleases by phase",
                                   "update the flashgate CRDs (crds/, or the Helm chart)"
                                   ) from err
            raise StationError(f"the API server answered {err.status} {err.reason}") from err
        except (OSError, HTTPError) as err:
            raise StationError(f"cannot reach the API server: {err}",
                               "check the kubeconfig's server and your network") from err
        channel_maps = [api_client.sanitize_for_serialization(m) for m in maps.items]
    return FleetView(fleet=fleet, signing_keys=_items(keys), floors=_items(floors),
                     channel_maps=channel_maps, releases=releases)


def _items(listing: object) -> list[Mapping[str, Any]]:
    items = listing.get("items") if isinstance(listing, Mapping) else None
    return [i for i in items if isinstance(i, Mapping)] if isinstance(items, list) else []


def render(view: FleetView, now: int, *, all_keys: bool = False) -> str:
    """The status screen: plain aligned text like kubectl's, one section per question."""
    out = [f"Fleet {view.fleet} at {format_time(now)}", "", "NEEDS ATTENTION"]
    attention = _attention(view, now)
    out += _table(["WHAT", "NAME", "TIER", "DETAIL"], attention) if attention else [
        "nothing: no release rejected, withdrawn or stuck, no key expiring or revoked"]
    out += ["", "TRUST SET"]
    out += _trust_set(view.signing_keys, all_keys)
    out += ["", "ROLLBACK FLOORS"]
    floors = sorted(
        (_get(f, "spec", "product"), _get(f, "spec", "tier"), _get(f, "spec", "securityVersion"))
        for f in view.floors
    )
    floors.sort(key=lambda r: (r[0], _TIER_ORDER.get(r[1], 99)))
    out += _table(["PRODUCT", "TIER", "SECURITY VERSION"], floors) if floors else [
        "no floor yet (nothing published)"]
    out += ["", "CHANNELS"]
    channels = _channel_rows(view.channel_maps)
    out += _table(["CHANNEL", "PRODUCT", "TIER", "RELEASE", "VERSION", "SECURITY VERSION",
                   "PUBLISHED"], channels) if channels else ["nothing published"]
    return "\n".join(out) + "\n"


def _attention(view: FleetView, now: int) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    by_phase: dict[str, list[Mapping[str, Any]]] = {}
    for release in view.releases:
        by_phase.setdefault(_get(release, "status", "phase") or "Pending", []).append(release)
    for phase in ("Rejected", "Withdrawn"):
        found = sorted(by_phase.pop(phase, []), reverse=True,
                       key=lambda r: str(_get(r, "metadata", "creationTimestamp")))
        for release in found[:SHOWN_RELEASES]:
            rows.append((phase.lower(), _get(release, "metadata", "name"),
                         _get(release, "spec", "tier"), _said(release)))
        if len(found) > SHOWN_RELEASES:
            rows.append((phase.lower(), f"... {len(found) - SHOWN_RELEASES} more", "",
                         f"kubectl get firmwarereleases -n {view.fleet} "
                         f"--field-selector status.phase={phase}"))
    for release in (r for waiting in by_phase.values() for r in waiting):
        since = _seconds(_get(release, "metadata", "creationTimestamp"))
        if since is not None and now - since > STUCK_AFTER_SECONDS:
            rows.append(("waiting", _get(release, "metadata", "name"),
                         _get(release, "spec", "tier"),
                         f"{(now - since) // 60} min: {_said(release)}"))
    keys = [k for k in view.signing_keys if isinstance(k, Mapping)]
    staged = {_get(k, "spec", "tier") for k in keys if _get(k, "status", "phase") == "Staged"}
    active = {_get(k, "spec", "tier") for k in keys if _get(k, "status", "phase") == "Active"}
    for key in sorted(keys, key=lambda k: str(_get(k, "metadata", "name"))):
        name, tier = _get(key, "metadata", "name"), _get(key, "spec", "tier")
        phase = _get(key, "status", "phase")
        until = _seconds(_get(key, "status", "trustedUntil"))
        soon = until is not None and until - now < EXPIRES_SOON_SECONDS
        if phase == "Active" and soon and until is not None and tier not in staged:
            rows.append(("expires", name, tier,
                         f"trusted until {format_time(until)}, in "
                         f"{max(until - now, 0) // 86400} days; no successor Staged"))
        elif phase == "Revoked":
            rows.append(("revoked", name, tier, _said(key)))
    for tier in sorted({_get(k, "spec", "tier") for k in keys} - active,
                       key=lambda t: _TIER_ORDER.get(t, 99)):
        rows.append(("no Active key", "", tier, "nothing can sign this tier's next release"))
    return [tuple(str(c) if c is not None else "-" for c in row) for row in rows]


def _said(obj: Mapping[str, Any]) -> str:
    reason, message = _get(obj, "status", "reason"), _get(obj, "status", "message") or ""
    text = f"{reason}: {message}" if reason else message
    return text if len(text) <= 120 else text[:117] + "..."


def _seconds(value: Any) -> int | None:
    """Unix seconds of an RFC 3339 time (a datetime when YAML read it), None if unreadable."""
    try:
        moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
        return int(moment.timestamp())
    except (TypeError, ValueError):
        return None


def _trust_set(keys: Sequence[Mapping[str, Any]], all_keys: bool) -> list[str]:
    rows = []
    trusted_tiers = set()
    for key in keys:
        phase = _get(key, "status", "phase") or "Pending"
        tier = _get(key, "spec", "tier")
        if phase in TRUSTED_PHASES:
            trusted_tiers.add(tier)
        elif not all_keys:
            continue
        key_id = _get(key, "status", "keyId")
        rows.append((tier, _get(key, "metadata", "name"), phase, key_id[:12] if key_id else "-",
                     _get(key, "status", "trustedFrom") or "-",
                     _get(key, "status", "trustedUntil") or "-"))
    rows.sort(key=lambda r: (_TIER_ORDER.get(r[0], 99), r[1]))
    lines = (_table(["TIER", "NAME", "PHASE", "KEY ID", "TRUSTED FROM", "TRUSTED UNTIL"], rows)
             if rows else [])
    untrusted = [str(t) for t in Tier if str(t) not in trusted_tiers]
    if untrusted:
        lines.append(f"no trusted key for: {', '.join(untrusted)}")
    return lines


def _channel_rows(maps: Sequence[Mapping[str, Any]]) -> list[tuple[str, ...]]:
    rows = []
    for cm in maps:
        data = cm.get("data") or {}
        for key in sorted(data):
            if not key.endswith(".json"):
                continue
            try:
                job = json.loads(data[key])
                if not isinstance(job, dict):
                    raise ValueError("not an object")
            except ValueError:
                rows.append(("?", "?", key.removesuffix(".json"),
                             f"(unreadable in {_get(cm, 'metadata', 'name')})", "", "", ""))
                continue
            rows.append((job.get("channel", "?"), job.get("product", "?"),
                         job.get("tier", key.removesuffix(".json")), job.get("release", "?"),
                         job.get("version", "?"), job.get("securityVersion", "?"),
                         job.get("publishedAt", "?")))
    rows.sort(key=lambda r: (str(r[0]), str(r[1]), _TIER_ORDER.get(str(r[2]), 99)))
    return [tuple(str(c) for c in r) for r in rows]


def _get(obj: Mapping[str, Any], *path: str) -> Any:
    value: Any = obj
    for part in path:
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    cells = [list(headers)] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return ["   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in cells]
