"""The SigningKey state machine, pure: DESIGN.md "Resources" (SigningKey status.phase).

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

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from flashgate.trust.model import format_time


class Phase(StrEnum):
    """SigningKey.status.phase."""

    Pending = "Pending"
    """Not yet usable: the endorsement is not checked yet, or notBefore is still ahead."""
    Invalid = "Invalid"
    """The endorsement does not verify or disagrees with the spec; never trusted."""
    Staged = "Staged"
    """Trusted and distributed to devices, not yet the primary signer (activateAt ahead)."""
    Active = "Active"
    """Trusted; the primary signer of its tier."""
    Retiring = "Retiring"
    """Trusted until the overlap window after its successor's activation ends."""
    Retired = "Retired"
    """Replaced and past its overlap; no longer trusted."""
    Expired = "Expired"
    """Past notAfter; no longer trusted."""
    Revoked = "Revoked"
    """Distrusted for good."""


TRUSTED_PHASES = frozenset({Phase.Staged, Phase.Active, Phase.Retiring})


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

    phase: Phase
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
        return PhaseResult(Phase.Revoked, "Revoked", f"key {key.name} is revoked")
    if key.endorsed is None:
        return PhaseResult(
            Phase.Pending, "AwaitingVerification", "the root endorsement is not verified yet"
        )
    if not key.endorsed:
        return PhaseResult(
            Phase.Invalid,
            "EndorsementInvalid",
            "the root endorsement does not verify or disagrees with the spec",
        )
    if now >= key.not_after:
        return PhaseResult(
            Phase.Expired, "Expired", f"validity ended at {format_time(key.not_after)}"
        )
    if now < key.not_before:
        return PhaseResult(
            Phase.Pending, "NotYetValid", f"valid from {format_time(key.not_before)}"
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
                Phase.Retiring,
                "Superseded",
                f"replaced by {successor.name}, active since {format_time(successor.activation)}; "
                f"trusted until {format_time(until)}",
                trusted_from=key.not_before,
                trusted_until=until,
            )
        return PhaseResult(
            Phase.Retired,
            "OverlapEnded",
            f"replaced by {successor.name}; the overlap ended at {format_time(retire_at)}",
        )
    if key.activate_at is not None and now < key.activate_at:
        return PhaseResult(
            Phase.Staged,
            "AwaitingActivation",
            f"trusted, becomes the active signer at {format_time(key.activate_at)}",
            trusted_from=key.not_before,
            trusted_until=key.not_after,
        )
    return PhaseResult(
        Phase.Active,
        "Active",
        f"trusted until {format_time(key.not_after)}",
        trusted_from=key.not_before,
        trusted_until=key.not_after,
    )


def key_phase(key: KeyState, fleet_keys: Sequence[KeyState], now: int) -> PhaseResult:
    """The phase of `key` at `now`, given every SigningKey of its fleet (it may be among them)."""
    successors = _successors(key, fleet_keys)
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


_DURATION = re.compile(r"(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s)?")
_MAX_DURATION_TEXT = 32


def parse_duration(text: str) -> int:
    """Seconds in a duration such as "168h", "30m", "1h30m" or "90s" (units h, m, s in that
    order, each at most once; "0" alone is zero).

    Raises:
        ValueError: for anything else (empty, signs, fractions, spaces, other units).
    """
    if text == "0":
        return 0
    match = _DURATION.fullmatch(text) if len(text) <= _MAX_DURATION_TEXT else None
    if match is None or not any(match.groups()):
        raise ValueError(f"{text!r} is not a duration such as '168h', '30m', '1h30m' or '90s'")
    hours, minutes, seconds = (int(group or 0) for group in match.groups())
    return hours * 3600 + minutes * 60 + seconds
