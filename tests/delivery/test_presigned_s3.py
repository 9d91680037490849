"""Presigned artifact URLs against a real S3-compatible server (versitygw over TLS, checking every
signature), signed with read-only credentials made for the run: the URL downloads exactly the
object's bytes; the same URL is refused once its TTL has passed, for any other object, bucket or
method; and the credentials themselves cannot write."""
from __future__ import annotations

import hashlib
import os
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import s3server
from yarl import URL

from flashgate.delivery.links import Links
from flashgate.s3 import S3Settings

from ..verifier_sidecar.test_s3 import s3_server_for_tests

BUCKET, OTHER_BUCKET = "firmware-images", "other-images"
IMAGE = os.urandom(200_000)


@dataclass
class Store:
    server: s3server.S3Server
    settings: S3Settings
    read_only: tuple[str, str]

    def get(self, url: str, method: str = "GET", data: bytes | None = None) -> bytes:
        context = ssl.create_default_context(cafile=str(self.server.ca_file))
        request = urllib.request.Request(url, method=method, data=data)
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            return bytes(response.read())

    def refusal(self, url: str, method: str = "GET", data: bytes | None = None) -> str:
        with pytest.raises(urllib.error.HTTPError) as caught:
            self.get(url, method, data)
        assert caught.value.code == 403
        return caught.value.read().decode()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    for server in s3_server_for_tests(iam=True):
        for bucket in (BUCKET, OTHER_BUCKET):
            server.create_bucket(bucket)
        server.put_object(BUCKET, "gw-3000/app 4.2.0.bin", IMAGE)
        server.put_object(BUCKET, "gw-3000/other.bin", b"another object")
        server.put_object(OTHER_BUCKET, "gw-3000/app 4.2.0.bin", b"another bucket")
        access, secret = server.read_only_user(BUCKET)
        directory: Path = tmp_path_factory.mktemp("delivery-s3")
        (directory / "access-key-id").write_text(access + "\n")
        (directory / "secret-access-key").write_text(secret + "\n")
        yield Store(server, S3Settings(URL(server.endpoint), "us-east-1",
                                       access_key_id_file=directory / "access-key-id",
                                       secret_access_key_file=directory / "secret-access-key"),
                    (access, secret))


def presigned(store: Store, url: str = f"s3://{BUCKET}/gw-3000/app%204.2.0.bin",
              ttl: int = 60) -> str:
    links = Links(store.settings, ttl)
    return links.link(links.target(url))


def test_the_presigned_url_downloads_exactly_the_object(store: Store) -> None:
    data = store.get(presigned(store))
    assert hashlib.sha256(data).digest() == hashlib.sha256(IMAGE).digest()


def test_the_same_url_is_refused_after_its_ttl(store: Store) -> None:
    url = presigned(store, ttl=2)
    minted = time.time()
    assert store.get(url) == IMAGE
    time.sleep(max(0.0, minted + 3.2 - time.time()))
    assert "expired" in store.refusal(url).lower()


@pytest.mark.parametrize("change", ["key", "bucket", "prefix"])
def test_the_url_is_good_for_no_other_object(store: Store, change: str) -> None:
    url = presigned(store)
    path = f"/{BUCKET}/gw-3000/app%204.2.0.bin"
    assert path + "?" in url
    other = {"key": f"/{BUCKET}/gw-3000/other.bin",
             "bucket": f"/{OTHER_BUCKET}/gw-3000/app%204.2.0.bin",
             "prefix": f"/{BUCKET}/gw-3000/"}[change]
    assert "SignatureDoesNotMatch" in store.refusal(url.replace(path, other))


def test_the_url_is_good_for_no_other_method(store: Store) -> None:
    url = presigned(store)
    assert "SignatureDoesNotMatch" in store.refusal(url, "PUT", b"replaced")
    assert store.get(url) == IMAGE


def test_the_signing_credentials_are_read_only(store: Store) -> None:
    for method, key, body in (("PUT", "gw-3000/app 4.2.0.bin", b"replaced"),
                              ("DELETE", "gw-3000/app 4.2.0.bin", b""),
                              ("PUT", "gw-3000/new.bin", b"new")):
        with pytest.raises(RuntimeError, match=r"(?s)HTTP 403.*AccessDenied"):
            store.server.request(method, BUCKET, key, body, credentials=store.read_only)
    with pytest.raises(RuntimeError, match=r"(?s)HTTP 403.*AccessDenied"):
        store.server.request("GET", OTHER_BUCKET, "gw-3000/app 4.2.0.bin",
                             credentials=store.read_only)
    assert store.get(presigned(store)) == IMAGE
