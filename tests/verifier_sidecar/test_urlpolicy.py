"""The URL policy (urlpolicy) on its own: what the sidecar refuses before any connection
(addresses, names, credentials, the fleet's artifact prefixes), the addresses a connection may
then use, and redaction of URLs in messages. Only DNS lookups of public or allow-listed names;
nothing connects."""
from __future__ import annotations

import asyncio

import pytest

from flashgate.trust import Reason
from flashgate.verifier_sidecar.urlpolicy import (
    ArtifactPrefixes,
    CheckedURL,
    Checker,
    URLNotAllowed,
    URLPolicy,
    URLPrefix,
    check_credentials,
    check_release_url,
    redact,
)

LOOPBACK = URLPolicy.make(allowed_networks=["127.0.0.1/32"])


def check(policy: URLPolicy, url: str) -> CheckedURL:
    return asyncio.run(Checker(policy, resolve_timeout=2).check(url))


# refused and allowed addresses and names ------------------------------------------------------

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




# credentials, redaction, the fleet's artifact prefixes -----------------------------------------

@pytest.mark.parametrize("url", ["https://user:pw@fw.example.com/fw.bin",
                                 "https://token@fw.example.com/fw.bin", "https://@fw.example.com/x",
                                 "s3://key:secret@bucket/fw.bin"])
def test_credentials_in_a_url_are_refused_with_the_reason(url: str) -> None:
    for refuse in (lambda: check_credentials(url), lambda: check(URLPolicy(), url)):
        with pytest.raises(URLNotAllowed) as refused:
            refuse()
        assert refused.value.message == (
            "credentials in an artifact URL would be published to devices; use the sidecar's "
            "s3 credentials or a presigned URL")


@pytest.mark.parametrize(("text", "expected"), [
    ("https://user:pw@fw.example.com/a/fw.bin?X-Amz-Signature=abc#frag",
     "https://fw.example.com/a/fw.bin"),
    ("s3://bucket/k?versionId=7", "s3://bucket/k"),
    ("artifact https://u:p@h.example.com/x?sig=1 failed: 404, message='Not Found', "
     "url='https://h.example.com/y?token=2'",
     "artifact https://h.example.com/x failed: 404, message='Not Found', "
     "url='https://h.example.com/y'"),
    ('{"message": "fetching https://a@b.example.com/c?d=e failed"}',
     '{"message": "fetching https://b.example.com/c failed"}'),
    ("no URL in here, user@example.com?", "no URL in here, user@example.com?"),
    ("https://fw.example.com/plain", "https://fw.example.com/plain"),
])
def test_redact_cuts_userinfo_query_and_fragment(text: str, expected: str) -> None:
    assert redact(text) == expected


PREFIX = "https://fw.example.com/a"


@pytest.mark.parametrize(("url", "admitted"), [
    ("https://fw.example.com/a", True),
    ("https://fw.example.com/a/fw.bin", True),
    ("https://FW.Example.com./a/x/fw.bin", True),
    ("https://fw.example.com:443/a/fw.bin", True),
    ("https://fw.example.com.evil/a/fw.bin", False),
    ("https://evil.example/fw.example.com/a/fw.bin", False),
    ("https://fw.example.com/ab", False),
    ("https://fw.example.com/", False),
    ("https://fw.example.com:8443/a/fw.bin", False),
    ("s3://fw.example.com/a/fw.bin", False),
    ("https://fw.example.com/a/../b/fw.bin", False),
    ("https://fw.example.com/a/%2E%2e/b/fw.bin", False),
    ("https://fw.example.com/a%2F..%2Fb/fw.bin", False),
    ("https://fw.example.com/a/..%5Cb/fw.bin", False),
    ("https://[zz]/a", False),
])
def test_prefixes_compare_parsed_urls(url: str, admitted: bool) -> None:
    prefixes = ArtifactPrefixes.make([PREFIX])
    if admitted:
        prefixes.check("gw-1", url)
        return
    with pytest.raises(URLNotAllowed) as refused:
        prefixes.check("gw-1", url)
    assert refused.value.message == (
        f"not under the artifact URL prefixes allowed for fleet gw-1 ({PREFIX})")


def test_a_prefix_ending_in_a_slash_and_a_host_alone() -> None:
    ArtifactPrefixes.make(["https://fw.example.com/a/"]).check("f", "https://fw.example.com/a/x")
    with pytest.raises(URLNotAllowed):
        ArtifactPrefixes.make(["https://fw.example.com/a/"]).check("f", "https://fw.example.com/a")
    whole_host = ArtifactPrefixes.make(["https://fw.example.com"])
    whole_host.check("f", "https://fw.example.com/any/where.bin")
    with pytest.raises(URLNotAllowed):
        whole_host.check("f", "https://fw.example.com.evil/any/where.bin")
    ArtifactPrefixes.make(["s3://gw-1-firmware/"]).check("f", "s3://gw-1-firmware/os/4.2.bin")


def test_a_fleets_own_list_replaces_the_default() -> None:
    prefixes = ArtifactPrefixes.make(["https://fw.example.com/"], {
        "gw-1": ["s3://gw-1-firmware/"], "frozen": [], "as-default": None})
    prefixes.check("gw-2", "https://fw.example.com/x.bin")
    prefixes.check("as-default", "https://fw.example.com/x.bin")
    prefixes.check("gw-1", "s3://gw-1-firmware/x.bin")
    with pytest.raises(URLNotAllowed, match=r"fleet gw-1 \(s3://gw-1-firmware/\)"):
        prefixes.check("gw-1", "https://fw.example.com/x.bin")
    with pytest.raises(URLNotAllowed, match=r"fleet frozen \(none\)"):
        prefixes.check("frozen", "https://fw.example.com/x.bin")
    # Unset: today's behaviour, any URL (the address rules still apply when fetching).
    ArtifactPrefixes().check("gw-1", "https://anywhere.example/x.bin")


@pytest.mark.parametrize("text", ["http://fw.example.com/", "https://user@fw.example.com/",
                                  "https://fw.example.com/?a=1", "https://fw.example.com/a/../b",
                                  "https:///a", "ftp://x.example/"])
def test_malformed_prefixes_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        URLPrefix.parse(text)


def test_check_release_url_refuses_credentials_before_prefixes() -> None:
    prefixes = ArtifactPrefixes.make([PREFIX])
    with pytest.raises(URLNotAllowed, match="credentials"):
        check_release_url("https://u:p@fw.example.com/a/x", "f", prefixes)
    check_release_url("https://fw.example.com/a/x", "f", prefixes)
