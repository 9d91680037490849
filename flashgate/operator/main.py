"""`flashgate-operator`: run the Kopf operator.

It holds a ServiceAccount token (or a kubeconfig) and no key material. Every verdict comes from the
verifier sidecar at --verifier-url; without it nothing is published.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kopf
from kubernetes import client, config
from prometheus_client import start_http_server

from flashgate.operator import handlers
from flashgate.operator.gate import FleetKey, Gate
from flashgate.operator.metrics import Metrics, count_by
from flashgate.operator.store import FleetStore
from flashgate.operator.tls import make_serving_cert
from flashgate.verifier_api.client import VerifierClient


@dataclass(frozen=True)
class OperatorConfig:
    verifier_url: str
    verifier_timeout: float
    retry_max_delay: float
    metrics_addr: str
    metrics_port: int
    webhook_port: int
    webhook_addr: str
    webhook_host: str
    webhook_cert_dir: Path | None
    webhook_config_name: str | None


def parse_args(argv: list[str] | None = None) -> tuple[OperatorConfig, argparse.Namespace]:
    parser = argparse.ArgumentParser(prog="flashgate-operator", description=__doc__)
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", default=[],
                       help="a fleet (namespace) to serve; repeat for several")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="serve every namespace")
    parser.add_argument("--verifier-url", default="http://127.0.0.1:8181",
                        help="the verifier sidecar (http://127.0.0.1:PORT or unix:///path.sock)")
    parser.add_argument("--verifier-timeout", type=float, default=600.0,
                        help="seconds to wait for one verdict, artifact download included")
    parser.add_argument("--retry-max-delay", type=float, default=30.0,
                        help="longest backoff between retries while the sidecar is unavailable")
    parser.add_argument("--metrics-addr", default="0.0.0.0")
    parser.add_argument("--metrics-port", type=int, default=8080, help="0 turns metrics off")
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
    parser.add_argument("--liveness", default="http://0.0.0.0:8081/healthz",
                        help="Kopf's liveness endpoint")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    return OperatorConfig(
        verifier_url=args.verifier_url, verifier_timeout=args.verifier_timeout,
        retry_max_delay=args.retry_max_delay, metrics_addr=args.metrics_addr,
        metrics_port=args.metrics_port, webhook_port=args.webhook_port,
        webhook_addr=args.webhook_addr, webhook_host=args.webhook_host,
        webhook_cert_dir=args.webhook_cert_dir, webhook_config_name=args.webhook_config_name,
    ), args


def _api_client() -> client.ApiClient:
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    return client.ApiClient()


def _webhook_server(cfg: OperatorConfig) -> kopf.WebhookServer:
    cert_dir = cfg.webhook_cert_dir
    if cert_dir is None:
        cert_dir = Path(tempfile.mkdtemp(prefix="flashgate-webhook-"))
        make_serving_cert((cfg.webhook_host, "localhost")).write(cert_dir)
    return kopf.WebhookServer(
        addr=cfg.webhook_addr, port=cfg.webhook_port, host=cfg.webhook_host,
        certfile=str(cert_dir / "tls.crt"), pkeyfile=str(cert_dir / "tls.key"),
        cafile=str(cert_dir / "ca.crt"))


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: Any, **kwargs: Any) -> None:
    cfg: OperatorConfig = memo.config
    release_phases: kopf.Index[tuple[str, str], None] = kwargs["release_phases"]
    key_phases: kopf.Index[tuple[str, str, str], None] = kwargs["key_phases"]
    # Kopf's bookkeeping in annotations of our group: the CRD schemas are strict (no status.kopf).
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix="ota.flashgate.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="ota.flashgate.dev", key="last-handled-configuration")
    settings.posting.level = logging.WARNING  # our own events say what happened; no log echo
    settings.watching.server_timeout = 300
    settings.admission.server = _webhook_server(cfg)
    settings.admission.managed = cfg.webhook_config_name
    metrics = Metrics()
    metrics.watch_phases(lambda: count_by((k, None) for k in release_phases),
                         lambda: count_by((k, None) for k in key_phases))
    if cfg.metrics_port:
        start_http_server(cfg.metrics_port, addr=cfg.metrics_addr, registry=metrics.registry)
    memo.gate = Gate(verifier=VerifierClient(cfg.verifier_url, timeout=cfg.verifier_timeout),
                     store=FleetStore(_api_client()), metrics=metrics,
                     retry_max_delay=cfg.retry_max_delay)


def main(argv: list[str] | None = None) -> None:
    cfg, args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    assert handlers  # imported for its Kopf registrations
    asyncio.run(kopf.operator(
        clusterwide=args.all_namespaces,
        namespaces=[] if args.all_namespaces else (args.namespace or ["default"]),
        memo=kopf.Memo(config=cfg), standalone=True, liveness_endpoint=args.liveness or None))


__all__ = ["FleetKey", "main"]
