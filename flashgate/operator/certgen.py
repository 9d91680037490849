"""`flashgate-certgen`: the admission webhook's self-signed certificate, for the Helm chart.

The chart runs it as a hook Job before and after every install and upgrade (Argo CD: PreSync and
PostSync), under a ServiceAccount of its own that may write one Secret and one webhook
configuration, so that the operator never needs to read Secrets or change webhook
configurations. It is idempotent, so an upgrade or a sync changes nothing:

1. The Secret (type kubernetes.io/tls: tls.crt, tls.key, ca.crt) is made only when it is missing,
   unreadable, not valid for the service's names, or within --renew-before-days of its end. A
   renewal keeps the previous CA in ca.crt while it is valid, so the API server trusts the old
   certificate until every pod serves the new one (the operator reloads it on its own).
2. ca.crt is written into the caBundle of each webhook of the configuration, when it differs.
   Before the first install's configuration exists (the pre-install run) this step waits for the
   post-install run.

Why a Job and not Helm's genCA with `lookup`: `helm template` and Argo CD render without a
cluster, so each render would make a new CA, a diff on every sync and a new certificate on every
upgrade. The chart does not render the caBundle, so neither Helm's three-way merge nor Argo CD's
diff sees what this writes.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from flashgate.kube.client import JSON, ApiError, Kube, Resource
from flashgate.operator.store import VALIDATING_WEBHOOKS
from flashgate.operator.tls import make_serving_cert

log = logging.getLogger("flashgate.certgen")

SECRETS = Resource("", "v1", "secrets", "Secret")
CA_NAME = "flashgate webhook CA"


@dataclass(frozen=True)
class Wanted:
    """The certificate the webhook needs."""

    dns_names: tuple[str, ...]
    validity_days: int
    renew_before_days: int


def _pem_certs(data: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(data) if b"-----BEGIN" in data else []


def renewal_reason(files: dict[str, bytes] | None, wanted: Wanted,
                   now: dt.datetime) -> str | None:
    """Why the Secret's certificate must be made anew, or None when it serves as it is."""
    if files is None:
        return "there is no certificate yet"
    missing = [name for name in ("tls.crt", "tls.key", "ca.crt") if not files.get(name)]
    if missing:
        return f"the Secret lacks {', '.join(missing)}"
    try:
        cert = x509.load_pem_x509_certificate(files["tls.crt"])
        key = serialization.load_pem_private_key(files["tls.key"], password=None)
        cas = _pem_certs(files["ca.crt"])
    except ValueError as error:
        return f"the Secret's certificate or key cannot be read ({error})"
    if key.public_key() != cert.public_key():
        return "tls.key is not the key of tls.crt"
    if not any(_issued_by(cert, ca) for ca in cas):
        return "tls.crt is not signed by a CA in ca.crt"
    try:
        names = set(cert.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = set()
    absent = [name for name in wanted.dns_names if name not in names]
    if absent:
        return f"the certificate is not valid for {', '.join(absent)}"
    ends = cert.not_valid_after_utc
    if ends - now < dt.timedelta(days=wanted.renew_before_days):
        return f"the certificate ends {ends:%Y-%m-%d}, within {wanted.renew_before_days} days"
    return None


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def new_files(wanted: Wanted, previous: dict[str, bytes] | None,
              now: dt.datetime) -> dict[str, bytes]:
    """A new CA and serving certificate. ca.crt also holds the CA of the previous certificate
    while it is valid: pods serve that one until they load the new files."""
    made = make_serving_cert(wanted.dns_names, days=wanted.validity_days, ca_name_text=CA_NAME)
    return {"tls.crt": made.cert_pem, "tls.key": made.key_pem,
            "ca.crt": made.ca_pem + _previous_ca(previous or {}, now)}


def _previous_ca(previous: dict[str, bytes], now: dt.datetime) -> bytes:
    try:
        cert = x509.load_pem_x509_certificate(previous["tls.crt"])
        cas = _pem_certs(previous["ca.crt"])
    except (KeyError, ValueError):
        return b""
    if cert.not_valid_after_utc <= now:
        return b""
    return b"".join(ca.public_bytes(serialization.Encoding.PEM) for ca in cas
                    if ca.not_valid_after_utc > now and _issued_by(cert, ca))


def _decode(secret: JSON) -> dict[str, bytes]:
    return {name: base64.b64decode(value) for name, value in (secret.get("data") or {}).items()}


def _encode(files: dict[str, bytes]) -> dict[str, str]:
    return {name: base64.b64encode(value).decode() for name, value in files.items()}


def ca_bundle_patch(configuration: JSON, ca_pem: bytes) -> list[JSON]:
    """A JSON patch that sets every webhook's caBundle to `ca_pem` (empty when all have it).
    Each webhook is addressed by index and its name tested, so a reordered list fails the
    patch rather than give one webhook another's settings."""
    bundle = base64.b64encode(ca_pem).decode()
    patch: list[JSON] = []
    for index, hook in enumerate(configuration.get("webhooks") or []):
        if (hook.get("clientConfig") or {}).get("caBundle") == bundle:
            continue
        patch += [{"op": "test", "path": f"/webhooks/{index}/name", "value": hook["name"]},
                  {"op": "add", "path": f"/webhooks/{index}/clientConfig/caBundle",
                   "value": bundle}]
    return patch


async def ensure_secret(kube: Kube, namespace: str, name: str, wanted: Wanted,
                        now: dt.datetime) -> bytes:
    """Make or renew the Secret when needed; return its ca.crt."""
    try:
        secret: JSON | None = await kube.get(SECRETS, namespace, name)
    except ApiError as error:
        if not error.not_found:
            raise
        secret = None
    files = _decode(secret) if secret is not None else None
    reason = renewal_reason(files, wanted, now)
    if reason is None:
        log.info("Secret %s/%s: the certificate serves as it is; unchanged", namespace, name)
        assert files is not None
        return files["ca.crt"]
    fresh = new_files(wanted, files, now)
    body: JSON = {
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {"app.kubernetes.io/part-of": "flashgate",
                                "app.kubernetes.io/managed-by": "flashgate-certgen"}},
        "data": _encode(fresh)}
    if secret is None:
        await kube.create(SECRETS, namespace, body)
    else:  # a conflict (another run wrote it meanwhile) fails the Job, which tries again
        body["metadata"]["resourceVersion"] = secret["metadata"]["resourceVersion"]
        await kube.replace(SECRETS, namespace, name, body)
    log.info("Secret %s/%s: made a new certificate for %s (%s)", namespace, name,
             ", ".join(wanted.dns_names), reason)
    return fresh["ca.crt"]


async def inject_ca(kube: Kube, configuration: str, ca_pem: bytes) -> None:
    try:
        current = await kube.get(VALIDATING_WEBHOOKS, None, configuration)
    except ApiError as error:
        if not error.not_found:
            raise
        log.info("ValidatingWebhookConfiguration %s does not exist yet (before the first "
                 "install): its caBundle is written by the run after it", configuration)
        return
    patch = ca_bundle_patch(current, ca_pem)
    if not patch:
        log.info("ValidatingWebhookConfiguration %s: caBundle already current", configuration)
        return
    await kube.patch(VALIDATING_WEBHOOKS, None, configuration, patch, kind="json")
    log.info("ValidatingWebhookConfiguration %s: caBundle written", configuration)


async def run(args: argparse.Namespace) -> None:
    wanted = Wanted(tuple(args.dns_name), args.validity_days, args.renew_before_days)
    kube = Kube.from_environment(args.kubeconfig)
    try:
        ca_pem = await ensure_secret(kube, args.namespace, args.secret, wanted,
                                     dt.datetime.now(dt.UTC))
        await inject_ca(kube, args.webhook_configuration, ca_pem)
    finally:
        await kube.close()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="flashgate-certgen",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--namespace", required=True, help="where the Secret lives")
    parser.add_argument("--secret", required=True, help="the Secret's name")
    parser.add_argument("--dns-name", action="append", required=True,
                        help="a name the certificate must be valid for (repeat)")
    parser.add_argument("--webhook-configuration", required=True,
                        help="the ValidatingWebhookConfiguration whose caBundle to write")
    parser.add_argument("--validity-days", type=int, default=1825)
    parser.add_argument("--renew-before-days", type=int, default=365)
    parser.add_argument("--kubeconfig", help="default: in-cluster credentials, else $KUBECONFIG")
    args = parser.parse_args(argv)
    if not 0 < args.renew_before_days < args.validity_days:
        parser.error("--renew-before-days must be positive and below --validity-days")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(run(args))
    except ApiError as error:
        print(f"flashgate-certgen: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
