"""Device identity from a client certificate (flashgate/delivery/identity.py), on real
certificates, and a fleet whose device CA is an intermediate."""
from __future__ import annotations

import pytest
from cryptography import x509

from flashgate.delivery.config import settings_from
from flashgate.delivery.devcerts import DeviceCA
from flashgate.delivery.identity import Device, IdentityError, device_of, parse_device_uri
from flashgate.delivery.server import Delivery

from .conftest import Pki, Running, channel_cm, document


def der(pem: bytes) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    return x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)


@pytest.mark.parametrize(("uri", "device"), [
    ("urn:flashgate:device:fleet-a:SN-0001.rev_2", Device("fleet-a", "SN-0001.rev_2")),
    ("urn:flashgate:device:fleet-a:dev:1", None),
    ("urn:flashgate:device:fleet-a:", None),
    ("urn:flashgate:device::dev-1", None),
    ("urn:flashgate:device:fleet-a:-dev", None),
    ("urn:flashgate:device:fleet-a:" + "d" * 129, None),
    ("urn:flashgate:fleet-a:dev-1", None),
])
def test_device_uris(uri: str, device: Device | None) -> None:
    assert parse_device_uri(uri) == device


def test_one_ca_may_serve_several_fleets_on_purpose() -> None:
    shared = DeviceCA("shared device CA")
    cas = {"fleet-a": [shared.cert], "fleet-b": [shared.cert]}
    assert device_of(der(shared.issue("fleet-b", "d").cert_pem), cas) == Device("fleet-b", "d")


def test_a_certificate_for_a_fleet_not_served_is_refused() -> None:
    ca = DeviceCA()
    with pytest.raises(IdentityError, match="not served here") as caught:
        device_of(der(ca.issue("fleet-z", "d").cert_pem), {"fleet-a": [ca.cert]})
    assert caught.value.reason == "wrong_ca"


def test_a_ca_with_the_issuer_name_but_another_key_is_refused() -> None:
    real = DeviceCA("fleet-a device CA")
    impostor = DeviceCA("fleet-a device CA")  # same subject, its own key
    with pytest.raises(IdentityError) as caught:
        device_of(der(impostor.issue("fleet-a", "d").cert_pem), {"fleet-a": [real.cert]})
    assert caught.value.reason == "wrong_ca"


def test_an_intermediate_device_ca_is_the_fleets_anchor(pki: Pki) -> None:
    """The fleet's CA file holds only the intermediate; the device sends only its own
    certificate; the handshake accepts it (partial chain) and the identity is checked."""
    root = DeviceCA("factory root CA")
    intermediate = DeviceCA("fleet-a line 2 CA", parent=root)
    intermediate.write(pki.directory / "fleet-a-intermediate.pem")
    config = pki.config()
    config["fleets"]["fleet-a"]["deviceCAFiles"] = [str(pki.directory /
                                                        "fleet-a-intermediate.pem")]
    service = Delivery.make(settings_from(config))
    service.ready = True
    server = Running(service, pki).start()
    try:
        server.publish("ADDED", channel_cm("fleet-a", {"application": document("fleet-a")}))
        device = intermediate.issue("fleet-a", "dev-7")
        assert server.get("/v1/fleets/fleet-a/channels/gw-3000/stable", device).status == 200
        # The old direct CA of fleet-a is not configured any more: its devices fail the
        # handshake.
        with pytest.raises(OSError):
            server.get("/v1/fleets/fleet-a/channels/gw-3000/stable",
                       pki.device("fleet-a", "dev-1"))
    finally:
        server.stop()
