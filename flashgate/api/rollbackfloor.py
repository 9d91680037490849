"""RollbackFloor: the anti-rollback floor of one product and tier of a fleet."""

from typing import ClassVar

from pydantic import ConfigDict, Field

from flashgate.api.schema import (
    _DNS_LABEL_WORDS,
    _OBSERVED_GENERATION,
    AGE_COLUMN,
    DNS_LABEL_PATTERN,
    DNS_SUBDOMAIN_PATTERN,
    MAX_DOCUMENT_CHARS,
    MAX_SECURITY_VERSION,
    MAX_SIGNATURES,
    SHA256_HEX_PATTERN,
    CRDNames,
    PrinterColumn,
    Resource,
    Timestamp,
    _cel,
    _immutable,
    _KeyIdHex,
    _Model,
    _StatusModel,
)
from flashgate.trust.vocabulary import Tier


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


MAX_PUBLICATIONS = 256
"""How many publications a floor's ledger keeps: the newest ones, and always every channel's
current entry (see RollbackFloorStatus.publications)."""


class Publication(_StatusModel):
    """One publication of a release to a channel, as the operator recorded it."""

    sequence: int = Field(
        ge=1, description="Its place in this floor's publications: 1, 2, 3, ... never reused."
    )
    release: str = Field(
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN_PATTERN,
        description="The FirmwareRelease's name.",
    )
    uid: str = Field(
        min_length=1, max_length=64, description="The FirmwareRelease's metadata.uid."
    )
    channel: str = Field(
        min_length=1, max_length=63, pattern=DNS_LABEL_PATTERN, description="The channel."
    )
    manifest_sha256: str = Field(
        min_length=64,
        max_length=64,
        pattern=SHA256_HEX_PATTERN,
        description=(
            "SHA-256 of the signed release manifest (its deterministic CBOR), 64 lowercase hex: "
            "what a replay of the same signed build under another name is recognised by."
        ),
    )
    security_version: int = Field(ge=0, le=MAX_SECURITY_VERSION, description="As signed.")
    key_ids: list[_KeyIdHex] = Field(
        default_factory=list,
        max_length=MAX_SIGNATURES,
        description="The keyIds whose signatures verified and counted.",
    )
    published_at: Timestamp = Field(description="When it was published (RFC 3339).")
    withdrawn_at: Timestamp | None = Field(
        default=None,
        description="When it was withdrawn because a key that signed it was revoked.",
    )
    document: str | None = Field(
        default=None,
        max_length=MAX_DOCUMENT_CHARS,
        description=(
            "The job document exactly as published, while this is its channel's current entry "
            "(dropped when a later publication replaces it). The operator restores the channel "
            "ConfigMap from it when the ConfigMap drifts."
        ),
    )


class RollbackFloorStatus(_StatusModel):
    """Who raised the floor last, and the ledger of publications, written by the operator only."""

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
    sequence: int | None = Field(
        default=None, ge=1, description="The sequence number of the latest publication."
    )
    publications: list[Publication] | None = Field(
        default=None,
        max_length=MAX_PUBLICATIONS + 64,
        description=(
            "The ledger of publications of this product and tier, oldest first: the newest "
            f"{MAX_PUBLICATIONS}, and every channel's current entry. The operator reads it to "
            "publish a signed manifest at most once per fleet without an explicit intent, to "
            "resume a publication cut short by a restart, to know which release each channel "
            "must hold, and to withdraw what a revoked key signed."
        ),
    )


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
            AGE_COLUMN,
        ),
    )

    spec: RollbackFloorSpec = Field(
        description=(
            "The product, tier (both immutable) and the floor itself, which only goes up."
        ),
    )
    status: RollbackFloorStatus | None = Field(
        default=None, description="Who raised the floor last and when, written by the operator."
    )
