"""The Helm chart with the real helm (hack/gotools.py) against the session's API server.

The chart is installed as release `flashgate` in namespace `flashgate-system`: the operator's
identity is the one deploy/ (the chart's own rendering) gives the e2e tests. Cluster-wide objects
exist once per cluster, so `chart_cluster` first takes out what a `kubectl apply -f deploy/` of
this session put there (its RBAC and admission policies; not the namespace) and lets the chart
adopt the CRDs already applied (the way a platform moves a kubectl install to Helm: the two
ownership annotations and the managed-by label). At the end it uninstalls the chart and applies
deploy/ again, as the rest of the session expects.

No kubelet runs here: objects are created, containers are not. Where a test needs what the
kubelet would do, `materialize` writes a container's mounted ConfigMaps and Secrets into a
directory (the test plays the kubelet, with the admin's credentials), and the processes run
under the chart's ServiceAccount only (hack/localgate.py).
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gotools
import localgate
import pytest
import yaml

from ..conftest import Cluster

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "flashgate"
VALUES = Path(__file__).resolve().parent / "values"
RELEASE, NAMESPACE = "flashgate", "flashgate-system"
OPERATOR_ACCOUNT = "flashgate-operator"
OPERATOR_USER = f"system:serviceaccount:{NAMESPACE}:{OPERATOR_ACCOUNT}"
# The namespaces the values files in values/ name as fleets.
VALUES_FLEETS = ("chart-fleet-a", "chart-fleet-b")

Doc = dict[str, Any]


def _binary(name: str) -> Path:
    """A Go tool, built on first use where Go is; skipped without Go, a failure in CI."""
    if gotools.find(name) is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not built: hack/setup.sh builds it")
        if shutil.which("go") is None:
            pytest.skip(f"{name} is not built and Go is missing to build it (hack/setup.sh)")
    return gotools.install(name)


@dataclass
class Helm:
    """The pinned helm against the session's cluster, with config and cache of its own."""

    binary: Path
    kube: Cluster
    home: Path

    def run(self, *args: str | Path, check: bool = True,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "HELM_CONFIG_HOME": str(self.home / "config"),
               "HELM_CACHE_HOME": str(self.home / "cache"),
               "HELM_DATA_HOME": str(self.home / "data")}
        result = subprocess.run([str(self.binary), f"--kubeconfig={self.kube.kubeconfig}",
                                 *map(str, args)], capture_output=True, text=True,
                                timeout=timeout, env=env)
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(map(str, args))} failed ({result.returncode}):"
                                 f"\n{result.stderr}{result.stdout}")
        return result

    def template(self, *args: str | Path, chart: Path = CHART, check: bool = True
                 ) -> subprocess.CompletedProcess[str]:
        return self.run("template", RELEASE, chart, "--namespace", NAMESPACE, *args,
                        check=check)

    def docs(self, *args: str | Path, chart: Path = CHART) -> list[Doc]:
        return [d for d in yaml.safe_load_all(self.template(*args, chart=chart).stdout) if d]


def values_file(directory: Path, values: Doc, name: str = "values.yaml") -> Path:
    path = directory / name
    path.write_text(yaml.safe_dump(values))
    return path


def find(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''} in the rendering"
    return found[0]


def container(docs: list[Doc], name: str) -> Doc:
    pod = find(docs, "Deployment")["spec"]["template"]["spec"]
    return next(c for c in pod["containers"] if c["name"] == name)


@pytest.fixture(scope="session")
def helm(kube: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(_binary("helm"), kube, tmp_path_factory.mktemp("helm-home"))


def _docs_of(*paths: Path) -> list[Doc]:
    return [d for path in paths for d in yaml.safe_load_all(path.read_text()) if d]


@dataclass
class ChartCluster:
    """The session's cluster made ready for the chart (see the module's docstring)."""

    kube: Cluster
    helm: Helm
    third_party_crds: Path
    created: list[str] = field(default_factory=list)

    def namespace(self, name: str) -> str:
        if self.kube.kubectl("get", "namespace", name, check=False).returncode != 0:
            self.kube.kubectl("create", "namespace", name)
        return name

    def as_operator(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        """kubectl impersonating the operator's ServiceAccount, with the groups its token has."""
        return self.kube.kubectl(f"--as={OPERATOR_USER}", "--as-group=system:serviceaccounts",
                                 f"--as-group=system:serviceaccounts:{NAMESPACE}",
                                 "--as-group=system:authenticated", *args, check=check)


@pytest.fixture(scope="package")
def chart_cluster(kube: Cluster, helm: Helm) -> Iterator[ChartCluster]:
    if not gotools.third_party_crds_dir().is_dir():
        if os.environ.get("CI"):
            pytest.fail("the third-party CRDs are missing: hack/setup.sh downloads them")
        if shutil.which("go") is None:
            pytest.skip("the third-party CRDs are missing and Go is missing to download them")
    crds = gotools.third_party_crds()
    cluster = ChartCluster(kube, helm, crds)
    for name in (NAMESPACE, *VALUES_FLEETS):
        cluster.namespace(name)
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crds))
    helm.run("uninstall", RELEASE, "-n", NAMESPACE, "--ignore-not-found")
    # A webhook certificate left by an earlier install (uninstall keeps it) is not this one's.
    kube.kubectl("delete", "secret", "-n", NAMESPACE, "flashgate-webhook-tls", "--ignore-not-found")
    # What a `kubectl apply -f deploy/` of this session put there, but the namespace.
    local = _docs_of(*(REPO / "deploy").glob("*.yaml"), *(REPO / "deploy" / "local").glob("*.yaml"))
    kube.kubectl("delete", "--ignore-not-found", "-f", "-", input=yaml.safe_dump_all(
        [d for d in local if d["kind"] != "Namespace"]))
    # The chart adopts the CRDs if they are here already.
    names = [f"crd/{d['metadata']['name']}" for d in _docs_of(*(REPO / "crds").glob("*.yaml"))]
    present = [n for n in names if kube.kubectl("get", n, check=False).returncode == 0]
    if present:
        kube.kubectl("annotate", "--overwrite", *present, f"meta.helm.sh/release-name={RELEASE}",
                     f"meta.helm.sh/release-namespace={NAMESPACE}")
        kube.kubectl("label", "--overwrite", *present, "app.kubernetes.io/managed-by=Helm")
    kube.kubectl("wait", "--for=condition=established", "--timeout=60s", "-f", str(crds))
    yield cluster
    helm.run("uninstall", RELEASE, "-n", NAMESPACE, "--ignore-not-found", check=False)
    kube.kubectl("delete", "secret", "-n", NAMESPACE, "flashgate-webhook-tls", "--ignore-not-found")
    kube.kubectl("label", "namespace", NAMESPACE, "pod-security.kubernetes.io/enforce-",
                 "pod-security.kubernetes.io/enforce-version-", check=False)
    localgate.install(kube.kubectl_path, kube.kubeconfig)


def materialize(kube: Cluster, pod: Doc, container_name: str, root: Path) -> Path:
    """Write what the kubelet would mount into `container_name` (its ConfigMap and Secret
    volumes, read from the cluster) under root/<mountPath>; returns root. Projected
    ServiceAccount tokens are not written: the processes get a TokenRequest token instead."""
    namespace = pod["metadata"]["namespace"]
    spec = pod["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    each = next(c for c in spec["containers"] if c["name"] == container_name)
    for mount in each.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            source = volume["configMap"]
            kind, name = "configmap", source["name"]
        elif "secret" in volume:
            source = volume["secret"]
            kind, name = "secret", source["secretName"]
        else:
            continue
        obj = json.loads(kube.kubectl("get", kind, name, "-n", namespace, "-o", "json").stdout)
        data = {k: v.encode() for k, v in (obj.get("data") or {}).items()} if kind == "configmap" \
            else {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
        items = source.get("items") or [{"key": k, "path": k} for k in data]
        target = root / mount["mountPath"].lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        for item in items:
            (target / item["path"]).write_bytes(data[item["key"]])
    return root


def rebase(text: str, pod: Doc, container_name: str, root: Path) -> str:
    """`text` (a configuration file) with the container's mount paths moved under root."""
    each = next(c for c in pod["spec"]["containers"] if c["name"] == container_name)
    for mount in each.get("volumeMounts", []):
        text = text.replace(mount["mountPath"] + "/", f"{root}{mount['mountPath']}/")
    return text
