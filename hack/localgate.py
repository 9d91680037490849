"""The gate on this machine: the verifier sidecar, the operator and the delivery service as
processes against a Kubernetes API server, as the demo, the e2e tests and the benchmarks run them.

`install(kubectl)` applies the CRDs, the admission policies and the identities and RBAC of the
operator and the delivery service (deploy/, deploy/local for a locally registered webhook,
deploy/delivery). `LocalGate` starts and stops the processes: the sidecar with a configuration
file it writes (roots, policy, file:// for tests), the operator and the delivery service each
authenticated only as its own ServiceAccount (the operator's: deploy/'s
flashgate-system/flashgate-operator, or another: `operator_namespace`, `operator_account`), with a
token from the API server's TokenRequest API, never with the admin's credentials: the policies
and RBAC of deploy/ (or of the Helm chart, in tests/chart) are what the processes run under (the
delivery service reads only the fleets bound to it with `bind_delivery`). Each process gets
SIGKILL if its parent dies (as hack/controlplane.py's do), so nothing outlives a killed test run.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from controlplane import _set_parent_death_signal, free_port

REPO = Path(__file__).resolve().parents[1]
OPERATOR_NAMESPACE, OPERATOR_ACCOUNT = "flashgate-system", "flashgate-operator"
DELIVERY_ACCOUNT = "flashgate-delivery"
# The delivery service's identity and ClusterRole, and after this line its per-fleet RoleBinding
# as a commented example (hack/chart.py renders all of it from the Helm chart).
DELIVERY_RBAC = REPO / "deploy" / "delivery" / "rbac.yaml"
FLEET_BINDING_MARKER = "# fleet of a local run. FLEET stands for the fleet's namespace:\n#\n"


def kubectl_run(kubectl: Path, kubeconfig: Path, *args: str, input: str | None = None,
                check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(kubectl), f"--kubeconfig={kubeconfig}", *args], input=input,
                            capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n"
                           f"{result.stderr}{result.stdout}")
    return result


def install(kubectl: Path, kubeconfig: Path) -> None:
    """CRDs, admission policies, the identities and RBAC of the operator and the delivery
    service (deploy/, deploy/local, deploy/delivery)."""
    # --force-conflicts: crds/ is what the API server must have, even where a Helm install of
    # another chart version (tests/chart) wrote these CRDs last.
    kubectl_run(kubectl, kubeconfig, "apply", "--server-side", "--force-conflicts", "-f",
                str(REPO / "crds"))
    kubectl_run(kubectl, kubeconfig, "wait", "--for=condition=established", "--timeout=60s",
                "-f", str(REPO / "crds"))
    kubectl_run(kubectl, kubeconfig, "apply", "--server-side", "-f", str(REPO / "deploy"),
                "-f", str(REPO / "deploy" / "local"), "-f", str(REPO / "deploy" / "delivery"))


def delivery_binding(fleet: str) -> dict[str, Any]:
    """The RoleBinding that lets the delivery service read the ConfigMaps of `fleet`: the
    example in deploy/delivery/rbac.yaml (as the chart renders it per fleet), in `fleet`."""
    _, marker, example = DELIVERY_RBAC.read_text().partition(FLEET_BINDING_MARKER)
    if not marker:
        raise RuntimeError(f"{DELIVERY_RBAC} has no per-fleet RoleBinding example: `make chart`")
    binding = yaml.safe_load("\n".join(line.removeprefix("#").removeprefix(" ")
                                       for line in example.splitlines()))
    assert binding["kind"] == "RoleBinding" and binding["metadata"]["namespace"] == "FLEET"
    binding["metadata"]["namespace"] = fleet
    return dict(binding)


def token_kubeconfig(kubectl: Path, kubeconfig: Path, path: Path,
                     namespace: str = OPERATOR_NAMESPACE,
                     account: str = OPERATOR_ACCOUNT,
                     cluster: Mapping[str, str] | None = None) -> Path:
    """A kubeconfig that authenticates as a ServiceAccount only (a TokenRequest token, as a pod's
    projected token), with the admin kubeconfig's server and CA (or `cluster`'s: server and
    certificate-authority-data) and nothing of its user."""
    token = kubectl_run(kubectl, kubeconfig, "create", "token", account, "-n", namespace,
                        "--duration=48h").stdout.strip()
    admin = yaml.safe_load(kubeconfig.read_text())
    cluster = dict(cluster or next(c["cluster"] for c in admin["clusters"]))
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": account}}],
        "current-context": "c"}))
    path.chmod(0o600)
    return path


def wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Until `url` answers 200; fails with the process's log if it exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}:\n"
                               f"{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} not up in {timeout}s:\n{log.read_text()[-3000:]}")


@dataclass
class LocalGate:
    """The sidecar and the operator; either may be stopped (or killed) and started again."""

    kubectl: Path
    kubeconfig: Path
    workdir: Path
    roots: list[dict[str, str]]  # the sidecar's `roots`: [{publicKey: PEM, algorithm}]
    sidecar_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    webhook_port: int = field(default_factory=free_port)
    webhook_config: str = field(
        default_factory=lambda: f"local-{uuid.uuid4().hex[:6]}.ota.flashgate.dev")
    delivery_port: int = field(default_factory=free_port)
    delivery_ops_port: int = field(default_factory=free_port)
    sidecar: subprocess.Popen[bytes] | None = None
    operator: subprocess.Popen[bytes] | None = None
    delivery: subprocess.Popen[bytes] | None = None
    # Added to the sidecar's configuration at its next start (an s3 section, allowed hosts).
    sidecar_extra: dict[str, Any] = field(default_factory=dict)
    # Whose token the operator runs with.
    operator_namespace: str = OPERATOR_NAMESPACE
    operator_account: str = OPERATOR_ACCOUNT
    # Where the operator's webhook listens, and with which tls.crt, tls.key and ca.crt (None: a
    # development certificate it makes for itself).
    webhook_addr: str = "127.0.0.1"
    webhook_cert_dir: Path | None = None
    # The operator's way to the API server when it is not the admin kubeconfig's (server and
    # certificate-authority-data): e.g. the chaos loop's fault-injecting proxy.
    operator_cluster: dict[str, str] | None = None

    @property
    def artifacts(self) -> Path:
        """Where file:// artifacts live (the sidecar's fileRoot)."""
        return self.workdir / "artifacts"

    def sidecar_config(self) -> Path:
        path = self.workdir / "verifier.yaml"
        path.write_text(yaml.safe_dump({
            "roots": self.roots,
            "thresholds": {"bootloader": 2},
            "maxSecurityVersionJump": 100,
            "allowFileURLs": True,  # demos, tests and benchmarks only
            "fileRoot": str(self.artifacts),
            **self.sidecar_extra,
        }))
        return path

    def _spawn(self, name: str, args: list[str],
               env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - lives with the process
        return subprocess.Popen([sys.executable, "-m", *args], stdout=log,
                                stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                                preexec_fn=_set_parent_death_signal)

    def start_sidecar(self) -> None:
        """The sidecar has no Kubernetes credentials at all: no KUBECONFIG is passed."""
        self.artifacts.mkdir(parents=True, exist_ok=True)
        env = {"KUBECONFIG": "/dev/null"}
        self.sidecar = self._spawn("sidecar", [
            "flashgate.verifier_sidecar", "--config", str(self.sidecar_config()),
            "--listen", f"127.0.0.1:{self.sidecar_port}"], env)
        wait_http(f"http://127.0.0.1:{self.sidecar_port}/healthz", 20, self.sidecar,
                  self.workdir / "sidecar.log")

    def start_operator(self, register_webhook: bool = True, *, namespaces: Sequence[str] = (),
                       failpoints: Sequence[str] = (), wait_ready: bool = True,
                       extra_args: Sequence[str] = (),
                       extra_env: Mapping[str, str] | None = None) -> None:
        kubeconfig = token_kubeconfig(self.kubectl, self.kubeconfig,
                                      self.workdir / "operator.kubeconfig",
                                      self.operator_namespace, self.operator_account,
                                      cluster=self.operator_cluster)
        scope = [a for n in namespaces for a in ("-n", n)] or ["--all-namespaces"]
        env = {"KUBECONFIG": str(kubeconfig), **(extra_env or {})}
        if failpoints:
            env["FLASHGATE_FAILPOINTS"] = ",".join(failpoints)
        self.operator = self._spawn("operator", [
            "flashgate.operator", *scope,
            "--verifier-url", f"http://127.0.0.1:{self.sidecar_port}",
            "--retry-max-delay", "2",
            "--metrics-addr", "127.0.0.1", "--metrics-port", str(self.metrics_port),
            "--webhook-addr", self.webhook_addr, "--webhook-host", "127.0.0.1",
            "--webhook-port", str(self.webhook_port),
            *(["--webhook-cert-dir", str(self.webhook_cert_dir)] if self.webhook_cert_dir else []),
            *(["--webhook-config-name", self.webhook_config] if register_webhook else []),
            *extra_args], env)
        log = self.workdir / "operator.log"
        wait_http(f"http://127.0.0.1:{self.metrics_port}/healthz", 30, self.operator, log)
        if wait_ready:
            wait_http(f"http://127.0.0.1:{self.metrics_port}/readyz", 600, self.operator, log)
        if not register_webhook:
            return
        deadline = time.monotonic() + 20
        while kubectl_run(self.kubectl, self.kubeconfig, "get", "validatingwebhookconfiguration",
                          self.webhook_config, check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError("the operator did not register its webhook")
            time.sleep(0.2)

    def bind_delivery(self, fleet: str) -> None:
        """Let the delivery service read the published ConfigMaps of `fleet`: the per-fleet
        RoleBinding of deploy/delivery/rbac.yaml."""
        kubectl_run(self.kubectl, self.kubeconfig, "apply", "-f", "-",
                    input=yaml.safe_dump(delivery_binding(fleet)))

    def delivery_kubeconfig(self) -> Path:
        """A kubeconfig with the delivery service's ServiceAccount token and nothing else."""
        return token_kubeconfig(self.kubectl, self.kubeconfig,
                                self.workdir / "delivery.kubeconfig", account=DELIVERY_ACCOUNT)

    def start_delivery(self, config: dict[str, Any], *, wait_ready: bool = True,
                       extra_args: Sequence[str] = ()) -> None:
        """The delivery service with `config` (docs/delivery.md), authenticated only as its
        ServiceAccount; it has no other credentials than those and the ones `config` names."""
        path = self.workdir / "delivery.yaml"
        path.write_text(yaml.safe_dump(config))
        env = {"KUBECONFIG": str(self.delivery_kubeconfig())}
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            env[name] = ""  # none of the caller's: only the files the configuration names
        self.delivery = self._spawn("delivery", [
            "flashgate.delivery", "--config", str(path),
            "--listen", f"127.0.0.1:{self.delivery_port}",
            "--ops-listen", f"127.0.0.1:{self.delivery_ops_port}", *extra_args], env)
        log = self.workdir / "delivery.log"
        ops = f"http://127.0.0.1:{self.delivery_ops_port}"
        wait_http(f"{ops}/healthz", 30, self.delivery, log)
        if wait_ready:
            wait_http(f"{ops}/readyz", 60, self.delivery, log)

    def stop_delivery(self) -> None:
        self._stop(self.delivery)

    @staticmethod
    def _stop(proc: subprocess.Popen[bytes] | None, kill: bool = False) -> None:
        if proc is None or proc.poll() is not None:
            return
        proc.kill() if kill else proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop_sidecar(self) -> None:
        self._stop(self.sidecar)

    def stop_operator(self, kill: bool = False) -> None:
        self._stop(self.operator, kill=kill)

    def stop(self) -> None:
        self.stop_delivery()
        self.stop_operator()
        self.stop_sidecar()
        kubectl_run(self.kubectl, self.kubeconfig, "delete", "validatingwebhookconfiguration",
                    self.webhook_config, "--ignore-not-found", check=False)

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics") as response:
            return str(response.read().decode())
