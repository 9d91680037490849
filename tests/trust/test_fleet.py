"""A fleet's key ring and retired keys from SigningKey specs (flashgate.trust.fleet), and the
cache of verified endorsements: real keys, real signatures, no I/O."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from typing import Any

import pytest

from flashgate.api import FirmwareReleaseSpec, SigningKeySpec
from flashgate.signing.filekeys import KeySigner, generate
from flashgate.trust import (
    CT_KEY,
    CT_RELEASE,
    CT_REVOCATION,
    ROOT,
    Algorithm,
    KeyEndorsement,
    KeyRecord,
    Reason,
    ReleaseManifest,
    Revocation,
    Tier,
    TrustError,
    sign1,
)
from flashgate.trust.fleet import (
    EndorsementCache,
    FleetKey,
    check_revocation,
    check_signing_key,
    expected_manifest,
    fleet_keyring,
    retired_names,
    signer_key_ids,
)
from flashgate.trust.keyring import root_key

FLEET = "fleet-a"
NOW = 1_800_000_000
NOT_BEFORE, NOT_AFTER = NOW - 86_400, NOW + 365 * 86_400


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def rfc3339(t: int) -> str:
    return datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture(scope="module")
def root() -> KeySigner:
    return generate(Algorithm.ED25519)


@pytest.fixture(scope="module")
def roots(root: KeySigner) -> tuple[KeyRecord, ...]:
    return (root_key(root.spki_der, root.algorithm, name="root"),)


def endorsement(root: KeySigner, key: KeySigner, tier: str, *, fleet: str = FLEET,
                not_before: int = NOT_BEFORE, not_after: int = NOT_AFTER) -> str:
    payload = KeyEndorsement(fleet, Tier(tier), bytes.fromhex(key.key_id), key.algorithm,
                             key.spki_der, not_before, not_after)
    return b64(sign1(root, CT_KEY, payload.to_cbor()))


def spec(root: KeySigner, key: KeySigner, tier: str = "application", *,
         endorsed: str | None = None, not_before: int = NOT_BEFORE,
         not_after: int = NOT_AFTER, **extra: Any) -> SigningKeySpec:
    return SigningKeySpec.model_validate({
        "tier": tier, "algorithm": str(key.algorithm), "publicKey": key.public_pem,
        "notBefore": rfc3339(not_before), "notAfter": rfc3339(not_after),
        "endorsement": endorsed or endorsement(root, key, tier, not_before=not_before,
                                               not_after=not_after), **extra})


def ring_of(roots: tuple[KeyRecord, ...], *keys: FleetKey,
            cache: EndorsementCache | None = None, **kwargs: Any) -> dict[str, KeyRecord]:
    ring = fleet_keyring(FLEET, keys, roots, cache, **kwargs).keyring
    return {r.key_id: r for r in ring if r.tier != ROOT}


# ---- the key ring ---------------------------------------------------------------------------

def test_an_endorsed_key_enters_with_the_payloads_values(root: KeySigner,
                                                         roots: tuple[KeyRecord, ...]) -> None:
    key = generate(Algorithm.ES256)
    ring = fleet_keyring(FLEET, [FleetKey("app", spec(root, key))], roots).keyring
    record = ring.get(key.key_id)
    assert record is not None
    assert (record.tier, record.algorithm, record.not_before, record.not_after, record.name) == (
        Tier.APPLICATION, Algorithm.ES256, NOT_BEFORE, NOT_AFTER, "app")
    assert not record.revoked and not record.retired
    assert ring.roots() == list(roots)


@pytest.mark.parametrize("case", ["impostor", "other fleet", "stretched", "other tier",
                                  "fractions", "bad pem"])
def test_a_key_whose_endorsement_does_not_hold_is_absent(root: KeySigner,
                                                         roots: tuple[KeyRecord, ...],
                                                         case: str) -> None:
    key, impostor = generate(Algorithm.ED25519), generate(Algorithm.ED25519)
    specs = {
        "impostor": lambda: spec(root, key, endorsed=endorsement(impostor, key, "application")),
        "other fleet": lambda: spec(root, key, endorsed=endorsement(root, key, "application",
                                                                    fleet="fleet-b")),
        "stretched": lambda: spec(root, key, endorsed=endorsement(root, key, "application"),
                                  not_after=NOT_AFTER + 10),
        "other tier": lambda: spec(root, key, "os", endorsed=endorsement(root, key,
                                                                          "application")),
        "fractions": lambda: spec(root, key).model_copy(update={
            "not_before": datetime.fromtimestamp(NOT_BEFORE + 0.5, tz=UTC)}),
        "bad pem": lambda: spec(root, key).model_copy(update={
            "public_key": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"}),
    }
    assert ring_of(roots, FleetKey("k", specs[case]())) == {}


def test_distrust_only_removes_trust(root: KeySigner, roots: tuple[KeyRecord, ...]) -> None:
    keys = [generate(Algorithm.ED25519) for _ in range(5)]
    revocation = b64(sign1(root, CT_REVOCATION, Revocation(
        FLEET, bytes.fromhex(keys[2].key_id), NOW - 10, "lost").to_cbor()))
    impostor = generate(Algorithm.ED25519)
    forged = b64(sign1(impostor, CT_REVOCATION, Revocation(
        FLEET, bytes.fromhex(keys[4].key_id), NOW - 10, "forged").to_cbor()))
    ring = ring_of(
        roots,
        FleetKey("flag", spec(root, keys[0]), revoked=True),
        FleetKey("spec", spec(root, keys[1], revoked=True)),
        FleetKey("signed", spec(root, keys[2], revocation=revocation, revoked=True)
                 .model_copy(update={"revoked": False})),  # a root-signed revocation suffices
        FleetKey("retired", spec(root, keys[3]), retired=True),
        FleetKey("forged", spec(root, keys[4], revocation=forged, revoked=True)
                 .model_copy(update={"revoked": False})))
    assert [ring[k.key_id].revoked for k in keys] == [True, True, True, False, False]
    assert [ring[k.key_id].retired for k in keys] == [False, False, False, True, False]


def test_a_root_never_becomes_a_tier_key(root: KeySigner, roots: tuple[KeyRecord, ...]) -> None:
    ring = fleet_keyring(FLEET, [FleetKey("root-as-app", spec(root, root))], roots).keyring
    assert len(ring) == 1 and ring.get(root.key_id) == roots[0]


def test_a_key_endorsed_for_several_tiers_is_trusted_for_none(
        root: KeySigner, roots: tuple[KeyRecord, ...]) -> None:
    key, other = generate(Algorithm.ED25519), generate(Algorithm.ED25519)
    fleet = fleet_keyring(FLEET, [FleetKey("a", spec(root, key, "os")),
                                  FleetKey("b", spec(root, key, "config")),
                                  FleetKey("c", spec(root, other))], roots)
    assert fleet.keyring.get(key.key_id) is None and fleet.keyring.get(other.key_id) is not None
    assert fleet.left_out == (f"key {key.key_id} is endorsed for several tiers (config, os); "
                              "trusted for none",)


def test_duplicates_merge_and_distrust_wins(root: KeySigner,
                                            roots: tuple[KeyRecord, ...]) -> None:
    key = generate(Algorithm.ED25519)
    ring = ring_of(roots, FleetKey("a", spec(root, key)),
                   FleetKey("b", spec(root, key), revoked=True),
                   FleetKey("c", spec(root, key), retired=True))
    merged = ring[key.key_id]
    assert merged.revoked and merged.retired and merged.name == "a"


def test_only_the_named_keys_are_looked_at(root: KeySigner, roots: tuple[KeyRecord, ...]) -> None:
    named, others = generate(Algorithm.ED25519), [generate(Algorithm.ED25519) for _ in range(5)]
    cache = EndorsementCache()
    keys = [FleetKey("named", spec(root, named)),
            *(FleetKey(f"k{i}", spec(root, k)) for i, k in enumerate(others))]
    ring = ring_of(roots, *keys, cache=cache, key_ids={named.key_id})
    assert set(ring) == {named.key_id}
    assert cache.verifications == 1  # the other endorsements were not even verified
    assert set(ring_of(roots, *keys)) == {named.key_id} | {k.key_id for k in others}


def test_signer_key_ids(root: KeySigner) -> None:
    a, b = generate(Algorithm.ED25519), generate(Algorithm.ES256)
    manifest = b"\xa0"  # never decoded here: only the protected header is read
    envelopes = [b64(sign1(a, CT_RELEASE, manifest)), sign1(b, CT_RELEASE, manifest),
                 b64(sign1(root, CT_KEY, manifest)), "AAAA"]
    assert signer_key_ids(envelopes) == {a.key_id, b.key_id}


# ---- one key --------------------------------------------------------------------------------

def test_check_signing_key_reasons(root: KeySigner, roots: tuple[KeyRecord, ...]) -> None:
    key, impostor = generate(Algorithm.ED25519), generate(Algorithm.ED25519)
    good = check_signing_key(spec(root, key, "driver"), FLEET, roots)
    assert good.accepted and good.key_id == key.key_id and good.endorsement is not None
    assert good.endorsement.tier is Tier.DRIVER and good.verdict.key_ids == (root.key_id,)
    cases = {
        Reason.UnknownKey: spec(root, key, endorsed=endorsement(impostor, key, "application")),
        Reason.ManifestMismatch: spec(root, key, "os", endorsed=endorsement(root, key, "config")),
        Reason.SignatureInvalid: spec(root, key, endorsed=b64(b"not an envelope")),
    }
    for reason, given in cases.items():
        check = check_signing_key(given, FLEET, roots)
        assert (check.accepted, check.verdict.reason, check.endorsement) == (False, reason, None)
        assert check.key_id == key.key_id and check.verdict.message.startswith("key endorsement")
    other_fleet = check_signing_key(spec(root, key), "fleet-b", roots)
    assert other_fleet.verdict.reason == Reason.ManifestMismatch
    assert "fleet: declared 'fleet-b', endorsed 'fleet-a'" in other_fleet.verdict.message


def test_check_revocation(root: KeySigner, roots: tuple[KeyRecord, ...]) -> None:
    key, other = generate(Algorithm.ED25519), generate(Algorithm.ED25519)

    def revocation_of(target: KeySigner, by: KeySigner) -> str:
        return b64(sign1(by, CT_REVOCATION, Revocation(
            FLEET, bytes.fromhex(target.key_id), NOW, "stolen").to_cbor()))

    assert check_revocation(spec(root, key), FLEET, roots, key.key_id).verified is None
    ok = check_revocation(spec(root, key, revoked=True, revocation=revocation_of(key, root)),
                          FLEET, roots, key.key_id)
    assert ok.verified is True and ok.message is not None and "stolen" in ok.message
    wrong = check_revocation(spec(root, key, revoked=True, revocation=revocation_of(other, root)),
                             FLEET, roots, key.key_id)
    assert wrong.verified is False and wrong.message is not None
    assert other.key_id in wrong.message
    forged = check_revocation(spec(root, key, revoked=True, revocation=revocation_of(key, key)),
                              FLEET, roots, key.key_id)
    assert forged.verified is False and forged.message is not None
    assert "UnknownKey" in forged.message


# ---- the cache ------------------------------------------------------------------------------

def test_each_endorsement_is_verified_once_per_request(root: KeySigner,
                                                       roots: tuple[KeyRecord, ...]) -> None:
    key, impostor = generate(Algorithm.ED25519), generate(Algorithm.ED25519)
    good = spec(root, key)
    bad = spec(root, key, endorsed=endorsement(impostor, key, "application"))
    uncached = EndorsementCache(max_entries=0)
    ring_of(roots, *(FleetKey(f"g{i}", good) for i in range(3)),
            *(FleetKey(f"b{i}", bad) for i in range(3)), cache=uncached)
    assert uncached.verifications == 2 and len(uncached) == 0


def test_successes_are_cached_across_requests_failures_never(
        root: KeySigner, roots: tuple[KeyRecord, ...]) -> None:
    key, impostor = generate(Algorithm.ED25519), generate(Algorithm.ED25519)
    cache = EndorsementCache()
    good = FleetKey("good", spec(root, key))
    bad = FleetKey("bad", spec(root, key, endorsed=endorsement(impostor, key, "application")))
    for _ in range(3):
        assert set(ring_of(roots, good, cache=cache)) == {key.key_id}
    assert (cache.verifications, cache.hits, len(cache)) == (1, 2, 1)
    for _ in range(3):
        assert ring_of(roots, bad, cache=cache) == {}
    assert (cache.verifications, len(cache)) == (4, 1)


def test_a_cached_success_is_checked_against_each_spec(root: KeySigner,
                                                       roots: tuple[KeyRecord, ...]) -> None:
    """The cache holds the verified payload, not a verdict: a spec that disagrees with it (same
    endorsement, stretched validity) is refused even on a hit."""
    key = generate(Algorithm.ED25519)
    cache = EndorsementCache()
    honest = spec(root, key)
    assert check_signing_key(honest, FLEET, roots, cache).accepted
    stretched = honest.model_copy(update={"not_after": datetime.fromtimestamp(
        NOT_AFTER + 10, tz=UTC)})
    check = check_signing_key(stretched, FLEET, roots, cache)
    assert cache.hits == 1 and check.verdict.reason == Reason.ManifestMismatch


def test_a_cached_success_is_not_reused_for_another_fleet(root: KeySigner,
                                                          roots: tuple[KeyRecord, ...]) -> None:
    key = generate(Algorithm.ED25519)
    cache = EndorsementCache()
    endorsed = spec(root, key)
    assert check_signing_key(endorsed, FLEET, roots, cache).accepted
    elsewhere = check_signing_key(endorsed, "fleet-b", roots, cache)
    assert elsewhere.verdict.reason == Reason.ManifestMismatch
    assert (cache.hits, cache.verifications, len(cache)) == (0, 2, 1)  # no hit, nothing added
    assert fleet_keyring("fleet-b", [FleetKey("k", endorsed)], roots, cache).keyring.get(
        key.key_id) is None


def test_a_cached_success_is_not_reused_for_another_root_set(
        root: KeySigner, roots: tuple[KeyRecord, ...]) -> None:
    key = generate(Algorithm.ED25519)
    other_root = generate(Algorithm.ED25519)
    cache = EndorsementCache()
    endorsed = spec(root, key)
    assert check_signing_key(endorsed, FLEET, roots, cache).accepted
    others = (root_key(other_root.spki_der, other_root.algorithm),)
    assert check_signing_key(endorsed, FLEET, others, cache).verdict.reason == Reason.UnknownKey
    revoked_root = (KeyRecord(**{**roots[0].__dict__, "revoked": True}),)
    assert check_signing_key(endorsed, FLEET, revoked_root,
                             cache).verdict.reason == Reason.KeyRevoked
    assert cache.hits == 0 and cache.verifications == 3
    # Both roots configured: another root set too, so verified again (then cached for it).
    both = (*roots, *others)
    assert check_signing_key(endorsed, FLEET, both, cache).accepted
    assert (cache.hits, cache.verifications, len(cache)) == (0, 4, 2)


def test_the_cache_is_bounded_least_recently_used_first(root: KeySigner,
                                                        roots: tuple[KeyRecord, ...]) -> None:
    keys = [spec(root, generate(Algorithm.ED25519)) for _ in range(3)]
    cache = EndorsementCache(max_entries=2)
    for k in (keys[0], keys[1], keys[0], keys[2]):  # keys[1] is the least recently used
        assert check_signing_key(k, FLEET, roots, cache).accepted
    assert len(cache) == 2 and (cache.verifications, cache.hits) == (3, 1)
    assert check_signing_key(keys[0], FLEET, roots, cache).accepted  # still there
    assert cache.verifications == 3
    assert check_signing_key(keys[1], FLEET, roots, cache).accepted  # was evicted
    assert cache.verifications == 4
    with pytest.raises(ValueError):
        EndorsementCache(max_entries=-1)


# ---- rotation and the declared manifest ------------------------------------------------------

def test_retired_names_follow_the_rotation_state_machine(root: KeySigner) -> None:
    old, new = generate(Algorithm.ED25519), generate(Algorithm.ED25519)
    activation = NOW
    old_spec = spec(root, old)
    new_spec = spec(root, new, not_before=activation, replaces="old", overlap="1h")
    keys: list[tuple[str, SigningKeySpec, bool | None]] = [("old", old_spec, True),
                                                           ("new", new_spec, True)]
    assert retired_names(keys, activation + 3599) == frozenset()  # Retiring: still trusted
    assert retired_names(keys, activation + 3600) == {"old"}
    # A successor whose endorsement failed or is not checked yet retires nothing.
    for endorsed in (False, None):
        assert retired_names([keys[0], ("new", new_spec, endorsed)], activation + 7200) == set()
    # Nor does a revoked one.
    revoked = new_spec.model_copy(update={"revoked": True})
    assert retired_names([keys[0], ("new", revoked, True)], activation + 7200) == set()


def test_expected_manifest_is_the_spec_field_for_field() -> None:
    data = b"firmware"
    release = FirmwareReleaseSpec.model_validate({
        "tier": "os", "product": "gw-3000", "version": "4.2.0", "securityVersion": 9,
        "artifact": {"url": "https://fw.example.com/os.bin", "name": "os.bin",
                     "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)},
        "signatures": []})
    assert expected_manifest(FLEET, release) == ReleaseManifest(
        fleet=FLEET, product="gw-3000", tier=Tier.OS, version="4.2.0", security_version=9,
        artifact_name="os.bin", artifact_size=len(data),
        artifact_sha256=hashlib.sha256(data).digest())


def test_decoded_public_keys_are_remembered_failures_never() -> None:
    key = generate(Algorithm.ES256)
    cache = EndorsementCache(max_entries=1)
    assert cache.public_key(key.public_pem) == key.spki_der
    assert cache.public_key(key.public_pem) is cache.public_key(key.public_pem)  # the same bytes
    junk = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
    for _ in range(2):
        with pytest.raises(TrustError):
            cache.public_key(junk)
    other = generate(Algorithm.ED25519)
    first = cache.public_key(key.public_pem)
    cache.public_key(other.public_pem)  # one entry: the first is dropped
    assert cache.public_key(key.public_pem) is not first and first == key.spki_der
