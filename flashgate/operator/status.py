"""Pure status logic of the operator: conditions, a release's status from a verdict, the job
document. No Kubernetes calls here, so it is tested fast and read alone.

Conditions follow the Kubernetes convention (as cert-manager's): a list keyed by `type`, each with
status, CamelCase reason, human message, lastTransitionTime (changed only when status changes) and
its own observedGeneration. `Ready` is the one printer columns and Argo CD read.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from flashgate.trust import Reason

# Which condition a rejection reason belongs to: the checks run in this order (FORMAT.md), so
# the conditions before the failing one are True and those after it were never evaluated.
CHECKS = ("SignatureVerified", "RollbackChecked", "IntegrityVerified")
_FAILED_CHECK = {
    Reason.SignatureInvalid: "SignatureVerified",
    Reason.ThresholdNotMet: "SignatureVerified",
    Reason.KeyNotTrustedForTier: "SignatureVerified",
    Reason.UnknownKey: "SignatureVerified",
    Reason.KeyRevoked: "SignatureVerified",
    Reason.KeyExpired: "SignatureVerified",
    Reason.ManifestMismatch: "SignatureVerified",
    Reason.RollbackRejected: "RollbackChecked",
    Reason.FastForwardRejected: "RollbackChecked",
    Reason.ArtifactURLNotAllowed: "IntegrityVerified",
    Reason.ArtifactUnavailable: "IntegrityVerified",
    Reason.SizeMismatch: "IntegrityVerified",
    Reason.HashMismatch: "IntegrityVerified",
}


def rfc3339(seconds: float) -> str:
    return dt.datetime.fromtimestamp(int(seconds), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> int:
    """Seconds since the epoch of an RFC 3339 time; a time without zone is UTC."""
    parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return int(parsed.timestamp())


def condition(type_: str, status: bool | None, reason: str, message: str,
              generation: int, now: float) -> dict[str, Any]:
    return {
        "type": type_,
        "status": "Unknown" if status is None else ("True" if status else "False"),
        "reason": reason,
        "message": message,
        "lastTransitionTime": rfc3339(now),
        "observedGeneration": generation,
    }


def merge_conditions(old: Sequence[Mapping[str, Any]] | None,
                     new: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """New conditions replace old ones of the same type; an unchanged status keeps its
    lastTransitionTime, so the time says when it last *changed*, not when it was last written."""
    previous = {c.get("type"): c for c in old or ()}
    merged = []
    for cond in new:
        before = previous.get(cond["type"])
        if before and before.get("status") == cond["status"]:
            cond = {**cond, "lastTransitionTime": before.get("lastTransitionTime",
                                                             cond["lastTransitionTime"])}
        merged.append(cond)
    return merged


def release_conditions(reason: Reason | None, message: str, published: bool,
                       generation: int, now: float) -> list[dict[str, Any]]:
    """Conditions of a FirmwareRelease after a verification that ended with `reason`
    (None: all checks passed)."""
    if reason is Reason.VerifierUnavailable:
        checks = [condition(c, None, "VerifierUnavailable", message, generation, now)
                  for c in CHECKS]
        return [*checks, condition("Ready", False, "VerifierUnavailable", message, generation, now)]
    failed = _FAILED_CHECK.get(reason) if reason else None
    result, reached = [], True
    for check in CHECKS:
        if check == failed:
            result.append(condition(check, False, str(reason), message, generation, now))
            reached = False
        elif reached:
            result.append(condition(check, True, "Passed", f"{check} passed", generation, now))
        else:
            result.append(condition(check, None, "NotChecked",
                                    "not checked: an earlier check failed", generation, now))
    if published:
        result.append(condition("Ready", True, "Published", message, generation, now))
    else:
        result.append(condition("Ready", False, str(reason) if reason else "Verifying", message,
                                generation, now))
    return result


def job_document(*, fleet: str, name: str, spec: Mapping[str, Any],
                 published_at: float) -> dict[str, Any]:
    """The job document of FORMAT.md: what a device receives. Only the envelopes are trusted by
    the device; the other fields are copies for people and routing."""
    artifact = spec["artifact"]
    return {
        "apiVersion": "ota.flashgate.dev/v1alpha1",
        "kind": "JobDocument",
        "fleet": fleet,
        "product": spec["product"],
        "channel": spec.get("channel") or "stable",
        "tier": spec["tier"],
        "release": name,
        "version": spec["version"],
        "securityVersion": spec["securityVersion"],
        "artifact": {key: artifact[key] for key in ("url", "sha256", "size")},
        "signatures": list(spec["signatures"]),
        "publishedAt": rfc3339(published_at),
    }


def same_release(document: Mapping[str, Any], name: str, spec: Mapping[str, Any]) -> bool:
    """Whether a published job document is this very release (for idempotent publishing)."""
    return (document.get("release") == name
            and document.get("securityVersion") == spec["securityVersion"]
            and document.get("artifact", {}).get("sha256") == spec["artifact"]["sha256"]
            and document.get("signatures") == list(spec["signatures"]))


def channel_name(product: str, channel: str) -> str:
    """The ConfigMap holding the latest job document per tier of (product, channel)."""
    return f"channel.{product}.{channel}"
