"""The keys a fleet knows, and the root-signed documents that put keys in or out of it.

docs/format.md "Key endorsement", "Revocation" and "The fleet root"; docs/design.md "Resources"
(the trust set of a tier at time t). Trust is expensive: a tier key enters a `KeyRing` only
through a `KeyRecord` made by `endorsed_record`, whose tier, algorithm and validity come from the
verified root-signed payload, never from the caller. Distrust is cheap: `revoked=True` needs no
signature.

Root-signed documents are checked in the order of docs/format.md "Order of checks":
1. envelope structure and content type → `SignatureInvalid`;
2. the signer must be one of the given roots → `UnknownKey` (revoked root → `KeyRevoked`,
   retired root → `KeyExpired`);
3. `alg` against the root key, the signature → `SignatureInvalid`;
4. the payload: deterministic, exactly its table, keyId = SHA-256(publicKey), algorithm matches
   publicKey, notAfter > notBefore → `SignatureInvalid`;
5. the payload against what the caller declares (fleet, and for `verify_endorsement` the
   SigningKey's fields) → `ManifestMismatch`.
Roots are configured out of band; no `now` is involved, the validity of a root is the caller's.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Final, Literal

from flashgate.trust.cose import CT_KEY, CT_REVOCATION, parse_sign1, verify_sign1
from flashgate.trust.keys import key_id as compute_key_id
from flashgate.trust.keys import load_spki
from flashgate.trust.payloads import MAX_UINT, KeyEndorsement, Revocation
from flashgate.trust.vocabulary import Algorithm, Reason, Tier, TrustError, Verdict, format_time

ROOT: Final = "root"
ROOT_NOT_AFTER: Final = MAX_UINT
"""A root is configured out of band (sidecar configuration, device ROM) and trusted for as long
as it is configured: the end of the wire format's time range (uint64 seconds)."""


@dataclass(frozen=True)
class KeyRecord:
    """One public key the fleet knows: a tier key (from its endorsement) or a root.

    Attributes:
        key_id: 64 lowercase hex digits, SHA-256 of `public_key`.
        tier: The one tier it may sign releases for, or "root" (signs no releases).
        algorithm: Its signature algorithm.
        public_key: DER SubjectPublicKeyInfo.
        not_before: Start of validity, Unix seconds (inclusive).
        not_after: End of validity, Unix seconds (exclusive).
        revoked: Distrusted for good.
        retired: Rotated out (its overlap window is over): no longer trusted for new releases.
        name: The SigningKey's name, for messages.
    """

    key_id: str
    tier: Tier | Literal["root"]
    algorithm: Algorithm
    public_key: bytes
    not_before: int
    not_after: int
    revoked: bool = False
    retired: bool = False
    name: str = ""

    def __post_init__(self) -> None:
        if self.tier != ROOT:
            object.__setattr__(self, "tier", Tier(self.tier))
        object.__setattr__(self, "algorithm", Algorithm(self.algorithm))
        if self.key_id != compute_key_id(self.public_key):
            raise ValueError(f"key_id {self.key_id!r} is not the SHA-256 of public_key")

    @property
    def label(self) -> str:
        """How messages name the key: "name (keyId)" or the keyId."""
        return f"{self.name} ({self.key_id})" if self.name else self.key_id

    def valid_at(self, now: int) -> bool:
        """Inside its validity window: not_before <= now < not_after."""
        return self.not_before <= now < self.not_after


def root_key(spki_der: bytes, algorithm: Algorithm, name: str = "") -> KeyRecord:
    """A fleet root as a KeyRecord of tier "root", trusted for as long as it is configured.

    Raises:
        TrustError: `SignatureInvalid` when the bytes are not a canonical key of `algorithm`.
    """
    load_spki(spki_der, algorithm)
    return KeyRecord(
        key_id=compute_key_id(spki_der),
        tier=ROOT,
        algorithm=algorithm,
        public_key=spki_der,
        not_before=0,
        not_after=ROOT_NOT_AFTER,
        name=name,
    )


def _merge(a: KeyRecord, b: KeyRecord) -> KeyRecord:
    """One record for a key listed twice: distrust wins, validity is the intersection."""
    if (a.tier, a.algorithm, a.public_key) != (b.tier, b.algorithm, b.public_key):
        raise ValueError(f"conflicting records for key {a.key_id}: tier {a.tier} vs {b.tier}")
    return replace(
        a,
        not_before=max(a.not_before, b.not_before),
        not_after=min(a.not_after, b.not_after),
        revoked=a.revoked or b.revoked,
        retired=a.retired or b.retired,
        name=a.name or b.name,
    )


class KeyRing:
    """Every key a fleet knows, roots included, by keyId.

    Records with the same keyId collapse into one: revoked or retired if any of them is, valid
    only where all of them are.

    Raises:
        ValueError: when two records of one keyId disagree on tier, algorithm or public key.
    """

    def __init__(self, records: Iterable[KeyRecord]) -> None:
        merged: dict[str, KeyRecord] = {}
        for record in records:
            known = merged.get(record.key_id)
            merged[record.key_id] = record if known is None else _merge(known, record)
        self._records = merged

    def get(self, key_id: str) -> KeyRecord | None:
        return self._records.get(key_id)

    def roots(self) -> list[KeyRecord]:
        """The root records (tier "root")."""
        return [r for r in self._records.values() if r.tier == ROOT]

    def __iter__(self) -> Iterator[KeyRecord]:
        return iter(self._records.values())

    def __len__(self) -> int:
        return len(self._records)


def _root_signed_payload(
    envelope: bytes | str, content_type: str, roots: Sequence[KeyRecord]
) -> tuple[bytes, KeyRecord]:
    """Checks 1-3 for a root-signed envelope: its verified payload bytes and the root."""
    message = parse_sign1(envelope, content_type)
    root = next((r for r in roots if r.tier == ROOT and r.key_id == message.key_id), None)
    if root is None:
        raise TrustError(
            Reason.UnknownKey, f"signed by key {message.key_id}, which is not a fleet root"
        )
    if root.revoked:
        raise TrustError(Reason.KeyRevoked, f"signed by root {root.label}, which is revoked")
    if root.retired:
        raise TrustError(Reason.KeyExpired, f"signed by root {root.label}, which is retired")
    verify_sign1(message, root.algorithm, root.public_key)
    return message.payload, root


def verified_endorsement(
    envelope: bytes | str, roots: Sequence[KeyRecord]
) -> tuple[KeyEndorsement, KeyRecord]:
    """Checks 1-4 of a key endorsement: its verified, decoded payload and the root that signed it.
    Nothing is compared with what a SigningKey declares (that is `endorsement_verdict`).

    Raises:
        TrustError: with the reason of the failed check.
    """
    payload, root = _root_signed_payload(envelope, CT_KEY, roots)
    return KeyEndorsement.from_cbor(payload), root


def _check_fleet(what: str, fleet: str, signed: str) -> None:
    if signed != fleet:
        raise TrustError(
            Reason.ManifestMismatch, f"{what} is for fleet {signed!r}, expected {fleet!r}"
        )


def endorsement_verdict(
    endorsement: KeyEndorsement,
    root: KeyRecord,
    fleet: str,
    *,
    tier: Tier,
    algorithm: Algorithm,
    public_key: bytes,
    not_before: int,
    not_after: int,
) -> Verdict:
    """Check 5: a verified endorsement (from `verified_endorsement`) against what a SigningKey
    declares; any difference is `ManifestMismatch`. Accepted: `key_ids` holds the root's keyId."""
    pairs = [
        ("fleet", fleet, endorsement.fleet),
        ("tier", str(tier), str(endorsement.tier)),
        ("algorithm", str(algorithm), str(endorsement.algorithm)),
        ("keyId", compute_key_id(public_key), endorsement.key_id.hex()),
        ("notBefore", not_before, endorsement.not_before),
        ("notAfter", not_after, endorsement.not_after),
    ]
    differences = [
        f"{name}: declared {declared!r}, endorsed {signed!r}"
        for name, declared, signed in pairs
        if declared != signed
    ]
    if differences:
        return Verdict.reject(
            Reason.ManifestMismatch,
            "key endorsement differs from the SigningKey: " + "; ".join(differences),
        )
    return Verdict.accept(
        f"key {endorsement.key_id.hex()} endorsed by root {root.label} for tier "
        f"{endorsement.tier}, valid {format_time(not_before)} to {format_time(not_after)}",
        key_ids=(root.key_id,),
    )


def verify_endorsement(
    envelope: bytes | str,
    fleet: str,
    roots: Sequence[KeyRecord],
    *,
    tier: Tier,
    algorithm: Algorithm,
    public_key: bytes,
    not_before: int,
    not_after: int,
) -> Verdict:
    """Whether a root endorsed exactly the key a SigningKey declares (checks 1-5 above).

    Args:
        envelope: The endorsement: COSE_Sign1 bytes or their base64 text.
        fleet: The fleet (namespace) of the SigningKey.
        roots: The fleet root records (tier "root"); other records are never roots.
        tier, algorithm, public_key, not_before, not_after: What the SigningKey declares; the
            endorsed payload must agree with each (else `ManifestMismatch`).

    Returns:
        A verdict; when accepted, `key_ids` holds the root's keyId (the signature that counted).
    """
    try:
        endorsement, root = verified_endorsement(envelope, roots)
    except TrustError as exc:
        return Verdict.reject(exc.reason, f"key endorsement: {exc.message}")
    return endorsement_verdict(
        endorsement,
        root,
        fleet,
        tier=tier,
        algorithm=algorithm,
        public_key=public_key,
        not_before=not_before,
        not_after=not_after,
    )


def record_of(
    endorsement: KeyEndorsement, name: str = "", revoked: bool = False, retired: bool = False
) -> KeyRecord:
    """The KeyRecord of a verified endorsement: tier, algorithm and validity from its payload."""
    return KeyRecord(
        key_id=endorsement.key_id.hex(),
        tier=endorsement.tier,
        algorithm=endorsement.algorithm,
        public_key=endorsement.public_key,
        not_before=endorsement.not_before,
        not_after=endorsement.not_after,
        revoked=revoked,
        retired=retired,
        name=name,
    )


def endorsed_record(
    envelope: bytes | str,
    fleet: str,
    roots: Sequence[KeyRecord],
    name: str = "",
    revoked: bool = False,
    retired: bool = False,
) -> KeyRecord:
    """The KeyRecord a root endorsement vouches for; tier, algorithm and validity come from the
    verified payload only.

    Raises:
        TrustError: with the reason of the failed check (1-4 above; another fleet is
            `ManifestMismatch`).
    """
    endorsement, _ = verified_endorsement(envelope, roots)
    _check_fleet("key endorsement", fleet, endorsement.fleet)
    return record_of(endorsement, name=name, revoked=revoked, retired=retired)


def verify_revocation(envelope: bytes | str, fleet: str, roots: Sequence[KeyRecord]) -> Revocation:
    """The verified root-signed revocation (what devices need; the cluster honours `revoked`
    with or without it).

    Raises:
        TrustError: with the reason of the failed check (1-4 above; another fleet is
            `ManifestMismatch`).
    """
    payload, _ = _root_signed_payload(envelope, CT_REVOCATION, roots)
    revocation = Revocation.from_cbor(payload)
    _check_fleet("revocation", fleet, revocation.fleet)
    return revocation
