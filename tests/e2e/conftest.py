"""The e2e harness: the real operator and verifier sidecar as separate processes, against the
real API server, exercised with kubectl apply as users do.

`gate_system` (session) runs one sidecar (with a fleet root made for this run) and one operator
serving all namespaces, its admission webhook registered in the API server. `fleet` (per test)
is a fresh namespace with helpers to make endorsed keys and signed releases.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from localgate import LocalGate

from flashgate.signing.filekeys import KeySigner, generate
from flashgate.signing.resources import release_doc, signing_key_doc
from flashgate.trust import Algorithm, Tier
from flashgate.trust.cose import CT_KEY, CT_RELEASE, sign1
from flashgate.trust.payloads import KeyEndorsement, ReleaseManifest

from ..conftest import Cluster

ROOT_DAY = 86400


class GateSystem(LocalGate):
    """The session's gate (hack/localgate.py) with a fleet root made for this run; tests may stop
    and start the operator or the sidecar, or start a second operator. `options` go to LocalGate
    (ports, the operator's identity, its webhook's address and certificate)."""

    def __init__(self, kube: Cluster, workdir: Path, root: KeySigner | None = None,
                 **options: Any) -> None:
        self.kube = kube
        self.root = root or generate(Algorithm.ED25519)
        super().__init__(kubectl=kube.kubectl_path, kubeconfig=kube.kubeconfig, workdir=workdir,
                         roots=[{"publicKey": self.root.public_pem,
                                 "algorithm": str(self.root.algorithm)}], **options)


@pytest.fixture(scope="package")
def gate_system(kube_with_crds: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GateSystem]:
    system = GateSystem(kube_with_crds, tmp_path_factory.mktemp("gate"))
    system.start_sidecar()
    system.start_operator()
    yield system
    system.stop()


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
    to show the reconcile loop refuses on its own; restore it afterwards (unless a restarted
    operator registered its own again meanwhile: that one has its current certificate)."""
    kube, name = gate_system.kube, gate_system.webhook_config
    saved = json.loads(kube.kubectl("get", "validatingwebhookconfiguration", name, "-o", "json").stdout)
    kube.kubectl("delete", "validatingwebhookconfiguration", name)
    yield
    if kube.kubectl("get", "validatingwebhookconfiguration", name, check=False).returncode == 0:
        return
    for key in ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields"):
        saved["metadata"].pop(key, None)
    kube.kubectl("create", "-f", "-", input=json.dumps(saved))
