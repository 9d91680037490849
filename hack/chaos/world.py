"""The fleets the chaos loop works on, and the mixed batches it applies to them.

Everything is signed for real, as tests/e2e/conftest.py does it: SigningKeys carry a root
endorsement (`trust.cose.sign1` over a `KeyEndorsement`), releases carry COSE_Sign1 envelopes of
their manifest by file keys (`flashgate.signing.filekeys`), revocations carry the root's signed
`Revocation`; the documents are built by the signing station's own `resources` module.

A batch mixes (by `LABELS`): good releases (bootloader ones signed by two keys, the tier's
threshold), tampered ones (bytes served that differ from what was signed, in digest or size),
rollbacks below the floor, jumps too far above it, releases signed by a revoked key, by a key of
another tier, by a key the fleet does not know, with a spec that differs from what was signed,
replays of a published manifest under another name, bursts of good releases to one channel
(they race each other); key rotations (a successor that activates in a few seconds, with a short
overlap), short-lived keys, and revocations (with the root's signed statement or without).
Artifacts are served from file:// (the sidecar's fileRoot) or s3://. The security versions
follow the floor as last observed, so the good ones are mostly good and races make some of them
rollbacks.
"""
from __future__ import annotations

import base64
import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flashgate.signing.filekeys import KeySigner, generate
from flashgate.signing.resources import release_doc, signing_key_doc
from flashgate.trust import Algorithm, Tier
from flashgate.trust.cose import CT_KEY, CT_RELEASE, CT_REVOCATION, sign1
from flashgate.trust.payloads import KeyEndorsement, ReleaseManifest, Revocation

PRODUCTS = ("gw-3000", "gw-4000")
CHANNELS = ("stable", "beta")
TIERS = (Tier.APPLICATION, Tier.CONFIG, Tier.OS, Tier.BOOTLOADER)
THRESHOLDS = {Tier.BOOTLOADER: 2}
MAX_JUMP = 100
DAY = 86400

LABELS = {  # what a batch is made of, and how often
    "good": 30, "tampered": 6, "wrong-size": 3, "rollback": 6, "fast-forward": 2,
    "revoked-key": 5, "wrong-tier": 5, "unknown-key": 3, "mismatch": 3, "replay": 4,
    "rotation": 7, "short-lived-key": 3, "revocation": 6, "burst": 4,
}


@dataclass
class Key:
    name: str
    tier: Tier
    signer: KeySigner
    revoked: bool = False


@dataclass(frozen=True)
class Upload:
    """Bytes to serve at a URL before a release names it: a file under the sidecar's fileRoot
    (`path` relative to it) or an S3 object (`path` = bucket/key)."""

    url: str
    scheme: str
    path: str
    data: bytes


@dataclass(frozen=True)
class Action:
    """One thing a batch does: create an object (after serving its artifact), or patch one."""

    label: str
    fleet: str
    kind: str  # "FirmwareRelease" or "SigningKey"
    name: str
    body: dict[str, Any] | None = None  # to create
    patch: dict[str, Any] | None = None  # merge patch of an existing object
    upload: Upload | None = None


@dataclass
class FleetModel:
    """One fleet as the chaos loop made it: its keys and the releases it applied."""

    name: str
    guarded: bool  # the admission webhook covers it
    keys: dict[str, Key] = field(default_factory=dict)
    signing: dict[Tier, list[str]] = field(default_factory=dict)  # usable keys, newest last
    published_like: list[dict[str, Any]] = field(default_factory=list)  # good specs, to replay
    counter: int = 0

    def next_name(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}-{self.counter}"

    def revoked(self) -> list[Key]:
        return [k for k in self.keys.values() if k.revoked]


FloorOf = Callable[[str, str, str], int | None]
"""(fleet, product, tier) -> the floor as last observed (None: none yet)."""


@dataclass
class World:
    """The fleets and the root; `batch` makes the next mixed batch."""

    root: KeySigner
    fleets: list[FleetModel]
    file_root: Path  # the sidecar's fileRoot
    bucket: str
    s3_enabled: bool = True

    # ---- keys -------------------------------------------------------------------------------

    def key_action(self, fleet: FleetModel, tier: Tier, now: int, *, label: str,
                   replaces: str | None = None, activate_at: int | None = None,
                   overlap: str | None = None, lifetime: int = 30 * DAY) -> Action:
        signer = generate(random.choice((Algorithm.ED25519, Algorithm.ES256)))
        name = fleet.next_name(f"{tier}-key")
        not_before, not_after = now - 3600, now + lifetime
        endorsement = KeyEndorsement(
            fleet=fleet.name, tier=tier, key_id=bytes.fromhex(signer.key_id),
            algorithm=signer.algorithm, public_key=signer.spki_der, not_before=not_before,
            not_after=not_after)
        body = signing_key_doc(
            name=name, fleet=fleet.name, tier=tier, algorithm=signer.algorithm,
            public_pem=signer.public_pem, not_before=not_before, not_after=not_after,
            endorsement=sign1(self.root, CT_KEY, endorsement.to_cbor()), replaces=replaces,
            overlap=overlap, activate_at=activate_at)
        fleet.keys[name] = Key(name, tier, signer)
        usable = fleet.signing.setdefault(tier, [])
        usable.append(name)
        del usable[:-3]  # the newest few: older ones are retired or expired by now
        return Action(label, fleet.name, "SigningKey", name, body=body)

    def revoke_action(self, fleet: FleetModel, key: Key, now: int, rng: random.Random,
                      label: str = "revocation") -> Action:
        key.revoked = True
        usable = fleet.signing.get(key.tier, [])
        if key.name in usable:
            usable.remove(key.name)
        patch: dict[str, Any] = {"revoked": True}
        if rng.random() < 0.6:  # with the root's statement for devices, or without
            statement = Revocation(fleet=fleet.name, key_id=bytes.fromhex(key.signer.key_id),
                                   revoked_at=now, reason="chaos loop")
            patch["revocation"] = base64.b64encode(
                sign1(self.root, CT_REVOCATION, statement.to_cbor())).decode()
        return Action(label, fleet.name, "SigningKey", key.name, patch={"spec": patch})

    def initial_keys(self, now: int) -> list[Action]:
        actions = []
        for fleet in self.fleets:
            for tier in TIERS:
                for _ in range(THRESHOLDS.get(tier, 1)):
                    actions.append(self.key_action(fleet, tier, now, label="initial-key"))
        return actions

    def _signers(self, fleet: FleetModel, tier: Tier, rng: random.Random) -> list[Key]:
        usable = [fleet.keys[n] for n in fleet.signing.get(tier, [])]
        needed = THRESHOLDS.get(tier, 1)
        newest = usable[-needed:]
        # Mostly the newest keys; sometimes an older one (retiring, retired or expired by now).
        if len(usable) > needed and rng.random() < 0.2:
            return rng.sample(usable, needed)
        return newest

    def _keep_signing(self, fleet: FleetModel, tier: Tier, now: int) -> list[Action]:
        """New keys when revocations left the tier short of its threshold."""
        short = THRESHOLDS.get(tier, 1) - len(fleet.signing.get(tier, []))
        return [self.key_action(fleet, tier, now, label="replacement-key")
                for _ in range(max(0, short))]

    # ---- releases ---------------------------------------------------------------------------

    def _artifact(self, fleet: FleetModel, name: str, data: bytes,
                  rng: random.Random) -> tuple[str, str, str]:
        if self.s3_enabled and rng.random() < 0.4:
            key = f"{fleet.name}/{name}.bin"
            return f"s3://{self.bucket}/{key}", "s3", f"{self.bucket}/{key}"
        path = f"{fleet.name}/{name}.bin"
        return (self.file_root / path).as_uri(), "file", path

    def release_action(self, fleet: FleetModel, label: str, floor_of: FloorOf,
                       rng: random.Random, slot: tuple[Tier, str, str] | None = None,
                       bump: int | None = None) -> Action:
        """One release of `label`, to a random (tier, product, channel) or to `slot`, its
        securityVersion the floor plus a little (or plus `bump`)."""
        tier, product, channel = slot or (rng.choice(TIERS), rng.choice(PRODUCTS),
                                          rng.choice(CHANNELS))
        floor = floor_of(fleet.name, product, str(tier)) or 0
        name = fleet.next_name(f"{product}-{tier}")
        security_version = floor + (rng.choice((0, 1, 1, 2, 3)) if bump is None else bump)
        if label == "rollback" and floor > 0:
            security_version = max(0, floor - rng.randint(1, 3))
        elif label == "fast-forward":
            security_version = floor + MAX_JUMP + rng.randint(1, 5)
        data = rng.randbytes(rng.randint(512, 48 * 1024))
        manifest = ReleaseManifest(
            fleet=fleet.name, product=product, tier=tier,
            version=f"1.{security_version}.{fleet.counter}", security_version=security_version,
            artifact_name=f"{name}.bin", artifact_size=len(data),
            artifact_sha256=hashlib.sha256(data).digest())
        signed, served = manifest, data
        signers = self._signers(fleet, tier, rng)
        if label == "tampered":
            flipped = bytearray(data)
            flipped[rng.randrange(len(data))] ^= 0x01
            served = bytes(flipped)
        elif label == "wrong-size":
            served = data + b"\0" if rng.random() < 0.5 else data[:-1]
        elif label == "revoked-key" and fleet.revoked():
            revoked = [k for k in fleet.revoked() if k.tier == tier] or fleet.revoked()
            key = rng.choice(revoked)
            tier = key.tier
            manifest = signed = ReleaseManifest(**{**manifest.__dict__, "tier": tier})
            signers = [key, *self._signers(fleet, tier, rng)[1:]]
        elif label == "wrong-tier":
            other = rng.choice([t for t in TIERS if t != tier])
            signers = self._signers(fleet, other, rng)
        elif label == "unknown-key":
            signers = [Key("unknown", tier, generate(Algorithm.ED25519))]
        elif label == "mismatch":
            signed = ReleaseManifest(**{**manifest.__dict__,
                                        "security_version": security_version + 1})
        envelopes = [sign1(k.signer, CT_RELEASE, signed.to_cbor()) for k in signers]
        url, scheme, path = self._artifact(fleet, name, served, rng)
        body = release_doc(name=name, manifest=manifest, url=url, channel=channel,
                           signatures=envelopes)
        if label == "good":
            fleet.published_like.append(body)
            del fleet.published_like[:-20]
        return Action(label, fleet.name, "FirmwareRelease", name, body=body,
                      upload=Upload(url, scheme, path, served))

    def replay_action(self, fleet: FleetModel, rng: random.Random) -> Action | None:
        """A published-like release again under another name (and channel): ReplayRejected if
        the first was published."""
        if not fleet.published_like:
            return None
        original = rng.choice(fleet.published_like)
        name = fleet.next_name("replay")
        body = {**original, "metadata": {"name": name, "namespace": fleet.name},
                "spec": {**original["spec"], "channel": rng.choice(CHANNELS)}}
        return Action("replay", fleet.name, "FirmwareRelease", name, body=body)

    # ---- a batch ----------------------------------------------------------------------------

    def batch(self, rng: random.Random, floor_of: FloorOf, now: int,
              size: int) -> list[Action]:
        actions: list[Action] = []
        labels, weights = zip(*LABELS.items(), strict=True)
        for label in rng.choices(labels, weights, k=size):
            fleet = rng.choice(self.fleets)
            if label == "rotation":
                tier = rng.choice(TIERS)
                usable = fleet.signing.get(tier)
                actions.append(self.key_action(
                    fleet, tier, now, label=label, replaces=usable[-1] if usable else None,
                    activate_at=now + rng.randint(0, 40), overlap=f"{rng.randint(5, 60)}s"))
            elif label == "short-lived-key":
                actions.append(self.key_action(fleet, rng.choice(TIERS), now, label=label,
                                               lifetime=rng.randint(3600 + 30, 3600 + 600)))
            elif label == "revocation":
                candidates = [fleet.keys[n] for t in TIERS for n in fleet.signing.get(t, [])]
                if candidates:
                    key = rng.choice(candidates)
                    actions.append(self.revoke_action(fleet, key, now, rng))
                    actions += self._keep_signing(fleet, key.tier, now)
            elif label == "replay":
                replay = self.replay_action(fleet, rng)
                if replay is not None:
                    actions.append(replay)
            elif label == "burst":  # good releases to one channel, one right after the other
                slot = (rng.choice(TIERS), rng.choice(PRODUCTS), rng.choice(CHANNELS))
                actions += [self.release_action(fleet, "good", floor_of, rng, slot, bump)
                            for bump in range(rng.randint(2, 4))]
            else:
                actions.append(self.release_action(fleet, label, floor_of, rng))
        return actions

    def revoke_in_flight(self, fleet: FleetModel, actions: list[Action], now: int,
                         rng: random.Random) -> list[Action]:
        """Revoke a key that signed a release of `actions` (one likely still being verified),
        and keep its tier signing."""
        signers = {k.name: k for k in fleet.keys.values() if not k.revoked}
        named = [a for a in actions if a.kind == "FirmwareRelease" and a.fleet == fleet.name]
        for action in reversed(named):
            assert action.body is not None
            kids = _envelope_key_ids(action.body["spec"]["signatures"])
            match = [k for k in signers.values() if k.signer.key_id in kids]
            if match:
                key = rng.choice(match)
                return [self.revoke_action(fleet, key, now, rng, label="revoke-in-flight"),
                        *self._keep_signing(fleet, key.tier, now)]
        return []


def _envelope_key_ids(signatures: list[str]) -> set[str]:
    from flashgate.trust.cose import parse_sign1
    return {parse_sign1(s, CT_RELEASE).key_id for s in signatures}
