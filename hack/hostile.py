"""A hostile delivery server: a test double that plays the attacker who owns the delivery path.

That is its whole point (docs/devices.md, scenario 3 of the fleet simulation): the design claims
that whoever owns the delivery service, the network in between or the artifact store gets a
denial of service and not a fleet, and the only way to show it is to let such an owner answer
the devices with whatever it likes. It speaks the delivery API (docs/delivery.md) over HTTPS with
the real service's certificate (stolen, or the attacker owns the name), accepts any client
certificate, and serves what the test tells it to:

- `bundle`: the trust-bundle document (any JSON, or raw bytes);
- `channels`: per (fleet, product, channel), the job documents by tier; `jobs/{tier}` serves one;
- `artifacts`: per name, bytes, or a behaviour: `Endless` (a body that never ends), `Trickle`
  (a few bytes now and then), `Refuse` (an HTTP error), or a list of these, one per request;
and records the status reports devices send (`reports`). `artifact_url(name)` is where a job
document it forges points. Runs in a thread of its own, so that a synchronous test and an asyncio
fleet simulation can both use it.
"""
from __future__ import annotations

import asyncio
import json
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web


@dataclass(frozen=True)
class Endless:
    """A body that never ends (chunked, no length)."""

    chunk: bytes = b"\0" * 65536


@dataclass(frozen=True)
class Trickle:
    """`chunk` bytes every `every` seconds, for `seconds` in all."""

    chunk: bytes = b"x"
    every: float = 0.5
    seconds: float = 60.0


@dataclass(frozen=True)
class Refuse:
    status: int = 403


Artifact = bytes | Endless | Trickle | Refuse | list["Artifact"]
"""A list: one answer per request, in order, the last one repeated."""


@dataclass
class HostileDelivery:
    cert_file: Path
    key_file: Path
    bundle: Any = None  # JSON-able, or bytes served as they are; None: 404
    channels: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    artifacts: dict[str, Artifact] = field(default_factory=dict)
    reports: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    requests: int = 0
    port: int = 0
    _loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def artifact_url(self, name: str) -> str:
        return f"https://localhost:{self.port}/artifacts/{name}"

    def serve(self, *, bundle: Any = None,
              channels: Mapping[tuple[str, str, str], dict[str, Any]] | None = None,
              artifacts: Mapping[str, Artifact] | None = None) -> None:
        """Replace what it serves (the attack of the moment)."""
        self.bundle = bundle
        self.channels = dict(channels or {})
        self.artifacts = dict(artifacts or {})

    # --- handlers ----------------------------------------------------------------------------

    async def _bundle(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.bundle is None:
            return web.json_response({"error": "none", "reason": "not_found"}, status=404)
        body = self.bundle if isinstance(self.bundle, bytes) else json.dumps(self.bundle).encode()
        return web.Response(body=body, content_type="application/json")

    def _jobs(self, request: web.Request) -> dict[str, Any] | None:
        m = request.match_info
        return self.channels.get((m["fleet"], m["product"], m["channel"]))

    async def _channel(self, request: web.Request) -> web.Response:
        self.requests += 1
        jobs = self._jobs(request)
        if jobs is None:
            return web.json_response({"error": "none", "reason": "not_found"}, status=404)
        m = request.match_info
        return web.json_response({"apiVersion": "ota.flashgate.dev/v1alpha1", "kind": "Channel",
                                  "fleet": m["fleet"], "product": m["product"],
                                  "channel": m["channel"], "jobs": jobs})

    async def _job(self, request: web.Request) -> web.Response:
        self.requests += 1
        job = (self._jobs(request) or {}).get(request.match_info["tier"])
        if job is None:
            return web.json_response({"error": "none", "reason": "not_found"}, status=404)
        return web.json_response(job)

    async def _status(self, request: web.Request) -> web.Response:
        self.requests += 1
        self.reports.append((request.match_info["device"], await request.json()))
        return web.Response(status=204)

    async def _artifact(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        artifact = self.artifacts.get(name)
        while isinstance(artifact, list):
            artifact = artifact.pop(0) if len(artifact) > 1 else artifact[0]
        if artifact is None:
            return web.Response(status=404)
        if isinstance(artifact, bytes):
            return web.Response(body=artifact, content_type="application/octet-stream")
        if isinstance(artifact, Refuse):
            return web.Response(status=artifact.status, text="<Code>AccessDenied</Code>")
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        def connected() -> bool:
            return request.transport is not None and not request.transport.is_closing()

        try:
            if isinstance(artifact, Endless):
                while connected():
                    await response.write(artifact.chunk)
                    await asyncio.sleep(0)  # a write to a dead peer does not yield: let it go
                return response
            loop = asyncio.get_running_loop()
            end = loop.time() + artifact.seconds
            while loop.time() < end and connected():
                await response.write(artifact.chunk)
                await asyncio.sleep(artifact.every)
        except (ConnectionError, asyncio.CancelledError):
            pass  # the device hung up: what it should do
        return response

    # --- running -----------------------------------------------------------------------------

    def start(self) -> HostileDelivery:
        app = web.Application()
        fleet = "/v1/fleets/{fleet}"
        channel = fleet + "/channels/{product}/{channel}"
        app.router.add_get(fleet + "/trust-bundle", self._bundle)
        app.router.add_get(channel, self._channel)
        app.router.add_get(channel + "/jobs/{tier}", self._job)
        app.router.add_post(fleet + "/devices/{device}/status", self._status)
        app.router.add_get("/artifacts/{name}", self._artifact)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        context.verify_mode = ssl.CERT_NONE  # whoever connects is served
        ready = threading.Event()
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1,
                                     handler_cancellation=True)  # stop when a device hangs up

        async def serve() -> None:
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=context)
            await site.start()
            self.port = self._runner.addresses[0][1]
            ready.set()

        def run() -> None:
            self._loop.run_until_complete(serve())
            self._loop.run_forever()
            self._loop.run_until_complete(self._runner.cleanup())
            self._loop.close()

        self._thread = threading.Thread(target=run, daemon=True, name="hostile-delivery")
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the hostile delivery server did not start")
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
