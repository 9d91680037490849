"""The chaos loop's invariant checker (hack/chaos/invariants.py) on histories made by hand: each
invariant holds for a sound history and fails for the one broken on purpose, so a quiet chaos run
means something. Keys, endorsements and envelopes are real; the ledgers are made by the operator's
own pure `ledger.record`."""
from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from chaos.invariants import (
    BUNDLE_CONFIGMAP,
    BUNDLE_KEY,
    CHANNEL,
    EVENT,
    FLOOR,
    KEY,
    RELEASE,
    REVOCATIONS,
    DeliveryView,
    Fault,
    History,
    Observation,
    Scrape,
    Setting,
    Trust,
    _release_differences,
    check_announcements,
    check_channel_order,
    check_floors,
    check_history,
    check_metrics,
    check_publications,
    check_revocations,
    deadline,
    delivery_differences,
    differences,
    expected_bundle,
)

from flashgate.api import FirmwareReleaseSpec
from flashgate.operator import ledger
from flashgate.signing.filekeys import KeySigner, generate
from flashgate.signing.resources import release_doc, signing_key_doc
from flashgate.trust import Algorithm, Policy, Tier
from flashgate.trust.cose import CT_KEY, CT_RELEASE, sign1
from flashgate.trust.keyring import root_key
from flashgate.trust.payloads import KeyEndorsement, ReleaseManifest

FLEET = "fleet-a"
NOW = 1_800_000_000  # the operator's clock in these histories (no offset: wall time too)
ROOT = generate(Algorithm.ED25519)


@dataclass
class Made:
    """A history being written, with what the checker must know."""

    history: History = field(default_factory=History)
    served: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    rvs: itertools.count[int] = field(default_factory=lambda: itertools.count(10))
    floors: dict[str, Any] = field(default_factory=dict)
    signers: dict[str, KeySigner] = field(default_factory=dict)

    @property
    def setting(self) -> Setting:
        return Setting(roots=(root_key(ROOT.spki_der, ROOT.algorithm),),
                       policy=Policy({Tier.BOOTLOADER: 2}, 100), served=self.served)

    def see(self, kind: str, obj: dict[str, Any], seen: float, event: str = "MODIFIED") -> int:
        rv = next(self.rvs)
        obj = {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(rv)}}
        self.history.add(Observation(seen, kind, event, FLEET, obj["metadata"]["name"], rv, obj))
        return rv

    def key(self, name: str, seen: float, *, tier: Tier = Tier.APPLICATION,
            signer: KeySigner | None = None, revoked: bool = False,
            phase: str = "Active", **rotation: Any) -> KeySigner:
        signer = self.signers[name] = signer or generate(Algorithm.ED25519)
        endorsement = KeyEndorsement(fleet=FLEET, tier=tier, key_id=bytes.fromhex(signer.key_id),
                                     algorithm=signer.algorithm, public_key=signer.spki_der,
                                     not_before=NOW - 3600, not_after=NOW + 86400)
        doc = signing_key_doc(name=name, fleet=FLEET, tier=tier, algorithm=signer.algorithm,
                              public_pem=signer.public_pem, not_before=NOW - 3600,
                              not_after=NOW + 86400,
                              endorsement=sign1(ROOT, CT_KEY, endorsement.to_cbor()),
                              **rotation)
        doc["spec"]["revoked"] = revoked
        doc["metadata"].update(uid=f"uid-{name}", generation=1)
        doc["status"] = {"phase": "Revoked" if revoked else phase}
        self.see(KEY, doc, seen)
        return signer

    def release(self, name: str, signer: KeySigner, seen: float, *, security_version: int = 1,
                tampered: bool = False, phase: str | None = None) -> dict[str, Any]:
        data = f"image {name}".encode() * 100
        manifest = ReleaseManifest(fleet=FLEET, product="gw", tier=Tier.APPLICATION,
                                   version="1.0.0", security_version=security_version,
                                   artifact_name=f"{name}.bin", artifact_size=len(data),
                                   artifact_sha256=hashlib.sha256(data).digest())
        url = f"file:///artifacts/{name}.bin"
        served = data[:-1] + b"!" if tampered else data
        self.served[url] = (len(served), hashlib.sha256(served).digest())
        doc = release_doc(name=name, manifest=manifest, url=url, channel="stable",
                          signatures=[sign1(signer, CT_RELEASE, manifest.to_cbor())])
        doc["metadata"].update(uid=f"uid-{name}", generation=1)
        if phase:
            doc["status"] = {"phase": phase, "observedGeneration": 1}
        self.see(RELEASE, doc, seen)
        return doc

    def publish(self, release: dict[str, Any], key_ids: list[str], seen: float,
                published_at: int = NOW, ignore_floor: bool = False) -> dict[str, Any]:
        """The floor version that records `release` (ledger.record, as the gate does; as a
        broken gate would with `ignore_floor`)."""
        spec = FirmwareReleaseSpec.model_validate(release["spec"])
        name = release["metadata"]["name"]
        at = datetime.fromtimestamp(published_at, UTC)
        candidate = ledger.Candidate(
            release=name, uid=release["metadata"]["uid"], channel=spec.channel,
            manifest_sha256=ledger.manifest_digest(FLEET, spec),
            security_version=spec.security_version, key_ids=tuple(key_ids),
            document=ledger.job_document(fleet=FLEET, name=name, spec=spec, published_at=at))
        current = self.floors.get("gw.application")
        if current is not None and ignore_floor:
            current = {**current, "spec": {**current["spec"], "securityVersion": 0}}
        from flashgate.api import RollbackFloor
        result = ledger.record(RollbackFloor.model_validate(current) if current else None,
                               fleet=FLEET, product="gw", tier=Tier.APPLICATION,
                               candidate=candidate, now=at)
        assert isinstance(result, ledger.Recorded)
        floor = result.floor.to_k8s()
        self.floors["gw.application"] = floor
        self.see(FLOOR, floor, seen)
        return floor

    def floor(self, security_version: int, seen: float) -> None:
        floor = dict(self.floors.get("gw.application") or
                     ledger.new_floor(FLEET, "gw", Tier.APPLICATION, 0).to_k8s())
        floor["spec"] = {**floor["spec"], "securityVersion": security_version}
        self.floors["gw.application"] = floor
        self.see(FLOOR, floor, seen)

    def channel(self, documents: dict[str, str], seen: float) -> None:
        self.see(CHANNEL, {"apiVersion": "v1", "kind": "ConfigMap",
                           "metadata": {"name": "channel.gw.stable", "namespace": FLEET},
                           "data": documents}, seen)

    def head_document(self) -> str:
        return str(self.floors["gw.application"]["status"]["publications"][-1]["document"])

    def event(self, uid: str, seen: float, name: str | None = None,
              instance: str = "op-1") -> None:
        self.see(EVENT, {"metadata": {"name": name or f"flashgate.{uid}.published",
                                      "namespace": FLEET},
                         "reason": "Published", "involvedObject": {"uid": uid},
                         "reportingInstance": instance}, seen, event="ADDED")


# ---- 1. every publication is one the trust core accepts ---------------------------------------

def test_a_sound_publication_passes() -> None:
    made = Made()
    app = made.key("app", 100)
    release = made.release("r1", app, 101)
    made.publish(release, [app.key_id], 102)
    assert check_publications(made.history, made.setting) == []


def test_a_published_tampered_artifact_is_found() -> None:
    made = Made()
    app = made.key("app", 100)
    made.publish(made.release("r1", app, 101, tampered=True), [app.key_id], 102)
    [violation] = check_publications(made.history, made.setting)
    assert violation.invariant == "published-untrusted" and "HashMismatch" in violation.detail


def test_a_publication_below_the_floor_before_it_is_found() -> None:
    made = Made()
    app = made.key("app", 100)
    made.floor(5, 100.5)
    made.publish(made.release("r1", app, 101, security_version=4), [app.key_id], 102,
                 ignore_floor=True)
    [violation] = check_publications(made.history, made.setting)
    assert "RollbackRejected" in violation.detail and "floor before 5" in violation.detail


def test_a_key_of_another_fleet_root_is_untrusted() -> None:
    made = Made()
    stranger = generate(Algorithm.ED25519)
    made.publish(made.release("r1", stranger, 101), [stranger.key_id], 102)
    [violation] = check_publications(made.history, made.setting)
    assert "UnknownKey" in violation.detail


def test_a_revocation_counts_once_its_grace_is_over() -> None:
    made = Made()
    app = made.key("app", 100)
    release = made.release("r1", app, 101)
    made.key("app", 110, signer=app, revoked=True)
    made.publish(release, [app.key_id], 112)  # 2 s later: a race the protocol allows
    assert check_publications(made.history, made.setting) == []
    late = made.release("r2", app, 113)
    made.publish(late, [app.key_id], 130)  # 20 s later: the gate must have known
    [violation] = check_publications(made.history, made.setting)
    assert "KeyRevoked" in violation.detail and "r2" in violation.subject


def test_a_key_that_expired_while_the_release_was_verified_is_tolerated() -> None:
    made = Made()
    app = made.key("app", NOW - 100)
    release = made.release("r1", app, NOW - 50)
    # publishedAt after the key's notAfter, the release created while it was valid
    made.publish(release, [app.key_id], NOW + 86400 + 5, published_at=NOW + 86400 + 2)
    assert check_publications(made.history, made.setting) == []
    old = made.release("r2", app, NOW + 86400 + 10)  # created after the key expired
    made.publish(old, [app.key_id], NOW + 86400 + 12, published_at=NOW + 86400 + 12)
    [violation] = check_publications(made.history, made.setting)
    assert "KeyExpired" in violation.detail


def test_a_clock_set_back_between_the_decision_and_the_record_is_tolerated() -> None:
    """Wall times are the operator's until the jump. The key is valid from NOW - 3600."""
    made = Made()
    app = made.key("app", NOW - 3590)
    release = made.release("r1", app, NOW - 3500)  # decided while the key was valid
    made.history.set_offset(NOW - 3489, -1000.0)  # then the clock is set back 1,000 s
    made.publish(release, [app.key_id], NOW - 3488, published_at=NOW - 4488)
    assert check_publications(made.history, made.setting) == []
    # Created after the jump, when the operator's clock read before the key's notBefore.
    late = made.release("r2", app, NOW - 3400)
    made.publish(late, [app.key_id], NOW - 3390, published_at=NOW - 4390)
    [violation] = check_publications(made.history, made.setting)
    assert "r2" in violation.subject


def test_a_key_its_successor_retired_signs_nothing_unless_the_successor_is_in_doubt() -> None:
    """Wall times here are the operator's (NOW): the release was created after "old" retired."""
    rotation = {"replaces": "old", "overlap": "60s", "activate_at": NOW - 3600}
    made = Made()
    old = made.key("old", NOW - 200)
    made.key("new", NOW - 199, **rotation)
    made.publish(made.release("r1", old, NOW - 100), [old.key_id], NOW)
    [violation] = check_publications(made.history, made.setting)
    assert "retired" in violation.detail
    # A successor revoked retires nothing.
    made = Made()
    old = made.key("old", NOW - 200)
    new = made.key("new", NOW - 199, **rotation)
    made.key("new", NOW - 198, signer=new, revoked=True, **rotation)
    made.publish(made.release("r1", old, NOW - 100), [old.key_id], NOW)
    assert check_publications(made.history, made.setting) == []
    # Nor does one created a moment before: the operator may not have had it verified yet.
    made = Made()
    old = made.key("old", NOW - 200)
    release = made.release("r1", old, NOW - 100)
    made.key("new", NOW - 2, **rotation)
    made.publish(release, [old.key_id], NOW)
    assert check_publications(made.history, made.setting) == []


# ---- 2. a revoked key's document leaves its channel -------------------------------------------

def test_grace_ends_after_the_faults_that_overlap_it() -> None:
    assert deadline(100, []) == 110
    assert deadline(100, [Fault("api-errors", 95, 120)]) == 150
    assert deadline(100, [Fault("api-errors", 50, 60)]) == 110
    assert deadline(100, [Fault("kube-apiserver-kill", 90, 99)]) == 130  # still backing off
    assert deadline(100, [Fault("operator-kill", 105, None)]) == float("inf")
    # Faults one after the other: 30 s without one must pass, time under them does not count.
    steady = [Fault("api-slow", t, t + 5) for t in range(100, 400, 25)]
    assert deadline(100, steady) == 130 + 10  # 20 s before the second, 10 after it


def test_a_revoked_keys_document_may_stay_only_for_the_grace() -> None:
    made = Made()
    app = made.key("app", 100)
    made.publish(made.release("r1", app, 101), [app.key_id], 102)
    made.channel({"application.json": made.head_document()}, 103)
    made.key("app", 200, signer=app, revoked=True)
    assert check_revocations(made.history, now=205) == []
    [violation] = check_revocations(made.history, now=215)
    assert violation.invariant == "revoked-in-channel"
    made.channel({}, 209)  # withdrawn in time
    assert check_revocations(made.history, now=215) == []


def test_a_fault_extends_the_grace() -> None:
    made = Made()
    app = made.key("app", 100)
    made.publish(made.release("r1", app, 101), [app.key_id], 102)
    made.channel({"application.json": made.head_document()}, 103)
    made.key("app", 200, signer=app, revoked=True)
    made.history.faults.append(Fault("kube-apiserver-kill", 198, 220))
    assert check_revocations(made.history, now=245) == []
    assert check_revocations(made.history, now=251)


# ---- 3. floors --------------------------------------------------------------------------------

def test_a_floor_that_decreases_is_found() -> None:
    made = Made()
    made.floor(5, 100)
    made.floor(7, 101)
    assert check_floors(made.history) == []
    made.floor(6, 102)
    assert [v.invariant for v in check_floors(made.history)] == ["floor-decreased"]


def test_a_floor_below_a_published_release_is_found() -> None:
    made = Made()
    app = made.key("app", 100)
    made.publish(made.release("r1", app, 101, security_version=4), [app.key_id], 102)
    made.release("r1", app, 103, security_version=4, phase="Published")
    assert check_floors(made.history) == []
    floor = dict(made.floors["gw.application"])
    floor["spec"] = {**floor["spec"], "securityVersion": 3}
    floor["status"] = {}  # a floor rebuilt from nothing would say 0 or 3
    made.see(FLOOR, floor, 104)
    assert {v.invariant for v in check_floors(made.history)} == {
        "floor-decreased", "floor-below-published"}


# ---- 4. announcements ---------------------------------------------------------------------------

def test_a_second_published_event_is_found() -> None:
    made = Made()
    made.event("uid-r1", 100)
    assert check_announcements(made.history) == []
    made.event("uid-r1", 101, name="r1.17a3b")
    [violation] = check_announcements(made.history)
    assert violation.invariant == "announced-twice"


def test_the_metric_counts_the_events_of_its_process() -> None:
    made = Made()
    made.event("uid-r1", 100, instance="op-1")
    made.event("uid-r2", 100, instance="op-2")
    assert check_metrics(made.history, [Scrape("op-1", {FLEET: 1}, final=True),
                                        Scrape("op-2", {FLEET: 0}, final=False)]) == []
    [missed] = check_metrics(made.history, [Scrape("op-2", {FLEET: 0}, final=True)])
    assert missed.invariant == "metric-miscounted"
    [twice] = check_metrics(made.history, [Scrape("op-1", {FLEET: 2}, final=False)])
    assert "says 2" in twice.detail


# ---- 5. channels move forward, with recorded publications only ---------------------------------

def test_a_channel_that_moves_back_is_found() -> None:
    made = Made()
    app = made.key("app", 100)
    made.publish(made.release("r1", app, 101), [app.key_id], 102)
    first = made.head_document()
    made.publish(made.release("r2", app, 103, security_version=2), [app.key_id], 104)
    second = made.head_document()
    made.channel({"application.json": second}, 105)
    assert check_channel_order(made.history) == []
    made.channel({"application.json": first}, 106)
    [violation] = check_channel_order(made.history)
    assert violation.invariant == "channel-moved-back" and "r1" in violation.detail


def test_a_document_no_ledger_recorded_is_found() -> None:
    made = Made()
    made.channel({"application.json": '{"release": "forged"}'}, 100)
    [violation] = check_channel_order(made.history)
    assert violation.invariant == "channel-unrecorded"


# ---- 6. convergence -------------------------------------------------------------------------------

def converged_world() -> Made:
    made = Made()
    app = made.key("app", 100)
    release = made.release("r1", app, 101)
    made.publish(release, [app.key_id], 102)
    made.channel({"application.json": made.head_document()}, 103)
    made.event("uid-r1", 104)
    made.release("r1", app, 105, phase="Published")
    made.see(REVOCATIONS, {"metadata": {"name": "revocations", "namespace": FLEET},
                           "spec": {"keys": {}}}, 106)
    return made


def bundle_of(made: Made) -> None:
    """The trust bundle the operator would write now."""
    text = expected_bundle(made.history, FLEET, NOW, Trust(made.setting))
    made.see(CHANNEL, {"metadata": {"name": BUNDLE_CONFIGMAP, "namespace": FLEET},
                       "data": {BUNDLE_KEY: text}}, 107)


def test_a_converged_world_has_no_differences() -> None:
    made = converged_world()
    bundle_of(made)
    assert differences(made.history, made.setting, [FLEET], NOW) == []
    assert check_history(made.history, made.setting, now=200) == []


@pytest.mark.parametrize("breakage", ["pending", "channel", "bundle", "event", "key phase"])
def test_each_unconverged_part_is_named(breakage: str) -> None:
    made = converged_world()
    bundle_of(made)
    app = generate(Algorithm.ED25519)
    if breakage == "pending":
        made.release("r2", app, 110)
    elif breakage == "channel":
        made.channel({}, 110)
    elif breakage == "bundle":
        made.key("new", 110)
    elif breakage == "event":
        made.see(EVENT, {"metadata": {"name": "flashgate.uid-r1.published", "namespace": FLEET},
                         "reason": "Published"}, 110, event="DELETED")
        made.history.versions.pop((EVENT, FLEET, "flashgate.uid-r1.published"))
    elif breakage == "key phase":
        made.key("app", 110, signer=made.signers["app"], phase="Retired")
    found = differences(made.history, made.setting, [FLEET], NOW)
    assert found, breakage


def test_a_publication_withdrawn_before_its_announcement_needs_none() -> None:
    """Found by the long chaos run: the gate found the revocation right after its channel write
    and withdrew the release without announcing it (as test_release_gate requires); the checker
    demanded a Published event all the same. A live entry still needs exactly one."""
    from flashgate.api import RollbackFloor
    made = Made()
    app = made.key("app", 100)
    release = made.release("r1", app, 101)
    floor = made.publish(release, [app.key_id], 102)
    made.release("r1", app, 103, phase="Published")
    assert _release_differences(made.history, FLEET, {}) == [
        f"release {FLEET}/r1 was published and has no Published event"]
    withdrawn = ledger.withdraw(RollbackFloor.model_validate(floor), [app.key_id],
                                datetime.fromtimestamp(NOW, UTC))
    assert withdrawn is not None
    made.see(FLOOR, withdrawn.to_k8s(), 104)
    made.release("r1", app, 105, phase="Withdrawn")
    assert _release_differences(made.history, FLEET, {}) == []


# ---- the delivery service serves what was published ----------------------------------------------

def test_the_delivery_service_must_serve_what_was_published() -> None:
    made = Made()
    s3_doc = json.dumps({"release": "r1", "artifact": {"url": "s3://b/r1.bin", "sha256": "ab"}})
    file_doc = json.dumps({"release": "r2", "artifact": {"url": "file:///a/r2.bin"}})
    made.channel({"application.json": s3_doc, "os.json": file_doc}, 100)
    made.see(CHANNEL, {"metadata": {"name": BUNDLE_CONFIGMAP, "namespace": FLEET},
                       "data": {BUNDLE_KEY: "{}"}}, 101)
    presigned = {"release": "r1", "artifact": {
        "url": "https://s3:9000/b/r1.bin?X-Amz-Expires=900&X-Amz-Signature=ff", "sha256": "ab"}}
    view = DeliveryView(bundles={FLEET: "{}"},
                        channels={(FLEET, "gw", "stable"): {"application": presigned}})
    assert delivery_differences(made.history, view) == []  # file:// is never served
    stale = {**presigned, "release": "r0"}
    unsigned = {**presigned, "artifact": {"url": "s3://b/r1.bin", "sha256": "ab"}}
    for jobs, bundle in (({"application": stale}, "{}"), ({"application": unsigned}, "{}"),
                         ({}, "{}"), ({"application": presigned}, None)):
        view = DeliveryView(bundles={FLEET: bundle},
                            channels={(FLEET, "gw", "stable"): jobs})
        assert delivery_differences(made.history, view), (jobs, bundle)


def test_a_history_saved_and_loaded_checks_alike(tmp_path: Path) -> None:
    from chaos.observer import load_history, save_history
    made = converged_world()
    made.history.faults.append(Fault("api-slow", 150, 160))
    made.history.set_offset(150, 7200)
    made.publish(made.release("r2", made.signers["app"], 151, tampered=True),
                 [made.signers["app"].key_id], 152)
    save_history(made.history, tmp_path / "history.jsonl")
    loaded = load_history(tmp_path / "history.jsonl")
    assert (loaded.faults, loaded.offsets) == (made.history.faults, made.history.offsets)
    found = check_history(made.history, made.setting, now=200)
    assert found and check_history(loaded, made.setting, now=200) == found
