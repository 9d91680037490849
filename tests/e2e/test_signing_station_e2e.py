"""The signing station against the real control plane: keys in a SoftHSM2 token, the YAML that
`flashgate endorse` and `flashgate sign` write, `kubectl apply` as a release engineer runs it, and
the operator + sidecar deciding. Also `flashgate status` reading the result back.

The fleet root is the harness's (the session sidecar is configured with it), handed to the
station as a development root file; the tier keys are generated in the HSM and never leave it.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flashgate.signing.devfile import dev_key_output, dev_key_text

from ..signing.softhsm import SoftHsm, flashgate, init_softhsm
from .conftest import Fleet

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def hsm(tmp_path_factory: pytest.TempPathFactory) -> SoftHsm:
    return init_softhsm(tmp_path_factory.mktemp("softhsm-e2e"))


class Station:
    """The station CLI, run in a work directory, with the fleet's kubeconfig for `status`."""

    def __init__(self, hsm: SoftHsm, fleet: Fleet, workdir: Path) -> None:
        self.hsm, self.fleet, self.dir = hsm, fleet, workdir
        self.root = workdir / "root.pem"
        dev_key_output(self.root).write(dev_key_text(fleet.system.root, "root"))

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = self.hsm.env(KUBECONFIG=str(self.fleet.kube.kubeconfig))
        result = flashgate(self.hsm, *args, cwd=self.dir, env=env)
        assert result.returncode == 0, f"flashgate {' '.join(args)}:\n{result.stderr}"
        return result

    def key(self, tier: str, name: str, *, endorse_as: str | None = None) -> str:
        """A key generated in the HSM for `tier`, endorsed (as `endorse_as`, default its own
        tier) by the root, applied; returns its label."""
        label = self.hsm.label(name)
        pem = f"{label}.pub.pem"
        self.run("keygen", "--tier", tier, "--label", label, "--public-key-out", pem)
        not_before = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 3600))
        self.run("endorse", "--root-dev-file", str(self.root), "--key", pem,
                 "--tier", endorse_as or tier, "--fleet", self.fleet.namespace,
                 "--not-before", not_before, "--valid-for", "30d", "--name", name,
                 "-o", f"{name}.yaml")
        self.fleet.kubectl("apply", "-f", str(self.dir / f"{name}.yaml"))
        self.fleet.wait_phase("signingkey", name, {"Active"})
        return label

    def release(self, label: str, name: str, tier: str, data: bytes) -> Path:
        url = self.fleet.artifact(f"{name}.bin", data)
        artifact = Path(url.removeprefix("file://"))
        out = self.dir / f"{name}.yaml"
        self.run("sign", "--key", label, "--tier", tier, "--fleet", self.fleet.namespace,
                 "--product", "gw-3000", "--version", "1.0.0", "--security-version", "3",
                 "--artifact", str(artifact), "--url", url, "--name", name, "-o", str(out))
        return out


@pytest.fixture
def station(hsm: SoftHsm, fleet: Fleet, tmp_path: Path) -> Station:
    return Station(hsm, fleet, tmp_path)


@pytest.fixture
def without_webhook(fleet: Fleet) -> Iterator[None]:
    """The admission webhook out of the way, to see the reconcile loop refuse on its own."""
    kube, name = fleet.kube, fleet.system.webhook_config
    saved = json.loads(kube.kubectl("get", "validatingwebhookconfiguration", name, "-o",
                                    "json").stdout)
    kube.kubectl("delete", "validatingwebhookconfiguration", name)
    yield
    for key in ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields"):
        saved["metadata"].pop(key, None)
    kube.kubectl("create", "-f", "-", input=json.dumps(saved))


def test_hsm_keys_to_a_published_release(station: Station, fleet: Fleet) -> None:
    label = station.key("application", "app-hsm")
    release = station.release(label, "fw-hsm", "application", os.urandom(200_000))
    fleet.kubectl("apply", "-f", str(release))
    obj = fleet.wait_phase("firmwarerelease", "fw-hsm", {"Published", "Rejected"})
    assert obj["status"]["phase"] == "Published", obj["status"]
    assert fleet.channel()["application"]["release"] == "fw-hsm"

    status = station.run("status", "-n", fleet.namespace).stdout
    assert "app-hsm" in status and "Active" in status
    assert any(line.split()[:3] == ["gw-3000", "application", "3"]
               for line in status.splitlines())
    assert any(line.split()[:4] == ["stable", "gw-3000", "application", "fw-hsm"]
               for line in status.splitlines())


def test_key_of_the_wrong_tier_is_refused_at_apply(station: Station, fleet: Fleet) -> None:
    """An HSM key endorsed for os signs an application release: the webhook refuses it."""
    label = station.key("application", "os-key", endorse_as="os")
    release = station.release(label, "fw-wrong", "application", b"image" * 1000)
    result = fleet.kubectl("apply", "-f", str(release), check=False)
    assert result.returncode != 0
    assert "SigningKey os-key of tier os" in result.stderr


def test_key_of_the_wrong_tier_is_rejected_by_reconcile(
        station: Station, fleet: Fleet, without_webhook: None) -> None:
    label = station.key("application", "os-key", endorse_as="os")
    release = station.release(label, "fw-wrong", "application", b"image" * 1000)
    fleet.kubectl("apply", "-f", str(release))
    obj = fleet.wait_phase("firmwarerelease", "fw-wrong", {"Published", "Rejected"})
    assert (obj["status"]["phase"], obj["status"]["reason"]) == (
        "Rejected", "KeyNotTrustedForTier")
