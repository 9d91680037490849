"""Conditions of flashgate's objects, pure: which ones a verdict sets, and how new ones merge.

Conditions follow the Kubernetes convention (as cert-manager's): a list keyed by `type`, each
with status, CamelCase reason, human message, lastTransitionTime (changed only when the status
changes) and its own observedGeneration. `Ready` is the one printer columns and Argo CD read.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from flashgate.api import Condition, ConditionStatus
from flashgate.trust.vocabulary import Reason

# Which condition a rejection reason belongs to: the checks run in this order (docs/format.md),
# so the conditions before the failing one are True and those after it were never evaluated.
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
    Reason.ReplayRejected: "RollbackChecked",
    Reason.ArtifactURLNotAllowed: "IntegrityVerified",
    Reason.ArtifactUnavailable: "IntegrityVerified",
    Reason.SizeMismatch: "IntegrityVerified",
    Reason.HashMismatch: "IntegrityVerified",
}


def condition(type_: str, status: bool | None, reason: str, message: str,
              generation: int, now: datetime) -> Condition:
    return Condition(
        type=type_,
        status=(ConditionStatus.UNKNOWN if status is None
                else ConditionStatus.TRUE if status else ConditionStatus.FALSE),
        reason=reason, message=message[:32768], last_transition_time=now,
        observed_generation=generation)


def parse_conditions(status: Mapping[str, Any]) -> list[Condition]:
    """The conditions of an object's status that parse (a malformed one is left out: it will be
    replaced)."""
    found = []
    for raw in status.get("conditions") or ():
        try:
            found.append(Condition.model_validate(raw))
        except ValidationError:
            continue
    return found


def merge_conditions(old: Iterable[Condition], new: Sequence[Condition]) -> list[Condition]:
    """New conditions replace old ones of the same type; an unchanged status keeps its
    lastTransitionTime, so the time says when it last *changed*, not when it was last written.
    Old conditions of other types are kept."""
    previous = {c.type: c for c in old}
    merged = []
    for cond in new:
        before = previous.pop(cond.type, None)
        if before is not None and before.status == cond.status:
            cond = cond.model_copy(update={"last_transition_time": before.last_transition_time})
        merged.append(cond)
    return [*previous.values(), *merged]


def release_conditions(reason: Reason | None, message: str, published: bool,
                       generation: int, now: datetime) -> list[Condition]:
    """Conditions of a FirmwareRelease after a verification that ended with `reason`
    (None: all checks passed)."""
    if reason is Reason.VerifierUnavailable:
        checks = [condition(c, None, "VerifierUnavailable", message, generation, now)
                  for c in CHECKS]
        return [*checks, condition("Ready", False, "VerifierUnavailable", message, generation,
                                   now)]
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
