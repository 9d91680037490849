"""The device's side of the delivery API (docs/delivery.md): mutual TLS with its certificate, the
delivery service's CA pinned, ETags, bounded answers.

Nothing it receives is trusted: the agent verifies every entry and envelope. The bounds are so
that whoever answers cannot make a device hold more than `MAX_DOCUMENT_BYTES` of a document, or
wait longer than the timeout for one.
"""
from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp

from flashgate.device.config import DeliverySection

MAX_DOCUMENT_BYTES = 1 << 20
"""A channel of five tiers, each with 16 envelopes of 16 KiB, is below 2 MiB; real ones are a few
KiB. A device reads at most this much of any answer."""


class DeliveryError(Exception):
    """The delivery service could not be asked, or its answer could not be read."""


@dataclass(frozen=True)
class Answer:
    status: int
    etag: str | None
    body: bytes

    def json(self) -> Any:
        """The body as JSON. Raises DeliveryError."""
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise DeliveryError(f"answer is not JSON: {exc}") from None


class DeliveryClient:
    """Requests of one device. `base_url` is where the delivery service is (whoever owns the
    delivery path decides what answers there: the device verifies everything it gets)."""

    def __init__(self, section: DeliverySection, fleet: str, device: str) -> None:
        self.base_url = str(section.url).rstrip("/")
        self.fleet, self.device = fleet, device
        self.timeout = section.timeout_seconds
        self._ssl = ssl.create_default_context(cafile=str(section.ca_file))
        self._ssl.load_cert_chain(section.cert_file, section.key_file)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[aiohttp.ClientSession]:
        """One connection for a poll (the bundle, the channel, the status report)."""
        connector = aiohttp.TCPConnector(ssl=self._ssl, limit=1)
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout,
                                         trust_env=False) as session:
            yield session

    def path(self, *parts: str) -> str:
        return "/".join((self.base_url, "v1", "fleets", self.fleet, *parts))

    async def get(self, session: aiohttp.ClientSession, url: str, etag: str | None = None
                  ) -> Answer:
        """GET with If-None-Match; the body bounded. Raises DeliveryError."""
        headers = {"If-None-Match": etag} if etag else {}
        try:
            async with asyncio.timeout(self.timeout), \
                    session.get(url, headers=headers, allow_redirects=False) as response:
                body = await response.content.read(MAX_DOCUMENT_BYTES + 1)
                if len(body) > MAX_DOCUMENT_BYTES:
                    raise DeliveryError(f"answer of {url} is larger than {MAX_DOCUMENT_BYTES} "
                                        "bytes")
                return Answer(response.status, response.headers.get("ETag"), body)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DeliveryError(f"GET {url}: {type(exc).__name__}: {exc}") from None

    async def bundle(self, session: aiohttp.ClientSession, etag: str | None) -> Answer:
        return await self.get(session, self.path("trust-bundle"), etag)

    async def channel(self, session: aiohttp.ClientSession, product: str, channel: str,
                      etag: str | None) -> Answer:
        return await self.get(session, self.path("channels", product, channel), etag)

    async def job(self, session: aiohttp.ClientSession, product: str, channel: str,
                  tier: str) -> Answer:
        """One tier's job document, asked afresh (a new presigned URL)."""
        return await self.get(session, self.path("channels", product, channel, "jobs", tier))

    async def report(self, session: aiohttp.ClientSession, status: bytes) -> int:
        """POST the device's status; the HTTP status. Raises DeliveryError."""
        url = self.path("devices", self.device, "status")
        try:
            async with asyncio.timeout(self.timeout), \
                    session.post(url, data=status, allow_redirects=False,
                                 headers={"Content-Type": "application/json"}) as response:
                await response.content.read(MAX_DOCUMENT_BYTES)
                return response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DeliveryError(f"POST {url}: {type(exc).__name__}: {exc}") from None
