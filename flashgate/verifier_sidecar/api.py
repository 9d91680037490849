"""The sidecar's local API: request and response bodies, and the client the operator uses.

DESIGN.md "Sidecar API". Python names are snake_case, the JSON names camelCase (aliases); both are
accepted on input. Requests forbid unknown top-level fields (a misspelt `floor` must not read as
"no floor"); the SigningKey and FirmwareRelease specs inside ignore fields they do not know, as
those are the CRDs' and everything that matters to the verdict is signed.

    async with VerifierClient("http://127.0.0.1:8181", timeout=660) as verifier:
        verdict = await verifier.verify_release(ReleaseRequest.model_validate(body))

Any failure to get a verdict (nothing listening, timeout, a non-200 answer, a body that is not a
verdict) raises `VerifierUnavailable`; the operator maps it to reason VerifierUnavailable and
retries: fail closed.
"""
from __future__ import annotations

from datetime import datetime
from types import TracebackType
from typing import Annotated, Literal, TypeVar

import aiohttp
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError
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
    """One SigningKey of the fleet; `retired` (the operator's rotation state) removes trust."""

    name: Name
    spec: SigningKeySpec
    retired: bool = False


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


class VerifierUnavailable(Exception):
    """No verdict could be had from the sidecar; `status` is the HTTP status when there was one."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


Verdict = TypeVar("Verdict", ReleaseVerdict, KeyVerdict)


class VerifierClient:
    """Async client of the sidecar's local API.

    Args:
        target: "http://127.0.0.1:PORT", or a Unix socket as "unix:///path.sock" or "/path.sock".
        timeout: seconds for one call, end to end; it must exceed the sidecar's own
            totalTimeoutSeconds for downloads, or big artifacts read as VerifierUnavailable.
    """

    def __init__(self, target: str, timeout: float = 660.0) -> None:
        socket_path = target.removeprefix("unix://") if not target.startswith("http") else None
        self._socket = socket_path
        self._base = "http://localhost" if socket_path else target.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> VerifierClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = (aiohttp.UnixConnector(path=self._socket) if self._socket
                         else aiohttp.TCPConnector())
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout,
                                                  trust_env=False)
        return self._session

    async def verify_release(self, request: ReleaseRequest) -> ReleaseVerdict:
        """Raises: VerifierUnavailable."""
        return await self._post("/v1/verify/release", request, ReleaseVerdict)

    async def verify_key(self, request: KeyRequest) -> KeyVerdict:
        """Raises: VerifierUnavailable."""
        return await self._post("/v1/verify/key", request, KeyVerdict)

    async def healthy(self) -> None:
        """Raises: VerifierUnavailable unless GET /healthz answers 200 (within 10 s at most)."""
        await self._call("GET", "/healthz", None, timeout=min(self._timeout.total or 10, 10))

    async def _post(self, path: str, request: _Body, answer: type[Verdict]) -> Verdict:
        text = await self._call("POST", path, request.to_json())
        try:
            return answer.model_validate_json(text)
        except ValidationError as exc:
            raise VerifierUnavailable(f"{path} answered with a body that is not a verdict: "
                                      f"{exc.error_count()} errors") from None

    async def _call(self, method: str, path: str, body: dict[str, object] | None,
                    timeout: float | None = None) -> str:
        limit = aiohttp.ClientTimeout(total=timeout) if timeout else self._timeout
        try:
            async with self._client().request(method, self._base + path, json=body,
                                              timeout=limit) as response:
                text = await response.text()
                if response.status != 200:
                    raise VerifierUnavailable(
                        f"{method} {path} answered HTTP {response.status}: {text[:500]}",
                        status=response.status)
                return text
        except TimeoutError:  # before OSError, of which it is a subclass
            raise VerifierUnavailable(f"{method} {path}: no answer within "
                                      f"{limit.total:g}s") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise VerifierUnavailable(f"{method} {path}: {type(exc).__name__}: {exc}") from None


__all__ = ["ArtifactRef", "ErrorBody", "KeyEntry", "KeyRequest", "KeyVerdict", "ReleaseRequest",
           "ReleaseSpec", "ReleaseVerdict", "SigningKeySpec", "VerifierClient",
           "VerifierUnavailable", "whole_seconds"]
