"""The chaos loop: mixed batches, a fault at a random moment of each, convergence, the checker.

    make chaos                                   # a short run (ARGS="--iterations 100" for more)
    PYTHONPATH=hack .venv/bin/python -m chaos --iterations 100 --seed 7

Each iteration takes the next fault kind (every kind in turn, in an order shuffled per round),
builds a mixed batch (hack/chaos/world.py) and applies it with random pauses, injects the fault
before a random action of the batch, heals it after a random while, applies what the fault kept
from being applied, waits until the world has converged (`invariants.differences` is empty) and
runs every invariant over the whole history observed so far (`invariants.check_history`). A
world that has not converged within --converge-timeout seconds is a violation too.

The faults (`FAULTS`): SIGKILL and restart of the operator, the sidecar, kube-apiserver, etcd,
the S3 server or the delivery service; the API server slow, or answering 500/503, or 429, for a
while (the proxy); the operators' clock jumping ahead or back; a second operator replica that dies
right after a channel write (FLASHGATE_FAILPOINTS=after-channel-write), racing the first; a
revocation of a key whose release is being verified. Convergence includes the delivery service
serving, to a device of each fleet, what was published (`invariants.delivery_differences`).

Output: iterations, faults injected by kind, what the batches held and what became of it,
invariant violations (must be 0), time to converge after the fault healed (p50, p99, max).
Exit status 1 when there was a violation; the work directory (logs of every process) is kept.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import http.client
import json
import logging
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaos.invariants import (
    CHANNEL,
    FLOOR,
    RELEASE,
    Fault,
    History,
    Scrape,
    Trust,
    Violation,
    check_history,
    delivery_differences,
    differences,
    publications,
    revocations_observed,
)
from chaos.observer import Observer, ask_delivery, save_history, scrape_publications
from chaos.system import BUCKET, System
from chaos.world import Action, FleetModel, World
from flashgate.kube.client import ApiError, Kube
from flashgate.operator.store import FIRMWARE_RELEASES, SIGNING_KEYS

log = logging.getLogger("chaos")

KILLABLE = {"operator-kill": "operator", "sidecar-kill": "sidecar",
            "kube-apiserver-kill": "kube-apiserver", "etcd-kill": "etcd", "s3-kill": "s3",
            "delivery-kill": "delivery"}
Heal = Callable[[], Coroutine[Any, Any, None]]
"""What ends a fault, after the fault's own duration."""
FAULTS = (*KILLABLE, "api-slow", "api-errors", "api-throttle", "clock-jump",
          "replica-killed-mid-publish", "revoke-in-flight")


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass
class Report:
    seed: int
    iterations: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    actions: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    notes: Counter[str] = field(default_factory=Counter)
    violations: list[Violation] = field(default_factory=list)
    converge: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def text(self) -> str:
        lines = [
            f"chaos: {self.iterations} iterations in {self.seconds:.0f}s (seed {self.seed})",
            "faults injected: " + _counts(self.faults),
            "actions applied: " + _counts(self.actions),
            "refused at admission: " + (_counts(self.refused) or "none"),
            "releases at the end: " + _counts(self.outcomes),
            "also: " + (_counts(self.notes) or "nothing"),
            f"time to converge after healing: p50 {percentile(self.converge, 0.5):.1f}s, "
            f"p99 {percentile(self.converge, 0.99):.1f}s, max "
            f"{max(self.converge, default=float('nan')):.1f}s",
            f"invariant violations: {len(self.violations)}",
            *(f"  {v}" for v in self.violations),
        ]
        return "\n".join(lines)

    def to_json(self) -> dict[str, object]:
        return {"seed": self.seed, "iterations": self.iterations, "faults": dict(self.faults),
                "actions": dict(self.actions), "refused": dict(self.refused),
                "outcomes": dict(self.outcomes), "notes": dict(self.notes),
                "violations": [str(v) for v in self.violations],
                "converge_p50": percentile(self.converge, 0.5),
                "converge_p99": percentile(self.converge, 0.99),
                "converge_max": max(self.converge, default=None), "seconds": self.seconds}


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counter.items()))


@dataclass
class Chaos:
    system: System
    world: World
    history: History
    kube: Kube
    rng: random.Random
    report: Report
    batch_size: int = 8
    converge_timeout: float = 120.0
    served: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    scrapes: dict[str, Scrape] = field(default_factory=dict)
    pending: list[Action] = field(default_factory=list)
    created: set[tuple[str, str, str]] = field(default_factory=set)  # (kind, fleet, name)

    def __post_init__(self) -> None:
        self.setting = self.system.setting(self.served)  # `served` fills in as the loop serves
        self.trust = Trust(self.setting)

    @property
    def fleets(self) -> list[str]:
        return [f.name for f in self.world.fleets]

    # ---- applying actions ---------------------------------------------------------------------

    def _serve(self, action: Action) -> None:
        upload = action.upload
        assert upload is not None
        if upload.scheme == "s3":
            assert self.system.s3 is not None
            bucket, key = upload.path.split("/", 1)
            self.system.s3.put_object(bucket, key, upload.data)
        else:
            path = self.system.primary.artifacts / upload.path
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(upload.data)
        self.served[upload.url] = (len(upload.data), hashlib.sha256(upload.data).digest())

    async def apply(self, action: Action) -> None:
        """Apply one action; one a fault keeps from being applied waits in `pending`."""
        try:
            if action.upload is not None and action.upload.url not in self.served:
                await asyncio.to_thread(self._serve, action)
            resource = FIRMWARE_RELEASES if action.kind == "FirmwareRelease" else SIGNING_KEYS
            if action.body is not None:
                await self.kube.create(resource, action.fleet, action.body)
                self.created.add((action.kind, action.fleet, action.name))
            else:
                await self.kube.patch(resource, action.fleet, action.name, action.patch)
        except ApiError as error:
            if error.conflict and action.body is not None:
                self.report.actions[action.label] += 1  # a retried create had gone through
                self.created.add((action.kind, action.fleet, action.name))
            elif error.status in (0, 429) or error.status >= 500 or error.not_found:
                self.pending.append(action)  # the API server or the webhook is down
            else:
                self.report.refused[action.label] += 1
            return
        except (OSError, RuntimeError):  # the S3 server is down
            self.pending.append(action)
            return
        self.report.actions[action.label] += 1

    async def apply_pending(self, deadline: float) -> None:
        while self.pending and time.monotonic() < deadline:
            waiting, self.pending = self.pending, []
            for action in waiting:
                await self.apply(action)
            if self.pending:
                await asyncio.sleep(0.5)
        for action in self.pending:
            self.report.notes[f"never applied ({action.label})"] += 1
        self.pending = []

    # ---- faults -------------------------------------------------------------------------------

    def scrape(self, final: bool) -> None:
        """Read the publications metric of every running operator."""
        for gate in self.system.operators():
            instance = self.system.instances[gate.metrics_port]
            try:
                counts = scrape_publications(gate.metrics_port)
            except OSError:
                continue
            self.scrapes[instance] = Scrape(instance, counts, final)

    async def inject(self, kind: str, batch: list[Action]) -> Heal:
        """Inject a fault; returns what heals it (after the fault's own duration)."""
        rng, system = self.rng, self.system
        if kind in KILLABLE:
            component = KILLABLE[kind]
            if component == "operator":
                self.scrape(final=False)
            await asyncio.to_thread(system.kill, component)
            down = rng.uniform(0.5, 5.0)

            async def restart() -> None:
                await asyncio.sleep(down)
                await asyncio.to_thread(system.start_component, component)
            return restart
        if kind in ("api-slow", "api-errors", "api-throttle"):
            if kind == "api-slow":
                system.proxy.slow(rng.uniform(0.3, 1.5))
            else:
                status = 429 if kind == "api-throttle" else rng.choice((500, 503))
                system.proxy.failing(status, rng.uniform(0.3, 1.0))
            lasting = rng.uniform(2.0, 8.0)

            async def heal_proxy() -> None:
                await asyncio.sleep(lasting)
                system.proxy.heal()
            return heal_proxy
        if kind == "clock-jump":
            # Mostly ahead (key transitions come due at once), one in three back (an NTP step
            # back: phases may revert, an expired key may be valid again for a while).
            back = rng.random() < 1 / 3
            offset = system.offset + (-rng.uniform(20, 3600) if back
                                      else rng.uniform(20, 2 * 3600))
            self.report.notes["clock jumped back" if back else "clock jumped ahead"] += 1
            system.set_offset(offset)
            self.history.set_offset(time.time(), offset)
            return _nothing
        if kind == "replica-killed-mid-publish":
            return await self._replica_racing()
        if kind == "revoke-in-flight":
            fleet = rng.choice(self.world.fleets)
            for action in self.world.revoke_in_flight(fleet, batch, system.operator_now(), rng):
                await self.apply(action)
            return _nothing
        raise ValueError(f"unknown fault {kind!r} (one of {', '.join(FAULTS)})")

    async def _replica_racing(self) -> Heal:
        replica = self.system.replica
        # It may die before it serves /healthz: mid-publish already.
        with contextlib.suppress(RuntimeError):
            await asyncio.to_thread(self.system.start_operator, replica,
                                    ["after-channel-write"])
        lasting = self.rng.uniform(3.0, 8.0)

        async def stop_replica() -> None:
            await asyncio.sleep(lasting)
            if replica.operator is not None and replica.operator.poll() is not None:
                self.report.notes["replica killed mid-publish"] += 1
            else:
                self.report.notes["replica never reached a channel write"] += 1
                self.scrape(final=False)
                await asyncio.to_thread(replica.stop_operator)
        return stop_replica

    # ---- an iteration ---------------------------------------------------------------------------

    def floor_of(self, fleet: str, product: str, tier: str) -> int | None:
        floor = self.history.latest(FLOOR, fleet, f"{product}.{tier}")
        return int(floor["spec"]["securityVersion"]) if floor else None

    async def converge(self) -> tuple[float | None, list[str]]:
        started = time.monotonic()
        while True:
            # Everything this loop created must have reached the history first.
            found = [f"{kind} {fleet}/{name} not observed yet"
                     for kind, fleet, name in sorted(self.created)
                     if self.history.latest(kind, fleet, name) is None]
            found = found or differences(self.history, self.setting, self.fleets,
                                         self.system.operator_now(), self.trust)
            if not found and self.system.delivery_devices:
                found = await self.delivery_differences()
            if not found:
                return time.monotonic() - started, []
            if time.monotonic() - started > self.converge_timeout:
                return None, found
            await asyncio.sleep(0.25)

    async def delivery_differences(self) -> list[str]:
        channels = {fleet: [(parts[1], parts[2]) for name in self.history.current(CHANNEL, fleet)
                            if len(parts := name.split(".")) == 3 and parts[0] == "channel"]
                    for fleet in self.fleets}
        system = self.system
        try:
            view = await asyncio.to_thread(ask_delivery, system.primary.delivery_port,
                                           system.delivery_ca, system.delivery_devices,
                                           channels)
        except (OSError, http.client.HTTPException, ValueError) as error:
            return [f"the delivery service does not answer: {error}"]
        return delivery_differences(self.history, view)

    async def iteration(self, number: int, kind: str) -> None:
        rng = self.rng
        batch = self.world.batch(rng, self.floor_of, self.system.operator_now(),
                                 self.batch_size)
        at = rng.randrange(len(batch) + 1)
        fault = Fault(kind, time.time())
        healing: asyncio.Task[None] | None = None
        for index, action in enumerate([*batch, None]):
            if index == at:  # the fault, healed in its own time while the batch goes on
                fault = Fault(kind, time.time())
                self.history.faults.append(fault)
                healing = asyncio.create_task((await self.inject(kind, batch[:index]))())
            if action is not None:
                await self.apply(action)
                await asyncio.sleep(rng.uniform(0, 0.3))
        assert healing is not None
        await healing
        healed = time.time()
        self.history.faults[self.history.faults.index(fault)] = Fault(kind, fault.start, healed)
        self.report.faults[kind] += 1
        await self.apply_pending(time.monotonic() + self.converge_timeout)
        seconds, unconverged = await self.converge()
        self.scrape(final=True)
        found = check_history(self.history, self.setting, time.time(),
                              list(self.scrapes.values()), self.trust)
        if seconds is None:
            found.append(Violation("not-converged", f"iteration {number} ({kind})",
                                   "; ".join(unconverged[:12])))
        else:
            self.report.converge.append(time.time() - healed)
        known = {str(v) for v in self.report.violations}
        fresh = [v for v in found if str(v) not in known]
        self.report.violations += fresh
        self.report.iterations += 1
        outcome = (f"converged {time.time() - healed:.1f}s after healing"
                   if seconds is not None else "NOT converged")
        print(f"iteration {number}: {kind}: {len(batch)} actions, fault "
              f"{healed - fault.start:.1f}s, {outcome}, {len(fresh)} new violations", flush=True)
        for violation in fresh:
            print(f"  {violation}", flush=True)

    def outcomes(self) -> None:
        for fleet in self.fleets:
            for obj in self.history.current(RELEASE, fleet).values():
                status = obj.get("status") or {}
                reason = f" {status.get('reason')}" if status.get("reason") else ""
                self.report.outcomes[f"{status.get('phase')}{reason}"] += 1


async def _nothing() -> None:
    return None


async def run_chaos(*, iterations: int, seed: int, faults: Sequence[str], workdir: Path,
                    batch_size: int = 8, converge_timeout: float = 120.0,
                    with_s3: bool = True) -> Report:
    """Start a system of its own in `workdir`, run the loop, stop everything; the report."""
    started = time.monotonic()
    rng = random.Random(seed)
    report = Report(seed)
    # The observer's watches use the operator's runtime, which warns at every retry while the API
    # server is down: expected here, and the report says how it went.
    watch_log = logging.getLogger("flashgate.kube")
    watch_level = watch_log.level
    watch_log.setLevel(logging.CRITICAL)
    system = await asyncio.to_thread(System.start, workdir, with_s3)
    observer: Observer | None = None
    kube: Kube | None = None
    try:
        suffix = uuid.UUID(int=rng.getrandbits(128)).hex[:6]
        models = [FleetModel(f"chaos-guarded-{suffix}", guarded=True),
                  FleetModel(f"chaos-open-{suffix}", guarded=False)]
        for model in models:
            system.plane.kubectl("create", "namespace", model.name)
        system.open_fleets = [m.name for m in models if not m.guarded]
        await asyncio.to_thread(system.scope_webhook)
        await asyncio.to_thread(system.start_delivery, [m.name for m in models])
        history = History()
        history.set_offset(time.time(), system.offset)
        observer = Observer(system.plane.kubeconfig, {m.name for m in models}, history)
        await observer.start()
        kube = Kube.from_environment(str(system.plane.kubeconfig))
        world = World(system.root, models, file_root=system.primary.artifacts, bucket=BUCKET,
                      s3_enabled=system.s3 is not None)
        chaos = Chaos(system, world, history, kube, rng, report, batch_size=batch_size,
                      converge_timeout=converge_timeout)
        for action in world.initial_keys(system.operator_now()):
            await chaos.apply(action)
        seconds, unconverged = await chaos.converge()
        if seconds is None:
            raise RuntimeError("the initial keys never converged: " + "; ".join(unconverged))
        kinds: list[str] = []
        for number in range(1, iterations + 1):
            if not kinds:
                kinds = list(faults)
                rng.shuffle(kinds)
            await chaos.iteration(number, kinds.pop())
        chaos.outcomes()
        report.notes.update({f"proxy {k}": v for k, v in system.proxy.counts.items()})
        report.notes["watch relists"] = history.relists
        if report.violations:
            save_history(history, workdir / "history.jsonl")
        report.notes["publications checked"] = len(publications(history))
        report.notes["revoked keys"] = sum(len(revocations_observed(history, f))
                                           for f in chaos.fleets)
    finally:
        if observer is not None:
            await observer.stop()
        if kube is not None:
            await kube.close()
        await asyncio.to_thread(system.stop)
        watch_log.setLevel(watch_level)
        report.seconds = time.monotonic() - started
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=len(FAULTS))
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--faults", default=",".join(FAULTS),
                        help=f"comma-separated, of: {', '.join(FAULTS)}")
    parser.add_argument("--batch", type=int, default=8, help="actions per iteration")
    parser.add_argument("--converge-timeout", type=float, default=120.0)
    parser.add_argument("--workdir", type=Path, help="default: a new temporary directory")
    parser.add_argument("--no-s3", action="store_true", help="file:// artifacts only")
    parser.add_argument("--json", type=Path, help="also write the report here as JSON")
    args = parser.parse_args(argv)
    faults = [f for f in args.faults.split(",") if f]
    unknown = set(faults) - set(FAULTS)
    if unknown:
        parser.error(f"unknown faults: {', '.join(sorted(unknown))}")
    if args.no_s3 and "s3-kill" in faults:
        faults.remove("s3-kill")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="flashgate-chaos-"))
    print(f"chaos: seed {seed}, work directory {workdir}", flush=True)
    report = asyncio.run(run_chaos(iterations=args.iterations, seed=seed, faults=faults,
                                   workdir=workdir, batch_size=args.batch,
                                   converge_timeout=args.converge_timeout,
                                   with_s3=not args.no_s3))
    print(report.text(), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report.to_json(), indent=2))
    if report.violations:
        print(f"logs of every process are kept in {workdir}, the history observed in "
              f"{workdir / 'history.jsonl'}", file=sys.stderr)
        return 1
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0
