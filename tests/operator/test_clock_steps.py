"""A wall-clock step (NTP, a resumed VM) re-evaluates every fleet's keys at once.

Found by the chaos loop (hack/chaos, fault clock-jump): after the operators' clock jumped two
hours ahead, a key whose notAfter had passed stayed Active, and stayed in the trust bundle, until
the keys' timer fired: it had been set, on the monotonic clock, for the expiry as seen before the
jump (up to an hour, keys.RECHECK_SECONDS, later)."""
from __future__ import annotations

import asyncio
from typing import Any

from flashgate.kube.runtime import ClockSteps
from flashgate.operator.channels import ChannelGuard
from flashgate.operator.main import Operator, parse_args
from flashgate.trust.vocabulary import format_time

from .fakes import NOW, World
from .test_keys_and_channels import status


def test_a_step_is_told_apart_from_drift() -> None:
    wall, monotonic = [1000.0], [50.0]
    steps = ClockSteps(lambda: wall[0], lambda: monotonic[0], threshold=2.0)
    wall[0], monotonic[0] = 1001.0, 51.0
    assert steps.step() == 0.0
    for _ in range(10):  # 0.5 s of drift per look: never one step
        wall[0] += 1.5
        monotonic[0] += 1.0
        assert steps.step() == 0.0
    wall[0] += 7200
    assert steps.step() == 7200
    wall[0] -= 30
    assert steps.step() == -30
    assert steps.step() == 0.0


def operator_for(world: World) -> Operator:
    cfg, _ = parse_args(["-n", world.fleet])
    kube: Any = None  # the clock watch reads no API
    return Operator(cfg=cfg, kube=kube, view=world.view, gate=world.gate, keeper=world.keeper,
                    guard=ChannelGuard(store=world.store, metrics=world.metrics),
                    metrics=world.metrics)


def test_a_clock_step_queues_every_fleet_for_its_keys() -> None:
    world = World()
    world.add_key("short", notAfter=format_time(NOW + 3600))
    delay = asyncio.run(world.keys())
    assert status(world, "SigningKey", "short")["phase"] == "Active"
    assert delay == 3600, "its expiry is an hour away: that is when the keys are looked at"

    async def jump() -> bool:
        operator = operator_for(world)
        follower = asyncio.create_task(operator._follow_clock_steps(every=0.01))
        await asyncio.sleep(0.05)
        assert len(operator.fleets) == 0
        world.clock[0] += 7200
        await asyncio.sleep(0.05)
        follower.cancel()
        queued = await operator.fleets.get() == world.fleet
        await operator.evaluate_keys(world.fleet)
        return queued

    assert asyncio.run(jump())
    world.sync()
    assert status(world, "SigningKey", "short")["phase"] == "Expired"
