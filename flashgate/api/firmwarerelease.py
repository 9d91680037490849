"""FirmwareRelease: a firmware build asking to be published to a fleet."""

from typing import ClassVar

from pydantic import ConfigDict, Field, field_validator

from flashgate.api.schema import (
    _DNS_LABEL_WORDS,
    _OBSERVED_GENERATION,
    AGE_COLUMN,
    ARTIFACT_NAME_PATTERN,
    ARTIFACT_URL_PATTERN,
    DEFAULT_CHANNEL,
    DNS_LABEL_PATTERN,
    MAX_ENVELOPE_BASE64,
    MAX_ENVELOPE_BYTES,
    MAX_SECURITY_VERSION,
    MAX_SIGNATURES,
    SHA256_HEX_PATTERN,
    VERSION_PATTERN,
    Condition,
    CRDNames,
    PrinterColumn,
    Resource,
    Timestamp,
    _cel,
    _conditions_field,
    _EnvelopeBase64,
    _KeyIdHex,
    _Model,
    _StatusModel,
)
from flashgate.trust.vocabulary import DocEnum, Reason, Tier


class ReleasePhase(DocEnum):
    """Where a FirmwareRelease is on its way to the fleet."""

    Pending = "Pending", "accepted by the API server, not yet taken up by the operator."
    Verifying = (
        "Verifying",
        "the operator is checking signatures, the rollback floor and the artifact (fetched and "
        "hashed by the verifier sidecar); also while VerifierUnavailable is retried.",
    )
    Published = (
        "Published",
        "every check passed, the rollback floor was raised to securityVersion and the job "
        "document is in its channel (publishedTo). Stays Published when its key is later "
        "retired or expires.",
    )
    Rejected = (
        "Rejected",
        "a check failed for good (reason says which, message says expected vs observed). "
        "Terminal: the spec is immutable, so publish a fixed build as a new FirmwareRelease.",
    )
    Withdrawn = (
        "Withdrawn",
        "was Published, then its signing key was revoked: removed from the channel, devices are "
        "no longer offered it. Terminal.",
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


class Republish(_Model):
    """An intent to publish a signed manifest that was published before in this fleet."""

    reason: str = Field(
        min_length=1,
        max_length=1024,
        description=(
            "Why, for the audit trail: e.g. 'promote 4.2.0 from beta to stable' or 'roll back "
            "to 4.1.3 (same security epoch) for the crash in 4.2.0'. Required; 1 to 1024 "
            "characters."
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

    republish: Republish | None = Field(
        default=None,
        description=(
            "The explicit intent to publish a signed manifest again: a manifest is published at "
            "most once per fleet on a create alone, so re-applying a published release under "
            "another name, to another channel or with another url is Rejected (ReplayRejected) "
            "unless this is set. Set it to promote a build from one channel to another, or to "
            "roll a channel back to an older build of the same security epoch. Only members of "
            "the release-managers group may create a FirmwareRelease with it (an admission "
            "policy refuses everyone else). Optional."
        ),
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
            AGE_COLUMN,
        ),
        selectable_fields=(".status.phase", ".status.reason", ".spec.tier", ".spec.product"),
    )

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
