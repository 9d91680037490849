"""Delivery end to end: the real control plane, operator and sidecar (the session's gate), a real
S3-compatible server (versitygw with user accounts), and the delivery service as its own process,
authenticated only as its ServiceAccount (a TokenRequest token, RBAC of deploy/delivery) and
signing with a read-only S3 account. A device-side client with its fleet's certificate gets the
job document, downloads through the presigned URL exactly the signed bytes, verifies the release
with keys it took from the trust bundle, entry by entry against the fleet root; and the service's
own credentials cannot write anything.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import s3server

from flashgate.delivery.devcerts import DeviceCA, DeviceCert
from flashgate.operator.tls import make_serving_cert
from flashgate.trust import (
    CT_REVOCATION,
    KeyRing,
    Policy,
    ReleaseManifest,
    Revocation,
    Tier,
    TrustError,
    endorsed_record,
    sign1,
    verify_release,
    verify_revocation,
)
from flashgate.trust.keyring import root_key

from ..delivery.client import DeviceClient, Reply, metric
from ..verifier_sidecar.test_s3 import s3_server_for_tests
from .conftest import Fleet, GateSystem

pytestmark = pytest.mark.e2e

BUCKET = "fleet-firmware"
TTL = 3  # seconds a presigned URL lives here (the default is 15 minutes)


@dataclass
class Delivery:
    system: GateSystem
    s3: s3server.S3Server
    fleets: dict[str, Fleet]
    cas: dict[str, DeviceCA]
    client: DeviceClient

    def device(self, fleet: Fleet, name: str) -> DeviceCert:
        return self.cas[fleet.namespace].issue(fleet.namespace, name)

    def until(self, path: str, cert: DeviceCert, ready: Any, timeout: float = 20) -> Reply:
        """GET path until `ready(reply)` (what the operator published reaches the service by
        its watch)."""
        deadline = time.monotonic() + timeout
        while True:
            reply = self.client.get(path, cert)
            if ready(reply) or time.monotonic() > deadline:
                return reply
            time.sleep(0.2)

    def download(self, url: str) -> bytes:
        context = ssl.create_default_context(cafile=str(self.s3.ca_file))
        with urllib.request.urlopen(url, context=context, timeout=10) as response:
            return bytes(response.read())

    def ops(self, path: str) -> str:
        url = f"http://127.0.0.1:{self.system.delivery_ops_port}{path}"
        with urllib.request.urlopen(url, timeout=10) as response:
            return str(response.read().decode())


def read_only_files(server: s3server.S3Server, directory: Path) -> dict[str, str]:
    return server.read_only_files(BUCKET, directory)


@pytest.fixture(scope="module")
def delivery(gate_system: GateSystem) -> Iterator[Delivery]:
    work = gate_system.workdir / "delivery"
    for server in s3_server_for_tests(iam=True):
        server.create_bucket(BUCKET)
        endpoint = {"endpoint": f"https://localhost:{server.port}", "region": "us-east-1"}
        # The sidecar, too, reads with an account of its own that can only read.
        gate_system.sidecar_extra = {
            "allowedHosts": ["localhost"], "caFile": str(server.ca_file),
            "s3": {**endpoint, **read_only_files(server, work / "sidecar-s3")}}
        gate_system.stop_sidecar()
        gate_system.start_sidecar()
        fleets = {ns: Fleet(gate_system, ns)
                  for ns in (gate_system.kube.namespace("dlv-a"),
                             gate_system.kube.namespace("dlv-b"))}
        cas = {ns: DeviceCA(f"{ns} device CA") for ns in fleets}
        server_ca, cert, key = make_serving_cert(("127.0.0.1", "localhost")).write(work / "tls")
        for ns in fleets:
            gate_system.bind_delivery(ns)
        gate_system.start_delivery({
            "fleets": {ns: {"deviceCAFiles": [str(cas[ns].write(work / f"{ns}-ca.pem"))]}
                       for ns in fleets},
            "tls": {"certFile": str(cert), "keyFile": str(key)},
            "presignTTLSeconds": TTL,
            "s3": {**endpoint, **read_only_files(server, work / "delivery-s3")}})
        try:
            yield Delivery(gate_system, server, fleets, cas,
                           DeviceClient("127.0.0.1", gate_system.delivery_port, server_ca,
                                        work / "devices"))
        finally:
            gate_system.stop_delivery()
            gate_system.sidecar_extra = {}
            gate_system.stop_sidecar()
            gate_system.start_sidecar()


def fleet_of(delivery: Delivery, index: int) -> Fleet:
    return list(delivery.fleets.values())[index]


def publish_s3_release(delivery: Delivery, fleet: Fleet, name: str, product: str,
                       data: bytes) -> tuple[Any, ReleaseManifest]:
    """A release of `data` at s3://BUCKET/..., signed by a fresh application key; Published."""
    app = fleet.signing_key(f"app-{name}", "application")
    key = f"{fleet.namespace}/{name}.bin"
    delivery.s3.put_object(BUCKET, key, data)
    doc = fleet.release_doc(name, [app], data=data, product=product)
    doc["spec"]["artifact"]["url"] = f"s3://{BUCKET}/{key}"
    fleet.apply(doc)
    status = fleet.wait_phase("firmwarerelease", name, {"Published", "Rejected"})["status"]
    assert status["phase"] == "Published", status
    manifest = ReleaseManifest(
        fleet=fleet.namespace, product=product, tier=Tier.APPLICATION, version="1.0.0",
        security_version=1, artifact_name=f"{name}.bin", artifact_size=len(data),
        artifact_sha256=hashlib.sha256(data).digest())
    return app, manifest


def test_a_device_downloads_exactly_the_signed_bytes(delivery: Delivery) -> None:
    fleet = fleet_of(delivery, 0)
    data = os.urandom(300_000)
    _, manifest = publish_s3_release(delivery, fleet, "app-1", "gw-dl", data)
    device = delivery.device(fleet, "dev-0001")
    path = f"/v1/fleets/{fleet.namespace}/channels/gw-dl/stable/jobs/application"
    reply = delivery.until(path, device, lambda r: r.status == 200)
    assert reply.status == 200, reply.body
    job = reply.json()
    # The published document, with only the artifact URL replaced.
    published = json.loads(json.loads(fleet.kubectl(
        "get", "configmap", "channel.gw-dl.stable", "-o", "json").stdout)["data"]
        ["application.json"])
    url = job["artifact"].pop("url")
    assert published["artifact"].pop("url") == f"s3://{BUCKET}/{fleet.namespace}/app-1.bin"
    assert job == published
    assert url.startswith(f"https://localhost:{delivery.s3.port}/{BUCKET}/")
    assert "X-Amz-Expires=3&" in url and "X-Amz-Signature=" in url
    # What the device does: verify before downloading, with keys from the trust bundle.
    bundle = delivery.until(f"/v1/fleets/{fleet.namespace}/trust-bundle", device,
                            lambda r: r.status == 200).json()
    keyring = device_keyring(delivery, fleet, bundle)
    verdict = verify_release(job["signatures"], manifest, keyring, Policy(), None,
                             int(time.time()))
    assert verdict.accepted, verdict.message
    image = delivery.download(url)
    assert hashlib.sha256(image).hexdigest() == job["artifact"]["sha256"]
    assert image == data and len(image) == job["artifact"]["size"]
    # The same URL, after its TTL: refused by the S3 server. Another object: refused at once.
    other = url.replace(f"/{fleet.namespace}/app-1.bin", f"/{fleet.namespace}/other.bin")
    delivery.s3.put_object(BUCKET, f"{fleet.namespace}/other.bin", b"not for this URL")
    with pytest.raises(urllib.error.HTTPError) as refused:
        delivery.download(other)
    assert refused.value.code == 403
    time.sleep(TTL + 1.2)
    with pytest.raises(urllib.error.HTTPError) as expired:
        delivery.download(url)
    assert expired.value.code == 403 and b"expired" in expired.value.read().lower()
    # Asking again gives a fresh URL that works.
    fresh = delivery.client.get(path, device).json()["artifact"]["url"]
    assert fresh != url and delivery.download(fresh) == data
    assert metric(delivery.ops("/metrics"), "flashgate_delivery_presigned_urls_total",
                  fleet=fleet.namespace) >= 2


def device_keyring(delivery: Delivery, fleet: Fleet, bundle: dict[str, Any]) -> KeyRing:
    """A device's trust store from a bundle: each entry verified against the pinned root."""
    root = delivery.system.root
    roots = [root_key(root.spki_der, root.algorithm)]
    revoked = {verify_revocation(e, fleet.namespace, roots).key_id.hex()
               for e in bundle["revocations"]}
    records = [endorsed_record(e, fleet.namespace, roots)
               for envelopes in bundle["endorsements"].values() for e in envelopes]
    return KeyRing([*roots, *(replace(r, revoked=r.key_id in revoked) for r in records)])


def test_the_trust_bundle_verifies_entry_by_entry_with_the_fleet_root(delivery: Delivery
                                                                      ) -> None:
    fleet = fleet_of(delivery, 1)
    ns = fleet.namespace
    app = fleet.signing_key("app", "application")
    boot = fleet.signing_key("boot", "bootloader")
    staged = fleet.signing_key("next", "application", wait="Staged",
                               activate_at=fleet.now + 86400)
    leaked = fleet.signing_key("leaked", "application")
    revocation = sign1(delivery.system.root, CT_REVOCATION, Revocation(
        fleet=ns, key_id=bytes.fromhex(leaked.key_id), revoked_at=int(time.time()),
        reason="leaked").to_cbor())
    fleet.kubectl("patch", "signingkey", "leaked", "--type=merge", "-p", json.dumps(
        {"spec": {"revoked": True, "revocation": base64.b64encode(revocation).decode()}}))
    fleet.wait_phase("signingkey", "leaked", {"Revoked"})
    device = delivery.device(fleet, "dev-7")
    reply = delivery.until(f"/v1/fleets/{ns}/trust-bundle", device,
                           lambda r: r.status == 200 and bool(r.json()["revocations"]))
    bundle = reply.json()
    assert bundle["kind"] == "TrustBundle" and bundle["fleet"] == ns
    root = delivery.system.root
    roots = [root_key(root.spki_der, root.algorithm)]
    endorsed: dict[str, set[str]] = {}
    for tier, envelopes in bundle["endorsements"].items():
        for envelope in envelopes:
            record = endorsed_record(envelope, ns, roots)  # raises unless the root signed it
            assert str(record.tier) == tier
            endorsed.setdefault(tier, set()).add(record.key_id)
    assert endorsed == {"application": {app.key_id, staged.key_id},
                        "bootloader": {boot.key_id}}
    revoked = [verify_revocation(e, ns, roots) for e in bundle["revocations"]]
    assert [r.key_id.hex() for r in revoked] == [leaked.key_id]
    # An entry the root did not sign is refused by the device, whoever served it.
    forged = sign1(app, CT_REVOCATION, Revocation(
        fleet=ns, key_id=bytes.fromhex(boot.key_id), revoked_at=1, reason="").to_cbor())
    with pytest.raises(TrustError, match="not a fleet root"):
        verify_revocation(forged, ns, roots)
    # A bundle of another fleet does not verify as this fleet's.
    with pytest.raises(TrustError, match="fleet"):
        verify_revocation(bundle["revocations"][0], fleet_of(delivery, 0).namespace, roots)
    # Polling costs a 304 until a key changes.
    again = delivery.client.get(f"/v1/fleets/{ns}/trust-bundle", device,
                                headers={"If-None-Match": reply.headers["etag"]})
    assert again.status == 304


def test_devices_read_only_their_own_fleet_and_report_status(delivery: Delivery) -> None:
    a, b = fleet_of(delivery, 0), fleet_of(delivery, 1)
    device = delivery.device(a, "dev-0002")
    reply = delivery.client.get(f"/v1/fleets/{b.namespace}/trust-bundle", device)
    assert (reply.status, reply.json()["reason"]) == (403, "other_fleet")
    reply = delivery.client.get(f"/v1/fleets/{b.namespace}/trust-bundle", None)
    assert (reply.status, reply.json()["reason"]) == (401, "no_certificate")
    body = {"installed": {}, "lastRejection": {"release": "app-9", "tier": "application",
                                               "reason": "HashMismatch"}}
    reply = delivery.client.request(
        "POST", f"/v1/fleets/{a.namespace}/devices/dev-0002/status", device,
        body=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    assert reply.status == 204, reply.body
    page = delivery.ops("/metrics")
    assert metric(page, "flashgate_delivery_device_rejections_total", fleet=a.namespace,
                  tier="application", reason="HashMismatch") == 1
    assert metric(page, "flashgate_delivery_refusals_total", reason="other_fleet") >= 1
    table = json.loads(delivery.ops(f"/v1/releases?fleet={a.namespace}"))
    assert table["releases"][0]["release"] == "app-9"
    assert table["releases"][0]["devicesRefusing"] == {"HashMismatch": 1}


def test_the_service_holds_read_access_to_published_configmaps_only(delivery: Delivery
                                                                   ) -> None:
    """The service ran all along with exactly this token; here is what it allows."""
    system = delivery.system
    fleet = fleet_of(delivery, 0)
    ns = fleet.namespace
    kubeconfig = system.workdir / "delivery.kubeconfig"
    assert kubeconfig.is_file() and "token" in kubeconfig.read_text()

    def as_delivery(*args: str) -> Any:
        return system.kube.kubectl(f"--kubeconfig={kubeconfig}", *args, check=False)

    fleet.kubectl("create", "configmap", "probe", "--from-literal=k=v")  # as the admin
    assert as_delivery("-n", ns, "get", "configmap", "probe").returncode == 0
    refused = {
        "create": as_delivery("-n", ns, "create", "configmap", "forged",
                              "--from-literal=application.json={}"),
        "patch": as_delivery("-n", ns, "patch", "configmap", "probe", "--type=merge",
                             "-p", '{"data":{"k":"forged"}}'),
        "delete": as_delivery("-n", ns, "delete", "configmap", "probe"),
        "secrets": as_delivery("-n", ns, "get", "secrets"),
        "releases": as_delivery("-n", ns, "get", "firmwarereleases"),
        "signing keys": as_delivery("-n", ns, "get", "signingkeys"),
        "unbound namespace": as_delivery("-n", "kube-system", "get", "configmaps"),
        "all namespaces": as_delivery("get", "configmaps", "-A"),
    }
    for what, result in refused.items():
        assert result.returncode != 0 and "forbidden" in result.stderr.lower(), (what, result)
    for verb in ("get", "list", "watch"):
        assert as_delivery("auth", "can-i", verb, "configmaps", "-n", ns).stdout.strip() == "yes"
    for verb in ("create", "update", "patch", "delete", "deletecollection"):
        answer = as_delivery("auth", "can-i", verb, "configmaps", "-n", ns).stdout.strip()
        assert answer == "no", verb
    assert json.loads(fleet.kubectl("get", "configmap", "probe", "-o", "json").stdout)[
        "data"] == {"k": "v"}
    # The object-storage account it signs with cannot write either.
    access = (system.workdir / "delivery" / "delivery-s3" / "access-key-id").read_text().strip()
    secret = (system.workdir / "delivery" / "delivery-s3" /
              "secret-access-key").read_text().strip()
    with pytest.raises(RuntimeError, match=r"(?s)HTTP 403.*AccessDenied"):
        delivery.s3.request("PUT", BUCKET, f"{ns}/app-1.bin", b"replaced",
                            credentials=(access, secret))
