"""The flashgate API (group ``ota.flashgate.dev``, version ``v1alpha1``) as pydantic models.

These models are the single source of truth of the CustomResourceDefinitions in ``crds/``:
``python -m flashgate.api.crdgen`` turns them into CRD YAML and does nothing else, so every
description, limit, default, CEL rule (``x-kubernetes-validations``) and printer column lives
here. Field descriptions are what ``kubectl explain`` prints; they say what a field means, its
default, its limits and units, and what it cannot be combined with.

All three kinds are namespaced: a namespace is a fleet.

Code uses the same models to read and write objects::

    spec = FirmwareReleaseSpec.model_validate(body["spec"])
    patch = status.model_dump(by_alias=True, exclude_none=True)   # JSON-ready, camelCase keys

Python names are snake_case; the Kubernetes names (camelCase) are aliases, and both are accepted
on input. Timestamps are timezone-aware ``datetime`` objects in Python and RFC 3339 strings (UTC,
``Z``) on the wire. Enumerations are ``StrEnum`` subclasses, so members compare equal to their
string values.
"""

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    PlainSerializer,
    WithJsonSchema,
    field_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from flashgate.trust import rotation

GROUP = "ota.flashgate.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "flashgate"

# Limits shared by several fields.
MAX_ENVELOPE_BYTES = 16 * 1024
"""Largest COSE_Sign1 envelope accepted (the trust core's ``cose.MAX_ENVELOPE_BYTES``)."""
MAX_ENVELOPE_BASE64 = 4 * ((MAX_ENVELOPE_BYTES + 2) // 3)
"""Length of the padded base64 of a :data:`MAX_ENVELOPE_BYTES` envelope (21848 characters)."""
MAX_SIGNATURES = 8
MAX_SECURITY_VERSION = 2**32 - 1
"""Largest securityVersion: it must fit a device's 32-bit secure counter."""
DEFAULT_CHANNEL = "stable"
DEFAULT_OVERLAP = "168h"
"""The rotation overlap used when ``replaces`` is set and ``overlap`` is not (7 days)."""

# Patterns: RE2 syntax, the common subset of Go's regexp (the API server) and Rust's regex crate
# (pydantic-core), so both sides refuse exactly the same strings.
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
BASE64_PATTERN = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
SHA256_HEX_PATTERN = r"^[0-9a-f]{64}$"
PEM_PUBLIC_KEY_PATTERN = (
    r"^-----BEGIN PUBLIC KEY-----\r?\n(?:[A-Za-z0-9+/=]+\r?\n)+-----END PUBLIC KEY-----\r?\n?$"
)
DURATION_PATTERN = r"^(?:[0-9]+h)?(?:[0-9]+m)?(?:[0-9]+s)?$"
RFC3339_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?"
    r"(?:[Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
ARTIFACT_URL_PATTERN = r"^(?:https|s3|file)://[^\s]+$"
ARTIFACT_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._+-]*$"
VERSION_PATTERN = r"^[0-9A-Za-z][0-9A-Za-z.+_~-]*$"
CONDITION_TYPE_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)
REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"


# ------------------------------------------------------------------------------------------------
# Building blocks
# ------------------------------------------------------------------------------------------------


def _rfc3339(value: datetime) -> str:
    """Format an aware datetime as RFC 3339 in UTC with a ``Z`` (fraction only when non-zero)."""
    value = value.astimezone(UTC)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}".rstrip("0")
    return text + "Z"


Timestamp = Annotated[
    AwareDatetime,
    PlainSerializer(_rfc3339, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": RFC3339_PATTERN}),
]
"""An RFC 3339 date-time with a time zone; a ``datetime`` in Python, a ``Z`` string on the wire."""

def parse_duration(text: str) -> timedelta:
    """Parse a duration of the API (``168h``, ``1h30m``, ``90s``) into a timedelta.

    Args:
        text: hours, minutes and seconds, each optional, in that order, integers only.

    Returns:
        The duration.

    Raises:
        ValueError: when ``text`` is not such a duration.
    """
    if len(text) < 2 or not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"not a duration such as 168h or 1h30m: {text!r}")
    # The API's pattern is the stricter rule; the arithmetic is the trust core's.
    return timedelta(seconds=rotation.parse_duration(text))


class DocEnum(StrEnum):
    """A string enumeration whose members carry a description.

    A member is declared as ``NAME = "value", "what the value means"``. The JSON schema of the
    enumeration lists every value with its description; the CRD generator appends that list to the
    description of each field of this type, so ``kubectl explain`` documents each value.
    """

    description: str

    def __new__(cls, value: str, description: str = "") -> Self:
        member = str.__new__(cls, value)
        member._value_ = value
        member.description = description
        return member

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler.resolve_ref_schema(handler(core_schema))
        schema["description"] = "Values:\n" + "\n".join(
            f"- {member.value}: {member.description}" for member in cls
        )
        return schema


class _Model(BaseModel):
    """Base of every API model: camelCase aliases, snake_case names, both accepted on input."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
    )

    def to_k8s(self) -> dict[str, Any]:
        """This object as Kubernetes JSON: camelCase keys, unset fields left out, plain values."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class _StatusModel(_Model):
    """Status models ignore fields they do not know (Kopf may keep its own state in status)."""

    model_config = ConfigDict(extra="ignore")


@dataclass(frozen=True)
class PrinterColumn:
    """One ``additionalPrinterColumns`` entry of a CRD (what ``kubectl get`` shows)."""

    name: str
    type: Literal["string", "integer", "number", "boolean", "date"]
    json_path: str
    description: str
    priority: int = 0


@dataclass(frozen=True)
class CRDNames:
    """How a kind is served: its names, categories and printer columns."""

    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    printer_columns: tuple[PrinterColumn, ...]
    categories: tuple[str, ...] = (CATEGORY,)

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"


class Resource(_Model):
    """Base of the three kinds: a Kubernetes object with spec and status, served as ``crd``."""

    model_config = ConfigDict(extra="ignore")
    crd: ClassVar[CRDNames]


def _immutable(field: str, hint: str) -> dict[str, Any]:
    """A field-level CEL transition rule refusing any change of the field."""
    return {"rule": "self == oldSelf", "message": f"{field} is immutable: {hint}"}


PATTERN_MESSAGE = "x-flashgate-pattern-message"
"""Schema keyword read by the CRD generator: it turns the field's ``pattern`` into a CEL rule
``self.matches(pattern)`` with this message, so that the API server explains a malformed value
in words (a bare ``pattern`` is reported as "should match '^[0-9a-f]{64}$'"). Python validation
keeps the pattern as it is."""


def _cel(*rules: dict[str, Any], pattern_message: str | None = None) -> dict[str, Any]:
    """``json_schema_extra`` carrying CEL rules and, optionally, the message of the pattern."""
    extra: dict[str, Any] = {}
    if rules:
        extra["x-kubernetes-validations"] = list(rules)
    if pattern_message is not None:
        extra[PATTERN_MESSAGE] = pattern_message
    return extra


_DNS_LABEL_WORDS = (
    "a DNS label: 1 to 63 lowercase letters, digits and '-', starting and ending with a letter "
    "or digit"
)


# ------------------------------------------------------------------------------------------------
# Enumerations
# ------------------------------------------------------------------------------------------------


class Tier(DocEnum):
    """The tier of a key and of a release; a key signs releases of its own tier only.

    From most to least critical: bootloader > os > application > driver > config. The values are
    those of ``flashgate.trust.model.Tier``.
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
    """The signature algorithm of a key (values as ``flashgate.trust.model.Algorithm``)."""

    ED25519 = "ed25519", "EdDSA with Ed25519 (COSE alg -8); publicKey is an Ed25519 key."
    ECDSA_P256_SHA256 = (
        "ecdsa-p256-sha256",
        "ECDSA on NIST P-256 over SHA-256 (COSE alg -7, ES256); publicKey is a P-256 key and "
        "signatures are raw r||s (64 bytes), as an HSM returns them for CKM_ECDSA.",
    )


class KeyPhase(DocEnum):
    """Where a SigningKey is in its life (``flashgate.trust.rotation.Phase``)."""

    PENDING = (
        "Pending",
        "not usable yet: the endorsement has not been checked (e.g. the verifier sidecar has "
        "not answered yet), or notBefore is still ahead. Not trusted.",
    )
    INVALID = (
        "Invalid",
        "the endorsement does not verify against the fleet root, or its payload disagrees with "
        "the spec (reason and message say how). Never trusted; fix the spec or endorse again.",
    )
    STAGED = (
        "Staged",
        "endorsed, inside its validity and trusted, distributed to devices in the trust bundle, "
        "but not the primary signer yet (activateAt has not come).",
    )
    ACTIVE = "Active", "endorsed, trusted and the primary signer of its tier."
    RETIRING = (
        "Retiring",
        "replaced by a newer key that is now Active; still trusted until the overlap ends "
        "(trustedUntil).",
    )
    RETIRED = (
        "Retired",
        "replaced, and its overlap has ended: no longer trusted for new releases. Releases it "
        "published stay Published.",
    )
    EXPIRED = (
        "Expired",
        "notAfter has passed: no longer trusted for new releases. Releases it published stay "
        "Published.",
    )
    REVOKED = (
        "Revoked",
        "spec.revoked is true: distrusted at once and for good; releases it published are "
        "Withdrawn.",
    )


class ReleasePhase(DocEnum):
    """Where a FirmwareRelease is on its way to the fleet."""

    PENDING = "Pending", "accepted by the API server, not yet taken up by the operator."
    VERIFYING = (
        "Verifying",
        "the operator is checking signatures, the rollback floor and the artifact (fetched and "
        "hashed by the verifier sidecar); also while VerifierUnavailable is retried.",
    )
    PUBLISHED = (
        "Published",
        "every check passed, the rollback floor was raised to securityVersion and the job "
        "document is in its channel (publishedTo). Stays Published when its key is later "
        "retired or expires.",
    )
    REJECTED = (
        "Rejected",
        "a check failed for good (reason says which, message says expected vs observed). "
        "Terminal: the spec is immutable, so publish a fixed build as a new FirmwareRelease.",
    )
    WITHDRAWN = (
        "Withdrawn",
        "was Published, then its signing key was revoked: removed from the channel, devices are "
        "no longer offered it. Terminal.",
    )


class Reason(DocEnum):
    """Why a FirmwareRelease was refused: the closed list of DESIGN.md.

    Values equal ``flashgate.trust.model.Reason``; all but VerifierUnavailable are terminal.
    """

    SIGNATURE_INVALID = (
        "SignatureInvalid",
        "an envelope is not a well-formed COSE_Sign1 of a release manifest, its signature does "
        "not verify with the key its kid names, or its payload is not deterministic CBOR.",
    )
    THRESHOLD_NOT_MET = (
        "ThresholdNotMet",
        "the tier needs k signatures by distinct trusted keys and fewer than k verified.",
    )
    FAST_FORWARD_REJECTED = (
        "FastForwardRejected",
        "securityVersion exceeds the rollback floor by more than the configured maximum jump "
        "(a stolen key must not push the fleet's counter out of reach).",
    )
    KEY_NOT_TRUSTED_FOR_TIER = (
        "KeyNotTrustedForTier",
        "the signing key belongs to another tier, or is the fleet root (which signs no releases).",
    )
    UNKNOWN_KEY = "UnknownKey", "no key of this fleet has the keyId the envelope names."
    KEY_REVOKED = (
        "KeyRevoked",
        "the signing key is revoked (for a Withdrawn release: revoked after publication).",
    )
    KEY_EXPIRED = (
        "KeyExpired",
        "the signing key is outside its validity (before notBefore or after notAfter) or retired.",
    )
    MANIFEST_MISMATCH = (
        "ManifestMismatch",
        "the signed manifest differs from the spec (fleet, product, tier, version, "
        "securityVersion, artifact name, size or sha256), or valid envelopes carry different "
        "manifests: a valid signature over another release is refused.",
    )
    HASH_MISMATCH = "HashMismatch", "the fetched bytes do not hash to artifact.sha256."
    SIZE_MISMATCH = "SizeMismatch", "the artifact has more or fewer bytes than artifact.size."
    ARTIFACT_UNAVAILABLE = (
        "ArtifactUnavailable",
        "the artifact could not be fetched (error status, timeout, too slow, missing object).",
    )
    ARTIFACT_URL_NOT_ALLOWED = (
        "ArtifactURLNotAllowed",
        "the URL's scheme or address is not allowed (file:// where not enabled; loopback, "
        "link-local or cluster-internal addresses unless allow-listed).",
    )
    ROLLBACK_REJECTED = (
        "RollbackRejected",
        "securityVersion is below the rollback floor of this product and tier.",
    )
    VERIFIER_UNAVAILABLE = (
        "VerifierUnavailable",
        "the verifier sidecar did not answer: no verdict yet. Not terminal: the operator "
        "retries with backoff.",
    )


class ConditionStatus(DocEnum):
    """The status of a condition (as metav1.ConditionStatus)."""

    TRUE = "True", "the condition holds."
    FALSE = "False", "the condition does not hold; reason and message say why."
    UNKNOWN = "Unknown", "not determined yet."


class SigningKeyConditionType(DocEnum):
    """The condition types of a SigningKey's status."""

    ENDORSED = (
        "Endorsed",
        "True when spec.endorsement is a valid COSE_Sign1 by the fleet root over a key payload "
        "that agrees with the spec (fleet, tier, keyId, algorithm, publicKey, notBefore, "
        "notAfter).",
    )
    TRUSTED = (
        "Trusted",
        "True while the key is in the trust set of its tier (Staged, Active or Retiring, inside "
        "its validity).",
    )
    READY = (
        "Ready",
        "True when the key is Active, the primary signer of its tier; False in every other "
        "phase, its reason saying why.",
    )


class FirmwareReleaseConditionType(DocEnum):
    """The condition types of a FirmwareRelease's status."""

    SIGNATURE_VERIFIED = (
        "SignatureVerified",
        "True when enough distinct keys trusted for the tier, now, signed a manifest equal to "
        "the spec.",
    )
    INTEGRITY_VERIFIED = (
        "IntegrityVerified",
        "True when the fetched artifact has exactly artifact.size bytes hashing to "
        "artifact.sha256.",
    )
    ROLLBACK_CHECKED = (
        "RollbackChecked",
        "True when securityVersion is not below the rollback floor and not beyond the maximum "
        "jump above it.",
    )
    READY = (
        "Ready",
        "True when the release is Published; False otherwise, its reason saying why (the "
        "rejection reason, or that verification is still under way).",
    )


# ------------------------------------------------------------------------------------------------
# Shared types
# ------------------------------------------------------------------------------------------------

_EnvelopeBase64 = Annotated[
    str,
    Field(
        min_length=4,
        max_length=MAX_ENVELOPE_BASE64,
        pattern=BASE64_PATTERN,
        description="One signature: standard base64 (with padding) of a COSE_Sign1 envelope.",
        json_schema_extra=_cel(
            pattern_message="each signature must be standard base64 with padding of a "
            "COSE_Sign1 envelope, as `flashgate sign` writes it"
        ),
    ),
]
_KeyIdHex = Annotated[
    str,
    Field(
        min_length=64,
        max_length=64,
        pattern=SHA256_HEX_PATTERN,
        description="A keyId: SHA-256 of a SubjectPublicKeyInfo, 64 lowercase hex digits.",
    ),
]

_OBSERVED_GENERATION = (
    "The metadata.generation of the object when the operator last evaluated it; when it is "
    "below metadata.generation this status describes an older spec."
)


class Condition(_StatusModel):
    """One observation of an object's state, as metav1.Condition; lists are keyed by type."""

    type: str = Field(
        min_length=1,
        max_length=316,
        pattern=CONDITION_TYPE_PATTERN,
        description="The aspect observed, in CamelCase; each kind documents its types.",
    )
    status: ConditionStatus = Field(description="Whether the condition holds.")
    observed_generation: int | None = Field(
        default=None,
        ge=0,
        description=(
            "The metadata.generation the condition was computed from; when it is below "
            "metadata.generation the condition is stale."
        ),
    )
    last_transition_time: Timestamp = Field(
        description=(
            "When status last changed (not when the condition was last checked), RFC 3339."
        ),
    )
    reason: str = Field(
        min_length=1,
        max_length=1024,
        pattern=REASON_PATTERN,
        description=(
            "Why the condition has this status: a CamelCase word for machines, e.g. "
            "RollbackRejected. 1 to 1024 characters."
        ),
    )
    message: str = Field(
        default="",
        max_length=32768,
        description=(
            "Why the condition has this status, for people: what was expected and what was "
            "observed. May be empty; at most 32768 characters."
        ),
    )


def _conditions_field(types: type[DocEnum]) -> Any:
    values = "\n".join(f"- {member.value}: {member.description}" for member in types)
    return Field(
        default_factory=list,
        description=(
            "The latest observations of the object, at most one per type (a list keyed by "
            f"type), written by the operator. Types:\n{values}"
        ),
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    )


# ------------------------------------------------------------------------------------------------
# SigningKey
# ------------------------------------------------------------------------------------------------


class SigningKeySpec(_Model):
    """The desired state of a SigningKey: public key, tier, validity, endorsement, rotation."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            {
                "rule": "self.notAfter > self.notBefore",
                "message": "notAfter must be later than notBefore",
            },
            {
                "rule": "!has(self.activateAt) || "
                "(self.activateAt >= self.notBefore && self.activateAt < self.notAfter)",
                "message": "activateAt must lie inside the validity: notBefore <= activateAt "
                "< notAfter",
            },
            {
                "rule": "!has(self.overlap) || has(self.replaces)",
                "message": "overlap is the dual-trust window with the key named in replaces: "
                "set replaces too, or remove overlap",
            },
            {
                "rule": "!has(self.revocation) || self.revoked",
                "message": "revocation is the root-signed statement of a revoked key: set "
                "revoked: true together with it",
            },
        )
    )

    tier: Tier = Field(
        description=(
            "The one tier this key may sign releases of: a release of tier T verifies only with "
            "keys of tier T. Must equal the tier in the endorsement. Required. Immutable: for "
            "another tier, generate and endorse another key."
        ),
        json_schema_extra=_cel(
            _immutable("tier", "a key signs for one tier for life; generate and endorse a new "
                       "key for another tier")
        ),
    )
    algorithm: Algorithm = Field(
        description=(
            "The signature algorithm; must match publicKey and the endorsement. The verifier "
            "takes the algorithm from this key, never from a message: an envelope whose COSE "
            "alg differs is refused. Required. Immutable."
        ),
        json_schema_extra=_cel(
            _immutable("algorithm", "it is bound to publicKey; generate and endorse a new key")
        ),
    )
    public_key: str = Field(
        min_length=1,
        max_length=2048,
        pattern=PEM_PUBLIC_KEY_PATTERN,
        description=(
            "The public key as a PEM SubjectPublicKeyInfo (a '-----BEGIN PUBLIC KEY-----' "
            "block) of the type algorithm names. status.keyId is the hex SHA-256 of its DER "
            "bytes. The private key never enters the cluster: it stays in the signing station's "
            "HSM. Required; at most 2048 characters. Immutable: a new key is a new SigningKey."
        ),
        json_schema_extra=_cel(
            _immutable("publicKey", "a new key is a new SigningKey (generate and endorse it)"),
            pattern_message="publicKey must be a PEM public key: a '-----BEGIN PUBLIC KEY-----' "
            "line, lines of base64, and a '-----END PUBLIC KEY-----' line",
        ),
    )
    not_before: Timestamp = Field(
        description=(
            "Start of the key's validity, an RFC 3339 date-time such as 2026-01-01T00:00:00Z; "
            "the key is not trusted before it. Must equal notBefore in the endorsement, which "
            "counts whole seconds. Required; must be earlier than notAfter."
        ),
    )
    not_after: Timestamp = Field(
        description=(
            "End of the key's validity, an RFC 3339 date-time. From this instant the key is "
            "Expired: no new release verifies with it (releases it published stay Published). "
            "Must equal notAfter in the endorsement. Required; must be later than notBefore."
        ),
    )
    endorsement: str = Field(
        min_length=4,
        max_length=MAX_ENVELOPE_BASE64,
        pattern=BASE64_PATTERN,
        description=(
            "The fleet root's endorsement of this key, made offline by `flashgate endorse`: "
            "standard base64 (with padding) of a COSE_Sign1 (RFC 9052) by the root over a key "
            "payload whose fleet (this namespace), tier, keyId, algorithm, publicKey, notBefore "
            "and notAfter must all agree with this spec, else the key is Invalid. Only an "
            "endorsed key is ever trusted; the verifier sidecar checks the endorsement against "
            f"the root it was configured with. Required; at most {MAX_ENVELOPE_BASE64} "
            f"characters (a {MAX_ENVELOPE_BYTES // 1024} KiB envelope)."
        ),
        json_schema_extra=_cel(
            pattern_message="endorsement must be standard base64 with padding of a COSE_Sign1 "
            "envelope, as `flashgate endorse` writes it"
        ),
    )
    replaces: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN_PATTERN,
        description=(
            "Name of the SigningKey of the same tier, in this namespace, that this key rotates "
            "out. When this key becomes Active the replaced key becomes Retiring, stays trusted "
            "for overlap, then becomes Retired. Optional; a DNS subdomain name of at most 253 "
            "characters; cannot name this SigningKey itself."
        ),
        json_schema_extra=_cel(
            pattern_message="replaces must be the name of a SigningKey: lowercase letters, "
            "digits, '-' and '.'"
        ),
    )
    overlap: str | None = Field(
        default=None,
        min_length=2,
        max_length=32,
        pattern=DURATION_PATTERN,
        description=(
            "The dual-trust window of a rotation: how long the key named in replaces stays "
            "trusted (Retiring) after this key becomes Active, so that devices and releases in "
            "flight catch up. Hours, minutes and seconds in that order, integers only, e.g. "
            f"{DEFAULT_OVERLAP}, 36h or 1h30m; 0s ends trust in the old key at once. Default "
            f"{DEFAULT_OVERLAP} (7 days) when replaces is set. Only valid together with replaces."
        ),
        json_schema_extra=_cel(
            pattern_message="overlap must be a duration in hours, minutes and seconds, in that "
            "order, such as 168h or 1h30m"
        ),
    )
    activate_at: Timestamp | None = Field(
        default=None,
        description=(
            "When this key becomes the primary signer (Active), an RFC 3339 date-time. Until "
            "then it is Staged: trusted and distributed to devices in the trust bundle, but not "
            "primary. Optional; when unset the key is Active from notBefore. Must lie inside "
            "the validity: notBefore <= activateAt < notAfter."
        ),
    )
    revoked: bool = Field(
        default=False,
        description=(
            "Set to true to revoke the key. It leaves the trust set at once, with or without a "
            "root signature: releases it signed are no longer accepted (KeyRevoked) and releases "
            "it published are Withdrawn from their channels. Default false. One-way: the API "
            "server refuses setting it back to false (a revoked key stays revoked: generate and "
            "endorse a new key)."
        ),
        json_schema_extra=_cel(
            {
                "rule": "self || !oldSelf",
                "message": "a revoked key stays revoked: revoked cannot go back from true to "
                "false; generate and endorse a new key",
            }
        ),
    )
    revocation: str | None = Field(
        default=None,
        min_length=4,
        max_length=MAX_ENVELOPE_BASE64,
        pattern=BASE64_PATTERN,
        description=(
            "The fleet root's revocation of this key for devices, made offline by `flashgate "
            "revoke`: standard base64 of a COSE_Sign1 by the root over a revocation payload "
            "(fleet, keyId, revokedAt, reason). The cluster distrusts the key on revoked: true "
            "alone; devices need this statement, which is published in the trust bundle. "
            f"Optional; at most {MAX_ENVELOPE_BASE64} characters. Only valid with revoked: true."
        ),
        json_schema_extra=_cel(
            pattern_message="revocation must be standard base64 with padding of a COSE_Sign1 "
            "envelope, as `flashgate revoke` writes it"
        ),
    )

    def effective_overlap(self) -> timedelta | None:
        """The rotation overlap: ``overlap``, else 168h when ``replaces`` is set, else None."""
        if self.overlap is not None:
            return parse_duration(self.overlap)
        if self.replaces is not None:
            return parse_duration(DEFAULT_OVERLAP)
        return None


class SigningKeyStatus(_StatusModel):
    """The observed state of a SigningKey, written by the operator only."""

    phase: KeyPhase | None = Field(
        default=None,
        description=(
            "Where the key is in its life, computed by the operator from the spec, the "
            "endorsement check and the current time. Time-driven changes (activation, end of "
            "overlap, expiry) happen on their own at nextTransition, without any edit."
        ),
    )
    key_id: str | None = Field(
        default=None,
        min_length=64,
        max_length=64,
        pattern=SHA256_HEX_PATTERN,
        description=(
            "The key's identifier: SHA-256 of the DER SubjectPublicKeyInfo in publicKey, 64 "
            "lowercase hex digits. Envelopes name their signer by it (COSE kid)."
        ),
    )
    trusted_from: Timestamp | None = Field(
        default=None,
        description=(
            "Start of the interval in which the key is in the trust set of its tier (RFC 3339). "
            "Unset when the key is not trusted at any time (Pending, Invalid, Revoked)."
        ),
    )
    trusted_until: Timestamp | None = Field(
        default=None,
        description=(
            "End of that interval: notAfter, or the end of the overlap once a newer key "
            "replaced this one (RFC 3339). Unset when the key is not trusted at any time."
        ),
    )
    next_transition: Timestamp | None = Field(
        default=None,
        description=(
            "When the phase next changes by time alone (activation, end of overlap, expiry); "
            "the operator re-evaluates the key then. Unset when no such change is ahead."
        ),
    )
    reason: str | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        pattern=REASON_PATTERN,
        description=(
            "Why the key is in its phase, a CamelCase word; for Invalid, why the endorsement was "
            "refused (e.g. SignatureInvalid, UnknownKey, ManifestMismatch)."
        ),
    )
    message: str | None = Field(
        default=None,
        max_length=32768,
        description="Why the key is in its phase, for people: what was expected and observed.",
    )
    conditions: list[Condition] = _conditions_field(SigningKeyConditionType)
    observed_generation: int | None = Field(default=None, ge=0, description=_OBSERVED_GENERATION)


class SigningKey(Resource):
    """A public key that the fleet root endorsed for one tier of a fleet (its namespace).

    The key is trusted for releases of its tier while it is Staged, Active or Retiring and inside
    its validity; revoking it (spec.revoked) distrusts it at once. The private key stays offline
    in the signing station. Created by `flashgate keygen` and `flashgate endorse`.
    """

    model_config = ConfigDict(
        json_schema_extra=_cel(
            {
                "rule": "!has(self.spec.replaces) || self.spec.replaces != self.metadata.name",
                "message": "a SigningKey cannot replace itself: spec.replaces names the older "
                "SigningKey that this one rotates out",
                "fieldPath": ".spec.replaces",
            }
        ),
    )
    crd: ClassVar[CRDNames] = CRDNames(
        kind="SigningKey",
        plural="signingkeys",
        singular="signingkey",
        short_names=("sk", "signkey"),
        printer_columns=(
            PrinterColumn("Phase", "string", ".status.phase", "Where the key is in its life."),
            PrinterColumn("Tier", "string", ".spec.tier", "The tier the key may sign."),
            PrinterColumn("Algorithm", "string", ".spec.algorithm", "The signature algorithm.",
                          priority=1),
            PrinterColumn("KeyID", "string", ".status.keyId",
                          "SHA-256 of the key's SubjectPublicKeyInfo.", priority=1),
            PrinterColumn("Until", "date", ".status.trustedUntil",
                          "When the key stops being trusted.", priority=1),
            PrinterColumn("Ready", "string", '.status.conditions[?(@.type=="Ready")].status',
                          "Whether the key is the Active signer of its tier.", priority=1),
            PrinterColumn("Reason", "string", ".status.reason", "Why the key is in its phase."),
            PrinterColumn("Age", "date", ".metadata.creationTimestamp", "Time since creation."),
        ),
    )

    api_version: str = Field(default=API_VERSION, description="ota.flashgate.dev/v1alpha1")
    kind: str = Field(default="SigningKey", description="SigningKey")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Standard object metadata.")
    spec: SigningKeySpec = Field(
        description=(
            "The key: its tier, algorithm and public key (immutable), validity, the root's "
            "endorsement, rotation (replaces, overlap, activateAt) and revocation."
        ),
    )
    status: SigningKeyStatus | None = Field(
        default=None,
        description="The key's phase, identifier and trust window, written by the operator.",
    )


# ------------------------------------------------------------------------------------------------
# FirmwareRelease
# ------------------------------------------------------------------------------------------------


class Artifact(_Model):
    """The firmware image of a release: where to fetch it and what it must be."""

    url: str = Field(
        min_length=8,
        max_length=2048,
        pattern=ARTIFACT_URL_PATTERN,
        description=(
            "Where the verifier sidecar and devices fetch the image: https:// (TLS verified), "
            "s3://bucket/key, or file:// (only where the sidecar enables it, for demos and "
            "tests). Not signed, so it may be a short-lived presigned URL: the bytes are checked "
            "against sha256 and size. Addresses resolving to loopback, link-local or "
            "cluster-internal networks are refused (ArtifactURLNotAllowed) unless allow-listed. "
            "Required; at most 2048 characters."
        ),
        json_schema_extra=_cel(
            pattern_message="artifact.url must start with https://, s3:// or file:// and "
            "contain no spaces"
        ),
    )
    name: str = Field(
        min_length=1,
        max_length=255,
        pattern=ARTIFACT_NAME_PATTERN,
        description=(
            "The image's file name as signed in the manifest, e.g. gw-3000-app-4.2.0.bin. "
            "Required; 1 to 255 characters: letters, digits and . _ + -, starting with a letter "
            "or digit (no slashes)."
        ),
        json_schema_extra=_cel(
            pattern_message="artifact.name must be a file name: letters, digits and . _ + -, "
            "starting with a letter or digit, no slashes"
        ),
    )
    sha256: str = Field(
        min_length=64,
        max_length=64,
        pattern=SHA256_HEX_PATTERN,
        description=(
            "SHA-256 of the image's bytes, 64 lowercase hex digits; must equal the signed "
            "manifest's digest. Fetched bytes that hash otherwise are refused (HashMismatch). "
            "Required."
        ),
        json_schema_extra=_cel(
            pattern_message="artifact.sha256 must be 64 lowercase hex digits: the SHA-256 of "
            "the image, as sha256sum prints it"
        ),
    )
    size: int = Field(
        ge=1,
        description=(
            "The image's length in bytes, at least 1; must equal the signed manifest's size. "
            "The verifier stops reading past it; more or fewer bytes are refused "
            "(SizeMismatch). Required."
        ),
    )


class FirmwareReleaseSpec(_Model):
    """A firmware release as signed: what it is, where it goes, and the signatures over it."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            {
                "rule": "self == oldSelf",
                "message": "FirmwareRelease spec is immutable: create a new FirmwareRelease "
                "for a new build",
            }
        )
    )

    tier: Tier = Field(
        description=(
            "The tier of the image: only SigningKeys of this tier, trusted now, may sign it "
            "(else KeyNotTrustedForTier). Must equal the signed manifest's tier. Required."
        ),
    )
    product: str = Field(
        min_length=1,
        max_length=63,
        pattern=DNS_LABEL_PATTERN,
        description=(
            "The hardware class the image is built for, e.g. gw-3000; the rollback floor is "
            "kept per product and tier. Must equal the signed manifest's product. Required; "
            f"{_DNS_LABEL_WORDS}."
        ),
        json_schema_extra=_cel(pattern_message=f"product must be {_DNS_LABEL_WORDS}"),
    )
    version: str = Field(
        min_length=1,
        max_length=64,
        pattern=VERSION_PATTERN,
        description=(
            "The version people read, e.g. 4.2.0. Never compared: ordering and anti-rollback use "
            "securityVersion. Must equal the signed manifest's version. Required; 1 to 64 "
            "characters: letters, digits and . + _ ~ -, starting with a letter or digit."
        ),
        json_schema_extra=_cel(
            pattern_message="version must be letters, digits and . + _ ~ -, starting with a "
            "letter or digit, e.g. 4.2.0"
        ),
    )
    security_version: int = Field(
        ge=0,
        le=MAX_SECURITY_VERSION,
        description=(
            "The monotonic anti-rollback counter (as MCUboot's security counter or SUIT's "
            "sequence number). Refused when below the fleet's rollback floor for this product "
            "and tier (RollbackRejected; equal is allowed, a functional rollback within one "
            "security epoch) or above the floor by more than the operator's maximum jump "
            "(FastForwardRejected). Publishing raises the floor to it. Must equal the signed "
            f"manifest's securityVersion. Required; 0 to {MAX_SECURITY_VERSION} (a device's "
            "32-bit secure counter)."
        ),
    )
    channel: str = Field(
        default=DEFAULT_CHANNEL,
        min_length=1,
        max_length=63,
        pattern=DNS_LABEL_PATTERN,
        description=(
            "The distribution channel, e.g. stable or beta: the job document is published per "
            "(product, channel), one current release per tier. Not signed (routing only). "
            f"Default {DEFAULT_CHANNEL}; {_DNS_LABEL_WORDS}."
        ),
        json_schema_extra=_cel(pattern_message=f"channel must be {_DNS_LABEL_WORDS}"),
    )
    artifact: Artifact = Field(
        description="The image: where to fetch it (url) and what it must be (name, sha256, size)."
    )
    signatures: list[_EnvelopeBase64] = Field(
        max_length=MAX_SIGNATURES,
        description=(
            "The signatures over the release manifest, made by `flashgate sign`: each the "
            "standard base64 (with padding) of a COSE_Sign1 envelope by a key of this tier, all "
            "over the same manifest bytes. A tier that needs k signatures (2 recommended for "
            "bootloader) needs k envelopes by k distinct keys; one key signing twice counts "
            f"once. Up to {MAX_SIGNATURES} distinct entries, each at most "
            f"{MAX_ENVELOPE_BASE64} characters (a {MAX_ENVELOPE_BYTES // 1024} KiB envelope). "
            "An empty list is refused by the admission webhook; if it gets past (webhook down), "
            "the gate rejects it (ThresholdNotMet), so the attempt is recorded and alerted on."
        ),
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )

    @field_validator("signatures")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("signatures must be distinct (one envelope once)")
        return value


class FirmwareReleaseStatus(_StatusModel):
    """The observed state of a FirmwareRelease, written by the operator only."""

    phase: ReleasePhase | None = Field(
        default=None,
        description="Where the release is on its way to the fleet, written by the operator.",
    )
    reason: Reason | None = Field(
        default=None,
        description=(
            "Why the release was Rejected or Withdrawn, or why its verification is waiting "
            "(VerifierUnavailable); one of a closed list. Unset while Pending and when Published."
        ),
    )
    message: str | None = Field(
        default=None,
        max_length=32768,
        description=(
            "The verdict for people: what was expected and what was observed, e.g. "
            "'securityVersion 7 is below the floor 9 for gw-3000/application'."
        ),
    )
    conditions: list[Condition] = _conditions_field(FirmwareReleaseConditionType)
    verified_key_ids: list[_KeyIdHex] = Field(
        default_factory=list,
        max_length=MAX_SIGNATURES,
        description=(
            "keyIds (64 lowercase hex) of the distinct trusted keys whose signatures verified "
            f"and counted toward the tier's threshold; at most {MAX_SIGNATURES}."
        ),
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    verified_sha256: str | None = Field(
        default=None,
        min_length=64,
        max_length=64,
        pattern=SHA256_HEX_PATTERN,
        description=(
            "SHA-256 the verifier sidecar computed over the fetched bytes, 64 lowercase hex."
        ),
    )
    observed_generation: int | None = Field(default=None, ge=0, description=_OBSERVED_GENERATION)
    published_at: Timestamp | None = Field(
        default=None,
        description="When the job document was published (RFC 3339); unset until Published.",
    )
    published_to: str | None = Field(
        default=None,
        max_length=1024,
        description=(
            "Where the job document went, e.g. 'ConfigMap fleet-a/gw-3000.stable key "
            "application'; unset until Published."
        ),
    )


class FirmwareRelease(Resource):
    """A firmware build asking to be published to a fleet (its namespace).

    The operator publishes it only if keys trusted for its tier, now, signed exactly this
    artifact, the artifact is bit for bit what was signed, and its securityVersion is not below
    the rollback floor. The spec is immutable. Written by `flashgate sign`.
    """

    crd: ClassVar[CRDNames] = CRDNames(
        kind="FirmwareRelease",
        plural="firmwarereleases",
        singular="firmwarerelease",
        short_names=("fwr", "fwrelease"),
        printer_columns=(
            PrinterColumn("Phase", "string", ".status.phase",
                          "Where the release is on its way to the fleet."),
            PrinterColumn("Tier", "string", ".spec.tier", "The tier of the image."),
            PrinterColumn("Product", "string", ".spec.product", "The hardware class."),
            PrinterColumn("Version", "string", ".spec.version", "The version people read."),
            PrinterColumn("SecurityVersion", "integer", ".spec.securityVersion",
                          "The anti-rollback counter."),
            PrinterColumn("Channel", "string", ".spec.channel", "The distribution channel.",
                          priority=1),
            PrinterColumn("Ready", "string", '.status.conditions[?(@.type=="Ready")].status',
                          "Whether the release is published.", priority=1),
            PrinterColumn("Reason", "string", ".status.reason",
                          "Why the release was refused or withdrawn."),
            PrinterColumn("Age", "date", ".metadata.creationTimestamp", "Time since creation."),
        ),
    )

    api_version: str = Field(default=API_VERSION, description="ota.flashgate.dev/v1alpha1")
    kind: str = Field(default="FirmwareRelease", description="FirmwareRelease")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Standard object metadata.")
    spec: FirmwareReleaseSpec = Field(
        description=(
            "The release as signed. Immutable: the API server refuses any edit, so a new build "
            "is a new FirmwareRelease. Every field but channel, artifact.url and signatures must "
            "equal the signed manifest, else the release is Rejected (ManifestMismatch)."
        ),
    )
    status: FirmwareReleaseStatus | None = Field(
        default=None,
        description="The verdict and where the release was published, written by the operator.",
    )


# ------------------------------------------------------------------------------------------------
# RollbackFloor
# ------------------------------------------------------------------------------------------------


def rollback_floor_name(product: str, tier: Tier | str) -> str:
    """The one name a RollbackFloor of (product, tier) may have: ``<product>.<tier>``."""
    return f"{product}.{Tier(tier).value}"


class RollbackFloorSpec(_Model):
    """The floor of one product and tier."""

    product: str = Field(
        min_length=1,
        max_length=63,
        pattern=DNS_LABEL_PATTERN,
        description=(
            "The hardware class this floor applies to (FirmwareRelease spec.product). Required; "
            f"{_DNS_LABEL_WORDS}. Immutable."
        ),
        json_schema_extra=_cel(
            _immutable("product", "a floor belongs to one product and tier for life"),
            pattern_message=f"product must be {_DNS_LABEL_WORDS}",
        ),
    )
    tier: Tier = Field(
        description="The tier this floor applies to. Required. Immutable.",
        json_schema_extra=_cel(
            _immutable("tier", "a floor belongs to one product and tier for life")
        ),
    )
    security_version: int = Field(
        ge=0,
        le=MAX_SECURITY_VERSION,
        description=(
            "The floor: the highest securityVersion ever published for this product and tier, "
            "or higher if raised on purpose by the security team; never decreases. Releases "
            "below it are Rejected (RollbackRejected); equal is allowed. The operator raises it "
            "before it publishes a job document. Required; 0 to "
            f"{MAX_SECURITY_VERSION}. The API server refuses any update that lowers it."
        ),
        json_schema_extra=_cel(
            {
                "rule": "self >= oldSelf",
                # No messageExpression: the API server estimates string(int) as unbounded
                # and refuses the CRD for exceeding the CEL cost budget.
                "message": "the rollback floor never goes down: securityVersion may only be "
                "raised, never lowered",
            }
        ),
    )


class RollbackFloorStatus(_StatusModel):
    """Who raised the floor last, written by the operator only."""

    last_raised_by: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN_PATTERN,
        description=(
            "Name of the FirmwareRelease whose publication last raised the floor; unset when it "
            "was last raised by hand."
        ),
    )
    last_raised_at: Timestamp | None = Field(
        default=None, description="When the floor was last raised (RFC 3339)."
    )
    observed_generation: int | None = Field(default=None, ge=0, description=_OBSERVED_GENERATION)


class RollbackFloor(Resource):
    """The anti-rollback floor of one product and tier in a fleet (its namespace).

    A release whose securityVersion is below spec.securityVersion is refused. The floor never
    goes down: the API server refuses an update that lowers it. There is one per product and
    tier, named <product>.<tier> (e.g. gw-3000.application). Deleting it would reset the floor,
    so grant delete on rollbackfloors to nobody.
    """

    model_config = ConfigDict(
        json_schema_extra=_cel(
            {
                "rule": "self.metadata.name == self.spec.product + '.' + self.spec.tier",
                "message": "a RollbackFloor is named <product>.<tier>, so that a fleet has one "
                "floor per product and tier",
                "messageExpression": "'a RollbackFloor is named <product>.<tier>: this one must "
                "be named ' + self.spec.product + '.' + self.spec.tier + ', so that a fleet has "
                "one floor per product and tier'",
            }
        ),
    )
    crd: ClassVar[CRDNames] = CRDNames(
        kind="RollbackFloor",
        plural="rollbackfloors",
        singular="rollbackfloor",
        short_names=("rbf",),
        printer_columns=(
            PrinterColumn("Product", "string", ".spec.product", "The hardware class."),
            PrinterColumn("Tier", "string", ".spec.tier", "The tier."),
            PrinterColumn("Floor", "integer", ".spec.securityVersion",
                          "The lowest securityVersion a new release may carry."),
            PrinterColumn("RaisedBy", "string", ".status.lastRaisedBy",
                          "The release that last raised the floor.", priority=1),
            PrinterColumn("Age", "date", ".metadata.creationTimestamp", "Time since creation."),
        ),
    )

    api_version: str = Field(default=API_VERSION, description="ota.flashgate.dev/v1alpha1")
    kind: str = Field(default="RollbackFloor", description="RollbackFloor")
    metadata: dict[str, Any] = Field(default_factory=dict, description="Standard object metadata.")
    spec: RollbackFloorSpec = Field(
        description=(
            "The product, tier (both immutable) and the floor itself, which only goes up."
        ),
    )
    status: RollbackFloorStatus | None = Field(
        default=None, description="Who raised the floor last and when, written by the operator."
    )


RESOURCES: tuple[type[Resource], ...] = (
    SigningKey,
    FirmwareRelease,
    RollbackFloor,
)
"""The kinds of the API, in the order their CRDs are written."""
