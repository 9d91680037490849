"""Vocabulary of the trust core: tiers, algorithms, rejection reasons, the error and the verdict.

Implements the names of DESIGN.md ("Tiers", the closed list of FirmwareRelease rejection reasons)
and FORMAT.md "Envelope" (the COSE algorithm of each key algorithm). Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flashgate.trust.payloads import ReleaseManifest


class Tier(StrEnum):
    """What a key may sign; a release of tier T verifies only with keys of tier T."""

    BOOTLOADER = "bootloader"
    OS = "os"
    APPLICATION = "application"
    DRIVER = "driver"
    CONFIG = "config"


class Algorithm(StrEnum):
    """Signature algorithm of a key, as written in SigningKey specs and key endorsements."""

    ED25519 = "ed25519"
    """EdDSA over Ed25519 (COSE alg -8)."""
    ES256 = "ecdsa-p256-sha256"
    """ECDSA P-256 over SHA-256, raw r||s signatures (COSE alg -7)."""

    @property
    def cose_alg(self) -> int:
        """The COSE `alg` header value (FORMAT.md "Envelope") that this algorithm requires."""
        return -8 if self is Algorithm.ED25519 else -7


class Reason(StrEnum):
    """Why a release (or key) was rejected: the closed list of DESIGN.md, values equal to names."""

    SignatureInvalid = "SignatureInvalid"
    ThresholdNotMet = "ThresholdNotMet"
    FastForwardRejected = "FastForwardRejected"
    KeyNotTrustedForTier = "KeyNotTrustedForTier"
    UnknownKey = "UnknownKey"
    KeyRevoked = "KeyRevoked"
    KeyExpired = "KeyExpired"
    ManifestMismatch = "ManifestMismatch"
    HashMismatch = "HashMismatch"
    SizeMismatch = "SizeMismatch"
    ArtifactUnavailable = "ArtifactUnavailable"
    ArtifactURLNotAllowed = "ArtifactURLNotAllowed"
    RollbackRejected = "RollbackRejected"
    VerifierUnavailable = "VerifierUnavailable"
    """Transient: the caller retries; the pure core never returns it."""


class TrustError(Exception):
    """The one error of the trust core: bad data from outside, with the reason it is refused."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Verdict:
    """The answer of a `verify_*`/`check_*` function: accepted, or rejected with a reason.

    Attributes:
        accepted: True when every check passed.
        reason: None when accepted, else why it was rejected.
        message: For people: what was checked, expected vs observed.
        key_ids: Hex keyIds whose signatures verified and counted (distinct, in envelope order).
        manifest: The signed manifest, when it was verified and decoded (also on some rejections,
            e.g. a rollback, so a caller can report what was signed).
    """

    accepted: bool
    reason: Reason | None
    message: str
    key_ids: tuple[str, ...] = ()
    manifest: ReleaseManifest | None = None

    @classmethod
    def accept(
        cls,
        message: str,
        *,
        key_ids: tuple[str, ...] = (),
        manifest: ReleaseManifest | None = None,
    ) -> Verdict:
        return cls(True, None, message, key_ids, manifest)

    @classmethod
    def reject(
        cls,
        reason: Reason,
        message: str,
        *,
        key_ids: tuple[str, ...] = (),
        manifest: ReleaseManifest | None = None,
    ) -> Verdict:
        return cls(False, reason, message, key_ids, manifest)


def format_time(t: int) -> str:
    """RFC 3339 UTC text for a message; the bare number when it is out of datetime's range."""
    try:
        return datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return str(t)
