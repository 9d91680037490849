"""s3:// artifact URLs: the object's https URL on the configured endpoint, signed with SigV4.

docs/design.md gives the sidecar read-only object-storage credentials; this module turns
`s3://bucket/key` into a GET of that object on the configured endpoint (path or virtual-hosted
style) with an AWS Signature Version 4 `Authorization` header. The request then goes through the
same https path as any artifact: URL policy (the endpoint is not exempt: a private endpoint must be
in allowedHosts/allowedNetworks), pinned addresses, TLS verification, limits.

Credentials are read at each fetch, so a rotated Secret mounted as files takes effect without a
restart; without files, the AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN
environment variables are used.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal
from urllib.parse import quote

from yarl import URL

from flashgate.verifier_sidecar.urlpolicy import ArtifactUnavailable, URLNotAllowed

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
# S3 bucket naming rules, minus the legacy forms: 3-63 lowercase letters, digits, dots, hyphens.
BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
MAX_KEY_BYTES = 1024


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
        """Raises: ArtifactUnavailable when none are configured or readable."""
        def read(path: Path | None, env: str) -> str | None:
            if path is None:
                return os.environ.get(env) or None
            try:
                return path.read_text(encoding="utf-8").strip() or None
            except (OSError, UnicodeError) as exc:
                raise ArtifactUnavailable(f"cannot read S3 credentials from {path}: "
                                          f"{type(exc).__name__}") from None

        key_id = read(self.access_key_id_file, "AWS_ACCESS_KEY_ID")
        secret = read(self.secret_access_key_file, "AWS_SECRET_ACCESS_KEY")
        if key_id is None or secret is None:
            raise ArtifactUnavailable("no S3 credentials: set accessKeyIdFile and "
                                      "secretAccessKeyFile, or AWS_ACCESS_KEY_ID and "
                                      "AWS_SECRET_ACCESS_KEY")
        return Credentials(key_id, secret, read(self.session_token_file, "AWS_SESSION_TOKEN"))

    def object_url(self, s3_url: URL) -> URL:
        """The https URL of the object named by s3://bucket/key.

        Raises:
            URLNotAllowed: bucket or key malformed, or a query/port/userinfo on the s3:// URL.
        """
        bucket, key = s3_url.raw_host or "", s3_url.path.removeprefix("/")
        if not BUCKET.match(bucket) or ".." in bucket:
            raise URLNotAllowed(f"s3:// bucket {bucket[:70]!r} is not a valid bucket name")
        if not key or len(key.encode()) > MAX_KEY_BYTES or "\x00" in key:
            raise URLNotAllowed("s3:// URL needs an object key of 1 to 1024 bytes")
        if s3_url.raw_query_string or s3_url.explicit_port is not None or s3_url.raw_user:
            raise URLNotAllowed("s3:// URLs take only s3://bucket/key (no port, query or user)")
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
    amz_date = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    scope = f"{amz_date[:8]}/{region}/s3/aws4_request"
    send = {**(headers or {}), "x-amz-content-sha256": EMPTY_SHA256, "x-amz-date": amz_date}
    if credentials.session_token:
        send["x-amz-security-token"] = credentials.session_token
    signed = {k.lower(): " ".join(v.split()) for k, v in send.items()}
    signed["host"] = host_header(url)
    names = sorted(signed)
    canonical = "\n".join([
        "GET", url.raw_path or "/", _canonical_query(url),
        "".join(f"{n}:{signed[n]}\n" for n in names), ";".join(names), EMPTY_SHA256])
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = f"AWS4{credentials.secret_access_key}".encode()
    for part in (amz_date[:8], region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    send["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={credentials.access_key_id}/{scope}, "
                             f"SignedHeaders={';'.join(names)}, Signature={signature}")
    return send


def _canonical_query(url: URL) -> str:
    pairs = sorted((quote(k, safe="-_.~"), quote(v, safe="-_.~")) for k, v in url.query.items())
    return "&".join(f"{k}={v}" for k, v in pairs)

