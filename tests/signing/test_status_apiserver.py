"""`flashgate status` against a real API server, with no operator running in the fleet."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from ..conftest import Cluster
from .softhsm import SoftHsm, flashgate, init_softhsm

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def hsm(tmp_path_factory: pytest.TempPathFactory) -> SoftHsm:
    return init_softhsm(tmp_path_factory.mktemp("softhsm-status"))


def test_status_reads_a_real_api_server(kube_with_crds: Cluster, hsm: SoftHsm,
                                        tmp_path: Path) -> None:
    """`flashgate status` against the API server alone (no operator): the objects as the
    operator would have left them, status written through the status subresource."""
    kube = kube_with_crds
    ns = kube.namespace("status")
    env = hsm.env(KUBECONFIG=str(kube.kubeconfig))
    root = tmp_path / "root.pem"
    key = tmp_path / "app.pem"
    for args in (["keygen", "--root", "--dev-file", str(root)],
                 ["keygen", "--tier", "application", "--dev-file", str(key)],
                 ["endorse", "--root-dev-file", str(root), "--key", str(key), "--tier",
                  "application", "--fleet", ns, "--not-before", "2026-01-01T00:00:00Z",
                  "--valid-for", "365d", "--name", "app-2026", "-o", "app.yaml"]):
        result = flashgate(hsm, *args, cwd=tmp_path, env=env)
        assert result.returncode == 0, result.stderr
    kube.kubectl("apply", "-n", ns, "-f", str(tmp_path / "app.yaml"))
    kube.kubectl("patch", "signingkey", "app-2026", "-n", ns, "--subresource=status",
                 "--type=merge", "-p", json.dumps({"status": {
                     "phase": "Active", "keyId": "3f2a" * 16,
                     "trustedFrom": "2026-01-01T00:00:00Z",
                     "trustedUntil": "2027-01-01T00:00:00Z"}}))
    kube.kubectl("apply", "-n", ns, "--as=security-officer", "--as-group=system:masters",
                 "--as-group=flashgate:security-team", "-f", "-", input=json.dumps({
        "apiVersion": "ota.flashgate.dev/v1alpha1", "kind": "RollbackFloor",
        "metadata": {"name": "gw-3000.application"},
        "spec": {"product": "gw-3000", "tier": "application", "securityVersion": 7}}))
    job = {"apiVersion": "ota.flashgate.dev/v1alpha1", "kind": "JobDocument", "fleet": ns,
           "product": "gw-3000", "channel": "stable", "tier": "application",
           "release": "gw-3000-4.2.0", "version": "4.2.0", "securityVersion": 7,
           "artifact": {"url": "https://x/fw.bin", "sha256": "00" * 32, "size": 1},
           "signatures": ["AAAA"], "publishedAt": "2026-02-01T00:00:00Z"}
    kube.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "channel.gw-3000.stable", "labels": {
            "app.kubernetes.io/managed-by": "flashgate", "ota.flashgate.dev/kind": "channel"}},
        "data": {"application.json": json.dumps(job)}}))

    result = flashgate(hsm, "status", "-n", ns, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    lines = [line.split() for line in result.stdout.splitlines()]
    assert ["application", "app-2026", "Active", "3f2a3f2a3f2a", "2026-01-01T00:00:00Z",
            "2027-01-01T00:00:00Z"] in lines
    assert ["gw-3000", "application", "7"] in lines
    assert ["stable", "gw-3000", "application", "gw-3000-4.2.0", "4.2.0", "7",
            "2026-02-01T00:00:00Z"] in lines
    assert "no trusted key for: bootloader, os, driver, config" in result.stdout

    missing = flashgate(hsm, "status", "-n", ns, "--context", "nope", cwd=tmp_path, env=env)
    assert missing.returncode == 1 and "error: cannot load the kubeconfig" in missing.stderr
