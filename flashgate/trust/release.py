"""May this release be published? docs/format.md "Order of checks", steps 0-7 and the end of 8.

Bytes in, verdict out. The caller supplies the envelopes (CBOR bytes or base64 text), the release
as the resource declares it (an expected `ReleaseManifest`, fleet = namespace), every key the fleet
knows (`KeyRing`, roots included), the policy, the stored rollback floor and `now`. Fetching the
artifact and the URL policy live in the verifier sidecar; it reports the observed size and digest
to `check_artifact`.

First, for the release as a whole (before any envelope is decoded):
0. more than `MAX_SIGNATURES` envelopes, or one of more than `MAX_ENVELOPE_BYTES` after base64
   decoding (`cose.envelope_size`) → `SignatureInvalid`.
Then each envelope is checked on its own, in this order (a failed one does not count):
1. structure, tag, empty unprotected map, exactly alg/content-type/kid, content type
   → `SignatureInvalid`;
2. the key named by `kid` among all keys of the fleet: revoked → `KeyRevoked`; outside its
   validity or retired → `KeyExpired`; the root, or another tier than the release's
   → `KeyNotTrustedForTier`; unknown → `UnknownKey`;
3. `alg` against the key's algorithm, the signature → `SignatureInvalid`;
4. the payload: deterministic, exactly the release table, right types, v = 1 → `SignatureInvalid`.
Then, over all envelopes:
5. every valid envelope carries the same payload bytes, else `ManifestMismatch`; a tier needing
   k > 1 signatures needs k distinct verified keyIds, else `ThresholdNotMet`; with k = 1 and no
   valid envelope, the first failure's own reason;
6. the signed manifest equals the expected one field for field, else `ManifestMismatch`;
7. securityVersion below the floor → `RollbackRejected`; above floor + maximum jump
   → `FastForwardRejected`. No floor yet counts as a floor of 0 (see `check_rollback`).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from flashgate.trust.cose import (
    CT_RELEASE,
    MAX_ENVELOPE_BYTES,
    envelope_size,
    parse_sign1,
    verify_sign1,
)
from flashgate.trust.keyring import ROOT, KeyRecord, KeyRing
from flashgate.trust.payloads import ReleaseManifest
from flashgate.trust.vocabulary import Reason, Tier, TrustError, Verdict, format_time

MAX_SIGNATURES = 16
"""More envelopes than this on one release are refused unread (each costs a verification)."""


@dataclass(frozen=True)
class Policy:
    """Fleet policy for releases.

    Attributes:
        thresholds: Distinct trusted keys a release of a tier needs; tiers not listed need 1.
        max_security_version_jump: How far above the floor a securityVersion may be (>= 0).
    """

    thresholds: Mapping[Tier, int] = field(default_factory=dict)
    max_security_version_jump: int = 100

    def __post_init__(self) -> None:
        thresholds = {Tier(tier): k for tier, k in self.thresholds.items()}
        if any(type(k) is not int or k < 1 for k in thresholds.values()):
            raise ValueError(f"thresholds must be integers >= 1: {thresholds}")
        if self.max_security_version_jump < 0:
            raise ValueError("max_security_version_jump must be >= 0")
        object.__setattr__(self, "thresholds", MappingProxyType(thresholds))

    def threshold(self, tier: Tier) -> int:
        return self.thresholds.get(tier, 1)


def check_rollback(
    security_version: int, floor: int | None, max_jump: int, *, subject: str = ""
) -> Verdict:
    """Step 7: the anti-rollback floor (docs/design.md "Anti-rollback").

    Equal to the floor is allowed (a functional rollback within one security epoch). No floor yet
    (`None`) counts as 0, so the very first release is bounded by `max_jump` too: a stolen key must
    not be able to set the first floor out of reach. A fleet whose devices already sit higher
    raises the floor on purpose before its first release.

    Args:
        security_version: The signed securityVersion.
        floor: The stored floor for (fleet, product, tier), or None when none was recorded yet.
        max_jump: The largest allowed securityVersion - floor.
        subject: Names the floor in messages, e.g. "gw-3000/application".
    """
    where = f" for {subject}" if subject else ""
    base = 0 if floor is None else floor
    shown = "0 (none recorded yet)" if floor is None else str(floor)
    if security_version < base:
        return Verdict.reject(
            Reason.RollbackRejected,
            f"securityVersion {security_version} is below the floor {shown}{where}",
        )
    if security_version > base + max_jump:
        return Verdict.reject(
            Reason.FastForwardRejected,
            f"securityVersion {security_version} is more than {max_jump} above the floor "
            f"{shown}{where} (at most {base + max_jump} allowed)",
        )
    return Verdict.accept(
        f"securityVersion {security_version} is within [{base}, {base + max_jump}]{where}"
    )


@dataclass(frozen=True)
class _Signed:
    position: int
    key_id: str
    payload: bytes
    manifest: ReleaseManifest


def _release_key(keyring: KeyRing, key_id: str, tier: Tier, now: int) -> KeyRecord:
    """Step 2: the key named by `kid`, if it may sign a release of `tier` at `now`."""
    record = keyring.get(key_id)
    if record is None:
        raise TrustError(Reason.UnknownKey, f"keyId {key_id} is not a key of this fleet")
    if record.revoked:
        raise TrustError(Reason.KeyRevoked, f"key {record.label} is revoked")
    if record.retired:
        raise TrustError(Reason.KeyExpired, f"key {record.label} is retired")
    if not record.valid_at(now):
        raise TrustError(
            Reason.KeyExpired,
            f"key {record.label} is valid from {format_time(record.not_before)} until "
            f"{format_time(record.not_after)}, not at {format_time(now)}",
        )
    if record.tier == ROOT:
        raise TrustError(
            Reason.KeyNotTrustedForTier,
            f"key {record.label} is the fleet root, which signs only key endorsements and "
            "revocations, never releases",
        )
    if record.tier != tier:
        raise TrustError(
            Reason.KeyNotTrustedForTier,
            f"key {record.label} is trusted for tier {record.tier}, not {tier}",
        )
    return record


def _check_envelope(
    position: int, envelope: bytes | str, tier: Tier, keyring: KeyRing, now: int
) -> _Signed:
    """Steps 1-4 for one envelope (`position` counts from 1, for messages)."""
    message = parse_sign1(envelope, CT_RELEASE)
    record = _release_key(keyring, message.key_id, tier, now)
    verify_sign1(message, record.algorithm, record.public_key)
    return _Signed(
        position, record.key_id, message.payload, ReleaseManifest.from_cbor(message.payload)
    )


def verify_release(
    envelopes: Sequence[bytes | str],
    expected: ReleaseManifest,
    keyring: KeyRing,
    policy: Policy,
    floor: int | None,
    now: int,
) -> Verdict:
    """Steps 0-7 of docs/format.md "Order of checks" (see the module docstring). Never raises.

    Args:
        envelopes: The release's signatures: COSE_Sign1 bytes or base64 text, one per signer.
        expected: The release as the resource declares it (fleet = its namespace).
        keyring: Every key the fleet knows, roots included.
        policy: Thresholds and the maximum securityVersion jump.
        floor: The stored rollback floor for (fleet, product, tier); None if none yet.
        now: Unix seconds, fixed for this evaluation.

    Returns:
        The verdict; when the signatures verified, `key_ids` and `manifest` are set even on a
        later rejection (ManifestMismatch of step 6, rollback).
    """
    if isinstance(envelopes, str | bytes):
        envelopes = [envelopes]
    # Step 0: sizes refuse the whole release, before any envelope is decoded.
    if len(envelopes) > MAX_SIGNATURES:
        return Verdict.reject(
            Reason.SignatureInvalid,
            f"release carries {len(envelopes)} signatures, more than the limit {MAX_SIGNATURES}",
        )
    for index, envelope in enumerate(envelopes, start=1):
        size = envelope_size(envelope)
        if size > MAX_ENVELOPE_BYTES:
            return Verdict.reject(
                Reason.SignatureInvalid,
                f"signature {index} is {size} bytes, more than the limit {MAX_ENVELOPE_BYTES}",
            )
    tier = expected.tier
    needed = policy.threshold(tier)
    signed: list[_Signed] = []
    failures: list[tuple[int, TrustError]] = []
    for index, envelope in enumerate(envelopes, start=1):
        try:
            signed.append(_check_envelope(index, envelope, tier, keyring, now))
        except TrustError as exc:
            failures.append((index, exc))

    # Step 5.
    for one, other in itertools.pairwise(signed):
        if other.payload != one.payload:
            labels = (f"signature {one.position}", f"signature {other.position}")
            return Verdict.reject(
                Reason.ManifestMismatch,
                f"{labels[0]} and {labels[1]} cover different manifests: "
                + "; ".join(one.manifest.differences(other.manifest, labels)),
            )
    key_ids = tuple(dict.fromkeys(s.key_id for s in signed))
    if len(key_ids) < needed:
        if needed == 1 and failures:
            index, first = failures[0]
            prefix = "" if len(envelopes) == 1 else f"signature {index} of {len(envelopes)}: "
            return Verdict.reject(first.reason, prefix + first.message)
        return Verdict.reject(
            Reason.ThresholdNotMet,
            f"tier {tier} needs {needed} distinct trusted keys, {len(key_ids)} verified"
            + (f" ({', '.join(key_ids)})" if key_ids else "")
            + "".join(f"; signature {i}: {e.reason}: {e.message}" for i, e in failures),
        )

    # Step 6.
    manifest = signed[0].manifest
    differences = expected.differences(manifest)
    if differences:
        return Verdict.reject(
            Reason.ManifestMismatch,
            "signed manifest differs from the release: " + "; ".join(differences),
            key_ids=key_ids,
            manifest=manifest,
        )

    # Step 7.
    subject = f"{expected.product}/{tier}"
    rollback = check_rollback(
        manifest.security_version, floor, policy.max_security_version_jump, subject=subject
    )
    if not rollback.accepted:
        return replace(rollback, key_ids=key_ids, manifest=manifest)
    return Verdict.accept(
        f"signed by {len(key_ids)} trusted {tier} key(s) ({', '.join(key_ids)}); "
        + rollback.message,
        key_ids=key_ids,
        manifest=manifest,
    )


def check_artifact(
    expected: ReleaseManifest, observed_size: int, observed_sha256: bytes, oversized: bool
) -> Verdict:
    """Tail of step 8: the fetched bytes against the signed size and digest.

    Args:
        expected: The verified manifest.
        observed_size: Bytes received (the fetcher stops at the signed size).
        observed_sha256: SHA-256 of the bytes received.
        oversized: The source had more bytes than the signed size (the fetcher stopped early).
    """
    size = expected.artifact_size
    if oversized:
        return Verdict.reject(
            Reason.SizeMismatch, f"artifact has more than the signed {size} bytes"
        )
    if observed_size != size:
        return Verdict.reject(
            Reason.SizeMismatch, f"artifact is {observed_size} bytes, the signed size is {size}"
        )
    if observed_sha256 != expected.artifact_sha256:
        return Verdict.reject(
            Reason.HashMismatch,
            f"artifact sha256 is {observed_sha256.hex()}, the signed sha256 is "
            f"{expected.artifact_sha256.hex()}",
        )
    return Verdict.accept(
        f"artifact {expected.artifact_name}: {size} bytes, sha256 "
        f"{expected.artifact_sha256.hex()} as signed",
        manifest=expected,
    )


def final_verdict(signed: Verdict, artifact: Verdict) -> Verdict:
    """The verdict on a release whose steps 1-7 passed (`signed`, from `verify_release`) once
    step 8 checked its artifact (`artifact`, from `check_artifact`): the artifact's rejection, or
    an acceptance saying both; either way carrying the keyIds that signed."""
    if not artifact.accepted:
        return replace(artifact, key_ids=signed.key_ids)
    return Verdict.accept(f"{signed.message}; {artifact.message}", key_ids=signed.key_ids)
