"""SigningKeys evaluated per fleet (flashgate/operator/keys.py) and the channel guard
(flashgate/operator/channels.py), on the in-memory store."""
from __future__ import annotations

import asyncio
import json
from typing import Any

from flashgate.api import REVOCATION_LIST_NAME
from flashgate.trust.vocabulary import format_time

from .fakes import NOW, World, key_object


def status(world: World, kind: str, name: str) -> dict[str, object]:
    obj = world.store.get(kind, world.fleet, name)
    assert obj is not None
    return dict(obj.get("status") or {})


def recorded(world: World) -> set[str]:
    obj = world.store.get("RevocationList", world.fleet, REVOCATION_LIST_NAME)
    return set((obj or {}).get("spec", {}).get("keys", {}))


def test_keys_are_endorsed_active_and_the_fleet_gets_its_revocation_list() -> None:
    world = World()
    app = world.add_key("app")
    delay = asyncio.run(world.keys())
    key = status(world, "SigningKey", "app")
    assert key["phase"] == "Active" and key["keyId"] == app.key_id
    assert {c["type"]: c["status"] for c in key["conditions"]} == {  # type: ignore[attr-defined]
        "Endorsed": "True", "Trusted": "True", "Ready": "True"}
    assert recorded(world) == set(), "an empty list, so a deletion refusal can say why"
    assert delay is not None and 0.5 <= delay <= 30 * 86400


def test_a_revocation_is_recorded_and_binds_every_name_of_the_key() -> None:
    world = World()
    app = world.add_key("app")
    world.add_key("app-duplicate", signer=app)
    asyncio.run(world.keys())
    world.revoke("app")
    asyncio.run(world.keys())
    assert recorded(world) == {app.key_id}
    assert status(world, "SigningKey", "app-duplicate")["phase"] == "Revoked"
    # Deleted and applied again, revoked: false: Revoked on creation.
    del world.store.objects[("SigningKey", world.fleet, "app")]
    world.view.on_key("DELETED", {"metadata": {"namespace": world.fleet, "name": "app"}})
    world.add_key("app", signer=app)
    asyncio.run(world.keys())
    assert status(world, "SigningKey", "app")["phase"] == "Revoked"


def test_revoking_withdraws_what_the_key_published() -> None:
    world = World()
    app = world.add_key("app")
    asyncio.run(world.keys())
    world.add_release("v1", [app])
    asyncio.run(world.decide("v1"))
    assert world.store.channel(world.fleet)
    world.revoke("app")
    asyncio.run(world.keys())
    assert world.store.phase(world.fleet, "v1") == "Withdrawn"
    assert world.store.channel(world.fleet) == {}
    assert "Withdrawn" in world.store.reasons("v1")
    floor = world.store.get("RollbackFloor", world.fleet, "gw.application")
    assert floor is not None and floor["spec"]["securityVersion"] == 1, "withdrawal lowers nothing"


def test_one_unusable_key_is_invalid_on_its_own_and_its_fleet_goes_on() -> None:
    world = World()
    app = world.add_key("app")
    bad = key_object(world.fleet, "year-zero", app)
    bad["spec"]["notBefore"] = "0000-01-01T00:00:00Z"  # what the schema once let through
    world.store.put("SigningKey", bad)
    world.sync()
    asyncio.run(world.keys())
    invalid = status(world, "SigningKey", "year-zero")
    assert invalid["phase"] == "Invalid" and invalid["reason"] == "SpecInvalid"
    assert status(world, "SigningKey", "app")["phase"] == "Active"
    world.add_release("v1", [app])
    asyncio.run(world.decide("v1"))
    assert world.store.phase(world.fleet, "v1") == "Published"


def test_a_successor_retires_its_predecessor_on_time() -> None:
    world = World()
    old = world.add_key("old")
    world.add_key("new", replaces="old", overlap="60s", activateAt=format_time(NOW + 10))
    asyncio.run(world.keys())
    assert status(world, "SigningKey", "new")["phase"] == "Staged"
    delay = asyncio.run(world.keys())
    assert delay == 10, "woken exactly at the activation"
    world.clock[0] = NOW + 10
    asyncio.run(world.keys())
    assert status(world, "SigningKey", "old")["phase"] == "Retiring"
    world.clock[0] = NOW + 70
    asyncio.run(world.keys())
    assert status(world, "SigningKey", "old")["phase"] == "Retired"
    world.add_release("by-old", [old])
    asyncio.run(world.decide("by-old"))
    assert status(world, "FirmwareRelease", "by-old")["reason"] == "KeyExpired"


def test_keys_stay_pending_while_the_sidecar_is_down() -> None:
    world = World()
    world.add_key("app")
    world.verifier.down = True
    assert asyncio.run(world.keys()) == 2.0
    assert status(world, "SigningKey", "app")["phase"] == "Pending"
    world.verifier.down = False
    asyncio.run(world.keys())
    assert status(world, "SigningKey", "app")["phase"] == "Active"


# ---- channels --------------------------------------------------------------------------------


def test_the_guard_restores_a_forged_channel_and_ignores_its_own_writes() -> None:
    world = World()
    app = world.add_key("app")
    world.add_release("v1", [app])
    asyncio.run(world.decide("v1"))
    name = "channel.gw.stable"
    cm = world.store.get("ConfigMap", world.fleet, name)
    assert cm is not None
    assert world.guard.on_channel("MODIFIED", cm) is None, "its own write is no drift"
    cm["data"]["bootloader.json"] = json.dumps({"release": "forged"})
    cm["data"]["application.json"] = cm["data"]["application.json"].replace("v1", "v0")
    world.store.put("ConfigMap", cm)
    target = world.guard.on_channel("MODIFIED", world.store.get("ConfigMap", world.fleet, name)
                                    or {})
    assert target == (world.fleet, name)
    asyncio.run(world.guard.check(*target))
    data = world.store.channel(world.fleet)
    assert list(data) == ["application.json"]
    assert json.loads(data["application.json"])["release"] == "v1"
    assert "ChannelRepaired" in world.store.reasons(name)


def test_the_start_up_audit_repairs_and_removes_what_no_ledger_explains() -> None:
    world = World()
    app = world.add_key("app")
    world.add_release("v1", [app])
    asyncio.run(world.decide("v1"))
    world.store.put("ConfigMap", {"metadata": {"name": "channel.other.stable",
                                               "namespace": world.fleet},
                                  "data": {"os.json": "{}"}})
    cm = world.store.get("ConfigMap", world.fleet, "channel.gw.stable")
    assert cm is not None
    del cm["data"]["application.json"]
    world.store.put("ConfigMap", cm)
    assert asyncio.run(world.guard.audit(world.fleet)) == 2
    assert json.loads(world.store.channel(world.fleet)["application.json"])["release"] == "v1"
    assert world.store.channel(world.fleet, product="other") == {}
    assert asyncio.run(world.guard.audit(world.fleet)) == 0


# ---- the trust bundle ------------------------------------------------------------------------


def bundle(world: World) -> dict[str, object]:
    cm = world.store.get("ConfigMap", world.fleet, "flashgate-trust-bundle")
    assert cm is not None
    return dict(json.loads(cm["data"]["bundle.json"]))


def test_the_trust_bundle_carries_trusted_keys_and_root_signed_revocations() -> None:
    world = World()
    world.add_key("app", endorsement="YXBw")
    world.add_key("boot", tier="bootloader", endorsement="Ym9vdA==")
    staged = world.add_key("next", endorsement="bmV4dA==",
                           activateAt=format_time(NOW + 3600))
    world.add_key("leaked", endorsement="bGVha2Vk")
    world.add_key("lost", endorsement="bG9zdA==")
    asyncio.run(world.keys())
    first = bundle(world)
    assert first["endorsements"] == {"application": ["YXBw", "bG9zdA==", "bGVha2Vk", "bmV4dA=="],
                                     "bootloader": ["Ym9vdA=="], "config": [], "driver": [],
                                     "os": []}
    assert staged.key_id and first["revocations"] == []
    obj = world.store.get("SigningKey", world.fleet, "leaked")
    assert obj is not None
    obj["spec"].update(revoked=True, revocation="cmV2b2tlZA==")
    world.store.put("SigningKey", obj)
    world.revoke("lost")  # revoked, but no root-signed revocation
    asyncio.run(world.keys())
    after = bundle(world)
    assert after["revocations"] == ["cmV2b2tlZA=="]
    assert "bGVha2Vk" not in after["endorsements"]["application"]  # type: ignore[index]
    told = {c["type"]: c for c in status(world, "SigningKey", "lost")["conditions"]}  # type: ignore[union-attr]
    assert told["DevicesToldOfRevocation"]["status"] == "False"
    assert "devices keep trusting this key until its notAfter" in told["DevicesToldOfRevocation"]["message"]
    leaked = {c["type"]: c for c in status(world, "SigningKey", "leaked")["conditions"]}  # type: ignore[union-attr]
    assert leaked["DevicesToldOfRevocation"]["status"] == "True"
    # The Revoked event says it too, for whoever reads `kubectl describe` or events only.
    revoked_events = {who: message for who, _, reason, message in world.store.events
                      if reason == "Revoked"}
    assert "devices keep trusting this key until its notAfter" in revoked_events["lost"]
    assert "devices keep trusting" not in revoked_events["leaked"]
    # The revocation outlives its SigningKey: it is on the RevocationList.
    del world.store.objects[("SigningKey", world.fleet, "leaked")]
    world.view.on_key("DELETED", {"metadata": {"namespace": world.fleet, "name": "leaked"}})
    asyncio.run(world.keys())
    assert bundle(world)["revocations"] == ["cmV2b2tlZA=="]


def test_a_revocation_the_verifier_refuses_is_left_out_and_the_key_says_so() -> None:
    """The bundle carries only what devices can verify, and the condition does not claim that
    devices were told when the envelope on the key is not the root's."""
    world = World()
    world.verifier.forged_revocations["Zm9yZ2Vk"] = "signed by key 1f2e, which is not a fleet root"
    world.add_key("app", endorsement="YXBw", revoked=True, revocation="Zm9yZ2Vk")
    world.add_key("other", endorsement="b3RoZXI=", revoked=True, revocation="cmV2b2tlZA==")
    asyncio.run(world.keys())
    assert bundle(world)["revocations"] == ["cmV2b2tlZA=="]
    told = {c["type"]: c for c in status(world, "SigningKey", "app")["conditions"]}  # type: ignore[union-attr]
    assert told["DevicesToldOfRevocation"]["status"] == "False"
    assert told["DevicesToldOfRevocation"]["reason"] == "RevocationNotRootSigned"
    assert "which is not a fleet root" in told["DevicesToldOfRevocation"]["message"]
    other = {c["type"]: c for c in status(world, "SigningKey", "other")["conditions"]}  # type: ignore[union-attr]
    assert other["DevicesToldOfRevocation"]["reason"] == "InTrustBundle"


def test_a_revocation_leaves_the_bundle_when_its_key_expires_on_time() -> None:
    """A revoked key has no phase transition ahead, but its revocation's end in the bundle is a
    change: the fleet is looked at again then, not at the hourly recheck."""
    world = World()
    world.add_key("app", endorsement="YXBw", revoked=True, revocation="cmV2b2tlZA==",
                  notAfter=format_time(NOW + 600))
    delay = asyncio.run(world.keys())
    assert bundle(world)["revocations"] == ["cmV2b2tlZA=="]
    assert delay == 600
    world.clock[0] = NOW + 601
    asyncio.run(world.keys())
    assert bundle(world)["revocations"] == []


def test_a_forged_trust_bundle_is_rewritten() -> None:
    world = World()
    world.add_key("app", endorsement="YXBw")
    asyncio.run(world.keys())
    good = bundle(world)
    cm = world.store.get("ConfigMap", world.fleet, "flashgate-trust-bundle")
    assert cm is not None
    cm["data"]["bundle.json"] = json.dumps({"endorsements": {"application": ["Zm9yZ2Vk"]}})
    world.store.put("ConfigMap", cm)
    assert not world.store.wrote(world.fleet, "flashgate-trust-bundle", cm)
    asyncio.run(world.keys())
    assert bundle(world) == good


def test_a_publication_racing_the_audit_stays_in_its_channel() -> None:
    """Found by the chaos loop (iteration operator-kill): the restarted operator's start-up audit
    read the ledgers, then the gate recorded a publication and wrote its document, then the
    audit wrote the channel from the ledgers it had read: the new document was removed (here,
    replaced by the older one), and as the audit's own write it was never repaired. The channel
    now says which publication each document is (its sequence annotation): one newer than the
    ledgers the guard read makes it read them again."""
    world = World()
    app = world.add_key("app")
    world.add_release("v1", [app])
    asyncio.run(world.decide("v1"))
    world.add_release("v2", [app], securityVersion=2)
    read_ledgers = world.store.list_floors

    async def then_publish(fleet: str) -> Any:
        floors = await read_ledgers(fleet)
        world.store.list_floors = read_ledgers  # type: ignore[method-assign]
        await world.decide("v2")  # recorded and written after the audit read the ledgers
        return floors

    world.store.list_floors = then_publish  # type: ignore[method-assign]
    asyncio.run(world.guard.audit(world.fleet))
    assert world.store.phase(world.fleet, "v2") == "Published"
    channel = world.store.channel(world.fleet)
    assert json.loads(channel["application.json"])["release"] == "v2"
    assert asyncio.run(world.guard.audit(world.fleet)) == 0


def test_a_forged_document_with_a_forged_sequence_is_repaired() -> None:
    """A sequence no ledger knows, even after the guard read the ledgers again, was never
    recorded: the guard does not wait for it, it restores the channel."""
    world = World()
    app = world.add_key("app")
    world.add_release("v1", [app])
    asyncio.run(world.decide("v1"))
    cm = world.store.get("ConfigMap", world.fleet, "channel.gw.stable")
    assert cm is not None
    cm["data"]["application.json"] = json.dumps({"release": "forged"})
    cm["metadata"].setdefault("annotations", {})["ota.flashgate.dev/sequence.application"] = "999"
    world.store.put("ConfigMap", cm)
    assert asyncio.run(world.guard.audit(world.fleet)) == 1
    channel = world.store.channel(world.fleet)
    assert json.loads(channel["application.json"])["release"] == "v1"


def test_no_release_is_decided_while_a_successor_of_its_signer_is_unchecked() -> None:
    """Found by the chaos loop (operator-kill): the restarted operator decided releases before
    its key reconcile had the sidecar check the endorsements, and an unchecked successor retires
    nothing, so releases signed by a key rotated out an hour ago were published. Whether the
    signer is retired is not known until its successor's endorsement is: the gate waits."""
    world = World()
    old = world.add_key("old")
    world.add_key("new", replaces="old", overlap="60s", activateAt=format_time(NOW - 3000))
    world.add_release("by-old", [old])
    assert asyncio.run(world.decide("by-old")) is not None, "decided too early"
    assert world.store.phase(world.fleet, "by-old") in (None, "Pending")
    asyncio.run(world.keys())  # the endorsements checked: "new" retired "old"
    asyncio.run(world.decide("by-old"))
    assert status(world, "FirmwareRelease", "by-old")["reason"] == "KeyExpired"
