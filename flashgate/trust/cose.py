"""The envelope: tagged COSE_Sign1, docs/format.md "Envelope" and "Order of checks" steps 0-3.

    COSE_Sign1 = #6.18([ protected: bstr, unprotected: {}, payload: bstr, signature: bstr ])
    protected  = bstr wrapping the deterministic encoding of { 1: alg, 3: content-type, 4: kid }

`envelope_size` is what step 0 measures. `parse_sign1` is step 0 for its one envelope, then step 1
(structure, tag, empty unprotected map, exactly alg/content-type/kid, the expected content type);
`verify_sign1` is step 3 (alg against the key that the caller chose, then
the signature). The payload is never decoded here: the caller decodes it only after step 3, and
ToBeSigned is built from the envelope's very `protected` and `payload` bytes.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Protocol

from flashgate.trust import cbor
from flashgate.trust.keys import SIGNATURE_BYTES, verify_signature
from flashgate.trust.vocabulary import Algorithm, Reason, TrustError

CT_RELEASE = "application/vnd.flashgate.release+cbor"
CT_KEY = "application/vnd.flashgate.key+cbor"
CT_REVOCATION = "application/vnd.flashgate.revocation+cbor"

MAX_ENVELOPE_BYTES = 16 * 1024
"""Larger envelopes are refused before any parsing: real ones are a few hundred bytes."""

_TAG_SIGN1 = b"\xd2"  # tag 18 in its one deterministic (one-byte) form
_HDR_ALG, _HDR_CONTENT_TYPE, _HDR_KID = 1, 3, 4
_KID_BYTES = 32


@dataclass(frozen=True)
class Sign1:
    """A structurally valid COSE_Sign1 whose signature has NOT been checked yet.

    `protected` and `payload` are the envelope's own bytes, the only input of ToBeSigned.
    """

    protected: bytes
    payload: bytes
    signature: bytes
    alg: int
    content_type: str
    kid: bytes

    @property
    def key_id(self) -> str:
        """The `kid` as 64 hex digits: a hint for choosing the key, not trusted."""
        return self.kid.hex()


def _invalid(message: str) -> TrustError:
    return TrustError(Reason.SignatureInvalid, message)


def decode_b64(text: str) -> bytes:
    """Strict standard base64 with padding, as envelopes travel in YAML and JSON.

    Only the one canonical spelling is accepted: no whitespace, no URL-safe alphabet, no missing
    padding, no stray bits in the last character.

    Raises:
        TrustError: `SignatureInvalid` for anything else.
    """
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise _invalid(f"envelope is not valid base64: {exc}") from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise _invalid("envelope is not canonical base64 (stray bits in the last character)")
    return raw


def envelope_size(data: bytes | str) -> int:
    """Bytes of an envelope after base64 decoding, without decoding it (check 0).

    For text, three bytes per four characters less the padding: exact for valid base64, and what
    a device computes before it allocates. Anything else that is not bytes counts 0 (check 1
    refuses it).
    """
    if isinstance(data, str):
        padding = len(data) - len(data.rstrip("="))
        return len(data) * 3 // 4 - min(padding, 2)
    if isinstance(data, bytes | bytearray | memoryview):
        return len(data)
    return 0


def parse_sign1(data: bytes | str, expected_content_type: str) -> Sign1:
    """docs/format.md checks 0 (this envelope's size) and 1: parse a tagged COSE_Sign1 (CBOR
    bytes, or its base64 text).

    Raises:
        TrustError: `SignatureInvalid`, saying what is wrong with the structure.
    """
    size = envelope_size(data)
    if size > MAX_ENVELOPE_BYTES:
        raise _invalid(f"envelope is {size} bytes, more than the limit {MAX_ENVELOPE_BYTES}")
    if isinstance(data, str):
        data = decode_b64(data)
    if not isinstance(data, bytes | bytearray | memoryview):
        raise _invalid(f"envelope is a {type(data).__name__}, expected bytes or base64 text")
    data = bytes(data)
    if not data.startswith(_TAG_SIGN1):
        raise _invalid("envelope is not a tagged COSE_Sign1 (CBOR tag 18)")
    try:
        items = cbor.decode(data[1:])
    except TrustError as exc:
        raise _invalid(f"envelope: {exc.message}") from None
    if not isinstance(items, list) or len(items) != 4:
        raise _invalid("envelope is not a COSE_Sign1 array of 4 elements")
    protected, unprotected, payload, signature = items
    if not isinstance(protected, bytes):
        raise _invalid("protected header is not a byte string")
    if unprotected != {}:
        raise _invalid("unprotected header is not the empty map")
    if not isinstance(payload, bytes):
        raise _invalid("payload is not a byte string (detached payloads are not used)")
    if not isinstance(signature, bytes):
        raise _invalid("signature is not a byte string")
    alg, content_type, kid = _parse_protected(protected)
    if content_type != expected_content_type:
        raise _invalid(f"content type is {content_type!r}, expected {expected_content_type!r}")
    return Sign1(protected, payload, signature, alg, content_type, kid)


def _parse_protected(protected: bytes) -> tuple[int, str, bytes]:
    try:
        header = cbor.decode(protected)
    except TrustError as exc:
        raise _invalid(f"protected header: {exc.message}") from None
    if not isinstance(header, dict) or set(header) != {_HDR_ALG, _HDR_CONTENT_TYPE, _HDR_KID}:
        raise _invalid(
            "protected header must be a map of exactly alg (1), content type (3), kid (4)"
        )
    alg, content_type, kid = header[_HDR_ALG], header[_HDR_CONTENT_TYPE], header[_HDR_KID]
    if alg not in (Algorithm.ED25519.cose_alg, Algorithm.ES256.cose_alg):
        raise _invalid(f"alg {alg!r} is not EdDSA (-8) or ES256 (-7)")
    if not isinstance(content_type, str):
        raise _invalid("content type is not text")
    if not isinstance(kid, bytes) or len(kid) != _KID_BYTES:
        raise _invalid("kid is not a 32-byte keyId")
    return alg, content_type, kid


def to_be_signed(protected: bytes, payload: bytes) -> bytes:
    """ToBeSigned: the deterministic encoding of ["Signature1", protected, h'', payload]."""
    return cbor.encode(["Signature1", protected, b"", payload])


def verify_sign1(message: Sign1, algorithm: Algorithm, spki_der: bytes) -> None:
    """docs/format.md check 3: `alg` must be the key's algorithm (pinned from the key), then the
    signature.

    Raises:
        TrustError: `SignatureInvalid`.
    """
    if message.alg != algorithm.cose_alg:
        raise _invalid(
            f"envelope says alg {message.alg} but key {message.key_id} is {algorithm} "
            f"(alg {algorithm.cose_alg})"
        )
    if len(message.signature) != SIGNATURE_BYTES:
        raise _invalid(
            f"signature is {len(message.signature)} bytes, expected {SIGNATURE_BYTES} "
            f"({'raw r||s' if algorithm is Algorithm.ES256 else 'Ed25519'})"
        )
    tbs = to_be_signed(message.protected, message.payload)
    if not verify_signature(algorithm, spki_der, tbs, message.signature):
        raise _invalid(f"signature does not verify with key {message.key_id}")


class Signer(Protocol):
    """Something that signs ToBeSigned with one private key: a file key, or a key in an HSM."""

    @property
    def algorithm(self) -> Algorithm: ...

    @property
    def key_id(self) -> str:
        """Hex keyId of the signing key (its `kid`)."""
        ...

    def sign(self, tbs: bytes) -> bytes:
        """The raw signature of `tbs`: 64 bytes (Ed25519, or ES256 r||s over SHA-256(tbs))."""
        ...


def sign1(signer: Signer, content_type: str, payload: bytes) -> bytes:
    """Sign `payload` (already deterministic CBOR) into a tagged COSE_Sign1; its CBOR bytes.

    Raises:
        ValueError: when the signer returns something other than a raw 64-byte signature (a DER
            ECDSA signature is the classic mistake).
    """
    protected = cbor.encode(
        {
            _HDR_ALG: signer.algorithm.cose_alg,
            _HDR_CONTENT_TYPE: content_type,
            _HDR_KID: bytes.fromhex(signer.key_id),
        }
    )
    signature = signer.sign(to_be_signed(protected, payload))
    if len(signature) != SIGNATURE_BYTES:
        raise ValueError(
            f"signer returned {len(signature)} bytes, "
            f"expected a raw {SIGNATURE_BYTES}-byte signature"
        )
    return _TAG_SIGN1 + cbor.encode([protected, {}, payload, signature])
