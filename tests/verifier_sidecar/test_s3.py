"""s3:// artifacts: SigV4 against AWS's published example, and fetches from a real S3-compatible
server: Versity's S3 gateway (versitygw, hack/s3server.py), started as a subprocess over TLS with
a test CA, checking every request's signature. Without the binary (hack/setup.sh builds it) the
server tests are skipped, except in CI where they fail."""
from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import s3server
from yarl import URL

from flashgate.s3 import Credentials, S3Settings, presign_get, sign_get
from flashgate.verifier_sidecar.fetch import (
    ArtifactUnavailable,
    Fetcher,
    FetchLimits,
    URLNotAllowed,
    URLPolicy,
)

FAST = FetchLimits(connect_timeout=5, read_timeout=5, total_timeout=30, min_bytes_per_second=0)
LOOPBACK = URLPolicy.make(allowed_networks=["127.0.0.1/32"])
BUCKET = "firmware-images"
OBJECTS = {"gw-3000/app 4.2.0/ü.bin": os.urandom(300_000), "small.bin": b"tiny"}


def test_sigv4_matches_the_aws_get_object_example() -> None:
    """AWS SigV4 documentation, "Example: GET Object" (with a Range header)."""
    headers = sign_get(URL("https://examplebucket.s3.amazonaws.com/test.txt"),
                       Credentials("AKIAIOSFODNN7EXAMPLE",
                                   "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
                       "us-east-1", datetime(2013, 5, 24, tzinfo=UTC), {"Range": "bytes=0-9"})
    assert headers["Authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")
    assert headers["x-amz-date"] == "20130524T000000Z"


def test_presigned_url_matches_the_aws_example() -> None:
    """AWS SigV4 documentation, "Authenticating Requests: Using Query Parameters", its example
    presigned GET of examplebucket/test.txt for 86400 seconds."""
    url = presign_get(URL("https://examplebucket.s3.amazonaws.com/test.txt"),
                      Credentials("AKIAIOSFODNN7EXAMPLE",
                                  "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
                      "us-east-1", datetime(2013, 5, 24, tzinfo=UTC), 86400)
    assert url == (
        "https://examplebucket.s3.amazonaws.com/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
        "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
        "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404")


@pytest.mark.parametrize("expires", [0, -1, 7 * 86400 + 1])
def test_presigned_url_expiry_is_bounded(expires: int) -> None:
    with pytest.raises(ValueError, match="expires after 1 to 604800 seconds"):
        presign_get(URL("https://s3.example.com/b/k"), Credentials("A", "S"), "us-east-1",
                    datetime(2026, 1, 1, tzinfo=UTC), expires)


def test_presigned_url_carries_the_session_token() -> None:
    url = URL(presign_get(URL("https://s3.example.com/b/k"), Credentials("A", "S", "tok/en"),
                          "us-east-1", datetime(2026, 1, 1, tzinfo=UTC), 60), encoded=True)
    assert url.query["X-Amz-Security-Token"] == "tok/en"
    assert url.raw_path == "/b/k"


def test_session_token_is_signed() -> None:
    headers = sign_get(URL("https://s3.example.com/b/k"), Credentials("A", "S", "token"),
                       "eu-west-1", datetime(2026, 1, 1, tzinfo=UTC))
    assert headers["x-amz-security-token"] == "token"
    assert "x-amz-security-token" in headers["Authorization"]


@pytest.mark.parametrize(("style", "expected"), [
    ("path", "https://s3.example.com:9000/firmware-images/gw%203000/%C3%BC.bin"),
    ("virtual", "https://firmware-images.s3.example.com:9000/gw%203000/%C3%BC.bin"),
])
def test_object_url(style: Any, expected: str) -> None:
    s3 = S3Settings(URL("https://s3.example.com:9000"), "us-east-1", addressing_style=style)
    assert str(s3.object_url(URL("s3://firmware-images/gw 3000/ü.bin"))) == expected


@pytest.mark.parametrize("url", ["s3://ab/k", "s3://bu_cket/k", "s3://a..b/k", "s3://-bucket/k",
                                 "s3://bucket/", "s3://bucket", "s3://bucket/k?versionId=1",
                                 "s3://bucket:99/k", "s3://user@bucket/k",
                                 "s3://bucket/" + "k" * 1025])
def test_malformed_s3_urls_are_refused(url: str) -> None:
    s3 = S3Settings(URL("https://s3.example.com"), "us-east-1")
    fetcher = Fetcher(URLPolicy(), FAST, s3=s3)
    with pytest.raises(URLNotAllowed):
        asyncio.run(fetcher.fetch(url, 10))


def test_s3_without_configuration_is_unavailable() -> None:
    with pytest.raises(ArtifactUnavailable, match="not configured"):
        asyncio.run(Fetcher(URLPolicy(), FAST).fetch("s3://bucket/key", 10))


# ---- a real S3-compatible server -------------------------------------------------------------

def s3_server_for_tests(iam: bool = False) -> Iterator[s3server.S3Server]:
    """versitygw for a test module: built on demand where Go is, skipped where it cannot be had,
    and a failure in CI (where hack/setup.sh must have installed it). `iam`: with user accounts
    (S3Server.read_only_user)."""
    if s3server.find() is None:
        if os.environ.get("CI"):
            pytest.fail("versitygw is not installed: hack/setup.sh installs it "
                        f"({s3server.binary_path()})")
        if shutil.which("go") is None:
            pytest.skip("versitygw is not installed and Go is missing to build it (hack/setup.sh)")
    with s3server.S3Server(iam=iam) as server:
        yield server


@dataclass
class S3:
    server: s3server.S3Server

    @property
    def ca(self) -> Path:
        return self.server.ca_file

    def settings(self, **changes: Any) -> S3Settings:
        base = S3Settings(URL(self.server.endpoint), "us-east-1",
                          access_key_id_file=self.server.access_key_id_file,
                          secret_access_key_file=self.server.secret_access_key_file)
        return replace(base, **changes)

    def fetcher(self, policy: URLPolicy = LOOPBACK, **changes: Any) -> Fetcher:
        return Fetcher(policy, FAST, ca_file=self.ca, s3=self.settings(**changes))


@pytest.fixture(scope="module")
def s3_server() -> Iterator[S3]:
    for server in s3_server_for_tests():
        server.create_bucket(BUCKET)
        for name, data in OBJECTS.items():
            server.put_object(BUCKET, name, data)
        yield S3(server)


def fetch_s3(fetcher: Fetcher, key: str, size: int) -> Any:
    return asyncio.run(fetcher.fetch(f"s3://{BUCKET}/{key}", size))


def test_signed_fetch_from_s3(s3_server: S3) -> None:
    name = "gw-3000/app 4.2.0/ü.bin"
    result = fetch_s3(s3_server.fetcher(), name, len(OBJECTS[name]))
    assert result.sha256 == hashlib.sha256(OBJECTS[name]).digest()
    assert (result.size, result.short, result.oversized) == (len(OBJECTS[name]), False, False)


def test_s3_size_mismatch_is_reported_not_failed(s3_server: S3) -> None:
    assert fetch_s3(s3_server.fetcher(), "small.bin", 2).oversized
    assert fetch_s3(s3_server.fetcher(), "small.bin", 10).short


def test_wrong_secret_is_refused_by_the_server(s3_server: S3, tmp_path: Path) -> None:
    wrong = tmp_path / "secret"
    wrong.write_text("not-the-secret")
    with pytest.raises(ArtifactUnavailable, match=r"HTTP 403.*SignatureDoesNotMatch"):
        fetch_s3(s3_server.fetcher(secret_access_key_file=wrong), "small.bin", 4)


def test_unknown_access_key_is_refused_by_the_server(s3_server: S3, tmp_path: Path) -> None:
    unknown = tmp_path / "key-id"
    unknown.write_text("FGNOSUCHKEY")
    # AWS answers 403 InvalidAccessKeyId; versitygw 404 XAdminUserNotFound. Refused either way.
    with pytest.raises(ArtifactUnavailable,
                       match=r"HTTP (403|404) .*\((InvalidAccessKeyId|XAdminUserNotFound)\)"):
        fetch_s3(s3_server.fetcher(access_key_id_file=unknown), "small.bin", 4)


def test_credentials_are_read_at_each_fetch(s3_server: S3, tmp_path: Path) -> None:
    """A rotated Secret (its mounted files rewritten) takes effect without a new Fetcher."""
    secret = tmp_path / "secret"
    secret.write_text("the-old-secret\n")
    fetcher = s3_server.fetcher(secret_access_key_file=secret)
    with pytest.raises(ArtifactUnavailable, match=r"HTTP 403.*SignatureDoesNotMatch"):
        fetch_s3(fetcher, "small.bin", 4)
    secret.write_text(s3_server.server.secret_access_key + "\n")
    assert fetch_s3(fetcher, "small.bin", 4).sha256 == hashlib.sha256(b"tiny").digest()


def test_missing_object(s3_server: S3) -> None:
    with pytest.raises(ArtifactUnavailable, match=r"HTTP 404.*NoSuchKey"):
        fetch_s3(s3_server.fetcher(), "absent.bin", 4)


def test_s3_endpoint_passes_the_url_policy(s3_server: S3) -> None:
    with pytest.raises(URLNotAllowed, match=r"127\.0\.0\.1"):
        fetch_s3(s3_server.fetcher(policy=URLPolicy()), "small.bin", 4)


def test_missing_credentials(s3_server: S3, tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    with pytest.raises(ArtifactUnavailable, match="no S3 credentials"):
        fetch_s3(s3_server.fetcher(access_key_id_file=None, secret_access_key_file=None),
                 "small.bin", 4)
    with pytest.raises(ArtifactUnavailable, match="cannot read S3 credentials"):
        fetch_s3(s3_server.fetcher(access_key_id_file=tmp_path / "absent"), "small.bin", 4)


def test_release_from_s3_through_the_sidecar_config(s3_server: S3, tmp_path: Path) -> None:
    from flashgate.signing.filekeys import generate
    from flashgate.trust import Algorithm
    from flashgate.verifier_api.models import ReleaseRequest
    from flashgate.verifier_sidecar.metrics import Metrics
    from flashgate.verifier_sidecar.service import VerifierService

    from .test_service import NOW, Fleet

    fleet = Fleet(tmp_path)
    name = "gw-3000/app 4.2.0/ü.bin"
    data = OBJECTS[name]
    settings = fleet.settings(caFile=str(s3_server.ca), allowedNetworks=["127.0.0.1/32"],
                              s3={"endpoint": s3_server.server.endpoint, "region": "us-east-1",
                                  "accessKeyIdFile": str(s3_server.server.access_key_id_file),
                                  "secretAccessKeyFile":
                                      str(s3_server.server.secret_access_key_file)})
    fetcher = Fetcher(settings.url_policy, settings.limits, settings.config.ca_file, settings.s3)
    service = VerifierService(settings.roots, settings.policy, fetcher, Metrics())
    app = generate(Algorithm.ES256)
    # Percent-encoded: the API admits no spaces in an artifact URL (the key keeps its space).
    release = fleet.release([app], data=data, url=f"s3://{BUCKET}/{quote(name)}")
    request = ReleaseRequest.model_validate({
        "fleet": fleet.name, "name": "r", "release": release,
        "keys": [fleet.entry(app, "application")], "floor": 5, "now": NOW})
    verdict = asyncio.run(service.verify_release(request))
    assert verdict.verdict == "accepted", verdict.message
    assert verdict.sha256 == hashlib.sha256(data).hexdigest()


def test_s3_server_killed_and_restarted_keeps_its_objects() -> None:
    """The chaos loop SIGKILLs the S3 server and starts it again (hack/s3server.py restart): the
    same endpoint and credentials serve the same objects; while it is down, a fetch is
    ArtifactUnavailable, never a verdict on the bytes."""
    for server in s3_server_for_tests():
        server.create_bucket(BUCKET)
        server.put_object(BUCKET, "small.bin", OBJECTS["small.bin"])
        s3 = S3(server)
        server.kill()
        with pytest.raises(ArtifactUnavailable):
            fetch_s3(s3.fetcher(), "small.bin", len(OBJECTS["small.bin"]))
        server.restart()
        result = fetch_s3(s3.fetcher(), "small.bin", len(OBJECTS["small.bin"]))
        assert result.sha256 == hashlib.sha256(OBJECTS["small.bin"]).digest()
