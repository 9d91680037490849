"""`flashgate-delivery`: the device-facing HTTPS service (docs/delivery.md).

Devices poll it for the current job documents of their (fleet, product, channel) and for their
fleet's trust bundle, and report their status; they authenticate with a client certificate from
their fleet's device CA (mTLS). It answers from memory: the channel and trust-bundle ConfigMaps
the operator publishes are watched (list-then-watch, flashgate/kube/runtime.py), never read per
request; an s3:// artifact URL is replaced by a presigned GET URL minted per request.

It holds read access to those ConfigMaps and read-only object-storage credentials, nothing else:
no signing key, no write access anywhere. It delivers; it does not authorize (devices verify
every envelope against their pinned root), so owning it buys an attacker a denial of service,
not a fleet.

Why aiohttp: the project's other services (the operator's API client, webhook and probes, the
verifier sidecar) already run on it, so it adds no dependency; it is asyncio-native (one process
holds thousands of idle keep-alive connections cheaply), serves TLS from the standard `ssl`
module (client certificates included), and has well-defined limits on request lines, headers and
bodies.

    flashgate-delivery --config delivery.yaml --listen 0.0.0.0:8443 --ops-listen 0.0.0.0:8080

The device port serves only the API below; the ops port (plain HTTP, for the cluster's network)
serves /metrics, /healthz, /readyz and the release table /v1/releases. On start it prints one
line, "flashgate-delivery listening on https://HOST:PORT ops http://HOST:PORT". Exit codes: 0
after SIGTERM/SIGINT, 2 for a bad command line or configuration.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import re
import signal
import ssl
import sys
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from kubernetes.config import ConfigException
from pydantic import ValidationError

from flashgate.api.published import MANAGED_PUBLISHED_SELECTOR
from flashgate.api.schema import problems
from flashgate.delivery.catalog import TIERS, Catalog
from flashgate.delivery.config import ConfigError, Settings, load_settings
from flashgate.delivery.identity import DEVICE, FLEET, Device, IdentityError, device_of
from flashgate.delivery.links import Links
from flashgate.delivery.metrics import Metrics
from flashgate.delivery.status import MAX_STATUS_BYTES, DeviceStatus, StatusBook
from flashgate.kube.client import CONFIGMAPS, Kube
from flashgate.kube.runtime import Watch
from flashgate.s3 import S3CredentialsError
from flashgate.tlsreload import RELOAD_SECONDS, reloading

log = logging.getLogger("flashgate.delivery")

# Refusals: reason -> HTTP status. A closed list: it is the `reason` label of the metrics and the
# `reason` of every error body (docs/delivery.md, "Errors").
REFUSALS = {
    "bad_path": 400,  # percent-encoding, dot segments, a name that cannot be a fleet/product/...
    "bad_request": 400,  # refused by the HTTP parser (malformed, or a header over its limit)
    "bad_body": 400,  # a status report that is not a DeviceStatus
    "no_certificate": 401,
    "no_identity": 403,  # the certificate names no device
    "wrong_ca": 403,  # the certificate names a fleet whose device CA did not issue it
    "other_fleet": 403,  # a device of one fleet asking for another
    "other_device": 403,  # a device reporting another device's status
    "unknown_fleet": 404,
    "not_found": 404,  # no such route, channel, tier or trust bundle
    "method_not_allowed": 405,
    "body_too_large": 413,
    "unsupported_media_type": 415,
    "headers_too_large": 431,
    "not_ready": 503,  # the published ConfigMaps are not listed yet
    "unavailable": 503,  # no S3 credentials to sign with
}
ROUTES = ("channel", "job", "trust-bundle", "status")
MAX_HEADER_BYTES = 8 * 1024
MAX_HEADERS = 64
# aiohttp's parser refuses (400) lines and fields beyond these; ours answer 431 below them.
PARSER_LIMITS = {"max_line_size": 16 * 1024, "max_field_size": 16 * 1024, "max_headers": 128}
IDENTITY_CACHE = 16 * 1024
NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")  # product and channel: DNS labels
CACHE_CONTROL = "private, no-cache"  # keep it, but ask each time: a 304 costs next to nothing

ROUTE = web.RequestKey("route", str)
REASON = web.RequestKey("reason", str)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Refusal(Exception):
    def __init__(self, reason: str, message: str) -> None:
        assert reason in REFUSALS, reason
        super().__init__(message)
        self.reason, self.message = reason, message


@dataclass
class Delivery:
    """The service's state: what it serves, from where, to whom."""

    settings: Settings
    catalog: Catalog
    book: StatusBook
    metrics: Metrics
    anonymous: bool = False  # development only: requests without a certificate are served
    ready: bool = False
    _identities: OrderedDict[bytes, Device | IdentityError] = field(
        default_factory=OrderedDict)

    @classmethod
    def make(cls, settings: Settings, *, anonymous: bool = False, links: Links | None = None
             ) -> Delivery:
        config = settings.config
        links = links or Links(config.s3.settings() if config.s3 else None,
                               config.presign_ttl_seconds)
        metrics = Metrics()
        catalog = Catalog(set(config.fleets), links)
        metrics.watch_documents(catalog.counts)
        book = StatusBook(config.max_tracked_devices, config.max_release_rows)
        metrics.watch_refusing(book.refusing)
        return cls(settings, catalog, book, metrics, anonymous)

    def identify(self, request: web.Request) -> Device | None:
        """The device the client certificate names (None: anonymous, development only)."""
        ssl_object = request.transport.get_extra_info("ssl_object") \
            if request.transport is not None else None
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if der is None:
            if self.anonymous:
                return None
            raise Refusal("no_certificate", "a client certificate from the fleet's device CA "
                                            "is required")
        known = self._identities.get(der)
        if known is None:
            try:
                known = device_of(der, self.settings.fleet_cas)
            except IdentityError as exc:
                known = exc
            self._identities[der] = known
            if len(self._identities) > IDENTITY_CACHE:
                self._identities.popitem(last=False)
        if isinstance(known, IdentityError):
            raise Refusal(known.reason, known.message)
        return known

    def authorize(self, request: web.Request) -> Device | None:
        """The caller may read (or report to) the fleet of the path; its identity."""
        device = self.identify(request)
        fleet = request.match_info["fleet"]
        if not FLEET.fullmatch(fleet):
            raise Refusal("bad_path", f"{fleet[:80]!r} is not a fleet name (a DNS label)")
        if fleet not in self.catalog.fleets:
            raise Refusal("unknown_fleet", f"fleet {fleet!r} is not served here")
        if device is not None and device.fleet != fleet:
            raise Refusal("other_fleet", f"a device of fleet {device.fleet!r} may read only "
                                         "its own fleet")
        return device


SERVICE = web.AppKey("delivery", Delivery)


# ---- handlers ------------------------------------------------------------------------------

def _names(request: web.Request, *params: str) -> list[str]:
    values = [request.match_info[p] for p in params]
    for param, value in zip(params, values, strict=True):
        if not NAME.fullmatch(value):
            raise Refusal("bad_path", f"{value[:80]!r} is not a {param} name (a DNS label)")
    return values


def _not_modified(request: web.Request, etag: str) -> bool:
    """If-None-Match, weak comparison (RFC 9110 13.1.2)."""
    header = request.headers.get("If-None-Match")
    if not header:
        return False
    if header.strip() == "*":
        return True
    opaque = etag.removeprefix("W/")
    return any(c.strip().removeprefix("W/") == opaque for c in header.split(","))


def _document(request: web.Request, etag: str, render: Callable[[], str | bytes]
              ) -> web.Response:
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL}
    if _not_modified(request, etag):
        return web.Response(status=304, headers=headers)
    try:
        body = render()
    except S3CredentialsError as exc:
        log.error("cannot presign artifact URLs: %s", exc)
        raise Refusal("unavailable", "the service cannot sign artifact URLs now") from None
    raw = body.encode() if isinstance(body, str) else body
    return web.Response(body=raw, headers=headers, content_type="application/json")


async def channel_documents(request: web.Request) -> web.Response:
    """GET /v1/fleets/{fleet}/channels/{product}/{channel}: every tier's current job."""
    service = request.app[SERVICE]
    service.authorize(request)
    fleet = request.match_info["fleet"]
    product, channel = _names(request, "product", "channel")
    found = service.catalog.channels.get((fleet, product, channel))
    if found is None:
        raise Refusal("not_found", f"nothing is published to {product}/{channel} in {fleet}")
    presigned = sum(1 for job in found.jobs.values() if job.target.s3_object is not None)
    response = _document(request, f'W/"{found.etag}"', lambda: found.render(service.catalog.links))
    if response.status == 200 and presigned:
        service.metrics.presigned.labels(fleet).inc(presigned)
    return response


async def job_document(request: web.Request) -> web.Response:
    """GET /v1/fleets/{fleet}/channels/{product}/{channel}/jobs/{tier}: one tier's job."""
    service = request.app[SERVICE]
    service.authorize(request)
    fleet, tier = request.match_info["fleet"], request.match_info["tier"]
    product, channel = _names(request, "product", "channel")
    if tier not in TIERS:
        raise Refusal("bad_path", f"{tier[:80]!r} is not a tier ({', '.join(sorted(TIERS))})")
    found = service.catalog.channels.get((fleet, product, channel))
    job = found.jobs.get(tier) if found is not None else None
    if job is None:
        raise Refusal("not_found", f"no {tier} job is published to {product}/{channel} in "
                                   f"{fleet}")
    response = _document(request, f'W/"{job.etag}"', lambda: job.render(service.catalog.links))
    if response.status == 200 and job.target.s3_object is not None:
        service.metrics.presigned.labels(fleet).inc()
    return response


async def trust_bundle(request: web.Request) -> web.Response:
    """GET /v1/fleets/{fleet}/trust-bundle: the fleet's trust bundle, as published."""
    service = request.app[SERVICE]
    service.authorize(request)
    found = service.catalog.bundles.get(request.match_info["fleet"])
    if found is None:
        raise Refusal("not_found", "no trust bundle is published for this fleet")
    return _document(request, f'"{found.etag}"', lambda: found.body)


async def device_status(request: web.Request) -> web.Response:
    """POST /v1/fleets/{fleet}/devices/{device}/status: a DeviceStatus; 204."""
    service = request.app[SERVICE]
    device = service.authorize(request)
    fleet, name = request.match_info["fleet"], request.match_info["device"]
    if not DEVICE.fullmatch(name):
        raise Refusal("bad_path", f"{name[:80]!r} is not a device id")
    if device is not None and device.device != name:
        raise Refusal("other_device", "a device may report only its own status (the device "
                                      "id of its certificate)")
    if request.content_type != "application/json":
        raise Refusal("unsupported_media_type", "a status report is application/json")
    raw = await request.read()  # over MAX_STATUS_BYTES: HTTP 413
    try:
        status = DeviceStatus.model_validate_json(raw)
    except ValidationError as exc:
        details = "; ".join(problems(exc, whole="(body)", limit=10))
        raise Refusal("bad_body", f"not a DeviceStatus: {details}") from None
    installs, refusals = service.book.report(fleet, name, status)
    metrics = service.metrics
    metrics.status_reports.labels(fleet).inc()
    for tier in installs:
        metrics.device_installs.labels(fleet, tier).inc()
    for tier, reason in refusals:
        metrics.device_rejections.labels(fleet, tier, reason).inc()
    return web.Response(status=204)


# ---- guard: every request passes here ------------------------------------------------------

def check_path(raw: str) -> None:
    """The request target as received: an absolute path with no percent-encoding, backslash,
    or empty, `.` or `..` segment (none of this API's paths needs any)."""
    path = raw.partition("?")[0]
    if not path.startswith("/"):
        raise Refusal("bad_path", "the request target must be an absolute path")
    if "%" in path or "\\" in path:
        raise Refusal("bad_path", "percent-encoding and backslashes are not used in this "
                                  "API's paths")
    segments = path[1:].split("/")
    if any(s in (".", "..") for s in segments) or "" in segments[:-1]:
        raise Refusal("bad_path", "empty, '.' and '..' path segments are refused")


def check_headers(request: web.Request) -> None:
    size = sum(len(name) + len(value) for name, value in request.raw_headers)
    if size > MAX_HEADER_BYTES or len(request.raw_headers) > MAX_HEADERS:
        raise Refusal("headers_too_large", f"request headers are limited to {MAX_HEADERS} "
                                           f"fields and {MAX_HEADER_BYTES} bytes")


_HTTP_REASONS = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}


def _refused(request: web.Request, reason: str, message: str) -> web.Response:
    request[REASON] = reason
    return web.json_response({"error": message, "reason": reason}, status=REFUSALS[reason])


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = request.match_info.route.resource
    request[ROUTE] = route.name if route is not None and route.name in ROUTES else "other"
    try:
        check_path(request.raw_path)
        check_headers(request)
        if not request.app[SERVICE].ready:
            raise Refusal("not_ready", "starting: the published documents are not listed yet")
        return await handler(request)
    except Refusal as exc:
        return _refused(request, exc.reason, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        reason = _HTTP_REASONS.get(exc.status, "bad_request")
        return _refused(request, reason, exc.reason)
    except Exception:
        log.exception("internal error answering %s %s", request.method, request.path)
        return web.json_response({"error": "internal error", "reason": "internal"}, status=500)


def _access_counter(metrics: Metrics) -> type[AbstractAccessLogger]:
    """Counts every response, those aiohttp's HTTP parser makes itself (a malformed request,
    a header line over its limits) included: they never reach the middleware."""

    class Counter(AbstractAccessLogger):
        def log(self, request: web.BaseRequest, response: web.StreamResponse,
                time: float) -> None:
            route = request.get(ROUTE, "other")
            metrics.requests.labels(route, str(response.status)).inc()
            metrics.seconds.labels(route).observe(time)
            if response.status >= 400:
                reason = request.get(REASON)
                if reason is None:  # aiohttp's own answer, before any handler
                    reason = "bad_request" if response.status < 500 else "internal"
                if reason in REFUSALS:
                    metrics.refusals.labels(reason).inc()

    return Counter


def make_app(service: Delivery) -> web.Application:
    """The device-facing application (serve it with `runner`, which adds limits and counting)."""
    app = web.Application(client_max_size=MAX_STATUS_BYTES, middlewares=[guard])
    app[SERVICE] = service
    base = "/v1/fleets/{fleet}"
    app.router.add_get(base + "/channels/{product}/{channel}", channel_documents,
                       name="channel")
    app.router.add_get(base + "/channels/{product}/{channel}/jobs/{tier}", job_document,
                       name="job")
    app.router.add_get(base + "/trust-bundle", trust_bundle, name="trust-bundle")
    app.router.add_post(base + "/devices/{device}/status", device_status, name="status")
    return app


def runner(service: Delivery) -> web.AppRunner:
    return web.AppRunner(make_app(service), access_log=log,
                         access_log_class=_access_counter(service.metrics), shutdown_timeout=5,
                         **PARSER_LIMITS)  # type: ignore[arg-type]


def make_ops_app(service: Delivery) -> web.Application:
    """The ops port: /metrics, /healthz, /readyz, /v1/releases[?fleet=F]."""

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=service.metrics.render(),
                            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(_: web.Request) -> web.Response:
        if not service.ready:
            return web.Response(status=503, text="listing the published documents")
        return web.Response(text="ok")

    async def releases(request: web.Request) -> web.Response:
        return web.json_response(service.book.table(request.query.get("fleet")))

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/v1/releases", releases)
    return app


def server_context(settings: Settings) -> ssl.SSLContext:
    """TLS 1.2+, the service's certificate, and client certificates verified against every served
    fleet's device CAs (optional in the handshake, so that a missing one gets a clear 401; which
    fleet's CA issued it is checked per request, by `identity`)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    tls = settings.config.tls
    context.load_cert_chain(tls.cert_file, tls.key_file)
    for path in settings.ca_files:
        context.load_verify_locations(cafile=str(path))
    # A fleet's device CA may be an intermediate: it is the anchor, whatever is above it.
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    context.verify_mode = ssl.CERT_OPTIONAL
    return context


# ---- process -------------------------------------------------------------------------------

def _address(text: str, flag: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{flag} {text!r} is not HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flashgate-delivery",
        description="flashgate delivery service: job documents, trust bundles and status "
                    "reports for devices, over mutual TLS.")
    parser.add_argument("--config", type=Path, required=True, help="YAML or JSON configuration")
    parser.add_argument("--listen", default="0.0.0.0:8443",
                        help="HOST:PORT of the device-facing HTTPS port (port 0: any free one)")
    parser.add_argument("--ops-listen", default="0.0.0.0:8080",
                        help="HOST:PORT of /metrics, /healthz, /readyz and /v1/releases (HTTP)")
    parser.add_argument("--kubeconfig", help="default: in-cluster credentials, else $KUBECONFIG")
    parser.add_argument("--allow-anonymous-for-development", action="store_true",
                        help="serve requests without a client certificate (development only; "
                             "a certificate that is presented is still checked)")
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


async def sites(service: Delivery, listen: tuple[str, int], ops: tuple[str, int],
                reload_every: float = RELOAD_SECONDS) -> tuple[list[web.AppRunner], str, str]:
    """The device port (TLS, its certificate reloaded when renewed) and the ops port, serving;
    their runners and URLs."""
    device_runner, ops_runner = runner(service), web.AppRunner(make_ops_app(service),
                                                               access_log=None)
    context, tls = server_context(service.settings), service.settings.config.tls
    # A renewed serving certificate (cert-manager rewrites its Secret) is served without a
    # restart; the device CAs are read once (a new one restarts the pods: the chart's checksum).
    device_runner.app.cleanup_ctx.append(reloading(context, tls.cert_file, tls.key_file,
                                                   "the delivery service", reload_every))
    await device_runner.setup()
    await ops_runner.setup()
    await web.TCPSite(device_runner, *listen, ssl_context=context).start()
    await web.TCPSite(ops_runner, *ops).start()
    device_at = "https://{}:{}".format(*device_runner.addresses[0][:2])
    ops_at = "http://{}:{}".format(*ops_runner.addresses[0][:2])
    return [device_runner, ops_runner], device_at, ops_at


async def _watch(service: Delivery, kube: Kube, fleets: Iterable[str]) -> None:
    watches = [Watch(kube, CONFIGMAPS, fleet, service.catalog.on_configmap,
                     label_selector=MANAGED_PUBLISHED_SELECTOR) for fleet in sorted(fleets)]
    tasks = [asyncio.create_task(w.run(), name=f"watch {w.namespace}") for w in watches]
    await asyncio.gather(*(w.synced.wait() for w in watches))
    service.ready = True
    log.info("serving %d channels and %d trust bundles of %d fleets",
             len(service.catalog.channels), len(service.catalog.bundles), len(watches))
    await asyncio.gather(*tasks)


async def serve(service: Delivery, kube: Kube, listen: tuple[str, int],
                ops: tuple[str, int]) -> None:
    """Run until SIGTERM or SIGINT."""
    runners, device_at, ops_at = await sites(service, listen, ops)
    print(f"flashgate-delivery listening on {device_at} ops {ops_at}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    watching = asyncio.create_task(_watch(service, kube, service.catalog.fleets))
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({watching, stopping}, return_when=asyncio.FIRST_COMPLETED)
    watching.cancel()
    await asyncio.gather(watching, return_exceptions=True)
    for each in runners:
        await each.cleanup()
    await kube.close()


def main(argv: list[str] | None = None) -> int:
    """Console entry point `flashgate-delivery`."""
    args = argument_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        settings = load_settings(args.config)
        listen, ops = _address(args.listen, "--listen"), _address(args.ops_listen, "--ops-listen")
        service = Delivery.make(settings, anonymous=args.allow_anonymous_for_development)
        kube = Kube.from_environment(args.kubeconfig)
    except (ConfigError, ConfigException, ValueError, OSError) as exc:
        print(f"flashgate-delivery: {exc}", file=sys.stderr)
        return 2
    if service.anonymous:
        log.warning("DEVELOPMENT MODE: requests without a client certificate are served")
    log.info("fleets %s; presigned URLs live %ds; s3 %s", ", ".join(sorted(settings.config.fleets)),
             settings.config.presign_ttl_seconds,
             settings.config.s3.endpoint if settings.config.s3 else "not configured")
    asyncio.run(serve(service, kube, listen, ops))
    return 0


if __name__ == "__main__":
    sys.exit(main())

