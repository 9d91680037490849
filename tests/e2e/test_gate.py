"""The gate end to end: real API server, real operator and sidecar processes, kubectl apply.

One test per rejection reason of docs/design.md, the good path, the admission webhook's refusals,
the sidecar down and back, an operator killed in the middle of a verification, and a release
deleted after publishing. For reasons the webhook already refuses at apply time, the reconcile
path is tested with the webhook taken out of the way: it is fast feedback, never the only gate.
"""
from __future__ import annotations

from typing import Any

import pytest

from flashgate.signing.filekeys import generate
from flashgate.trust import Algorithm

from .conftest import Fleet, GateSystem

pytestmark = pytest.mark.e2e


def _status(obj: dict[str, Any]) -> dict[str, Any]:
    return dict(obj.get("status") or {})


def _condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in _status(obj)["conditions"] if c["type"] == type_)


def assert_rejected(fleet: Fleet, name: str, reason: str) -> dict[str, Any]:
    obj = fleet.wait_phase("firmwarerelease", name, {"Rejected", "Published"})
    status = _status(obj)
    assert status["phase"] == "Rejected", status
    assert status["reason"] == reason, status
    assert _condition(obj, "Ready")["status"] == "False"
    assert status["observedGeneration"] == obj["metadata"]["generation"]
    assert fleet.channel() == {}, "a rejected release must publish nothing"
    fleet.wait_for(lambda: reason in fleet.event_reasons(name), f"a {reason} event")
    return obj


# ---- the good path ---------------------------------------------------------------------------


def test_good_release_is_published_with_floor_job_document_event_and_conditions(fleet: Fleet) -> None:
    app = fleet.signing_key("app-2026", "application")
    fleet.apply(fleet.release_doc("app-4-2-0", [app], version="4.2.0", security_version=7))
    obj = fleet.wait_phase("firmwarerelease", "app-4-2-0", {"Published", "Rejected"})
    status = _status(obj)
    assert status["phase"] == "Published", status
    assert status["verifiedKeyIds"] == [app.key_id]
    assert status["verifiedSha256"] == obj["spec"]["artifact"]["sha256"]
    assert status["publishedTo"] == f"ConfigMap {fleet.namespace}/channel.gw-3000.stable key application.json"
    for type_ in ("SignatureVerified", "RollbackChecked", "IntegrityVerified", "Ready"):
        assert _condition(obj, type_)["status"] == "True", type_
    assert fleet.floor() == 7
    document = fleet.channel()["application"]
    assert document["release"] == "app-4-2-0"
    assert document["securityVersion"] == 7
    assert document["signatures"] == obj["spec"]["signatures"]
    assert document["publishedAt"] == status["publishedAt"]
    assert "Published" in fleet.event_reasons("app-4-2-0")
    # The printer columns show it the way a person reads it.
    table = fleet.kubectl("get", "firmwarereleases").stdout
    assert "app-4-2-0" in table and "Published" in table and "application" in table


def test_es256_key_and_two_key_bootloader_threshold(fleet: Fleet) -> None:
    boot1 = fleet.signing_key("boot-a", "bootloader", signer=generate(Algorithm.ES256))
    boot2 = fleet.signing_key("boot-b", "bootloader")
    fleet.apply(fleet.release_doc("boot-2", [boot1, boot2], tier="bootloader", security_version=2))
    status = _status(fleet.wait_phase("firmwarerelease", "boot-2", {"Published", "Rejected"}))
    assert status["phase"] == "Published", status
    assert sorted(status["verifiedKeyIds"]) == sorted([boot1.key_id, boot2.key_id])


# ---- one test per rejection reason ---------------------------------------------------------


def test_signature_invalid(fleet: Fleet) -> None:
    app = fleet.signing_key("app", "application")
    doc = fleet.release_doc("tampered-sig", [app])
    sig = bytearray(__import__("base64").b64decode(doc["spec"]["signatures"][0]))
    sig[-1] ^= 0x01  # the last byte is inside the signature bstr
    doc["spec"]["signatures"] = [__import__("base64").b64encode(bytes(sig)).decode()]
    fleet.apply(doc)
    assert_rejected(fleet, "tampered-sig", "SignatureInvalid")


def test_threshold_not_met_for_bootloader_with_one_signature(fleet: Fleet) -> None:
    boot = fleet.signing_key("boot-a", "bootloader")
    fleet.signing_key("boot-b", "bootloader")
    fleet.apply(fleet.release_doc("boot-one-sig", [boot], tier="bootloader"))
    assert_rejected(fleet, "boot-one-sig", "ThresholdNotMet")


def test_threshold_counts_one_key_signing_twice_once(fleet: Fleet) -> None:
    # ES256 signatures are randomized: two envelopes by one key differ byte for byte.
    boot = fleet.signing_key("boot-a", "bootloader", signer=generate(Algorithm.ES256))
    fleet.apply(fleet.release_doc("boot-same-twice", [boot, boot], tier="bootloader"))
    assert_rejected(fleet, "boot-same-twice", "ThresholdNotMet")


def test_manifest_mismatch_signed_version_differs(fleet: Fleet) -> None:
    app = fleet.signing_key("app", "application")
    fleet.apply(fleet.release_doc("mix-match", [app], version="4.2.0",
                                  signed_overrides={"version": "4.1.0"}))
    obj = assert_rejected(fleet, "mix-match", "ManifestMismatch")
    assert "version" in _status(obj)["message"]


def test_hash_mismatch_when_served_bytes_differ(fleet: Fleet) -> None:
    app = fleet.signing_key("app", "application")
    data = b"A" * 8192
    fleet.apply(fleet.release_doc("tampered-artifact", [app], data=data, served=b"B" * 8192))
    obj = assert_rejected(fleet, "tampered-artifact", "HashMismatch")
    assert _condition(obj, "SignatureVerified")["status"] == "True"
    assert _condition(obj, "IntegrityVerified")["status"] == "False"


def test_size_mismatch_when_artifact_truncated(fleet: Fleet) -> None:
    app = fleet.signing_key("app", "application")
    data = b"A" * 8192
    fleet.apply(fleet.release_doc("truncated", [app], data=data, served=data[:4096]))
    assert_rejected(fleet, "truncated", "SizeMismatch")


def test_artifact_unavailable(fleet: Fleet) -> None:
    app = fleet.signing_key("app", "application")
    doc = fleet.release_doc("missing-artifact", [app])
    doc["spec"]["artifact"]["url"] += ".gone"
    fleet.apply(doc)
    assert_rejected(fleet, "missing-artifact", "ArtifactUnavailable")


@pytest.mark.parametrize("url", [
    "https://169.254.169.254/latest/meta-data/fw.bin",   # cloud metadata service
    "https://kubernetes.default.svc/fw.bin",             # the cluster's own API
    "https://127.0.0.1:6443/fw.bin",                     # loopback, not allow-listed
])
def test_artifact_url_not_allowed(fleet: Fleet, url: str) -> None:
    app = fleet.signing_key("app", "application")
    doc = fleet.release_doc("bad-url", [app])
    doc["spec"]["artifact"]["url"] = url
    fleet.apply(doc)
    assert_rejected(fleet, "bad-url", "ArtifactURLNotAllowed")


def test_fast_forward_rejected(fleet: Fleet) -> None:
    app = fleet.signing_key("app", "application")
    fleet.apply(fleet.release_doc("base", [app], security_version=5))
    fleet.wait_phase("firmwarerelease", "base", {"Published"})
    fleet.apply(fleet.release_doc("jump", [app], security_version=5 + 101))
    assert_rejected_keep_channel(fleet, "jump", "FastForwardRejected")
    assert fleet.floor() == 5


def assert_rejected_keep_channel(fleet: Fleet, name: str, reason: str) -> None:
    """A rejection in a fleet whose channel already publishes something: it must not change."""
    before = fleet.channel()
    status = _status(fleet.wait_phase("firmwarerelease", name, {"Rejected", "Published"}))
    assert (status["phase"], status["reason"]) == ("Rejected", reason), status
    assert fleet.channel() == before


def test_rollback_rejected_by_reconcile_when_webhook_is_down(fleet: Fleet, no_webhook: None) -> None:
    app = fleet.signing_key("app", "application")
    fleet.apply(fleet.release_doc("v7", [app], security_version=7))
    fleet.wait_phase("firmwarerelease", "v7", {"Published"})
    fleet.apply(fleet.release_doc("v4", [app], security_version=4))
    assert_rejected_keep_channel(fleet, "v4", "RollbackRejected")
    assert fleet.floor() == 7


def test_equal_security_version_is_allowed(fleet: Fleet) -> None:
    app = fleet.signing_key("app", "application")
    fleet.apply(fleet.release_doc("v7a", [app], security_version=7, version="7.0.0"))
    fleet.wait_phase("firmwarerelease", "v7a", {"Published"})
    fleet.apply(fleet.release_doc("v7b", [app], security_version=7, version="7.0.1"))
    assert _status(fleet.wait_phase("firmwarerelease", "v7b", {"Published", "Rejected"}))["phase"] == "Published"
    assert fleet.channel()["application"]["version"] == "7.0.1"


def test_key_not_trusted_for_tier_by_reconcile(fleet: Fleet, no_webhook: None) -> None:
    config_key = fleet.signing_key("cfg", "config")
    fleet.apply(fleet.release_doc("cfg-as-os", [config_key], tier="os"))
    obj = assert_rejected(fleet, "cfg-as-os", "KeyNotTrustedForTier")
    assert "trusted for tier config, not os" in _status(obj)["message"]


def test_config_key_on_a_two_key_bootloader_is_below_threshold(fleet: Fleet, no_webhook: None) -> None:
    """docs/format.md step 5: with k > 1 a failed envelope just does not count (ThresholdNotMet);
    the message still names why it failed."""
    config_key = fleet.signing_key("cfg", "config")
    fleet.apply(fleet.release_doc("cfg-as-boot", [config_key], tier="bootloader"))
    obj = assert_rejected(fleet, "cfg-as-boot", "ThresholdNotMet")
    assert "trusted for tier config, not bootloader" in _status(obj)["message"]


def test_unknown_key_by_reconcile(fleet: Fleet, no_webhook: None) -> None:
    fleet.signing_key("app", "application")
    stranger = generate(Algorithm.ED25519)
    fleet.apply(fleet.release_doc("stranger", [stranger]))
    assert_rejected(fleet, "stranger", "UnknownKey")


def test_key_endorsed_by_another_root_is_invalid_and_never_trusted(fleet: Fleet, no_webhook: None) -> None:
    impostor_root = generate(Algorithm.ED25519)
    signer = fleet.signing_key("fake", "application", root=impostor_root, wait="Invalid")
    key = fleet.get("signingkey", "fake")
    assert _condition(key, "Endorsed")["status"] == "False"
    fleet.apply(fleet.release_doc("by-fake", [signer]))
    assert_rejected(fleet, "by-fake", "UnknownKey")


def test_key_revoked_by_reconcile(fleet: Fleet, no_webhook: None) -> None:
    app = fleet.signing_key("app", "application")
    fleet.kubectl("patch", "signingkey", "app", "--type", "merge", "-p", '{"spec":{"revoked":true}}')
    fleet.wait_phase("signingkey", "app", {"Revoked"})
    fleet.apply(fleet.release_doc("by-revoked", [app]))
    assert_rejected(fleet, "by-revoked", "KeyRevoked")


def test_key_expired(fleet: Fleet) -> None:
    old = fleet.signing_key("old", "application", not_before=fleet.now - 7200,
                            not_after=fleet.now - 60, wait="Expired")
    fleet.apply(fleet.release_doc("by-expired", [old]))
    assert_rejected(fleet, "by-expired", "KeyExpired")


def test_unsigned_config_model_release_is_rejected_by_reconcile(fleet: Fleet, no_webhook: None) -> None:
    """Config and ML models are gated like firmware: no signature, no publish."""
    fleet.signing_key("cfg", "config")
    fleet.apply(fleet.release_doc("model-unsigned", [], tier="config"))
    assert_rejected(fleet, "model-unsigned", "ThresholdNotMet")


# ---- the admission webhook ----------------------------------------------------------------


def test_webhook_refuses_key_of_another_tier_at_apply_time(fleet: Fleet) -> None:
    config_key = fleet.signing_key("cfg", "config")
    result = fleet.apply(fleet.release_doc("cfg-as-boot", [config_key], tier="bootloader"), check=False)
    assert result.returncode != 0
    assert "SigningKey cfg of tier config" in result.stderr
    assert "a bootloader release needs a bootloader key" in result.stderr
    assert fleet.kubectl("get", "firmwarerelease", "cfg-as-boot", check=False).returncode != 0


def test_webhook_refuses_unknown_key(fleet: Fleet) -> None:
    result = fleet.apply(fleet.release_doc("stranger", [generate(Algorithm.ED25519)]), check=False)
    assert result.returncode != 0
    assert "which no SigningKey in fleet" in result.stderr


def test_webhook_refuses_unsigned_release(fleet: Fleet) -> None:
    result = fleet.apply(fleet.release_doc("model-unsigned", [], tier="config"), check=False)
    assert result.returncode != 0
    assert "spec.signatures is empty: every config release" in result.stderr


def test_webhook_refuses_malformed_envelope(fleet: Fleet) -> None:
    app = fleet.signing_key("app", "application")
    doc = fleet.release_doc("garbled", [app])
    doc["spec"]["signatures"] = ["not*base64!"]
    result = fleet.apply(doc, check=False)
    assert result.returncode != 0
    assert "spec.signatures[0]" in result.stderr


def test_webhook_refuses_security_version_below_floor(fleet: Fleet) -> None:
    app = fleet.signing_key("app", "application")
    fleet.apply(fleet.release_doc("v9", [app], security_version=9))
    fleet.wait_phase("firmwarerelease", "v9", {"Published"})
    fleet.wait_for(lambda: fleet.apply(fleet.release_doc("v3", [app], security_version=3),
                                       check=False).returncode != 0, "the webhook to see the floor")
    result = fleet.apply(fleet.release_doc("v3", [app], security_version=3), check=False)
    assert "securityVersion 3 is below the rollback floor 9 for gw-3000/application" in result.stderr


# ---- lifecycle: sidecar down, operator restart, deletion, revocation ------------------------


def test_sidecar_down_fails_closed_then_publishes_when_back(fleet: Fleet, gate_system: GateSystem) -> None:
    app = fleet.signing_key("app", "application")
    gate_system.stop_sidecar()
    try:
        fleet.apply(fleet.release_doc("while-down", [app], security_version=3))
        obj = fleet.wait_phase("firmwarerelease", "while-down", {"Pending"})
        fleet.wait_for(lambda: _status(fleet.get("firmwarerelease", "while-down")).get("reason")
                       == "VerifierUnavailable", "reason VerifierUnavailable")
        assert fleet.channel() == {} and fleet.floor() is None, "nothing published while down"
        assert obj
    finally:
        gate_system.start_sidecar()
    status = _status(fleet.wait_phase("firmwarerelease", "while-down", {"Published"}, timeout=60))
    assert "reason" not in status, "the VerifierUnavailable reason is cleared once published"
    assert fleet.floor() == 3


def test_operator_killed_mid_verification_publishes_once(fleet: Fleet, gate_system: GateSystem) -> None:
    app = fleet.signing_key("app", "application")
    gate_system.stop_sidecar()
    try:
        fleet.apply(fleet.release_doc("mid", [app], security_version=4))
        fleet.wait_phase("firmwarerelease", "mid", {"Pending", "Verifying"})
        gate_system.stop_operator(kill=True)  # SIGKILL: no chance to clean up
    finally:
        gate_system.start_sidecar()
        gate_system.start_operator()
    status = _status(fleet.wait_phase("firmwarerelease", "mid", {"Published"}, timeout=60))
    assert fleet.floor() == 4
    assert fleet.channel()["application"]["publishedAt"] == status["publishedAt"]
    # A further restart re-reads everything (resume) and must not publish again.
    gate_system.stop_operator()
    gate_system.start_operator()
    fleet.signing_key("app-2", "application")  # proof the new operator is processing this fleet
    assert _status(fleet.get("firmwarerelease", "mid"))["publishedAt"] == status["publishedAt"]
    assert fleet.event_reasons("mid").count("Published") == 1


def test_release_deleted_after_publishing_keeps_the_floor(fleet: Fleet, no_webhook: None) -> None:
    app = fleet.signing_key("app", "application")
    fleet.apply(fleet.release_doc("v8", [app], security_version=8))
    fleet.wait_phase("firmwarerelease", "v8", {"Published"})
    fleet.kubectl("delete", "firmwarerelease", "v8", "--wait=true")
    assert fleet.floor() == 8
    fleet.apply(fleet.release_doc("v6", [app], security_version=6))
    assert_rejected_keep_channel(fleet, "v6", "RollbackRejected")


def test_floor_cannot_be_lowered_by_hand(fleet: Fleet) -> None:
    app = fleet.signing_key("app", "application")
    fleet.apply(fleet.release_doc("v8", [app], security_version=8))
    fleet.wait_phase("firmwarerelease", "v8", {"Published"})
    result = fleet.kubectl("patch", "rollbackfloor", "gw-3000.application", "--type", "merge",
                           "-p", '{"spec":{"securityVersion":2}}', check=False)
    assert result.returncode != 0
    assert "never goes down" in result.stderr
    assert fleet.floor() == 8


def test_floor_cannot_be_deleted(fleet: Fleet) -> None:
    app = fleet.signing_key("app", "application")
    fleet.apply(fleet.release_doc("v8", [app], security_version=8))
    fleet.wait_phase("firmwarerelease", "v8", {"Published"})
    result = fleet.kubectl("delete", "rollbackfloor", "gw-3000.application", check=False)
    assert result.returncode != 0
    assert "a RollbackFloor is never deleted" in result.stderr
    assert fleet.floor() == 8


def test_revoking_a_key_withdraws_its_published_release(fleet: Fleet) -> None:
    app = fleet.signing_key("app", "application")
    fleet.apply(fleet.release_doc("soon-withdrawn", [app], security_version=2))
    fleet.wait_phase("firmwarerelease", "soon-withdrawn", {"Published"})
    assert "application" in fleet.channel()
    fleet.kubectl("patch", "signingkey", "app", "--type", "merge", "-p", '{"spec":{"revoked":true}}')
    obj = fleet.wait_phase("firmwarerelease", "soon-withdrawn", {"Withdrawn"}, timeout=20)
    status = _status(obj)
    assert status["reason"] == "KeyRevoked"
    assert _condition(obj, "Ready")["status"] == "False"
    assert "application" not in fleet.channel()
    assert fleet.floor() == 2, "withdrawal never lowers the floor"


def test_metrics_count_rejections_and_phases(fleet: Fleet, gate_system: GateSystem) -> None:
    app = fleet.signing_key("app", "application")
    fleet.apply(fleet.release_doc("m-bad", [app], data=b"x" * 100, served=b"y" * 100))
    fleet.wait_phase("firmwarerelease", "m-bad", {"Rejected"})
    line = (f'flashgate_release_rejections_total{{namespace="{fleet.namespace}",'
            f'reason="HashMismatch",tier="application"}} 1.0')
    assert line in gate_system.metrics()
    # The phase gauge follows the watch, which may trail the status write by a moment.
    gauge = f'flashgate_releases{{namespace="{fleet.namespace}",phase="Rejected"}} 1.0'
    fleet.wait_for(lambda: gauge in gate_system.metrics(), "the phase gauge", timeout=10)
