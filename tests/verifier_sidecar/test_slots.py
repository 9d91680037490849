"""Download slots shared fairly between fleets: the scheduler alone (asyncio, no I/O), then the
service against a real https server on loopback whose bodies trickle, where one fleet's slow
releases must not starve another fleet's small one."""
from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path

import pytest
from aiohttp import web

from flashgate.signing.filekeys import generate
from flashgate.trust import Algorithm
from flashgate.verifier_api.models import ReleaseRequest, ReleaseVerdict
from flashgate.verifier_sidecar.fetch import Fetcher
from flashgate.verifier_sidecar.metrics import Metrics
from flashgate.verifier_sidecar.service import VerifierService
from flashgate.verifier_sidecar.slots import DownloadProgress, FairSlots

from .test_fetch import HttpsServer
from .test_service import NOW, Fleet

# ---- the scheduler --------------------------------------------------------------------------


async def hold(slots: FairSlots, fleet: str, name: str, order: list[str],
               release: asyncio.Event) -> None:
    async with slots.download(fleet, name):
        order.append(name)
        await release.wait()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_one_fleet_gets_at_most_its_share() -> None:
    async def scenario() -> None:
        slots, order, release = FairSlots(total=4, per_fleet=2), [], asyncio.Event()
        tasks = [asyncio.create_task(hold(slots, "a", f"a{i}", order, release))
                 for i in range(6)]
        await settle()
        assert order == ["a0", "a1"] and (slots.active, slots.queued) == (2, 4)
        tasks.append(asyncio.create_task(hold(slots, "b", "b0", order, release)))
        await settle()
        assert order == ["a0", "a1", "b0"]  # at once: a free slot, and b is under its share
        release.set()
        await asyncio.gather(*tasks)
        assert sorted(order) == sorted(["b0", *(f"a{i}" for i in range(6))])
        assert (slots.active, slots.queued) == (0, 0)

    asyncio.run(scenario())


def test_free_slots_go_round_robin_across_fleets() -> None:
    async def scenario() -> list[str]:
        slots, order = FairSlots(total=1, per_fleet=1), []
        gates = {name: asyncio.Event() for name in ("z0", "a0", "a1", "a2", "b0", "c0")}
        tasks = []
        for fleet, name in (("z", "z0"), ("a", "a0"), ("a", "a1"), ("a", "a2"), ("b", "b0"),
                            ("c", "c0")):
            tasks.append(asyncio.create_task(hold(slots, fleet, name, order, gates[name])))
            await settle()
        assert slots.progress("a", "a2") == DownloadProgress("queued", ahead=2, active=1)
        assert slots.progress("c", "c0") == DownloadProgress("queued", ahead=0, active=1)
        for _ in gates:
            gates[order[-1]].set()  # let the running one finish; the next one starts
            await settle()
        await asyncio.gather(*tasks)
        return order

    assert asyncio.run(scenario()) == ["z0", "a0", "b0", "c0", "a1", "a2"]


def test_progress_queued_fetching_unknown() -> None:
    async def scenario() -> None:
        slots = FairSlots(total=1, per_fleet=1)
        running, release = asyncio.Event(), asyncio.Event()

        async def fetching() -> None:
            async with slots.download("a", "first") as download:
                download.add(1000)
                download.add(24)
                running.set()
                await release.wait()

        first = asyncio.create_task(fetching())
        await running.wait()
        second = asyncio.create_task(hold(slots, "a", "second", [], release))
        await settle()
        assert slots.progress("a", "first") == DownloadProgress(
            "fetching", active=1, fleet_active=1, bytes=1024)
        assert slots.progress("a", "second") == DownloadProgress(
            "queued", ahead=0, active=1, fleet_active=1)
        assert slots.progress("b", "first").state == "unknown"
        release.set()
        await asyncio.gather(first, second)
        assert slots.progress("a", "first") == DownloadProgress("unknown")

    asyncio.run(scenario())


def test_a_cancelled_waiter_leaves_the_queue_and_a_cancelled_holder_its_slot() -> None:
    async def scenario() -> None:
        slots, order, release = FairSlots(total=1, per_fleet=1), [], asyncio.Event()
        holder = asyncio.create_task(hold(slots, "a", "a0", order, release))
        waiter = asyncio.create_task(hold(slots, "a", "a1", order, release))
        after = asyncio.create_task(hold(slots, "b", "b0", order, release))
        await settle()
        waiter.cancel()
        await settle()
        assert slots.progress("a", "a1").state == "unknown" and slots.queued == 1
        holder.cancel()
        await settle()
        assert order == ["a0", "b0"] and slots.active == 1  # b0 got the freed slot
        release.set()
        await after
        assert (slots.active, slots.queued) == (0, 0)
        for task in (holder, waiter):
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(scenario())


@pytest.mark.parametrize(("total", "per_fleet"), [(4, 0), (4, 5), (0, 0)])
def test_shares_must_fit(total: int, per_fleet: int) -> None:
    with pytest.raises(ValueError, match="per_fleet"):
        FairSlots(total, per_fleet)


# ---- the service, against a real server -----------------------------------------------------

SLOW = b"s" * 40_000  # served at 10 kB/s: 4 s
SMALL = b"small release " * 300  # 4.2 kB, at once


def slow_server(directory: Path) -> HttpsServer:
    async def slow(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = len(SLOW)
        await response.prepare(request)
        try:
            for start in range(0, len(SLOW), 1000):
                await response.write(SLOW[start:start + 1000])
                await asyncio.sleep(0.1)
        except (ConnectionError, asyncio.CancelledError):
            pass
        return response

    async def small(_: web.Request) -> web.StreamResponse:
        return web.Response(body=SMALL)

    server = HttpsServer(directory, {"/slow/{n}": slow, "/small": small})
    server.start()
    return server


def release_request(fleet: Fleet, fleet_name: str, name: str, url: str,
                    data: bytes) -> ReleaseRequest:
    fleet.name = fleet_name
    app = generate(Algorithm.ED25519)
    release = fleet.release([app], data=data, url=url)
    return ReleaseRequest.model_validate({
        "fleet": fleet_name, "name": name, "release": release,
        "keys": [fleet.entry(app, "application")], "floor": 5, "now": NOW})


def test_slow_releases_of_one_fleet_do_not_starve_another(tmp_path: Path) -> None:
    """Six releases of fleet A on a slow server, four slots in all: fleet B's small release is
    verified within a couple of seconds, and meanwhile A's downloads report where they stand."""
    server = slow_server(tmp_path / "tls")
    try:
        fleet = Fleet(tmp_path)
        settings = fleet.settings(caFile=str(server.ca), allowedNetworks=["127.0.0.1/32"],
                                  maxConcurrentFetches=4, minBytesPerSecond=0)
        assert settings.config.fetches_per_fleet == 2  # the default: half
        service = VerifierService(settings.roots, settings.policy,
                                  Fetcher(settings.url_policy, settings.limits, server.ca),
                                  Metrics(), 4, None, settings.config.fetches_per_fleet)
        slow = [release_request(fleet, "fleet-a", f"a{i}", server.url(f"/slow/{i}"), SLOW)
                for i in range(6)]
        small = release_request(fleet, "fleet-b", "b0", server.url("/small"), SMALL)

        async def scenario() -> tuple[ReleaseVerdict, float, dict[str, DownloadProgress]]:
            tasks = [asyncio.create_task(service.verify_release(r)) for r in slow]
            while service.slots.queued < 4:  # a0, a1 downloading, a2..a5 waiting
                await asyncio.sleep(0.05)
            started = time.monotonic()
            verdict = await asyncio.wait_for(service.verify_release(small), 10)
            seconds = time.monotonic() - started
            where = {name: service.progress("fleet-a", name) for name in ("a0", "a3", "a5")}
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            return verdict, seconds, where

        verdict, seconds, where = asyncio.run(scenario())
    finally:
        server.stop()
    assert verdict.verdict == "accepted", verdict.message
    assert verdict.sha256 == hashlib.sha256(SMALL).hexdigest()
    assert seconds < 2.5, f"fleet B waited {seconds:.1f}s behind fleet A"
    assert where["a0"].state == "fetching" and where["a0"].bytes > 0
    assert where["a0"].fleet_active == 2 and where["a0"].active == 2
    assert (where["a3"].state, where["a3"].ahead) == ("queued", 1)
    assert (where["a5"].state, where["a5"].ahead) == ("queued", 3)

