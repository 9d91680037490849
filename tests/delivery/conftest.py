"""The delivery service in-process: its real aiohttp application on a loopback TLS port (its own
event loop, in a thread), device CAs and certificates made per run, and a device-side HTTP client
(http.client over ssl: it sends the request target exactly as given, so path tricks reach the
server unchanged). The published ConfigMaps are handed to the service's catalog as its watch would
hand them; tests/e2e/test_delivery.py runs the real process against the real API server."""
from __future__ import annotations

import asyncio
import http.client
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from flashgate.api import FirmwareReleaseSpec
from flashgate.api.published import BUNDLE_CONFIGMAP, BUNDLE_KEY, channel_name, document_key
from flashgate.delivery.config import settings_from
from flashgate.delivery.devcerts import DeviceCA, DeviceCert
from flashgate.delivery.server import Delivery, make_ops_app, runner, server_context
from flashgate.operator.ledger import job_document
from flashgate.operator.tls import make_serving_cert

from .client import DeviceClient, Reply, metric

FLEETS = ("fleet-a", "fleet-b")


@dataclass
class Pki:
    """A device CA per fleet, and the service's own certificate."""

    directory: Path
    cas: dict[str, DeviceCA] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.server_ca, self.server_cert, self.server_key = make_serving_cert(
            ("localhost", "127.0.0.1")).write(self.directory / "server")
        for fleet in FLEETS:
            self.cas[fleet] = DeviceCA(f"{fleet} device CA")
            self.cas[fleet].write(self.directory / f"{fleet}-ca.pem")

    def config(self, **extra: Any) -> dict[str, Any]:
        return {"fleets": {f: {"deviceCAFiles": [str(self.directory / f"{f}-ca.pem")]}
                           for f in FLEETS},
                "tls": {"certFile": str(self.server_cert), "keyFile": str(self.server_key)},
                **extra}

    def device(self, fleet: str, device: str, ca: str | None = None, **kwargs: Any
               ) -> DeviceCert:
        return self.cas[ca or fleet].issue(fleet, device, **kwargs)


def spec(tier: str = "application", url: str = "https://fw.example.com/app.bin",
         product: str = "gw-3000", channel: str = "stable") -> FirmwareReleaseSpec:
    return FirmwareReleaseSpec.model_validate({
        "tier": tier, "product": product, "version": "4.2.0", "securityVersion": 7,
        "channel": channel,
        "artifact": {"url": url, "name": "app.bin", "sha256": "ab" * 32, "size": 1234},
        "signatures": ["c2lnbmF0dXJl"]})


def document(fleet: str, name: str = "app-4-2-0", **kwargs: Any) -> str:
    return job_document(fleet=fleet, name=name, spec=spec(**kwargs),
                        published_at=datetime(2026, 5, 1, tzinfo=UTC))


def channel_cm(fleet: str, docs: dict[str, str], product: str = "gw-3000",
               channel: str = "stable") -> dict[str, Any]:
    return {"metadata": {"namespace": fleet, "name": channel_name(product, channel)},
            "data": {document_key(tier): text for tier, text in docs.items()}}


def bundle_cm(fleet: str, text: str) -> dict[str, Any]:
    return {"metadata": {"namespace": fleet, "name": BUNDLE_CONFIGMAP},
            "data": {BUNDLE_KEY: text}}


@dataclass
class Running:
    """The service on 127.0.0.1 (device port over TLS, ops port over HTTP), in a thread."""

    service: Delivery
    pki: Pki
    port: int = 0
    ops_port: int = 0
    _loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)

    def start(self) -> Running:
        ready = threading.Event()

        async def serve() -> None:
            self.runners = [runner(self.service), web.AppRunner(make_ops_app(self.service))]
            for each in self.runners:
                await each.setup()
            device = web.TCPSite(self.runners[0], "127.0.0.1", 0,
                                 ssl_context=server_context(self.service.settings))
            ops = web.TCPSite(self.runners[1], "127.0.0.1", 0)
            await device.start()
            await ops.start()
            self.port = self.runners[0].addresses[0][1]
            self.ops_port = self.runners[1].addresses[0][1]
            ready.set()

        def run() -> None:
            self._loop.run_until_complete(serve())
            self._loop.run_forever()
            for each in self.runners:
                self._loop.run_until_complete(each.cleanup())
            pending = asyncio.all_tasks(self._loop)
            for task in pending:
                task.cancel()

            async def ended() -> None:
                await asyncio.gather(*pending, return_exceptions=True)

            self._loop.run_until_complete(ended())
            self._loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        assert ready.wait(10)
        self.client = DeviceClient("127.0.0.1", self.port, self.pki.server_ca,
                                   self.pki.directory / "devices")
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def publish(self, event: str, obj: dict[str, Any]) -> None:
        """Hand a ConfigMap event to the catalog on the service's loop, as its watch does."""
        async def hand() -> None:
            self.service.catalog.on_configmap(event, obj)
        asyncio.run_coroutine_threadsafe(hand(), self._loop).result(5)

    def request(self, method: str, path: str, cert: DeviceCert | None = None, **kwargs: Any
                ) -> Reply:
        return self.client.request(method, path, cert, **kwargs)

    def get(self, path: str, cert: DeviceCert | None = None, **kwargs: Any) -> Reply:
        return self.client.get(path, cert, **kwargs)

    def ops(self, path: str) -> Reply:
        conn = http.client.HTTPConnection("127.0.0.1", self.ops_port, timeout=10)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return Reply(response.status, dict(response.getheaders()), response.read())
        finally:
            conn.close()

    def metric(self, name: str, **labels: str) -> float:
        """The value of one sample of the ops port's /metrics (0 when absent)."""
        return metric(self.ops("/metrics").body.decode(), name, **labels)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def start(pki: Pki, *, anonymous: bool = False, ready: bool = True, **config: Any) -> Running:
    service = Delivery.make(settings_from(pki.config(**config)), anonymous=anonymous)
    service.ready = ready
    return Running(service, pki).start()


@pytest.fixture
def running(pki: Pki) -> Iterator[Running]:
    server = start(pki)
    yield server
    server.stop()
