#!/usr/bin/env python3
"""The operator at fleet scale, on the real control plane: latency, throughput, memory, restart.

    .venv/bin/python bench/bench_operator.py            # the full run (about 15 minutes)
    .venv/bin/python bench/bench_operator.py --quick    # 1, 100 and 1,000 releases only

It starts a local control plane (hack/controlplane.py), the verifier sidecar and the operator as
they run in the e2e tests (hack/localgate.py: the operator as its ServiceAccount), and measures,
as the scale issue defines them (releases with 4 KiB file:// artifacts, each for its own product,
created through the API by 8 client threads; time from create to the final phase seen by a
watch):

- the API server's own write rate (ConfigMaps created by 8 threads): the ceiling every operator on
  this machine shares; throughput is also reported as a ratio to it;
- 1 release, apply -> Published; 100 and 1,000 at once: p50/p99 and releases/s;
- sustained throughput, in batches up to 10,000 releases in the fleet;
- operator and sidecar RSS idle, at 1,000 and at 10,000 releases with 500 SigningKeys;
- restart with 10,000 releases (SIGKILL, start): /healthz, /readyz, and the next release
  Published, from the start of the process;
- the admission webhook's latency with 10,000 releases present;
- 1,000 releases spread over 50 fleets.
It prints a Markdown table and writes results.md, results.json and a PNG chart (matplotlib) to
--out (bench/results/, not committed). Benchmarks print figures; they never fail on a slow
machine.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import ssl
import statistics
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "hack"))

import controlplane  # noqa: E402
from localgate import LocalGate, install, kubectl_run  # noqa: E402

from flashgate.signing.filekeys import KeySigner, generate  # noqa: E402
from flashgate.signing.resources import release_doc, signing_key_doc  # noqa: E402
from flashgate.trust import Algorithm, Tier  # noqa: E402
from flashgate.trust.cose import CT_KEY, CT_RELEASE, sign1  # noqa: E402
from flashgate.trust.payloads import KeyEndorsement, ReleaseManifest  # noqa: E402

GROUP, VERSION = "ota.flashgate.dev", "v1alpha1"
FINAL = {"Published", "Rejected", "Withdrawn"}
THREADS = 8


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ready_now(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return bool(response.status == 200)
    except OSError:  # HTTPError (503 while listing) is one
        return False


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


@dataclass
class Fleet:
    """A namespace with one application key and a root, and fast release factories."""

    bench: Bench
    namespace: str
    key: KeySigner = field(default_factory=lambda: generate(Algorithm.ED25519))
    count: int = 0

    def key_doc(self, name: str, signer: KeySigner) -> dict[str, Any]:
        now = int(time.time())
        endorsement = KeyEndorsement(
            fleet=self.namespace, tier=Tier.APPLICATION, key_id=bytes.fromhex(signer.key_id),
            algorithm=signer.algorithm, public_key=signer.spki_der, not_before=now - 3600,
            not_after=now + 86400 * 30)
        return signing_key_doc(name=name, fleet=self.namespace, tier=Tier.APPLICATION,
                               algorithm=signer.algorithm, public_pem=signer.public_pem,
                               not_before=now - 3600, not_after=now + 86400 * 30,
                               endorsement=sign1(self.bench.root, CT_KEY, endorsement.to_cbor()))

    def release(self) -> dict[str, Any]:
        """A good release of a product of its own, with a 4 KiB artifact."""
        self.count += 1
        name = f"r-{uuid.uuid4().hex[:12]}"
        data = os.urandom(4096)
        path = self.bench.gate.artifacts / self.namespace / f"{name}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        manifest = ReleaseManifest(
            fleet=self.namespace, product=f"p-{name[2:]}", tier=Tier.APPLICATION,
            version="1.0.0", security_version=1, artifact_name=f"{name}.bin",
            artifact_size=len(data), artifact_sha256=hashlib.sha256(data).digest())
        return release_doc(name=name, manifest=manifest, url=path.as_uri(), channel="stable",
                           signatures=[sign1(self.key, CT_RELEASE, manifest.to_cbor())])


class Watcher:
    """Timestamps of the first final phase of every release in the watched namespaces."""

    def __init__(self, api: client.CustomObjectsApi) -> None:
        self.api = api
        self.final: dict[str, float] = {}
        self.phases: dict[str, str] = {}
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                stream = watch.Watch().stream(
                    self.api.list_cluster_custom_object, GROUP, VERSION, "firmwarereleases",
                    timeout_seconds=3600, _request_timeout=3700)
                for event in stream:
                    obj = event["object"]
                    phase = (obj.get("status") or {}).get("phase")
                    name = f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"
                    with self.changed:
                        self.phases[name] = phase
                        if phase in FINAL and name not in self.final:
                            self.final[name] = time.time()
                            self.changed.notify_all()
            except Exception as exc:  # a dropped watch: start again
                log(f"watch ended ({type(exc).__name__}); again")
                time.sleep(0.5)

    def wait(self, names: Iterable[str], timeout: float) -> bool:
        wanted = set(names)
        deadline = time.time() + timeout
        with self.changed:
            while not wanted <= self.final.keys():
                left = deadline - time.time()
                if left <= 0:
                    return False
                self.changed.wait(min(left, 1.0))
        return True


@dataclass
class Bench:
    out: Path
    quick: bool
    pprof: bool = False
    root: KeySigner = field(default_factory=lambda: generate(Algorithm.ED25519))
    rows: list[tuple[str, str]] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    batches: list[tuple[int, float]] = field(default_factory=list)
    latencies: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, dict[str, float]] = field(default_factory=dict)

    def row(self, what: str, figure: str, key: str | None = None, value: Any = None) -> None:
        log(f"{what}: {figure}")
        self.rows.append((what, figure))
        if key is not None:
            self.figures[key] = value

    # ---- the run ------------------------------------------------------------------------------

    def run(self) -> None:
        with controlplane.ControlPlane() as plane:
            self.plane = plane
            self.kubectl = plane.binaries / "kubectl"
            self.kubeconfig = plane.kubeconfig
            install(self.kubectl, self.kubeconfig)
            config.load_kube_config(str(self.kubeconfig))
            configuration = client.Configuration.get_default_copy()
            configuration.connection_pool_maxsize = THREADS * 2
            self.api_client = client.ApiClient(configuration)
            self.custom = client.CustomObjectsApi(self.api_client)
            self.core = client.CoreV1Api(self.api_client)
            self.gate = LocalGate(
                kubectl=self.kubectl, kubeconfig=self.kubeconfig, workdir=self.out / "gate",
                roots=[{"publicKey": self.root.public_pem, "algorithm": "ed25519"}])
            self.gate.workdir.mkdir(parents=True, exist_ok=True)
            try:
                self._scenarios()
            finally:
                self.gate.stop()

    def _namespace(self, prefix: str) -> Fleet:
        fleet = Fleet(self, f"{prefix}-{uuid.uuid4().hex[:5]}")
        kubectl_run(self.kubectl, self.kubeconfig, "create", "namespace", fleet.namespace)
        self._create_all([fleet.key_doc("app", fleet.key)], "signingkeys")
        return fleet

    def _create_all(self, docs: list[dict[str, Any]], plural: str) -> list[float]:
        """Create objects with THREADS client threads; the create times, in order."""
        created = [0.0] * len(docs)

        def create(index: int) -> None:
            doc = docs[index]
            created[index] = time.time()
            self.custom.create_namespaced_custom_object(
                GROUP, VERSION, doc["metadata"]["namespace"], plural, doc)

        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(create, range(len(docs))))
        return created

    def processes(self) -> dict[str, int]:
        assert self.gate.operator is not None and self.gate.sidecar is not None
        return {"operator": self.gate.operator.pid, "sidecar": self.gate.sidecar.pid,
                **{Path(str(p.args[0])).name: p.pid for p in self.plane.processes},
                "bench": os.getpid()}

    def profile_apiserver(self, seconds: int) -> None:
        """A CPU profile of kube-apiserver (its /debug/pprof) while releases flow, for `go tool
        pprof`: where the API server's time per release goes."""
        pki = self.plane.workdir / "pki"
        context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        url = f"{self.plane.server}/debug/pprof/profile?seconds={seconds}"
        with urllib.request.urlopen(url, context=context, timeout=seconds + 30) as response:
            (self.out / "kube-apiserver.pprof").write_bytes(response.read())

    def _releases(self, fleets: list[Fleet], count: int, label: str,
                  timeout: float = 1800) -> tuple[list[float], float]:
        docs = [fleets[i % len(fleets)].release() for i in range(count)]
        names = [f"{d['metadata']['namespace']}/{d['metadata']['name']}" for d in docs]
        cpu = {name: cpu_seconds(pid) for name, pid in self.processes().items()}
        started = time.time()
        created = self._create_all(docs, "firmwarereleases")
        if not self.watcher.wait(names, timeout):
            log(f"{label}: not all final within {timeout}s")
        ended = max(self.watcher.final.get(n, time.time()) for n in names)
        latencies = [self.watcher.final.get(n, float("inf")) - t
                     for n, t in zip(names, created, strict=True)]
        if count >= 100:  # where the time goes: CPU seconds per process, per release
            spent = {name: (cpu_seconds(pid) - cpu[name]) * 1000 / count
                     for name, pid in self.processes().items()}
            self.cpu[label] = spent
            log(f"{label}: CPU ms per release: "
                + ", ".join(f"{k} {v:.1f}" for k, v in sorted(spent.items())))
        bad = [n for n in names if self.watcher.phases.get(n) != "Published"]
        if bad:
            log(f"{label}: {len(bad)} not Published, e.g. {bad[0]}: {self.watcher.phases[bad[0]]}")
        self.latencies[label] = latencies
        return latencies, count / (ended - started)

    def _api_write_rate(self, fleet: Fleet) -> float:
        docs = [{"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": {"name": f"w-{i}", "namespace": fleet.namespace},
                 "data": {"x": "y" * 512}} for i in range(2000)]
        started = time.time()
        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(lambda d: self.core.create_namespaced_config_map(fleet.namespace, d),
                          docs))
        return len(docs) / (time.time() - started)

    def _webhook_latency(self, fleet: Fleet, samples: int = 200) -> list[float]:
        """The webhook's answer to a real AdmissionReview of a release, over TLS."""
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the bench only times it
        doc = fleet.release()
        body = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                           "request": {"uid": "u", "namespace": fleet.namespace,
                                       "operation": "CREATE", "object": doc}}).encode()
        url = f"https://127.0.0.1:{self.gate.webhook_port}/validate/firmwarereleases"
        times = []
        for _ in range(samples):
            started = time.perf_counter()
            request = urllib.request.Request(url, data=body,
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, context=context, timeout=10) as response:
                response.read()
            times.append(time.perf_counter() - started)
        return times

    def _scenarios(self) -> None:
        gate = self.gate
        gate.start_sidecar()
        gate.start_operator(register_webhook=False)
        self.watcher = Watcher(self.custom)
        time.sleep(2)
        assert gate.operator is not None and gate.sidecar is not None
        self.row("operator RSS, idle", f"{rss_mib(gate.operator.pid):.0f} MiB",
                 "rss_idle_mib", rss_mib(gate.operator.pid))

        writes = self._api_write_rate(self._namespace("writes"))
        self.row("API server write rate (ConfigMaps, 8 threads)", f"{writes:.0f} writes/s",
                 "api_writes_per_s", writes)

        fleet = self._namespace("scale")
        singles = [self._releases([fleet], 1, f"single-{i}")[0][0] for i in range(5)]
        self.row("1 release, apply -> Published (min / median of 5)",
                 f"{min(singles):.2f} s / {statistics.median(singles):.2f} s",
                 "single_s", statistics.median(singles))
        for count in (100, 1000):
            if count == 1000 and self.pprof:
                threading.Thread(target=self.profile_apiserver, args=(10,), daemon=True).start()
            latencies, rate = self._releases([fleet], count, f"{count} at once")
            self.row(f"{count:,} at once: p50 / p99, throughput",
                     f"{percentile(latencies, .5):.1f} s / {percentile(latencies, .99):.1f} s, "
                     f"{rate:.0f} releases/s ({rate * 5 / writes:.2f} of the API server's write "
                     "rate at 5 writes a release)",
                     f"at_once_{count}", {"p50": percentile(latencies, .5),
                                          "p99": percentile(latencies, .99), "rate": rate})
        self.row("operator RSS at ~1,100 releases", f"{rss_mib(gate.operator.pid):.0f} MiB",
                 "rss_1000_mib", rss_mib(gate.operator.pid))
        if self.quick:
            return

        others = [generate(Algorithm.ED25519) for _ in range(499)]
        self._create_all([fleet.key_doc(f"k-{i}", k) for i, k in enumerate(others)],
                         "signingkeys")
        total = fleet.count
        while total < 10_000:
            batch = min(2000, 10_000 - total)
            _, rate = self._releases([fleet], batch, f"batch to {total + batch}")
            total += batch
            self.batches.append((total, rate))
            self.row(f"sustained: batch of {batch:,} at {total:,} releases, 500 keys",
                     f"{rate:.0f} releases/s")
        self.figures["sustained"] = self.batches
        self.row("operator RSS at 10,000 releases and 500 keys",
                 f"{rss_mib(gate.operator.pid):.0f} MiB", "rss_10000_mib",
                 rss_mib(gate.operator.pid))
        self.row("sidecar RSS", f"{rss_mib(gate.sidecar.pid):.0f} MiB", "sidecar_rss_mib",
                 rss_mib(gate.sidecar.pid))

        webhook = [t * 1000 for t in self._webhook_latency(fleet)]
        p50, p99 = percentile(webhook, .5), percentile(webhook, .99)
        self.row("admission webhook p50 / p99, 10,000 releases present",
                 f"{p50:.1f} ms / {p99:.1f} ms", "webhook_ms", {"p50": p50, "p99": p99})

        gate.stop_operator(kill=True)
        started = time.time()
        gate.start_operator(register_webhook=False, wait_ready=False)
        healthy = time.time() - started
        while not ready_now(f"http://127.0.0.1:{gate.metrics_port}/readyz"):
            time.sleep(0.1)
        ready = time.time() - started
        latencies, _ = self._releases([fleet], 1, "after restart")
        published = self.watcher.final[max(self.watcher.final, key=self.watcher.final.get)]
        self.row("restart (SIGKILL) with 10,000 releases: healthz / ready / next release "
                 "Published, from process start",
                 f"{healthy:.1f} s / {ready:.1f} s / {published - started:.1f} s",
                 "restart_s", {"healthz": healthy, "ready": ready,
                               "published": published - started})
        self.row("operator RSS after the restart", f"{rss_mib(gate.operator.pid):.0f} MiB",
                 "rss_restart_mib", rss_mib(gate.operator.pid))

        fleets = [self._namespace("many") for _ in range(50)]
        latencies, rate = self._releases(fleets, 1000, "50 fleets")
        self.row("1,000 releases over 50 fleets: p50 / p99, throughput",
                 f"{percentile(latencies, .5):.1f} s / {percentile(latencies, .99):.1f} s, "
                 f"{rate:.0f} releases/s", "fleets_50", {"rate": rate})

    # ---- output -------------------------------------------------------------------------------

    def report(self) -> str:
        lines = ["| what | figure |", "|---|---|", *(f"| {w} | {f} |" for w, f in self.rows)]
        table = "\n".join(lines)
        machine = f"{os.cpu_count()} cores, {os.uname().sysname} {os.uname().machine}"
        text = f"Machine: {machine}; {time.strftime('%Y-%m-%d')}.\n\n{table}\n"
        if self.cpu:
            names = sorted({n for spent in self.cpu.values() for n in spent})
            table += ("\n\nCPU milliseconds per release, by process:\n\n| run | "
                      + " | ".join(names) + " |\n|---|" + "---|" * len(names) + "\n"
                      + "\n".join(f"| {label} | " + " | ".join(f"{spent.get(n, 0):.1f}"
                                                            for n in names) + " |"
                                   for label, spent in self.cpu.items()))
            self.figures["cpu_ms_per_release"] = self.cpu
        text = f"Machine: {machine}; {time.strftime('%Y-%m-%d')}.\n\n{table}\n"
        (self.out / "results.md").write_text(text)
        (self.out / "results.json").write_text(json.dumps(self.figures, indent=2))
        self._chart()
        return text

    def _chart(self) -> None:
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            log("matplotlib is not installed: no chart (make bench installs it)")
            return
        figure, axes = plt.subplots(1, 2, figsize=(11, 4))
        for label in ("100 at once", "1000 at once"):
            values = sorted(v for v in self.latencies.get(label, []) if v != float("inf"))
            if values:
                axes[0].plot(values, [i / len(values) for i in range(len(values))], label=label)
        axes[0].set_xlabel("create -> final phase (s)")
        axes[0].set_ylabel("fraction of releases")
        axes[0].legend()
        axes[0].set_title("latency")
        if self.batches:
            axes[1].plot([b[0] for b in self.batches], [b[1] for b in self.batches], marker="o")
        axes[1].set_xlabel("releases in the fleet")
        axes[1].set_ylabel("releases/s")
        axes[1].set_ylim(bottom=0)
        axes[1].set_title("sustained throughput (500 keys)")
        figure.tight_layout()
        figure.savefig(self.out / "operator.png", dpi=100)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1, 100 and 1,000 releases only")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--pprof", action="store_true",
                        help="save a 10 s CPU profile of kube-apiserver during the 1,000 burst")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    bench = Bench(out=args.out, quick=args.quick, pprof=args.pprof)
    try:
        bench.run()
    finally:
        print(bench.report())


if __name__ == "__main__":
    main()
