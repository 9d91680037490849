"""Public keys, key ids and raw signature verification.

docs/format.md "Keys and keyId" (one canonical SubjectPublicKeyInfo per key; keyId = its SHA-256,
64 lowercase hex digits) and "Envelope" (EdDSA over ToBeSigned; ES256 as raw r||s over
SHA-256(ToBeSigned), RFC 9053 §2.1). Pure: bytes in, bytes or a bool out.
"""

from __future__ import annotations

import functools
import hashlib

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from flashgate.trust.vocabulary import Algorithm, Reason, TrustError

PublicKey = Ed25519PublicKey | ec.EllipticCurvePublicKey

SIGNATURE_BYTES = 64
"""Both algorithms: Ed25519 signatures and ES256 r||s (32 + 32 bytes)."""

# What cryptography raises for bytes that are not a key it can load: besides ValueError, it raises
# UnsupportedAlgorithm for algorithms and curves it knows by OID but does not implement.
_NOT_A_KEY = (ValueError, TypeError, UnsupportedAlgorithm)


def key_id(spki_der: bytes) -> str:
    """The keyId of a key: hex SHA-256 of its DER SubjectPublicKeyInfo."""
    return hashlib.sha256(spki_der).hexdigest()


def load_spki(spki_der: bytes, algorithm: Algorithm) -> PublicKey:
    """Load a DER SubjectPublicKeyInfo that must hold a key of `algorithm`.

    The DER must be the key's one canonical encoding (uncompressed P-256 point, nothing trailing;
    an Ed25519 point with y < p), so that one key has exactly one keyId; an Ed25519 key of small
    order is refused too. Loaded keys are remembered (a fleet verifies with the same few keys
    again and again; loading and checking a P-256 point costs as much as a third of a
    verification); refusals are not.

    Raises:
        TrustError: `SignatureInvalid` when the bytes are not such a key.
    """
    return _load_spki(bytes(spki_der), Algorithm(algorithm))


@functools.lru_cache(maxsize=4096)
def _load_spki(spki_der: bytes, algorithm: Algorithm) -> PublicKey:
    try:
        key = serialization.load_der_public_key(bytes(spki_der))
    except _NOT_A_KEY as exc:
        raise TrustError(
            Reason.SignatureInvalid, f"public key is not a DER SubjectPublicKeyInfo: {exc}"
        ) from None
    if algorithm is Algorithm.ED25519 and isinstance(key, Ed25519PublicKey):
        loaded: PublicKey = key
    elif (
        algorithm is Algorithm.ES256
        and isinstance(key, ec.EllipticCurvePublicKey)
        and isinstance(key.curve, ec.SECP256R1)
    ):
        loaded = key
    else:
        raise TrustError(
            Reason.SignatureInvalid,
            f"public key is a {_describe(key)} key, expected algorithm {algorithm}",
        )
    if _spki(loaded) != spki_der:
        raise TrustError(Reason.SignatureInvalid, "public key is not in its canonical DER encoding")
    if isinstance(loaded, Ed25519PublicKey):
        _check_ed25519_point(loaded.public_bytes_raw())
    return loaded


_ED25519_P = 2**255 - 19
_ED25519_Y8 = 0x7A03AC9277FDC74EC6CC392CFA53202A0F67100D760B3CBA4FD84D3D706A17C7
# The y of the 8 points whose order divides 8, either sign of x (libsodium refuses the same keys;
# tests/trust/test_keys.py derives them independently).
_ED25519_SMALL_ORDER_Y = frozenset({0, 1, _ED25519_P - 1, _ED25519_Y8, _ED25519_P - _ED25519_Y8})


def _check_ed25519_point(raw: bytes) -> None:
    """An Ed25519 key must be spelled canonically and not be of small order.

    OpenSSL loads any 32 bytes. A y >= p is a second spelling of the point with y - p (one key,
    two keyIds), and a key of small order verifies forged signatures (for the identity,
    (R = [S]B, S) verifies for every message): a root endorsement of either means more than it
    says.
    """
    y = int.from_bytes(raw, "little") & ((1 << 255) - 1)
    if y >= _ED25519_P:
        raise TrustError(
            Reason.SignatureInvalid, "Ed25519 public key is not canonical (y is not below p)"
        )
    if y in _ED25519_SMALL_ORDER_Y:
        raise TrustError(Reason.SignatureInvalid, "Ed25519 public key is a point of small order")


def _describe(key: object) -> str:
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}"
    return type(key).__name__.removesuffix("PublicKey").removeprefix("_")


def _spki(key: PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def spki_from_pem(pem: str) -> bytes:
    """DER SubjectPublicKeyInfo of a PEM public key (as a SigningKey's `publicKey` holds it).

    Raises:
        TrustError: `SignatureInvalid` when the text is not a PEM public key.
    """
    try:
        key = serialization.load_pem_public_key(pem.encode("ascii"))
    except (*_NOT_A_KEY, UnicodeError) as exc:
        raise TrustError(
            Reason.SignatureInvalid, f"public key is not a PEM SubjectPublicKeyInfo: {exc}"
        ) from None
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def spki_to_pem(der: bytes) -> str:
    """PEM text ("-----BEGIN PUBLIC KEY-----") of a DER SubjectPublicKeyInfo."""
    key = serialization.load_der_public_key(der)
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def verify_signature(algorithm: Algorithm, spki_der: bytes, tbs: bytes, signature: bytes) -> bool:
    """Whether `signature` is a valid `algorithm` signature of `tbs` by the key `spki_der`.

    ES256 signatures are raw r||s (32 + 32 bytes, big-endian) over SHA-256(tbs); DER is refused.

    Raises:
        TrustError: `SignatureInvalid` when `spki_der` is not a key of `algorithm`.
    """
    key = load_spki(spki_der, algorithm)
    if len(signature) != SIGNATURE_BYTES:
        return False
    try:
        if isinstance(key, Ed25519PublicKey):
            key.verify(signature, tbs)
        else:
            r = int.from_bytes(signature[:32], "big")
            s = int.from_bytes(signature[32:], "big")
            key.verify(encode_dss_signature(r, s), tbs, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True
