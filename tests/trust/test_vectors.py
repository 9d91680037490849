"""The test vectors of docs/format.md ("Test vectors"), made by an independent implementation.

Every release case and key case must give the expected verdict and reason. Ed25519 envelopes are
deterministic, so re-signing them with the given seeds must reproduce them byte for byte; ES256
ones are randomized, so the given ones must verify and our own must be accepted.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from flashgate.signing.filekeys import KeySigner
from flashgate.trust import (
    CT_RELEASE,
    ROOT,
    Algorithm,
    KeyRecord,
    KeyRing,
    Policy,
    Reason,
    ReleaseManifest,
    Tier,
    TrustError,
    Verdict,
    check_artifact,
    endorsed_record,
    parse_sign1,
    sign1,
    to_be_signed,
    verify_endorsement,
    verify_release,
    verify_signature,
)

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "v1.json"
SHARED = Path(__file__).resolve().parents[3] / "shared" / "vectors" / "v1.json"


def test_repo_vectors_match_the_shared_ones_when_present() -> None:
    """The vectors live in the repo (tests/vectors); where the project's shared folder sits beside
    the checkout, the copy must not have drifted from it."""
    if not SHARED.is_file():
        pytest.skip(f"no shared vectors beside the checkout ({SHARED})")
    assert json.loads(VECTORS.read_text()) == json.loads(SHARED.read_text())


@cache
def vectors() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(VECTORS.read_text())
    return data


def _cases(kind: str) -> list[Any]:
    return [pytest.param(case, id=case["name"]) for case in vectors()[kind]]


def root_record() -> KeyRecord:
    root = vectors()["keys"]["root"]
    assert root["tier"] == ROOT
    return KeyRecord(
        key_id=root["keyId"],
        tier=ROOT,
        algorithm=Algorithm(root["algorithm"]),
        public_key=bytes.fromhex(root["spki"]),
        not_before=root["notBefore"],
        not_after=root["notAfter"],
        name="root",
    )


@cache
def keyring() -> KeyRing:
    v = vectors()
    root = root_record()
    records = [root]
    for name, envelope in v["endorsements"].items():
        records.append(
            endorsed_record(
                bytes.fromhex(envelope),
                v["fleet"],
                [root],
                name=name,
                revoked=v["keys"][name]["revoked"],
            )
        )
    return KeyRing(records)


def policy() -> Policy:
    p = vectors()["policy"]
    return Policy(
        thresholds={Tier(t): k for t, k in p["thresholds"].items()},
        max_security_version_jump=p["maxSecurityVersionJump"],
    )


def floor_for(product: str, tier: str) -> int | None:
    for entry in vectors()["policy"]["floors"]:
        if entry["product"] == product and entry["tier"] == tier:
            floor: int = entry["floor"]
            return floor
    return None


def expected_manifest(release: dict[str, Any]) -> ReleaseManifest:
    artifact = release["artifact"]
    return ReleaseManifest(
        fleet=release.get("fleet", vectors()["fleet"]),
        product=release["product"],
        tier=Tier(release["tier"]),
        version=release["version"],
        security_version=release["securityVersion"],
        artifact_name=artifact["name"],
        artifact_size=artifact["size"],
        artifact_sha256=bytes.fromhex(artifact["sha256"]),
    )


def signer_for(name: str) -> KeySigner:
    key = vectors()["keys"][name]
    if "ed25519Seed" in key:
        signer = KeySigner(Ed25519PrivateKey.from_private_bytes(bytes.fromhex(key["ed25519Seed"])))
    else:
        scalar = int(key["p256PrivateScalar"], 16)
        signer = KeySigner(ec.derive_private_key(scalar, ec.SECP256R1()))
    assert signer.spki_der.hex() == key["spki"]
    assert signer.key_id == key["keyId"]
    return signer


def run_release_case(case: dict[str, Any]) -> Verdict:
    expected = expected_manifest(case["release"])
    verdict = verify_release(
        [bytes.fromhex(s) for s in case["signatures"]],
        expected,
        keyring(),
        policy(),
        floor_for(expected.product, expected.tier),
        vectors()["now"],
    )
    if verdict.accepted and case["artifact_hex"] is not None:
        artifact = bytes.fromhex(case["artifact_hex"])
        verdict = check_artifact(
            expected, len(artifact), hashlib.sha256(artifact).digest(), oversized=False
        )
    return verdict


@pytest.mark.parametrize("case", _cases("release_cases"))
def test_release_case(case: dict[str, Any]) -> None:
    verdict = run_release_case(case)
    if case["expect"] == "accept":
        assert verdict.accepted, verdict.message
        assert verdict.reason is None
        assert verdict.key_ids
    else:
        assert not verdict.accepted
        assert verdict.reason == Reason(case["reason"]), verdict.message
    assert verdict.message


@pytest.mark.parametrize("case", _cases("key_cases"))
def test_key_case(case: dict[str, Any]) -> None:
    spec = case["spec"]
    verdict = verify_endorsement(
        bytes.fromhex(case["endorsement"]),
        vectors()["fleet"],
        [root_record()],
        tier=Tier(spec["tier"]),
        algorithm=Algorithm(spec["algorithm"]),
        public_key=bytes.fromhex(spec["spki"]),
        not_before=spec["notBefore"],
        not_after=spec["notAfter"],
    )
    if case["expect"] == "accept":
        assert verdict.accepted, verdict.message
        assert verdict.key_ids == (root_record().key_id,)
    else:
        assert not verdict.accepted
        assert verdict.reason == Reason(case["reason"]), verdict.message


def test_keyring_holds_what_the_vectors_describe() -> None:
    ring = keyring()
    for name, key in vectors()["keys"].items():
        record = ring.get(key["keyId"])
        if name == "stranger":
            assert record is None  # never endorsed, so never trusted
            continue
        assert record is not None, name
        assert str(record.tier) == key["tier"]
        assert record.algorithm == Algorithm(key["algorithm"])
        assert record.public_key.hex() == key["spki"]
        assert (record.not_before, record.not_after) == (key["notBefore"], key["notAfter"])
        assert record.revoked == key["revoked"]
        signer_for(name)  # the seed or scalar is the private half of that key


def test_the_vectors_artifact_matches_its_declared_digest() -> None:
    artifact = vectors()["artifact"]
    data = bytes.fromhex(artifact["hex"])
    assert len(data) == artifact["size"]
    assert hashlib.sha256(data).hexdigest() == artifact["sha256"]
    good = next(c for c in vectors()["release_cases"] if c["name"] == "good-ed25519")
    verdict = check_artifact(
        expected_manifest(good["release"]), len(data), hashlib.sha256(data).digest(), False
    )
    assert verdict.accepted, verdict.message


def _all_envelopes() -> list[tuple[str, bytes]]:
    v = vectors()
    found = [(f"endorsement {name}", bytes.fromhex(e)) for name, e in v["endorsements"].items()]
    for kind, field in (("release_cases", "signatures"), ("key_cases", "endorsement")):
        for case in v[kind]:
            hexes = case[field] if isinstance(case[field], list) else [case[field]]
            found += [(case["name"], bytes.fromhex(h)) for h in hexes]
    return found


def _loose_parts(envelope: bytes) -> tuple[dict[int, Any], bytes, bytes, bytes] | None:
    """The parts of an envelope as a lenient decoder sees them (None if it is not one)."""
    item = cbor2.loads(envelope)
    if not isinstance(item, cbor2.CBORTag) or item.tag != 18:
        return None
    protected, _, payload, signature = item.value
    return cbor2.loads(protected), protected, payload, signature


def test_ed25519_envelopes_are_byte_exact_when_re_signed() -> None:
    """Every Ed25519 envelope whose signature verifies is exactly what our signer produces."""
    by_key_id = {k["keyId"]: name for name, k in vectors()["keys"].items()}
    re_signed = 0
    for name, envelope in _all_envelopes():
        parts = _loose_parts(envelope)
        if parts is None:
            continue
        header, protected, payload, signature = parts
        key = vectors()["keys"][by_key_id[header[4].hex()]]
        if key["algorithm"] != "ed25519" or header[1] != -8:
            continue
        tbs = to_be_signed(protected, payload)
        if not verify_signature(Algorithm.ED25519, bytes.fromhex(key["spki"]), tbs, signature):
            continue  # a deliberately tampered envelope
        signer = signer_for(by_key_id[header[4].hex()])
        assert sign1(signer, header[3], payload) == envelope, name
        re_signed += 1
    assert re_signed >= 25  # guard against the loop silently skipping everything


def test_given_es256_signatures_verify_and_ours_are_accepted() -> None:
    good = next(c for c in vectors()["release_cases"] if c["name"] == "good-es256")
    message = parse_sign1(bytes.fromhex(good["signatures"][0]), CT_RELEASE)
    app2 = vectors()["keys"]["app2"]
    tbs = to_be_signed(message.protected, message.payload)
    assert verify_signature(Algorithm.ES256, bytes.fromhex(app2["spki"]), tbs, message.signature)

    ours = sign1(signer_for("app2"), message.content_type, message.payload)
    assert ours != bytes.fromhex(good["signatures"][0])  # randomized
    verdict = run_release_case({**good, "signatures": [ours.hex()]})
    assert verdict.accepted, verdict.message
    assert verdict.key_ids == (app2["keyId"],)


def test_a_vector_endorsement_of_another_fleet_is_refused() -> None:
    with pytest.raises(TrustError) as caught:
        endorsed_record(
            bytes.fromhex(vectors()["endorsements"]["app1"]), "fleet-b", [root_record()]
        )
    assert caught.value.reason is Reason.ManifestMismatch
