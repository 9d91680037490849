"""The fleet the fuzz targets verify releases in: the test vectors' keys, policy, floors and `now`,
plus a retired key and one not yet valid (made here, endorsed by the vectors' root).

The same world is given to the trust core (a `KeyRing` built through root endorsements) and to
the reference (`reference.Key` records taken from the vector file's own key table).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from flashgate.signing.filekeys import KeySigner
from flashgate.trust import (
    CT_KEY,
    ROOT,
    KeyEndorsement,
    KeyRecord,
    KeyRing,
    Policy,
    ReleaseManifest,
    Tier,
    endorsed_record,
    sign1,
)
from tests.fuzz import reference
from tests.trust.test_vectors import vectors


class DeterministicSigner:
    """A cose.Signer whose ES256 signatures are deterministic (RFC 6979), so that a fuzz input
    always gives the same envelope."""

    def __init__(self, private: Ed25519PrivateKey | ec.EllipticCurvePrivateKey) -> None:
        self.private = private
        inner = KeySigner(private)
        self.algorithm, self.key_id, self.spki_der = inner.algorithm, inner.key_id, inner.spki_der

    def sign(self, tbs: bytes) -> bytes:
        if isinstance(self.private, Ed25519PrivateKey):
            return self.private.sign(tbs)
        der = self.private.sign(tbs, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
        r, s = decode_dss_signature(der)
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _private(key: dict[str, Any]) -> Ed25519PrivateKey | ec.EllipticCurvePrivateKey:
    if "ed25519Seed" in key:
        return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(key["ed25519Seed"]))
    return ec.derive_private_key(int(key["p256PrivateScalar"], 16), ec.SECP256R1())


@dataclass(frozen=True)
class World:
    fleet: str
    now: int
    signers: dict[str, DeterministicSigner]  # by name; "stranger" is known to nobody
    ring: KeyRing
    policy: Policy
    floors: dict[tuple[str, str], int]
    keys: dict[bytes, reference.Key]  # what the reference knows, by keyId
    thresholds: dict[str, int]
    good: ReleaseManifest  # what the vectors' good releases sign
    root: KeyRecord
    table: dict[str, dict[str, Any]]  # the vectors' key table, with the keys made here

    def floor(self, manifest: ReleaseManifest) -> int | None:
        return self.floors.get((manifest.product, str(manifest.tier)))


# Made here: (name, seed text, tier, notBefore, notAfter, retired).
_EXTRA = [
    ("appretired", "retired", "application", 1787408000, 1821536000, True),
    ("appfuture", "future", "application", 1795000000, 1821536000, False),
]


@cache
def world() -> World:
    v = vectors()
    fleet = v["fleet"]
    table = dict(v["keys"])
    signers = {name: DeterministicSigner(_private(key)) for name, key in table.items()}
    root = signers["root"]
    root_record = KeyRecord(
        root.key_id, ROOT, root.algorithm, root.spki_der, table["root"]["notBefore"],
        table["root"]["notAfter"], name="root",
    )  # fmt: skip
    endorsements = {name: bytes.fromhex(e) for name, e in v["endorsements"].items()}
    retired: set[str] = set()
    for name, seed, tier, not_before, not_after, is_retired in _EXTRA:
        private = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(seed.encode()).digest())
        signer = signers[name] = DeterministicSigner(private)
        payload = KeyEndorsement(
            fleet, Tier(tier), bytes.fromhex(signer.key_id), signer.algorithm, signer.spki_der,
            not_before, not_after,
        ).to_cbor()  # fmt: skip
        endorsements[name] = sign1(root, CT_KEY, payload)
        table[name] = {
            "tier": tier, "algorithm": "ed25519", "spki": signer.spki_der.hex(),
            "notBefore": not_before, "notAfter": not_after, "revoked": False,
        }  # fmt: skip
        if is_retired:
            retired.add(name)
    records = [root_record]
    for name, envelope in endorsements.items():
        records.append(
            endorsed_record(
                envelope, fleet, [root_record], name=name,
                revoked=table[name]["revoked"], retired=name in retired,
            )
        )  # fmt: skip
    keys = {
        hashlib.sha256(bytes.fromhex(key["spki"])).digest(): reference.Key(
            spki=bytes.fromhex(key["spki"]),
            tier=key["tier"],
            algorithm=key["algorithm"],
            not_before=key["notBefore"],
            not_after=key["notAfter"],
            revoked=key["revoked"],
            retired=name in retired,
        )
        for name, key in table.items()
        if name != "stranger"
    }
    policy = v["policy"]
    artifact = v["artifact"]
    good = ReleaseManifest(
        fleet=fleet, product="gw-3000", tier=Tier.APPLICATION, version="4.2.0",
        security_version=7, artifact_name=artifact["name"], artifact_size=artifact["size"],
        artifact_sha256=bytes.fromhex(artifact["sha256"]),
    )  # fmt: skip
    return World(
        fleet=fleet,
        now=v["now"],
        signers=signers,
        ring=KeyRing(records),
        policy=Policy(
            thresholds={Tier(t): k for t, k in policy["thresholds"].items()},
            max_security_version_jump=policy["maxSecurityVersionJump"],
        ),
        floors={(f["product"], f["tier"]): f["floor"] for f in policy["floors"]},
        keys=keys,
        thresholds=dict(policy["thresholds"]),
        good=good,
        root=root_record,
        table=table,
    )


def wire(manifest: ReleaseManifest) -> dict[str, Any]:
    """A manifest in the payload's wire form, as the reference compares it."""
    return {
        "v": 1,
        "type": "release",
        "fleet": manifest.fleet,
        "product": manifest.product,
        "tier": str(manifest.tier),
        "version": manifest.version,
        "securityVersion": manifest.security_version,
        "artifact": {
            "name": manifest.artifact_name,
            "size": manifest.artifact_size,
            "sha256": manifest.artifact_sha256,
        },
    }
