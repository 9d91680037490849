"""The reference device agent (flashgate/device/) against the real delivery service: a good
release installed once, through staging, the inactive slot, a confirmed switch and a raised
counter; each bad release refused with its reason, nothing written to a slot, and the reason
reported to the delivery service; the trust store kept across restarts."""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
from typing import Any

import pytest
from hostile import Endless, HostileDelivery, Refuse, Trickle

from flashgate.device.agent import Agent, CycleReport
from flashgate.signing.filekeys import generate
from flashgate.trust import Algorithm, Tier

from .conftest import World

IMAGE = os.urandom(20_000)


def cycle(agent: Agent) -> CycleReport:
    return asyncio.run(agent.cycle())


def slot_files(agent: Agent) -> dict[str, bytes]:
    directory = agent.state / "application"
    return {p.name: p.read_bytes() for p in sorted(directory.glob("slot-*.img"))}


def boot_control(agent: Agent) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((agent.state / "application" / "boot.json").read_text())
    return data


def counter(agent: Agent) -> int:
    return agent.counters[Tier.APPLICATION].read()


def test_a_good_release_is_installed_once(world: World) -> None:
    app = generate(Algorithm.ED25519)
    world.publish_bundle([world.endorse(app)])
    world.publish_release("app-1", IMAGE, [app], security_version=3)
    agent = world.agent("dev-1")
    factory = slot_files(agent)["slot-a.img"]
    first = cycle(agent)
    assert [(o.action, o.release) for o in first.outcomes] == [("installed", "app-1")]
    assert first.bundle is not None and first.bundle.added == (app.key_id,)
    assert first.reported and not first.errors
    # Slot B holds the image and is active; slot A, the factory image, was not touched.
    assert slot_files(agent) == {"slot-a.img": factory, "slot-b.img": IMAGE}
    control = boot_control(agent)
    assert (control["active"], control["pending"]) == ("b", None)
    assert control["slots"]["b"]["release"] == "app-1"
    assert control["slots"]["b"]["image_sha256"] == hashlib.sha256(IMAGE).hexdigest()
    assert counter(agent) == 3
    assert not list((agent.state / "staging").iterdir())
    # Polling again: nothing new (304s), nothing written.
    second = cycle(agent)
    assert second.outcomes == [] and agent.installs == [first.outcomes[0].manifest]
    # The delivery service saw the install.
    assert world.delivery.metric("flashgate_delivery_device_installs_total", fleet="fleet-a",
                                 tier="application") == 1
    table = json.loads(world.delivery.ops("/v1/releases").body)
    assert table["releases"][0]["release"] == "app-1"
    assert table["releases"][0]["devicesInstalled"] == 1
    # A new agent on the same files (a reboot) knows it all.
    again = world.agent("dev-1")
    assert again.store == agent.store and counter(again) == 3
    assert cycle(again).outcomes[0].action == "unchanged"


def refusal_cases() -> list[Any]:
    return [
        pytest.param("unknown key", "UnknownKey", id="unknown-key"),
        pytest.param("key of another tier", "KeyNotTrustedForTier", id="other-tier-key"),
        pytest.param("revoked key", "KeyRevoked", id="revoked-key"),
        pytest.param("rollback", "RollbackRejected", id="rollback"),
        pytest.param("fast forward", "FastForwardRejected", id="fast-forward"),
        pytest.param("another fleet", "ManifestMismatch", id="other-fleet"),
        pytest.param("replaced bytes", "HashMismatch", id="hash-mismatch"),
        pytest.param("short body", "SizeMismatch", id="short-body"),
        pytest.param("endless body", "SizeMismatch", id="endless-body"),
        pytest.param("trickling body", "ArtifactUnavailable", id="trickling-body"),
        pytest.param("refused download", "ArtifactUnavailable", id="refused-download"),
        pytest.param("larger than the slot", "SizeMismatch", id="larger-than-slot"),
    ]


@pytest.mark.parametrize(("case", "reason"), refusal_cases())
def test_a_bad_release_is_refused_and_nothing_is_written(world: World, case: str,
                                                         reason: str) -> None:
    app, boot, stranger = (generate(Algorithm.ED25519) for _ in range(3))
    endorsements = [world.endorse(app), world.endorse(boot, Tier.BOOTLOADER)]
    world.publish_bundle(endorsements)
    world.publish_release("app-1", IMAGE, [app], security_version=5)
    agent = world.agent("dev-2")
    assert cycle(agent).outcomes[0].action == "installed"
    before = (slot_files(agent), boot_control(agent), counter(agent))

    signers, data, options = [app], os.urandom(5_000), {"security_version": 6}
    if case == "unknown key":
        signers = [stranger]
    elif case == "key of another tier":
        signers = [boot]
    elif case == "revoked key":
        world.publish_bundle([], [world.revoke(app)])
    elif case == "rollback":
        options = {"security_version": 4}
    elif case == "fast forward":
        options = {"security_version": 5 + 101}
    elif case == "another fleet":
        options["signed_fleet"] = "fleet-b"
    elif case == "replaced bytes":
        options["served"] = os.urandom(len(data))
    elif case == "short body":
        options["served"] = data[:-1]
    elif case == "endless body":
        options["served"] = Endless()
    elif case == "trickling body":
        options["served"] = Trickle(b"x" * 10, every=0.2, seconds=30)
    elif case == "refused download":
        options["served"] = Refuse(403)
    elif case == "larger than the slot":
        data = os.urandom((1 << 20) + 1)
    world.publish_release("app-2", data, signers, **options)

    report = cycle(agent)
    assert [(o.release, str(o.reason)) for o in report.outcomes] == [("app-2", reason)], \
        report.outcomes
    assert (slot_files(agent), boot_control(agent), counter(agent)) == before
    assert not list((agent.state / "staging").iterdir())
    status = world.delivery.service.book.devices[("fleet-a", "dev-2")]
    assert status == (frozenset({("application", "app-1")}), ("app-2", "application", reason))
    assert world.delivery.metric("flashgate_delivery_device_rejections_total",
                                 fleet="fleet-a", tier="application", reason=reason) == 1


def test_a_download_that_fails_is_tried_with_a_fresh_job_document(world: World) -> None:
    app = generate(Algorithm.ED25519)
    world.publish_bundle([world.endorse(app)])
    world.publish_release("app-1", IMAGE, [app], served=[Refuse(403), IMAGE])  # type: ignore[arg-type]
    agent = world.agent("dev-3")
    report = cycle(agent)
    assert report.fresh_urls == 1 and report.outcomes[0].action == "installed"


def test_a_failed_download_is_tried_again_at_the_next_poll(world: World) -> None:
    app = generate(Algorithm.ED25519)
    world.publish_bundle([world.endorse(app)])
    world.publish_release("app-1", IMAGE, [app], served=os.urandom(len(IMAGE)))
    agent = world.agent("dev-4", artifacts={**world.config("dev-4")["artifacts"], "attempts": 1})
    assert str(cycle(agent).outcomes[0].reason) == "HashMismatch"
    world.host.artifacts["app-1"] = IMAGE  # the store is repaired; the document is the same
    assert cycle(agent).outcomes[0].action == "installed"


def test_the_trust_store_changes_only_through_root_signed_entries(world: World) -> None:
    app, impostor = generate(Algorithm.ED25519), generate(Algorithm.ED25519)
    world.publish_bundle([world.endorse(app)])
    agent = world.agent("dev-5")
    cycle(agent)
    stored = (agent.state / "trust-store.json").read_text()
    # A bundle that drops the key, and adds one endorsed by a non-root key: nothing changes.
    world.publish_bundle([world.endorse(impostor, signer=app)])
    report = cycle(agent)
    assert report.bundle is not None and report.bundle.ignored[0][1].startswith("UnknownKey")
    assert (agent.state / "trust-store.json").read_text() == stored
    world.publish_release("app-1", IMAGE, [app])
    assert cycle(agent).outcomes[0].action == "installed"
    world.publish_release("app-2", IMAGE[:100], [impostor], security_version=2)
    assert str(cycle(agent).outcomes[0].reason) == "UnknownKey"


def test_the_delivery_service_being_down_changes_nothing(world: World) -> None:
    app = generate(Algorithm.ED25519)
    world.publish_bundle([world.endorse(app)])
    agent = world.agent("dev-6", delivery={**world.config("dev-6")["delivery"],
                                          "url": "https://127.0.0.1:9"})
    report = cycle(agent)
    assert report.errors and report.outcomes == [] and not report.reported
    assert agent.store.keys == {}


def test_whatever_a_hostile_delivery_path_answers_changes_nothing(world: World) -> None:
    """The device talks to an attacker's server (hack/hostile.py): malformed documents, a bad
    release name, answers too large to read. Refused or ignored; nothing written."""
    app = generate(Algorithm.ED25519)
    world.publish_bundle([world.endorse(app)])
    world.publish_release("app-1", IMAGE, [app])
    agent = world.agent("dev-7")
    assert cycle(agent).outcomes[0].action == "installed"
    world.publish_release("app-2", IMAGE[:500], [app], security_version=2)
    genuine = json.loads(world.jobs["application"])
    before = (slot_files(agent), boot_control(agent), counter(agent), agent.store)
    # The attacker answers with the delivery service's own certificate (stolen).
    attacker = HostileDelivery(world.pki.server_cert, world.pki.server_key).start()
    agent.client.base_url = attacker.url
    channel = ("fleet-a", "gw-3000", "stable")
    answers: list[tuple[Any, dict[str, Any] | None]] = [
        (b"{not json", None),
        (b"[" + b"1," * (1 << 20) + b"1]", None),  # more than a device reads
        ({"kind": "TrustBundle", "endorsements": "everything", "revocations": [7]},
         {"application": {"release": "../../etc", "signatures": "not a list"}}),
        ({"kind": "TrustBundle"}, {"application": {"release": "x", "signatures": []},
                                   "os": ["not", "a", "job"]}),  # no os slot: not looked at
        # A genuine release, its artifact pointed elsewhere than https.
        (None, {"application": {**genuine, "artifact": {"url": "http://localhost/app-2"}}}),
        (None, {"application": {**genuine, "artifact": {"url": "s3://bucket/app-2.bin"}}}),
    ]
    try:
        for bundle, jobs in answers:
            attacker.serve(bundle=bundle, channels={channel: jobs} if jobs else None)
            agent.bundle_etag = agent.channel_etag = None  # what it answers is new each time
            report = cycle(agent)
            assert not [o for o in report.outcomes if o.action == "installed"]
    finally:
        attacker.stop()
    assert (slot_files(agent), boot_control(agent), counter(agent), agent.store) == before
    rejections = [r["lastRejection"] for _, r in attacker.reports if "lastRejection" in r]
    assert {(r["release"], r["reason"]) for r in rejections} == {
        ("unnamed", "SignatureInvalid"), ("x", "ThresholdNotMet"),
        ("app-2", "ArtifactURLNotAllowed")}
