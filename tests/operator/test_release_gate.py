"""The release gate (flashgate/operator/releases.py) on the in-memory store: every decision of a
release, in milliseconds. The e2e suite checks the same paths against the real API server."""
from __future__ import annotations

import asyncio
import json

from flashgate.api import REVOCATION_LIST_NAME, FirmwareReleaseSpec, Publication
from flashgate.operator.releases import Release
from flashgate.trust.vocabulary import Reason

from .fakes import World


def test_a_good_release_is_published_once_with_floor_channel_event_and_metric() -> None:
    world = World()
    app = world.add_key("app")
    world.add_release("v3", [app], security_version=3)
    assert asyncio.run(world.decide("v3")) is None
    store = world.store
    assert store.phase("fleet-a", "v3") == "Published"
    floor = store.get("RollbackFloor", "fleet-a", "gw.application")
    assert floor is not None and floor["spec"]["securityVersion"] == 3
    document = json.loads(store.channel("fleet-a")["application.json"])
    assert document["release"] == "v3" and document["securityVersion"] == 3
    assert store.reasons("v3") == ["Published"]
    status = store.get("FirmwareRelease", "fleet-a", "v3")["status"]  # type: ignore[index]
    assert status["verifiedKeyIds"] == [app.key_id]
    assert status["publishedAt"] == document["publishedAt"]
    # Decided: looked at again, nothing happens.
    asyncio.run(world.decide("v3"))
    assert store.reasons("v3") == ["Published"]
    assert world.verifier.calls == 1


def test_a_rejection_is_announced_and_counted_once() -> None:
    world = World()
    app = world.add_key("app")
    world.add_release("bad", [app])
    world.verifier.rejections["bad"] = (Reason.HashMismatch, "sha256 differs")
    asyncio.run(world.decide("bad"))
    store = world.store
    assert store.phase("fleet-a", "bad") == "Rejected"
    assert store.channel("fleet-a") == {} and store.get("RollbackFloor", "fleet-a",
                                                        "gw.application") is None
    # A status reset by hand: decided again, announced no second time.
    obj = store.get("FirmwareRelease", "fleet-a", "bad")
    assert obj is not None
    obj["status"] = {"phase": "Pending"}
    store.put("FirmwareRelease", obj)
    asyncio.run(world.decide("bad"))
    assert store.reasons("bad") == ["HashMismatch"]


def test_the_sidecar_down_fails_closed_and_backs_off() -> None:
    world = World()
    app = world.add_key("app")
    world.add_release("v1", [app])
    world.verifier.down = True
    delays = [asyncio.run(world.decide("v1")) for _ in range(3)]
    assert delays == [1.0, 2.0, 4.0]
    assert world.store.phase("fleet-a", "v1") == "Pending"
    assert world.store.channel("fleet-a") == {}
    world.verifier.down = False
    assert asyncio.run(world.decide("v1")) is None
    assert world.store.phase("fleet-a", "v1") == "Published"


def test_a_replay_is_refused_and_leaves_the_channel_alone() -> None:
    world = World()
    app = world.add_key("app")
    world.add_release("v1", [app], content=b"build 1")
    asyncio.run(world.decide("v1"))
    before = world.store.channel("fleet-a")
    world.add_release("v1-copy", [app], content=b"build 1",
                      url="https://elsewhere.example.com/x.bin")
    world.store.objects[("FirmwareRelease", "fleet-a", "v1-copy")]["spec"]["artifact"]["name"] = \
        "v1.bin"  # the same signed manifest: same name, size and digest
    asyncio.run(world.decide("v1-copy"))
    assert world.store.phase("fleet-a", "v1-copy") == "Rejected"
    status = world.store.get("FirmwareRelease", "fleet-a", "v1-copy")["status"]  # type: ignore[index]
    assert status["reason"] == "ReplayRejected"
    assert world.store.channel("fleet-a") == before


def test_a_publication_cut_short_is_finished_not_repeated() -> None:
    world = World()
    app = world.add_key("app")
    world.add_release("v2", [app], security_version=2)
    asyncio.run(world.decide("v2"))
    # As if the process had died after the channel write: the status is lost, the event too.
    obj = world.store.get("FirmwareRelease", "fleet-a", "v2")
    assert obj is not None
    obj["status"] = {}
    world.store.put("FirmwareRelease", obj)
    world.store.events.clear()
    calls = world.verifier.calls
    asyncio.run(world.decide("v2"))
    assert world.store.phase("fleet-a", "v2") == "Published"
    assert world.verifier.calls == calls, "a recorded publication is not verified again"
    assert world.store.events == [], "the Published event was posted before: not again"
    floor = world.store.get("RollbackFloor", "fleet-a", "gw.application")
    assert floor is not None and floor["status"]["sequence"] == 1


def test_a_superseded_release_reset_to_pending_stays_superseded() -> None:
    world = World()
    app = world.add_key("app")
    world.add_release("first", [app], security_version=3, content=b"1")
    asyncio.run(world.decide("first"))
    world.add_release("second", [app], security_version=3, content=b"2")
    asyncio.run(world.decide("second"))
    obj = world.store.get("FirmwareRelease", "fleet-a", "first")
    assert obj is not None
    obj["status"] = {"phase": "Pending"}
    world.store.put("FirmwareRelease", obj)
    asyncio.run(world.decide("first"))
    status = world.store.get("FirmwareRelease", "fleet-a", "first")["status"]  # type: ignore[index]
    assert status["phase"] == "Published" and "superseded there by second" in status["message"]
    assert json.loads(world.store.channel("fleet-a")["application.json"])["release"] == "second"


def test_a_lost_floor_is_rebuilt_from_the_published_releases() -> None:
    world = World()
    app = world.add_key("app")
    world.add_release("v5", [app], security_version=5)
    asyncio.run(world.decide("v5"))
    del world.store.objects[("RollbackFloor", "fleet-a", "gw.application")]
    world.gate.known_floors.clear()  # a restarted operator: only the objects tell
    world.add_release("v1", [app], security_version=1)
    asyncio.run(world.decide("v1"))
    status = world.store.get("FirmwareRelease", "fleet-a", "v1")["status"]  # type: ignore[index]
    assert (status["phase"], status["reason"]) == ("Rejected", "RollbackRejected")
    floor = world.store.get("RollbackFloor", "fleet-a", "gw.application")
    assert floor is not None and floor["spec"]["securityVersion"] == 5
    assert "FloorRebuilt" in world.store.reasons("v1")


def test_a_key_revoked_during_verification_is_refused_before_any_write() -> None:
    world = World()
    app = world.add_key("app")
    world.add_release("v1", [app])
    original = world.verifier.verify_release

    async def revoke_while_verifying(request):  # type: ignore[no-untyped-def]
        verdict = await original(request)
        world.revoke("app")  # the watch brings the revoked key while the sidecar works
        return verdict

    world.verifier.verify_release = revoke_while_verifying  # type: ignore[method-assign]
    asyncio.run(world.decide("v1"))
    status = world.store.get("FirmwareRelease", "fleet-a", "v1")["status"]  # type: ignore[index]
    assert (status["phase"], status["reason"]) == ("Rejected", "KeyRevoked")
    assert world.store.get("RollbackFloor", "fleet-a", "gw.application") is None
    assert world.store.channel("fleet-a") == {}


def test_a_revocation_recorded_after_the_precheck_is_caught_after_the_channel_write() -> None:
    world = World()
    app = world.add_key("app")
    world.add_release("v1", [app])
    # Recorded in the API server, not yet seen by the operator's watch: the check before the
    # writes passes, the fresh one after the channel write does not.
    world.store.put("RevocationList", {"metadata": {"name": REVOCATION_LIST_NAME,
                                                    "namespace": "fleet-a"},
                                       "spec": {"keys": {app.key_id: {
                                           "revokedAt": "2026-09-01T00:00:00Z",
                                           "signingKey": "app", "tier": "application",
                                           "publicKey": app.public_pem}}}})
    asyncio.run(world.gate.reconcile("fleet-a", "v1"))
    assert world.store.phase("fleet-a", "v1") == "Withdrawn"
    assert world.store.channel("fleet-a") == {}
    floor = world.store.get("RollbackFloor", "fleet-a", "gw.application")
    assert floor is not None and floor["status"]["publications"][0]["withdrawnAt"]
    assert "Published" not in world.store.reasons("v1")


def test_concurrent_publications_leave_the_newest_in_the_channel_whatever_the_order() -> None:
    """Two publications of one product, tier and channel reach the ConfigMap in the wrong order:
    the older one's write finds a newer sequence there and leaves it."""
    world = World()
    app = world.add_key("app")
    world.add_release("older", [app], security_version=3, content=b"1")
    world.add_release("newer", [app], security_version=3, content=b"2")
    # The older release is recorded first, then the newer one is decided completely, then the
    # older one's channel write comes late.
    older = world.store.get("FirmwareRelease", "fleet-a", "older")
    assert older is not None
    asyncio.run(world.decide("older"))
    asyncio.run(world.decide("newer"))
    floor = world.store.get("RollbackFloor", "fleet-a", "gw.application")
    assert floor is not None
    entries = {p["release"]: p for p in floor["status"]["publications"]}
    assert entries["newer"]["sequence"] > entries["older"]["sequence"]
    late = Release(fleet="fleet-a", name="older", uid=older["metadata"]["uid"], generation=1,
                   resource_version="", spec=FirmwareReleaseSpec.model_validate(older["spec"]),
                   status={}, obj=older)
    asyncio.run(world.gate._write_channel(late, Publication.model_validate(entries["older"])))
    document = json.loads(world.store.channel("fleet-a")["application.json"])
    assert document["release"] == "newer"
