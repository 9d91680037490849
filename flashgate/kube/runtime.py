"""A small controller runtime: list-then-watch streams and work queues, as controller-runtime has
them (the operator uses both; the delivery service watches what the operator publishes).

Why not a framework's per-object machinery: a fleet holds tens of thousands of FirmwareReleases,
almost all of them long decided. The operator must start, see which ones still need a decision,
and get to work in seconds, with memory that does not grow with every object it has ever seen.
So a `Watch` hands each object to a function that keeps what it needs (usually a few fields, or
nothing) and a `WorkQueue` holds only the keys of objects that need work: a key is in it once
however often it is added, is never handled by two workers at once, and a failed key comes back
after an exponential backoff. No decision is kept in annotations: whatever needs deciding is
decided from the object's spec, generation and status (and the operator's own records).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from flashgate.kube.client import JSON, ApiError, Kube, Resource

log = logging.getLogger("flashgate.kube")

K = TypeVar("K", bound=Hashable)
EventHandler = Callable[[str, JSON], None]

SYNC = "SYNC"  # an object seen in a (re)list; handlers treat it as ADDED or MODIFIED


def object_key(obj: JSON) -> tuple[str, str]:
    metadata = obj.get("metadata") or {}
    return str(metadata.get("namespace") or ""), str(metadata.get("name") or "")


class Watch:
    """Lists one resource (in one namespace, or all) and then watches it, for ever.

    Every object of the list is handed to `handler(SYNC, obj)`, every later change as ADDED,
    MODIFIED or DELETED. After a relist (the watch expired: 410 Gone), objects that were known
    but are not in the new list are handed over as DELETED, so a handler's view never keeps an
    object that is gone. `synced` is set once the first list has been handed over completely.
    Errors (API server down, connection reset) are logged and retried with backoff, from
    `first_delay` seconds doubling up to `max_delay`.
    """

    def __init__(self, kube: Kube, resource: Resource, namespace: str | None,
                 handler: EventHandler, *, label_selector: str | None = None,
                 first_delay: float = 1.0, max_delay: float = 30.0) -> None:
        self.kube, self.resource, self.namespace = kube, resource, namespace
        self.handler, self.label_selector = handler, label_selector
        self.first_delay, self.max_delay = first_delay, max_delay
        self.synced = asyncio.Event()
        self._known: set[tuple[str, str]] = set()

    def _hand(self, event: str, obj: JSON) -> None:
        key = object_key(obj)
        if event == "DELETED":
            self._known.discard(key)
        else:
            self._known.add(key)
        try:
            self.handler(event, obj)
        except Exception:  # one bad object must never stop the stream for its neighbours
            log.exception("%s %s/%s: handling %s failed", self.resource.kind, *key, event)

    async def _list(self) -> str:
        seen: set[tuple[str, str]] = set()
        version = ""
        async for page in self.kube.list_pages(self.resource, self.namespace,
                                               label_selector=self.label_selector):
            for obj in page.get("items") or ():
                obj.setdefault("apiVersion", self.resource.api_version)
                obj.setdefault("kind", self.resource.kind)
                seen.add(object_key(obj))
                self._hand(SYNC, obj)
            version = str((page.get("metadata") or {}).get("resourceVersion") or "")
        for namespace, name in self._known - seen:
            self._hand("DELETED", {"metadata": {"namespace": namespace, "name": name}})
        return version

    async def run(self) -> None:
        delay, version = self.first_delay, ""
        while True:
            try:
                if not version:
                    version = await self._list()
                    self.synced.set()
                async for event, obj in self.kube.watch(self.resource, self.namespace, version,
                                                        label_selector=self.label_selector):
                    version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                    if event != "BOOKMARK":
                        self._hand(event, obj)
                delay = self.first_delay
            except ApiError as exc:
                if exc.gone:
                    version = ""  # too old: list again
                    continue
                where = self.namespace or "all namespaces"
                log.warning("watching %s in %s: %s; retrying in %.0fs", self.resource.plural,
                            where, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_delay)


class WorkQueue(Generic[K]):
    """Keys of objects that need work (see the module docstring).

    `add(key)` queues a key at once, `add(key, after=s)` in s seconds (the earliest wins);
    a key added while a worker has it is queued again when that worker is `done`.
    """

    def __init__(self, name: str, *, base_delay: float = 0.5, max_delay: float = 60.0) -> None:
        self.name = name
        self._ready: asyncio.Queue[K] = asyncio.Queue()
        self._queued: set[K] = set()
        self._active: set[K] = set()
        self._again: set[K] = set()
        self._timers: dict[K, tuple[float, asyncio.TimerHandle]] = {}
        self._failures: dict[K, int] = {}
        self.base_delay, self.max_delay = base_delay, max_delay

    def __len__(self) -> int:
        return len(self._queued)

    @property
    def active(self) -> int:
        return len(self._active)

    def add(self, key: K, after: float = 0.0) -> None:
        if after > 0:
            due = time.monotonic() + after
            timer = self._timers.get(key)
            if timer is not None and timer[0] <= due:
                return
            if timer is not None:
                timer[1].cancel()
            handle = asyncio.get_running_loop().call_later(after, self._fire, key)
            self._timers[key] = (due, handle)
            return
        if key in self._active:
            self._again.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._ready.put_nowait(key)

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self.add(key)

    async def get(self) -> K:
        key = await self._ready.get()
        self._queued.discard(key)
        self._active.add(key)
        return key

    def done(self, key: K) -> None:
        self._active.discard(key)
        if key in self._again:
            self._again.discard(key)
            self.add(key)

    def retry_delay(self, key: K) -> float:
        """The next backoff of a key that failed: base, 2x base, ... up to max_delay."""
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        return float(min(self.base_delay * 2 ** failures, self.max_delay))

    def forget(self, key: K) -> None:
        """The key succeeded: its next failure starts the backoff afresh."""
        self._failures.pop(key, None)


Process = Callable[[K], Awaitable[float | None]]


async def run_workers(queue: WorkQueue[K], process: Process[K], workers: int) -> None:
    """`workers` tasks taking keys from `queue`. `process(key)` returns None when the key is done,
    or seconds after which to look again (a time-driven change, a retry the process chose);
    an exception is logged and the key retried with backoff."""

    async def worker() -> None:
        while True:
            key = await queue.get()
            try:
                again = await process(key)
            except asyncio.CancelledError:
                raise
            except Exception:
                delay = queue.retry_delay(key)
                log.exception("%s %s failed; retrying in %.1fs", queue.name, key, delay)
                queue.done(key)
                queue.add(key, after=delay)
                continue
            queue.done(key)
            if again is None:
                queue.forget(key)
            else:
                queue.add(key, after=again)

    await asyncio.gather(*(worker() for _ in range(workers)))


class ClockSteps:
    """Notices a step of a wall clock against the monotonic one (an NTP step, a virtual machine
    resumed after a pause, a test's clock offset).

    A time-driven change (a key's activation, the end of an overlap, an expiry) is due at a
    wall-clock instant, but a work queue waits for it on the monotonic clock: after a step the
    wait is off by the step, by up to an hour (keys.RECHECK_SECONDS). `step()` returns the step
    since its last call when it is larger than `threshold` seconds (0.0 otherwise); slow drift
    between calls (NTP slewing) never adds up to one.
    """

    def __init__(self, wall: Callable[[], float],
                 monotonic: Callable[[], float] = time.monotonic,
                 threshold: float = 2.0) -> None:
        self.wall, self.monotonic, self.threshold = wall, monotonic, threshold
        self._skew = wall() - monotonic()

    def step(self) -> float:
        skew = self.wall() - self.monotonic()
        step, self._skew = skew - self._skew, skew
        return step if abs(step) > self.threshold else 0.0

