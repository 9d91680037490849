"""Shared fixtures. `kube` is a real Kubernetes API server for the whole session.

By default it is etcd + kube-apiserver started from hack/controlplane.py (built from source and
cached on first use). FLASHGATE_KUBECONFIG=path runs the e2e suite against an existing cluster
instead (e.g. kind, see kind-config.yaml).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "hack"))

import controlplane  # noqa: E402
import localgate  # noqa: E402


@dataclass
class Cluster:
    """What the tests need of a cluster: a kubeconfig and the real kubectl."""

    kubeconfig: Path
    kubectl_path: Path

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 60) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(self.kubectl_path), f"--kubeconfig={self.kubeconfig}", *args],
                                input=input, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n"
                                 f"{result.stderr}{result.stdout}")
        return result

    def apply_crds(self) -> None:
        """The CRDs, the admission policies and the operator's identity and RBAC (deploy/), and
        what a local run adds (deploy/local: the operator registers its own webhook)."""
        localgate.install(self.kubectl_path, self.kubeconfig)

    def namespace(self, prefix: str) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:6]}"
        self.kubectl("create", "namespace", name)
        return name


@pytest.fixture(scope="session")
def kube() -> Iterator[Cluster]:
    external = os.environ.get("FLASHGATE_KUBECONFIG")
    if external:
        kubectl = shutil.which("kubectl")
        if kubectl is None:
            kubectl = str(controlplane.build() / "kubectl")
        yield Cluster(Path(external), Path(kubectl))
        return
    with controlplane.ControlPlane() as plane:
        yield Cluster(plane.kubeconfig, plane.binaries / "kubectl")


@pytest.fixture(scope="session")
def kube_with_crds(kube: Cluster) -> Cluster:
    kube.apply_crds()
    return kube
