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
import json
import os
import time
import urllib.error
from collections.abc import Iterator
from typing import Any

import pytest
from fleetsim import start_stack, stop_stack

from flashgate.trust import (
    CT_REVOCATION,
    Revocation,
    TrustError,
    endorsed_record,
    sign1,
    verify_revocation,
)
from flashgate.trust.keyring import root_key

from ..delivery.client import DeviceClient, metric
from ..verifier_sidecar.test_s3 import s3_server_for_tests
from .conftest import Fleet, GateSystem
from .delivery import (
    BUCKET,
    Delivery,
    a_device_downloads_the_signed_bytes,
)

pytestmark = pytest.mark.e2e

TTL = 3  # seconds a presigned URL lives here (the default is 15 minutes)


@pytest.fixture(scope="module")
def delivery(gate_system: GateSystem) -> Iterator[Delivery]:
    for server in s3_server_for_tests(iam=True):
        fleets = {ns: Fleet(gate_system, ns)
                  for ns in (gate_system.kube.namespace("dlv-a"),
                             gate_system.kube.namespace("dlv-b"))}
        # The bucket; the sidecar and the delivery service each with an account that can only
        # read it (hack/fleetsim.py, as the fleet simulation runs them).
        stack = start_stack(gate_system, server, gate_system.root,
                            gate_system.workdir / "delivery", list(fleets), ttl=TTL)
        try:
            yield Delivery(gate_system, server, fleets, stack.cas,
                           DeviceClient("127.0.0.1", gate_system.delivery_port, stack.server_ca,
                                        stack.workdir / "devices"))
        finally:
            stop_stack(stack)


def fleet_of(delivery: Delivery, index: int) -> Fleet:
    return list(delivery.fleets.values())[index]


def test_a_device_downloads_exactly_the_signed_bytes(delivery: Delivery) -> None:
    fleet = fleet_of(delivery, 0)
    data = os.urandom(300_000)
    url = a_device_downloads_the_signed_bytes(delivery, fleet, "app-1", "gw-dl", data)
    assert "X-Amz-Expires=3&" in url
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
    device = delivery.device(fleet, "dev-0001")
    path = f"/v1/fleets/{fleet.namespace}/channels/gw-dl/stable/jobs/application"
    fresh = delivery.client.get(path, device).json()["artifact"]["url"]
    assert fresh != url and delivery.download(fresh) == data
    assert metric(delivery.ops("/metrics"), "flashgate_delivery_presigned_urls_total",
                  fleet=fleet.namespace) >= 2


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
