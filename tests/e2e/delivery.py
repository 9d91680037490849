"""What a device does with the delivery service, for the tests that run the service as a process
with a ServiceAccount token (tests/e2e/test_delivery.py with deploy/delivery's RBAC,
tests/chart/test_install.py with the Helm chart's): publish a release whose artifact is in the S3
server, fetch its job document with a fleet's device certificate, verify it with keys taken from
the trust bundle (each entry against the fleet root), and download exactly the signed bytes
through the presigned URL."""
from __future__ import annotations

import hashlib
import json
import ssl
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

import s3server
from fleetsim import BUCKET

from flashgate.delivery.devcerts import DeviceCA, DeviceCert
from flashgate.trust import (
    KeyRing,
    Policy,
    ReleaseManifest,
    Tier,
    verify_release,
)
from flashgate.trust.device import TrustStore, apply_bundle
from flashgate.trust.keyring import root_key

from ..delivery.client import DeviceClient, Reply
from .conftest import Fleet, GateSystem


@dataclass
class Delivery:
    """The delivery service `system` runs (LocalGate.start_delivery), the S3 server its
    presigned URLs point at, its fleets with their device CAs, and a device-side client."""

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


def device_keyring(delivery: Delivery, fleet: Fleet, bundle: dict[str, Any]) -> KeyRing:
    """A device's trust store from a bundle: each entry verified against the pinned root
    (flashgate/trust/device.py, as the reference agent keeps it)."""
    root = delivery.system.root
    roots = [root_key(root.spki_der, root.algorithm)]
    update = apply_bundle(TrustStore(), bundle, fleet.namespace, roots, int(time.time()))
    assert not update.ignored, update.ignored
    return update.store.keyring(roots)


def a_device_downloads_the_signed_bytes(delivery: Delivery, fleet: Fleet, name: str,
                                        product: str, data: bytes) -> str:
    """Publish `data` as release `name`; a device of `fleet` gets its job document (the
    published one with only the artifact URL presigned), verifies it with keys from the trust
    bundle, and downloads exactly `data` through the URL, which it returns."""
    _, manifest = publish_s3_release(delivery, fleet, name, product, data)
    device = delivery.device(fleet, "dev-0001")
    path = f"/v1/fleets/{fleet.namespace}/channels/{product}/stable/jobs/application"
    reply = delivery.until(path, device, lambda r: r.status == 200)
    assert reply.status == 200, reply.body
    job = reply.json()
    published = json.loads(json.loads(fleet.kubectl(
        "get", "configmap", f"channel.{product}.stable", "-o", "json").stdout)["data"]
        ["application.json"])
    url = str(job["artifact"].pop("url"))
    assert published["artifact"].pop("url") == f"s3://{BUCKET}/{fleet.namespace}/{name}.bin"
    assert job == published
    assert url.startswith(f"https://localhost:{delivery.s3.port}/{BUCKET}/")
    assert "X-Amz-Signature=" in url
    bundle = delivery.until(f"/v1/fleets/{fleet.namespace}/trust-bundle", device,
                            lambda r: r.status == 200).json()
    keyring = device_keyring(delivery, fleet, bundle)
    verdict = verify_release(job["signatures"], manifest, keyring, Policy(), None,
                             int(time.time()))
    assert verdict.accepted, verdict.message
    image = delivery.download(url)
    assert hashlib.sha256(image).hexdigest() == job["artifact"]["sha256"]
    assert image == data and len(image) == job["artifact"]["size"]
    return url
