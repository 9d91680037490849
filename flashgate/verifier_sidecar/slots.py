"""Download slots shared fairly between fleets, and where each waiting release stands.

All fleets share `maxConcurrentFetches` slots. Without care, one fleet's releases pointing at a
slow server take every slot and another fleet's small release waits behind them (issue #7: over
200 s). So:
- a fleet runs at most `per_fleet` downloads at once (`maxConcurrentFetchesPerFleet`);
- a free slot goes to the next fleet in turn (round robin over the fleets that wait), and within
  a fleet to its oldest waiting download.
`progress(fleet, name)` says where a release's download stands: queued (and how many downloads
of its fleet are ahead of it), fetching (and how many bytes so far), or unknown.

No I/O: asyncio futures only. One event loop; not thread-safe, except `Download.received`, which
a fetch running in a thread may add to.
"""
from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Literal


def default_share(total: int) -> int:
    """Downloads one fleet may run at once when the configuration does not say: half of all
    slots, at least 1 (so two fleets can always run side by side)."""
    return max(1, total // 2)


@dataclass(eq=False)
class Download:
    """One release's download: waiting for a slot, then running. `received` counts the bytes
    read so far (the fetcher adds to it)."""

    fleet: str
    name: str
    granted: asyncio.Future[None] = field(repr=False)
    received: int = 0

    @property
    def running(self) -> bool:
        return self.granted.done() and not self.granted.cancelled()

    def add(self, count: int) -> None:
        """Bytes read; called by the fetcher as they arrive."""
        self.received += count


@dataclass(frozen=True)
class DownloadProgress:
    """Where one release's download stands.

    Attributes:
        state: "queued" (waiting for a slot), "fetching", or "unknown" (no download of that
            release now: not there yet, already done, or never).
        ahead: Downloads of the same fleet queued before it (0 unless queued).
        active: Downloads running now, all fleets.
        fleet_active: Downloads of the same fleet running now.
        bytes: Bytes read so far (fetching only).
    """

    state: Literal["queued", "fetching", "unknown"]
    ahead: int = 0
    active: int = 0
    fleet_active: int = 0
    bytes: int = 0


class FairSlots:
    """`total` download slots, at most `per_fleet` of them for one fleet, granted round robin.

    Args:
        total: downloads at once, all fleets (>= 1).
        per_fleet: downloads at once for one fleet (1 <= per_fleet <= total).
    """

    def __init__(self, total: int, per_fleet: int) -> None:
        if not 1 <= per_fleet <= total:
            raise ValueError(f"per_fleet must be between 1 and total ({total}), got {per_fleet}")
        self.total = total
        self.per_fleet = per_fleet
        self._queues: dict[str, deque[Download]] = {}
        self._turns: deque[str] = deque()  # fleets with queued downloads, next turn first
        self._running: dict[str, int] = {}
        self._by_release: dict[tuple[str, str], Download] = {}

    @property
    def active(self) -> int:
        return sum(self._running.values())

    @property
    def queued(self) -> int:
        return sum(len(q) for q in self._queues.values())

    @asynccontextmanager
    async def download(self, fleet: str, name: str) -> AsyncIterator[Download]:
        """Wait for a slot (fairly), hold it for the body of the `with`, then give it back."""
        loop = asyncio.get_running_loop()
        entry = Download(fleet, name, loop.create_future())
        key = (fleet, name)
        self._by_release[key] = entry
        self._queues.setdefault(fleet, deque()).append(entry)
        if fleet not in self._turns:
            self._turns.append(fleet)
        self._grant()
        try:
            try:
                await entry.granted
            except asyncio.CancelledError:
                if entry.running:  # granted just as the waiter was cancelled: give it back
                    self._finish(entry)
                else:
                    self._unqueue(entry)
                raise
            try:
                yield entry
            finally:
                self._finish(entry)
        finally:
            if self._by_release.get(key) is entry:
                del self._by_release[key]

    def progress(self, fleet: str, name: str) -> DownloadProgress:
        """Where the download of release `name` of `fleet` stands now."""
        active, fleet_active = self.active, self._running.get(fleet, 0)
        entry = self._by_release.get((fleet, name))
        if entry is None:
            return DownloadProgress("unknown", active=active, fleet_active=fleet_active)
        if entry.running:
            return DownloadProgress("fetching", active=active, fleet_active=fleet_active,
                            bytes=entry.received)
        queue = self._queues.get(fleet, deque())
        ahead = next((i for i, queued in enumerate(queue) if queued is entry), 0)
        return DownloadProgress("queued", ahead=ahead, active=active, fleet_active=fleet_active)

    def _grant(self) -> None:
        """Give free slots to waiting downloads, one fleet's turn after another."""
        while self.active < self.total and self._turns:
            for _ in range(len(self._turns)):
                fleet = self._turns[0]
                self._turns.rotate(-1)  # its turn is taken (or skipped): next fleet first
                if self._running.get(fleet, 0) < self.per_fleet:
                    break
            else:
                return  # every waiting fleet is at its cap
            queue = self._queues[fleet]
            entry = queue.popleft()
            if not queue:
                del self._queues[fleet]
                self._turns.remove(fleet)
            self._running[fleet] = self._running.get(fleet, 0) + 1
            entry.granted.set_result(None)

    def _unqueue(self, entry: Download) -> None:
        queue = self._queues.get(entry.fleet)
        if queue is None or entry not in queue:
            return
        queue.remove(entry)
        if not queue:
            del self._queues[entry.fleet]
            self._turns.remove(entry.fleet)

    def _finish(self, entry: Download) -> None:
        running = self._running[entry.fleet] - 1
        if running:
            self._running[entry.fleet] = running
        else:
            del self._running[entry.fleet]
        self._grant()
