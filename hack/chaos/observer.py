"""What the invariant checker needs, collected: every change of the watched objects, and the
operators' metrics. The I/O half of the checker (hack/chaos/invariants.py is the pure half).

`Observer` lists and watches, with the admin's credentials and straight at the API server (never
through the fault-injecting proxy the operators use), the RollbackFloors, the channel and
trust-bundle ConfigMaps, the FirmwareReleases, SigningKeys, RevocationLists and Events of every
namespace, and records each version of an object in a fleet under test with the wall time it
arrived (`invariants.History`). It reuses the operator's own list-then-watch stream
(`flashgate.kube.runtime.Watch`), retrying every quarter second while the API server is down
so that the history catches up as soon as it is back. A listing after the first (the watch's
resourceVersion had expired) is counted: versions in between may be missing.

`scrape_publications` reads one operator's publications metric per fleet; `ask_delivery` what the
delivery service serves, as a device of each fleet.
"""
from __future__ import annotations

import asyncio
import dataclasses
import http.client
import json
import ssl
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from chaos.invariants import (
    CHANNEL,
    EVENT,
    FLOOR,
    KEY,
    RELEASE,
    REVOCATIONS,
    DeliveryView,
    Fault,
    History,
    Observation,
)
from flashgate.api.published import PUBLISHED_SELECTOR
from flashgate.kube.client import CONFIGMAPS, JSON, Kube, Resource
from flashgate.kube.runtime import SYNC, Watch, object_key
from flashgate.operator.store import (
    EVENTS,
    FIRMWARE_RELEASES,
    REVOCATION_LISTS,
    ROLLBACK_FLOORS,
    SIGNING_KEYS,
)

WATCHED: tuple[tuple[str, Resource, str | None], ...] = (
    (FLOOR, ROLLBACK_FLOORS, None), (CHANNEL, CONFIGMAPS, PUBLISHED_SELECTOR),
    (RELEASE, FIRMWARE_RELEASES, None), (KEY, SIGNING_KEYS, None),
    (REVOCATIONS, REVOCATION_LISTS, None), (EVENT, EVENTS, None))


class Observer:
    """Records into `history` every version of the watched objects in `fleets` (a set the
    caller may add to while it runs)."""

    def __init__(self, kubeconfig: Path, fleets: set[str], history: History) -> None:
        self.kube = Kube.from_environment(str(kubeconfig))
        self.fleets, self.history = fleets, history
        self.watches = [Watch(self.kube, resource, None, self._recorder(kind, index),
                              label_selector=selector, first_delay=0.25, max_delay=0.25)
                        for index, (kind, resource, selector) in enumerate(WATCHED)]
        self._tasks: list[asyncio.Task[None]] = []

    def _recorder(self, kind: str, index: int) -> Callable[[str, JSON], None]:
        def record(event: str, obj: JSON) -> None:
            namespace, name = object_key(obj)
            if event == SYNC and self.watches[index].synced.is_set():
                self.history.relists += 1
            if namespace not in self.fleets:
                return
            rv = str((obj.get("metadata") or {}).get("resourceVersion") or "0")
            self.history.add(Observation(time.time(), kind, event, namespace, name,
                                         int(rv) if rv.isdigit() else 0, obj))
        return record

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(w.run(), name=f"observe {w.resource.plural}")
                       for w in self.watches]
        await asyncio.gather(*(w.synced.wait() for w in self.watches))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.kube.close()


def scrape_publications(metrics_port: int, timeout: float = 5.0) -> dict[str, float]:
    """flashgate_release_publications_total of the operator serving metrics on that port, per
    fleet (all tiers). Raises OSError when it does not answer."""
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=timeout) as response:
        text = response.read().decode()
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "flashgate_release_publications":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                fleet = sample.labels["namespace"]
                counts[fleet] = counts.get(fleet, 0.0) + sample.value
    return counts


def ask_delivery(port: int, server_ca: Path, devices: Mapping[str, tuple[Path, Path]],
                 channels: Mapping[str, Iterable[tuple[str, str]]],
                 timeout: float = 5.0) -> DeliveryView:
    """What the delivery service serves now: each fleet's trust bundle and the jobs of each of
    its channels (product, channel), asked by a device of the fleet (its certificate: `devices`).
    Raises OSError when the service does not answer."""
    view = DeliveryView()

    def get(context: ssl.SSLContext, path: str) -> tuple[int, bytes]:
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=timeout)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    for fleet, (crt, key) in devices.items():
        context = ssl.create_default_context(cafile=str(server_ca))
        context.load_cert_chain(str(crt), str(key))
        status, body = get(context, f"/v1/fleets/{fleet}/trust-bundle")
        view.bundles[fleet] = body.decode() if status == 200 else None
        for product, channel in channels.get(fleet, ()):
            status, body = get(context, f"/v1/fleets/{fleet}/channels/{product}/{channel}")
            view.channels[(fleet, product, channel)] = \
                json.loads(body).get("jobs") or {} if status == 200 else {}
    return view


def save_history(history: History, path: Path) -> None:
    """The history as JSON lines (every observation, fault and clock offset), to check again
    offline with `load_history` (hack/chaos/loop.py keeps it when an invariant broke)."""
    with path.open("w") as out:
        for versions in history.versions.values():
            for version in versions:
                out.write(json.dumps({"observation": dataclasses.asdict(version)}) + "\n")
        for fault in history.faults:
            out.write(json.dumps({"fault": dataclasses.asdict(fault)}) + "\n")
        for seen, offset in history.offsets:
            out.write(json.dumps({"offset": [seen, offset]}) + "\n")


def load_history(path: Path) -> History:
    history = History()
    for line in path.read_text().splitlines():
        item = json.loads(line)
        if "observation" in item:
            history.add(Observation(**item["observation"]))
        elif "fault" in item:
            history.faults.append(Fault(**item["fault"]))
        else:
            history.set_offset(*item["offset"])
    return history

