"""COSE_Sign1 envelopes (docs/format.md "Envelope", check 1) and strict base64."""

from __future__ import annotations

import base64
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
    Algorithm,
    Reason,
    TrustError,
    decode_b64,
    encode,
    envelope_size,
    parse_sign1,
    sign1,
    to_be_signed,
)

KID = bytes(range(32))
SIGNATURE = b"\x07" * 64


@pytest.fixture(scope="module")
def signer() -> KeySigner:
    return generate(Algorithm.ED25519)


def envelope(
    header: Any = None,
    unprotected: Any = None,
    payload: Any = b"\xa0",
    signature: Any = SIGNATURE,
    *,
    protected: Any = None,
) -> bytes:
    """A tagged COSE_Sign1 built by hand; any part may be wrong on purpose."""
    if protected is None:
        protected = encode({1: -8, 3: CT_RELEASE, 4: KID} if header is None else header)
    return b"\xd2" + encode(
        [protected, {} if unprotected is None else unprotected, payload, signature]
    )


def refused(data: bytes | str, *words: str) -> None:
    with pytest.raises(TrustError) as caught:
        parse_sign1(data, CT_RELEASE)
    assert caught.value.reason is Reason.SignatureInvalid
    for word in words:
        assert word in caught.value.message


def test_a_well_formed_envelope_parses() -> None:
    message = parse_sign1(envelope(), CT_RELEASE)
    assert (message.alg, message.content_type, message.kid) == (-8, CT_RELEASE, KID)
    assert message.key_id == KID.hex()
    assert message.payload == b"\xa0"
    assert message.signature == SIGNATURE
    assert message.protected == encode({1: -8, 3: CT_RELEASE, 4: KID})


def test_sign1_writes_what_parse_sign1_reads(signer: KeySigner) -> None:
    data = sign1(signer, CT_KEY, b"\xa1\x61\x76\x01")
    message = parse_sign1(data, CT_KEY)
    assert message.kid.hex() == signer.key_id
    assert message.alg == -8
    assert message.payload == b"\xa1\x61\x76\x01"
    assert signer.sign(to_be_signed(message.protected, message.payload)) == message.signature
    # The same bytes through a lenient decoder: tag 18 around [bstr, {}, bstr, bstr].
    item = cbor2.loads(data)
    assert item.tag == 18
    assert item.value[1] == {}


def test_to_be_signed_is_the_sig_structure() -> None:
    tbs = to_be_signed(b"\xa0", b"\x01\x02")
    assert tbs == cbor2.dumps(["Signature1", b"\xa0", b"", b"\x01\x02"])
    assert tbs.hex() == "846a5369676e61747572653141a0404201 02".replace(" ", "")


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (envelope()[1:], ["tag 18"]),
        (b"\xd8\x12" + envelope()[1:], ["tag 18"]),
        (b"\xd3" + envelope()[1:], ["tag 18"]),
        (b"\xd2" + encode([b"", {}, b""]), ["4 elements"]),
        (b"\xd2" + encode([b"", {}, b"", b"", b""]), ["4 elements"]),
        (b"\xd2" + encode({1: 2}), ["4 elements"]),
        (envelope(unprotected={4: KID}), ["unprotected"]),
        (envelope(unprotected=[]), ["unprotected"]),
        (envelope(protected={1: -8, 3: CT_RELEASE, 4: KID}), ["protected header is not"]),
        (envelope(protected=b""), ["protected header"]),
        (envelope(protected=cbor2.dumps({4: KID, 3: CT_RELEASE, 1: -8})), ["deterministic"]),
        (envelope({1: -8, 3: CT_RELEASE}), ["exactly"]),
        (envelope({1: -8, 3: CT_RELEASE, 4: KID, 5: b"iv"}), ["exactly"]),
        (envelope({1: -8, 3: CT_RELEASE, "kid": KID}), ["exactly"]),
        (envelope([1, 3, 4]), ["exactly"]),
        (envelope({1: -35, 3: CT_RELEASE, 4: KID}), ["alg"]),
        (envelope({1: "EdDSA", 3: CT_RELEASE, 4: KID}), ["alg"]),
        (envelope({1: -8, 3: 60, 4: KID}), ["content type"]),
        (envelope({1: -8, 3: CT_KEY, 4: KID}), ["content type", CT_KEY]),
        (envelope({1: -8, 3: CT_RELEASE, 4: KID[:31]}), ["kid"]),
        (envelope({1: -8, 3: CT_RELEASE, 4: KID + b"\x00"}), ["kid"]),
        (envelope({1: -8, 3: CT_RELEASE, 4: KID.hex()}), ["kid"]),
        (envelope(payload="text"), ["payload"]),
        (envelope(payload=[b"\xa0"]), ["payload"]),
        (envelope(signature=SIGNATURE.hex()), ["signature"]),
        (envelope() + b"\x00", ["deterministic"]),
        (envelope()[:-1], ["deterministic"]),
    ],
)
def test_structure_is_checked(data: bytes, words: list[str]) -> None:
    refused(data, *words)


def test_signature_length_is_left_to_the_key_check() -> None:
    # Check 1 only needs a bstr; 64 bytes is checked once the key (and algorithm) is known.
    assert parse_sign1(envelope(signature=b"\x00" * 63), CT_RELEASE).signature == b"\x00" * 63


def test_envelopes_over_the_size_limit_are_refused_cheaply() -> None:
    big = envelope(payload=b"\x00" * MAX_ENVELOPE_BYTES)
    refused(big, "limit")
    refused(base64.b64encode(big).decode(), "more than the limit")
    # Just under the limit is parsed.
    fits = envelope(payload=b"\x00" * (MAX_ENVELOPE_BYTES - 200))
    assert len(fits) <= MAX_ENVELOPE_BYTES
    parse_sign1(fits, CT_RELEASE)
    parse_sign1(base64.b64encode(fits).decode(), CT_RELEASE)


def test_other_types_are_refused() -> None:
    refused(12, "int")  # type: ignore[arg-type]
    assert parse_sign1(bytearray(envelope()), CT_RELEASE).kid == KID  # type: ignore[arg-type]


def test_base64_text_is_parsed() -> None:
    assert parse_sign1(base64.b64encode(envelope()).decode(), CT_RELEASE).kid == KID


@pytest.mark.parametrize(
    "text",
    ["QQ", "QQ=", "QQ===", "QR==", "Q Q==", "QQ==\n", "\tQQ==", "-_8=", "QQ==QQ==", "Ä", "*"],
)
def test_decode_b64_is_strict(text: str) -> None:
    with pytest.raises(TrustError) as caught:
        decode_b64(text)
    assert caught.value.reason is Reason.SignatureInvalid


@given(st.binary(max_size=200))
def test_decode_b64_round_trip(data: bytes) -> None:
    assert decode_b64(base64.b64encode(data).decode()) == data


@given(st.binary(max_size=200))
def test_envelope_size_of_base64_text_is_its_decoded_length(data: bytes) -> None:
    assert envelope_size(base64.b64encode(data).decode()) == len(data)
    assert envelope_size(data) == len(data)


@given(st.text(max_size=40))
def test_decode_b64_accepts_only_canonical_text(text: str) -> None:
    try:
        data = decode_b64(text)
    except TrustError:
        return
    assert base64.b64encode(data).decode() == text


class DerSigner:
    """A signer making the classic mistake: DER ECDSA instead of raw r||s."""

    algorithm = Algorithm.ES256
    key_id = KID.hex()

    def sign(self, tbs: bytes) -> bytes:
        return b"\x30\x44" + b"\x02\x20" + b"\x01" * 32 + b"\x02\x20" + b"\x02" * 32


def test_sign1_refuses_a_signature_that_is_not_64_raw_bytes() -> None:
    with pytest.raises(ValueError, match="70 bytes"):
        sign1(DerSigner(), CT_RELEASE, b"\xa0")
