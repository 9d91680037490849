"""The SigningKey state machine, pure: docs/design.md "Resources" (SigningKey status.phase).

The phase of a key at time `now`, decided in this order (the first that applies wins):
1. revoked → `Revoked` (distrust is cheap: even an unendorsed key shows as revoked);
2. endorsement not checked yet → `Pending` (AwaitingVerification); failed → `Invalid`;
3. now >= notAfter → `Expired`; now < notBefore → `Pending` (NotYetValid);
4. an endorsed, unrevoked, unexpired key of the fleet `replaces` this one and is activated
   (activation = max(its notBefore, its activateAt)): until activation + its overlap → `Retiring`,
   afterwards → `Retired`;
5. activateAt in the future → `Staged`;
6. otherwise → `Active`.
`Staged`, `Active` and `Retiring` are trusted. `next_transition` is the first later time at which
the phase changes by time alone (activation, end of overlap, expiry, a successor's activation),
so the operator can schedule it without any edit to the resource.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from flashgate.trust.vocabulary import DocEnum, format_time


class KeyPhase(DocEnum):
    """Where a SigningKey is in its life (SigningKey status.phase)."""

    Pending = (
        "Pending",
        "not usable yet: the endorsement has not been checked (e.g. the verifier sidecar has "
        "not answered yet), or notBefore is still ahead. Not trusted.",
    )
    Invalid = (
        "Invalid",
        "the endorsement does not verify against the fleet root, its payload disagrees with "
        "the spec, or the spec itself cannot be used (reason and message say how). Never "
        "trusted; fix the spec or endorse again.",
    )
    Staged = (
        "Staged",
        "endorsed, inside its validity and trusted, distributed to devices in the trust bundle, "
        "but not the primary signer yet (activateAt has not come).",
    )
    Active = "Active", "endorsed, trusted and the primary signer of its tier."
    Retiring = (
        "Retiring",
        "replaced by a newer key that is now Active; still trusted until the overlap ends "
        "(trustedUntil).",
    )
    Retired = (
        "Retired",
        "replaced, and its overlap has ended: no longer trusted for new releases. Releases it "
        "published stay Published.",
    )
    Expired = (
        "Expired",
        "notAfter has passed: no longer trusted for new releases. Releases it published stay "
        "Published.",
    )
    Revoked = (
        "Revoked",
        "revoked (spec.revoked, or its keyId is on the fleet's RevocationList): distrusted at "
        "once and for good; releases it published are Withdrawn.",
    )


DEFAULT_OVERLAP = "168h"
"""The dual-trust window when a SigningKey sets `replaces` without `overlap` (7 days)."""

TRUSTED_PHASES = frozenset({KeyPhase.Staged, KeyPhase.Active, KeyPhase.Retiring})


@dataclass(frozen=True)
class KeyState:
    """What the state machine needs of one SigningKey.

    Attributes:
        name: The SigningKey's name (what a successor's `replaces` names).
        endorsed: None = not checked yet; otherwise whether the root endorsement verified and
            agrees with the spec.
        revoked: spec.revoked.
        not_before: Start of validity, Unix seconds (from the verified endorsement).
        not_after: End of validity (exclusive), Unix seconds.
        activate_at: When it becomes the primary signer; None = as soon as valid.
        replaces: Name of the key it rotates out, if any.
        overlap_seconds: How long the replaced key stays trusted after this one activates.
    """

    name: str
    endorsed: bool | None
    revoked: bool
    not_before: int
    not_after: int
    activate_at: int | None = None
    replaces: str | None = None
    overlap_seconds: int = 0

    @property
    def activation(self) -> int:
        """When this key becomes active: activateAt, but never before notBefore."""
        if self.activate_at is None:
            return self.not_before
        return max(self.not_before, self.activate_at)


@dataclass(frozen=True)
class PhaseResult:
    """The phase of a key at one instant.

    Attributes:
        phase: The phase.
        reason: CamelCase reason, for the status condition.
        message: For people.
        trusted_from: Start of trust, for trusted phases (else None).
        trusted_until: End of trust, for trusted phases (else None).
        next_transition: When the phase next changes by time alone; None if never.
    """

    phase: KeyPhase
    reason: str
    message: str
    trusted_from: int | None = None
    trusted_until: int | None = None
    next_transition: int | None = None

    @property
    def trusted(self) -> bool:
        return self.phase in TRUSTED_PHASES


def _successors(key: KeyState, fleet_keys: Sequence[KeyState]) -> list[KeyState]:
    return [k for k in fleet_keys if k.replaces == key.name and k.name != key.name]


def _phase_at(key: KeyState, successors: Sequence[KeyState], now: int) -> PhaseResult:
    if key.revoked:
        return PhaseResult(KeyPhase.Revoked, "Revoked", f"key {key.name} is revoked")
    if key.endorsed is None:
        return PhaseResult(
            KeyPhase.Pending, "AwaitingVerification", "the root endorsement is not verified yet"
        )
    if not key.endorsed:
        return PhaseResult(
            KeyPhase.Invalid,
            "EndorsementInvalid",
            "the root endorsement does not verify or disagrees with the spec",
        )
    if now >= key.not_after:
        return PhaseResult(
            KeyPhase.Expired, "Expired", f"validity ended at {format_time(key.not_after)}"
        )
    if now < key.not_before:
        return PhaseResult(
            KeyPhase.Pending, "NotYetValid", f"valid from {format_time(key.not_before)}"
        )
    active_successors = [
        s
        for s in successors
        if s.endorsed is True and not s.revoked and now < s.not_after and s.activation <= now
    ]
    if active_successors:
        successor = min(active_successors, key=lambda s: s.activation + s.overlap_seconds)
        retire_at = successor.activation + successor.overlap_seconds
        if now < retire_at:
            until = min(retire_at, key.not_after)
            return PhaseResult(
                KeyPhase.Retiring,
                "Superseded",
                f"replaced by {successor.name}, active since {format_time(successor.activation)}; "
                f"trusted until {format_time(until)}",
                trusted_from=key.not_before,
                trusted_until=until,
            )
        return PhaseResult(
            KeyPhase.Retired,
            "OverlapEnded",
            f"replaced by {successor.name}; the overlap ended at {format_time(retire_at)}",
        )
    if key.activate_at is not None and now < key.activate_at:
        return PhaseResult(
            KeyPhase.Staged,
            "AwaitingActivation",
            f"trusted, becomes the active signer at {format_time(key.activate_at)}",
            trusted_from=key.not_before,
            trusted_until=key.not_after,
        )
    return PhaseResult(
        KeyPhase.Active,
        "Active",
        f"trusted until {format_time(key.not_after)}",
        trusted_from=key.not_before,
        trusted_until=key.not_after,
    )


def key_phase(key: KeyState, fleet_keys: Sequence[KeyState], now: int) -> PhaseResult:
    """The phase of `key` at `now`, given every SigningKey of its fleet (it may be among them)."""
    return _phase_with(key, _successors(key, fleet_keys), now)


def fleet_phases(fleet_keys: Sequence[KeyState], now: int) -> list[PhaseResult]:
    """`key_phase` of every key of a fleet, in order, in time linear in the number of keys (a
    fleet may hold hundreds: each key's successors are found once, by name)."""
    by_replaced: dict[str, list[KeyState]] = {}
    for k in fleet_keys:
        if k.replaces is not None:
            by_replaced.setdefault(k.replaces, []).append(k)
    return [_phase_with(k, [s for s in by_replaced.get(k.name, ()) if s.name != k.name], now)
            for k in fleet_keys]


def _phase_with(key: KeyState, successors: Sequence[KeyState], now: int) -> PhaseResult:
    current = _phase_at(key, successors, now)
    # The phase is a step function of time whose steps lie at these instants; the first one
    # ahead where the phase differs is the next transition.
    instants = {key.not_before, key.not_after}
    if key.activate_at is not None:
        instants.add(key.activate_at)
    for s in successors:
        instants |= {s.activation, s.activation + s.overlap_seconds, s.not_after}
    for instant in sorted(t for t in instants if t > now):
        if _phase_at(key, successors, instant).phase != current.phase:
            return replace(current, next_transition=instant)
    return current
