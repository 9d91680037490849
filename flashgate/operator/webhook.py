"""The validating admission webhook: fast, clear refusals at `kubectl apply` time.

It answers AdmissionReview requests over TLS with the rules of `admission` (pure), using what the
operator already knows of the fleet (its keys and revoked keyIds) and the floor read fresh. It is
never the only gate: the reconcile loop decides. Until the operator has listed its fleets it
admits with a warning rather than refuse on half the facts.

For local runs (the demo, the tests) the operator registers its own ValidatingWebhookConfiguration
(`register`); a cluster install ships the chart's. Either way the configuration matches only
flashgate's resources in the fleets served, with a short timeout; failurePolicy is Fail for
releases and Ignore for SigningKeys, so an outage of the webhook blocks creating releases in
those fleets and nothing else (never a revocation).
"""
from __future__ import annotations

import base64
import logging
import re
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from flashgate.api.schema import DNS_LABEL_PATTERN
from flashgate.kube.client import JSON, ApiError, Kube
from flashgate.operator import admission
from flashgate.operator.fleets import FleetView
from flashgate.operator.store import VALIDATING_WEBHOOKS, Store
from flashgate.tlsreload import RELOAD_SECONDS, reloading
from flashgate.trust.vocabulary import Tier

log = logging.getLogger("flashgate.operator")

RELEASES_PATH = "/validate/firmwarereleases"
KEYS_PATH = "/validate/signingkeys"
TIMEOUT_SECONDS = 5


@dataclass
class Admission:
    view: FleetView
    store: Store

    async def release(self, request: JSON) -> tuple[list[str], list[str]]:
        fleet = str(request.get("namespace") or "")
        spec = _spec(request)
        if spec is None:
            return ["the review carries no FirmwareRelease with a spec"], []
        if not self.view.synced.is_set():
            return [], ["flashgate is starting: checks at apply time were skipped; the gate "
                        "still verifies this release before anything is published"]
        product, tier = spec.get("product"), spec.get("tier")
        floor = None
        if isinstance(product, str) and re.fullmatch(DNS_LABEL_PATTERN, product) and \
                isinstance(tier, str) and tier in TIERS:  # else the API server refuses it
            floor = await self.store.get_floor(fleet, product, tier)
        problems = admission.release_problems(
            fleet=fleet, spec=spec,
            floor=floor.spec.security_version if floor is not None else None,
            keys=[(k.name, k.obj.get("spec") or {}) for k in self.view.fleet_keys(fleet)],
            revoked=self.view.revoked_key_ids(fleet))
        return problems, []

    async def key(self, request: JSON) -> tuple[list[str], list[str]]:
        fleet = str(request.get("namespace") or "")
        spec = _spec(request)
        if spec is None:
            return ["the review carries no SigningKey with a spec"], []
        return admission.key_problems(spec), admission.key_warnings(
            spec, self.view.revoked_key_ids(fleet))


TIERS = frozenset(str(t) for t in Tier)


def _spec(request: JSON) -> Mapping[str, Any] | None:
    """The reviewed object's spec; None when the review carries none (the API server always
    sends one for CREATE and UPDATE, but anyone may call the webhook)."""
    obj = request.get("object")
    spec = obj.get("spec") if isinstance(obj, Mapping) else None
    return spec if isinstance(spec, Mapping) else None


def make_app(checks: Admission) -> web.Application:
    async def review(request: web.Request, kind: str) -> web.Response:
        try:
            body = await request.json()
            review_request: JSON = body["request"]
            uid = str(review_request["uid"])
        except (ValueError, KeyError, TypeError, RecursionError):  # deep JSON: RecursionError
            return web.json_response({"error": "not an AdmissionReview"}, status=400)
        check = checks.release if kind == "FirmwareRelease" else checks.key
        try:
            problems, warnings = await check(review_request)
        except ApiError as error:  # e.g. the floor could not be read: refuse, say why
            problems, warnings = [f"flashgate could not check this {kind} now: {error}"], []
        response: dict[str, Any] = {"uid": uid, "allowed": not problems}
        if problems:
            response["status"] = {"code": 400, "reason": "Invalid",
                                  "message": f"{kind} refused: " + "; ".join(problems)}
        if warnings:
            response["warnings"] = warnings
        return web.json_response({"apiVersion": "admission.k8s.io/v1",
                                  "kind": "AdmissionReview", "response": response})

    async def releases(request: web.Request) -> web.Response:
        return await review(request, "FirmwareRelease")

    async def keys(request: web.Request) -> web.Response:
        return await review(request, "SigningKey")

    app = web.Application(client_max_size=4 << 20)
    app.router.add_post(RELEASES_PATH, releases)
    app.router.add_post(KEYS_PATH, keys)
    return app


async def serve(app: web.Application, host: str, port: int, cert_dir: Path,
                reload_every: float = RELOAD_SECONDS) -> web.AppRunner:
    """Serve `app` over TLS with tls.crt and tls.key of `cert_dir`, loaded again whenever they
    change (cert-manager or the chart's certgen renew them), so a renewal needs no restart."""
    cert, key = cert_dir / "tls.crt", cert_dir / "tls.key"
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    app.cleanup_ctx.append(reloading(context, cert, key, "the webhook", reload_every))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, ssl_context=context).start()
    return runner


def configuration(name: str, base_url: str, ca_pem: bytes,
                  namespaces: Sequence[str] | None) -> JSON:
    """A ValidatingWebhookConfiguration for the operator's webhook at `base_url`: flashgate's
    kinds only, in `namespaces` only (None: every namespace)."""
    selector: JSON = ({"matchExpressions": [{"key": "kubernetes.io/metadata.name",
                                             "operator": "In", "values": sorted(namespaces)}]}
                      if namespaces else {})

    def hook(short: str, path: str, resource: str, operations: list[str],
             failure_policy: str) -> JSON:
        return {
            "name": f"{short}.ota.flashgate.dev",
            "clientConfig": {"url": base_url + path,
                             "caBundle": base64.b64encode(ca_pem).decode()},
            "rules": [{"apiGroups": ["ota.flashgate.dev"], "apiVersions": ["*"],
                       "operations": operations, "resources": [resource],
                       "scope": "Namespaced"}],
            "namespaceSelector": selector,
            "failurePolicy": failure_policy, "sideEffects": "None",
            "admissionReviewVersions": ["v1"], "timeoutSeconds": TIMEOUT_SECONDS,
        }

    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "flashgate"}},
        "webhooks": [
            hook("firmwarerelease", RELEASES_PATH, "firmwarereleases", ["CREATE"], "Fail"),
            # Distrust is cheap: an outage must never keep anyone from revoking a key, and the
            # key checks here are advice (the sidecar verifies every endorsement).
            hook("signingkey", KEYS_PATH, "signingkeys", ["CREATE", "UPDATE"], "Ignore")],
    }


async def register(kube: Kube, body: JSON) -> None:
    """Create or replace the operator's own ValidatingWebhookConfiguration (local runs)."""
    name = body["metadata"]["name"]
    try:
        current = await kube.get(VALIDATING_WEBHOOKS, None, name)
    except ApiError as error:
        if not error.not_found:
            raise
        await kube.create(VALIDATING_WEBHOOKS, None, body)
        return
    body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
    await kube.replace(VALIDATING_WEBHOOKS, None, name, body)
