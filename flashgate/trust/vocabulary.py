"""Vocabulary of the trust core: tiers, algorithms, rejection reasons, the error and the verdict.

Implements the names of docs/design.md ("Tiers", the closed list of FirmwareRelease rejection
reasons) and docs/format.md "Envelope" (the COSE algorithm of each key algorithm). Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Self

if TYPE_CHECKING:
    from flashgate.trust.payloads import ReleaseManifest


class DocEnum(StrEnum):
    """A string enumeration whose members carry a description.

    A member is declared as ``NAME = "value", "what the value means"``. The description is what
    people read: the API's JSON schema lists every value with it (see `__get_pydantic_json_schema__`
    below), so ``kubectl explain`` documents each value, and messages may quote it.
    """

    description: str

    def __new__(cls, value: str, description: str = "") -> Self:
        member = str.__new__(cls, value)
        member._value_ = value
        member.description = description
        return member

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: Any) -> dict[str, Any]:
        """Pydantic's hook (pydantic is not imported here): the enum's schema, described."""
        schema: dict[str, Any] = handler.resolve_ref_schema(handler(core_schema))
        schema["description"] = "Values:\n" + "\n".join(
            f"- {member.value}: {member.description}" for member in cls
        )
        return schema


class Tier(DocEnum):
    """The tier of a key and of a release; a key signs releases of its own tier only.

    From most to least critical: bootloader > os > application > driver > config.
    """

    BOOTLOADER = (
        "bootloader",
        "boot code that verifies everything after it; the most critical tier (a threshold of 2 "
        "signatures is recommended).",
    )
    OS = "os", "the operating system image (kernel and root filesystem)."
    APPLICATION = "application", "application images that run on the operating system."
    DRIVER = "driver", "device drivers and peripheral firmware (modems, radios, co-processors)."
    CONFIG = "config", "configuration, data schemas and machine-learning models."


class Algorithm(DocEnum):
    """Signature algorithm of a key, as written in SigningKey specs and key endorsements."""

    ED25519 = "ed25519", "EdDSA with Ed25519 (COSE alg -8); publicKey is an Ed25519 key."
    ES256 = (
        "ecdsa-p256-sha256",
        "ECDSA on NIST P-256 over SHA-256 (COSE alg -7, ES256); publicKey is a P-256 key and "
        "signatures are raw r||s (64 bytes), as an HSM returns them for CKM_ECDSA.",
    )

    @property
    def cose_alg(self) -> int:
        """The COSE `alg` header value (docs/format.md "Envelope") that this algorithm requires."""
        return -8 if self is Algorithm.ED25519 else -7


class Reason(DocEnum):
    """Why a release (or key) was refused: a closed list; member names equal their values.

    All but VerifierUnavailable are terminal.
    """

    SignatureInvalid = (
        "SignatureInvalid",
        "an envelope is not a well-formed COSE_Sign1 of a release manifest, its signature does "
        "not verify with the key its kid names, or its payload is not deterministic CBOR.",
    )
    ThresholdNotMet = (
        "ThresholdNotMet",
        "the tier needs k signatures by distinct trusted keys and fewer than k verified.",
    )
    FastForwardRejected = (
        "FastForwardRejected",
        "securityVersion exceeds the rollback floor by more than the configured maximum jump "
        "(a stolen key must not push the fleet's counter out of reach).",
    )
    KeyNotTrustedForTier = (
        "KeyNotTrustedForTier",
        "the signing key belongs to another tier, or is the fleet root (which signs no releases).",
    )
    UnknownKey = "UnknownKey", "no key of this fleet has the keyId the envelope names."
    KeyRevoked = (
        "KeyRevoked",
        "the signing key is revoked (for a Withdrawn release: revoked after publication).",
    )
    KeyExpired = (
        "KeyExpired",
        "the signing key is outside its validity (before notBefore or after notAfter) or retired.",
    )
    ManifestMismatch = (
        "ManifestMismatch",
        "the signed manifest differs from the spec (fleet, product, tier, version, "
        "securityVersion, artifact name, size or sha256), or valid envelopes carry different "
        "manifests: a valid signature over another release is refused.",
    )
    HashMismatch = "HashMismatch", "the fetched bytes do not hash to artifact.sha256."
    SizeMismatch = "SizeMismatch", "the artifact has more or fewer bytes than artifact.size."
    ArtifactUnavailable = (
        "ArtifactUnavailable",
        "the artifact could not be fetched (error status, timeout, too slow, missing object).",
    )
    ArtifactURLNotAllowed = (
        "ArtifactURLNotAllowed",
        "the URL's scheme or address is not allowed (file:// where not enabled; loopback, "
        "link-local or cluster-internal addresses unless allow-listed), it carries credentials "
        "(user:password@), or it lies outside the fleet's allowed artifact URL prefixes.",
    )
    RollbackRejected = (
        "RollbackRejected",
        "securityVersion is below the rollback floor of this product and tier.",
    )
    ReplayRejected = (
        "ReplayRejected",
        "this signed manifest was already published in the fleet (under this or another name, "
        "to this or another channel, from this or another URL). Publishing it again needs an "
        "explicit intent (spec.republish), which only release managers may set.",
    )
    VerifierUnavailable = (
        "VerifierUnavailable",
        "the verifier sidecar did not answer: no verdict yet. Not terminal: the operator "
        "retries with backoff; the pure core never returns it.",
    )


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
