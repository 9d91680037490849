"""Who a client certificate says the device is, and whether that fleet's device CA issued it. Pure.

A device certificate names its device with exactly one URI in its subjectAltName:

    urn:flashgate:device:<fleet>:<device-id>

`<fleet>` is the fleet's namespace (a DNS label); `<device-id>` is 1 to 128 letters, digits and
`.`, `_`, `-`, starting with a letter or digit (a serial number, say). The TLS handshake has
already checked the chain against every served fleet's CAs together; this module then checks that
the certificate was issued directly by a CA of the fleet it names, so a fleet's CA cannot mint
devices of another fleet (one CA may be configured for several fleets on purpose).
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature

DEVICE_URI_PREFIX = "urn:flashgate:device:"
FLEET = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
DEVICE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True)
class Device:
    fleet: str
    device: str

    @property
    def uri(self) -> str:
        return device_uri(self.fleet, self.device)


class IdentityError(Exception):
    """The certificate names no device, or not one its issuer may vouch for; `reason` is a
    refusal reason of the service's closed list (docs/delivery.md, "Errors")."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


def device_uri(fleet: str, device: str) -> str:
    if not FLEET.fullmatch(fleet) or not DEVICE.fullmatch(device):
        raise ValueError(f"not a fleet and device id: {fleet!r}, {device!r}")
    return f"{DEVICE_URI_PREFIX}{fleet}:{device}"


def parse_device_uri(uri: str) -> Device | None:
    if not uri.startswith(DEVICE_URI_PREFIX):
        return None
    fleet, sep, device = uri[len(DEVICE_URI_PREFIX):].partition(":")
    if not sep or not FLEET.fullmatch(fleet) or not DEVICE.fullmatch(device):
        return None
    return Device(fleet, device)


def device_of(cert_der: bytes, fleet_cas: Mapping[str, Sequence[x509.Certificate]]) -> Device:
    """The device a verified client certificate (DER) names.

    Raises:
        IdentityError: `no_identity` when it names no device (or several, or malformed);
            `wrong_ca` when no CA of the fleet it names issued it (or that fleet is not
            served).
    """
    try:
        cert = x509.load_der_x509_certificate(cert_der)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = [u for u in names.get_values_for_type(x509.UniformResourceIdentifier)
                if u.startswith(DEVICE_URI_PREFIX)]
    except x509.ExtensionNotFound:
        uris = []
    except ValueError as exc:
        raise IdentityError("no_identity", f"unreadable client certificate: {exc}") from None
    if len(uris) != 1:
        raise IdentityError("no_identity", f"the client certificate must name one device with "
                                           f"a {DEVICE_URI_PREFIX}<fleet>:<device-id> URI in "
                                           f"its subjectAltName; it has {len(uris)}")
    device = parse_device_uri(uris[0])
    if device is None:
        raise IdentityError("no_identity", f"malformed device URI {uris[0][:200]!r}")
    for ca in fleet_cas.get(device.fleet, ()):
        if ca.subject != cert.issuer:
            continue
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return device
    raise IdentityError("wrong_ca", f"the client certificate names fleet {device.fleet!r} but "
                                    "was not issued by a device CA of that fleet (or the fleet "
                                    "is not served here)")
