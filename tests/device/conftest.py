"""The reference device agent against the real delivery service (its aiohttp application on a
loopback TLS port, in a thread, its catalog handed the published ConfigMaps as its watch would:
tests/delivery/conftest.py), with a fleet root, keys and releases made per run. Artifacts are
served over https by hack/hostile.py's server: the bytes as given, or a body that never ends, or
one that trickles; a device needs nothing from whoever serves them (the e2e fleet simulation
downloads through presigned URLs from versitygw).
"""
from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from hostile import Artifact, HostileDelivery

from flashgate.api import FirmwareReleaseSpec
from flashgate.device.agent import Agent
from flashgate.device.config import Settings, settings_from
from flashgate.operator.ledger import job_document
from flashgate.operator.tls import make_serving_cert
from flashgate.signing.filekeys import KeySigner, generate
from flashgate.trust import (
    CT_KEY,
    CT_RELEASE,
    CT_REVOCATION,
    Algorithm,
    KeyEndorsement,
    ReleaseManifest,
    Revocation,
    Tier,
    sign1,
)

from ..delivery.conftest import Pki, Running, bundle_cm, channel_cm, start

FLEET, PRODUCT, CHANNEL = "fleet-a", "gw-3000", "stable"
DAY = 86400


def b64(envelope: bytes) -> str:
    return base64.b64encode(envelope).decode()


@dataclass
class World:
    """A fleet's published state, served by the real delivery service, and devices of it."""

    pki: Pki
    delivery: Running
    host: HostileDelivery  # the artifact host
    host_ca: Path
    workdir: Path
    root: KeySigner = field(default_factory=lambda: generate(Algorithm.ED25519))
    jobs: dict[str, str] = field(default_factory=dict)  # tier -> job document published

    def endorse(self, key: KeySigner, tier: Tier = Tier.APPLICATION, *,
                not_after: int | None = None, signer: KeySigner | None = None) -> str:
        now = int(datetime.now(UTC).timestamp())
        return b64(sign1(signer or self.root, CT_KEY, KeyEndorsement(
            FLEET, tier, bytes.fromhex(key.key_id), key.algorithm, key.spki_der, now - DAY,
            not_after or now + 30 * DAY).to_cbor()))

    def revoke(self, key: KeySigner) -> str:
        return b64(sign1(self.root, CT_REVOCATION, Revocation(
            FLEET, bytes.fromhex(key.key_id), int(datetime.now(UTC).timestamp()),
            "leaked").to_cbor()))

    def publish_bundle(self, endorsements: Sequence[str] = (), revocations: Sequence[str] = ()
                       ) -> None:
        self.delivery.publish("MODIFIED", bundle_cm(FLEET, json.dumps({
            "apiVersion": "ota.flashgate.dev/v1alpha1", "kind": "TrustBundle", "fleet": FLEET,
            "endorsements": {"application": list(endorsements)},
            "revocations": list(revocations)})))

    def publish_release(self, name: str, data: bytes, signers: Sequence[KeySigner], *,
                        security_version: int = 1, tier: Tier = Tier.APPLICATION,
                        served: Artifact | None = None, product: str = PRODUCT,
                        signed_fleet: str = FLEET) -> ReleaseManifest:
        """Sign `data` as release `name`, publish its job document in the channel and serve
        `served` (default: the bytes) as its artifact."""
        manifest = ReleaseManifest(signed_fleet, product, tier, "1.0.0", security_version,
                                   f"{name}.bin", len(data), hashlib.sha256(data).digest())
        signatures = [b64(sign1(s, CT_RELEASE, manifest.to_cbor())) for s in signers]
        self.host.artifacts[name] = data if served is None else served
        spec = FirmwareReleaseSpec.model_validate({
            "tier": str(tier), "product": PRODUCT, "version": "1.0.0",
            "securityVersion": security_version, "channel": CHANNEL,
            "artifact": {"url": self.host.artifact_url(name), "name": f"{name}.bin",
                         "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)},
            "signatures": signatures})
        self.jobs[str(tier)] = job_document(fleet=FLEET, name=name, spec=spec,
                                            published_at=datetime.now(UTC))
        self.delivery.publish("MODIFIED", channel_cm(FLEET, self.jobs))
        return manifest

    def config(self, device: str, **changes: Any) -> dict[str, Any]:
        cert, key = self.pki.device(FLEET, device).write(self.workdir / "certs", device)
        config: dict[str, Any] = {
            "fleet": FLEET, "device": device, "product": PRODUCT, "channel": CHANNEL,
            "tiers": ["application"],
            "roots": [{"publicKey": self.root.public_pem, "algorithm": str(self.root.algorithm)}],
            "delivery": {"url": f"https://127.0.0.1:{self.delivery.port}",
                         "caFile": str(self.pki.server_ca), "certFile": str(cert),
                         "keyFile": str(key), "timeoutSeconds": 5},
            "artifacts": {"caFile": str(self.host_ca), "allowedHosts": ["localhost"],
                          "minBytesPerSecond": 2000, "minRateGraceSeconds": 1,
                          "readTimeoutSeconds": 2, "totalTimeoutSeconds": 5,
                          "maxImageBytes": 1 << 20},
            "stateDir": str(self.workdir / "devices" / device),
            "pollSeconds": 1,
        }
        config.update(changes)
        return config

    def settings(self, device: str, **changes: Any) -> Settings:
        return settings_from(self.config(device, **changes))

    def agent(self, device: str, **changes: Any) -> Agent:
        agent = Agent(self.settings(device, **changes))
        agent.boot()
        return agent

    def write_config(self, device: str, **changes: Any) -> Path:
        path = self.workdir / f"{device}.yaml"
        path.write_text(yaml.safe_dump(self.config(device, **changes)))
        return path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@contextmanager
def running_world(pki: Pki, directory: Path) -> Iterator[World]:
    delivery = start(pki)
    host_ca, cert, key = make_serving_cert(("localhost", "127.0.0.1")).write(directory / "host")
    host = HostileDelivery(cert, key).start()
    try:
        yield World(pki, delivery, host, host_ca, directory)
    finally:
        host.stop()
        delivery.stop()


@pytest.fixture
def world(pki: Pki, tmp_path: Path) -> Iterator[World]:
    with running_world(pki, tmp_path) as made:
        yield made
