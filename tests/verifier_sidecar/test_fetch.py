"""The sidecar's artifact fetcher against real servers on loopback (https with a test CA, files).

The HTTPS server runs on its own event loop in a thread, so each test drives the fetcher with a
plain asyncio.run and the two never share a loop.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import ssl
import threading
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from flashgate.operator.tls import make_serving_cert
from flashgate.verifier_sidecar.fetch import (
    ArtifactUnavailable,
    Fetcher,
    FetchLimits,
    FetchResult,
    URLNotAllowed,
    URLPolicy,
)

BODY = os.urandom(3 * 1024 * 1024 + 17)
LOOPBACK = URLPolicy.make(allowed_networks=["127.0.0.1/32"])
FAST = FetchLimits(connect_timeout=2, read_timeout=2, total_timeout=10,
                   min_bytes_per_second=0, min_rate_grace_seconds=0)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class HttpsServer:
    """An aiohttp https server on 127.0.0.1 (test CA) running in a thread with its own loop."""

    directory: Path
    routes: dict[str, Handler]
    port: int = 0
    sent: dict[str, int] = field(default_factory=dict)  # bytes written per path
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None

    def start(self) -> None:
        cert = make_serving_cert(("localhost", "127.0.0.1"))
        self.ca, crt, key = cert.write(self.directory)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(crt, key)
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        async def serve() -> None:
            app = web.Application()
            for path, handler in self.routes.items():
                app.router.add_route("GET", path, handler)
            self.runner = web.AppRunner(app, shutdown_timeout=0.5)
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=context)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            ready.set()

        def run() -> None:
            loop = self._loop
            assert loop is not None
            loop.run_until_complete(serve())
            loop.run_forever()
            loop.run_until_complete(self.runner.cleanup())
            # Handlers of connections the client cut off may still be pending: end them, and
            # close the loop, rather than leave them to the garbage collector's warnings.
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()

            async def ended() -> None:
                await asyncio.gather(*pending, return_exceptions=True)

            loop.run_until_complete(ended())
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        assert ready.wait(10)

    def stop(self) -> None:
        assert self._loop is not None and self._thread is not None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.port}{path}"


def make_routes(server_ref: list[HttpsServer]) -> dict[str, Handler]:
    async def body(_: web.Request) -> web.StreamResponse:
        return web.Response(body=BODY)

    async def endless(request: web.Request) -> web.StreamResponse:
        # No Content-Length, far more than declared: the reader must stop on its own. (Writes to a
        # connection the client aborted do not fail on this server, hence the cap.)
        response = web.StreamResponse()
        await response.prepare(request)
        block = b"\0" * 65536
        sent = 0
        try:
            while sent < 256 << 20 and request.transport and not request.transport.is_closing():
                await response.write(block)
                sent += len(block)
                server_ref[0].sent["/endless"] = sent
        except (ConnectionError, asyncio.CancelledError):
            pass
        return response

    async def drip(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = 10_000
        await response.prepare(request)
        for _ in range(10_000):
            await response.write(b"x")
            await asyncio.sleep(0.05)
        return response

    async def stall(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = 100
        await response.prepare(request)
        await response.write(b"x")
        await asyncio.sleep(30)
        return response

    async def status(request: web.Request) -> web.StreamResponse:
        return web.Response(status=int(request.match_info["code"]), text="no")

    async def redirect(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(request.query["to"])

    async def loop(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/loop")

    async def bad_location(request: web.Request) -> web.StreamResponse:
        return web.Response(status=302, headers={"Location": "https://[::1/x"})

    return {"/body": body, "/endless": endless, "/drip": drip, "/stall": stall,
            "/status/{code}": status, "/redirect": redirect, "/loop": loop,
            "/bad-location": bad_location}


@pytest.fixture(scope="module")
def https(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpsServer]:
    ref: list[HttpsServer] = []
    server = HttpsServer(tmp_path_factory.mktemp("tls"), make_routes(ref))
    ref.append(server)
    server.start()
    yield server
    server.stop()


def fetch(fetcher: Fetcher, url: str, size: int) -> FetchResult:
    return asyncio.run(fetcher.fetch(url, size))


def failure(fetcher: Fetcher, url: str, size: int) -> Exception:
    try:
        result = fetch(fetcher, url, size)
    except (URLNotAllowed, ArtifactUnavailable) as exc:
        return exc
    raise AssertionError(f"expected a fetch failure, got {result}")


def loopback_fetcher(https: HttpsServer, limits: FetchLimits = FAST) -> Fetcher:
    return Fetcher(LOOPBACK, limits, ca_file=https.ca)


# https ---------------------------------------------------------------------------------------

def test_https_fetch_digest_and_size(https: HttpsServer) -> None:
    result = fetch(loopback_fetcher(https), https.url("/body"), len(BODY))
    assert result.sha256 == hashlib.sha256(BODY).digest()
    assert (result.size, result.short, result.oversized) == (len(BODY), False, False)


def test_unknown_ca_is_a_tls_failure(https: HttpsServer) -> None:
    error = failure(Fetcher(LOOPBACK, FAST), https.url("/body"), len(BODY))
    assert isinstance(error, ArtifactUnavailable)
    assert "TLS" in error.message and "certificate" in error.message.lower()


def test_fewer_bytes_than_declared_is_short(https: HttpsServer) -> None:
    result = fetch(loopback_fetcher(https), https.url("/body"), len(BODY) + 1000)
    assert result.short and not result.oversized and result.size == len(BODY)


def test_more_bytes_than_declared_stops_at_declared_plus_one(https: HttpsServer) -> None:
    declared = 1_000_000
    result = fetch(loopback_fetcher(https), https.url("/endless"), declared)
    sent = https.sent.get("/endless", 0)
    assert result.oversized and result.size == declared + 1
    # Cut off after a few buffers, not after the server's 256 MiB.
    assert sent < 32 * 1024 * 1024


def test_content_length_above_declared_is_oversized_without_reading(https: HttpsServer) -> None:
    result = fetch(loopback_fetcher(https), https.url("/body"), 100)
    assert result.oversized and result.size == len(BODY)


@pytest.mark.parametrize("code", [404, 500])
def test_http_error_status_is_unavailable(https: HttpsServer, code: int) -> None:
    error = failure(loopback_fetcher(https), https.url(f"/status/{code}"), 10)
    assert isinstance(error, ArtifactUnavailable) and f"HTTP {code}" in error.message


def test_slow_drip_below_minimum_rate(https: HttpsServer) -> None:
    limits = FetchLimits(connect_timeout=2, read_timeout=5, total_timeout=20,
                         min_bytes_per_second=1000, min_rate_grace_seconds=0.3)
    started = time.monotonic()
    error = failure(loopback_fetcher(https, limits), https.url("/drip"), 10_000)
    assert isinstance(error, ArtifactUnavailable) and "too slow" in error.message
    assert time.monotonic() - started < 3


def test_total_timeout(https: HttpsServer) -> None:
    limits = FetchLimits(connect_timeout=2, read_timeout=5, total_timeout=0.5,
                         min_bytes_per_second=0)
    error = failure(loopback_fetcher(https, limits), https.url("/drip"), 10_000)
    assert isinstance(error, ArtifactUnavailable) and "total time limit" in error.message


def test_read_timeout(https: HttpsServer) -> None:
    limits = FetchLimits(connect_timeout=2, read_timeout=0.3, total_timeout=20,
                         min_bytes_per_second=0)
    error = failure(loopback_fetcher(https, limits), https.url("/stall"), 100)
    assert isinstance(error, ArtifactUnavailable) and "read timeout" in error.message


@contextlib.asynccontextmanager
async def trickling_server(directory: Path, interval: float) -> AsyncIterator[tuple[int, Path]]:
    """A raw TLS server (asyncio, no HTTP library) that reads the request, then sends its
    response headers one byte every `interval` seconds: the slowloris of the response side."""
    cert = make_serving_cert(("localhost", "127.0.0.1"))
    ca, crt, key = cert.write(directory)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(crt, key)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nX-Padding: slow\r\n\r\n":
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(interval)
            writer.write(b"0123456789")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1], ca
    finally:
        server.close()


def trickled(tmp_path: Path, limits: FetchLimits, interval: float = 0.1) -> tuple[Exception, float]:
    async def scenario() -> tuple[Exception, float]:
        async with trickling_server(tmp_path, interval) as (port, ca):
            started = time.monotonic()
            try:
                result = await Fetcher(LOOPBACK, limits, ca_file=ca).fetch(
                    f"https://127.0.0.1:{port}/fw.bin", 10)
            except (URLNotAllowed, ArtifactUnavailable) as exc:
                return exc, time.monotonic() - started
            raise AssertionError(f"expected a fetch failure, got {result}")

    return asyncio.run(scenario())


def test_trickled_headers_are_cut_at_the_headers_timeout(tmp_path: Path) -> None:
    """One header byte every 0.1 s never trips the read timeout (2 s of silence); the headers
    timeout ends it. Before it, such a server held a download slot until the total limit."""
    limits = FetchLimits(connect_timeout=2, headers_timeout=0.8, read_timeout=2,
                         total_timeout=30, min_bytes_per_second=0)
    error, seconds = trickled(tmp_path, limits)
    assert isinstance(error, ArtifactUnavailable)
    assert error.message == ("no complete response headers from 127.0.0.1 within 0.8s "
                             "(headers timeout)")
    assert 0.7 < seconds < 3


def test_the_minimum_rate_applies_from_the_first_byte(tmp_path: Path) -> None:
    """With a minimum rate, trickled headers are too slow once the grace period is over, long
    before the headers timeout."""
    limits = FetchLimits(connect_timeout=2, headers_timeout=20, read_timeout=5, total_timeout=30,
                         min_bytes_per_second=1000, min_rate_grace_seconds=0.5)
    error, seconds = trickled(tmp_path, limits)
    assert isinstance(error, ArtifactUnavailable)
    assert error.message.startswith("transfer too slow: response headers from 127.0.0.1 not "
                                    "complete after 0.")
    assert error.message.endswith("s, below the minimum 1000 B/s")
    assert seconds < 3


def test_a_response_whose_headers_come_in_time_is_read(tmp_path: Path) -> None:
    """The same server, fast enough: the headers deadline does not cut a good response."""
    async def scenario() -> FetchResult:
        async with trickling_server(tmp_path, 0.001) as (port, ca):
            return await Fetcher(LOOPBACK, FAST, ca_file=ca).fetch(
                f"https://127.0.0.1:{port}/fw.bin", 10)

    result = asyncio.run(scenario())
    assert (result.size, result.sha256) == (10, hashlib.sha256(b"0123456789").digest())


def test_redirect_to_allowed_address_is_followed(https: HttpsServer) -> None:
    url = https.url("/redirect?to=" + https.url("/body"))
    assert fetch(loopback_fetcher(https), url, len(BODY)).size == len(BODY)


@pytest.mark.parametrize("target", ["https://169.254.169.254/latest/meta-data/",
                                    "https://127.0.0.2:{port}/body", "https://10.0.0.1/x",
                                    "http://127.0.0.1:{port}/body",
                                    "file:///etc/passwd"])
def test_redirect_to_denied_address_is_refused(https: HttpsServer, target: str) -> None:
    url = https.url("/redirect?to=" + target.format(port=https.port))
    error = failure(loopback_fetcher(https), url, len(BODY))
    assert isinstance(error, URLNotAllowed)


def test_allow_listed_name_connects_to_the_checked_address(https: HttpsServer) -> None:
    policy = URLPolicy.make(allowed_hosts=["localhost"], allowed_networks=["127.0.0.1/32"])
    result = fetch(Fetcher(policy, FAST, ca_file=https.ca),
                   f"https://localhost:{https.port}/body", len(BODY))
    assert result.size == len(BODY) and result.url.startswith("https://localhost:")


def test_redirect_loop_and_invalid_location(https: HttpsServer) -> None:
    error = failure(loopback_fetcher(https), https.url("/loop"), 10)
    assert isinstance(error, ArtifactUnavailable) and "redirects" in error.message
    error = failure(loopback_fetcher(https), https.url("/bad-location"), 10)
    assert isinstance(error, URLNotAllowed) and "invalid URL" in error.message


def test_stalled_tls_handshake_is_a_connect_timeout() -> None:
    """A server that accepts TCP and never answers the ClientHello."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        limits = FetchLimits(connect_timeout=0.3, read_timeout=5, total_timeout=20)
        started = time.monotonic()
        error = failure(Fetcher(LOOPBACK, limits), f"https://127.0.0.1:{port}/x", 10)
    assert isinstance(error, ArtifactUnavailable) and "timed out" in error.message, error
    assert time.monotonic() - started < 3


def test_connection_refused_is_unavailable(https: HttpsServer) -> None:
    error = failure(loopback_fetcher(https), "https://127.0.0.1:1/x", 10)
    assert isinstance(error, ArtifactUnavailable) and "127.0.0.1" in error.message


def test_declared_size_above_sidecar_maximum(https: HttpsServer) -> None:
    limits = FetchLimits(max_artifact_bytes=1000)
    error = failure(loopback_fetcher(https, limits), https.url("/body"), 1001)
    assert isinstance(error, ArtifactUnavailable) and "maxArtifactBytes" in error.message


def test_s3_needs_configuration() -> None:
    error = failure(Fetcher(URLPolicy(), FAST), "s3://bucket/key", 10)
    assert isinstance(error, ArtifactUnavailable) and "not configured" in error.message


# file:// -------------------------------------------------------------------------------------

def file_fetcher(root: Path) -> Fetcher:
    return Fetcher(URLPolicy.make(allow_file=True, file_root=root), FAST)


def test_file_url_disabled_by_default(tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(b"abc")
    error = failure(Fetcher(URLPolicy(file_root=tmp_path), FAST), (tmp_path / "a.bin").as_uri(), 3)
    assert isinstance(error, URLNotAllowed) and "allowFileURLs" in error.message


def test_file_fetch(tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(BODY)
    result = fetch(file_fetcher(tmp_path), (tmp_path / "a.bin").as_uri(), len(BODY))
    assert result.sha256 == hashlib.sha256(BODY).digest() and result.size == len(BODY)
    short = fetch(file_fetcher(tmp_path), (tmp_path / "a.bin").as_uri(), len(BODY) + 1)
    assert short.short
    long = fetch(file_fetcher(tmp_path), (tmp_path / "a.bin").as_uri(), 10)
    assert long.oversized and long.size == 11
    assert long.sha256 == hashlib.sha256(BODY[:11]).digest()


def test_file_escapes_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "secret").write_bytes(b"secret")
    (root / "link").symlink_to(tmp_path / "secret")
    (root / "dirlink").symlink_to(tmp_path)
    for url in [f"file://{root}/../secret", f"file://{root}/%2e%2e/secret",
                (root / "link").as_uri(), f"{(root / 'dirlink').as_uri()}/secret",
                f"file://example.com{root}/x"]:
        error = failure(file_fetcher(root), url, 6)
        assert isinstance(error, URLNotAllowed), url


def test_symlink_inside_root_is_followed(tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(b"abc")
    (tmp_path / "alias").symlink_to(tmp_path / "a.bin")
    assert fetch(file_fetcher(tmp_path), (tmp_path / "alias").as_uri(), 3).size == 3


def test_only_regular_files(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dir").mkdir()
    for name in ("fifo", "dir"):
        error = failure(file_fetcher(tmp_path), (tmp_path / name).as_uri(), 3)
        assert isinstance(error, (URLNotAllowed, ArtifactUnavailable)), name
    error = failure(file_fetcher(tmp_path), (tmp_path / "missing").as_uri(), 3)
    assert isinstance(error, ArtifactUnavailable)


def test_memory_stays_flat_for_a_large_file(tmp_path: Path) -> None:
    size = 256 * 1024 * 1024
    path = tmp_path / "big.bin"
    with open(path, "wb") as file:
        file.truncate(size)  # sparse: reads as zeros without using the disk
    tracemalloc.start()
    try:
        result = fetch(file_fetcher(tmp_path), path.as_uri(), size)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.size == size and not result.short
    assert peak < 4 * 1024 * 1024, f"peak traced memory {peak} bytes"
