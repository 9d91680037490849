"""The catalog: published ConfigMaps in, servable documents out; what no device could use is left
out and counted, and the status book's bounds."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from flashgate.delivery.catalog import Catalog
from flashgate.delivery.links import Links
from flashgate.delivery.status import DeviceStatus, StatusBook
from flashgate.s3 import S3Settings

from .conftest import bundle_cm, channel_cm, document


def catalog(s3: bool = False) -> Catalog:
    from yarl import URL

    settings = S3Settings(URL("https://s3.example.com"), "us-east-1") if s3 else None
    return Catalog({"fleet-a"}, Links(settings))


def test_documents_no_device_could_use_are_left_out_and_counted(
        caplog: pytest.LogCaptureFixture) -> None:
    found = catalog()
    found.on_configmap("ADDED", channel_cm("fleet-a", {
        "application": document("fleet-a"),
        "os": document("fleet-a", tier="os", url="file:///srv/os.img"),  # demos only
        "driver": document("fleet-a", tier="driver", url="s3://firmware/d.bin"),  # no s3 section
        "config": "{not json",
        "bootloader": document("fleet-b", tier="bootloader"),  # another fleet's document
    }))
    channel = found.channels[("fleet-a", "gw-3000", "stable")]
    assert list(channel.jobs) == ["application"]
    assert found.counts() == {("fleet-a", "served"): 1, ("fleet-a", "unservable"): 4}
    log = caplog.text
    assert "file:// artifact URLs are not delivered" in log
    assert "no s3 section" in log and "not JSON" in log and "fleet 'fleet-b'" in log


def test_a_document_published_under_another_tier_is_left_out() -> None:
    found = catalog()
    found.on_configmap("ADDED", channel_cm("fleet-a", {"os": document("fleet-a")}))
    assert found.channels[("fleet-a", "gw-3000", "stable")].jobs == {}
    assert found.counts()[("fleet-a", "unservable")] == 1


def test_a_malformed_s3_url_is_left_out() -> None:
    found = catalog(s3=True)
    found.on_configmap("ADDED", channel_cm("fleet-a", {
        "application": document("fleet-a", url="s3://Bad_Bucket/k")}))
    assert found.counts() == {("fleet-a", "unservable"): 1}


def test_other_fleets_and_other_configmaps_are_ignored() -> None:
    found = catalog()
    found.on_configmap("ADDED", channel_cm("fleet-b", {"application": document("fleet-b")}))
    found.on_configmap("ADDED", {"metadata": {"namespace": "fleet-a", "name": "kube-root-ca.crt"},
                                 "data": {"ca.crt": "x"}})
    assert found.channels == {} and found.counts() == {}


def test_a_bundle_that_is_not_a_trust_bundle_is_not_served() -> None:
    found = catalog()
    found.on_configmap("ADDED", bundle_cm("fleet-a", json.dumps({"kind": "TrustBundle"})))
    assert "fleet-a" in found.bundles
    found.on_configmap("MODIFIED", bundle_cm("fleet-a", "[]"))
    assert "fleet-a" not in found.bundles
    assert found.counts() == {("fleet-a", "unservable"): 1}
    found.on_configmap("DELETED", {"metadata": {"namespace": "fleet-a",
                                                "name": "flashgate-trust-bundle"}})
    assert found.counts() == {}


def test_the_channel_etag_follows_the_published_documents_only() -> None:
    found = catalog()
    found.on_configmap("ADDED", channel_cm("fleet-a", {"application": document("fleet-a")}))
    first = found.channels[("fleet-a", "gw-3000", "stable")].etag
    found.on_configmap("MODIFIED", channel_cm("fleet-a", {"application": document("fleet-a")}))
    assert found.channels[("fleet-a", "gw-3000", "stable")].etag == first
    found.on_configmap("MODIFIED", channel_cm("fleet-a", {
        "application": document("fleet-a", "app-4-2-1")}))
    assert found.channels[("fleet-a", "gw-3000", "stable")].etag != first


def test_presigned_urls_live_at_most_an_hour() -> None:
    for ttl in (0, 3601):
        with pytest.raises(ValueError, match="1 to 3600 seconds"):
            Links(None, ttl)


def test_credentials_are_read_again_after_a_while(tmp_path: Path) -> None:
    from yarl import URL

    (tmp_path / "id").write_text("OLD")
    (tmp_path / "secret").write_text("S")
    clock = [1_800_000_000.0]
    links = Links(S3Settings(URL("https://s3.example.com"), "us-east-1",
                             access_key_id_file=tmp_path / "id",
                             secret_access_key_file=tmp_path / "secret"),
                  clock=lambda: clock[0])
    target = links.target("s3://firmware/app.bin")
    assert "OLD%2F" in links.link(target)
    (tmp_path / "id").write_text("NEW")
    assert "OLD%2F" in links.link(target)  # not read per request
    clock[0] += 11
    assert "NEW%2F" in links.link(target)


# ---- the status book -----------------------------------------------------------------------

def status(**fields: object) -> DeviceStatus:
    return DeviceStatus.model_validate(fields)


def test_the_book_remembers_a_bounded_number_of_devices_and_rows() -> None:
    book = StatusBook(max_devices=2, max_releases=2)
    refusing = status(lastRejection={"release": "r1", "tier": "os", "reason": "HashMismatch"})
    assert book.report("f", "d1", refusing) == ([], [("os", "HashMismatch")])
    assert book.report("f", "d1", refusing) == ([], [])  # the same refusal again
    book.report("f", "d2", refusing)
    book.report("f", "d3", refusing)  # d1 is forgotten: the least recently reporting
    assert list(book.devices) == [("f", "d2"), ("f", "d3")]
    assert book.report("f", "d1", refusing) == ([], [("os", "HashMismatch")])
    installed = status(installed={"os": {"release": "r0", "securityVersion": 1},
                                  "config": {"release": "c0", "securityVersion": 1}})
    assert book.report("f", "d4", installed) == (["config", "os"], [])
    table = book.table()
    assert [row["release"] for row in table["releases"]] == ["r0", "c0"]
    assert table["droppedRows"] == 1 and table["maxRows"] == 2
