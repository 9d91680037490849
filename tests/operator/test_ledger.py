"""The publication ledger's rules (flashgate/operator/ledger.py), pure: replay, resume, the floor,
channel heads, withdrawal and trimming."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from flashgate.api import FirmwareReleaseSpec, RollbackFloor
from flashgate.api.rollbackfloor import MAX_PUBLICATIONS
from flashgate.operator import ledger
from flashgate.trust.vocabulary import Reason

from .fakes import release_object

NOW = datetime(2026, 9, 1, tzinfo=UTC)
FLEET = "fleet-a"


def candidate(name: str, *, sv: int = 1, channel: str = "stable", content: bytes | None = None,
              republish: bool = False, keys: tuple[str, ...] = ("a" * 64,)) -> ledger.Candidate:
    spec = FirmwareReleaseSpec.model_validate(
        release_object(FLEET, name, security_version=sv, channel=channel, content=content)["spec"])
    return ledger.Candidate(
        release=name, uid=f"uid-{name}", channel=channel,
        manifest_sha256=ledger.manifest_digest(FLEET, spec), security_version=sv, key_ids=keys,
        document=ledger.job_document(fleet=FLEET, name=name, spec=spec, published_at=NOW),
        republish=republish)


def record(floor: RollbackFloor | None, cand: ledger.Candidate,
           at: datetime = NOW) -> ledger.Recorded | ledger.Refused:
    return ledger.record(floor, fleet=FLEET, product="gw", tier="application", candidate=cand,
                         now=at)


def recorded(floor: RollbackFloor | None, cand: ledger.Candidate) -> RollbackFloor:
    result = record(floor, cand)
    assert isinstance(result, ledger.Recorded), result
    return result.floor


def test_the_first_publication_creates_the_floor_at_its_security_version() -> None:
    result = record(None, candidate("v3", sv=3))
    assert isinstance(result, ledger.Recorded) and result.new
    assert result.floor.spec.security_version == 3
    assert result.floor.metadata["name"] == "gw.application"
    assert result.entry.sequence == 1 and result.entry.document
    assert result.floor.status is not None and result.floor.status.last_raised_by == "v3"


def test_the_same_release_again_is_a_resume_not_a_second_publication() -> None:
    floor = recorded(None, candidate("v3", sv=3))
    again = record(floor, candidate("v3", sv=3))
    assert isinstance(again, ledger.Recorded) and not again.new
    assert again.floor is floor and again.entry.sequence == 1


def test_below_the_floor_is_refused_as_a_rollback() -> None:
    floor = recorded(None, candidate("v5", sv=5))
    refused = record(floor, candidate("v4", sv=4))
    assert isinstance(refused, ledger.Refused) and refused.reason is Reason.RollbackRejected
    assert "below the floor 5" in refused.message


def test_a_published_manifest_under_another_name_is_a_replay_unless_intended() -> None:
    floor = recorded(None, candidate("v5", sv=5))
    replay = ledger.Candidate(**{**candidate("v5", sv=5).__dict__, "release": "v5-copy",
                                 "uid": "uid-v5-copy", "channel": "beta"})
    refused = record(floor, replay)
    assert isinstance(refused, ledger.Refused) and refused.reason is Reason.ReplayRejected
    assert "as release v5 to channel stable" in refused.message
    intended = record(floor, ledger.Candidate(**{**replay.__dict__, "republish": True}))
    assert isinstance(intended, ledger.Recorded) and intended.new
    assert intended.entry.sequence == 2 and intended.entry.channel == "beta"


def test_a_new_build_of_the_same_epoch_needs_no_intent_and_becomes_the_head() -> None:
    floor = recorded(None, candidate("v5a", sv=5, content=b"a"))
    floor = recorded(floor, candidate("v5b", sv=5, content=b"b"))
    head = ledger.head(floor, "stable")
    assert head is not None and head.release == "v5b"
    previous = ledger.find(floor, "uid-v5a")
    assert previous is not None and previous.document is None, "only the head keeps a document"
    assert floor.spec.security_version == 5


def test_a_higher_security_version_raises_the_floor() -> None:
    floor = recorded(None, candidate("v5", sv=5))
    floor = recorded(floor, candidate("v9", sv=9))
    assert floor.spec.security_version == 9
    assert floor.status is not None and floor.status.last_raised_by == "v9"


def test_channel_content_follows_the_heads_and_withdrawal() -> None:
    floor = recorded(None, candidate("v1", sv=1, keys=("a" * 64,)))
    floor = recorded(floor, candidate("b1", sv=1, channel="beta", content=b"beta",
                                      keys=("b" * 64,)))
    stable = ledger.channel_content([floor], "stable")
    assert set(stable.documents) == {"application.json"} and stable.sequences == {"application": 1}
    withdrawn = ledger.withdraw(floor, {"a" * 64}, NOW)
    assert withdrawn is not None
    assert ledger.channel_content([withdrawn], "stable") == ledger.ChannelContent()
    beta = ledger.channel_content([withdrawn], "beta")
    assert set(beta.documents) == {"application.json"} and beta.sequences == {"application": 2}
    assert ledger.withdraw(withdrawn, {"a" * 64}, NOW) is None, "nothing left to withdraw"


def test_trimming_keeps_every_channel_head() -> None:
    floor = recorded(None, candidate("beta-1", sv=1, channel="beta", content=b"beta"))
    for n in range(MAX_PUBLICATIONS + 5):
        floor = recorded(floor, candidate(f"s-{n}", sv=1, content=str(n).encode()))
    entries = ledger.publications(floor)
    assert len(entries) == MAX_PUBLICATIONS + 1
    head = ledger.head(floor, "beta")
    assert head is not None and head.release == "beta-1"


@pytest.mark.parametrize("text", ["", "[]", "not json", '"a string"'])
def test_document_fields_of_anything_forged(text: str) -> None:
    assert ledger.document_fields(text) == {}


def test_job_document_time_is_utc_seconds() -> None:
    spec = FirmwareReleaseSpec.model_validate(release_object(FLEET, "x")["spec"])
    text = ledger.job_document(fleet=FLEET, name="x", spec=spec,
                               published_at=NOW + timedelta(microseconds=5))
    assert '"publishedAt": "2026-09-01T00:00:00Z"' in text


def test_a_head_too_large_to_keep_keeps_the_document_of_its_own_sequence_only() -> None:
    floor = recorded(None, candidate("big", sv=1))
    entries = [p.model_copy(update={"document": None}) for p in ledger.publications(floor)]
    assert floor.status is not None
    floor = floor.model_copy(update={"status": floor.status.model_copy(
        update={"publications": entries})})
    same = ledger.ChannelContent({"application.json": "the big one"}, {"application": 1})
    assert ledger.channel_content([floor], "stable", same) == same
    other = ledger.ChannelContent({"application.json": "forged"}, {"application": 7})
    assert ledger.channel_content([floor], "stable", other) == ledger.ChannelContent()
