"""No interleaving of "revoke" and "publish" ends with a revoked key's release in a channel.

A release is being published while its key is revoked. The two run as concurrent tasks on the
in-memory store, and a deterministic scheduler lets exactly one of them proceed at each store
operation that matters for the race (reads and writes of floors, channels, the RevocationList and
the release's status, and the user's revocation itself; other operations run at once, with
the point before them). Every schedule is explored (stateless
model checking, as CHESS does it): each run records how many tasks were ready at each step, and
every untaken choice becomes a new run. At the end of every schedule: no channel holds the
release, the release is not Published, and its ledger entry, if any, is withdrawn.
"""
from __future__ import annotations

import asyncio
import contextvars
import functools
import itertools
import json
from collections.abc import Coroutine
from typing import Any

from .fakes import World, copy_of

MATTERS = ("update floor", "update channel", "get revocations", "update revocations",
           "list floors", "write FirmwareRelease status", "user revokes", "publish starts")

_task: contextvars.ContextVar[str] = contextvars.ContextVar("task")


class Scheduler:
    """Runs tasks one point at a time, choosing among the ready ones by `choices` (then 0)."""

    def __init__(self, choices: list[int]) -> None:
        self.choices = choices
        self.ready_counts: list[int] = []
        self.waiting: dict[str, asyncio.Future[None]] = {}

    async def point(self, name: str) -> None:
        if not name.startswith(MATTERS):
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting[_task.get()] = future
        await future

    async def run(self, coroutines: dict[str, Coroutine[Any, Any, Any]]) -> None:
        async def as_task(name: str, coroutine: Coroutine[Any, Any, Any]) -> None:
            _task.set(name)
            await coroutine

        tasks = {name: asyncio.create_task(as_task(name, c)) for name, c in coroutines.items()}
        while True:
            for _ in range(10_000):  # let every task run up to its next point, or finish
                live = [n for n, t in tasks.items() if not t.done()]
                if all(n in self.waiting for n in live):
                    break
                await asyncio.sleep(0)
            else:
                raise AssertionError(f"a task is stuck outside the scheduler: {self.waiting}")
            for task in tasks.values():
                if task.done() and task.exception():
                    raise task.exception()  # type: ignore[misc]
            ready = sorted(self.waiting)
            if not ready:
                return
            step = len(self.ready_counts)
            choice = self.choices[step] if step < len(self.choices) else 0
            self.ready_counts.append(len(ready))
            self.waiting.pop(ready[choice]).set_result(None)


@functools.cache
def _start() -> World:
    """The state every schedule starts from: the key Active, the fleet's RevocationList made,
    the release created."""
    world = World()
    app = world.add_key("app")
    asyncio.run(world.keys())
    world.add_release("v1", [app], security_version=2)
    return world


def race(choices: list[int]) -> tuple[World, list[int]]:
    start = _start()
    world = World(verifier=start.verifier)
    world.store.objects = {key: copy_of(obj) for key, obj in start.store.objects.items()}
    world.store.versions = itertools.count(1000)
    world.keeper.verdicts = dict(start.keeper.verdicts)
    world.view.endorsed = dict(start.view.endorsed)
    world.sync()
    scheduler = Scheduler(choices)
    world.store.point = scheduler.point

    async def publish() -> None:
        await scheduler.point("publish starts")  # the release's event reaches a worker
        await world.gate.reconcile(world.fleet, "v1")

    async def revoke() -> None:
        await scheduler.point("user revokes")
        world.revoke("app")  # the user's patch, and the watch bringing it to the operator
        await world.keeper.reconcile(world.fleet)

    asyncio.run(scheduler.run({"publish": publish(), "revoke": revoke()}))
    return world, scheduler.ready_counts


def test_no_interleaving_of_revoke_and_publish_leaves_the_release_in_a_channel() -> None:
    pending: list[list[int]] = [[]]
    runs, outcomes = 0, set()
    while pending:
        prefix = pending.pop()
        world, counts = race(prefix)
        runs += 1
        choices = prefix + [0] * (len(counts) - len(prefix))
        for step in range(len(prefix), len(counts)):
            pending.extend([*choices[:step], alt] for alt in range(1, counts[step]))
        # The invariants, whatever the order:
        where = world.store.channel(world.fleet)
        assert all(json.loads(doc).get("release") != "v1" for doc in where.values()), \
            f"schedule {choices}: the revoked key's release is in the channel"
        phase = world.store.phase(world.fleet, "v1")
        assert phase in ("Rejected", "Withdrawn"), f"schedule {choices}: release is {phase}"
        floor = world.store.get("RollbackFloor", world.fleet, "gw.application")
        for entry in (floor or {}).get("status", {}).get("publications", []):
            assert entry.get("withdrawnAt"), f"schedule {choices}: ledger entry not withdrawn"
        outcomes.add(phase)
    assert runs > 100, f"only {runs} schedules explored"
    assert outcomes == {"Rejected", "Withdrawn"}, "both endings are reachable"
