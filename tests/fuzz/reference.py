"""A second, independent reading of docs/format.md, for differential fuzzing of flashgate.trust.

Written from the format description alone, on cbor2 and cryptography directly: no flashgate code is
imported here. It is slow and plain on purpose; the fuzz targets compare its decisions with the
trust core's (the core must never accept what this refuses, and gives the same reason).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cbor2
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

MAX_ENVELOPES = 16
MAX_ENVELOPE_BYTES = 16384
TIERS = ("bootloader", "os", "application", "driver", "config")
COSE_ALG = {"ed25519": -8, "ecdsa-p256-sha256": -7}
CT = {
    "release": "application/vnd.flashgate.release+cbor",
    "key": "application/vnd.flashgate.key+cbor",
    "revocation": "application/vnd.flashgate.revocation+cbor",
}
TABLES: dict[str, dict[str, str]] = {
    "release": {
        "v": "uint",
        "type": "tstr",
        "fleet": "tstr",
        "product": "tstr",
        "tier": "tstr",
        "version": "tstr",
        "securityVersion": "uint",
        "artifact": "map",
    },
    "key": {
        "v": "uint",
        "type": "tstr",
        "fleet": "tstr",
        "tier": "tstr",
        "keyId": "bstr",
        "algorithm": "tstr",
        "publicKey": "bstr",
        "notBefore": "uint",
        "notAfter": "uint",
    },
    "revocation": {
        "v": "uint",
        "type": "tstr",
        "fleet": "tstr",
        "keyId": "bstr",
        "revokedAt": "uint",
        "reason": "tstr",
    },
}
ARTIFACT_TABLE = {"name": "tstr", "size": "uint", "sha256": "bstr"}


class Refused(Exception):
    """The reference refuses; `reason` is a rejection reason name of docs/format.md."""

    def __init__(self, reason: str, why: str) -> None:
        super().__init__(f"{reason}: {why}")
        self.reason = reason


def invalid(why: str) -> Refused:
    return Refused("SignatureInvalid", why)


# --- deterministic CBOR ------------------------------------------------------------------------


def _refuse_tag(*_: Any) -> Any:
    raise ValueError("tags are not part of the format")


# cbor2 gives meaning to these tags while it parses (value sharing 28/29 would even expand);
# the format has no tags, so each is refused the moment it is met.
_NO_SEMANTICS = {tag: _refuse_tag for tag in (*range(0, 64), 256, 258, 260, 261, 1004, 55799)}


MAX_DEPTH = 16
"""Containers nested deeper are refused (the format nests three deep at most)."""


def _plain(value: Any, depth: int = 0) -> None:
    """Only the format's data model: 64-bit integers, bytes, text, arrays, int/text-keyed maps."""
    if isinstance(value, list | tuple | dict) and depth >= MAX_DEPTH:
        raise invalid("nested too deeply")
    if type(value) is int:
        if not -(2**64) <= value < 2**64:
            raise invalid("integer beyond 64 bits")
    elif isinstance(value, bytes | str):
        pass
    elif isinstance(value, list | tuple):
        for item in value:
            _plain(item, depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            if type(key) is not int and not isinstance(key, str):
                raise invalid("map key neither integer nor text")
            _plain(key, depth + 1)
            _plain(item, depth + 1)
    else:
        raise invalid(f"{type(value).__name__} is not in the data model")


def _bytewise(value: Any) -> Any:
    """The value with every map's entries in the bytewise order of their encoded keys."""
    if isinstance(value, list | tuple):
        return [_bytewise(item) for item in value]
    if isinstance(value, dict):
        entries = sorted(value.items(), key=lambda kv: cbor2.dumps(kv[0]))
        return {key: _bytewise(item) for key, item in entries}
    return value


def _lists(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [_lists(item) for item in value]
    if isinstance(value, dict):
        return {key: _lists(item) for key, item in value.items()}
    return value


def decode(data: bytes) -> Any:
    """The value of deterministic CBOR bytes (arrays as lists), or Refused."""
    try:
        value = cbor2.loads(
            data,
            allow_indefinite=False,
            allow_duplicate_keys=False,
            max_depth=MAX_DEPTH + 8,  # depth is judged below, by the format's own count
            semantic_decoders=_NO_SEMANTICS,
            tag_hook=_refuse_tag,
        )
    except Exception as exc:  # cbor2 raises several types for bad input
        raise invalid(f"cbor2: {exc}") from None
    _plain(value)
    # cbor2 writes shortest integers and lengths and keeps insertion order: with the maps put in
    # bytewise key order, its output is the one deterministic encoding.
    if cbor2.dumps(_bytewise(value)) != data:
        raise invalid("not the deterministic encoding")
    return _lists(value)


# --- base64 and sizes --------------------------------------------------------------------------


def b64(text: str) -> bytes:
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeError, binascii.Error, ValueError):
        raise invalid("not base64") from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise invalid("not canonical base64")
    return raw


def size(envelope: bytes | str) -> int:
    """Bytes after base64 decoding; for text that is not base64, what its length and padding
    promise (docs/format.md check 0)."""
    if isinstance(envelope, bytes):
        return len(envelope)
    try:
        return len(b64(envelope))
    except Refused:
        padding = min(len(envelope) - len(envelope.rstrip("=")), 2)
        return len(envelope) * 3 // 4 - padding


# --- keys --------------------------------------------------------------------------------------

_P = 2**255 - 19
_D = -121665 * pow(121666, -1, _P) % _P


def _ed_point(raw: bytes) -> tuple[int, int] | None:
    """RFC 8032 §5.1.3 decoding (y >= p is the caller's): None if not on the curve, Refused for
    the non-canonical -0."""
    y = int.from_bytes(raw, "little") & ((1 << 255) - 1)
    sign = raw[31] >> 7
    u, v = (y * y - 1) % _P, (_D * y * y + 1) % _P
    x = u * pow(v, 3, _P) * pow(u * pow(v, 7, _P), (_P - 5) // 8, _P) % _P
    if (v * x * x - u) % _P:
        x = x * pow(2, (_P - 1) // 4, _P) % _P
        if (v * x * x - u) % _P:
            return None
    if x == 0 and sign:
        raise invalid("Ed25519 x = 0 with the sign bit set (-0) is not canonical")
    if x & 1 != sign:
        x = _P - x
    return x, y


def _ed_add(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    (x1, y1), (x2, y2) = a, b
    t = _D * x1 * x2 * y1 * y2 % _P
    x3 = (x1 * y2 + x2 * y1) * pow(1 + t, -1, _P) % _P
    y3 = (y1 * y2 + x1 * x2) * pow(1 - t, -1, _P) % _P
    return x3, y3


def spki(der: bytes, algorithm: str) -> None:
    """Refused unless `der` is the canonical SubjectPublicKeyInfo of a usable key of `algorithm`."""
    try:
        key = serialization.load_der_public_key(der)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise invalid("not a public key") from None
    if algorithm == "ed25519":
        if not isinstance(key, Ed25519PublicKey):
            raise invalid("not Ed25519")
    elif algorithm == "ecdsa-p256-sha256":
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
            raise invalid("not P-256")
    else:
        raise invalid("unknown algorithm")
    canonical = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if canonical != der:
        raise invalid("not canonical DER")
    if isinstance(key, Ed25519PublicKey):
        raw = key.public_bytes_raw()
        if int.from_bytes(raw, "little") & ((1 << 255) - 1) >= _P:
            raise invalid("Ed25519 y >= p")
        point = _ed_point(raw)
        if point is not None:
            eight = point
            for _ in range(3):
                eight = _ed_add(eight, eight)
            if eight == (0, 1):
                raise invalid("Ed25519 point of small order")


def signature_ok(algorithm: str, der: bytes, tbs: bytes, signature: bytes) -> bool:
    key = serialization.load_der_public_key(der)
    if len(signature) != 64:
        return False
    try:
        if algorithm == "ed25519":
            assert isinstance(key, Ed25519PublicKey)
            key.verify(signature, tbs)
        else:
            assert isinstance(key, ec.EllipticCurvePublicKey)
            r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
            key.verify(encode_dss_signature(r, s), tbs, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


# --- envelope ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Envelope:
    protected: bytes
    payload: bytes
    signature: bytes
    alg: int
    kid: bytes


def envelope(data: bytes | str, kind: str) -> Envelope:
    """Check 1 (and this envelope's check 0): the parts of a tagged COSE_Sign1 of `kind`."""
    if size(data) > MAX_ENVELOPE_BYTES:
        raise invalid("envelope too large")
    raw = b64(data) if isinstance(data, str) else data
    if raw[:1] != b"\xd2":
        raise invalid("not tag 18")
    items = decode(raw[1:])
    if not isinstance(items, list) or len(items) != 4:
        raise invalid("not an array of 4")
    protected, unprotected, payload, signature = items
    if not all(isinstance(part, bytes) for part in (protected, payload, signature)):
        raise invalid("parts are not byte strings")
    if unprotected != {}:
        raise invalid("unprotected header not empty")
    header = decode(protected)
    if not isinstance(header, dict) or set(header) != {1, 3, 4}:
        raise invalid("protected header keys")
    if type(header[1]) is not int or header[1] not in (-8, -7):
        raise invalid("alg")
    if not isinstance(header[4], bytes) or len(header[4]) != 32:
        raise invalid("kid")
    if header[3] != CT[kind]:
        raise invalid("content type")
    return Envelope(protected, payload, signature, header[1], header[4])


def to_be_signed(message: Envelope) -> bytes:
    return cbor2.dumps(["Signature1", message.protected, b"", message.payload])


# --- payloads ----------------------------------------------------------------------------------


def _table(value: Any, table: dict[str, str]) -> dict[str, Any]:
    if not isinstance(value, dict) or set(value) != set(table):
        raise invalid("keys differ from the table")
    for key, kind in table.items():
        item = value[key]
        ok = {
            "uint": type(item) is int and 0 <= item < 2**64,
            "tstr": isinstance(item, str),
            "bstr": isinstance(item, bytes),
            "map": isinstance(item, dict),
        }[kind]
        if not ok:
            raise invalid(f"{key} is not a {kind}")
    return value


def payload(data: bytes, kind: str) -> dict[str, Any]:
    """Check 4: a payload of `kind` ("release", "key" or "revocation")."""
    fields = _table(decode(data), TABLES[kind])
    if fields["v"] != 1 or fields["type"] != kind:
        raise invalid("v or type")
    if kind == "release":
        if fields["tier"] not in TIERS:
            raise invalid("tier")
        artifact = _table(fields["artifact"], ARTIFACT_TABLE)
        if len(artifact["sha256"]) != 32:
            raise invalid("sha256 size")
    elif kind == "key":
        if fields["tier"] not in TIERS or fields["algorithm"] not in COSE_ALG:
            raise invalid("tier or algorithm")
        if len(fields["keyId"]) != 32 or fields["notAfter"] <= fields["notBefore"]:
            raise invalid("keyId size or validity")
        if hashlib.sha256(fields["publicKey"]).digest() != fields["keyId"]:
            raise invalid("keyId is not SHA-256(publicKey)")
        spki(fields["publicKey"], fields["algorithm"])
    elif len(fields["keyId"]) != 32:
        raise invalid("keyId size")
    return fields


# --- a release, checks 0-7 ---------------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    """A key the fleet knows, as plain data."""

    spki: bytes
    tier: str  # a tier name, or "root"
    algorithm: str
    not_before: int
    not_after: int
    revoked: bool = False
    retired: bool = False


def release(
    envelopes: Sequence[bytes | str],
    expected: dict[str, Any],
    keys: dict[bytes, Key],
    thresholds: dict[str, int],
    max_jump: int,
    floor: int | None,
    now: int,
) -> str | None:
    """None when the release may be published, else the reason (docs/format.md "Order of checks").

    `expected` is the release as the resource declares it, in the payload's own wire form.
    `keys` maps a keyId (32 bytes) to the key.
    """
    if len(envelopes) > MAX_ENVELOPES or any(size(e) > MAX_ENVELOPE_BYTES for e in envelopes):
        return "SignatureInvalid"
    tier = expected["tier"]
    good: list[tuple[bytes, bytes]] = []  # (kid, payload bytes)
    failures: list[str] = []
    for data in envelopes:
        try:
            message = envelope(data, "release")
            key = keys.get(message.kid)
            if key is None:
                raise Refused("UnknownKey", "not a key of the fleet")
            if key.revoked:
                raise Refused("KeyRevoked", "revoked")
            if key.retired or not key.not_before <= now < key.not_after:
                raise Refused("KeyExpired", "outside its validity or retired")
            if key.tier != tier:  # the root included: "root" is no tier
                raise Refused("KeyNotTrustedForTier", "another tier or the root")
            if message.alg != COSE_ALG[key.algorithm]:
                raise invalid("alg is not the key's")
            if not signature_ok(key.algorithm, key.spki, to_be_signed(message), message.signature):
                raise invalid("signature")
            payload(message.payload, "release")
            good.append((message.kid, message.payload))
        except Refused as refused:
            failures.append(refused.reason)
    if len({p for _, p in good}) > 1:
        return "ManifestMismatch"
    needed = thresholds.get(tier, 1)
    if len({kid for kid, _ in good}) < needed:
        return failures[0] if needed == 1 and failures else "ThresholdNotMet"
    signed = payload(good[0][1], "release")
    if signed != expected:
        return "ManifestMismatch"
    base = 0 if floor is None else floor
    if signed["securityVersion"] < base:
        return "RollbackRejected"
    if signed["securityVersion"] > base + max_jump:
        return "FastForwardRejected"
    return None


def artifact(expected: dict[str, Any], received: bytes, more: bool) -> str | None:
    """Check 8's tail: the bytes fetched (at most `size`; `more` when the source had more)."""
    if more or len(received) != expected["artifact"]["size"]:
        return "SizeMismatch"
    if hashlib.sha256(received).digest() != expected["artifact"]["sha256"]:
        return "HashMismatch"
    return None


# --- root-signed documents ---------------------------------------------------------------------


def root_signed(data: bytes | str, kind: str, roots: dict[bytes, Key]) -> dict[str, Any]:
    """Checks 1-4 of an endorsement or revocation: its payload, or Refused."""
    message = envelope(data, kind)
    root = roots.get(message.kid)
    if root is None or root.tier != "root":
        raise Refused("UnknownKey", "not signed by a fleet root")
    if root.revoked:
        raise Refused("KeyRevoked", "revoked root")
    if root.retired:
        raise Refused("KeyExpired", "retired root")
    if message.alg != COSE_ALG[root.algorithm]:
        raise invalid("alg is not the root's")
    if not signature_ok(root.algorithm, root.spki, to_be_signed(message), message.signature):
        raise invalid("signature")
    return payload(message.payload, kind)


def endorsement(
    data: bytes | str, fleet: str, roots: dict[bytes, Key], declared: Key
) -> str | None:
    """None when a root endorsed exactly the declared key, else the reason."""
    try:
        fields = root_signed(data, "key", roots)
    except Refused as refused:
        return refused.reason
    endorsed = (
        fields["fleet"], fields["tier"], fields["algorithm"], fields["keyId"],
        fields["notBefore"], fields["notAfter"],
    )  # fmt: skip
    wanted = (
        fleet, declared.tier, declared.algorithm, hashlib.sha256(declared.spki).digest(),
        declared.not_before, declared.not_after,
    )  # fmt: skip
    return None if endorsed == wanted else "ManifestMismatch"


def revocation(data: bytes | str, fleet: str, roots: dict[bytes, Key]) -> str | None:
    """None when a root revoked a key of `fleet`, else the reason."""
    try:
        fields = root_signed(data, "revocation", roots)
    except Refused as refused:
        return refused.reason
    return None if fields["fleet"] == fleet else "ManifestMismatch"
