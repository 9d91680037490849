"""Argo CD health checks (argocd/resource_customizations/ota.flashgate.dev/<Kind>/) in gopher-lua
as Argo CD runs them (hack/luaharness), on the objects captured from a real run
(tests/e2e/test_argocd.py); docs/gitops.md's argocd-cm block carries exactly these scripts."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHECKS = REPO / "argocd" / "resource_customizations" / "ota.flashgate.dev"
KINDS = ("FirmwareRelease", "SigningKey", "RollbackFloor")
sys.path.insert(0, str(REPO / "hack"))

import gotools  # noqa: E402


@pytest.fixture(scope="module")
def harness() -> Path:
    return gotools.install("lua-harness")


@pytest.mark.parametrize("kind", KINDS)
def test_health_checks_pass_their_argo_cd_tests(harness: Path, kind: str) -> None:
    suite = yaml.safe_load((CHECKS / kind / "health_test.yaml").read_text())["tests"]
    result = subprocess.run([str(harness), "test", str(CHECKS / kind)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(suite)} passed, 0 failed" in result.stdout
    # Every captured object is a case.
    assert {c["inputPath"] for c in suite} == \
        {f"testdata/{p.name}" for p in (CHECKS / kind / "testdata").iterdir()}


def test_the_cases_cover_every_phase_the_checks_name() -> None:
    seen: dict[str, set[tuple[str | None, str]]] = {}
    for kind in ("FirmwareRelease", "SigningKey"):
        seen[kind] = set()
        for case in yaml.safe_load((CHECKS / kind / "health_test.yaml").read_text())["tests"]:
            obj = yaml.safe_load((CHECKS / kind / case["inputPath"]).read_text())
            seen[kind].add(((obj.get("status") or {}).get("phase"), case["healthStatus"]["status"]))
    # (Published, Progressing) is the status of an older generation.
    assert seen["FirmwareRelease"] == {
        (None, "Progressing"), ("Pending", "Progressing"), ("Published", "Healthy"),
        ("Published", "Progressing"), ("Rejected", "Degraded"), ("Withdrawn", "Degraded")}
    assert seen["SigningKey"] == {
        (None, "Progressing"), ("Pending", "Progressing"), ("Staged", "Progressing"),
        ("Active", "Healthy"), ("Retiring", "Healthy"), ("Invalid", "Degraded"),
        ("Revoked", "Degraded"), ("Expired", "Degraded"), ("Active", "Progressing")}


def test_a_wrong_verdict_fails_the_harness(harness: Path, tmp_path: Path) -> None:
    """The harness is not a rubber stamp: a case expecting Healthy for a Rejected release
    fails."""
    kind = CHECKS / "FirmwareRelease"
    (tmp_path / "testdata").mkdir()
    (tmp_path / "testdata" / "rejected.yaml").write_text(
        (kind / "testdata" / "rejected.yaml").read_text())
    (tmp_path / "health.lua").write_text((kind / "health.lua").read_text())
    (tmp_path / "health_test.yaml").write_text(yaml.safe_dump({"tests": [
        {"healthStatus": {"status": "Healthy", "message": "published"},
         "inputPath": "testdata/rejected.yaml"}]}))
    result = subprocess.run([str(harness), "test", str(tmp_path)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 1
    assert "FAIL testdata/rejected.yaml" in result.stdout and '"status":"Degraded"' in \
        result.stdout


def test_docs_gitops_carries_the_scripts_verbatim() -> None:
    text = (REPO / "docs" / "gitops.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.DOTALL)
    (cm,) = [yaml.safe_load(b) for b in blocks if "kind: ConfigMap" in b]
    assert cm["metadata"]["name"] == "argocd-cm"
    assert cm["data"] == {f"resource.customizations.health.ota.flashgate.dev_{kind}":
                          (CHECKS / kind / "health.lua").read_text() for kind in KINDS}
