"""Artifact fetching: a bounded stream into SHA-256, in constant memory whatever the size.

The fetcher reads at most the declared size + 1 byte (so "more bytes than declared" is known
without reading a huge body), under connect/headers/read/total time limits and a minimum transfer
rate. The rate is measured from the start of the fetch and enforced from the first byte on, the
response headers included: a server that trickles its headers one byte at a time cannot hold a
download slot for longer than the grace period (or the headers timeout, without a rate).
It decides nothing about trust: it reports what it read (`FetchResult`) or why it could not
(`FetchError`), and the service hands that to `flashgate.trust.check_artifact`.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import re
import socket
import ssl
import stat
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from flashgate.s3 import S3CredentialsError, S3Settings, S3URLError, sign_get
from flashgate.verifier_sidecar.urlpolicy import (
    ArtifactUnavailable,
    CheckedURL,
    Checker,
    FetchError,
    URLNotAllowed,
    URLPolicy,
    inside,
)

__all__ = ["ArtifactUnavailable", "FetchError", "FetchLimits", "FetchResult", "Fetcher",
           "ReadReporter", "S3Settings", "URLNotAllowed", "URLPolicy"]

CHUNK = 1 << 20  # 1 MiB: below this per-call overhead shows next to SHA-NI hashing
MAX_REDIRECTS = 5
REDIRECTS = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True)
class FetchLimits:
    """Time and size limits of one artifact fetch (seconds, bytes)."""

    connect_timeout: float = 10.0
    headers_timeout: float = 30.0
    read_timeout: float = 30.0
    total_timeout: float = 600.0
    min_bytes_per_second: int = 64 * 1024
    min_rate_grace_seconds: float = 10.0
    max_artifact_bytes: int = 8 << 30


@dataclass(frozen=True)
class FetchResult:
    """What was read. `size` counts the bytes hashed: at most the declared size + 1."""

    url: str
    size: int
    sha256: bytes
    short: bool  # the source ended before the declared size
    oversized: bool  # the source had more than the declared size; reading stopped
    seconds: float


ReadReporter = Callable[[int], None]
"""Told the number of bytes each read brought (e.g. slots.Download.add)."""


class _Transfer:
    """One fetch: its deadlines (total, headers, the minimum rate after its grace period) and
    where the bytes it reads are reported."""

    def __init__(self, limits: FetchLimits, progress: ReadReporter | None = None) -> None:
        self.limits = limits
        self.start = time.monotonic()
        self.total_deadline = self.start + limits.total_timeout
        self.progress = progress

    def read(self, count: int) -> None:
        if self.progress is not None:
            self.progress(count)

    def _rate_deadline(self, got: int) -> tuple[float, str] | None:
        lim = self.limits
        if lim.min_bytes_per_second <= 0:
            return None
        # Below the rate once elapsed > got / rate; never before the grace period ends.
        rate_at = self.start + max(lim.min_rate_grace_seconds, got / lim.min_bytes_per_second)
        return rate_at, (f"transfer too slow: {got} bytes in {{:.1f}}s, below the minimum "
                         f"{lim.min_bytes_per_second} B/s")

    def deadline(self, got: int) -> tuple[float, str]:
        """The time by which the next body bytes must arrive, and what passing it means."""
        lim = self.limits
        now = time.monotonic()
        candidates = [(self.total_deadline, f"total time limit of {lim.total_timeout:g}s"),
                      (now + lim.read_timeout, f"no data for {lim.read_timeout:g}s (read timeout)")]
        rate = self._rate_deadline(got)
        if rate is not None:
            candidates.append(rate)
        return min(candidates)

    def headers_deadline(self, host: str) -> tuple[float, str]:
        """The time by which a response's headers must be complete (from now: one request).

        aiohttp hands a response over only once its headers are complete, so header bytes are
        not counted: with a minimum rate, the headers must be complete within the grace period.
        """
        lim = self.limits
        candidates = [(self.total_deadline, f"total time limit of {lim.total_timeout:g}s"),
                      (time.monotonic() + lim.headers_timeout,
                       f"no complete response headers from {host} within "
                       f"{lim.headers_timeout:g}s (headers timeout)")]
        rate = self._rate_deadline(0)
        if rate is not None:
            candidates.append((rate[0], f"transfer too slow: response headers from {host} not "
                                        f"complete after {{:.1f}}s, below the minimum "
                                        f"{lim.min_bytes_per_second} B/s"))
        return min(candidates)

    def elapsed(self) -> float:
        return time.monotonic() - self.start


class _PinnedResolver(AbstractResolver):
    """Answers only with the addresses the URL policy checked, so connect uses exactly those."""

    def __init__(self) -> None:
        self.pinned: dict[str, tuple[str, ...]] = {}

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        addresses = self.pinned.get(host.rstrip(".").lower())
        if not addresses:
            raise OSError(f"{host} was not checked by the URL policy")
        return [ResolveResult(hostname=host, host=a, port=port, proto=0, flags=0,
                              family=socket.AF_INET6 if ":" in a else socket.AF_INET)
                for a in addresses]

    async def close(self) -> None:
        return None


class Fetcher:
    """Fetches artifacts per a URLPolicy and FetchLimits.

    Args:
        policy: the URL policy.
        limits: time and size limits.
        ca_file: extra CA bundle trusted for https, besides the system CAs.
    """

    def __init__(self, policy: URLPolicy, limits: FetchLimits, ca_file: Path | None = None,
                 s3: S3Settings | None = None) -> None:
        self.limits = limits
        self.s3 = s3
        self.checker = Checker(policy, resolve_timeout=limits.connect_timeout)
        self._ssl = ssl.create_default_context()
        if ca_file is not None:
            self._ssl.load_verify_locations(cafile=str(ca_file))

    async def fetch(self, url: str, expected_size: int,
                    progress: ReadReporter | None = None) -> FetchResult:
        """Stream the artifact at url into SHA-256, reading at most expected_size + 1 bytes;
        `progress` is told the size of each read.

        Raises:
            URLNotAllowed: the URL (or a redirect target) is refused by policy.
            ArtifactUnavailable: the transfer failed; the message says how.
        """
        checked = await self.checker.check(url)
        if expected_size > self.limits.max_artifact_bytes:
            raise ArtifactUnavailable(
                f"declared size {expected_size} exceeds the sidecar's maxArtifactBytes "
                f"{self.limits.max_artifact_bytes}")
        transfer = _Transfer(self.limits, progress)
        fetchers: dict[str, Callable[[CheckedURL, int, _Transfer], Awaitable[FetchResult]]] = {
            "https": self._https, "file": self._file, "s3": self._s3}
        return await fetchers[checked.url.scheme](checked, expected_size, transfer)

    async def _s3(self, checked: CheckedURL, expected: int, transfer: _Transfer) -> FetchResult:
        if self.s3 is None:
            raise ArtifactUnavailable("s3:// URLs are not configured on this sidecar (no s3 "
                                      "section with an endpoint in its configuration)")
        try:
            target = self.s3.object_url(checked.url)
        except S3URLError as exc:
            raise URLNotAllowed(str(exc)) from None
        endpoint = await self.checker.check(target)  # the endpoint passes the URL policy too
        try:
            credentials = self.s3.credentials()
        except S3CredentialsError as exc:
            raise ArtifactUnavailable(str(exc)) from None
        headers = sign_get(target, credentials, self.s3.region, datetime.now(UTC))
        # No redirects: a signed request is for one host, and S3 does not redirect GETs of a
        # correctly addressed object.
        return await self._https(endpoint, expected, transfer, headers=headers, redirects=0)

    # file:// --------------------------------------------------------------------------------

    async def _file(self, checked: CheckedURL, expected: int, transfer: _Transfer) -> FetchResult:
        assert checked.path is not None
        root = self.checker.policy.file_root
        assert root is not None
        # Hashing releases the GIL but is still seconds of CPU for large files: keep it off the
        # event loop so /healthz and other verifications stay responsive.
        return await asyncio.to_thread(_hash_file, checked, root, expected, transfer)

    # https:// -------------------------------------------------------------------------------

    async def _https(self, checked: CheckedURL, expected: int, transfer: _Transfer,
                     headers: Mapping[str, str] | None = None,
                     redirects: int = MAX_REDIRECTS) -> FetchResult:
        resolver = _PinnedResolver()
        connector = aiohttp.TCPConnector(resolver=resolver, ssl=self._ssl, use_dns_cache=False,
                                         force_close=True)
        # `connect` bounds TCP connect plus the TLS handshake; `sock_connect` alone would let a
        # server that accepts and then stalls the handshake hold us until the total limit.
        timeout = aiohttp.ClientTimeout(total=None, connect=self.limits.connect_timeout,
                                        sock_connect=self.limits.connect_timeout,
                                        sock_read=self.limits.read_timeout)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout,
                                         auto_decompress=False, read_bufsize=CHUNK,
                                         trust_env=False) as session:
            try:
                async with asyncio.timeout_at(_loop_time(transfer.total_deadline)):
                    return await self._follow(session, resolver, checked, expected, transfer,
                                              headers or {}, redirects)
            except aiohttp.ClientSSLError as exc:
                raise ArtifactUnavailable(f"TLS error with {checked.url.host}: {exc}") from None
            except aiohttp.ServerTimeoutError as exc:  # before TimeoutError, its base class
                raise ArtifactUnavailable(f"{checked.url.host} timed out: {exc}") from None
            except aiohttp.ClientError as exc:
                raise ArtifactUnavailable(f"fetching from {checked.url.host} failed: "
                                          f"{type(exc).__name__}: {exc}") from None
            except TimeoutError:
                raise ArtifactUnavailable(
                    f"total time limit of {self.limits.total_timeout:g}s exceeded") from None

    async def _follow(self, session: aiohttp.ClientSession, resolver: _PinnedResolver,
                      checked: CheckedURL, expected: int, transfer: _Transfer,
                      headers: Mapping[str, str], redirects: int) -> FetchResult:
        # Redirects are followed by hand so every hop passes the URL policy first.
        for _ in range(redirects + 1):
            assert checked.url.host is not None
            resolver.pinned[checked.url.host.rstrip(".").lower()] = checked.addresses
            deadline, why = transfer.headers_deadline(checked.url.host)
            try:
                async with asyncio.timeout_at(_loop_time(deadline)):
                    response = await session.get(
                        checked.url, allow_redirects=False,
                        headers={**headers, "Accept-Encoding": "identity"})
            except aiohttp.ServerTimeoutError:
                raise  # connect or read timeout: _https words it
            except TimeoutError:
                raise ArtifactUnavailable(why.format(transfer.elapsed())) from None
            async with response:
                try:
                    if response.status in REDIRECTS and "Location" in response.headers:
                        checked = await self._redirect(checked, response.headers["Location"])
                        headers = {}  # credentials are for the first host only
                        continue
                    if response.status != 200:
                        raise ArtifactUnavailable(
                            f"HTTP {response.status} from {checked.url.host} "
                            f"({await self._error_detail(response)})")
                    return await _hash_stream(response, str(checked.url), expected, transfer)
                finally:
                    if not response.content.at_eof():
                        _abort(response)
        raise ArtifactUnavailable(f"more than {redirects} redirects" if redirects
                                  else "redirected, and this kind of URL is not redirected")

    async def _error_detail(self, response: aiohttp.ClientResponse) -> str:
        """The S3 error code of an error body (<Code>NoSuchKey</Code>), else the reason."""
        try:
            async with asyncio.timeout(self.limits.read_timeout):
                head = await response.content.read(4096)
        except (TimeoutError, aiohttp.ClientError):
            head = b""
        code = re.search(rb"<Code>([A-Za-z0-9.]{1,64})</Code>", head)
        return code.group(1).decode() if code else response.reason or "no reason"

    async def _redirect(self, source: CheckedURL, location: str) -> CheckedURL:
        try:
            target = source.url.join(URL(location))
        except ValueError as exc:
            raise URLNotAllowed(f"redirect to an invalid URL: {exc}") from None
        if target.scheme != "https":
            raise URLNotAllowed(f"redirect to {target.scheme}:// refused")
        return await self.checker.check(target)


def _abort(response: aiohttp.ClientResponse) -> None:
    # A plain close of a TLS connection waits for the peer's close_notify and keeps reading
    # (and discarding) whatever the server still sends; a body we stopped reading is cut off.
    connection = response.connection
    if connection is not None and connection.transport is not None:
        connection.transport.abort()


def _loop_time(monotonic_deadline: float) -> float:
    loop = asyncio.get_running_loop()
    return loop.time() + (monotonic_deadline - time.monotonic())


async def _hash_stream(response: aiohttp.ClientResponse, url: str, expected: int,
                       transfer: _Transfer) -> FetchResult:
    digest = hashlib.sha256()
    limit = expected + 1
    length = response.content_length
    if length is not None and length > expected:
        # The server says so itself: no need to read a body we would refuse anyway.
        return FetchResult(url, length, b"", short=False, oversized=True,
                           seconds=transfer.elapsed())
    got = 0
    content = response.content
    while got < limit:
        deadline, why = transfer.deadline(got)
        try:
            async with asyncio.timeout_at(_loop_time(deadline)):
                # readchunk hands over the buffered TLS records as they are; read(n) would join
                # and copy them (about 10% of the throughput on loopback).
                chunk, _ = await content.readchunk()
        except TimeoutError:
            raise ArtifactUnavailable(why.format(transfer.elapsed())) from None
        if not chunk:
            break
        take = min(len(chunk), limit - got)
        digest.update(memoryview(chunk)[:take] if take < len(chunk) else chunk)
        got += take
        transfer.read(take)
    return FetchResult(url, got, digest.digest(), short=got < expected,
                       oversized=got > expected, seconds=transfer.elapsed())


def _open_inside(path: Path, root: Path) -> int:
    """A file descriptor of the regular file at path, confirmed to lie inside root."""
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK  # a FIFO must not block
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise ArtifactUnavailable(f"cannot open {path}: {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise URLNotAllowed(f"{path} is not a regular file")
        # The path was checked before opening; check what was opened too (a component may
        # have been swapped for a symlink in between).
        opened = Path(os.readlink(f"/proc/self/fd/{fd}"))
        if not inside(opened, root):
            raise URLNotAllowed(f"{path} resolves outside fileRoot {root}")
    except OSError as exc:  # no /proc to confirm with: fail closed
        os.close(fd)
        raise ArtifactUnavailable(f"cannot confirm what {path} is: {exc}") from None
    except FetchError:
        os.close(fd)
        raise
    return fd


def _hash_file(checked: CheckedURL, root: Path, expected: int, transfer: _Transfer) -> FetchResult:
    assert checked.path is not None
    digest = hashlib.sha256()
    view = memoryview(bytearray(CHUNK))  # one buffer, reused: no copy per read
    limit, got = expected + 1, 0
    with open(_open_inside(checked.path, root), "rb", buffering=0) as file:
        while got < limit:
            if time.monotonic() > transfer.total_deadline:
                raise ArtifactUnavailable(
                    f"total time limit of {transfer.limits.total_timeout:g}s exceeded")
            try:
                n = file.readinto(view[: min(CHUNK, limit - got)])
            except OSError as exc:
                raise ArtifactUnavailable(f"reading {checked.path} failed: {exc}") from None
            if not n:
                break
            digest.update(view[:n])
            got += n
            transfer.read(n)
    return FetchResult(checked.url.human_repr(), got, digest.digest(), short=got < expected,
                       oversized=got > expected, seconds=transfer.elapsed())
