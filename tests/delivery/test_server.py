"""The delivery service's HTTP API on a real TLS port with real device certificates: what devices
get, caching, status reports, and every bad input refused with its 4xx and counted."""
from __future__ import annotations

import json
import ssl
from pathlib import Path
from typing import Any

import pytest
from yarl import URL

from flashgate.delivery.config import ConfigError, settings_from

from .conftest import (
    Pki,
    Running,
    bundle_cm,
    channel_cm,
    document,
    start,
)

CHANNEL = "/v1/fleets/fleet-a/channels/gw-3000/stable"
JOB = CHANNEL + "/jobs/application"
BUNDLE = "/v1/fleets/fleet-a/trust-bundle"
STATUS = "/v1/fleets/fleet-a/devices/dev-1/status"
BUNDLE_TEXT = json.dumps({"apiVersion": "ota.flashgate.dev/v1alpha1", "kind": "TrustBundle",
                          "fleet": "fleet-a", "endorsements": {"application": ["YXBw"]},
                          "revocations": []}, indent=2, sort_keys=True)


def refused(running: Running, reply: Any, status: int, reason: str, count: int = 1) -> None:
    assert reply.status == status, reply.body
    assert reply.json()["reason"] == reason
    assert reply.json()["error"]
    assert running.metric("flashgate_delivery_refusals_total", reason=reason) == count


@pytest.fixture
def published(running: Running) -> Running:
    running.publish("ADDED", channel_cm("fleet-a", {
        "application": document("fleet-a"),
        "os": document("fleet-a", "os-9", tier="os", url="https://fw.example.com/os.img")}))
    running.publish("ADDED", bundle_cm("fleet-a", BUNDLE_TEXT))
    running.publish("ADDED", channel_cm("fleet-b", {"application": document("fleet-b")}))
    return running


# ---- what devices get ----------------------------------------------------------------------

def test_a_channel_holds_every_tier_as_published(published: Running, pki: Pki) -> None:
    reply = published.get(CHANNEL, pki.device("fleet-a", "dev-1"))
    assert reply.status == 200 and reply.headers["content-type"] == "application/json"
    body = reply.json()
    assert {k: body[k] for k in ("kind", "fleet", "product", "channel")} == {
        "kind": "Channel", "fleet": "fleet-a", "product": "gw-3000", "channel": "stable"}
    assert body["jobs"] == {"application": json.loads(document("fleet-a")),
                            "os": json.loads(document("fleet-a", "os-9", tier="os",
                                                      url="https://fw.example.com/os.img"))}


def test_a_job_document_with_an_https_url_is_the_published_text(published: Running,
                                                                  pki: Pki) -> None:
    reply = published.get(JOB, pki.device("fleet-a", "dev-1"))
    assert reply.status == 200
    assert reply.body.decode() == document("fleet-a")


def test_an_s3_artifact_gets_a_presigned_url_and_nothing_else_changes(pki: Pki,
                                                                       tmp_path: Path) -> None:
    (tmp_path / "id").write_text("FGREADONLY\n")
    (tmp_path / "secret").write_text("not-a-real-secret\n")
    server = start(pki, s3={"endpoint": "https://s3.example.com:9000", "region": "eu-west-1",
                            "accessKeyIdFile": str(tmp_path / "id"),
                            "secretAccessKeyFile": str(tmp_path / "secret")})
    try:
        published = document("fleet-a", url="s3://firmware/gw-3000/app%20v4.bin")
        server.publish("ADDED", channel_cm("fleet-a", {"application": published}))
        device = pki.device("fleet-a", "dev-1")
        served = server.get(JOB, device).json()
        url = URL(served.pop("artifact").pop("url"), encoded=True)
        expected = json.loads(published)
        assert expected.pop("artifact").pop("url")
        assert served == expected  # signatures verbatim, every field but the URL as published
        assert (url.scheme, url.host, url.port) == ("https", "s3.example.com", 9000)
        assert url.raw_path == "/firmware/gw-3000/app%20v4.bin"
        assert url.query["X-Amz-Expires"] == "900"  # the default, 15 minutes
        assert url.query["X-Amz-Credential"].startswith("FGREADONLY/")
        assert url.query["X-Amz-Credential"].endswith("/eu-west-1/s3/aws4_request")
        assert url.query["X-Amz-SignedHeaders"] == "host"
        assert len(url.query["X-Amz-Signature"]) == 64
        assert server.metric("flashgate_delivery_presigned_urls_total", fleet="fleet-a") == 1
        channel = server.get(CHANNEL, device).json()
        assert "X-Amz-Signature=" in channel["jobs"]["application"]["artifact"]["url"]
        assert server.metric("flashgate_delivery_presigned_urls_total", fleet="fleet-a") == 2
    finally:
        server.stop()


def test_the_presigned_url_lifetime_is_configurable_up_to_an_hour(pki: Pki,
                                                                   tmp_path: Path) -> None:
    (tmp_path / "id").write_text("A")
    (tmp_path / "secret").write_text("S")
    s3 = {"endpoint": "https://s3.example.com", "accessKeyIdFile": str(tmp_path / "id"),
          "secretAccessKeyFile": str(tmp_path / "secret")}
    server = start(pki, s3=s3, presignTTLSeconds=60)
    try:
        server.publish("ADDED", channel_cm("fleet-a", {
            "application": document("fleet-a", url="s3://firmware/app.bin")}))
        url = URL(server.get(JOB, pki.device("fleet-a", "d")).json()["artifact"]["url"])
        assert url.query["X-Amz-Expires"] == "60"
    finally:
        server.stop()
    for ttl in (0, 3601):
        with pytest.raises(ConfigError, match="presignTTLSeconds"):
            settings_from(pki.config(s3=s3, presignTTLSeconds=ttl))


def test_the_trust_bundle_is_served_as_published(published: Running, pki: Pki) -> None:
    reply = published.get(BUNDLE, pki.device("fleet-a", "dev-1"))
    assert reply.status == 200 and reply.body.decode() == BUNDLE_TEXT
    assert not reply.headers["etag"].startswith("W/")  # the same bytes for every device


@pytest.mark.parametrize("path", [CHANNEL, JOB, BUNDLE])
def test_a_polling_device_gets_304_until_something_changes(published: Running, pki: Pki,
                                                           path: str) -> None:
    device = pki.device("fleet-a", "dev-1")
    first = published.get(path, device)
    etag = first.headers["etag"]
    assert first.headers["cache-control"] == "private, no-cache"
    again = published.get(path, device, headers={"If-None-Match": etag})
    assert (again.status, again.body, again.headers["etag"]) == (304, b"", etag)
    for header in (f'"other", {etag}', "*", etag.removeprefix("W/")):
        assert published.get(path, device, headers={"If-None-Match": header}).status == 304
    assert published.get(path, device, headers={"If-None-Match": '"other"'}).status == 200
    published.publish("MODIFIED", channel_cm("fleet-a", {
        "application": document("fleet-a", "app-4-2-1")}))
    published.publish("MODIFIED", bundle_cm("fleet-a", BUNDLE_TEXT.replace("YXBw", "bmV4dA==")))
    changed = published.get(path, device, headers={"If-None-Match": etag})
    assert changed.status == 200 and changed.headers["etag"] != etag
    assert published.metric("flashgate_delivery_requests_total", route=first_route(path),
                            code="304") == 4


def first_route(path: str) -> str:
    return "job" if "/jobs/" in path else "channel" if "/channels/" in path else "trust-bundle"


def test_a_withdrawn_tier_and_a_deleted_channel_are_gone(published: Running, pki: Pki) -> None:
    device = pki.device("fleet-a", "dev-1")
    published.publish("MODIFIED", channel_cm("fleet-a", {"os": document(
        "fleet-a", "os-9", tier="os", url="https://fw.example.com/os.img")}))
    refused(published, published.get(JOB, device), 404, "not_found")
    assert list(published.get(CHANNEL, device).json()["jobs"]) == ["os"]
    published.publish("DELETED", {"metadata": {"namespace": "fleet-a",
                                               "name": "channel.gw-3000.stable"}})
    refused(published, published.get(CHANNEL, device), 404, "not_found", count=2)


# ---- device status -------------------------------------------------------------------------

def report(running: Running, cert: Any, body: object, path: str = STATUS,
           content_type: str = "application/json") -> Any:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return running.request("POST", path, cert, body=raw,
                           headers={"Content-Type": content_type})


def test_status_reports_count_each_device_once(published: Running, pki: Pki) -> None:
    refusing = {"installed": {"application": {"release": "app-4-2-0", "securityVersion": 7}},
                "lastRejection": {"release": "app-4-2-1", "tier": "application",
                                  "reason": "HashMismatch", "message": "digest differs"}}
    for device in ("dev-1", "dev-2"):
        cert = pki.device("fleet-a", device)
        for _ in range(3):  # devices repeat their state in every report
            reply = report(published, cert, refusing,
                           path=f"/v1/fleets/fleet-a/devices/{device}/status")
            assert reply.status == 204, reply.body
    assert published.metric("flashgate_delivery_status_reports_total", fleet="fleet-a") == 6
    assert published.metric("flashgate_delivery_device_installs_total", fleet="fleet-a",
                            tier="application") == 2
    assert published.metric("flashgate_delivery_device_rejections_total", fleet="fleet-a",
                            tier="application", reason="HashMismatch") == 2
    table = json.loads(published.ops("/v1/releases?fleet=fleet-a").body)
    rows = {row["release"]: row for row in table["releases"]}
    assert rows["app-4-2-1"]["devicesRefusing"] == {"HashMismatch": 2}
    assert rows["app-4-2-0"]["devicesInstalled"] == 2
    assert table["trackedDevices"] == 2 and table["droppedRows"] == 0
    assert json.loads(published.ops("/v1/releases?fleet=fleet-b").body)["releases"] == []


def test_a_device_reports_only_its_own_status(published: Running, pki: Pki) -> None:
    reply = report(published, pki.device("fleet-a", "dev-2"), {})
    refused(published, reply, 403, "other_device")


@pytest.mark.parametrize(("body", "why"), [
    (b"not json", "Invalid JSON"),
    ({"installed": {"firmware": {"release": "x", "securityVersion": 1}}}, "installed.firmware"),
    ({"installed": {"os": {"release": "Not A Name", "securityVersion": 1}}}, "release"),
    ({"installed": {"os": {"release": "os-9", "securityVersion": -1}}}, "securityVersion"),
    ({"lastRejection": {"release": "x", "tier": "os", "reason": "Bored"}}, "reason"),
    ({"lastRejection": {"release": "x", "reason": "HashMismatch"}}, "tier"),
    ({"uptime": 5}, "uptime"),
])
def test_a_malformed_status_report_is_refused(published: Running, pki: Pki, body: Any,
                                              why: str) -> None:
    reply = report(published, pki.device("fleet-a", "dev-1"), body)
    refused(published, reply, 400, "bad_body")
    assert why in reply.json()["error"]


def test_an_oversized_status_report_is_refused(published: Running, pki: Pki) -> None:
    body = {"lastRejection": {"release": "x", "tier": "os", "reason": "HashMismatch",
                              "message": "x" * 20_000}}
    refused(published, report(published, pki.device("fleet-a", "dev-1"), body), 413,
            "body_too_large")


def test_a_status_report_must_be_json(published: Running, pki: Pki) -> None:
    reply = report(published, pki.device("fleet-a", "dev-1"), {}, content_type="text/plain")
    refused(published, reply, 415, "unsupported_media_type")


# ---- who may ask ---------------------------------------------------------------------------

def test_no_certificate(published: Running) -> None:
    refused(published, published.get(CHANNEL, None), 401, "no_certificate")


def test_a_certificate_of_another_fleet(published: Running, pki: Pki) -> None:
    other = pki.device("fleet-b", "dev-9")
    assert published.get("/v1/fleets/fleet-b/channels/gw-3000/stable", other).status == 200
    refused(published, published.get(CHANNEL, other), 403, "other_fleet")
    refused(published, report(published, other, {}), 403, "other_fleet", count=2)


def test_a_fleet_ca_cannot_vouch_for_another_fleet(published: Running, pki: Pki) -> None:
    """fleet-b's CA issues a certificate naming a device of fleet-a."""
    forged = pki.device("fleet-a", "dev-1", ca="fleet-b")
    refused(published, published.get(CHANNEL, forged), 403, "wrong_ca")


@pytest.mark.parametrize("uris", [[], ["spiffe://example.org/dev-1"],
                                  ["urn:flashgate:device:fleet-a:dev-1",
                                   "urn:flashgate:device:fleet-a:dev-2"],
                                  ["urn:flashgate:device:fleet-a:"],
                                  ["urn:flashgate:device:Fleet_A:dev-1"]])
def test_a_certificate_that_names_no_device(published: Running, pki: Pki,
                                            uris: list[str]) -> None:
    cert = pki.device("fleet-a", "dev-1", uris=uris)
    refused(published, published.get(CHANNEL, cert), 403, "no_identity")


def test_a_certificate_of_an_unknown_ca_fails_the_handshake(published: Running, pki: Pki
                                                            ) -> None:
    """Before HTTP: the TLS handshake checks the chain against the served fleets' CAs."""
    from flashgate.delivery.devcerts import DeviceCA

    stranger = DeviceCA("someone else's CA").issue("fleet-a", "dev-1")
    with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
        published.get(CHANNEL, stranger)


def test_an_unknown_fleet(published: Running, pki: Pki) -> None:
    reply = published.get("/v1/fleets/fleet-z/trust-bundle", pki.device("fleet-a", "dev-1"))
    refused(published, reply, 404, "unknown_fleet")


def test_anonymous_access_only_with_the_development_flag(pki: Pki) -> None:
    server = start(pki, anonymous=True)
    try:
        server.publish("ADDED", bundle_cm("fleet-a", BUNDLE_TEXT))
        assert server.get(BUNDLE, None).status == 200
        assert report(server, None, {}).status == 204
        # A certificate that is presented is still checked.
        refused(server, server.get(BUNDLE, pki.device("fleet-b", "dev-9")), 403, "other_fleet")
    finally:
        server.stop()


# ---- malformed requests --------------------------------------------------------------------

@pytest.mark.parametrize("path", [
    "/v1/fleets/fleet-a/channels/gw-3000/../stable",
    "/v1/fleets/fleet-b/../fleet-a/trust-bundle",
    "/v1/fleets/fleet-a/./trust-bundle",
    "/v1/fleets/fleet-a/channels/gw-3000%2Fstable/jobs/application",
    "/v1/fleets/fleet-b%2F..%2Ffleet-a/trust-bundle",
    "/v1/fleets/%2e%2e/trust-bundle",
    "/v1/fleets//trust-bundle",
    "/v1/fleets/fleet-a\\trust-bundle",
    "https://127.0.0.1/v1/fleets/fleet-a/trust-bundle",
])
def test_path_tricks(published: Running, pki: Pki, path: str) -> None:
    refused(published, published.get(path, pki.device("fleet-a", "dev-1")), 400, "bad_path")


@pytest.mark.parametrize("path", [
    "/v1/fleets/Fleet-A/trust-bundle",
    "/v1/fleets/fleet-a/channels/GW_3000/stable",
    "/v1/fleets/fleet-a/channels/gw-3000/" + "s" * 64,
    "/v1/fleets/fleet-a/channels/gw-3000/stable/jobs/firmware",
    "/v1/fleets/fleet-a/channels/-gw/stable",
    "/v1/fleets/fleet-a/channels/gw-3000/stable./jobs/os",
    "/v1/fleets/fleet-a/channels/gw-3000/st:able",
])
def test_odd_names(published: Running, pki: Pki, path: str) -> None:
    refused(published, published.get(path, pki.device("fleet-a", "dev-1")), 400, "bad_path")


def test_an_odd_device_id(published: Running, pki: Pki) -> None:
    reply = report(published, pki.device("fleet-a", "dev-1"), {},
                   path="/v1/fleets/fleet-a/devices/.hidden/status")
    refused(published, reply, 400, "bad_path")


def test_oversized_headers(published: Running, pki: Pki) -> None:
    device = pki.device("fleet-a", "dev-1")
    refused(published, published.get(CHANNEL, device, headers={"X-Pad": "x" * 9000}), 431,
            "headers_too_large")
    many = {f"X-Pad-{i}": "x" for i in range(70)}
    refused(published, published.get(CHANNEL, device, headers=many), 431,
            "headers_too_large", count=2)


def test_headers_over_the_parser_limit_are_refused_and_counted(published: Running,
                                                               pki: Pki) -> None:
    """Beyond aiohttp's own limits the parser answers before any handler: still a 400, still
    counted."""
    reply = published.get(CHANNEL, pki.device("fleet-a", "dev-1"),
                          headers={"X-Pad": "x" * 20_000})
    assert reply.status == 400
    assert published.metric("flashgate_delivery_refusals_total", reason="bad_request") == 1
    assert published.metric("flashgate_delivery_requests_total", route="other",
                            code="400") == 1


def test_unknown_routes_and_methods(published: Running, pki: Pki) -> None:
    device = pki.device("fleet-a", "dev-1")
    refused(published, published.get("/v1/fleets/fleet-a/keys", device), 404, "not_found")
    refused(published, published.request("DELETE", CHANNEL, device), 405, "method_not_allowed")
    refused(published, published.get("/v1/fleets/fleet-a/channels/gw-3000/beta", device), 404,
            "not_found", count=2)


def test_not_ready_until_the_published_documents_are_listed(pki: Pki) -> None:
    server = start(pki, ready=False)
    try:
        refused(server, server.get(BUNDLE, pki.device("fleet-a", "dev-1")), 503, "not_ready")
        assert server.ops("/readyz").status == 503
        assert server.ops("/healthz").status == 200
    finally:
        server.stop()


def test_every_refusal_reason_is_documented() -> None:
    from flashgate.delivery.server import REFUSALS

    docs = (Path(__file__).resolve().parents[2] / "docs" / "delivery.md").read_text()
    missing = [reason for reason in REFUSALS if f"`{reason}`" not in docs]
    assert not missing, f"docs/delivery.md does not explain {missing}"
