"""The artifact URL a device is given: an s3:// object as a presigned GET URL minted per request
(valid for one object, for `ttl` seconds), an https:// URL as it is.

The URL is not what a device trusts (the envelopes are, and the digest of the bytes), so swapping
it costs the device nothing; it is short-lived and scoped so that a leaked job document gives
nobody lasting or wider access to the bucket.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from yarl import URL

from flashgate.s3 import Credentials, S3Settings, S3URLError, presign_get

DEFAULT_TTL = 15 * 60
MAX_TTL = 60 * 60  # as AWS IoT Jobs bounds expiresInSec
CREDENTIALS_MAX_AGE = 10.0  # seconds: a rotated Secret is picked up this fast


class Unservable(Exception):
    """An artifact URL no device could use through this service (the reason says why)."""


@dataclass(frozen=True)
class Target:
    """Where a job's artifact is: an https URL passed through, or an S3 object to presign."""

    url: str  # as published
    s3_object: URL | None = None  # the object's https URL on the endpoint (s3:// only)


@dataclass
class Links:
    s3: S3Settings | None
    ttl: int = DEFAULT_TTL
    clock: Callable[[], float] = time.time
    _credentials: tuple[float, Credentials] | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.ttl <= MAX_TTL:
            raise ValueError(f"presigned URLs live 1 to {MAX_TTL} seconds, not {self.ttl}")

    def target(self, url: str) -> Target:
        """What a published artifact URL becomes; checked once, when the document arrives.

        Raises:
            Unservable: another scheme (file:// is for demos and tests of the operator), an
                s3:// URL without an `s3` section, or a malformed one.
        """
        parsed = URL(url)
        if parsed.scheme == "https" and parsed.host:
            return Target(url)
        if parsed.scheme != "s3":
            raise Unservable(f"{parsed.scheme}:// artifact URLs are not delivered to devices "
                             "(only https:// and s3://)")
        if self.s3 is None:
            raise Unservable("s3:// artifact URL, but this service has no s3 section")
        try:
            return Target(url, self.s3.object_url(parsed))
        except S3URLError as exc:
            raise Unservable(str(exc)) from None

    def link(self, target: Target) -> str:
        """The URL to give a device now.

        Raises:
            flashgate.s3.S3CredentialsError: no credentials to sign with.
        """
        if target.s3_object is None:
            return target.url
        assert self.s3 is not None
        now = self.clock()
        return presign_get(target.s3_object, self._current_credentials(now), self.s3.region,
                           datetime.fromtimestamp(now, UTC), self.ttl)

    def _current_credentials(self, now: float) -> Credentials:
        """Read from their files at most every CREDENTIALS_MAX_AGE seconds (not per request)."""
        assert self.s3 is not None
        cached = self._credentials
        if cached is None or now - cached[0] > CREDENTIALS_MAX_AGE:
            cached = (now, self.s3.credentials())
            self._credentials = cached
        return cached[1]
