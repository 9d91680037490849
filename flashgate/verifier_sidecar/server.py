"""The sidecar process: the local HTTP API over the verification service.

docs/design.md "Sidecar API", plus `GET /v1/verify/release/progress?fleet=F&name=N` (where a release
waiting for its verdict stands: queued behind how many of its fleet, or fetching and how far).
Listens on loopback or a Unix socket only (the operator container in the
same pod is the one client); holds no Kubernetes credentials and makes no Kubernetes calls.

    flashgate-verifier --config /etc/flashgate/verifier.yaml --listen 127.0.0.1:8181
    python -m flashgate.verifier_sidecar --config verifier.yaml --unix-socket /run/fg/verifier.sock
    flashgate-verifier --config ... --probe-listen 0.0.0.0:9090   # /healthz and /metrics only

In a pod, --probe-listen serves GET /healthz and GET /metrics (nothing else) on the pod's address,
for the kubelet's probes and Prometheus; the verification API stays on loopback.

On start it prints one line, "flashgate-verifier listening on <address>", to stdout (useful with
port 0). Exit codes: 0 after SIGTERM/SIGINT, 2 for a bad command line or configuration.
"""
from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from flashgate.api.schema import problems
from flashgate.verifier_api.models import (
    ErrorBody,
    KeyRequest,
    KeyVerdict,
    ReleaseProgress,
    ReleaseRequest,
    ReleaseVerdict,
)
from flashgate.verifier_sidecar.config import ConfigError, Settings, load_settings
from flashgate.verifier_sidecar.fetch import Fetcher
from flashgate.verifier_sidecar.metrics import Metrics
from flashgate.verifier_sidecar.service import ArtifactSource, VerifierService
from flashgate.verifier_sidecar.urlpolicy import redact

log = logging.getLogger("flashgate.verifier")

MAX_BODY_BYTES = 1 << 20  # a fleet's keys and a release's envelopes fit many times over
SERVICE = web.AppKey("service", VerifierService)
METRICS = web.AppKey("metrics", Metrics)

Body = TypeVar("Body", bound=BaseModel)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def make_app(settings: Settings, source: ArtifactSource | None = None) -> web.Application:
    """The aiohttp application; `source` replaces the configured fetcher (tests)."""
    metrics = Metrics()
    fetcher = source or Fetcher(settings.url_policy, settings.limits, settings.config.ca_file,
                                settings.s3)
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[_errors])
    app[METRICS] = metrics
    app[SERVICE] = VerifierService(settings.roots, settings.policy, fetcher, metrics,
                                   settings.config.max_concurrent_fetches,
                                   settings.artifact_prefixes,
                                   settings.config.fetches_per_fleet)
    app.router.add_post("/v1/verify/release", verify_release)
    app.router.add_get("/v1/verify/release/progress", release_progress)
    app.router.add_post("/v1/verify/key", verify_key)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_page)
    return app


def make_probe_app(app: web.Application) -> web.Application:
    """/healthz and /metrics of `app`, and nothing else (for --probe-listen)."""
    probes = web.Application(middlewares=[_errors])
    probes[METRICS] = app[METRICS]
    probes.router.add_get("/healthz", healthz)
    probes.router.add_get("/metrics", metrics_page)
    return probes


# ---- handlers ------------------------------------------------------------------------------

async def verify_release(request: web.Request) -> web.Response:
    body = await _parse(request, ReleaseRequest)
    verdict: ReleaseVerdict = await request.app[SERVICE].verify_release(body)
    _count(request.app[METRICS], "release", verdict.verdict, verdict.reason, verdict.seconds)
    _log("release", fleet=body.fleet, name=body.name, verdict=verdict.verdict,
         reason=verdict.reason, keyIds=verdict.key_ids, seconds=verdict.seconds,
         bytes=verdict.size, message=verdict.message)
    return web.json_response(verdict.to_json())


async def release_progress(request: web.Request) -> web.Response:
    fleet, name = request.query.get("fleet", ""), request.query.get("name", "")
    missing = [f"{param}: required" for param, value in (("fleet", fleet), ("name", name))
               if not value]
    if missing:
        raise _BadRequest("GET /v1/verify/release/progress needs ?fleet=F&name=N", missing)
    where = request.app[SERVICE].progress(fleet, name)
    answer = ReleaseProgress(state=where.state, ahead=where.ahead, active=where.active,
                             fleet_active=where.fleet_active, bytes_read=where.bytes)
    return web.json_response(answer.to_json())


async def verify_key(request: web.Request) -> web.Response:
    started = time.monotonic()
    body = await _parse(request, KeyRequest)
    verdict: KeyVerdict = request.app[SERVICE].verify_key(body)
    seconds = round(time.monotonic() - started, 6)
    outcome = "endorsed" if verdict.endorsed else "not_endorsed"
    _count(request.app[METRICS], "key", outcome, verdict.reason, seconds)
    _log("key", fleet=body.fleet, keyId=verdict.key_id, verdict=outcome, reason=verdict.reason,
         revocationVerified=verdict.revocation_verified, seconds=seconds, message=verdict.message)
    return web.json_response(verdict.to_json())


async def healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok")


async def metrics_page(request: web.Request) -> web.Response:
    return web.Response(body=request.app[METRICS].render(),
                        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


# ---- plumbing ------------------------------------------------------------------------------

def _error(status: int, error: str, details: list[str] | None = None) -> web.Response:
    return web.json_response(ErrorBody(error=error, details=details or []).to_json(),
                             status=status)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error answer is JSON; bad input never shows a traceback."""
    try:
        return await handler(request)
    except _BadRequest as exc:
        return _error(400, exc.error, exc.details)
    except web.HTTPException as exc:
        return _error(exc.status, exc.reason)
    except ConnectionResetError:
        raise  # the client went away mid-request: aiohttp drops it quietly; nothing is wrong here
    except Exception:
        log.exception("internal error answering %s %s", request.method, request.path)
        return _error(500, "internal error; see the sidecar's log")


class _BadRequest(Exception):
    def __init__(self, error: str, details: list[str]) -> None:
        super().__init__(error)
        self.error, self.details = error, details


async def _parse(request: web.Request, model: type[Body]) -> Body:
    raw = await request.read()  # over MAX_BODY_BYTES: HTTP 413
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        details = problems(exc, whole="(body)", limit=50)
        raise _BadRequest(f"invalid {model.__name__} body", details) from None


def _count(metrics: Metrics, kind: str, outcome: str, reason: str | None,
           seconds: float) -> None:
    metrics.verifications.labels(kind, outcome, reason or "").inc()
    metrics.verification_seconds.labels(kind).observe(seconds)


def _log(kind: str, **fields: object) -> None:
    log.info(redact(json.dumps({"event": "verify", "kind": kind, **fields}, default=str)))


# ---- process -------------------------------------------------------------------------------

def _host_port(text: str, option: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{option} {text!r} is not HOST:PORT")
    return host, int(port)


def _listen_address(text: str) -> tuple[str, int]:
    """HOST:PORT on loopback only (the API has no authentication: the pod is the boundary)."""
    host, port = _host_port(text, "--listen")
    if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"--listen {text!r}: the sidecar API listens on loopback only "
                         "(127.0.0.1, ::1) or on a Unix socket")
    return host, port


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flashgate-verifier",
        description="flashgate verifier sidecar: verifies firmware releases and signing keys "
                    "against the fleet roots in its own configuration.")
    parser.add_argument("--config", type=Path, required=True,
                        help="the sidecar's YAML or JSON configuration file")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--listen", default="127.0.0.1:8181",
                       help="loopback HOST:PORT to listen on (default 127.0.0.1:8181; port 0 "
                            "picks a free one)")
    where.add_argument("--unix-socket", type=Path, help="listen on this Unix socket instead")
    parser.add_argument("--probe-listen", metavar="HOST:PORT",
                        help="also serve /healthz and /metrics (only those) here, e.g. "
                             "0.0.0.0:9090 in a pod for the kubelet's probes and Prometheus")
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


async def serve(app: web.Application, *, host: str = "127.0.0.1", port: int = 8181,
                unix_socket: Path | None = None,
                probe: tuple[str, int] | None = None) -> None:
    """Run until SIGTERM or SIGINT."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=5)
    await runner.setup()
    runners = [runner]
    if probe is not None:
        probes = web.AppRunner(make_probe_app(app), access_log=None, shutdown_timeout=1)
        await probes.setup()
        await web.TCPSite(probes, *probe).start()
        runners.append(probes)
    site: web.BaseSite
    if unix_socket is not None:
        if unix_socket.is_socket():
            unix_socket.unlink()  # left by a previous run of this container
        site = web.UnixSite(runner, str(unix_socket))
    else:
        site = web.TCPSite(runner, host, port)
    await site.start()
    address = (f"unix://{unix_socket}" if unix_socket is not None
               else "http://{}:{}".format(*runner.addresses[0][:2]))
    print(f"flashgate-verifier listening on {address}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        for each in reversed(runners):
            await each.cleanup()


def main(argv: list[str] | None = None) -> int:
    """Console entry point `flashgate-verifier`."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        settings = load_settings(args.config)
        host, port = _listen_address(args.listen) if args.unix_socket is None else ("", 0)
        probe = _host_port(args.probe_listen, "--probe-listen") if args.probe_listen else None
    except (ConfigError, ValueError) as exc:
        print(f"flashgate-verifier: {exc}", file=sys.stderr)
        return 2
    log.info("fleet roots: %s; thresholds: %s; maxSecurityVersionJump: %d",
             ", ".join(r.key_id for r in settings.roots),
             {str(t): k for t, k in settings.config.thresholds.items()} or "1 for every tier",
             settings.config.max_security_version_jump)
    asyncio.run(serve(make_app(settings), host=host, port=port, unix_socket=args.unix_socket,
                      probe=probe))
    return 0


if __name__ == "__main__":
    sys.exit(main())
