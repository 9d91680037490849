"""The verifier sidecar's local API: request and response bodies (the wire contract).

docs/design.md "The verifier sidecar". Python names are snake_case, the JSON names camelCase
(aliases); both are accepted on input. Requests forbid unknown fields (a misspelt `floor` must
not read as "no floor").

The release and key specs inside a request are the API's own models (`flashgate.api`:
`FirmwareReleaseSpec`, `SigningKeySpec`), with the API's limits: the sidecar takes exactly what
the API server admits, and a spec the API server would refuse is a 400, not a verdict. Limits
live where they belong: the wire format's in `flashgate.trust`, the API's in
`flashgate.api.schema`; this module adds only limits of its own requests (`MAX_KEYS`).

Both sides import this module: the sidecar serves it (flashgate.verifier_sidecar.server), the
operator calls it through `flashgate.verifier_api.client.VerifierClient`.
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from flashgate.api import MAX_SECURITY_VERSION, FirmwareReleaseSpec, SigningKeySpec
from flashgate.trust import MAX_UINT, Algorithm, Reason, Tier

MAX_KEYS = 1000
"""SigningKeys in one request: far more than a fleet has, and it bounds the work per request."""

Name = Annotated[str, Field(min_length=1, max_length=253)]


class _Body(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid",
                              frozen=True)

    def to_json(self) -> dict[str, object]:
        return self.model_dump(mode="json", by_alias=True)


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
    release: FirmwareReleaseSpec
    keys: list[KeyEntry] = Field(max_length=MAX_KEYS,
                                 description="every SigningKey of the fleet, all tiers")
    floor: int | None = Field(ge=0, le=MAX_SECURITY_VERSION,
                              description="the stored rollback floor; null when none yet "
                                          "(required: say null explicitly)")
    now: int = Field(ge=0, le=MAX_UINT, description="Unix seconds, fixed for this evaluation")


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


class ReleaseProgress(_Body):
    """GET /v1/verify/release/progress?fleet=F&name=N: where a release's download stands, for
    an operator waiting on a verdict (the answer to a ReleaseRequest comes only at the end)."""

    model_config = ConfigDict(extra="ignore")

    state: Literal["queued", "fetching", "unknown"] = Field(
        description="queued: waiting for a download slot; fetching: downloading; unknown: no "
                    "download of that release now (not there yet, done, or never asked)")
    ahead: int = Field(default=0, ge=0, description="downloads of the same fleet queued "
                                                    "before it (queued only)")
    active: int = Field(default=0, ge=0, description="downloads running now, all fleets")
    fleet_active: int = Field(default=0, ge=0,
                              description="downloads of the same fleet running now")
    bytes_read: int = Field(default=0, ge=0, alias="bytes",
                            description="bytes downloaded so far (fetching only)")


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
