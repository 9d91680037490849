"""Argo CD on flashgate's objects, with real objects of a real run.

- The health checks (argocd/resource_customizations/ota.flashgate.dev/<Kind>/health.lua) run in
  gopher-lua as Argo CD runs them (hack/luaharness) on FirmwareReleases, SigningKeys and
  RollbackFloors in every phase the operator gives them here. With FLASHGATE_CAPTURE_ARGOCD=1 the
  same objects are saved as the checks' testdata with their health_test.yaml (the committed
  testdata come from such a run; tests/argocd/ runs them without a cluster).
- docs/gitops.md's promise: once the operator has processed what a GitOps tool applied, a
  server-side diff of the same manifests against the live objects shows nothing: the operator
  writes no spec and no annotation of theirs, only status.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from flashgate.signing.filekeys import generate
from flashgate.trust import Algorithm

from .conftest import Fleet, GateSystem

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CHECKS = REPO / "argocd" / "resource_customizations" / "ota.flashgate.dev"
CAPTURE = os.environ.get("FLASHGATE_CAPTURE_ARGOCD") == "1"
SECURITY = ("--as=security-officer", "--as-group=system:masters",
            "--as-group=flashgate:security-team")
SAMPLE_FLEET = "gw-fleet"

sys.path.insert(0, str(REPO / "hack"))
import gotools  # noqa: E402


def expected(kind: str, obj: dict[str, Any]) -> dict[str, str]:
    """The health docs/gitops.md promises for an object, from its own status."""
    status, metadata = obj.get("status") or {}, obj["metadata"]
    phase = status.get("phase")
    if kind == "RollbackFloor":
        spec = obj["spec"]
        message = f"floor {spec['securityVersion']} for {spec['product']} {spec['tier']}"
        if status.get("lastRaisedBy"):
            message += f", raised by release {status['lastRaisedBy']}"
        return {"status": "Healthy", "message": message}
    if phase is None:
        return {"status": "Progressing", "message": "Waiting for the flashgate operator"}
    if status.get("observedGeneration") != metadata["generation"]:
        verb = "decide" if kind == "FirmwareRelease" else "evaluate"
        return {"status": "Progressing", "message": "Waiting for the flashgate operator to "
                f"{verb} generation {metadata['generation']}"}
    reason, text = status.get("reason"), status.get("message") or ""
    if kind == "FirmwareRelease":
        said = f"{reason}: {text}" if reason else text
        health = {"Published": "Healthy", "Rejected": "Degraded", "Withdrawn": "Degraded"}
        status_ = health.get(phase, "Progressing")
        return {"status": status_, "message": said if phase == "Published"
                else f"{phase} ({said})"}
    health = {"Active": "Healthy", "Retiring": "Healthy", "Retired": "Healthy",
              "Invalid": "Degraded", "Revoked": "Degraded", "Expired": "Degraded"}
    return {"status": health.get(phase, "Progressing"),
            "message": f"{phase} ({reason or phase}: {text})"}


def sample(obj: dict[str, Any], namespace: str) -> dict[str, Any]:
    """An object as testdata: without managedFields and kubectl's last-applied copy, its fleet
    renamed so the files do not change with each run's random namespace."""
    obj = json.loads(json.dumps(obj).replace(namespace, SAMPLE_FLEET))
    obj["metadata"].pop("managedFields", None)
    annotations = obj["metadata"].get("annotations") or {}
    annotations.pop("kubectl.kubernetes.io/last-applied-configuration", None)
    if not annotations:
        obj["metadata"].pop("annotations", None)
    return dict(obj)


def health(harness: Path, kind: str, obj: dict[str, Any], tmp_path: Path) -> dict[str, str]:
    path = tmp_path / f"{kind}.json"
    path.write_text(json.dumps(obj))
    out = subprocess.run([str(harness), "eval", str(CHECKS / kind / "health.lua"), str(path)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout))


def test_health_checks_on_objects_of_a_real_run(gate_system: GateSystem, fleet: Fleet,
                                                 tmp_path: Path) -> None:
    harness = gotools.install("lua-harness")
    cases: dict[str, dict[str, dict[str, Any]]] = {
        "FirmwareRelease": {}, "SigningKey": {}, "RollbackFloor": {}}
    keys, releases = cases["SigningKey"], cases["FirmwareRelease"]
    day = 86400

    # Keys in each phase.
    app = fleet.signing_key("app", "application")
    keys["active"] = fleet.get("signingkey", "app")
    fleet.signing_key("app-next", "application", replaces="app", activate_at=fleet.now + 5 * day,
                      wait="Staged")
    keys["staged"] = fleet.get("signingkey", "app-next")
    fleet.signing_key("cfg-old", "config")
    fleet.signing_key("cfg", "config", replaces="cfg-old")
    keys["retiring"] = fleet.wait_phase("signingkey", "cfg-old", {"Retiring"})
    fleet.signing_key("os-later", "os", not_before=fleet.now + 2 * day, wait="Pending")
    keys["pending-not-yet-valid"] = fleet.get("signingkey", "os-later")
    fleet.signing_key("boot-old", "bootloader", not_before=fleet.now - 60 * day,
                      not_after=fleet.now - day, wait="Expired")
    keys["expired"] = fleet.get("signingkey", "boot-old")
    fleet.signing_key("drv", "driver", root=generate(Algorithm.ED25519), wait="Invalid")
    keys["invalid"] = fleet.get("signingkey", "drv")
    _, doc = fleet.key_doc("new", "driver")
    keys["new"] = json.loads(fleet.kubectl("create", "-f", "-", "-o", "json",
                                           input=json.dumps(doc)).stdout)

    # Releases in each phase.
    fleet.apply(fleet.release_doc("fw-ok", [app], security_version=4))
    releases["published"] = fleet.wait_phase("firmwarerelease", "fw-ok", {"Published"})
    fleet.apply(fleet.release_doc("fw-tampered", [app], security_version=5,
                                  served=b"firmware IMAGE " * 1000))
    releases["rejected"] = fleet.wait_phase("firmwarerelease", "fw-tampered", {"Rejected"})
    # A release's spec is immutable, so its generation stays 1 and its status is never stale
    # for long; the rule is shown on the published object with its generation one ahead (the
    # only object here not taken as the API server gave it; a SigningKey's stale status below
    # is a real one).
    releases["stale-derived"] = json.loads(json.dumps(releases["published"]))
    releases["stale-derived"]["metadata"]["generation"] += 1
    gate_system.stop_sidecar()
    try:
        fleet.apply(fleet.release_doc("fw-waiting", [app], security_version=6))
        releases["pending-verifier-unavailable"] = fleet.wait_phase(
            "firmwarerelease", "fw-waiting", {"Pending"})
    finally:
        gate_system.start_sidecar()
    fleet.wait_phase("firmwarerelease", "fw-waiting", {"Published"})
    releases["new"] = json.loads(fleet.kubectl(
        "create", "-f", "-", "-o", "json",
        input=json.dumps(fleet.release_doc("fw-new", [app], security_version=7))).stdout)

    # A revocation: the key's stale status right after the edit, then Revoked; what it
    # published is Withdrawn.
    keys["stale"] = json.loads(fleet.kubectl(
        "patch", "signingkey", "app", "--type=merge", "-o", "json",
        "-p", '{"spec": {"revoked": true}}').stdout)
    keys["revoked"] = fleet.wait_phase("signingkey", "app", {"Revoked"})
    releases["withdrawn"] = fleet.wait_phase("firmwarerelease", "fw-waiting", {"Withdrawn"})

    cases["RollbackFloor"]["raised-by-a-release"] = json.loads(fleet.kubectl(
        "get", "rollbackfloor", "gw-3000.application", "-o", "json").stdout)
    floor = {"apiVersion": "ota.flashgate.dev/v1alpha1", "kind": "RollbackFloor",
             "metadata": {"name": "gw-3000.config", "namespace": fleet.namespace},
             "spec": {"product": "gw-3000", "tier": "config", "securityVersion": 12}}
    cases["RollbackFloor"]["set-by-hand"] = json.loads(fleet.kubectl(
        *SECURITY, "create", "-f", "-", "-o", "json", input=json.dumps(floor)).stdout)

    for kind, objects in cases.items():
        tests = []
        for name, obj in sorted(objects.items()):
            want = expected(kind, obj)
            assert health(harness, kind, obj, tmp_path) == want, (kind, name, obj.get("status"))
            tests.append({"healthStatus": expected(kind, sample(obj, fleet.namespace)),
                          "inputPath": f"testdata/{name}.yaml"})
            if CAPTURE:
                (CHECKS / kind / "testdata" / f"{name}.yaml").write_text(
                    yaml.safe_dump(sample(obj, fleet.namespace), sort_keys=False))
        if CAPTURE:
            (CHECKS / kind / "health_test.yaml").write_text(
                "# Objects of a real run (tests/e2e/test_argocd.py, FLASHGATE_CAPTURE_ARGOCD=1).\n"
                + yaml.safe_dump({"tests": tests}, sort_keys=False, width=1000))
    statuses = {kind: {expected(kind, o)["status"] for o in objs.values()}
                for kind, objs in cases.items()}
    assert statuses == {"FirmwareRelease": {"Healthy", "Degraded", "Progressing"},
                        "SigningKey": {"Healthy", "Degraded", "Progressing"},
                        "RollbackFloor": {"Healthy"}}


def test_a_server_side_diff_shows_nothing_the_operator_wrote(gate_system: GateSystem,
                                                              fleet: Fleet) -> None:
    """What Argo CD compares (the applied manifests against the live objects, with its own
    field manager) is unchanged by the operator: it wrote status, nothing else."""
    signer, key = fleet.key_doc("app", "application")
    release = fleet.release_doc("fw-1", [signer], security_version=3)
    manifest = fleet.system.workdir / f"{fleet.namespace}-gitops.yaml"
    manifest.write_text(yaml.safe_dump_all([key, release], sort_keys=False))
    argo = ("--server-side", "--field-manager=argocd-controller")
    fleet.kubectl("apply", *argo, "-f", str(manifest))
    fleet.wait_phase("signingkey", "app", {"Active"})
    fleet.wait_phase("firmwarerelease", "fw-1", {"Published"})

    diff = fleet.kubectl("diff", *argo, "-f", str(manifest), check=False)
    assert diff.returncode == 0, diff.stdout + diff.stderr  # 1 would mean a difference
    assert diff.stdout == ""
    for kind, name in (("signingkey", "app"), ("firmwarerelease", "fw-1")):
        obj = json.loads(fleet.kubectl("get", kind, name, "-o", "json",
                                       "--show-managed-fields").stdout)
        assert "annotations" not in obj["metadata"]
        writers = {(f["manager"], f.get("subresource", "")) for f in
                   obj["metadata"]["managedFields"]}
        # argocd-controller owns what it applied; the operator wrote the status, nothing else.
        assert ("argocd-controller", "") in writers
        others = {(manager, sub) for manager, sub in writers if manager != "argocd-controller"}
        assert others and all(sub == "status" for _, sub in others), writers
