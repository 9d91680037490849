"""A fault-injecting HTTPS proxy in front of the API server, for the operators' traffic only.

A real kube-apiserver cannot be made to answer slowly, or with 500, 503 or 429, on demand and for
a while (API Priority and Fairness throttles only under real load, and then every client alike),
so this is the one fake of the chaos loop: the operators' kubeconfig points at the proxy, which
forwards every request to the real API server (the ServiceAccount token included: it is the API
server that authenticates and authorizes) and streams the answers back, watches included.
Faults, set from any thread:
- `slow(seconds)`: each request waits that long before it is forwarded;
- `failing(status, share)`: that share of requests is answered with the status and a Kubernetes
  Status body (429 with Retry-After: 1, as API Priority and Fairness does), and the watches in
  flight are cut, as an overloaded or restarting API server drops them;
- `heal()` ends either.
It runs its own event loop in a thread, so the chaos loop's own work never slows it down.
"""
from __future__ import annotations

import asyncio
import base64
import json
import random
import ssl
import threading
from collections import Counter
from pathlib import Path

import aiohttp
from aiohttp import web

from flashgate.operator.tls import make_serving_cert

_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length",
                         "host", "upgrade", "proxy-connection", "te", "trailer"})
_REASONS = {429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable"}


class FaultProxy:
    """See the module docstring. `cluster` is the kubeconfig cluster entry that reaches it."""

    def __init__(self, upstream: str, upstream_ca: Path, workdir: Path) -> None:
        self.upstream = upstream.rstrip("/")
        self.upstream_ca = upstream_ca
        self.workdir = workdir
        self.port = 0
        self.delay = 0.0
        self.failure: tuple[int, float] | None = None
        self.counts: Counter[str] = Counter()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._streams: set[aiohttp.ClientResponse] = set()
        self._ca_pem = b""

    @property
    def cluster(self) -> dict[str, str]:
        return {"server": f"https://127.0.0.1:{self.port}",
                "certificate-authority-data": base64.b64encode(self._ca_pem).decode()}

    # ---- faults (any thread) ----------------------------------------------------------------

    def slow(self, seconds: float) -> None:
        self.delay = seconds

    def failing(self, status: int, share: float) -> None:
        self.failure = (status, share)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._cut)

    def heal(self) -> None:
        self.delay, self.failure = 0.0, None

    def _cut(self) -> None:
        for upstream in list(self._streams):
            upstream.close()
        self.counts["watches cut"] += len(self._streams)

    # ---- serving ------------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        cert = make_serving_cert(("127.0.0.1", "localhost"))
        self._ca_pem = cert.ca_pem
        _, crt, key = cert.write(self.workdir / "proxy-tls")
        ready = threading.Event()
        failed: list[BaseException] = []

        def run() -> None:
            loop = self._loop = asyncio.new_event_loop()
            try:
                loop.run_until_complete(self._serve(crt, key))
            except BaseException as exc:  # reported to start()
                failed.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()

        threading.Thread(target=run, name="fault-proxy", daemon=True).start()
        ready.wait(30)
        if failed or not self.port:
            raise RuntimeError(f"the fault proxy did not start: {failed}")
        return self

    async def _serve(self, crt: Path, key: Path) -> None:
        upstream_tls = ssl.create_default_context(cafile=str(self.upstream_ca))
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=upstream_tls, limit=0),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5), auto_decompress=False)
        app = web.Application(client_max_size=256 << 20)
        app.router.add_route("*", "/{path:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
        await self._runner.setup()
        serving_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        serving_tls.load_cert_chain(str(crt), str(key))
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=serving_tls)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    def _status(self, status: int, message: str) -> web.Response:
        body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": message, "reason": _REASONS.get(status, "InternalError"),
                "code": status}
        headers = {"Retry-After": "1"} if status == 429 else {}
        return web.Response(status=status, text=json.dumps(body), headers=headers,
                            content_type="application/json")

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        if self.delay:
            self.counts["delayed"] += 1
            await asyncio.sleep(self.delay)
        failure = self.failure
        if failure is not None and random.random() < failure[1]:
            self.counts[f"answered {failure[0]}"] += 1
            return self._status(failure[0], f"fault injected by the chaos loop's proxy "
                                            f"({failure[0]})")
        assert self._session is not None
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        try:
            upstream = await self._session.request(
                request.method, self.upstream + request.path_qs, data=body or None,
                headers=headers, allow_redirects=False)
        except (aiohttp.ClientError, OSError) as exc:
            self.counts["upstream unreachable"] += 1
            return self._status(503, f"the API server cannot be reached: {exc}")
        self.counts["forwarded"] += 1
        self._streams.add(upstream)
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason,
                                      headers={k: v for k, v in upstream.headers.items()
                                               if k.lower() not in _HOP_BY_HOP})
        try:
            await response.prepare(request)
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response
        except (aiohttp.ClientError, ConnectionError):
            # Cut (a fault) or the API server went away mid-answer: the client sees its
            # connection end, as it would.
            if request.transport is not None:
                request.transport.close()
            return response
        finally:
            self._streams.discard(upstream)
            upstream.release()

    def stop(self) -> None:
        loop = self._loop
        if loop is None:
            return

        async def shutdown() -> None:
            self._cut()
            if self._runner is not None:
                await self._runner.cleanup()
            if self._session is not None:
                await self._session.close()
            rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in rest:
                task.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        self._loop = None
