"""The verifier sidecar's local API: request and response bodies (the wire contract).

DESIGN.md "Sidecar API". Python names are snake_case, the JSON names camelCase (aliases); both are
accepted on input. Requests forbid unknown top-level fields (a misspelt `floor` must not read as
"no floor"); the SigningKey and FirmwareRelease specs inside ignore fields they do not know, as
those are the CRDs' and everything that matters to the verdict is signed.

Both sides import this module: the sidecar serves it (flashgate.verifier_sidecar.server), the
operator calls it through `flashgate.verifier_api.client.VerifierClient`.
"""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from flashgate.trust import MAX_ENVELOPE_BYTES, Algorithm, Reason, Tier

UINT64 = 2**64 - 1
MAX_BASE64 = 4 * ((MAX_ENVELOPE_BYTES + 2) // 3)
MAX_KEYS = 1000
MAX_REQUEST_SIGNATURES = 64  # the trust core refuses more than 16; this bounds the body only

Envelope = Annotated[str, Field(max_length=MAX_BASE64)]
Name = Annotated[str, Field(min_length=1, max_length=253)]


class _Body(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid",
                              frozen=True)

    def to_json(self) -> dict[str, object]:
        return self.model_dump(mode="json", by_alias=True)


class _Spec(_Body):
    model_config = ConfigDict(extra="ignore")


class ArtifactRef(_Spec):
    """Where the image is and what it must be (a FirmwareRelease's spec.artifact)."""

    url: str = Field(min_length=1, max_length=4096, description="https://, s3:// or file://")
    name: str = Field(max_length=255, description="the image's file name, as signed")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="64 lowercase hex digits")
    size: int = Field(ge=0, le=UINT64, description="bytes, as signed")


class ReleaseSpec(_Spec):
    """A FirmwareRelease spec, as the resource declares it."""

    tier: Tier
    product: str = Field(max_length=253)
    version: str = Field(max_length=128)
    security_version: int = Field(ge=0, le=UINT64)
    channel: str = "stable"
    artifact: ArtifactRef
    signatures: list[Envelope] = Field(max_length=MAX_REQUEST_SIGNATURES,
                                       description="base64 COSE_Sign1 envelopes")


class SigningKeySpec(_Spec):
    """A SigningKey spec. Only `endorsement` (root-signed) can put a key in the trust set; the
    other fields must agree with it, and `revoked` can only take the key out."""

    tier: Tier
    algorithm: Algorithm
    public_key: str = Field(max_length=4096, description="PEM SubjectPublicKeyInfo")
    not_before: AwareDatetime
    not_after: AwareDatetime
    endorsement: Envelope
    replaces: str | None = None
    overlap: str | None = None
    activate_at: AwareDatetime | None = None
    revoked: bool = False
    revocation: Envelope | None = None


class KeyEntry(_Body):
    """One SigningKey of the fleet; `retired` (the operator's rotation state) and `revoked` only
    ever remove trust."""

    name: Name
    spec: SigningKeySpec
    retired: bool = False
    revoked: bool = Field(default=False, description="revoked outside its spec: its keyId is on "
                          "the fleet's RevocationList, or another SigningKey of the same public "
                          "key is revoked")


class ReleaseRequest(_Body):
    """POST /v1/verify/release: may this release be published?"""

    fleet: Name
    name: Name
    release: ReleaseSpec
    keys: list[KeyEntry] = Field(max_length=MAX_KEYS,
                                 description="every SigningKey of the fleet, all tiers")
    floor: int | None = Field(ge=0, le=UINT64,
                              description="the stored rollback floor; null when none yet "
                                          "(required: say null explicitly)")
    now: int = Field(ge=0, le=UINT64, description="Unix seconds, fixed for this evaluation")


class ReleaseVerdict(_Body):
    """The answer to a ReleaseRequest."""

    model_config = ConfigDict(extra="ignore")

    verdict: Literal["accepted", "rejected"]
    reason: Reason | None
    message: str
    key_ids: list[str] = Field(default_factory=list,
                               description="hex keyIds whose signatures verified and counted")
    sha256: str | None = Field(default=None, description="hex digest of the bytes fetched")
    size: int | None = Field(default=None, description="bytes fetched (at most size + 1)")
    seconds: float = 0.0

    @property
    def accepted(self) -> bool:
        return self.verdict == "accepted"


class KeyRequest(_Body):
    """POST /v1/verify/key: did a fleet root endorse exactly this SigningKey?"""

    fleet: Name
    spec: SigningKeySpec


class KeyVerdict(_Body):
    """The answer to a KeyRequest; tier, algorithm and validity come from the verified payload."""

    model_config = ConfigDict(extra="ignore")

    endorsed: bool
    key_id: str | None = Field(default=None, description="hex SHA-256 of the public key")
    reason: Reason | None = None
    message: str
    tier: Tier | None = None
    algorithm: Algorithm | None = None
    not_before: int | None = None
    not_after: int | None = None
    revocation_verified: bool | None = Field(
        default=None, description="null without spec.revocation; else whether it is a "
                                  "root-signed revocation of this keyId for this fleet")
    revocation_message: str | None = None


class ErrorBody(_Body):
    """What a 4xx/5xx answer carries."""

    model_config = ConfigDict(extra="ignore")

    error: str
    details: list[str] = Field(default_factory=list)


def whole_seconds(value: datetime) -> int | None:
    """Unix seconds of an RFC 3339 time, or None when it has a fraction (payloads are whole)."""
    if value.microsecond:
        return None
    return int(value.timestamp())
