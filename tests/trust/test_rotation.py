"""The SigningKey state machine (rotation.key_phase) and overlap durations."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flashgate.trust import TRUSTED_PHASES, KeyPhase, KeyState, fleet_phases, key_phase

NB = 1_000_000
NA = 2_000_000
WEEK = 168 * 3600

OLD = KeyState("app-2025", endorsed=True, revoked=False, not_before=NB, not_after=NA)
ACTIVATE = NB + 100_000
NEW = KeyState(
    "app-2026",
    endorsed=True,
    revoked=False,
    not_before=NB + 50_000,
    not_after=NA + 1_000_000,
    activate_at=ACTIVATE,
    replaces="app-2025",
    overlap_seconds=WEEK,
)
FLEET = [OLD, NEW]


def test_unverified_endorsement_is_pending() -> None:
    result = key_phase(replace(OLD, endorsed=None), [], NB + 1)
    assert (result.phase, result.reason) == (KeyPhase.Pending, "AwaitingVerification")
    assert result.next_transition is None
    assert not result.trusted and result.trusted_from is None


def test_failed_endorsement_is_invalid_forever() -> None:
    result = key_phase(replace(OLD, endorsed=False), [], NB + 1)
    assert result.phase is KeyPhase.Invalid
    assert result.next_transition is None


@pytest.mark.parametrize("endorsed", [True, False, None])
@pytest.mark.parametrize("now", [NB - 1, NB + 1, NA + 1])
def test_revoked_wins_over_everything(endorsed: bool | None, now: int) -> None:
    result = key_phase(replace(OLD, revoked=True, endorsed=endorsed), FLEET, now)
    assert result.phase is KeyPhase.Revoked
    assert result.next_transition is None
    assert not result.trusted


def test_before_not_before_is_pending_until_then() -> None:
    result = key_phase(OLD, [], NB - 1)
    assert (result.phase, result.reason) == (KeyPhase.Pending, "NotYetValid")
    assert result.next_transition == NB
    assert key_phase(OLD, [], NB).phase is KeyPhase.Active


def test_active_until_not_after_then_expired() -> None:
    result = key_phase(OLD, [OLD], NB)
    assert result.phase is KeyPhase.Active
    assert (result.trusted_from, result.trusted_until, result.next_transition) == (NB, NA, NA)
    assert result.trusted
    assert key_phase(OLD, [], NA - 1).phase is KeyPhase.Active
    expired = key_phase(OLD, [], NA)
    assert expired.phase is KeyPhase.Expired
    assert expired.next_transition is None and expired.trusted_until is None


def test_staged_until_activation() -> None:
    result = key_phase(NEW, FLEET, ACTIVATE - 1)
    assert result.phase is KeyPhase.Staged
    assert result.trusted
    assert (result.trusted_from, result.trusted_until) == (NEW.not_before, NEW.not_after)
    assert result.next_transition == ACTIVATE
    assert key_phase(NEW, FLEET, ACTIVATE).phase is KeyPhase.Active
    assert key_phase(NEW, FLEET, NEW.not_before - 1).phase is KeyPhase.Pending


def test_rotation_window_boundaries() -> None:
    retire_at = ACTIVATE + WEEK
    before = key_phase(OLD, FLEET, ACTIVATE - 1)
    assert before.phase is KeyPhase.Active
    assert before.next_transition == ACTIVATE  # the successor's activation, not NA

    retiring = key_phase(OLD, FLEET, ACTIVATE)
    assert (retiring.phase, retiring.reason) == (KeyPhase.Retiring, "Superseded")
    assert retiring.trusted
    assert (retiring.trusted_from, retiring.trusted_until) == (NB, retire_at)
    assert retiring.next_transition == retire_at
    assert "app-2026" in retiring.message

    assert key_phase(OLD, FLEET, retire_at - 1).phase is KeyPhase.Retiring
    retired = key_phase(OLD, FLEET, retire_at)
    assert (retired.phase, retired.reason) == (KeyPhase.Retired, "OverlapEnded")
    assert not retired.trusted and retired.trusted_until is None
    assert retired.next_transition == NA  # then Expired
    assert key_phase(OLD, FLEET, NA).phase is KeyPhase.Expired


def test_retiring_ends_at_not_after_when_that_comes_first() -> None:
    short = replace(OLD, not_after=ACTIVATE + 10)
    result = key_phase(short, [short, NEW], ACTIVATE)
    assert result.phase is KeyPhase.Retiring
    assert result.trusted_until == ACTIVATE + 10
    assert result.next_transition == ACTIVATE + 10
    assert key_phase(short, [short, NEW], ACTIVATE + 10).phase is KeyPhase.Expired


def test_zero_overlap_retires_at_activation() -> None:
    successor = replace(NEW, overlap_seconds=0)
    assert key_phase(OLD, [OLD, successor], ACTIVATE).phase is KeyPhase.Retired
    assert key_phase(OLD, [OLD, successor], ACTIVATE - 1).next_transition == ACTIVATE


def test_activation_is_never_before_the_successors_not_before() -> None:
    early = replace(NEW, activate_at=NB, not_before=ACTIVATE)
    assert early.activation == ACTIVATE
    assert key_phase(OLD, [early], ACTIVATE - 1).phase is KeyPhase.Active
    assert key_phase(OLD, [early], ACTIVATE).phase is KeyPhase.Retiring
    no_activate_at = replace(NEW, activate_at=None)
    assert no_activate_at.activation == NEW.not_before


@pytest.mark.parametrize(
    "successor",
    [
        replace(NEW, endorsed=None),
        replace(NEW, endorsed=False),
        replace(NEW, revoked=True),
        replace(NEW, not_after=ACTIVATE + 1),  # expired by the time we look
        replace(NEW, replaces="someone-else"),
        replace(OLD, replaces=OLD.name),  # a key does not replace itself
    ],
    ids=["unverified", "invalid", "revoked", "expired", "replaces another", "itself"],
)
def test_only_a_trustworthy_successor_retires_a_key(successor: KeyState) -> None:
    assert key_phase(OLD, [OLD, successor], ACTIVATE + 2).phase is KeyPhase.Active


def test_the_earliest_retirement_among_successors_wins() -> None:
    second = replace(NEW, name="app-2026b", overlap_seconds=60)
    result = key_phase(OLD, [OLD, NEW, second], ACTIVATE)
    assert result.phase is KeyPhase.Retiring
    assert result.trusted_until == ACTIVATE + 60
    assert "app-2026b" in result.message


def test_trusted_phases() -> None:
    assert {KeyPhase.Staged, KeyPhase.Active, KeyPhase.Retiring} == TRUSTED_PHASES


_TIMES = st.integers(0, 100)


@st.composite
def _rotations(draw: st.DrawFn) -> tuple[KeyState, list[KeyState], int]:
    def state(name: str, replaces: str | None) -> KeyState:
        not_before = draw(_TIMES)
        return KeyState(
            name,
            endorsed=draw(st.sampled_from([True, True, True, False, None])),
            revoked=draw(st.sampled_from([False, False, False, True])),
            not_before=not_before,
            not_after=not_before + draw(st.integers(1, 100)),
            activate_at=draw(st.none() | _TIMES),
            replaces=replaces,
            overlap_seconds=draw(st.integers(0, 50)),
        )

    key = state("k", None)
    successors = [state(f"s{i}", "k") for i in range(draw(st.integers(0, 3)))]
    return key, [key, *successors], draw(st.integers(0, 250))


@given(_rotations())
def test_next_transition_is_exactly_when_the_phase_first_changes(
    case: tuple[KeyState, list[KeyState], int],
) -> None:
    key, fleet, now = case
    result = key_phase(key, fleet, now)
    assert result.trusted == (result.trusted_from is not None) == (result.trusted_until is not None)
    horizon = 500
    end = result.next_transition if result.next_transition is not None else horizon
    assert end > now
    for t in range(now, min(end, horizon)):
        assert key_phase(key, fleet, t).phase is result.phase, t
    if result.next_transition is not None:
        assert key_phase(key, fleet, result.next_transition).phase is not result.phase


@given(_rotations())
def test_fleet_phases_agrees_with_key_phase_key_by_key(
        rotation: tuple[KeyState, list[KeyState], int]) -> None:
    _, fleet, now = rotation
    assert fleet_phases(fleet, now) == [key_phase(k, fleet, now) for k in fleet]
