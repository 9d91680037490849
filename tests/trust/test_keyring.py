"""Payload tables, root-signed endorsements and revocations, and the key ring.

docs/format.md "Key endorsement", "Revocation", "The fleet root"; docs/design.md trust set.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st

from flashgate.signing.filekeys import KeySigner, generate
from flashgate.trust import (
    CT_KEY,
    CT_RELEASE,
    CT_REVOCATION,
    ROOT,
    Algorithm,
    KeyEndorsement,
    KeyRecord,
    KeyRing,
    Reason,
    ReleaseManifest,
    Revocation,
    Tier,
    TrustError,
    encode,
    endorsed_record,
    sign1,
    verify_endorsement,
    verify_revocation,
)

FLEET = "fleet-a"
NOT_BEFORE = 1_700_000_000
NOT_AFTER = 1_800_000_000


@pytest.fixture(scope="module")
def root() -> KeySigner:
    return generate(Algorithm.ED25519)


@pytest.fixture(scope="module")
def roots(root: KeySigner) -> list[KeyRecord]:
    return [root_record(root)]


@pytest.fixture(scope="module", params=list(Algorithm))
def key(request: pytest.FixtureRequest) -> KeySigner:
    return generate(request.param)


def root_record(root: KeySigner, **changes: Any) -> KeyRecord:
    record = KeyRecord(root.key_id, ROOT, root.algorithm, root.spki_der, 0, 2**40, name="root")
    return dataclasses.replace(record, **changes)


def endorsement_of(key: KeySigner, tier: Tier = Tier.APPLICATION) -> KeyEndorsement:
    return KeyEndorsement(
        FLEET, tier, bytes.fromhex(key.key_id), key.algorithm, key.spki_der, NOT_BEFORE, NOT_AFTER
    )


def endorse(root: KeySigner, key: KeySigner, tier: Tier = Tier.APPLICATION) -> bytes:
    return sign1(root, CT_KEY, endorsement_of(key, tier).to_cbor())


def wire(endorsement: KeyEndorsement, **changes: Any) -> bytes:
    """The endorsement's payload with some wire fields changed (may break the table's rules)."""
    data = cbor2.loads(endorsement.to_cbor())
    data.update(changes)
    return encode(data)


def declared(key: KeySigner, **changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "tier": Tier.APPLICATION,
        "algorithm": key.algorithm,
        "public_key": key.spki_der,
        "not_before": NOT_BEFORE,
        "not_after": NOT_AFTER,
    }
    fields.update(changes)
    return fields


# --- payload tables ------------------------------------------------------------------------


def test_payloads_round_trip(key: KeySigner) -> None:
    endorsement = endorsement_of(key)
    assert KeyEndorsement.from_cbor(endorsement.to_cbor()) == endorsement
    revocation = Revocation(FLEET, bytes.fromhex(key.key_id), NOT_BEFORE + 5, "lost laptop")
    assert Revocation.from_cbor(revocation.to_cbor()) == revocation
    assert cbor2.loads(revocation.to_cbor()) == {
        "v": 1,
        "type": "revocation",
        "fleet": FLEET,
        "keyId": bytes.fromhex(key.key_id),
        "revokedAt": NOT_BEFORE + 5,
        "reason": "lost laptop",
    }


@given(
    fleet=st.text(),
    product=st.text(),
    tier=st.sampled_from(Tier),
    version=st.text(),
    security_version=st.integers(0, 2**64 - 1),
    name=st.text(),
    size=st.integers(0, 2**64 - 1),
    sha256=st.binary(min_size=32, max_size=32),
)
def test_release_manifest_round_trip(
    fleet: str,
    product: str,
    tier: Tier,
    version: str,
    security_version: int,
    name: str,
    size: int,
    sha256: bytes,
) -> None:
    manifest = ReleaseManifest(fleet, product, tier, version, security_version, name, size, sha256)
    assert ReleaseManifest.from_cbor(manifest.to_cbor()) == manifest


@pytest.mark.parametrize(
    "changes",
    [
        {"tier": "firmware"},
        {"security_version": -1},
        {"security_version": 2**64},
        {"artifact_size": -1},
        {"artifact_sha256": b"\x00" * 31},
    ],
)
def test_release_manifest_constructor_refuses_values_outside_the_table(
    changes: dict[str, Any],
) -> None:
    fields: dict[str, Any] = {
        "fleet": FLEET,
        "product": "gw",
        "tier": Tier.OS,
        "version": "1",
        "security_version": 1,
        "artifact_name": "a",
        "artifact_size": 1,
        "artifact_sha256": b"\x00" * 32,
    }
    with pytest.raises(ValueError):
        ReleaseManifest(**{**fields, **changes})


def test_endorsement_constructor_enforces_the_tables_rules(key: KeySigner) -> None:
    good = endorsement_of(key)
    other = generate(Algorithm.ED25519 if key.algorithm is Algorithm.ES256 else Algorithm.ES256)
    for changes in (
        {"key_id": b"\x00" * 32},
        {"algorithm": other.algorithm},
        {"not_after": NOT_BEFORE},
        {"tier": ROOT},
        {"public_key": other.spki_der},
    ):
        with pytest.raises(ValueError):
            dataclasses.replace(good, **changes)


# --- endorsements ---------------------------------------------------------------------------


def test_an_endorsed_record_takes_everything_from_the_signed_payload(
    root: KeySigner, roots: list[KeyRecord], key: KeySigner
) -> None:
    record = endorsed_record(endorse(root, key, Tier.DRIVER), FLEET, roots, name="drv")
    assert record == KeyRecord(
        key.key_id, Tier.DRIVER, key.algorithm, key.spki_der, NOT_BEFORE, NOT_AFTER, name="drv"
    )
    flagged = endorsed_record(endorse(root, key), FLEET, roots, revoked=True, retired=True)
    assert flagged.revoked and flagged.retired


def test_verify_endorsement_accepts_what_the_root_endorsed(
    root: KeySigner, roots: list[KeyRecord], key: KeySigner
) -> None:
    verdict = verify_endorsement(endorse(root, key), FLEET, roots, **declared(key))
    assert verdict.accepted, verdict.message
    assert verdict.key_ids == (root.key_id,)
    assert key.key_id in verdict.message


@pytest.mark.parametrize(
    ("field", "value", "name"),
    [
        ("tier", Tier.BOOTLOADER, "tier"),
        ("not_before", NOT_BEFORE - 1, "notBefore"),
        ("not_after", NOT_AFTER + 1, "notAfter"),
        ("public_key", None, "keyId"),
        ("algorithm", None, "algorithm"),
        ("fleet", "fleet-b", "fleet"),
    ],
)
def test_a_spec_differing_from_the_endorsement_is_a_mismatch(
    root: KeySigner, roots: list[KeyRecord], key: KeySigner, field: str, value: Any, name: str
) -> None:
    fields = declared(key)
    fleet = FLEET
    if field == "fleet":
        fleet = value
    elif field == "public_key":
        fields["public_key"] = generate(key.algorithm).spki_der
    elif field == "algorithm":
        fields["algorithm"] = next(a for a in Algorithm if a is not key.algorithm)
    else:
        fields[field] = value
    verdict = verify_endorsement(endorse(root, key), fleet, roots, **fields)
    assert verdict.reason is Reason.ManifestMismatch, verdict.message
    assert f"{name}: declared" in verdict.message


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"keyId": b"\x00" * 32}, "SHA-256(publicKey)"),
        ({"notAfter": NOT_BEFORE}, "notAfter"),
        ({"tier": "root"}, "Tier"),
        ({"algorithm": "ed448"}, "Algorithm"),
        ({"v": 2}, "v is 2"),
        ({"type": "release"}, "type"),
        ({"extra": 1}, "unknown"),
        ({"keyId": "00" * 32}, "keyId"),
    ],
)
def test_a_root_signed_payload_breaking_the_table_is_invalid(
    root: KeySigner, roots: list[KeyRecord], key: KeySigner, changes: dict[str, Any], words: str
) -> None:
    envelope = sign1(root, CT_KEY, wire(endorsement_of(key), **changes))
    verdict = verify_endorsement(envelope, FLEET, roots, **declared(key))
    assert verdict.reason is Reason.SignatureInvalid, verdict.message
    assert words in verdict.message


# An SPKI of an algorithm cryptography knows by OID (1.2.3.4 here) but cannot load.
_UNLOADABLE_SPKI = bytes.fromhex("302a300506032a0304") + bytes.fromhex("032100") + bytes(32)


def test_a_root_signed_public_key_that_cryptography_cannot_load_is_invalid(
    root: KeySigner, roots: list[KeyRecord], key: KeySigner
) -> None:
    changes = {"publicKey": _UNLOADABLE_SPKI, "keyId": hashlib.sha256(_UNLOADABLE_SPKI).digest()}
    envelope = sign1(root, CT_KEY, wire(endorsement_of(key), **changes))
    verdict = verify_endorsement(envelope, FLEET, roots, **declared(key))  # never raises
    assert verdict.reason is Reason.SignatureInvalid, verdict.message
    with pytest.raises(TrustError) as caught:
        endorsed_record(envelope, FLEET, roots)
    assert caught.value.reason is Reason.SignatureInvalid


def test_a_root_signed_small_order_ed25519_key_is_invalid(
    root: KeySigner, roots: list[KeyRecord]
) -> None:
    # The identity point: every (R = [S]B, S) would verify as its signature of anything.
    identity = bytes.fromhex("302a300506032b6570032100") + (1).to_bytes(32, "little")
    changes = {"publicKey": identity, "keyId": hashlib.sha256(identity).digest()}
    envelope = sign1(root, CT_KEY, wire(endorsement_of(root), **changes))
    with pytest.raises(TrustError) as caught:
        endorsed_record(envelope, FLEET, roots)
    assert caught.value.reason is Reason.SignatureInvalid
    assert "small order" in caught.value.message


def _non_canonical_p256(spki: bytes) -> dict[str, bytes]:
    """Other DER spellings of one P-256 key: each would be a second keyId for it."""
    key = serialization.load_der_public_key(spki)
    assert isinstance(key, ec.EllipticCurvePublicKey)
    point = key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
    )
    algorithm = spki[2:23]  # SEQUENCE { id-ecPublicKey, prime256v1 }
    long_form = b"\x30\x81" + spki[1:]  # the outer length in two bytes instead of one
    uncompressed = spki[-65:]
    hybrid = bytes([0x06 | uncompressed[-1] & 1]) + uncompressed[1:]  # X9.62 hybrid form
    return {
        "compressed point": b"\x30\x39" + algorithm + b"\x03\x22\x00" + point,
        "hybrid point": spki[:-65] + hybrid,
        "long-form length": long_form,
        "trailing byte": spki + b"\x00",
    }


@pytest.mark.parametrize(
    "spelling", ["compressed point", "hybrid point", "long-form length", "trailing byte"]
)
def test_a_root_signed_p256_key_in_non_canonical_der_is_invalid(
    root: KeySigner, roots: list[KeyRecord], spelling: str
) -> None:
    key = generate(Algorithm.ES256)
    other = _non_canonical_p256(key.spki_der)[spelling]
    assert other != key.spki_der
    changes = {"publicKey": other, "keyId": hashlib.sha256(other).digest()}
    envelope = sign1(root, CT_KEY, wire(endorsement_of(key), **changes))
    verdict = verify_endorsement(envelope, FLEET, roots, **declared(key, public_key=other))
    assert verdict.reason is Reason.SignatureInvalid, verdict.message
    with pytest.raises(TrustError) as caught:
        endorsed_record(envelope, FLEET, roots)
    assert caught.value.reason is Reason.SignatureInvalid


@pytest.mark.parametrize("content_type", [CT_KEY, CT_REVOCATION])
def test_a_root_signed_payload_with_text_that_is_not_utf8_is_invalid(
    root: KeySigner, roots: list[KeyRecord], key: KeySigner, content_type: str
) -> None:
    if content_type == CT_KEY:
        payload = endorsement_of(key).to_cbor()
    else:
        payload = Revocation(FLEET, bytes.fromhex(key.key_id), NOT_BEFORE, "lost").to_cbor()
    broken = payload.replace(b"\x67fleet-a", b"\x67fleet-\xff")
    assert broken != payload
    with pytest.raises(TrustError) as caught:
        if content_type == CT_KEY:
            endorsed_record(sign1(root, content_type, broken), FLEET, roots)
        else:
            verify_revocation(sign1(root, content_type, broken), FLEET, roots)
    assert caught.value.reason is Reason.SignatureInvalid
    assert "UTF-8" in caught.value.message


def test_an_alg_the_root_does_not_pin_is_invalid(
    root: KeySigner, roots: list[KeyRecord], key: KeySigner
) -> None:
    # The root is an Ed25519 key: an envelope by it that says ES256 (-7) is refused, signature
    # unchecked, whatever it holds.
    liar = _Claiming(root, root.key_id)
    liar.algorithm = Algorithm.ES256
    envelope = sign1(liar, CT_KEY, endorsement_of(key).to_cbor())
    verdict = verify_endorsement(envelope, FLEET, roots, **declared(key))
    assert verdict.reason is Reason.SignatureInvalid
    assert "alg -7" in verdict.message


def test_an_algorithm_not_matching_the_public_key_is_invalid(
    root: KeySigner, roots: list[KeyRecord], key: KeySigner
) -> None:
    other = next(a for a in Algorithm if a is not key.algorithm)
    envelope = sign1(root, CT_KEY, wire(endorsement_of(key), algorithm=str(other)))
    verdict = verify_endorsement(envelope, FLEET, roots, **declared(key, algorithm=other))
    assert verdict.reason is Reason.SignatureInvalid, verdict.message


def test_only_a_root_can_endorse(root: KeySigner, roots: list[KeyRecord], key: KeySigner) -> None:
    tier_key = generate(Algorithm.ED25519)
    envelope = endorse(tier_key, key)
    verdict = verify_endorsement(envelope, FLEET, roots, **declared(key))
    assert verdict.reason is Reason.UnknownKey
    # Even when the caller passes the signer's record among the "roots": it is not of tier root.
    as_tier = KeyRecord(
        tier_key.key_id, Tier.APPLICATION, tier_key.algorithm, tier_key.spki_der, 0, 2**40
    )
    verdict = verify_endorsement(envelope, FLEET, [*roots, as_tier], **declared(key))
    assert verdict.reason is Reason.UnknownKey
    with pytest.raises(TrustError) as caught:
        endorsed_record(envelope, FLEET, [as_tier])
    assert caught.value.reason is Reason.UnknownKey


def test_a_revoked_or_retired_root_endorses_nothing(root: KeySigner, key: KeySigner) -> None:
    envelope = endorse(root, key)
    for flags, reason in (
        ({"revoked": True}, Reason.KeyRevoked),
        ({"retired": True}, Reason.KeyExpired),
    ):
        verdict = verify_endorsement(envelope, FLEET, [root_record(root, **flags)], **declared(key))
        assert verdict.reason is reason


def test_an_endorsement_of_another_content_type_is_invalid(
    root: KeySigner, roots: list[KeyRecord], key: KeySigner
) -> None:
    envelope = sign1(root, CT_RELEASE, endorsement_of(key).to_cbor())
    verdict = verify_endorsement(envelope, FLEET, roots, **declared(key))
    assert verdict.reason is Reason.SignatureInvalid
    assert "content type" in verdict.message


def test_a_forged_root_signature_is_invalid(
    root: KeySigner, roots: list[KeyRecord], key: KeySigner
) -> None:
    impostor = generate(Algorithm.ED25519)
    forged = sign1(_Claiming(impostor, root.key_id), CT_KEY, endorsement_of(key).to_cbor())
    verdict = verify_endorsement(forged, FLEET, roots, **declared(key))
    assert verdict.reason is Reason.SignatureInvalid
    assert "does not verify" in verdict.message


class _Claiming:
    """Signs with one key while naming another key's kid."""

    def __init__(self, inner: KeySigner, kid: str) -> None:
        self.inner, self.key_id, self.algorithm = inner, kid, inner.algorithm

    def sign(self, tbs: bytes) -> bytes:
        return self.inner.sign(tbs)


def test_endorsements_travel_as_base64_too(
    root: KeySigner, roots: list[KeyRecord], key: KeySigner
) -> None:
    text = base64.b64encode(endorse(root, key)).decode()
    assert verify_endorsement(text, FLEET, roots, **declared(key)).accepted
    assert endorsed_record(text, FLEET, roots).key_id == key.key_id


def test_an_endorsement_for_another_fleet_gives_no_record(
    root: KeySigner, roots: list[KeyRecord], key: KeySigner
) -> None:
    with pytest.raises(TrustError) as caught:
        endorsed_record(endorse(root, key), "fleet-b", roots)
    assert caught.value.reason is Reason.ManifestMismatch


# --- revocations ---------------------------------------------------------------------------


def test_revocations(root: KeySigner, roots: list[KeyRecord], key: KeySigner) -> None:
    revocation = Revocation(FLEET, bytes.fromhex(key.key_id), NOT_BEFORE + 9, "")
    envelope = sign1(root, CT_REVOCATION, revocation.to_cbor())
    assert verify_revocation(envelope, FLEET, roots) == revocation

    cases = [
        (envelope, "fleet-b", roots, Reason.ManifestMismatch),
        (sign1(key, CT_REVOCATION, revocation.to_cbor()), FLEET, roots, Reason.UnknownKey),
        (endorse(root, key), FLEET, roots, Reason.SignatureInvalid),
        (
            sign1(root, CT_REVOCATION, endorsement_of(key).to_cbor()),
            FLEET,
            roots,
            Reason.SignatureInvalid,
        ),
    ]
    for data, fleet, given_roots, reason in cases:
        with pytest.raises(TrustError) as caught:
            verify_revocation(data, fleet, given_roots)
        assert caught.value.reason is reason


# --- the ring ------------------------------------------------------------------------------


def record(signer: KeySigner, tier: Any = Tier.APPLICATION, **changes: Any) -> KeyRecord:
    base = KeyRecord(signer.key_id, tier, signer.algorithm, signer.spki_der, NOT_BEFORE, NOT_AFTER)
    return dataclasses.replace(base, **changes)


def test_key_record_checks_its_key_id(key: KeySigner) -> None:
    with pytest.raises(ValueError):
        KeyRecord("00" * 32, Tier.OS, key.algorithm, key.spki_der, 0, 1)
    assert record(key, "os").tier is Tier.OS
    with pytest.raises(ValueError):
        record(key, "firmware")


def test_the_ring_holds_every_key_by_key_id(root: KeySigner) -> None:
    keys = {
        name: generate(Algorithm.ED25519) for name in ("ok", "os", "revoked", "retired", "late")
    }
    ring = KeyRing(
        [
            root_record(root),
            record(keys["ok"]),
            record(keys["os"], Tier.OS),
            record(keys["revoked"], revoked=True),
            record(keys["retired"], retired=True),
            record(keys["late"], not_before=NOT_BEFORE + 100),
        ]
    )
    assert len(ring) == 6
    assert ring.roots() == [root_record(root)]
    assert ring.get(keys["os"].key_id) == record(keys["os"], Tier.OS)
    assert ring.get("00" * 32) is None
    assert {r.key_id for r in ring} == {root.key_id} | {k.key_id for k in keys.values()}


def test_duplicates_collapse_distrust_wins(key: KeySigner) -> None:
    ring = KeyRing(
        [
            record(key, name="a", not_before=NOT_BEFORE - 10),
            record(key, revoked=True, not_after=NOT_AFTER + 10),
            record(key, retired=True, not_before=NOT_BEFORE + 5),
        ]
    )
    assert len(ring) == 1
    merged = ring.get(key.key_id)
    assert merged == record(
        key, name="a", revoked=True, retired=True, not_before=NOT_BEFORE + 5, not_after=NOT_AFTER
    )


def test_conflicting_duplicates_are_refused(key: KeySigner) -> None:
    with pytest.raises(ValueError, match="conflicting"):
        KeyRing([record(key), record(key, Tier.BOOTLOADER)])
