"""The URL policy (urlpolicy.Checker) on its own: what the sidecar refuses before any
connection, and the addresses a connection may then use. Only DNS lookups of public or
allow-listed names; nothing connects."""
from __future__ import annotations

import asyncio

import pytest

from flashgate.trust import Reason
from flashgate.verifier_sidecar.urlpolicy import CheckedURL, Checker, URLNotAllowed, URLPolicy

LOOPBACK = URLPolicy.make(allowed_networks=["127.0.0.1/32"])


def check(policy: URLPolicy, url: str) -> CheckedURL:
    return asyncio.run(Checker(policy, resolve_timeout=2).check(url))


# refused and allowed ----------------------------------------------------------------------------------

DENIED = [
    "https://127.0.0.1/fw.bin", "https://localhost/fw.bin", "https://[::1]/fw.bin",
    "https://169.254.169.254/latest/meta-data/", "https://[fe80::1]/x", "https://10.0.0.1/x",
    "https://172.16.5.4/x", "https://192.168.1.1/x", "https://100.64.0.1/x",
    "https://0.0.0.0/x", "https://[::]/x", "https://224.0.0.1/x", "https://[ff02::1]/x",
    "https://[::ffff:127.0.0.1]/x", "https://[::ffff:169.254.169.254]/x",
    "https://[2002:7f00:1::]/x", "https://[fd00::1]/x", "https://127.1/x",
    "https://0x7f.0.0.1/x", "https://2130706433/x", "https://017700000001/x",
    "https://kubernetes.default.svc/x", "https://kubernetes.default/x",
    "https://minio.storage.svc.cluster.local/x", "https://metadata.google.internal/x",
    "https://minio/x", "http://example.com/fw.bin", "ftp://example.com/fw.bin",
    "https://user:secret@example.com/fw.bin", "https://user@example.com/fw.bin",
    "https://@example.com/fw.bin", "file:///etc/passwd", "gopher://example.com/",
    "example.com/fw.bin",
]


@pytest.mark.parametrize("url", DENIED)
def test_url_policy_denies(url: str) -> None:
    with pytest.raises(URLNotAllowed) as refused:
        check(URLPolicy(), url)
    assert refused.value.reason is Reason.ArtifactURLNotAllowed  # the verdict's own enum


@pytest.mark.parametrize("url", ["https://8.8.8.8/fw.bin", "https://[2606:4700::1111]/fw.bin"])
def test_url_policy_allows_public_addresses(url: str) -> None:
    checked = check(URLPolicy(), url)
    assert checked.addresses and checked.url.scheme == "https"


@pytest.mark.parametrize("policy", [URLPolicy.make(allowed_hosts=["127.0.0.1"]),
                                    URLPolicy.make(allowed_networks=["127.0.0.0/8"])])
def test_allow_listed_loopback_passes(policy: URLPolicy) -> None:
    checked = check(policy, "https://127.0.0.1:8443/fw.bin")
    assert checked.addresses == ("127.0.0.1",)


def test_allow_listed_name_resolves() -> None:
    policy = URLPolicy.make(allowed_hosts=["localhost"])
    checked = check(policy, "https://localhost:8443/fw.bin")
    assert "127.0.0.1" in checked.addresses


def test_allow_list_of_one_address_does_not_open_the_others() -> None:
    with pytest.raises(URLNotAllowed):
        check(LOOPBACK, "https://127.0.0.2/fw.bin")


