"""What a device decides (flashgate/trust/device.py): its trust store from trust bundles, and the
checks of a job document before the download; and the test vectors from a device's side.

Keys are made at test time; the device's clock is an explicit `now`.
"""
from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest

from flashgate.signing.filekeys import KeySigner, generate
from flashgate.trust import (
    CT_KEY,
    CT_RELEASE,
    CT_REVOCATION,
    Algorithm,
    KeyEndorsement,
    Policy,
    Reason,
    ReleaseManifest,
    Revocation,
    Tier,
    check_artifact,
    root_key,
    sign1,
)
from flashgate.trust.device import (
    MAX_KEYS,
    TrustStore,
    apply_bundle,
    check_job,
    expire,
    manifest_digest,
    raised_counter,
)

from .test_vectors import floor_for, run_release_case, signer_for, vectors

FLEET = "fleet-a"
NOW = 1_750_000_000
DAY = 86400
IMAGE = b"application image " * 100


def b64(envelope: bytes) -> str:
    return base64.b64encode(envelope).decode()


class Root:
    def __init__(self) -> None:
        self.signer = generate(Algorithm.ED25519)
        self.record = root_key(self.signer.spki_der, self.signer.algorithm)

    def endorse(self, key: KeySigner, tier: Tier = Tier.APPLICATION, *, fleet: str = FLEET,
                not_before: int = NOW - DAY, not_after: int = NOW + 30 * DAY,
                signer: KeySigner | None = None) -> str:
        payload = KeyEndorsement(fleet, tier, bytes.fromhex(key.key_id), key.algorithm,
                                 key.spki_der, not_before, not_after).to_cbor()
        return b64(sign1(signer or self.signer, CT_KEY, payload))

    def revoke(self, key: KeySigner, *, fleet: str = FLEET, signer: KeySigner | None = None
               ) -> str:
        payload = Revocation(fleet, bytes.fromhex(key.key_id), NOW, "leaked").to_cbor()
        return b64(sign1(signer or self.signer, CT_REVOCATION, payload))


def bundle(endorsements: list[str] = (), revocations: list[str] = (),  # type: ignore[assignment]
           tier: str = "application") -> dict[str, Any]:
    return {"apiVersion": "ota.flashgate.dev/v1alpha1", "kind": "TrustBundle", "fleet": FLEET,
            "endorsements": {tier: list(endorsements)}, "revocations": list(revocations)}


def release(key: KeySigner, *, security_version: int = 3, tier: Tier = Tier.APPLICATION,
            fleet: str = FLEET, product: str = "gw-3000", data: bytes = IMAGE) -> list[str]:
    manifest = ReleaseManifest(fleet, product, tier, "1.0.0", security_version, "app.bin",
                               len(data), hashlib.sha256(data).digest())
    return [b64(sign1(key, CT_RELEASE, manifest.to_cbor()))]


@pytest.fixture
def root() -> Root:
    return Root()


def store_with(root: Root, *entries: str, revocations: tuple[str, ...] = (),
               now: int = NOW) -> TrustStore:
    return apply_bundle(TrustStore(), bundle(list(entries), list(revocations)), FLEET,
                        [root.record], now).store


def job(store: TrustStore, root: Root, envelopes: list[str], *, counter: int = 2,
        tier: Tier = Tier.APPLICATION, policy: Policy | None = None, now: int = NOW) -> Any:
    return check_job(envelopes, fleet=FLEET, product="gw-3000", tier=tier,
                     keyring=store.keyring([root.record]), policy=policy or Policy(),
                     counter=counter, now=now)


# --- the trust store ---------------------------------------------------------------------------

def test_endorsed_keys_enter_with_the_signed_tier_and_validity(root: Root) -> None:
    app, boot = generate(Algorithm.ED25519), generate(Algorithm.ES256)
    # The bundle's grouping says "application" for both: only the signed payload counts.
    update = apply_bundle(TrustStore(), bundle([root.endorse(app),
                                                root.endorse(boot, Tier.BOOTLOADER)]),
                          FLEET, [root.record], NOW)
    assert set(update.added) == {app.key_id, boot.key_id} and not update.ignored
    keys = update.store.keys
    assert keys[boot.key_id].tier == Tier.BOOTLOADER
    assert keys[boot.key_id].algorithm == Algorithm.ES256
    assert (keys[app.key_id].not_before, keys[app.key_id].not_after) == (NOW - DAY,
                                                                         NOW + 30 * DAY)


@pytest.mark.parametrize(("what", "why"), [
    ("non-root signer", "UnknownKey"), ("other fleet", "ManifestMismatch"),
    ("another content type", "SignatureInvalid"), ("garbage", "SignatureInvalid"),
    ("not text", "not base64 text")])
def test_an_entry_that_does_not_verify_changes_nothing(root: Root, what: str, why: str) -> None:
    key, impostor = generate(Algorithm.ED25519), generate(Algorithm.ED25519)
    endorsement, revocation = {
        "non-root signer": (root.endorse(key, signer=impostor),
                            root.revoke(key, signer=impostor)),
        "other fleet": (root.endorse(key, fleet="fleet-b"), root.revoke(key, fleet="fleet-b")),
        "another content type": (root.revoke(key), root.endorse(key)),
        "garbage": ("bm90IGFuIGVudmVsb3Bl", "bm90IGFuIGVudmVsb3Bl"),
        "not text": ({"keyId": key.key_id}, {"keyId": key.key_id}),
    }[what]
    before = store_with(root, root.endorse(generate(Algorithm.ED25519)))
    update = apply_bundle(before, bundle([endorsement], [revocation]),  # type: ignore[list-item]
                          FLEET, [root.record], NOW)
    assert update.store is before
    assert [label for label, _ in update.ignored] == ["revocations[0]",
                                                       "endorsements.application[0]"]
    assert all(reason.startswith(why) for _, reason in update.ignored), update.ignored


def test_a_bundle_that_drops_keys_removes_nothing(root: Root) -> None:
    key = generate(Algorithm.ED25519)
    store = store_with(root, root.endorse(key))
    for empty in (bundle(), {"kind": "TrustBundle"}, None, [], "garbage"):
        update = apply_bundle(store, empty, FLEET, [root.record], NOW)
        assert update.store is store and not update.revoked and not update.retired
    assert job(store, root, release(key)).accepted


def test_root_signed_revocation_is_the_only_early_removal(root: Root) -> None:
    leaked, other = generate(Algorithm.ED25519), generate(Algorithm.ED25519)
    store = store_with(root, root.endorse(leaked), root.endorse(other))
    # A revocation not signed by the root is ignored, whatever it says.
    forged = apply_bundle(store, bundle([], [root.revoke(other, signer=leaked)]), FLEET,
                          [root.record], NOW)
    assert forged.store is store and forged.ignored[0][1].startswith("UnknownKey")
    update = apply_bundle(store, bundle([root.endorse(other)], [root.revoke(leaked)]), FLEET,
                          [root.record], NOW)
    assert update.revoked == (leaked.key_id,)
    store = update.store
    verdict = job(store, root, release(leaked))
    assert (verdict.accepted, verdict.reason) == (False, Reason.KeyRevoked)
    assert job(store, root, release(other)).accepted
    # The endorsement of the revoked key, served again, brings nothing back.
    again = apply_bundle(store, bundle([root.endorse(leaked)]), FLEET, [root.record], NOW)
    assert again.store is store
    assert job(again.store, root, release(leaked)).reason == Reason.KeyRevoked


def test_a_key_revoked_before_it_was_known_is_never_trusted(root: Root) -> None:
    key = generate(Algorithm.ED25519)
    store = store_with(root, revocations=(root.revoke(key),))
    assert store.revoked.keys() == {key.key_id} and not store.keys
    store = apply_bundle(store, bundle([root.endorse(key)]), FLEET, [root.record], NOW).store
    assert store.trusted(NOW) == []
    assert job(store, root, release(key)).reason == Reason.KeyRevoked


def test_keys_past_not_after_leave_by_the_device_clock_and_stay_out(root: Root) -> None:
    key = generate(Algorithm.ED25519)
    endorsement = root.endorse(key, not_after=NOW + 10)
    store = store_with(root, endorsement)
    assert job(store, root, release(key), now=NOW + 9).accepted
    later = expire(store, NOW + 10)
    assert later.retired == (key.key_id,) and key.key_id not in later.store.keys
    # Another endorsement of the same key with a later notAfter cannot bring it back.
    again = apply_bundle(later.store, bundle([root.endorse(key, not_after=NOW + 99 * DAY)]),
                         FLEET, [root.record], NOW + 11)
    assert again.store is later.store
    assert job(again.store, root, release(key), now=NOW + 11).reason == Reason.KeyExpired
    # A revoked key that expires is remembered as retired, its revocation no longer needed.
    revoked = store_with(root, endorsement, revocations=(root.revoke(key),))
    assert key.key_id in revoked.revoked
    gone = expire(revoked, NOW + 10).store
    assert key.key_id not in gone.revoked and [r.key_id for r in gone.retired] == [key.key_id]


def test_a_second_endorsement_only_narrows_and_two_tiers_trust_neither(root: Root) -> None:
    key = generate(Algorithm.ED25519)
    store = store_with(root, root.endorse(key, not_after=NOW + 5 * DAY))
    wider = apply_bundle(store, bundle([root.endorse(key, not_after=NOW + 99 * DAY)]), FLEET,
                         [root.record], NOW).store
    assert wider.keys[key.key_id].not_after == NOW + 5 * DAY
    both = apply_bundle(store, bundle([root.endorse(key, Tier.BOOTLOADER)]), FLEET,
                        [root.record], NOW)
    assert both.retired == (key.key_id,) and "trusted for neither" in both.ignored[0][1]
    assert job(both.store, root, release(key)).reason == Reason.KeyExpired


def test_the_store_is_bounded(root: Root) -> None:
    keys = [generate(Algorithm.ED25519) for _ in range(MAX_KEYS + 2)]
    update = apply_bundle(TrustStore(), bundle([root.endorse(k) for k in keys]), FLEET,
                          [root.record], NOW)
    assert len(update.store.keys) == MAX_KEYS
    assert [why for _, why in update.ignored] == [f"the store holds {MAX_KEYS} keys already"] * 2


def test_the_store_round_trips_through_json(root: Root) -> None:
    key, gone, revoked = (generate(a) for a in (Algorithm.ES256, Algorithm.ED25519,
                                                 Algorithm.ED25519))
    store = store_with(root, root.endorse(key), root.endorse(gone, not_after=NOW + 1),
                       root.endorse(revoked), revocations=(root.revoke(revoked),))
    store = expire(store, NOW + 1).store
    assert TrustStore.from_json(store.to_json()) == store
    with pytest.raises(ValueError, match="not a trust store"):
        TrustStore.from_json({"keys": [{"keyId": key.key_id}]})


# --- a job document, before the download -------------------------------------------------------

def test_a_good_release_is_accepted_and_identified_by_its_manifest(root: Root) -> None:
    key = generate(Algorithm.ED25519)
    store = store_with(root, root.endorse(key))
    verdict = job(store, root, release(key, security_version=3), counter=2)
    assert verdict.accepted and verdict.key_ids == (key.key_id,)
    assert verdict.manifest is not None
    assert manifest_digest(verdict.manifest) == hashlib.sha256(
        verdict.manifest.to_cbor()).hexdigest()
    assert check_artifact(verdict.manifest, len(IMAGE), hashlib.sha256(IMAGE).digest(),
                          oversized=False).accepted


@pytest.mark.parametrize(("change", "reason"), [
    ({"fleet": "fleet-b"}, Reason.ManifestMismatch),
    ({"product": "gw-9000"}, Reason.ManifestMismatch),
    ({"security_version": 1}, Reason.RollbackRejected),
    ({"security_version": 2 + 101}, Reason.FastForwardRejected),
])
def test_what_is_signed_must_be_for_this_device_and_above_its_counter(
        root: Root, change: dict[str, Any], reason: Reason) -> None:
    key = generate(Algorithm.ED25519)
    store = store_with(root, root.endorse(key))
    verdict = job(store, root, release(key, **change), counter=2)
    assert (verdict.accepted, verdict.reason) == (False, reason), verdict.message
    assert verdict.manifest is not None and verdict.key_ids == (key.key_id,)


def test_equal_to_the_counter_is_allowed_and_the_jump_is_the_devices_own(root: Root) -> None:
    key = generate(Algorithm.ED25519)
    store = store_with(root, root.endorse(key))
    assert job(store, root, release(key, security_version=2), counter=2).accepted
    strict = Policy(max_security_version_jump=1)
    assert job(store, root, release(key, security_version=4), counter=2,
               policy=strict).reason == Reason.FastForwardRejected


def test_a_key_of_another_tier_and_the_devices_threshold(root: Root) -> None:
    app, boot1, boot2 = (generate(Algorithm.ED25519) for _ in range(3))
    store = store_with(root, root.endorse(app), root.endorse(boot1, Tier.BOOTLOADER),
                       root.endorse(boot2, Tier.BOOTLOADER))
    # An application key's valid signature over a bootloader manifest.
    stolen = release(app, tier=Tier.BOOTLOADER)
    assert job(store, root, stolen, tier=Tier.BOOTLOADER).reason == Reason.KeyNotTrustedForTier
    # Served in the application slot instead: the signed tier is not the slot's.
    assert job(store, root, stolen).reason == Reason.ManifestMismatch
    two = Policy(thresholds={Tier.BOOTLOADER: 2})
    one = release(boot1, tier=Tier.BOOTLOADER)
    both = one + release(boot2, tier=Tier.BOOTLOADER)
    assert job(store, root, one, tier=Tier.BOOTLOADER, policy=two).reason == \
        Reason.ThresholdNotMet
    assert job(store, root, both, tier=Tier.BOOTLOADER, policy=two).accepted


def test_the_counter_is_raised_never_lowered() -> None:
    assert raised_counter(2, 5) == 5
    assert raised_counter(5, 5) == 5
    assert raised_counter(7, 5) == 7


# --- the test vectors, as a device sees them ---------------------------------------------------

def test_a_device_reaches_the_vectors_verdicts() -> None:
    """The store is built from a bundle of the vectors' endorsements (and a root-signed
    revocation of the key they mark revoked); every release case goes through `check_job` with
    the floor as the device's counter, then `check_artifact`. The one case a device decides
    differently is a version that differs from a resource's: a device has no resource, the
    signed version is all there is."""
    v = vectors()
    root_signer = signer_for("root")
    root = root_key(root_signer.spki_der, root_signer.algorithm)
    revoked = [name for name, key in v["keys"].items() if key.get("revoked")]
    revocations = [b64(sign1(root_signer, CT_REVOCATION, Revocation(
        v["fleet"], bytes.fromhex(v["keys"][name]["keyId"]), v["now"], "").to_cbor()))
        for name in revoked]
    endorsements = [b64(bytes.fromhex(e)) for e in v["endorsements"].values()]
    store = apply_bundle(TrustStore(), {"kind": "TrustBundle", "endorsements": {
        "any": endorsements}, "revocations": revocations},
        v["fleet"], [root], v["now"]).store
    assert set(store.revoked) == {v["keys"][name]["keyId"] for name in revoked}
    policy = Policy(thresholds={Tier(t): k for t, k in v["policy"]["thresholds"].items()},
                    max_security_version_jump=v["policy"]["maxSecurityVersionJump"])
    for case in v["release_cases"]:
        declared = case["release"]
        verdict = check_job([bytes.fromhex(s) for s in case["signatures"]],
                            fleet=declared.get("fleet", v["fleet"]),
                            product=declared["product"], tier=Tier(declared["tier"]),
                            keyring=store.keyring([root]), policy=policy,
                            counter=floor_for(declared["product"], declared["tier"]) or 0,
                            now=v["now"])
        if verdict.accepted and case["artifact_hex"] is not None:
            assert verdict.manifest is not None
            data = bytes.fromhex(case["artifact_hex"])
            verdict = check_artifact(verdict.manifest, len(data),
                                     hashlib.sha256(data).digest(), oversized=False)
        cluster = run_release_case(case)
        if case["name"] == "manifest-mismatch-version":
            assert (cluster.reason, verdict.accepted) == (Reason.ManifestMismatch, True)
            continue
        assert (verdict.accepted, verdict.reason) == (case["expect"] == "accept",
                                                      case.get("reason")), case["name"]
