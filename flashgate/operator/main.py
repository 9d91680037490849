"""`flashgate-operator`: the gate, run against a Kubernetes API server.

It holds a ServiceAccount token (or a kubeconfig) and no key material. Every verdict comes from
the verifier sidecar at --verifier-url; without it nothing is published.

Wiring: one list-then-watch stream per kind and fleet (`runtime.Watch`) feeds the operator's view
of its fleets (`fleets.FleetView`) and three work queues: releases that need a decision
(`releases.ReleaseGate`), fleets whose keys need evaluating (`keys.KeyKeeper`), and channel
ConfigMaps changed by someone else (`channels.ChannelGuard`). Beside them: the admission webhook
(`webhook`), and /metrics, /healthz and /readyz on one HTTP port.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from prometheus_client import generate_latest

from flashgate.api.published import BUNDLE_LABELS, KIND_LABEL, PUBLISHED_SELECTOR
from flashgate.kube.client import CONFIGMAPS, JSON, Kube
from flashgate.kube.runtime import ClockSteps, Watch, WorkQueue, object_key, run_workers
from flashgate.operator import webhook
from flashgate.operator.channels import ChannelGuard
from flashgate.operator.fleets import FleetView
from flashgate.operator.keys import KeyKeeper
from flashgate.operator.metrics import Metrics, count
from flashgate.operator.monitoring import FleetGauges, probe_verifier
from flashgate.operator.releases import ReleaseGate
from flashgate.operator.store import (
    FIRMWARE_RELEASES,
    REVOCATION_LISTS,
    ROLLBACK_FLOORS,
    SIGNING_KEYS,
    KubeStore,
)
from flashgate.operator.testclock import operator_clock
from flashgate.operator.tls import make_serving_cert
from flashgate.verifier_api.client import VerifierClient

log = logging.getLogger("flashgate.operator")


@dataclass(frozen=True)
class OperatorConfig:
    namespaces: tuple[str, ...] | None  # None: every namespace
    kubeconfig: str | None
    verifier_url: str
    verifier_timeout: float
    retry_max_delay: float
    workers: int
    metrics_addr: str
    metrics_port: int
    webhook_addr: str
    webhook_port: int
    webhook_host: str
    webhook_cert_dir: Path | None
    webhook_config_name: str | None


def parse_args(argv: list[str] | None = None) -> tuple[OperatorConfig, argparse.Namespace]:
    parser = argparse.ArgumentParser(prog="flashgate-operator", description=__doc__)
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", default=[],
                       help="a fleet (namespace) to serve; repeat for several")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="serve every namespace")
    parser.add_argument("--kubeconfig", help="default: in-cluster credentials, else $KUBECONFIG")
    parser.add_argument("--verifier-url", default="http://127.0.0.1:8181",
                        help="the verifier sidecar (http://127.0.0.1:PORT or unix:///path.sock)")
    parser.add_argument("--verifier-timeout", type=float, default=660.0,
                        help="seconds to wait for one verdict, artifact download included")
    parser.add_argument("--retry-max-delay", type=float, default=30.0,
                        help="longest backoff between retries while the sidecar is unavailable")
    parser.add_argument("--workers", type=int, default=32,
                        help="releases decided at once (most of the time is spent waiting)")
    parser.add_argument("--metrics-addr", default="0.0.0.0")
    parser.add_argument("--metrics-port", type=int, default=8080,
                        help="/metrics, /healthz and /readyz")
    parser.add_argument("--webhook-port", type=int, default=9443,
                        help="port of the validating admission webhook (always served; the API "
                             "server calls it once a ValidatingWebhookConfiguration points at it)")
    parser.add_argument("--webhook-addr", default="0.0.0.0", help="address to listen on")
    parser.add_argument("--webhook-host", default="127.0.0.1",
                        help="host name or address the API server uses to reach the webhook")
    parser.add_argument("--webhook-cert-dir", type=Path,
                        help="directory with tls.crt, tls.key and ca.crt; without it a "
                             "development certificate is made at start-up")
    parser.add_argument("--webhook-config-name",
                        help="let the operator create and keep this ValidatingWebhookConfiguration "
                             "(local runs); leave unset when the Helm chart ships its own")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    namespaces = None if args.all_namespaces else tuple(args.namespace or ["default"])
    return OperatorConfig(
        namespaces=namespaces, kubeconfig=args.kubeconfig, verifier_url=args.verifier_url,
        verifier_timeout=args.verifier_timeout, retry_max_delay=args.retry_max_delay,
        workers=args.workers, metrics_addr=args.metrics_addr, metrics_port=args.metrics_port,
        webhook_addr=args.webhook_addr, webhook_port=args.webhook_port,
        webhook_host=args.webhook_host, webhook_cert_dir=args.webhook_cert_dir,
        webhook_config_name=args.webhook_config_name), args


@dataclass
class Operator:
    """The running operator: its view, queues and reconcilers (see the module docstring)."""

    cfg: OperatorConfig
    kube: Kube
    view: FleetView
    gate: ReleaseGate
    keeper: KeyKeeper
    guard: ChannelGuard
    metrics: Metrics

    def __post_init__(self) -> None:
        self.releases: WorkQueue[tuple[str, str]] = WorkQueue("release",
                                                              max_delay=self.cfg.retry_max_delay)
        self.fleets: WorkQueue[str] = WorkQueue("fleet keys")
        self.channels: WorkQueue[tuple[str, str]] = WorkQueue("channel")
        # The newest object of each release waiting for a decision (so a worker need not read
        # it again); only undecided releases are kept.
        self.pending: dict[tuple[str, str], JSON] = {}

    # ---- watch handlers -------------------------------------------------------------------

    def on_release(self, event: str, obj: JSON) -> None:
        key = object_key(obj)
        if self.view.on_release(event, obj):
            self.pending[key] = obj
            self.releases.add(key)
        else:
            self.pending.pop(key, None)

    def on_key(self, event: str, obj: JSON) -> None:
        self.fleets.add(self.view.on_key(event, obj))

    def on_revocations(self, event: str, obj: JSON) -> None:
        self.fleets.add(self.view.on_revocations(event, obj))

    def on_published(self, event: str, obj: JSON) -> None:
        """A ConfigMap the operator publishes changed: a channel, or a fleet's trust bundle."""
        labels = (obj.get("metadata") or {}).get("labels") or {}
        if labels.get(KIND_LABEL) == BUNDLE_LABELS[KIND_LABEL]:
            fleet, _ = object_key(obj)
            if event == "DELETED" or not self.keeper.store.wrote(fleet, object_key(obj)[1], obj):
                self.fleets.add(fleet)  # someone else's hand: the keys' reconcile rewrites it
            return
        self.view.on_channel(event, obj)
        target = self.guard.on_channel(event, obj)
        if target is not None:
            self.channels.add(target)

    # ---- work -----------------------------------------------------------------------------

    async def decide_release(self, key: tuple[str, str]) -> float | None:
        return await self.gate.reconcile(*key, obj=self.pending.pop(key, None))

    async def evaluate_keys(self, fleet: str) -> float | None:
        return await self.keeper.reconcile(fleet)

    async def check_channel(self, key: tuple[str, str]) -> float | None:
        await self.view.synced.wait()
        await self.guard.check(*key)
        return None

    def watches(self) -> list[Watch]:
        handlers: list[tuple[object, Callable[[str, JSON], None], str | None]] = [
            (SIGNING_KEYS, self.on_key, None), (REVOCATION_LISTS, self.on_revocations, None),
            (FIRMWARE_RELEASES, self.on_release, None), (ROLLBACK_FLOORS, self.view.on_floor, None),
            (CONFIGMAPS, self.on_published, PUBLISHED_SELECTOR)]
        scopes = self.cfg.namespaces or (None,)
        return [Watch(self.kube, resource, namespace, handler,  # type: ignore[arg-type]
                      label_selector=selector)
                for namespace in scopes for resource, handler, selector in handlers]

    async def run(self) -> None:
        watches = self.watches()
        tasks = [asyncio.create_task(w.run(), name=f"watch {w.resource.plural}")
                 for w in watches]
        tasks += [
            asyncio.create_task(run_workers(self.releases, self.decide_release,
                                            self.cfg.workers)),
            asyncio.create_task(run_workers(self.fleets, self.evaluate_keys, 4)),
            asyncio.create_task(run_workers(self.channels, self.check_channel, 2)),
        ]
        await asyncio.gather(*(w.synced.wait() for w in watches))
        self.view.synced.set()
        self.metrics.ready.set(1)
        fleets = self.known_fleets()
        log.info("listed %d releases and %d keys in %d fleets; deciding %d releases",
                 len(self.view.phases), sum(len(k) for k in self.view.keys.values()),
                 len(fleets), len(self.releases))
        for fleet in fleets:
            self.fleets.add(fleet)
        tasks.append(asyncio.create_task(self._audit(fleets)))
        tasks.append(asyncio.create_task(self._follow_clock_steps()))
        await asyncio.gather(*tasks)

    def known_fleets(self) -> set[str]:
        return set(self.cfg.namespaces or ()) | set(self.view.keys) | \
            {fleet for fleet, _ in self.view.phases}

    async def _follow_clock_steps(self, every: float = 1.0) -> None:
        """When the wall clock steps, every fleet's keys are evaluated again at once: their
        time-driven transitions were scheduled on the clock before the step (`ClockSteps`)."""
        steps = ClockSteps(self.gate.clock)
        while True:
            await asyncio.sleep(every)
            step = steps.step()
            if step:
                log.warning("the wall clock stepped by %+.0fs: evaluating the keys of every "
                            "fleet again", step)
                for fleet in self.known_fleets():
                    self.fleets.add(fleet)

    async def _audit(self, fleets: set[str]) -> None:
        """Channels that drifted while no operator was watching are found once at start-up."""
        for fleet in sorted(fleets):
            try:
                repaired = await self.guard.audit(fleet)
            except Exception:
                log.exception("auditing the channels of %s failed", fleet)
                continue
            if repaired:
                log.warning("%s: repaired %d channel(s) at start-up", fleet, repaired)

    # ---- metrics and probes ---------------------------------------------------------------

    def key_counts(self) -> dict[tuple[str, ...], int]:
        now = int(self.gate.clock())
        return count((fleet, str(key.spec.tier), str(result.phase))
                     for fleet in list(self.view.keys)
                     for key, result in self.view.phases_of(fleet, now))

    def release_counts(self) -> dict[tuple[str, ...], int]:
        return count((fleet, phase) for (fleet, _), phase in list(self.view.phases.items()))

    def http_app(self) -> web.Application:
        async def metrics(_: web.Request) -> web.Response:
            return web.Response(body=generate_latest(self.metrics.registry),
                                headers={"Content-Type": "text/plain; version=0.0.4"})

        async def healthz(_: web.Request) -> web.Response:
            return web.Response(text="ok")

        async def readyz(_: web.Request) -> web.Response:
            if not self.view.synced.is_set():
                return web.Response(status=503, text="listing fleets")
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        app.router.add_get("/healthz", healthz)
        app.router.add_get("/readyz", readyz)
        return app


async def _start_webhook(cfg: OperatorConfig, operator: Operator, store: KubeStore) -> None:
    cert_dir = cfg.webhook_cert_dir
    if cert_dir is None:
        cert_dir = Path(tempfile.mkdtemp(prefix="flashgate-webhook-"))
        make_serving_cert((cfg.webhook_host, "localhost")).write(cert_dir)
    app = webhook.make_app(webhook.Admission(view=operator.view, store=store))
    await webhook.serve(app, cfg.webhook_addr, cfg.webhook_port, cert_dir)
    if cfg.webhook_config_name:
        body = webhook.configuration(
            cfg.webhook_config_name, f"https://{cfg.webhook_host}:{cfg.webhook_port}",
            (cert_dir / "ca.crt").read_bytes(), cfg.namespaces)
        await webhook.register(operator.kube, body)


async def run(cfg: OperatorConfig) -> None:
    kube = Kube.from_environment(cfg.kubeconfig)
    store = KubeStore(kube)
    view = FleetView()
    metrics = Metrics()
    verifier = VerifierClient(cfg.verifier_url, timeout=cfg.verifier_timeout)
    clock = operator_clock()
    gate = ReleaseGate(store=store, verifier=verifier, view=view, metrics=metrics, clock=clock,
                       retry_max_delay=cfg.retry_max_delay)
    keeper = KeyKeeper(store=store, verifier=verifier, view=view, gate=gate, metrics=metrics,
                       clock=clock)
    operator = Operator(cfg=cfg, kube=kube, view=view, gate=gate, keeper=keeper,
                        guard=ChannelGuard(store=store, metrics=metrics), metrics=metrics)
    metrics.watch(operator.release_counts, operator.key_counts)
    metrics.collect_with(FleetGauges(view, gate.clock))
    runner = web.AppRunner(operator.http_app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, cfg.metrics_addr, cfg.metrics_port).start()
    await _start_webhook(cfg, operator, store)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    work = asyncio.create_task(operator.run())
    probe = asyncio.create_task(probe_verifier(verifier, metrics))
    stopping = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({work, stopping}, return_when=asyncio.FIRST_COMPLETED)
    work.cancel()
    probe.cancel()
    for task in done:
        if task is work and not task.cancelled() and task.exception():
            log.error("the operator stopped: %s", task.exception())
    await asyncio.gather(work, probe, return_exceptions=True)
    await verifier.close()
    await runner.cleanup()
    await kube.close()


def main(argv: list[str] | None = None) -> None:
    cfg, args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(run(cfg))

