"""The webhook's certificate: when the chart's certgen hook makes a new one (and when it must
not: an upgrade or an Argo CD sync changes nothing), what it writes into the caBundle, and the
operator serving a renewed certificate without a restart. certgen against the API server, as its
own ServiceAccount, is in tests/chart."""
from __future__ import annotations

import asyncio
import base64
import datetime as dt
import socket
import ssl
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509

from flashgate.operator import webhook
from flashgate.operator.certgen import (
    Wanted,
    ca_bundle_patch,
    new_files,
    parse_args,
    renewal_reason,
)
from flashgate.operator.tls import make_serving_cert

NAMES = ("flashgate-webhook", "flashgate-webhook.flashgate-system",
         "flashgate-webhook.flashgate-system.svc",
         "flashgate-webhook.flashgate-system.svc.cluster.local")
WANTED = Wanted(NAMES, validity_days=1825, renew_before_days=365)
NOW = dt.datetime.now(dt.UTC)


def test_a_fresh_certificate_is_kept_as_it_is() -> None:
    files = new_files(WANTED, None, NOW)
    assert renewal_reason(files, WANTED, NOW) is None
    # ... for almost four years, then renewed within its last year.
    assert renewal_reason(files, WANTED, NOW + dt.timedelta(days=1825 - 370)) is None
    late = renewal_reason(files, WANTED, NOW + dt.timedelta(days=1825 - 300))
    assert late is not None and "within 365 days" in late


@pytest.mark.parametrize(("change", "reason"), [
    (lambda f: None, "there is no certificate yet"),
    (lambda f: {**f, "tls.key": b""}, "the Secret lacks tls.key"),
    (lambda f: {**f, "tls.crt": b"junk"}, "cannot be read"),
    (lambda f: {**f, "tls.key": new_files(WANTED, None, NOW)["tls.key"]},
     "tls.key is not the key of tls.crt"),
    (lambda f: {**f, "ca.crt": new_files(WANTED, None, NOW)["ca.crt"]},
     "tls.crt is not signed by a CA in ca.crt"),
])
def test_what_makes_a_new_certificate(change, reason) -> None:  # type: ignore[no-untyped-def]
    got = renewal_reason(change(new_files(WANTED, None, NOW)), WANTED, NOW)
    assert got is not None and reason in got


def test_a_certificate_for_another_service_is_replaced() -> None:
    other = Wanted(("old-name.flashgate-system.svc",), 1825, 365)
    got = renewal_reason(new_files(other, None, NOW), WANTED, NOW)
    assert got is not None and "not valid for flashgate-webhook," in got


def test_a_renewal_keeps_the_ca_of_the_certificate_still_served() -> None:
    old = new_files(WANTED, None, NOW)
    renewed = new_files(WANTED, old, NOW)
    cas = x509.load_pem_x509_certificates(renewed["ca.crt"])
    assert len(cas) == 2 and cas[1] == x509.load_pem_x509_certificate(old["ca.crt"])
    assert renewal_reason(renewed, WANTED, NOW) is None
    # Once the old certificate has ended, its CA is not carried on.
    later = new_files(WANTED, old, NOW + dt.timedelta(days=1826))
    assert len(x509.load_pem_x509_certificates(later["ca.crt"])) == 1


def test_ca_bundle_patch_addresses_each_webhook_by_index_and_name() -> None:
    ca = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    bundle = base64.b64encode(ca).decode()
    configuration = {"webhooks": [
        {"name": "firmwarerelease.ota.flashgate.dev", "clientConfig": {"service": {}}},
        {"name": "signingkey.ota.flashgate.dev", "clientConfig": {"caBundle": bundle}}]}
    assert ca_bundle_patch(configuration, ca) == [
        {"op": "test", "path": "/webhooks/0/name", "value": "firmwarerelease.ota.flashgate.dev"},
        {"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": bundle}]
    configuration["webhooks"][0]["clientConfig"]["caBundle"] = bundle
    assert ca_bundle_patch(configuration, ca) == []


def test_renew_before_must_fit_in_the_validity() -> None:
    base = ["--namespace", "n", "--secret", "s", "--dns-name", "a", "--webhook-configuration", "w"]
    with pytest.raises(SystemExit):
        parse_args([*base, "--validity-days", "30", "--renew-before-days", "30"])
    assert parse_args(base).renew_before_days == 365


def _served_certificate(port: int, ca_pem: bytes) -> x509.Certificate:
    context = ssl.create_default_context(cadata=ca_pem.decode())
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def test_the_webhook_serves_a_renewed_certificate_without_a_restart(tmp_path: Path) -> None:
    first, second = make_serving_cert(("localhost",)), make_serving_cert(("localhost",))
    first.write(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def scenario() -> None:
        runner = await webhook.serve(web.Application(), "127.0.0.1", port, tmp_path,
                                     reload_every=0.05)
        try:
            served = await asyncio.to_thread(_served_certificate, port, first.ca_pem)
            assert served == x509.load_pem_x509_certificate(first.cert_pem)
            (tmp_path / "tls.key").write_bytes(b"half written")  # caught mid-update: kept
            await asyncio.sleep(0.2)
            served = await asyncio.to_thread(_served_certificate, port, first.ca_pem)
            assert served == x509.load_pem_x509_certificate(first.cert_pem)
            second.write(tmp_path)
            await asyncio.sleep(0.2)
            served = await asyncio.to_thread(_served_certificate, port, second.ca_pem)
            assert served == x509.load_pem_x509_certificate(second.cert_pem)
        finally:
            await runner.cleanup()

    asyncio.run(scenario())
