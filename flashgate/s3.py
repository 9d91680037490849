"""s3:// URLs and AWS Signature Version 4 for GETs of one object, with read-only credentials.

Two components hold read-only object-storage credentials (docs/design.md) and use this module:
- the verifier sidecar fetches `s3://bucket/key` as a GET of that object on the configured
  endpoint (path or virtual-hosted style) with a SigV4 `Authorization` header (`sign_get`); the
  request then goes through the same https path as any artifact (URL policy, pinned addresses,
  TLS verification, limits);
- the delivery service gives devices a presigned URL of the object instead (`presign_get`: SigV4
  query signing), valid for one GET of that one object until it expires.

`S3Section` is the `s3` section both configurations share. Credentials are read from files at each
use (`S3Settings.credentials`), so a rotated Secret mounted as files takes effect without a
restart; without files, the AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN
environment variables are used.
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel
from yarl import URL

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
ALGORITHM = "AWS4-HMAC-SHA256"
MAX_PRESIGN_SECONDS = 7 * 86400  # SigV4's own limit on X-Amz-Expires
# S3 bucket naming rules, minus the legacy forms: 3-63 lowercase letters, digits, dots, hyphens.
BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
MAX_KEY_BYTES = 1024


class S3URLError(ValueError):
    """An s3:// URL that names no valid object (bucket or key malformed, or extra parts)."""


class S3CredentialsError(Exception):
    """No credentials configured, or their files cannot be read."""


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: str
    session_token: str | None = None

    def __repr__(self) -> str:  # never the secret
        return f"Credentials({self.access_key_id}, ...)"


@dataclass(frozen=True)
class S3Settings:
    """Where s3:// URLs point and how requests are signed (the `s3` section of the config).

    Attributes:
        endpoint: https base URL of the S3 API, e.g. https://s3.eu-west-1.amazonaws.com.
        region: the SigV4 signing region.
        addressing_style: "path" (endpoint/bucket/key) or "virtual" (bucket.endpoint/key).
        access_key_id_file, secret_access_key_file, session_token_file: files holding the
            credentials (a mounted Secret); when unset, the AWS_* environment variables.
    """

    endpoint: URL
    region: str
    addressing_style: Literal["path", "virtual"] = "path"
    access_key_id_file: Path | None = None
    secret_access_key_file: Path | None = None
    session_token_file: Path | None = None

    def credentials(self) -> Credentials:
        """Raises: S3CredentialsError when none are configured or readable."""
        def read(path: Path | None, env: str) -> str | None:
            if path is None:
                return os.environ.get(env) or None
            try:
                return path.read_text(encoding="utf-8").strip() or None
            except (OSError, UnicodeError) as exc:
                raise S3CredentialsError(f"cannot read S3 credentials from {path}: "
                                         f"{type(exc).__name__}") from None

        key_id = read(self.access_key_id_file, "AWS_ACCESS_KEY_ID")
        secret = read(self.secret_access_key_file, "AWS_SECRET_ACCESS_KEY")
        if key_id is None or secret is None:
            raise S3CredentialsError("no S3 credentials: set accessKeyIdFile and "
                                     "secretAccessKeyFile, or AWS_ACCESS_KEY_ID and "
                                     "AWS_SECRET_ACCESS_KEY")
        return Credentials(key_id, secret, read(self.session_token_file, "AWS_SESSION_TOKEN"))

    def object_url(self, s3_url: URL) -> URL:
        """The https URL of the object named by s3://bucket/key.

        Raises:
            S3URLError: bucket or key malformed, or a query/port/userinfo on the s3:// URL.
        """
        bucket, key = s3_url.raw_host or "", s3_url.path.removeprefix("/")
        if not BUCKET.match(bucket) or ".." in bucket:
            raise S3URLError(f"s3:// bucket {bucket[:70]!r} is not a valid bucket name")
        if not key or len(key.encode()) > MAX_KEY_BYTES or "\x00" in key:
            raise S3URLError("s3:// URL needs an object key of 1 to 1024 bytes")
        if s3_url.raw_query_string or s3_url.explicit_port is not None or s3_url.raw_user \
                or s3_url.fragment:
            raise S3URLError("s3:// URLs take only s3://bucket/key (no port, query, fragment "
                             "or user)")
        path = "/" + uri_encode(key)
        base = self.endpoint
        if self.addressing_style == "virtual":
            return base.with_host(f"{bucket}.{base.host}").with_path(path, encoded=True)
        return base.with_path(base.raw_path.rstrip("/") + "/" + bucket + path, encoded=True)


def uri_encode(key: str) -> str:
    """S3's URI encoding of an object key: UTF-8, every byte but unreserved ones and "/"."""
    return quote(key, safe="/-_.~")


def host_header(url: URL) -> str:
    """The Host header aiohttp sends for url (the port only when not the scheme's default)."""
    assert url.host is not None
    host = f"[{url.host}]" if ":" in url.host else url.host
    return host if url.explicit_port in (None, 443) else f"{host}:{url.explicit_port}"


def sign_get(url: URL, credentials: Credentials, region: str, now: datetime,
             headers: Mapping[str, str] | None = None) -> dict[str, str]:
    """SigV4 headers for a GET of url (empty payload), signing host, x-amz-* and `headers`.

    Returns the headers to send: the given ones plus x-amz-date, x-amz-content-sha256,
    x-amz-security-token (with a session token) and Authorization.
    """
    amz_date, scope = _date_and_scope(now, region)
    send = {**(headers or {}), "x-amz-content-sha256": EMPTY_SHA256, "x-amz-date": amz_date}
    if credentials.session_token:
        send["x-amz-security-token"] = credentials.session_token
    signed = {k.lower(): " ".join(v.split()) for k, v in send.items()}
    signed["host"] = host_header(url)
    names = sorted(signed)
    canonical = "\n".join([
        "GET", url.raw_path or "/", _canonical_query(url),
        "".join(f"{n}:{signed[n]}\n" for n in names), ";".join(names), EMPTY_SHA256])
    signature = _signature(credentials.secret_access_key, amz_date, scope, region, canonical)
    send["Authorization"] = (f"{ALGORITHM} Credential={credentials.access_key_id}/{scope}, "
                             f"SignedHeaders={';'.join(names)}, Signature={signature}")
    return send


def presign_get(url: URL, credentials: Credentials, region: str, now: datetime,
                expires: int) -> str:
    """A presigned URL for a GET of exactly `url` (an object's https URL, from `object_url`),
    valid from `now` for `expires` seconds (SigV4 query-string signing).

    Only the host is a signed header and the payload is UNSIGNED-PAYLOAD, so any HTTP client can
    use the URL as it is; the method, host, path and expiry are signed, so it is good for a GET
    of this one object until it expires and for nothing else.
    """
    if not 1 <= expires <= MAX_PRESIGN_SECONDS:
        raise ValueError(f"a presigned URL expires after 1 to {MAX_PRESIGN_SECONDS} seconds, "
                         f"not {expires}")
    amz_date, scope = _date_and_scope(now, region)
    params = {"X-Amz-Algorithm": ALGORITHM,
              "X-Amz-Credential": f"{credentials.access_key_id}/{scope}",
              "X-Amz-Date": amz_date, "X-Amz-Expires": str(expires),
              "X-Amz-SignedHeaders": "host"}
    if credentials.session_token:
        params["X-Amz-Security-Token"] = credentials.session_token
    query = _encode_query(params.items())
    base, path, host = _object_parts(url)
    canonical = "\n".join(["GET", path, query, f"host:{host}\n", "host", UNSIGNED_PAYLOAD])
    signature = _signature(credentials.secret_access_key, amz_date, scope, region, canonical)
    return f"{base}?{query}&X-Amz-Signature={signature}"


@functools.lru_cache(maxsize=4096)
def _object_parts(url: URL) -> tuple[str, str, str]:
    """The URL without query, its raw path and its Host header: the same for every presign of
    one object (the delivery service presigns per request, so they are kept)."""
    return str(url.with_query(None).with_fragment(None)), url.raw_path or "/", host_header(url)


def _date_and_scope(now: datetime, region: str) -> tuple[str, str]:
    amz_date = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return amz_date, f"{amz_date[:8]}/{region}/s3/aws4_request"


def _signature(secret: str, amz_date: str, scope: str, region: str, canonical: str) -> str:
    to_sign = "\n".join([ALGORITHM, amz_date, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = _signing_key(secret, amz_date[:8], region)
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


@functools.lru_cache(maxsize=32)
def _signing_key(secret: str, day: str, region: str) -> bytes:
    """The day's signing key (four HMACs), kept: the delivery service signs per request."""
    key = f"AWS4{secret}".encode()
    for part in (day, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def _canonical_query(url: URL) -> str:
    return _encode_query(url.query.items())


def _encode_query(items: Iterable[tuple[str, str]]) -> str:
    pairs = sorted((quote(k, safe="-_.~"), quote(v, safe="-_.~")) for k, v in items)
    return "&".join(f"{k}={v}" for k, v in pairs)


class S3Section(BaseModel):
    """The `s3` section of a configuration: where s3://bucket/key URLs point, and the read-only
    credentials to sign with (field names camelCase in the file)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid",
                              frozen=True)

    endpoint: str = Field(description="https base URL of the S3 API")
    region: str = Field(default="us-east-1", pattern=r"^[a-z0-9-]{1,40}$")
    addressing_style: Literal["path", "virtual"] = "path"
    access_key_id_file: Path | None = None
    secret_access_key_file: Path | None = None
    session_token_file: Path | None = None

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        url = URL(value)
        if url.scheme != "https" or not url.host or url.raw_user or url.raw_query_string:
            raise ValueError("endpoint must be https://host[:port][/path], TLS verified, "
                             "without credentials or query")
        return value

    def settings(self) -> S3Settings:
        return S3Settings(endpoint=URL(self.endpoint), region=self.region,
                          addressing_style=self.addressing_style,
                          access_key_id_file=self.access_key_id_file,
                          secret_access_key_file=self.secret_access_key_file,
                          session_token_file=self.session_token_file)

