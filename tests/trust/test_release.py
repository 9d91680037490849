"""verify_release, check_rollback and check_artifact: docs/format.md "Order of checks" steps 1-8.

Keys are made at test time; `now` is fixed.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, replace
from typing import Any

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flashgate.signing.filekeys import KeySigner, generate
from flashgate.trust import (
    CT_KEY,
    CT_RELEASE,
    MAX_ENVELOPE_BYTES,
    MAX_SIGNATURES,
    ROOT,
    Algorithm,
    KeyEndorsement,
    KeyRecord,
    KeyRing,
    Policy,
    Reason,
    ReleaseManifest,
    Tier,
    Verdict,
    check_artifact,
    check_rollback,
    decode,
    encode,
    endorsed_record,
    sign1,
    verify_release,
)

FLEET = "fleet-a"
NOT_BEFORE = 1_700_000_000
NOT_AFTER = NOT_BEFORE + 365 * 86400
NOW = NOT_BEFORE + 86400
FLOOR = 5
ARTIFACT = bytes(range(256)) * 16
MANIFEST = ReleaseManifest(
    fleet=FLEET,
    product="gw-3000",
    tier=Tier.APPLICATION,
    version="4.2.0",
    security_version=7,
    artifact_name="app-4.2.0.bin",
    artifact_size=len(ARTIFACT),
    artifact_sha256=hashlib.sha256(ARTIFACT).digest(),
)


@dataclass(frozen=True)
class Fleet:
    root: KeySigner
    keys: dict[str, KeySigner]
    ring: KeyRing


def _root_record(root: KeySigner) -> KeyRecord:
    return KeyRecord(root.key_id, ROOT, root.algorithm, root.spki_der, NOT_BEFORE, NOT_AFTER)


def _endorsed(root: KeySigner, signer: KeySigner, tier: Tier, name: str) -> KeyRecord:
    """The record of a root-endorsed key, as the operator builds it (flags from the spec)."""
    endorsement = KeyEndorsement(
        FLEET, tier, bytes.fromhex(signer.key_id), signer.algorithm, signer.spki_der,
        NOT_BEFORE, NOT_AFTER,
    )  # fmt: skip
    envelope = sign1(root, CT_KEY, endorsement.to_cbor())
    return endorsed_record(
        envelope, FLEET, [_root_record(root)], name=name,
        revoked=name == "revoked", retired=name == "retired",
    )  # fmt: skip


@pytest.fixture(scope="module")
def fleet() -> Fleet:
    root = generate(Algorithm.ED25519)
    tiers = {
        "app": (Tier.APPLICATION, Algorithm.ED25519),
        "app_es": (Tier.APPLICATION, Algorithm.ES256),
        "os": (Tier.OS, Algorithm.ED25519),
        "boot1": (Tier.BOOTLOADER, Algorithm.ED25519),
        "boot2": (Tier.BOOTLOADER, Algorithm.ES256),
        "boot3": (Tier.BOOTLOADER, Algorithm.ED25519),
        "revoked": (Tier.APPLICATION, Algorithm.ED25519),
        "retired": (Tier.APPLICATION, Algorithm.ED25519),
    }
    keys = {name: generate(algorithm) for name, (_, algorithm) in tiers.items()}
    records = [_root_record(root)]
    records += [_endorsed(root, keys[name], tier, name) for name, (tier, _) in tiers.items()]
    return Fleet(root, keys, KeyRing(records))


POLICY = Policy(thresholds={Tier.BOOTLOADER: 2}, max_security_version_jump=100)


def verify(
    fleet: Fleet,
    envelopes: list[bytes | str],
    expected: ReleaseManifest = MANIFEST,
    *,
    floor: int | None = FLOOR,
    now: int = NOW,
) -> Verdict:
    return verify_release(envelopes, expected, fleet.ring, POLICY, floor, now)


def signed(signer: KeySigner, manifest: ReleaseManifest = MANIFEST) -> bytes:
    return sign1(signer, CT_RELEASE, manifest.to_cbor())


def rebuild(envelope: bytes, **parts: Any) -> bytes:
    """The envelope with some of its four parts replaced (no re-signing)."""
    protected, unprotected, payload, signature = decode(envelope[1:])
    fields = {"protected": protected, "unprotected": unprotected, "payload": payload}
    fields["signature"] = signature
    fields.update(parts)
    return b"\xd2" + encode(list(fields.values()))


def assert_rejected(verdict: Verdict, reason: Reason, *words: str) -> None:
    assert not verdict.accepted
    assert verdict.reason is reason, verdict.message
    for word in words:
        assert word in verdict.message


# --- accepted releases ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["app", "app_es"])
def test_a_good_signature_of_each_algorithm_is_accepted(fleet: Fleet, name: str) -> None:
    verdict = verify(fleet, [signed(fleet.keys[name])])
    assert verdict.accepted, verdict.message
    assert verdict.reason is None
    assert verdict.key_ids == (fleet.keys[name].key_id,)
    assert verdict.manifest == MANIFEST


def test_base64_text_envelopes_are_accepted(fleet: Fleet) -> None:
    text = base64.b64encode(signed(fleet.keys["app"])).decode()
    assert verify(fleet, [text]).accepted


def test_a_single_envelope_not_wrapped_in_a_list_is_one_envelope(fleet: Fleet) -> None:
    envelope = signed(fleet.keys["app"])
    # A caller mistake the type checker catches; at run time it still means one envelope.
    verdict = verify_release(envelope, MANIFEST, fleet.ring, POLICY, FLOOR, NOW)  # type: ignore[arg-type]
    assert verdict.accepted


# --- step 1: structure ---------------------------------------------------------------------


def test_wrong_content_type_is_refused(fleet: Fleet) -> None:
    envelope = sign1(fleet.keys["app"], CT_KEY, MANIFEST.to_cbor())
    assert_rejected(verify(fleet, [envelope]), Reason.SignatureInvalid, "content type")


@pytest.mark.parametrize(("version", "padding"), [("4.2.0", "=="), ("4.2.0-rc1", "=")])
def test_base64_envelopes_must_carry_their_padding(
    fleet: Fleet, version: str, padding: str
) -> None:
    manifest = replace(MANIFEST, version=version)
    padded = base64.b64encode(signed(fleet.keys["app"], manifest)).decode()
    assert padded.endswith(padding) and not padded.endswith("=" + padding)
    assert verify(fleet, [padded], manifest).accepted
    unpadded = padded.rstrip("=")
    assert_rejected(verify(fleet, [unpadded], manifest), Reason.SignatureInvalid, "base64")


@pytest.mark.parametrize(
    "text",
    [
        "not base64 at all!",
        "0oRYT6MBJwN4Jm",  # missing padding
        "0oRY\nT6MB",  # embedded newline
        " 0oRYT6MB",  # leading space
        "0oRYT6MB\n",  # trailing newline (YAML block scalars)
        "0o-_T6MB",  # URL-safe alphabet
        "QR==",  # stray bits in the last character ("QQ==" is canonical)
        "0oRYT6MB==",  # too much padding
        "0oRYT6MBé=",  # not ASCII
        "",
    ],
)
def test_malformed_base64_is_refused(fleet: Fleet, text: str) -> None:
    assert_rejected(verify(fleet, [text]), Reason.SignatureInvalid)


@pytest.mark.parametrize(
    "envelope",
    [
        b"",
        b"\xd2",
        b"\xd2\x84",
        b"\xff\xff\xff",
        b"\xd2\x84\x40\xa0\x40",  # three of four elements
        b"\xd2\x9f\x40\xa0\x40\x40\xff",  # indefinite-length array
        b"\xd8\x12\x84\x40\xa0\x40\x40",  # tag 18 in a two-byte head
    ],
)
def test_malformed_cbor_is_refused(fleet: Fleet, envelope: bytes) -> None:
    assert_rejected(verify(fleet, [envelope]), Reason.SignatureInvalid)


def test_truncated_envelopes_are_refused(fleet: Fleet) -> None:
    envelope = signed(fleet.keys["app"])
    for cut in (1, 2, 10, len(envelope) // 2, len(envelope) - 1):
        assert_rejected(verify(fleet, [envelope[:cut]]), Reason.SignatureInvalid)


def test_trailing_bytes_are_refused(fleet: Fleet) -> None:
    envelope = signed(fleet.keys["app"])
    assert_rejected(verify(fleet, [envelope + b"\x00"]), Reason.SignatureInvalid)


def test_oversized_envelopes_are_refused_before_parsing(fleet: Fleet) -> None:
    big = replace(MANIFEST, version="x" * MAX_ENVELOPE_BYTES)
    envelope = signed(fleet.keys["app"], big)
    assert len(envelope) > MAX_ENVELOPE_BYTES
    assert_rejected(verify(fleet, [envelope], big), Reason.SignatureInvalid, "limit")
    text = base64.b64encode(envelope).decode()
    assert_rejected(verify(fleet, [text], big), Reason.SignatureInvalid, "more than the limit")


def sized(fleet: Fleet, size: int) -> tuple[bytes, ReleaseManifest]:
    """A good envelope of exactly `size` bytes (its manifest's version padded to fit)."""
    base = len(signed(fleet.keys["app"], replace(MANIFEST, version="")))
    for pad in range(size - base - 4, size - base + 1):  # text heads grow by up to 3 bytes
        manifest = replace(MANIFEST, version="x" * pad)
        envelope = signed(fleet.keys["app"], manifest)
        if len(envelope) == size:
            return envelope, manifest
    raise AssertionError(f"no envelope of {size} bytes")


@pytest.mark.parametrize("as_text", [False, True], ids=["bytes", "base64"])
def test_the_envelope_size_limit_is_exact(fleet: Fleet, as_text: bool) -> None:
    def form(envelope: bytes) -> bytes | str:
        return base64.b64encode(envelope).decode() if as_text else envelope

    at_limit, manifest = sized(fleet, MAX_ENVELOPE_BYTES)
    verdict = verify(fleet, [form(at_limit)], manifest)
    assert verdict.accepted, verdict.message
    over, manifest = sized(fleet, MAX_ENVELOPE_BYTES + 1)
    verdict = verify(fleet, [form(over)], manifest)
    assert_rejected(verdict, Reason.SignatureInvalid, "16385 bytes", "limit")


@pytest.mark.parametrize("position", [0, 1])
def test_one_oversized_envelope_refuses_the_release_before_any_decoding(
    fleet: Fleet, position: int
) -> None:
    # Step 0 is about the release, not one envelope: with k = 1, a good envelope beside an
    # oversized one does not make the release acceptable.
    good = signed(fleet.keys["app"])
    oversized = sized(fleet, MAX_ENVELOPE_BYTES + 1)[0]
    for over in (oversized, base64.b64encode(oversized).decode()):
        envelopes: list[bytes | str] = [good]
        envelopes.insert(position, over)
        verdict = verify(fleet, envelopes)
        assert_rejected(verdict, Reason.SignatureInvalid, f"signature {position + 1}", "limit")
        assert verdict.key_ids == ()


def test_base64_text_too_long_for_the_limit_is_refused_whatever_it_holds(fleet: Fleet) -> None:
    # The size of a text envelope comes from its length and padding, before it is decoded.
    text = "!" * (4 * -(-MAX_ENVELOPE_BYTES // 3) + 4)
    verdict = verify(fleet, [signed(fleet.keys["app"]), text])
    assert_rejected(verdict, Reason.SignatureInvalid, "signature 2", "limit")


# --- step 2: the key -----------------------------------------------------------------------


def test_a_key_of_another_tier_is_not_trusted(fleet: Fleet) -> None:
    assert_rejected(
        verify(fleet, [signed(fleet.keys["os"])]), Reason.KeyNotTrustedForTier, "os", "application"
    )


def test_the_root_never_signs_releases(fleet: Fleet) -> None:
    assert_rejected(verify(fleet, [signed(fleet.root)]), Reason.KeyNotTrustedForTier, "root")


def test_an_unknown_key_is_refused(fleet: Fleet) -> None:
    stranger = generate(Algorithm.ED25519)
    assert_rejected(verify(fleet, [signed(stranger)]), Reason.UnknownKey, stranger.key_id)


def test_a_revoked_key_is_refused(fleet: Fleet) -> None:
    assert_rejected(verify(fleet, [signed(fleet.keys["revoked"])]), Reason.KeyRevoked)


def test_revocation_wins_over_expiry(fleet: Fleet) -> None:
    verdict = verify(fleet, [signed(fleet.keys["revoked"])], now=NOT_AFTER + 1)
    assert_rejected(verdict, Reason.KeyRevoked)


def test_a_retired_key_is_refused(fleet: Fleet) -> None:
    assert_rejected(verify(fleet, [signed(fleet.keys["retired"])]), Reason.KeyExpired, "retired")


@pytest.mark.parametrize(
    ("now", "accepted"),
    [
        (NOT_BEFORE - 1, False),
        (NOT_BEFORE, True),
        (NOT_AFTER - 1, True),
        (NOT_AFTER, False),
        (NOT_AFTER + 86400, False),
    ],
)
def test_keys_are_trusted_only_inside_their_validity(
    fleet: Fleet, now: int, accepted: bool
) -> None:
    verdict = verify(fleet, [signed(fleet.keys["app"])], now=now)
    if accepted:
        assert verdict.accepted, verdict.message
    else:
        assert_rejected(verdict, Reason.KeyExpired, "valid from")


def test_the_key_is_looked_up_before_the_signature_is_checked(fleet: Fleet) -> None:
    envelope = rebuild(signed(fleet.keys["os"]), signature=b"\x00" * 64)
    assert_rejected(verify(fleet, [envelope]), Reason.KeyNotTrustedForTier)


# --- step 3: alg and signature -------------------------------------------------------------


@dataclass(frozen=True)
class LyingSigner:
    """Signs with one key but claims another algorithm in the envelope's `alg`."""

    inner: KeySigner
    algorithm: Algorithm

    @property
    def key_id(self) -> str:
        return self.inner.key_id

    def sign(self, tbs: bytes) -> bytes:
        return self.inner.sign(tbs)


@pytest.mark.parametrize(
    ("name", "claimed"), [("app", Algorithm.ES256), ("app_es", Algorithm.ED25519)]
)
def test_an_alg_header_other_than_the_keys_algorithm_is_refused(
    fleet: Fleet, name: str, claimed: Algorithm
) -> None:
    envelope = sign1(LyingSigner(fleet.keys[name], claimed), CT_RELEASE, MANIFEST.to_cbor())
    assert_rejected(verify(fleet, [envelope]), Reason.SignatureInvalid, "alg")


@pytest.mark.parametrize("name", ["app", "app_es"])
def test_a_tampered_payload_is_refused(fleet: Fleet, name: str) -> None:
    other = replace(MANIFEST, security_version=8).to_cbor()
    envelope = rebuild(signed(fleet.keys[name]), payload=other)
    assert_rejected(verify(fleet, [envelope]), Reason.SignatureInvalid, "does not verify")


@pytest.mark.parametrize("name", ["app", "app_es"])
def test_a_tampered_protected_header_is_refused(fleet: Fleet, name: str) -> None:
    # Same alg/kid/content type, re-encoded differently: ToBeSigned changes, so the signature fails
    # (and the encoding is not deterministic anyway).
    envelope = signed(fleet.keys[name])
    protected = decode(envelope[1:])[0]
    header = cbor2.loads(protected)
    reordered = cbor2.dumps({4: header[4], 3: header[3], 1: header[1]})
    assert_rejected(
        verify(fleet, [rebuild(envelope, protected=reordered)]), Reason.SignatureInvalid
    )


@pytest.mark.parametrize("name", ["app", "app_es"])
@pytest.mark.parametrize("length", [0, 63, 65, 71, 128])
def test_signatures_of_the_wrong_length_are_refused(fleet: Fleet, name: str, length: int) -> None:
    signature = decode(signed(fleet.keys[name])[1:])[3]
    wrong = (signature * 3)[:length]
    verdict = verify(fleet, [rebuild(signed(fleet.keys[name]), signature=wrong)])
    assert_rejected(verdict, Reason.SignatureInvalid, f"{length} bytes")


def test_a_der_ecdsa_signature_is_refused(fleet: Fleet) -> None:
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    envelope = signed(fleet.keys["app_es"])
    raw = decode(envelope[1:])[3]
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    assert_rejected(verify(fleet, [rebuild(envelope, signature=der)]), Reason.SignatureInvalid)


def test_a_zero_es256_signature_is_refused(fleet: Fleet) -> None:
    envelope = rebuild(signed(fleet.keys["app_es"]), signature=b"\x00" * 64)
    assert_rejected(verify(fleet, [envelope]), Reason.SignatureInvalid)


# --- step 4: the payload -------------------------------------------------------------------


def _wire(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = cbor2.loads(MANIFEST.to_cbor())
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


_GOOD_PAYLOAD = MANIFEST.to_cbor()
_NON_DETERMINISTIC = {
    "unsorted map": cbor2.dumps(dict(reversed(list(cbor2.loads(_GOOD_PAYLOAD).items())))),
    "non-shortest integer": _GOOD_PAYLOAD.replace(
        b"securityVersion\x07", b"securityVersion\x18\x07"
    ),
    "non-shortest length": _GOOD_PAYLOAD.replace(b"\x654.2.0", b"\x78\x054.2.0"),
    "indefinite-length map": b"\xbf" + _GOOD_PAYLOAD[1:] + b"\xff",
    "indefinite-length text": _GOOD_PAYLOAD.replace(b"\x654.2.0", b"\x7f\x634.2\x62.0\xff"),
    "float": _GOOD_PAYLOAD.replace(b"securityVersion\x07", b"securityVersion\xf9\x47\x00"),
    "tagged integer": _GOOD_PAYLOAD.replace(b"securityVersion\x07", b"securityVersion\xc2\x41\x07"),
    "trailing byte": _GOOD_PAYLOAD + b"\x00",
}


@pytest.mark.parametrize("kind", sorted(_NON_DETERMINISTIC))
def test_a_validly_signed_non_deterministic_payload_is_refused(fleet: Fleet, kind: str) -> None:
    payload = _NON_DETERMINISTIC[kind]
    assert payload != _GOOD_PAYLOAD
    envelope = sign1(fleet.keys["app"], CT_RELEASE, payload)
    assert_rejected(verify(fleet, [envelope]), Reason.SignatureInvalid, "deterministic")


def _in_table_order(manifest: ReleaseManifest) -> bytes:
    """The manifest's map with its keys in docs/format.md's table order instead of sorted."""
    data = cbor2.loads(manifest.to_cbor())
    order = ["v", "type", "fleet", "product", "tier", "version", "securityVersion", "artifact"]
    head = bytes([0xA0 | len(order)])
    return head + b"".join(encode(key) + encode(data[key]) for key in order)


def test_a_validly_signed_payload_in_table_order_is_refused(fleet: Fleet) -> None:
    # The keys must be sorted bytewise ("v", "tier", "type", "fleet", ...), not written as listed.
    payload = _in_table_order(MANIFEST)
    assert payload != _GOOD_PAYLOAD and cbor2.loads(payload) == cbor2.loads(_GOOD_PAYLOAD)
    envelope = sign1(fleet.keys["app"], CT_RELEASE, payload)
    assert_rejected(verify(fleet, [envelope]), Reason.SignatureInvalid, "deterministic")


@pytest.mark.parametrize(
    ("text", "broken"),
    [
        (b"\x67fleet-a", b"\x67fleet-\xff"),
        (b"\x67gw-3000", b"\x67gw-300\xc0"),  # a lead byte with nothing after it
        (b"\x654.2.0", b"\x654.2\xed\xa0"),  # the start of an encoded surrogate
        (b"\x6dapp-4.2.0.bin", b"\x6dapp-4.2\xc0\xae.bin"),  # overlong "."
        (b"\x65fleet", b"\x65flee\x80"),  # a map key
    ],
    ids=["fleet", "product", "version", "artifact name", "key"],
)
def test_a_validly_signed_payload_with_text_that_is_not_utf8_is_refused(
    fleet: Fleet, text: bytes, broken: bytes
) -> None:
    assert _GOOD_PAYLOAD.count(text) == 1
    envelope = sign1(fleet.keys["app"], CT_RELEASE, _GOOD_PAYLOAD.replace(text, broken))
    assert_rejected(verify(fleet, [envelope]), Reason.SignatureInvalid, "UTF-8")


_INTEGER_KEYED: dict[Any, Any] = {**_wire(), 1: 1}


@pytest.mark.parametrize(
    ("kind", "payload"),
    [
        ("unknown key", _wire(extra=1)),
        ("missing key", _wire(version=None)),
        ("integer key", _INTEGER_KEYED),
        ("v = 2", _wire(v=2)),
        ("wrong type", _wire(type="key")),
        ("unknown tier", _wire(tier="firmware")),
        ("text securityVersion", _wire(securityVersion="7")),
        ("negative securityVersion", _wire(securityVersion=-1)),
        ("artifact not a map", _wire(artifact=[1, 2])),
        ("artifact extra key", _wire(artifact={**_wire()["artifact"], "url": "x"})),
        ("short sha256", _wire(artifact={**_wire()["artifact"], "sha256": b"\x00" * 31})),
        ("payload not a map", ["release"]),
    ],
)
def test_a_validly_signed_payload_outside_the_table_is_refused(
    fleet: Fleet, kind: str, payload: Any
) -> None:
    envelope = sign1(fleet.keys["app"], CT_RELEASE, encode(payload))
    assert_rejected(verify(fleet, [envelope]), Reason.SignatureInvalid)


# --- step 5: several envelopes, thresholds -------------------------------------------------


def boot_manifest() -> ReleaseManifest:
    return replace(MANIFEST, tier=Tier.BOOTLOADER)


def test_two_distinct_bootloader_keys_meet_the_threshold(fleet: Fleet) -> None:
    m = boot_manifest()
    verdict = verify(fleet, [signed(fleet.keys["boot1"], m), signed(fleet.keys["boot2"], m)], m)
    assert verdict.accepted, verdict.message
    assert verdict.key_ids == (fleet.keys["boot1"].key_id, fleet.keys["boot2"].key_id)


def test_one_key_signing_twice_counts_once(fleet: Fleet) -> None:
    m = boot_manifest()
    # ES256 is randomized: two different envelopes, one keyId.
    first, second = signed(fleet.keys["boot2"], m), signed(fleet.keys["boot2"], m)
    assert first != second
    verdict = verify(fleet, [first, second], m)
    assert_rejected(verdict, Reason.ThresholdNotMet, "needs 2", "1 verified")
    verdict = verify(fleet, [first, first], m)
    assert_rejected(verdict, Reason.ThresholdNotMet, "1 verified")


def test_a_failed_envelope_does_not_count_toward_the_threshold(fleet: Fleet) -> None:
    m = boot_manifest()
    bad = rebuild(signed(fleet.keys["boot2"], m), signature=b"\x01" * 64)
    verdict = verify(fleet, [signed(fleet.keys["boot1"], m), bad], m)
    assert_rejected(verdict, Reason.ThresholdNotMet, "signature 2: SignatureInvalid")


def test_with_a_threshold_an_individual_reason_becomes_threshold_not_met(fleet: Fleet) -> None:
    m = boot_manifest()
    verdict = verify(fleet, [signed(fleet.keys["revoked"], m)], m)
    assert_rejected(verdict, Reason.ThresholdNotMet, "KeyRevoked")


def test_extra_failed_envelopes_do_not_spoil_a_met_threshold(fleet: Fleet) -> None:
    m = boot_manifest()
    envelopes: list[bytes | str] = [
        signed(fleet.keys["app"], m),
        signed(fleet.keys["boot1"], m),
        "garbage",
        signed(fleet.keys["boot3"], m),
    ]
    verdict = verify(fleet, envelopes, m)
    assert verdict.accepted, verdict.message
    assert verdict.key_ids == (fleet.keys["boot1"].key_id, fleet.keys["boot3"].key_id)


def test_valid_envelopes_over_different_manifests_are_a_mismatch(fleet: Fleet) -> None:
    m = boot_manifest()
    other = replace(m, version="9")
    verdict = verify(fleet, [signed(fleet.keys["boot1"], m), signed(fleet.keys["boot2"], other)], m)
    assert_rejected(verdict, Reason.ManifestMismatch, "version", "'4.2.0'", "'9'")


@pytest.mark.parametrize("tier", [Tier.APPLICATION, Tier.BOOTLOADER])
def test_one_key_signing_two_different_payloads_is_a_mismatch(fleet: Fleet, tier: Tier) -> None:
    # Whether the tier needs one signature or two, and whichever payload matches the release.
    m = replace(MANIFEST, tier=tier)
    key = fleet.keys["app" if tier is Tier.APPLICATION else "boot1"]
    other = replace(m, security_version=m.security_version + 1)
    for pair in ([m, other], [other, m]):
        verdict = verify(fleet, [signed(key, pair[0]), signed(key, pair[1])], m)
        assert_rejected(verdict, Reason.ManifestMismatch, "securityVersion")


def test_with_k_1_the_first_failure_gives_the_reason(fleet: Fleet) -> None:
    envelopes: list[bytes | str] = [signed(fleet.keys["revoked"]), signed(fleet.keys["os"])]
    assert_rejected(verify(fleet, envelopes), Reason.KeyRevoked, "signature 1 of 2")
    envelopes.append(signed(fleet.keys["app"]))
    assert verify(fleet, envelopes).accepted


def test_no_signature_at_all_is_threshold_not_met(fleet: Fleet) -> None:
    assert_rejected(verify(fleet, []), Reason.ThresholdNotMet)


def test_too_many_envelopes_are_refused_unread(fleet: Fleet) -> None:
    envelopes: list[bytes | str] = [signed(fleet.keys["app"])] * MAX_SIGNATURES
    assert verify(fleet, envelopes).accepted
    envelopes.append(envelopes[0])
    assert_rejected(verify(fleet, envelopes), Reason.SignatureInvalid, "17 signatures", "limit")


# --- step 6: the manifest against the resource ---------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "wire_name"),
    [
        ("fleet", "fleet-b", "fleet"),
        ("product", "gw-4000", "product"),
        ("tier", Tier.OS, "tier"),
        ("version", "4.2.1", "version"),
        ("security_version", 8, "securityVersion"),
        ("artifact_name", "other.bin", "artifact.name"),
        ("artifact_size", len(ARTIFACT) + 1, "artifact.size"),
        ("artifact_sha256", b"\x00" * 32, "artifact.sha256"),
    ],
)
def test_a_manifest_differing_in_any_one_field_is_a_mismatch(
    fleet: Fleet, field: str, value: Any, wire_name: str
) -> None:
    expected = replace(MANIFEST, **{field: value})
    # A key trusted for the expected tier signs the manifest, so step 2 passes and step 6 decides.
    signer = fleet.keys["os" if expected.tier is Tier.OS else "app"]
    verdict = verify(fleet, [signed(signer, MANIFEST)], expected)
    assert_rejected(verdict, Reason.ManifestMismatch, wire_name, "expected", "signed")
    assert verdict.message.count(": expected") == 1  # names exactly the one field
    assert verdict.key_ids == (signer.key_id,)
    assert verdict.manifest == MANIFEST


# --- step 7: the floor ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("security_version", "floor", "reason"),
    [
        (FLOOR, FLOOR, None),
        (FLOOR - 1, FLOOR, Reason.RollbackRejected),
        (0, FLOOR, Reason.RollbackRejected),
        (FLOOR + 1, FLOOR, None),
        (FLOOR + 100, FLOOR, None),
        (FLOOR + 101, FLOOR, Reason.FastForwardRejected),
        (0, None, None),
        (100, None, None),
        (101, None, Reason.FastForwardRejected),
    ],
)
def test_the_rollback_floor(
    fleet: Fleet, security_version: int, floor: int | None, reason: Reason | None
) -> None:
    manifest = replace(MANIFEST, security_version=security_version)
    verdict = verify(fleet, [signed(fleet.keys["app"], manifest)], manifest, floor=floor)
    assert verdict.reason is reason, verdict.message
    assert verdict.accepted is (reason is None)
    assert verdict.manifest == manifest
    assert verdict.key_ids == (fleet.keys["app"].key_id,)


def test_rollback_messages_state_expected_and_observed() -> None:
    verdict = check_rollback(4, 5, 100, subject="gw-3000/application")
    assert verdict.message == "securityVersion 4 is below the floor 5 for gw-3000/application"
    verdict = check_rollback(106, 5, 100, subject="gw-3000/application")
    assert verdict.reason is Reason.FastForwardRejected
    assert "106" in verdict.message and "105" in verdict.message
    verdict = check_rollback(200, None, 100)
    assert verdict.reason is Reason.FastForwardRejected
    assert "none recorded" in verdict.message
    assert check_rollback(5, 5, 0).accepted
    assert not check_rollback(6, 5, 0).accepted


def test_policy_validates_and_freezes_thresholds() -> None:
    thresholds = {Tier.BOOTLOADER: 2}
    policy = Policy(thresholds=thresholds)
    thresholds[Tier.OS] = 3
    assert policy.threshold(Tier.OS) == 1
    assert policy.threshold(Tier.BOOTLOADER) == 2
    with pytest.raises(TypeError):
        policy.thresholds[Tier.OS] = 2  # type: ignore[index]
    with pytest.raises(ValueError):
        Policy(thresholds={Tier.OS: 0})
    with pytest.raises(ValueError):
        Policy(max_security_version_jump=-1)


# --- step 8 (tail): the artifact -----------------------------------------------------------


def test_the_artifact_as_signed_is_accepted() -> None:
    verdict = check_artifact(MANIFEST, len(ARTIFACT), hashlib.sha256(ARTIFACT).digest(), False)
    assert verdict.accepted, verdict.message


@pytest.mark.parametrize(
    ("data", "oversized", "reason"),
    [
        (ARTIFACT[:-1], False, Reason.SizeMismatch),
        (ARTIFACT + b"\x00", False, Reason.SizeMismatch),
        (ARTIFACT, True, Reason.SizeMismatch),
        (b"", False, Reason.SizeMismatch),
        (bytes(len(ARTIFACT)), False, Reason.HashMismatch),
    ],
)
def test_an_artifact_other_than_signed_is_refused(
    data: bytes, oversized: bool, reason: Reason
) -> None:
    verdict = check_artifact(MANIFEST, len(data), hashlib.sha256(data).digest(), oversized)
    assert_rejected(verdict, reason)


# --- properties ----------------------------------------------------------------------------


@given(st.binary(max_size=600))
def test_arbitrary_bytes_never_raise_and_never_accept(fleet: Fleet, data: bytes) -> None:
    verdict = verify(fleet, [data])
    assert not verdict.accepted
    assert verdict.reason is not None


@given(
    st.one_of(
        st.text(max_size=300), st.binary(max_size=400).map(lambda b: base64.b64encode(b).decode())
    )
)
def test_arbitrary_base64_text_never_raises_and_never_accepts(fleet: Fleet, text: str) -> None:
    assert not verify(fleet, [text]).accepted


@given(st.binary(max_size=300))
def test_arbitrary_bytes_after_the_tag_never_accept(fleet: Fleet, data: bytes) -> None:
    assert not verify(fleet, [b"\xd2\x84" + data]).accepted


@pytest.fixture(scope="module")
def good_envelopes(fleet: Fleet) -> dict[str, bytes]:
    return {name: signed(fleet.keys[name]) for name in ("app", "app_es")}


@pytest.mark.parametrize("name", ["app", "app_es"])
@given(data=st.data())
def test_any_single_byte_mutation_of_a_good_envelope_never_accepts(
    fleet: Fleet, good_envelopes: dict[str, bytes], name: str, data: st.DataObject
) -> None:
    envelope = good_envelopes[name]
    assert verify(fleet, [envelope]).accepted
    position = data.draw(st.integers(0, len(envelope) - 1), label="position")
    value = data.draw(st.integers(0, 255).filter(lambda b: b != envelope[position]), label="byte")
    mutated = envelope[:position] + bytes([value]) + envelope[position + 1 :]
    assert not verify(fleet, [mutated]).accepted


def test_every_single_byte_mutation_of_an_ed25519_envelope_is_refused(fleet: Fleet) -> None:
    envelope = signed(fleet.keys["app"])
    assert verify(fleet, [envelope]).accepted
    for position in range(len(envelope)):
        mutated = bytearray(envelope)
        mutated[position] ^= 0x01
        assert not verify(fleet, [bytes(mutated)]).accepted, position
