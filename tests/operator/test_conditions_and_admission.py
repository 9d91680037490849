"""The operator's pure logic: conditions, job documents, admission rules."""
from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from flashgate.api import Condition, FirmwareReleaseSpec
from flashgate.operator import admission
from flashgate.operator.conditions import merge_conditions, release_conditions
from flashgate.operator.ledger import job_document
from flashgate.signing.filekeys import KeySigner, generate
from flashgate.trust import Algorithm, Reason, Tier
from flashgate.trust.cose import CT_RELEASE, sign1
from flashgate.trust.payloads import ReleaseManifest

NOW = datetime.fromtimestamp(1_790_000_000, UTC)


def statuses(conditions: list[Condition]) -> dict[str, str]:
    return {c.type: str(c.status) for c in conditions}


def test_published_release_has_every_condition_true() -> None:
    conditions = release_conditions(None, "ok", True, 3, NOW)
    assert statuses(conditions) == {"SignatureVerified": "True", "RollbackChecked": "True",
                                    "IntegrityVerified": "True", "Ready": "True"}
    assert all(c.observed_generation == 3 for c in conditions)


@pytest.mark.parametrize(("reason", "expected"), [
    (Reason.UnknownKey, {"SignatureVerified": "False", "RollbackChecked": "Unknown",
                         "IntegrityVerified": "Unknown"}),
    (Reason.RollbackRejected, {"SignatureVerified": "True", "RollbackChecked": "False",
                               "IntegrityVerified": "Unknown"}),
    (Reason.HashMismatch, {"SignatureVerified": "True", "RollbackChecked": "True",
                           "IntegrityVerified": "False"}),
    (Reason.VerifierUnavailable, {"SignatureVerified": "Unknown", "RollbackChecked": "Unknown",
                                  "IntegrityVerified": "Unknown"}),
])
def test_a_rejection_fails_its_own_check_and_leaves_later_ones_unknown(
        reason: Reason, expected: dict[str, str]) -> None:
    conditions = release_conditions(reason, "why", False, 1, NOW)
    assert statuses(conditions) == {**expected, "Ready": "False"}
    ready = next(c for c in conditions if c.type == "Ready")
    assert ready.reason == str(reason)


def test_every_rejection_reason_maps_to_a_failed_condition() -> None:
    for reason in Reason:
        if reason is Reason.VerifierUnavailable:
            continue
        conditions = release_conditions(reason, "why", False, 1, NOW)
        assert "False" in [c.status for c in conditions if c.type != "Ready"], reason


def test_merge_keeps_transition_time_while_status_is_unchanged() -> None:
    old = release_conditions(Reason.VerifierUnavailable, "down", False, 1, NOW)
    new = release_conditions(Reason.VerifierUnavailable, "still down", False, 1,
                             NOW + timedelta(seconds=60))
    merged = merge_conditions(old, new)
    assert all(c.last_transition_time == NOW for c in merged)
    assert merged[0].message == "still down"
    later = NOW + timedelta(seconds=120)
    published = merge_conditions(merged, release_conditions(None, "ok", True, 1, later))
    assert all(c.last_transition_time == later for c in published)


def test_merge_keeps_conditions_of_other_types() -> None:
    endorsed = release_conditions(None, "ok", True, 1, NOW)[:1]
    merged = merge_conditions(endorsed, release_conditions(Reason.HashMismatch, "x", False, 1, NOW)[1:])
    assert [c.type for c in merged] == ["SignatureVerified", "RollbackChecked",
                                        "IntegrityVerified", "Ready"]


SPEC = {
    "tier": "application", "product": "gw-3000", "version": "4.2.0", "securityVersion": 7,
    "channel": "beta",
    "artifact": {"url": "https://cdn.example/app.bin", "name": "app.bin", "sha256": "ab" * 32,
                 "size": 4096},
    "signatures": ["c2ln"],
}


def test_job_document_is_the_format_md_shape() -> None:
    text = job_document(fleet="fleet-a", name="app-4-2-0",
                        spec=FirmwareReleaseSpec.model_validate(SPEC), published_at=NOW)
    assert json.loads(text) == {
        "apiVersion": "ota.flashgate.dev/v1alpha1", "kind": "JobDocument", "fleet": "fleet-a",
        "product": "gw-3000", "channel": "beta", "tier": "application", "release": "app-4-2-0",
        "version": "4.2.0", "securityVersion": 7,
        "artifact": {"url": "https://cdn.example/app.bin", "sha256": "ab" * 32, "size": 4096},
        "signatures": ["c2ln"], "publishedAt": "2026-09-21T14:13:20Z",
    }


# ---- admission --------------------------------------------------------------------------


def _signed_spec(signer: KeySigner, tier: str = "application", sv: int = 7) -> dict[str, Any]:
    data = b"image"
    manifest = ReleaseManifest(fleet="fleet-a", product="gw-3000", tier=Tier(tier), version="1",
                               security_version=sv, artifact_name="a.bin", artifact_size=len(data),
                               artifact_sha256=hashlib.sha256(data).digest())
    envelope = sign1(signer, CT_RELEASE, manifest.to_cbor())
    return {"tier": tier, "product": "gw-3000", "securityVersion": sv,
            "signatures": [base64.b64encode(envelope).decode()]}


def _key(signer: KeySigner, tier: str, **extra: Any) -> tuple[str, dict[str, Any]]:
    return (f"{tier}-key", {"tier": tier, "publicKey": signer.public_pem, **extra})


def test_admission_accepts_a_release_by_a_known_key_of_its_tier() -> None:
    app = generate(Algorithm.ED25519)
    assert admission.release_problems(fleet="fleet-a", spec=_signed_spec(app),
                                      keys=[_key(app, "application")], floor=7) == []


def test_admission_names_each_problem_in_words() -> None:
    config, stranger = generate(Algorithm.ED25519), generate(Algorithm.ES256)
    spec = _signed_spec(config, tier="bootloader", sv=3)
    spec["signatures"] += [_signed_spec(stranger)["signatures"][0], "not base64!"]
    problems = admission.release_problems(fleet="fleet-a", spec=spec,
                                          keys=[_key(config, "config")], floor=5)
    assert len(problems) == 4, problems
    assert "signed by SigningKey config-key of tier config; a bootloader release needs a " \
           "bootloader key" in problems[0]
    assert "which no SigningKey in fleet fleet-a holds" in problems[1]
    assert problems[2].startswith("spec.signatures[2] is not a flashgate release signature")
    assert "securityVersion 3 is below the rollback floor 5 for gw-3000/bootloader" in problems[3]


def test_admission_refuses_a_revoked_key() -> None:
    app = generate(Algorithm.ED25519)
    problems = admission.release_problems(fleet="fleet-a", spec=_signed_spec(app), floor=None,
                                          keys=[_key(app, "application", revoked=True)])
    assert problems and "revoked" in problems[0]


def test_key_admission_checks_key_type_and_envelope_shape() -> None:
    ed = generate(Algorithm.ED25519)
    problems = admission.key_problems({"algorithm": "ecdsa-p256-sha256",
                                       "publicKey": ed.public_pem, "endorsement": "AAAA"})
    assert len(problems) == 2
    assert "spec.publicKey is not a ecdsa-p256-sha256 public key" in problems[0]
    assert "spec.endorsement" in problems[1]
    assert admission.key_id_of({"publicKey": ed.public_pem}) == ed.key_id
    assert admission.key_id_of({"publicKey": "garbage"}) is None
