"""The e2e harness: the real operator and verifier sidecar as separate processes, against the
real API server, exercised with kubectl apply as users do.

`gate_system` (session) runs one sidecar (with a fleet root made for this run) and one operator
serving all namespaces, its admission webhook registered in the API server. `fleet` (per test)
is a fresh namespace with helpers to make endorsed keys and signed releases.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from flashgate.signing.filekeys import KeySigner, generate
from flashgate.signing.resources import release_doc, signing_key_doc
from flashgate.trust import Algorithm, Tier
from flashgate.trust.cose import CT_KEY, CT_RELEASE, sign1
from flashgate.trust.payloads import KeyEndorsement, ReleaseManifest

from ..conftest import Cluster, controlplane

ROOT_DAY = 86400


def _wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{proc.args} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"{url} not up in {timeout}s:\n{log.read_text()[-3000:]}")


@dataclass
class GateSystem:
    """Operator + sidecar processes; tests may stop and start either."""

    kube: Cluster
    workdir: Path
    root: KeySigner = field(default_factory=lambda: generate(Algorithm.ED25519))
    sidecar_port: int = field(default_factory=controlplane.free_port)
    metrics_port: int = field(default_factory=controlplane.free_port)
    webhook_port: int = field(default_factory=controlplane.free_port)
    webhook_config: str = field(default_factory=lambda: f"e2e-{uuid.uuid4().hex[:6]}.ota.flashgate.dev")
    sidecar: subprocess.Popen[bytes] | None = None
    operator: subprocess.Popen[bytes] | None = None
    # Added to the sidecar's configuration at its next start (e.g. an s3 section, by
    # test_gate_s3.py, which restarts the sidecar with it and without it afterwards).
    sidecar_extra: dict[str, Any] = field(default_factory=dict)

    @property
    def artifacts(self) -> Path:
        return self.workdir / "artifacts"

    def sidecar_config(self) -> Path:
        path = self.workdir / "verifier.yaml"
        path.write_text(yaml.safe_dump({
            "roots": [{"publicKey": self.root.public_pem, "algorithm": str(self.root.algorithm)}],
            "thresholds": {"bootloader": 2},
            "maxSecurityVersionJump": 100,
            "allowFileURLs": True,
            "fileRoot": str(self.artifacts),
            **self.sidecar_extra,
        }))
        return path

    def _spawn(self, name: str, args: list[str],
               env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - lives with the process
        # The operator runs as its own ServiceAccount (deploy/rbac.yaml), never as the admin:
        # the admission policies and RBAC are tested with the identity they are written for.
        kubeconfig = self.kube.token_kubeconfig("flashgate-system", "flashgate-operator",
                                                self.workdir / "operator.kubeconfig")
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1",
               **(env or {})}
        return subprocess.Popen([sys.executable, "-m", *args], stdout=log, stderr=subprocess.STDOUT,
                                env=env, preexec_fn=controlplane._set_parent_death_signal)

    def start_sidecar(self) -> None:
        self.artifacts.mkdir(parents=True, exist_ok=True)
        self.sidecar = self._spawn("sidecar", [
            "flashgate.verifier_sidecar", "--config", str(self.sidecar_config()),
            "--listen", f"127.0.0.1:{self.sidecar_port}"])
        _wait_http(f"http://127.0.0.1:{self.sidecar_port}/healthz", 20, self.sidecar,
                   self.workdir / "sidecar.log")

    def start_operator(self, register_webhook: bool = True, *, namespaces: Sequence[str] = (),
                       failpoints: Sequence[str] = (), wait_ready: bool = True) -> None:
        scope = [a for n in namespaces for a in ("-n", n)] or ["--all-namespaces"]
        env = {"FLASHGATE_FAILPOINTS": ",".join(failpoints)} if failpoints else {}
        self.operator = self._spawn("operator", [
            "flashgate.operator", *scope,
            "--verifier-url", f"http://127.0.0.1:{self.sidecar_port}",
            "--retry-max-delay", "2",
            "--metrics-addr", "127.0.0.1", "--metrics-port", str(self.metrics_port),
            "--webhook-addr", "127.0.0.1", "--webhook-host", "127.0.0.1",
            "--webhook-port", str(self.webhook_port),
            *(["--webhook-config-name", self.webhook_config] if register_webhook else [])],
            env=env)
        _wait_http(f"http://127.0.0.1:{self.metrics_port}/healthz", 30, self.operator,
                   self.workdir / "operator.log")
        if wait_ready:
            _wait_http(f"http://127.0.0.1:{self.metrics_port}/readyz", 60, self.operator,
                       self.workdir / "operator.log")
        if not register_webhook:
            return
        deadline = time.monotonic() + 20
        while self.kube.kubectl("get", "validatingwebhookconfiguration", self.webhook_config,
                                check=False).returncode != 0:
            assert time.monotonic() < deadline, "the operator did not register its webhook"
            time.sleep(0.2)

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

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics") as response:
            return str(response.read().decode())


@pytest.fixture(scope="package")
def gate_system(kube_with_crds: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GateSystem]:
    system = GateSystem(kube_with_crds, tmp_path_factory.mktemp("gate"))
    system.start_sidecar()
    system.start_operator()
    yield system
    system.stop_operator()
    system.stop_sidecar()
    kube_with_crds.kubectl("delete", "validatingwebhookconfiguration", system.webhook_config,
                           "--ignore-not-found")


@dataclass
class Fleet:
    """A fleet namespace with helpers that make endorsed keys and signed releases."""

    system: GateSystem
    namespace: str
    now: int = field(default_factory=lambda: int(time.time()))

    @property
    def kube(self) -> Cluster:
        return self.system.kube

    def kubectl(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return self.kube.kubectl("-n", self.namespace, *args, **kwargs)

    def apply(self, doc: dict[str, Any], check: bool = True) -> subprocess.CompletedProcess[str]:
        path = self.system.workdir / f"{self.namespace}-{doc['kind']}-{doc['metadata']['name']}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return self.kubectl("apply", "-f", str(path), check=check)

    def key_doc(self, name: str, tier: Tier | str, signer: KeySigner | None = None, *,
                root: KeySigner | None = None, not_before: int | None = None,
                not_after: int | None = None, **extra: Any) -> tuple[KeySigner, dict[str, Any]]:
        signer = signer or generate(Algorithm.ED25519)
        not_before = self.now - 3600 if not_before is None else not_before
        not_after = self.now + 30 * ROOT_DAY if not_after is None else not_after
        endorsement = KeyEndorsement(
            fleet=self.namespace, tier=Tier(tier), key_id=bytes.fromhex(signer.key_id),
            algorithm=signer.algorithm, public_key=signer.spki_der,
            not_before=not_before, not_after=not_after)
        envelope = sign1(root or self.system.root, CT_KEY, endorsement.to_cbor())
        doc = signing_key_doc(name=name, fleet=self.namespace, tier=Tier(tier),
                              algorithm=signer.algorithm, public_pem=signer.public_pem,
                              not_before=not_before, not_after=not_after, endorsement=envelope,
                              **extra)
        return signer, doc

    def signing_key(self, name: str, tier: Tier | str, *, wait: str | None = "Active",
                    **kwargs: Any) -> KeySigner:
        signer, doc = self.key_doc(name, tier, **kwargs)
        self.apply(doc)
        if wait:
            self.wait_phase("signingkey", name, {wait})
        return signer

    def artifact(self, name: str, data: bytes) -> str:
        path = self.system.artifacts / self.namespace / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path.as_uri()

    def release_doc(self, name: str, signers: Sequence[KeySigner], *, tier: Tier | str = "application",
                    product: str = "gw-3000", version: str = "1.0.0", security_version: int = 1,
                    data: bytes = b"firmware image " * 1000, served: bytes | None = None,
                    channel: str = "stable", signed_overrides: dict[str, Any] | None = None
                    ) -> dict[str, Any]:
        """A FirmwareRelease whose spec matches what was signed, unless `signed_overrides`
        changes the signed manifest (mix-and-match) or `served` the bytes at the URL."""
        manifest = ReleaseManifest(
            fleet=self.namespace, product=product, tier=Tier(tier), version=version,
            security_version=security_version, artifact_name=f"{name}.bin",
            artifact_size=len(data), artifact_sha256=hashlib.sha256(data).digest())
        signed = ReleaseManifest(**{**manifest.__dict__, **(signed_overrides or {})})
        envelopes = [sign1(s, CT_RELEASE, signed.to_cbor()) for s in signers]
        url = self.artifact(f"{name}.bin", data if served is None else served)
        doc = release_doc(name=name, manifest=manifest, url=url, channel=channel,
                          signatures=envelopes)
        return doc

    def get(self, kind: str, name: str) -> dict[str, Any]:
        return dict(json.loads(self.kubectl("get", kind, name, "-o", "json").stdout))

    def wait_phase(self, kind: str, name: str, phases: set[str], timeout: float = 40) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        obj: dict[str, Any] = {}
        while time.monotonic() < deadline:
            obj = self.get(kind, name)
            if (obj.get("status") or {}).get("phase") in phases:
                return obj
            time.sleep(0.2)
        raise AssertionError(f"{kind} {name} not in {phases} after {timeout}s: "
                             f"{json.dumps(obj.get('status'), indent=1)}")

    def channel(self, product: str = "gw-3000", channel: str = "stable") -> dict[str, Any]:
        result = self.kubectl("get", "configmap", f"channel.{product}.{channel}", "-o", "json",
                              check=False)
        if result.returncode != 0:
            return {}
        data = json.loads(result.stdout).get("data") or {}
        return {key.removesuffix(".json"): json.loads(value) for key, value in data.items()}

    def floor(self, product: str = "gw-3000", tier: str = "application") -> int | None:
        result = self.kubectl("get", "rollbackfloor", f"{product}.{tier}", "-o", "json", check=False)
        if result.returncode != 0:
            return None
        return int(json.loads(result.stdout)["spec"]["securityVersion"])

    def wait_for(self, predicate: Any, what: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.2)

    def event_reasons(self, name: str) -> list[str]:
        out = self.kubectl("get", "events", "--field-selector", f"involvedObject.name={name}",
                           "-o", "json").stdout
        return [e.get("reason") for e in json.loads(out)["items"]]


@pytest.fixture
def fleet(gate_system: GateSystem) -> Fleet:
    name = gate_system.kube.namespace("fleet")
    return Fleet(gate_system, name)


@pytest.fixture
def no_webhook(gate_system: GateSystem) -> Iterator[None]:
    """Take the admission webhook out of the way, as if it were down with failurePolicy Ignore,
    to show the reconcile loop refuses on its own; restore it afterwards."""
    kube, name = gate_system.kube, gate_system.webhook_config
    saved = json.loads(kube.kubectl("get", "validatingwebhookconfiguration", name, "-o", "json").stdout)
    kube.kubectl("delete", "validatingwebhookconfiguration", name)
    yield
    for key in ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields"):
        saved["metadata"].pop(key, None)
    kube.kubectl("create", "-f", "-", input=json.dumps(saved))
