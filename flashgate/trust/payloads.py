"""Signed payloads: one frozen dataclass per table of docs/format.md "Payloads".

`to_cbor()` and `from_cbor(bytes)` are the only ways in and out. `from_cbor` is check 4 of
docs/format.md "Order of checks": deterministic encoding, exactly the keys of the table, the right
types, `v` = 1 and the right `type`; anything else is `SignatureInvalid` (it is only ever called on
a verified payload).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flashgate.trust import cbor
from flashgate.trust.keys import load_spki
from flashgate.trust.vocabulary import Algorithm, Reason, Tier, TrustError

FORMAT_VERSION = 1
MAX_UINT = 2**64 - 1
"""The largest unsigned integer a payload carries (times, securityVersion): CBOR's 64 bits."""
_SHA256_BYTES = 32


def _is_uint(value: object) -> bool:
    return type(value) is int and 0 <= value <= MAX_UINT


def _fields(data: object, what: str, schema: Mapping[str, type]) -> dict[str, Any]:
    """`data` as a dict with exactly the keys of `schema`, each of its type; else TrustError."""
    if not isinstance(data, dict):
        raise TrustError(Reason.SignatureInvalid, f"{what} is not a map")
    keys = set(data)
    if keys != set(schema):
        missing = ", ".join(sorted(set(schema) - keys))
        unknown = ", ".join(sorted(repr(k) for k in keys - set(schema)))
        problems = [
            f"missing {missing}" if missing else "",
            f"unknown {unknown}" if unknown else "",
        ]
        raise TrustError(
            Reason.SignatureInvalid,
            f"{what} keys differ from its table (docs/format.md): "
            + "; ".join(p for p in problems if p),
        )
    for key, kind in schema.items():
        value = data[key]
        ok = _is_uint(value) if kind is int else isinstance(value, kind)
        if not ok:
            wanted = "an unsigned integer" if kind is int else kind.__name__
            raise TrustError(Reason.SignatureInvalid, f"{what} field {key!r} is not {wanted}")
    return data


def _header(data: object, what: str, type_: str, schema: Mapping[str, type]) -> dict[str, Any]:
    fields = _fields(data, what, {"v": int, "type": str, **schema})
    if fields["v"] != FORMAT_VERSION:
        raise TrustError(
            Reason.SignatureInvalid, f"{what} v is {fields['v']}, expected {FORMAT_VERSION}"
        )
    if fields["type"] != type_:
        raise TrustError(
            Reason.SignatureInvalid, f"{what} type is {fields['type']!r}, expected {type_!r}"
        )
    return fields


def _build(what: str, factory: type[Any], **values: Any) -> Any:
    """Construct a payload from wire values; the dataclass's own checks (tier and algorithm
    names, ranges, sizes) become TrustError."""
    try:
        return factory(**values)
    except ValueError as exc:
        raise TrustError(Reason.SignatureInvalid, f"{what}: {exc}") from None


def _check_uint(name: str, value: int) -> None:
    if not _is_uint(value):
        raise ValueError(f"{name} {value!r} is not an unsigned 64-bit integer")


@dataclass(frozen=True)
class ReleaseManifest:
    """docs/format.md "Release manifest" (`application/vnd.flashgate.release+cbor`).

    Attributes:
        fleet: The fleet (the Kubernetes namespace of the release).
        product: Hardware class id the image is built for.
        tier: The release's tier.
        version: Human version, e.g. "4.2.0".
        security_version: Monotonic anti-rollback counter.
        artifact_name: File name of the image.
        artifact_size: Exact size of the image in bytes.
        artifact_sha256: SHA-256 of the image (32 raw bytes).
    """

    fleet: str
    product: str
    tier: Tier
    version: str
    security_version: int
    artifact_name: str
    artifact_size: int
    artifact_sha256: bytes

    def __post_init__(self) -> None:
        object.__setattr__(self, "tier", Tier(self.tier))
        _check_uint("securityVersion", self.security_version)
        _check_uint("artifact size", self.artifact_size)
        if (
            not isinstance(self.artifact_sha256, bytes)
            or len(self.artifact_sha256) != _SHA256_BYTES
        ):
            raise ValueError("artifact sha256 is not 32 bytes")

    def to_cbor(self) -> bytes:
        return cbor.encode(
            {
                "v": FORMAT_VERSION,
                "type": "release",
                "fleet": self.fleet,
                "product": self.product,
                "tier": str(self.tier),
                "version": self.version,
                "securityVersion": self.security_version,
                "artifact": {
                    "name": self.artifact_name,
                    "size": self.artifact_size,
                    "sha256": self.artifact_sha256,
                },
            }
        )

    @classmethod
    def from_cbor(cls, data: bytes) -> ReleaseManifest:
        what = "release manifest"
        fields = _header(
            cbor.decode(data),
            what,
            "release",
            {
                "fleet": str,
                "product": str,
                "tier": str,
                "version": str,
                "securityVersion": int,
                "artifact": dict,
            },
        )
        artifact = _fields(
            fields["artifact"], f"{what} artifact", {"name": str, "size": int, "sha256": bytes}
        )
        manifest: ReleaseManifest = _build(
            what,
            cls,
            fleet=fields["fleet"],
            product=fields["product"],
            tier=fields["tier"],
            version=fields["version"],
            security_version=fields["securityVersion"],
            artifact_name=artifact["name"],
            artifact_size=artifact["size"],
            artifact_sha256=artifact["sha256"],
        )
        return manifest

    def differences(
        self, signed: ReleaseManifest, labels: tuple[str, str] = ("expected", "signed")
    ) -> list[str]:
        """Each field where `signed` differs from this (expected) manifest, as
        "field: expected X, signed Y", in docs/format.md order and wire names."""
        pairs = [
            ("fleet", self.fleet, signed.fleet),
            ("product", self.product, signed.product),
            ("tier", str(self.tier), str(signed.tier)),
            ("version", self.version, signed.version),
            ("securityVersion", self.security_version, signed.security_version),
            ("artifact.name", self.artifact_name, signed.artifact_name),
            ("artifact.size", self.artifact_size, signed.artifact_size),
            ("artifact.sha256", self.artifact_sha256.hex(), signed.artifact_sha256.hex()),
        ]
        return [
            f"{name}: {labels[0]} {mine!r}, {labels[1]} {theirs!r}"
            for name, mine, theirs in pairs
            if mine != theirs
        ]


@dataclass(frozen=True)
class KeyEndorsement:
    """docs/format.md "Key endorsement" (`application/vnd.flashgate.key+cbor`), signed by the root.

    The table's own rules hold for every instance: keyId = SHA-256(publicKey), algorithm matches
    publicKey, notAfter > notBefore.

    Attributes:
        fleet: The fleet the key belongs to.
        tier: The one tier this key may sign.
        key_id: SHA-256 of `public_key` (32 raw bytes).
        algorithm: The key's algorithm.
        public_key: DER SubjectPublicKeyInfo.
        not_before: Start of validity, Unix seconds.
        not_after: End of validity (exclusive), Unix seconds.
    """

    fleet: str
    tier: Tier
    key_id: bytes
    algorithm: Algorithm
    public_key: bytes
    not_before: int
    not_after: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "tier", Tier(self.tier))
        object.__setattr__(self, "algorithm", Algorithm(self.algorithm))
        _check_uint("notBefore", self.not_before)
        _check_uint("notAfter", self.not_after)
        if self.not_after <= self.not_before:
            raise ValueError(f"notAfter {self.not_after} is not after notBefore {self.not_before}")
        if self.key_id != hashlib.sha256(self.public_key).digest():
            raise ValueError(
                f"keyId {self.key_id.hex()} is not SHA-256(publicKey) "
                f"{hashlib.sha256(self.public_key).hexdigest()}"
            )
        try:
            load_spki(self.public_key, self.algorithm)
        except TrustError as exc:
            raise ValueError(exc.message) from None

    def to_cbor(self) -> bytes:
        return cbor.encode(
            {
                "v": FORMAT_VERSION,
                "type": "key",
                "fleet": self.fleet,
                "tier": str(self.tier),
                "keyId": self.key_id,
                "algorithm": str(self.algorithm),
                "publicKey": self.public_key,
                "notBefore": self.not_before,
                "notAfter": self.not_after,
            }
        )

    @classmethod
    def from_cbor(cls, data: bytes) -> KeyEndorsement:
        what = "key endorsement"
        fields = _header(
            cbor.decode(data),
            what,
            "key",
            {
                "fleet": str,
                "tier": str,
                "keyId": bytes,
                "algorithm": str,
                "publicKey": bytes,
                "notBefore": int,
                "notAfter": int,
            },
        )
        endorsement: KeyEndorsement = _build(
            what,
            cls,
            fleet=fields["fleet"],
            tier=fields["tier"],
            key_id=fields["keyId"],
            algorithm=fields["algorithm"],
            public_key=fields["publicKey"],
            not_before=fields["notBefore"],
            not_after=fields["notAfter"],
        )
        return endorsement


@dataclass(frozen=True)
class Revocation:
    """docs/format.md "Revocation" (`...revocation+cbor`), signed by the root.

    Attributes:
        fleet: The fleet.
        key_id: keyId of the revoked key (32 raw bytes).
        revoked_at: When it was revoked, Unix seconds.
        reason: Free text, may be empty.
    """

    fleet: str
    key_id: bytes
    revoked_at: int
    reason: str

    def __post_init__(self) -> None:
        _check_uint("revokedAt", self.revoked_at)
        if not isinstance(self.key_id, bytes) or len(self.key_id) != _SHA256_BYTES:
            raise ValueError("keyId is not 32 bytes")

    def to_cbor(self) -> bytes:
        return cbor.encode(
            {
                "v": FORMAT_VERSION,
                "type": "revocation",
                "fleet": self.fleet,
                "keyId": self.key_id,
                "revokedAt": self.revoked_at,
                "reason": self.reason,
            }
        )

    @classmethod
    def from_cbor(cls, data: bytes) -> Revocation:
        what = "revocation"
        fields = _header(
            cbor.decode(data),
            what,
            "revocation",
            {"fleet": str, "keyId": bytes, "revokedAt": int, "reason": str},
        )
        revocation: Revocation = _build(
            what,
            cls,
            fleet=fields["fleet"],
            key_id=fields["keyId"],
            revoked_at=fields["revokedAt"],
            reason=fields["reason"],
        )
        return revocation
