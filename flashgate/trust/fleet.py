"""A fleet's keys from its SigningKey specs: the key ring a release is checked against, and the
keys the rotation state machine has retired. Pure: specs, roots and `now` in; verdicts, a
`KeyRing` or names out. The verifier sidecar and the signing station both call these functions,
so `flashgate verify` gives the cluster's verdict.

docs/design.md "Resources": trust is expensive, distrust is cheap.
- `check_signing_key`: did a configured root endorse exactly this spec? The endorsement is
  re-verified against the roots; the spec's tier, algorithm, public key and validity must agree
  with the verified payload.
- `check_revocation`: is `spec.revocation` a root-signed revocation of this key for this fleet?
- `fleet_keyring`: the roots plus each SigningKey whose endorsement holds, with tier, algorithm
  and validity from the verified payload only. `revoked` (the spec's, the caller's, or a verified
  root-signed revocation) and `retired` only ever remove trust; a root never becomes a tier key;
  a key endorsed for several tiers is trusted for none; duplicates merge with distrust winning.
- `retired_names`: the SigningKeys that the rotation state machine (`trust.rotation`) has
  retired at `now`, each spec turned into a `KeyState` by `SigningKeySpec.key_state`.
- `expected_manifest`: the release manifest a FirmwareRelease spec declares (what the signed
  one must equal).
- `EndorsementCache`: endorsements that verified, by the SHA-256 of their envelope bytes, the
  fleet and the root set. Each endorsement is verified at most once per request and, while it is
  cached, once across requests; failures are never cached.

Not re-exported by `flashgate.trust`: it reads the API's `SigningKeySpec` (`flashgate.api`),
which itself imports `flashgate.trust`.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from flashgate.api.firmwarerelease import FirmwareReleaseSpec
from flashgate.api.signingkey import SigningKeySpec
from flashgate.trust.cose import CT_RELEASE, decode_b64, parse_sign1
from flashgate.trust.keyring import (
    ROOT,
    KeyRecord,
    KeyRing,
    endorsement_verdict,
    record_of,
    verified_endorsement,
    verify_revocation,
)
from flashgate.trust.keys import key_id, spki_from_pem
from flashgate.trust.payloads import KeyEndorsement, ReleaseManifest
from flashgate.trust.rotation import KeyPhase, fleet_phases
from flashgate.trust.vocabulary import Reason, TrustError, Verdict

DEFAULT_CACHE_ENTRIES = 4096
"""Endorsements an `EndorsementCache` keeps: far more than the keys of the fleets one sidecar
serves, and a few MB at most."""


class SigningKeyEntry(Protocol):
    """One SigningKey of a fleet as a caller hands it over (`FleetKey`, or the sidecar API's
    `KeyEntry`): `retired` and `revoked` say what the spec alone cannot, and only remove trust."""

    @property
    def name(self) -> str: ...

    @property
    def spec(self) -> SigningKeySpec: ...

    @property
    def retired(self) -> bool: ...

    @property
    def revoked(self) -> bool: ...


@dataclass(frozen=True)
class FleetKey:
    """A SigningKey of the fleet.

    Attributes:
        name: The SigningKey's name.
        spec: Its spec.
        retired: The rotation state machine retired it (see `retired_names`).
        revoked: Revoked outside its spec (its keyId is on the fleet's revocation record).
    """

    name: str
    spec: SigningKeySpec
    retired: bool = False
    revoked: bool = False


# ---- the endorsement cache ------------------------------------------------------------------

_RootSet = tuple[tuple[str, str, bool, bool], ...]
_CacheKey = tuple[bytes, str, _RootSet]
_Verified = tuple[KeyEndorsement, KeyRecord]


def _root_set(roots: Sequence[KeyRecord]) -> _RootSet:
    """What of the roots a verification depends on: which keys, and whether they still count."""
    return tuple(sorted((r.key_id, str(r.algorithm), r.revoked, r.retired)
                        for r in roots if r.tier == ROOT))


class EndorsementCache:
    """Endorsements whose root signature verified and whose payload is for the fleet, by
    (SHA-256 of the envelope bytes, fleet, root set); least recently used ones leave first.

    A hit hands back the verified payload only: it is compared with the SigningKey's spec again
    on every use. Another fleet or another root set is another key, so a success is never reused
    for them. It also keeps the DER of the PEM public keys it decoded (`public_key`), so a
    fleet's unchanged keys cost a dictionary lookup each per request. Not thread-safe (the
    sidecar and the station run one thread).

    Args:
        max_entries: How many to keep; 0 turns caching across requests off.
    """

    def __init__(self, max_entries: int = DEFAULT_CACHE_ENTRIES) -> None:
        if max_entries < 0:
            raise ValueError("max_entries must be >= 0")
        self.max_entries = max_entries
        self._entries: OrderedDict[_CacheKey, _Verified] = OrderedDict()
        self._public_keys: OrderedDict[str, bytes] = OrderedDict()
        self.verifications = 0  # root signatures actually checked (the work the cache saves)
        self.hits = 0

    def __len__(self) -> int:
        return len(self._entries)

    def public_key(self, pem: str) -> bytes:
        """The DER SubjectPublicKeyInfo of a PEM public key (`keys.spki_from_pem`), remembered.

        Raises:
            TrustError: `SignatureInvalid` when the text is not a PEM public key (not cached).
        """
        found = self._public_keys.get(pem)
        if found is not None:
            self._public_keys.move_to_end(pem)
            return found
        spki = spki_from_pem(pem)
        if self.max_entries:
            self._public_keys[pem] = spki
            if len(self._public_keys) > self.max_entries:
                self._public_keys.popitem(last=False)
        return spki

    def verified(self, envelope: bytes | str, fleet: str, roots: Sequence[KeyRecord],
                 seen: dict[_CacheKey, _Verified | TrustError] | None = None) -> _Verified:
        """The verified payload of a key endorsement and the root that signed it (checks 1-4
        of `trust.keyring`); `seen` remembers outcomes, failures too, within one request.

        Raises:
            TrustError: with the reason of the failed check (never cached across requests).
        """
        raw = decode_b64(envelope) if isinstance(envelope, str) else bytes(envelope)
        key = (hashlib.sha256(raw).digest(), fleet, _root_set(roots))
        if seen is not None and key in seen:
            outcome = seen[key]
            if isinstance(outcome, TrustError):
                raise outcome
            return outcome
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
            self.hits += 1
        else:
            self.verifications += 1
            try:
                found = verified_endorsement(raw, roots)
            except TrustError as exc:
                if seen is not None:
                    seen[key] = exc
                raise
            # Only a full success is kept: a payload for another fleet is a mismatch every time.
            if found[0].fleet == fleet and self.max_entries:
                self._entries[key] = found
                if len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
        if seen is not None:
            seen[key] = found
        return found


# ---- one SigningKey -------------------------------------------------------------------------

@dataclass(frozen=True)
class EndorsementCheck:
    """Whether a root endorsed exactly a SigningKey's spec.

    Attributes:
        verdict: Accepted, or rejected with the reason (UnknownKey: not signed by a root;
            ManifestMismatch: the payload differs from the spec; SignatureInvalid: malformed).
        key_id: The keyId of spec.publicKey; None when publicKey is not a usable key.
        endorsement: The verified payload, when accepted.
    """

    verdict: Verdict
    key_id: str | None = None
    endorsement: KeyEndorsement | None = None

    @property
    def accepted(self) -> bool:
        return self.verdict.accepted


def _whole_seconds(value: datetime) -> int | None:
    """Unix seconds of a time, or None when it has a fraction (payloads carry whole seconds)."""
    return None if value.microsecond else int(value.timestamp())


def check_signing_key(spec: SigningKeySpec, fleet: str, roots: Sequence[KeyRecord],
                      cache: EndorsementCache | None = None, *,
                      seen: dict[_CacheKey, _Verified | TrustError] | None = None,
                      spki: bytes | None = None) -> EndorsementCheck:
    """Did one of `roots` endorse exactly this SigningKey of `fleet`? Never raises.

    `spki` is spec.publicKey already decoded (the caller's, to decode it once); `cache` and
    `seen` spare repeated signature checks of one endorsement.
    """
    if spki is None:
        try:
            spki = spki_from_pem(spec.public_key)
        except TrustError as exc:
            return EndorsementCheck(Verdict.reject(exc.reason, f"publicKey: {exc.message}"))
    kid = key_id(spki)
    not_before, not_after = _whole_seconds(spec.not_before), _whole_seconds(spec.not_after)
    if not_before is None or not_after is None:
        return EndorsementCheck(Verdict.reject(
            Reason.ManifestMismatch, "notBefore/notAfter have fractions of a second; "
            "endorsements carry whole seconds"), kid)
    try:
        verifier = cache if cache is not None else EndorsementCache(0)  # (an empty one is falsy)
        endorsement, root = verifier.verified(spec.endorsement, fleet, roots, seen)
    except TrustError as exc:
        return EndorsementCheck(Verdict.reject(exc.reason, f"key endorsement: {exc.message}"),
                                kid)
    verdict = endorsement_verdict(endorsement, root, fleet, tier=spec.tier,
                                  algorithm=spec.algorithm, public_key=spki,
                                  not_before=not_before, not_after=not_after)
    return EndorsementCheck(verdict, kid, endorsement if verdict.accepted else None)


@dataclass(frozen=True)
class RevocationCheck:
    """What spec.revocation says: `verified` is None without one, else whether it is a
    root-signed revocation of this keyId for this fleet; `message` says which."""

    verified: bool | None
    message: str | None = None


def check_revocation(spec: SigningKeySpec, fleet: str, roots: Sequence[KeyRecord],
                     key_id_hex: str) -> RevocationCheck:
    """Whether spec.revocation is a root-signed revocation of `key_id_hex`. Never raises."""
    if spec.revocation is None:
        return RevocationCheck(None)
    try:
        revocation = verify_revocation(spec.revocation, fleet, roots)
    except TrustError as exc:
        return RevocationCheck(False, f"revocation: {exc.reason}: {exc.message}")
    if revocation.key_id.hex() != key_id_hex:
        return RevocationCheck(False, f"revocation is of key {revocation.key_id.hex()}, not "
                                      f"{key_id_hex}")
    return RevocationCheck(True, f"revoked by a fleet root at {revocation.revoked_at}: "
                                 f"{revocation.reason}")


# ---- the fleet ------------------------------------------------------------------------------

@dataclass(frozen=True)
class FleetKeyring:
    """The key ring of a fleet, and why endorsed keys were left out of it (for the log)."""

    keyring: KeyRing
    left_out: tuple[str, ...] = ()


def expected_manifest(fleet: str, spec: FirmwareReleaseSpec) -> ReleaseManifest:
    """The release manifest a FirmwareRelease of `fleet` declares (docs/format.md step 6
    compares the signed one with it, field for field)."""
    return ReleaseManifest(
        fleet=fleet, product=spec.product, tier=spec.tier, version=spec.version,
        security_version=spec.security_version, artifact_name=spec.artifact.name,
        artifact_size=spec.artifact.size, artifact_sha256=bytes.fromhex(spec.artifact.sha256))


def signer_key_ids(envelopes: Iterable[bytes | str]) -> frozenset[str]:
    """The keyIds the release envelopes name (`kid`, unverified): the only keys a release check
    looks up. Malformed envelopes name none (the check refuses them by themselves)."""
    named = set()
    for envelope in envelopes:
        try:
            named.add(parse_sign1(envelope, CT_RELEASE).key_id)
        except TrustError:
            continue
    return frozenset(named)


def fleet_keyring(fleet: str, entries: Iterable[SigningKeyEntry], roots: Sequence[KeyRecord],
                  cache: EndorsementCache | None = None, *,
                  key_ids: Collection[str] | None = None) -> FleetKeyring:
    """The roots plus every SigningKey a root endorsed (see the module docstring).

    Args:
        fleet: The fleet (namespace).
        entries: Its SigningKeys, all tiers (a key of another tier still gives the release check
            KeyNotTrustedForTier rather than UnknownKey).
        roots: The configured fleet roots (KeyRecords of tier "root").
        cache: Verified endorsements kept across calls; without it, each distinct endorsement
            is still verified only once in this call.
        key_ids: When given, only SigningKeys whose public key has one of these keyIds are
            considered: a release check looks up only the keyIds its envelopes name
            (`signer_key_ids`), so the other keys cannot change its verdict, and their
            endorsements need not be verified.
    """
    roots = tuple(roots)
    root_ids = {r.key_id for r in roots}
    seen: dict[_CacheKey, _Verified | TrustError] = {}
    by_id: dict[str, list[KeyRecord]] = {}
    for entry in entries:
        record = _trusted_record(fleet, entry, roots, cache, seen, key_ids)
        if record is not None and record.key_id not in root_ids:  # a root stays a root
            by_id.setdefault(record.key_id, []).append(record)
    records: list[KeyRecord] = list(roots)
    left_out = []
    for kid, found in by_id.items():
        tiers = sorted({str(r.tier) for r in found})
        if len({(r.tier, r.algorithm) for r in found}) > 1:
            # The root endorsed one key for two tiers: trust it for neither.
            left_out.append(f"key {kid} is endorsed for several tiers ({', '.join(tiers)}); "
                            "trusted for none")
            continue
        records.extend(found)  # KeyRing merges duplicates: distrust wins
    return FleetKeyring(KeyRing(records), tuple(left_out))


def _trusted_record(fleet: str, entry: SigningKeyEntry, roots: Sequence[KeyRecord],
                    cache: EndorsementCache | None,
                    seen: dict[_CacheKey, _Verified | TrustError],
                    key_ids: Collection[str] | None) -> KeyRecord | None:
    """The key as the KeyRing may hold it, or None when its endorsement does not hold."""
    spec = entry.spec
    try:
        spki = (cache.public_key(spec.public_key) if cache is not None
                else spki_from_pem(spec.public_key))
    except TrustError:
        return None
    if key_ids is not None and key_id(spki) not in key_ids:
        return None
    check = check_signing_key(spec, fleet, roots, cache, seen=seen, spki=spki)
    if check.endorsement is None or check.key_id is None:
        return None
    revoked = (entry.revoked or spec.revoked
               or check_revocation(spec, fleet, roots, check.key_id).verified is True)
    return record_of(check.endorsement, name=entry.name, revoked=revoked, retired=entry.retired)


def retired_names(keys: Sequence[tuple[str, SigningKeySpec, bool | None]],
                  now: int) -> frozenset[str]:
    """The SigningKeys the rotation state machine has retired at `now` (replaced, overlap over).

    Args:
        keys: Every SigningKey of the fleet as (name, spec, endorsed), `endorsed` being None
            when its endorsement was not checked yet (an unchecked successor retires nothing).
        now: Unix seconds.
    """
    states = [spec.key_state(name, endorsed=endorsed) for name, spec, endorsed in keys]
    return frozenset(s.name for s, result in zip(states, fleet_phases(states, now), strict=True)
                     if result.phase == KeyPhase.Retired)
