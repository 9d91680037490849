"""The CRDs in crds/ are generated from flashgate.api.models, structural, and documented; the models
parse and write the objects the API server stores."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from flashgate.api import (
    PATTERN_MESSAGE,
    RESOURCES,
    Algorithm,
    Condition,
    ConditionStatus,
    FirmwareRelease,
    FirmwareReleaseSpec,
    FirmwareReleaseStatus,
    KeyPhase,
    Reason,
    ReleasePhase,
    RollbackFloor,
    RollbackFloorSpec,
    SigningKey,
    SigningKeySpec,
    SigningKeyStatus,
    Tier,
    crdgen,
    rollback_floor_name,
)
from flashgate.api.schema import MAX_ENVELOPE_BASE64, MAX_SIGNATURES

REPO = Path(__file__).resolve().parents[2]
STALE_HINT = "crds/ is stale: run python -m flashgate.api.crdgen and commit crds/"

# RFC 8410's example Ed25519 public key: any well-formed key does for schema tests.
PEM = (
    "-----BEGIN PUBLIC KEY-----\n"
    "MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n"
    "-----END PUBLIC KEY-----\n"
)
ENVELOPE = "0oRDoQEnoFgkeyJpc3MiOiJodHRwczovL2V4YW1wbGUuY29tIn1YQPxw"  # base64 of some bytes


def signing_key_body() -> dict[str, Any]:
    return {
        "apiVersion": "ota.flashgate.dev/v1alpha1",
        "kind": "SigningKey",
        "metadata": {"name": "app-2026b", "namespace": "fleet-a"},
        "spec": {
            "tier": "application",
            "algorithm": "ed25519",
            "publicKey": PEM,
            "notBefore": "2026-01-01T00:00:00Z",
            "notAfter": "2027-01-01T00:00:00Z",
            "endorsement": ENVELOPE,
            "replaces": "app-2026a",
            "overlap": "1h30m",
            "activateAt": "2026-02-01T00:00:00Z",
            "revoked": False,
        },
        "status": {
            "phase": "Staged",
            "keyId": "a" * 64,
            "trustedFrom": "2026-01-01T00:00:00Z",
            "trustedUntil": "2027-01-01T00:00:00Z",
            "nextTransition": "2026-02-01T00:00:00Z",
            "reason": "AwaitingActivation",
            "message": "active from 2026-02-01T00:00:00Z",
            "conditions": [
                {
                    "type": "Endorsed",
                    "status": "True",
                    "observedGeneration": 1,
                    "lastTransitionTime": "2026-01-01T00:00:05Z",
                    "reason": "RootEndorsed",
                    "message": "",
                }
            ],
            "observedGeneration": 1,
        },
    }


def firmware_release_body() -> dict[str, Any]:
    return {
        "apiVersion": "ota.flashgate.dev/v1alpha1",
        "kind": "FirmwareRelease",
        "metadata": {"name": "gw-3000-app-4.2.0", "namespace": "fleet-a"},
        "spec": {
            "tier": "application",
            "product": "gw-3000",
            "version": "4.2.0",
            "securityVersion": 9,
            "channel": "stable",
            "artifact": {
                "url": "s3://firmware/gw-3000/app-4.2.0.bin",
                "name": "gw-3000-app-4.2.0.bin",
                "sha256": "0123456789abcdef" * 4,
                "size": 1048576,
            },
            "signatures": [ENVELOPE],
        },
        "status": {
            "phase": "Published",
            "message": "published",
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "observedGeneration": 1,
                    "lastTransitionTime": "2026-03-01T12:00:00.5Z",
                    "reason": "Published",
                    "message": "published to stable",
                }
            ],
            "verifiedKeyIds": ["b" * 64],
            "verifiedSha256": "0123456789abcdef" * 4,
            "observedGeneration": 1,
            "publishedAt": "2026-03-01T12:00:00Z",
            "publishedTo": "ConfigMap fleet-a/gw-3000.stable key application",
        },
    }


def rollback_floor_body() -> dict[str, Any]:
    return {
        "apiVersion": "ota.flashgate.dev/v1alpha1",
        "kind": "RollbackFloor",
        "metadata": {"name": "gw-3000.application", "namespace": "fleet-a"},
        "spec": {"product": "gw-3000", "tier": "application", "securityVersion": 9},
        "status": {"lastRaisedBy": "gw-3000-app-4.2.0", "lastRaisedAt": "2026-03-01T12:00:00Z",
                   "observedGeneration": 2},
    }


@pytest.fixture(scope="module")
def generated() -> dict[str, str]:
    return crdgen.generate()


@pytest.fixture(scope="module")
def crds(generated: dict[str, str]) -> dict[str, dict[str, Any]]:
    """kind -> the generated CRD, parsed."""
    parsed = [yaml.safe_load(text) for text in generated.values()]
    return {crd["spec"]["names"]["kind"]: crd for crd in parsed}


def schema_of(crd: dict[str, Any]) -> dict[str, Any]:
    return dict(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path or "<root>", node
    for name, child in node.get("properties", {}).items():
        yield from walk(child, f"{path}.{name}")
    if "items" in node:
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


# ---- the committed files -----------------------------------------------------------------------


def test_committed_crds_equal_the_generator_output(generated: dict[str, str]) -> None:
    assert sorted(generated) == ["firmwarereleases.yaml", "revocationlists.yaml",
                                 "rollbackfloors.yaml", "signingkeys.yaml"]
    problems = crdgen.check(REPO / "crds")
    assert not problems, f"{STALE_HINT}\n" + "".join(problems)[:4000]


def test_generation_is_deterministic(generated: dict[str, str]) -> None:
    assert crdgen.generate() == generated


def test_files_say_they_are_generated_and_by_which_command(generated: dict[str, str]) -> None:
    for text in generated.values():
        assert text.startswith("# Generated by `python -m flashgate.api.crdgen`")


def test_check_mode_reports_missing_and_stale_files(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert crdgen.main(["--check", "--out-dir", str(tmp_path)]) == 1
    assert "run python -m flashgate.api.crdgen" in capsys.readouterr().err

    assert crdgen.main(["--out-dir", str(tmp_path)]) == 0
    assert crdgen.main(["--check", "--out-dir", str(tmp_path)]) == 0

    path = tmp_path / "rollbackfloors.yaml"
    path.write_text(path.read_text().replace("name: Floor", "name: Minimum"))
    assert crdgen.main(["--check", "--out-dir", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "-        - name: Minimum" in captured.out and "+        - name: Floor" in captured.out
    assert "stale: run python -m flashgate.api.crdgen" in captured.err


# ---- the schema is structural and documented ---------------------------------------------------


def test_schemas_are_structural(crds: dict[str, dict[str, Any]]) -> None:
    forbidden = {"$ref", "$defs", "anyOf", "oneOf", "allOf", "not", "title", "const",
                 "nullable", PATTERN_MESSAGE}
    for kind, crd in crds.items():
        for path, node in walk(schema_of(crd)):
            assert "type" in node, f"{kind} {path}: no type"
            assert not forbidden & set(node), f"{kind} {path}: {forbidden & set(node)}"
            if node["type"] == "object" and path != ".metadata":
                assert node.get("properties") or node.get("additionalProperties"), \
                    f"{kind} {path}: object without properties"
            for name in node.get("required", []):
                assert name in node["properties"], f"{kind} {path}: required {name} unknown"
            if "default" in node:
                assert node["default"] is not None, f"{kind} {path}: default null"
        text = json.dumps(crd)
        assert "#/$defs" not in text and '"null"' not in text


def test_every_field_has_a_description(crds: dict[str, dict[str, Any]]) -> None:
    for kind, crd in crds.items():
        for path, node in walk(schema_of(crd)):
            if path == ".metadata":  # the API server refuses a description there
                continue
            assert node.get("description", "").strip(), f"{kind} {path}: no description"


def test_enums_document_each_value(crds: dict[str, dict[str, Any]]) -> None:
    enums = 0
    for kind, crd in crds.items():
        for path, node in walk(schema_of(crd)):
            if "enum" not in node:
                continue
            enums += 1
            for value in node["enum"]:
                assert f"\n- {value}: " in node["description"], f"{kind} {path}: {value} undocumented"
    assert enums >= 9


def test_required_fields_and_defaults(crds: dict[str, dict[str, Any]]) -> None:
    release = schema_of(crds["FirmwareRelease"])
    assert release["required"] == ["spec"]
    spec = release["properties"]["spec"]
    assert spec["required"] == ["tier", "product", "version", "securityVersion", "artifact",
                                "signatures"]
    assert spec["properties"]["channel"]["default"] == "stable"
    assert spec["properties"]["artifact"]["required"] == ["url", "name", "sha256", "size"]
    assert spec["properties"]["artifact"]["properties"]["size"]["minimum"] == 1
    assert spec["properties"]["securityVersion"]["minimum"] == 0
    signatures = spec["properties"]["signatures"]
    # Required but may be empty: the webhook refuses an unsigned release, and when it is not
    # there the gate records it as Rejected (an alert), rather than the schema hiding it.
    assert "minItems" not in signatures and signatures["maxItems"] == MAX_SIGNATURES == 16  # docs/format.md step 0
    assert signatures["items"]["maxLength"] == MAX_ENVELOPE_BASE64
    assert signatures["x-kubernetes-list-type"] == "set"
    status = release["properties"]["status"]
    assert "required" not in status
    assert status["properties"]["reason"]["enum"] == [reason.value for reason in Reason]
    conditions = status["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert conditions["items"]["required"] == ["type", "status", "lastTransitionTime", "reason"]

    key = schema_of(crds["SigningKey"])["properties"]["spec"]
    assert key["required"] == ["tier", "algorithm", "publicKey", "notBefore", "notAfter",
                               "endorsement"]
    assert key["properties"]["revoked"] == {**key["properties"]["revoked"], "default": False}
    for name in ("notBefore", "notAfter", "activateAt"):
        assert key["properties"][name]["format"] == "date-time"
    assert "168h" in key["properties"]["overlap"]["description"]

    floor = schema_of(crds["RollbackFloor"])["properties"]["spec"]
    assert floor["required"] == ["product", "tier", "securityVersion"]


def _rules(node: dict[str, Any]) -> dict[str, str]:
    return {rule["rule"]: rule["message"] for rule in node.get("x-kubernetes-validations", [])}


def test_cel_rules_are_in_place(crds: dict[str, dict[str, Any]]) -> None:
    release = schema_of(crds["FirmwareRelease"])["properties"]["spec"]
    assert "immutable" in _rules(release)["self == oldSelf"]
    sha = release["properties"]["artifact"]["properties"]["sha256"]
    assert "pattern" not in sha  # turned into a CEL rule with words
    assert _rules(sha) == {
        "self.matches(r'^[0-9a-f]{64}$')": "artifact.sha256 must be 64 lowercase hex digits: "
        "the SHA-256 of the image, as sha256sum prints it"}

    key = schema_of(crds["SigningKey"])["properties"]["spec"]
    for field in ("tier", "algorithm", "publicKey"):
        assert _rules(key["properties"][field])["self == oldSelf"].startswith(
            f"{field} is immutable")
    assert "a revoked key stays revoked" in _rules(key["properties"]["revoked"])["self || !oldSelf"]
    assert "self.notAfter > self.notBefore" in _rules(key)

    floor = schema_of(crds["RollbackFloor"])
    assert "never goes down" in _rules(floor["properties"]["spec"]["properties"]["securityVersion"])[
        "self >= oldSelf"]
    assert "self.metadata.name == self.spec.product + '.' + self.spec.tier" in _rules(floor)


def test_names_columns_and_subresources(crds: dict[str, dict[str, Any]]) -> None:
    expected = {
        "FirmwareRelease": (["fwr", "fwrelease"], ["Phase", "Tier", "Product", "Version",
                                                    "SecurityVersion", "Reason", "Age"]),
        "SigningKey": (["sk", "signkey"], ["Phase", "Tier", "Algorithm", "KeyID", "Reason",
                                            "Age"]),
        "RollbackFloor": (["rbf"], ["Product", "Tier", "Floor", "Age"]),
    }
    for kind, (short_names, columns) in expected.items():
        crd = crds[kind]
        assert crd["metadata"]["name"] == f"{kind.lower()}s.ota.flashgate.dev"
        assert crd["spec"]["scope"] == "Namespaced"
        assert crd["spec"]["names"]["shortNames"] == short_names
        assert crd["spec"]["names"]["categories"] == ["flashgate"]
        version = crd["spec"]["versions"][0]
        assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
        assert version["subresources"] == {"status": {}}
        names = [column["name"] for column in version["additionalPrinterColumns"]]
        assert [name for name in names if name in columns] == columns
        for column in version["additionalPrinterColumns"]:
            assert column["description"] and column["jsonPath"].startswith(".")


def test_generator_refuses_what_cannot_be_structural() -> None:
    with pytest.raises(crdgen.SchemaError, match="anyOf of 2 schemas"):
        crdgen.structural({"anyOf": [{"type": "string"}, {"type": "integer"}]}, {})
    with pytest.raises(crdgen.SchemaError, match="no type"):
        crdgen.structural({"description": "x"}, {})
    with pytest.raises(crdgen.SchemaError, match="not supported"):
        crdgen.structural({"type": "array", "items": {"type": "string"}, "uniqueItems": True}, {})


# ---- the models -------------------------------------------------------------------------------


@pytest.mark.parametrize("model, body", [
    (SigningKey, signing_key_body()),
    (FirmwareRelease, firmware_release_body()),
    (RollbackFloor, rollback_floor_body()),
])
def test_models_round_trip_bodies(model: type[Any], body: dict[str, Any]) -> None:
    obj = model.model_validate(body)
    dumped = obj.model_dump(by_alias=True, exclude_none=True)
    assert dumped == body
    assert json.loads(json.dumps(dumped)) == body  # JSON-ready as it is: a Kopf patch body
    assert obj.to_k8s() == body


def test_models_read_spec_and_status_alone() -> None:
    body = firmware_release_body()
    spec = FirmwareReleaseSpec.model_validate(body["spec"])
    assert spec.tier is Tier.APPLICATION and spec.security_version == 9
    assert spec.artifact.size == 1048576
    status = FirmwareReleaseStatus.model_validate({**body["status"], "kopf": {"progress": {}}})
    assert status.phase is ReleasePhase.Published
    assert status.published_at == datetime(2026, 3, 1, 12, tzinfo=UTC)
    assert status.conditions[0].last_transition_time.microsecond == 500000

    key = SigningKeySpec.model_validate(signing_key_body()["spec"])
    assert key.algorithm is Algorithm.ED25519
    assert key.effective_overlap() == timedelta(hours=1, minutes=30)


def test_models_build_status_patches() -> None:
    now = datetime(2026, 5, 4, 3, 2, 1, tzinfo=UTC)
    status = SigningKeyStatus(
        phase=KeyPhase.Active, key_id="c" * 64, trusted_until=now + timedelta(days=30),
        conditions=[Condition(type="Ready", status=ConditionStatus.TRUE, reason="Active",
                              last_transition_time=now, observed_generation=3)],
        observed_generation=3)
    assert status.model_dump(by_alias=True, exclude_none=True) == {
        "phase": "Active", "keyId": "c" * 64, "trustedUntil": "2026-06-03T03:02:01Z",
        "conditions": [{"type": "Ready", "status": "True", "observedGeneration": 3,
                        "lastTransitionTime": "2026-05-04T03:02:01Z", "reason": "Active",
                        "message": ""}],
        "observedGeneration": 3}


def test_defaults_apply_as_in_the_api_server() -> None:
    spec = firmware_release_body()["spec"]
    del spec["channel"]
    assert FirmwareReleaseSpec.model_validate(spec).channel == "stable"
    key = signing_key_body()["spec"]
    for name in ("revoked", "overlap", "activateAt"):
        del key[name]
    parsed = SigningKeySpec.model_validate(key)
    assert parsed.revoked is False
    assert parsed.effective_overlap() == timedelta(hours=168)
    del key["replaces"]
    assert SigningKeySpec.model_validate(key).effective_overlap() is None


def _with(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    body = copy.deepcopy(body)
    *parents, last = path.split(".")
    node = body
    for name in parents:
        node = node[name]
    node[last] = value
    return body


@pytest.mark.parametrize("path, value", [
    ("tier", "firmware"),
    ("artifact.sha256", "0123456789ABCDEF" * 4),
    ("artifact.sha256", "0123"),
    ("artifact.size", -1),
    ("artifact.size", 0),
    ("artifact.url", "ftp://firmware.example.com/a.bin"),
    ("artifact.name", "../etc/passwd"),
    ("securityVersion", -1),
    ("securityVersion", 2**32),
    ("product", "GW_3000"),
    ("channel", "Stable"),
    ("signatures", ["not base64!"]),
    ("signatures", [ENVELOPE, ENVELOPE]),
    ("signatures", [ENVELOPE[:8] + f"{i:04d}" for i in range(17)]),
    ("unknownField", 1),
])
def test_invalid_release_specs_are_refused(path: str, value: Any) -> None:
    with pytest.raises(ValidationError):
        FirmwareReleaseSpec.model_validate(_with(firmware_release_body()["spec"], path, value))


@pytest.mark.parametrize("path, value", [
    ("tier", "firmware"),
    ("algorithm", "rsa"),
    ("publicKey", "ssh-ed25519 AAAA"),
    ("notBefore", "2026-01-01T00:00:00"),  # no time zone
    ("overlap", "7d"),
    ("endorsement", "%%%%"),
])
def test_invalid_key_specs_are_refused(path: str, value: Any) -> None:
    with pytest.raises(ValidationError):
        SigningKeySpec.model_validate(_with(signing_key_body()["spec"], path, value))


def test_invalid_floor_is_refused() -> None:
    with pytest.raises(ValidationError):
        RollbackFloorSpec.model_validate({"product": "gw-3000", "tier": "os",
                                          "securityVersion": -1})
    assert rollback_floor_name("gw-3000", "application") == "gw-3000.application"
    assert rollback_floor_name("gw-3000", Tier.OS) == "gw-3000.os"


def test_every_kind_is_generated() -> None:
    assert [model.crd.kind for model in RESOURCES] == ["SigningKey", "FirmwareRelease",
                                                       "RollbackFloor", "RevocationList"]
