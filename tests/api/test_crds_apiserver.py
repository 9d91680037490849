"""The generated CRDs in a real kube-apiserver: they install, kubectl documents and lists them, and
the API server itself refuses what the CEL rules and schemas forbid, in words people understand.

The objects are real: an Ed25519 key endorsed by a throwaway root and a release signed by it, made
with the signing station's document builders, so that the station's output is checked against
the CRDs too, and so that the operator's admission webhook (if another module started it in this
session) has no objection to them. Everything happens in a namespace of this module's own.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest

from flashgate.api import RESOURCES, FirmwareRelease, RollbackFloor, SigningKey
from flashgate.signing.filekeys import KeySigner, generate
from flashgate.signing.resources import release_doc, signing_key_doc
from flashgate.trust import Algorithm, Tier
from flashgate.trust.cose import CT_KEY, CT_RELEASE, sign1
from flashgate.trust.payloads import KeyEndorsement, ReleaseManifest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
DAY = 86400
SECURITY_TEAM = ("--as=security-officer", "--as-group=system:masters",
                 "--as-group=flashgate:security-team")


class Kube(Protocol):
    """What this module needs of the session's `kube` fixture (tests/conftest.py)."""

    kubeconfig: Path

    def kubectl(self, *args: str, input: str | None = None,
                check: bool = True) -> subprocess.CompletedProcess[str]: ...


def eventually(attempt: Callable[[], subprocess.CompletedProcess[str]],
               done: Callable[[subprocess.CompletedProcess[str]], bool],
               timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Repeat `attempt` until `done` (discovery and OpenAPI publication lag behind Established)."""
    deadline = time.monotonic() + timeout
    while True:
        result = attempt()
        if done(result) or time.monotonic() > deadline:
            return result
        time.sleep(0.5)


def refused(result: subprocess.CompletedProcess[str], *phrases: str) -> None:
    """The API server said no, and said why in these words."""
    assert result.returncode != 0, f"accepted, but should have been refused:\n{result.stdout}"
    for phrase in phrases:
        assert phrase in result.stderr, f"{phrase!r} not in the refusal:\n{result.stderr}"


@dataclass
class Fleet:
    """A namespace of this module, with a throwaway root and tier key."""

    kube: Kube
    namespace: str
    root: KeySigner
    now: int

    def kubectl(self, *args: str, input: str | None = None,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        # As a member of the security team: these tests are about the schema's own rules, and
        # deploy/policies.yaml (when a test of this session applied it) lets the team write
        # floors.
        return self.kube.kubectl("-n", self.namespace, *SECURITY_TEAM, *args, input=input,
                                 check=check)

    def create(self, doc: dict[str, Any], check: bool = False) -> subprocess.CompletedProcess[str]:
        return self.kubectl("create", "-f", "-", input=json.dumps(doc), check=check)

    def get(self, kind: str, name: str) -> dict[str, Any]:
        return dict(json.loads(self.kubectl("get", kind, name, "-o", "json").stdout))

    def patch(self, kind: str, name: str, patch: Any, *, kind_of_patch: str = "merge",
              subresource: str | None = None) -> subprocess.CompletedProcess[str]:
        extra = [f"--subresource={subresource}"] if subresource else []
        return self.kubectl("patch", kind, name, f"--type={kind_of_patch}", "-p",
                            json.dumps(patch), *extra, "-o", "json", check=False)

    def key_doc(self, name: str, signer: KeySigner, *, tier: Tier = Tier.APPLICATION,
                not_before: int | None = None, not_after: int | None = None) -> dict[str, Any]:
        not_before = self.now - 3600 if not_before is None else not_before
        not_after = self.now + 30 * DAY if not_after is None else not_after
        endorsement = KeyEndorsement(
            fleet=self.namespace, tier=tier, key_id=bytes.fromhex(signer.key_id),
            algorithm=signer.algorithm, public_key=signer.spki_der, not_before=not_before,
            not_after=not_after)
        return signing_key_doc(
            name=name, fleet=self.namespace, tier=tier, algorithm=signer.algorithm,
            public_pem=signer.public_pem, not_before=not_before, not_after=not_after,
            endorsement=sign1(self.root, CT_KEY, endorsement.to_cbor()))

    def release_doc(self, name: str, signer: KeySigner, *, product: str = "gw-3000",
                    security_version: int = 7) -> dict[str, Any]:
        data = f"firmware image of {name}".encode() * 100
        manifest = ReleaseManifest(
            fleet=self.namespace, product=product, tier=Tier.APPLICATION, version="4.2.0",
            security_version=security_version, artifact_name=f"{name}.bin",
            artifact_size=len(data), artifact_sha256=hashlib.sha256(data).digest())
        doc = release_doc(name=name, manifest=manifest,
                          url=f"https://firmware.example.com/{name}.bin", channel="stable",
                          signatures=[sign1(signer, CT_RELEASE, manifest.to_cbor())])
        del doc["spec"]["channel"]  # left to the schema's default
        return doc

    def create_release(self, doc: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        # If the operator's webhook runs in this session, it knows the key only once its index
        # caught up with the SigningKey created just before.
        return eventually(lambda: self.create(doc),
                          lambda result: result.returncode == 0 or "UnknownKey" not in result.stderr,
                          timeout=20)


@pytest.fixture(scope="module")
def crds(kube: Kube) -> Kube:
    kube.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
    return kube


@pytest.fixture(scope="module")
def fleet(crds: Kube) -> Iterator[Fleet]:
    namespace = f"api-crds-{uuid.uuid4().hex[:8]}"
    crds.kubectl("wait", "--for=condition=established", "--timeout=60s",
                 *(f"crd/{model.crd.crd_name}" for model in RESOURCES))
    crds.kubectl("create", "namespace", namespace)
    yield Fleet(crds, namespace, generate(Algorithm.ED25519), int(time.time()))
    crds.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


@pytest.fixture(scope="module")
def signer() -> KeySigner:
    return generate(Algorithm.ED25519)


@pytest.fixture(scope="module")
def key(fleet: Fleet, signer: KeySigner) -> str:
    fleet.create(fleet.key_doc("app-key", signer), check=True)
    return "app-key"


@pytest.fixture(scope="module")
def release(fleet: Fleet, key: str, signer: KeySigner) -> str:
    result = fleet.create_release(fleet.release_doc("gw-3000-app-4.2.0", signer))
    assert result.returncode == 0, result.stderr
    return "gw-3000-app-4.2.0"


@pytest.fixture(scope="module")
def floor(fleet: Fleet) -> str:
    fleet.create({"apiVersion": "ota.flashgate.dev/v1alpha1", "kind": "RollbackFloor",
                  "metadata": {"name": "gw-5000.application"},
                  "spec": {"product": "gw-5000", "tier": "application", "securityVersion": 5}},
                 check=True)
    return "gw-5000.application"


# ---- installation, documentation, listing -----------------------------------------------------


def test_crds_are_established(crds: Kube) -> None:
    for model in RESOURCES:
        result = crds.kubectl("wait", "--for=condition=established", "--timeout=60s",
                              f"crd/{model.crd.crd_name}")
        assert "condition met" in result.stdout


def test_explain_prints_the_field_descriptions(crds: Kube) -> None:
    def explain(path: str) -> str:
        result = eventually(lambda: crds.kubectl("explain", path, check=False),
                            lambda result: result.returncode == 0)
        assert result.returncode == 0, result.stderr
        return " ".join(result.stdout.split())  # kubectl wraps lines at its own width

    tier = explain("firmwarerelease.spec.tier")
    assert "only SigningKeys of this tier, trusted now, may sign it" in tier
    assert "- bootloader: boot code" in tier and "- config: configuration" in tier
    assert "a revoked key stays revoked" in explain("signingkey.spec.revoked")
    assert "never decreases" in explain("rollbackfloor.spec.securityVersion")


def test_valid_objects_are_stored_with_their_defaults(fleet: Fleet, key: str, release: str,
                                                      floor: str) -> None:
    stored_key = fleet.get("signingkey", key)
    assert stored_key["spec"]["revoked"] is False
    stored_release = fleet.get("firmwarerelease", release)
    assert stored_release["spec"]["channel"] == "stable"
    # What the API server stores is what the models read.
    assert SigningKey.model_validate(stored_key).spec.tier == "application"
    assert FirmwareRelease.model_validate(stored_release).spec.security_version == 7
    assert RollbackFloor.model_validate(fleet.get("rollbackfloor", floor)).spec.security_version == 5


def test_get_flashgate_lists_every_kind(fleet: Fleet, key: str, release: str, floor: str) -> None:
    expected = {f"signingkey.ota.flashgate.dev/{key}",
                f"firmwarerelease.ota.flashgate.dev/{release}",
                f"rollbackfloor.ota.flashgate.dev/{floor}"}
    result = eventually(lambda: fleet.kubectl("get", "flashgate", "-o", "name", check=False),
                        lambda result: expected <= set(result.stdout.split()))
    assert expected <= set(result.stdout.split()), result.stderr
    assert fleet.kubectl("get", "fwr,fwrelease,sk,signkey,rbf", "-o", "name").stdout


def test_printer_columns(fleet: Fleet, key: str, release: str, floor: str) -> None:
    def header(*args: str) -> list[str]:
        return fleet.kubectl("get", *args).stdout.splitlines()[0].split()

    assert header("fwr") == ["NAME", "PHASE", "TIER", "PRODUCT", "VERSION", "SECURITYVERSION",
                             "REASON", "AGE"]
    assert header("sk") == ["NAME", "PHASE", "TIER", "UNTIL", "REASON", "AGE"]
    assert {"ALGORITHM", "KEYID"} <= set(header("sk", "-o", "wide"))
    assert header("rbf") == ["NAME", "PRODUCT", "TIER", "FLOOR", "AGE"]
    row = fleet.kubectl("get", "rbf", floor, "--no-headers").stdout.split()
    assert row[:4] == [floor, "gw-5000", "application", "5"]


# ---- what the API server refuses --------------------------------------------------------------


def test_unknown_tier_is_refused(fleet: Fleet, signer: KeySigner) -> None:
    doc = fleet.release_doc("bad-tier", signer)
    doc["spec"]["tier"] = "firmware"
    refused(fleet.create(doc), 'spec.tier: Unsupported value: "firmware"',
            '"bootloader", "os", "application", "driver", "config"')
    key = fleet.key_doc("bad-tier-key", generate(Algorithm.ED25519))
    key["spec"]["tier"] = "kernel"
    refused(fleet.create(key), 'spec.tier: Unsupported value: "kernel"')


def test_malformed_sha256_is_refused(fleet: Fleet, signer: KeySigner) -> None:
    for bad in ("ABCDEF" + "0" * 58, "abc123", "g" * 64):
        doc = fleet.release_doc("bad-sha", signer)
        doc["spec"]["artifact"]["sha256"] = bad
        refused(fleet.create(doc), "artifact.sha256 must be 64 lowercase hex digits")


def test_malformed_release_fields_are_refused(fleet: Fleet, signer: KeySigner) -> None:
    doc = fleet.release_doc("bad-fields", signer)
    doc["spec"]["artifact"]["url"] = "ftp://firmware.example.com/a.bin"
    doc["spec"]["artifact"]["size"] = 0
    doc["spec"]["product"] = "GW_3000"
    doc["spec"]["signatures"] = ["not base64!"]
    result = fleet.create(doc)
    refused(result, "spec.artifact.size", "should be greater than or equal to 1")
    doc["spec"]["artifact"]["size"] = 10
    refused(fleet.create(doc),
            "artifact.url must start with https://, s3:// or file://",
            "product must be a DNS label",
            "each signature must be standard base64")
    doc = fleet.release_doc("dup-signatures", signer)
    doc["spec"]["signatures"] *= 2
    refused(fleet.create(doc), "spec.signatures[1]: Duplicate value")


def test_release_spec_is_immutable(fleet: Fleet, release: str) -> None:
    message = "FirmwareRelease spec is immutable: create a new FirmwareRelease for a new build"
    refused(fleet.patch("fwr", release, {"spec": {"securityVersion": 8}}), message)
    refused(fleet.patch("fwr", release, {"spec": {"channel": "beta"}}), message)
    refused(fleet.patch("fwr", release, {"spec": {"artifact": {"url": "https://evil.example/x"}}}),
            message)
    # The operator still writes status: immutability is the spec's only.
    status = fleet.patch("fwr", release, {"status": {"phase": "Verifying"}},
                         subresource="status")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["status"]["phase"] == "Verifying"


def test_signing_key_public_key_tier_and_algorithm_are_immutable(fleet: Fleet, key: str) -> None:
    other = generate(Algorithm.ED25519).public_pem
    refused(fleet.patch("sk", key, {"spec": {"publicKey": other}}),
            "spec.publicKey", "publicKey is immutable: a new key is a new SigningKey")
    refused(fleet.patch("sk", key, {"spec": {"tier": "os"}}), "spec.tier", "tier is immutable")
    refused(fleet.patch("sk", key, {"spec": {"algorithm": "ecdsa-p256-sha256"}}),
            "spec.algorithm", "algorithm is immutable")


def test_a_revoked_key_stays_revoked(fleet: Fleet) -> None:
    fleet.create(fleet.key_doc("revoked-key", generate(Algorithm.ED25519)), check=True)
    revoke = fleet.patch("sk", "revoked-key", {"spec": {"revoked": True}})
    assert revoke.returncode == 0, revoke.stderr
    message = "a revoked key stays revoked"
    refused(fleet.patch("sk", "revoked-key", {"spec": {"revoked": False}}), message)
    refused(fleet.patch("sk", "revoked-key", [{"op": "remove", "path": "/spec/revoked"}],
                        kind_of_patch="json"), message)  # removed, it defaults to false
    assert fleet.get("sk", "revoked-key")["spec"]["revoked"] is True


def test_key_validity_must_be_ordered(fleet: Fleet) -> None:
    doc = fleet.key_doc("backwards-key", generate(Algorithm.ED25519))
    doc["spec"]["notBefore"], doc["spec"]["notAfter"] = doc["spec"]["notAfter"], doc["spec"]["notBefore"]
    refused(fleet.create(doc), "notAfter must be later than notBefore")
    doc = fleet.key_doc("self-replacing-key", generate(Algorithm.ED25519))
    doc["spec"]["replaces"] = "self-replacing-key"
    refused(fleet.create(doc), "a SigningKey cannot replace itself")


def test_rollback_floor_never_goes_down(fleet: Fleet, floor: str) -> None:
    refused(fleet.patch("rbf", floor, {"spec": {"securityVersion": 4}}),
            "spec.securityVersion", "the rollback floor never goes down")
    assert fleet.get("rbf", floor)["spec"]["securityVersion"] == 5
    raised = fleet.patch("rbf", floor, {"spec": {"securityVersion": 9}})
    assert raised.returncode == 0, raised.stderr
    assert fleet.get("rbf", floor)["spec"]["securityVersion"] == 9
    refused(fleet.patch("rbf", floor, {"spec": {"securityVersion": 5}}),
            "the rollback floor never goes down")
    refused(fleet.patch("rbf", floor, {"spec": {"tier": "os"}}), "tier is immutable")


def test_one_rollback_floor_per_product_and_tier(fleet: Fleet) -> None:
    result = fleet.create({"apiVersion": "ota.flashgate.dev/v1alpha1", "kind": "RollbackFloor",
                           "metadata": {"name": "a-fresh-low-floor"},
                           "spec": {"product": "gw-5000", "tier": "application",
                                    "securityVersion": 0}})
    refused(result, "must be named gw-5000.application")
