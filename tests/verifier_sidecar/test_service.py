"""The sidecar's verification service, without HTTP: fresh keys, real trust core, real fetcher
over file:// (and one https). Every rejection reason the sidecar can give is reached here."""
from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from flashgate.signing.filekeys import KeySigner, generate
from flashgate.trust import (
    CT_KEY,
    CT_RELEASE,
    CT_REVOCATION,
    Algorithm,
    KeyEndorsement,
    Reason,
    ReleaseManifest,
    Revocation,
    Tier,
    sign1,
)
from flashgate.verifier_api.models import KeyRequest, ReleaseRequest, ReleaseVerdict
from flashgate.verifier_sidecar.config import Settings, settings_from
from flashgate.verifier_sidecar.fetch import Fetcher, FetchResult, ReadReporter
from flashgate.verifier_sidecar.metrics import Metrics
from flashgate.verifier_sidecar.service import VerifierService

NOW = 1_800_000_000
NOT_BEFORE, NOT_AFTER = NOW - 86_400, NOW + 365 * 86_400
FLEET = "gw-fleet"


def rfc3339(t: int) -> str:
    return datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass
class Fleet:
    """A fleet root, keys endorsed at test time, and the artifacts directory."""

    artifacts: Path
    root: KeySigner = field(default_factory=lambda: generate(Algorithm.ED25519))
    name: str = FLEET

    def endorse(self, key: KeySigner, tier: str, *, by: KeySigner | None = None,
                fleet: str | None = None, not_before: int = NOT_BEFORE,
                not_after: int = NOT_AFTER) -> bytes:
        payload = KeyEndorsement(fleet=fleet or self.name, tier=Tier(tier), key_id=bytes.fromhex(
            key.key_id), algorithm=key.algorithm, public_key=key.spki_der,
            not_before=not_before, not_after=not_after).to_cbor()
        return sign1(by or self.root, CT_KEY, payload)

    def revocation(self, key: KeySigner, by: KeySigner | None = None) -> str:
        payload = Revocation(fleet=self.name, key_id=bytes.fromhex(key.key_id),
                             revoked_at=NOW - 10, reason="key left the building").to_cbor()
        return b64(sign1(by or self.root, CT_REVOCATION, payload))

    def key_spec(self, key: KeySigner, tier: str, *, endorsement: bytes | None = None,
                 not_before: int = NOT_BEFORE, not_after: int = NOT_AFTER,
                 **extra: Any) -> dict[str, Any]:
        return {"tier": tier, "algorithm": str(key.algorithm), "publicKey": key.public_pem,
                "notBefore": rfc3339(not_before), "notAfter": rfc3339(not_after),
                "endorsement": b64(endorsement or self.endorse(key, tier, not_before=not_before,
                                                               not_after=not_after)),
                "revoked": False, **extra}

    def entry(self, key: KeySigner, tier: str, name: str | None = None, *,
              retired: bool = False, revoked: bool = False, **spec: Any) -> dict[str, Any]:
        return {"name": name or f"{tier}-{key.key_id[:8]}", "spec": self.key_spec(key, tier, **spec),
                "retired": retired, "revoked": revoked}

    def artifact(self, name: str, data: bytes) -> Path:
        path = self.artifacts / name
        path.write_bytes(data)
        return path

    def release(self, signers: list[KeySigner], tier: str = "application", *,
                data: bytes = b"firmware image " * 1000, security_version: int = 7,
                signed: dict[str, Any] | None = None, url: str | None = None,
                **declared: Any) -> dict[str, Any]:
        """A FirmwareRelease spec; `signed` overrides manifest fields that were signed,
        `declared` overrides spec fields (so the two can disagree)."""
        path = self.artifact(f"{tier}-{security_version}.bin", data)
        fields = {"fleet": self.name, "product": "gw-3000", "tier": Tier(tier),
                  "version": "4.2.0", "security_version": security_version,
                  "artifact_name": path.name, "artifact_size": len(data),
                  "artifact_sha256": hashlib.sha256(data).digest(), **(signed or {})}
        manifest = ReleaseManifest(**fields)
        envelopes = [b64(sign1(s, CT_RELEASE, manifest.to_cbor())) for s in signers]
        spec: dict[str, Any] = {"tier": tier, "product": "gw-3000", "version": "4.2.0",
                "securityVersion": security_version, "channel": "stable",
                "artifact": {"url": url or path.as_uri(), "name": path.name,
                             "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)},
                "signatures": envelopes}
        for key, value in declared.items():
            if key in spec["artifact"]:
                spec["artifact"][key] = value
            else:
                spec[key] = value
        return spec

    def settings(self, **extra: Any) -> Settings:
        return settings_from({
            "roots": [{"publicKey": self.root.public_pem, "algorithm": str(self.root.algorithm)}],
            "thresholds": {"bootloader": 2}, "maxSecurityVersionJump": 100,
            "allowFileURLs": True, "fileRoot": str(self.artifacts), **extra})


class CountingSource:
    """The real fetcher, counting calls: proves nothing is downloaded for a refused release."""

    def __init__(self, inner: Fetcher) -> None:
        self.inner, self.calls = inner, 0

    async def fetch(self, url: str, expected_size: int,
                    progress: ReadReporter | None = None) -> FetchResult:
        self.calls += 1
        return await self.inner.fetch(url, expected_size, progress)


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    return Fleet(tmp_path)


def service_for(fleet: Fleet, **extra: Any) -> tuple[VerifierService, CountingSource]:
    settings = fleet.settings(**extra)
    source = CountingSource(Fetcher(settings.url_policy, settings.limits,
                                    settings.config.ca_file))
    return VerifierService(settings.roots, settings.policy, source, Metrics(),
                           settings.config.max_concurrent_fetches,
                           settings.artifact_prefixes), source


def verify(fleet: Fleet, release: dict[str, Any], keys: list[dict[str, Any]],
           floor: int | None = 5, now: int = NOW, **config: Any) -> tuple[ReleaseVerdict, int]:
    service, source = service_for(fleet, **config)
    request = ReleaseRequest.model_validate({"fleet": fleet.name, "name": "r1", "release": release,
                                             "keys": keys, "floor": floor, "now": now})
    return asyncio.run(service.verify_release(request)), source.calls


def rejected(verdict: ReleaseVerdict, reason: Reason) -> None:
    assert (verdict.verdict, verdict.reason) == ("rejected", reason), verdict.message


# ---- accepted ------------------------------------------------------------------------------

@pytest.mark.parametrize("algorithm", [Algorithm.ED25519, Algorithm.ES256])
def test_accepted(fleet: Fleet, algorithm: Algorithm) -> None:
    app = generate(algorithm)
    other = generate(Algorithm.ED25519)
    data = os.urandom(100_000)
    verdict, calls = verify(fleet, fleet.release([app], data=data),
                            [fleet.entry(app, "application"), fleet.entry(other, "os")])
    assert verdict.verdict == "accepted" and verdict.reason is None, verdict.message
    assert verdict.key_ids == [app.key_id] and calls == 1
    assert (verdict.sha256, verdict.size) == (hashlib.sha256(data).hexdigest(), len(data))
    assert verdict.seconds > 0


def test_bootloader_threshold_from_config(fleet: Fleet) -> None:
    a, b = generate(Algorithm.ED25519), generate(Algorithm.ES256)
    keys = [fleet.entry(a, "bootloader"), fleet.entry(b, "bootloader")]
    verdict, _ = verify(fleet, fleet.release([a, b], "bootloader"), keys)
    assert verdict.verdict == "accepted" and sorted(verdict.key_ids) == sorted([a.key_id, b.key_id])
    one, calls = verify(fleet, fleet.release([a], "bootloader"), keys)
    rejected(one, Reason.ThresholdNotMet)
    assert calls == 0
    # One key signing twice counts once (ES256 signatures differ, so the API's "distinct
    # signatures" rule does not refuse the list).
    twice, _ = verify(fleet, fleet.release([b, b], "bootloader"), keys)
    rejected(twice, Reason.ThresholdNotMet)
    # The same release passes a sidecar configured with threshold 1: the number is the config's.
    lenient, _ = verify(fleet, fleet.release([a], "bootloader"), keys, thresholds={})
    assert lenient.verdict == "accepted"


# ---- rejections of steps 1-7: nothing downloaded -------------------------------------------

def test_signature_invalid(fleet: Fleet) -> None:
    app = generate(Algorithm.ED25519)
    release = fleet.release([app])
    raw = bytearray(base64.b64decode(release["signatures"][0]))
    raw[-1] ^= 1
    release["signatures"] = [b64(bytes(raw))]
    verdict, calls = verify(fleet, release, [fleet.entry(app, "application")])
    rejected(verdict, Reason.SignatureInvalid)
    assert calls == 0
    garbage, _ = verify(fleet, {**release, "signatures": [b64(b"not a COSE_Sign1")]},
                        [fleet.entry(app, "application")])
    rejected(garbage, Reason.SignatureInvalid)
    # Not base64 at all: the API (FirmwareReleaseSpec) refuses it, so the request is a 400.
    with pytest.raises(ValidationError, match="signatures"):
        verify(fleet, {**release, "signatures": ["not base64!"]}, [fleet.entry(app, "application")])


def test_unknown_key(fleet: Fleet) -> None:
    app = generate(Algorithm.ED25519)
    verdict, calls = verify(fleet, fleet.release([app]), [])
    rejected(verdict, Reason.UnknownKey)
    assert calls == 0


def test_key_endorsed_by_a_non_root_is_unknown_whatever_the_caller_says(fleet: Fleet) -> None:
    app, impostor = generate(Algorithm.ED25519), generate(Algorithm.ED25519)
    entry = fleet.entry(app, "application",
                        endorsement=fleet.endorse(app, "application", by=impostor))
    verdict, _ = verify(fleet, fleet.release([app]), [entry])
    rejected(verdict, Reason.UnknownKey)


def test_key_endorsed_for_another_fleet_is_unknown(fleet: Fleet) -> None:
    app = generate(Algorithm.ED25519)
    entry = fleet.entry(app, "application",
                        endorsement=fleet.endorse(app, "application", fleet="other-fleet"))
    verdict, _ = verify(fleet, fleet.release([app]), [entry])
    rejected(verdict, Reason.UnknownKey)


def test_spec_that_stretches_its_endorsement_is_unknown(fleet: Fleet) -> None:
    """The caller claims a longer validity than the root endorsed: the key is not trusted."""
    app = generate(Algorithm.ED25519)
    endorsement = fleet.endorse(app, "application", not_after=NOW - 1)
    entry = fleet.entry(app, "application", endorsement=endorsement, not_after=NOW + 10**6)
    verdict, _ = verify(fleet, fleet.release([app]), [entry])
    rejected(verdict, Reason.UnknownKey)


def test_key_of_another_tier(fleet: Fleet) -> None:
    os_key = generate(Algorithm.ED25519)
    verdict, calls = verify(fleet, fleet.release([os_key]), [fleet.entry(os_key, "os")])
    rejected(verdict, Reason.KeyNotTrustedForTier)
    assert "tier os" in verdict.message and calls == 0


def test_root_signed_release_is_not_trusted_for_tier(fleet: Fleet) -> None:
    verdict, _ = verify(fleet, fleet.release([fleet.root]), [])
    rejected(verdict, Reason.KeyNotTrustedForTier)


def test_root_endorsed_as_a_tier_key_stays_the_root(fleet: Fleet) -> None:
    entry = fleet.entry(fleet.root, "application")
    verdict, _ = verify(fleet, fleet.release([fleet.root]), [entry])
    rejected(verdict, Reason.KeyNotTrustedForTier)


def test_caller_revoked_key(fleet: Fleet) -> None:
    app = generate(Algorithm.ED25519)
    entry = fleet.entry(app, "application", revoked=True)
    verdict, calls = verify(fleet, fleet.release([app]), [entry])
    rejected(verdict, Reason.KeyRevoked)
    assert calls == 0


def test_duplicate_entries_distrust_wins(fleet: Fleet) -> None:
    app = generate(Algorithm.ED25519)
    keys = [fleet.entry(app, "application", "a"), fleet.entry(app, "application", "b",
                                                                revoked=True)]
    verdict, _ = verify(fleet, fleet.release([app]), keys)
    rejected(verdict, Reason.KeyRevoked)


def test_root_signed_revocation_revokes_even_without_the_flag(fleet: Fleet) -> None:
    app = generate(Algorithm.ED25519)
    entry = fleet.entry(app, "application", revocation=fleet.revocation(app))
    verdict, _ = verify(fleet, fleet.release([app]), [entry])
    rejected(verdict, Reason.KeyRevoked)


def test_revoked_outside_the_spec_revokes(fleet: Fleet) -> None:
    """The operator says a key is revoked when its keyId is on the fleet's RevocationList, even
    though this SigningKey's own spec says revoked: false (a re-created or duplicate object)."""
    app = generate(Algorithm.ED25519)
    verdict, calls = verify(fleet, fleet.release([app]), [fleet.entry(app, "application",
                                                                      revoked=True)])
    rejected(verdict, Reason.KeyRevoked)
    assert calls == 0


def test_expired_and_retired_keys(fleet: Fleet) -> None:
    app = generate(Algorithm.ED25519)
    entry = fleet.entry(app, "application")
    late, _ = verify(fleet, fleet.release([app]), [entry], now=NOT_AFTER)
    rejected(late, Reason.KeyExpired)
    retired, _ = verify(fleet, fleet.release([app]), [fleet.entry(app, "application",
                                                                  retired=True)])
    rejected(retired, Reason.KeyExpired)


def test_manifest_mismatch(fleet: Fleet) -> None:
    app = generate(Algorithm.ED25519)
    verdict, calls = verify(fleet, fleet.release([app], version="4.2.1"),
                            [fleet.entry(app, "application")])
    rejected(verdict, Reason.ManifestMismatch)
    assert verdict.key_ids == [app.key_id] and calls == 0


def test_rollback_and_fast_forward(fleet: Fleet) -> None:
    app = generate(Algorithm.ED25519)
    keys = [fleet.entry(app, "application")]
    low, calls = verify(fleet, fleet.release([app], security_version=4), keys, floor=5)
    rejected(low, Reason.RollbackRejected)
    equal, _ = verify(fleet, fleet.release([app], security_version=5), keys, floor=5)
    assert equal.verdict == "accepted"
    high, _ = verify(fleet, fleet.release([app], security_version=106), keys, floor=5)
    rejected(high, Reason.FastForwardRejected)
    assert calls == 0
    tight, _ = verify(fleet, fleet.release([app], security_version=7), keys, floor=5,
                      maxSecurityVersionJump=1)
    rejected(tight, Reason.FastForwardRejected)


def test_cost_does_not_grow_with_the_fleets_keys(fleet: Fleet) -> None:
    """Only the keys the envelopes name are looked at, and their endorsements are verified once
    while cached: 50 other keys in the request cost no signature check."""
    app = generate(Algorithm.ED25519)
    others = [fleet.entry(generate(Algorithm.ED25519), "os", f"os-{i}") for i in range(50)]
    service, _ = service_for(fleet)
    request = ReleaseRequest.model_validate({
        "fleet": fleet.name, "name": "r", "release": fleet.release([app]),
        "keys": [*others, fleet.entry(app, "application")], "floor": 5, "now": NOW})
    for _ in range(3):
        verdict = asyncio.run(service.verify_release(request))
        assert verdict.verdict == "accepted", verdict.message
    assert (service.endorsements.verifications, service.endorsements.hits) == (1, 2)


# ---- step 8: the artifact ------------------------------------------------------------------

def test_hash_mismatch(fleet: Fleet) -> None:
    app = generate(Algorithm.ED25519)
    release = fleet.release([app], data=b"A" * 5000)
    fleet.artifact(release["artifact"]["name"], b"B" * 5000)  # swapped after signing
    verdict, _ = verify(fleet, release, [fleet.entry(app, "application")])
    rejected(verdict, Reason.HashMismatch)
    assert verdict.sha256 == hashlib.sha256(b"B" * 5000).hexdigest()


@pytest.mark.parametrize("stored", [b"A" * 4999, b"A" * 5001, b""])
def test_size_mismatch(fleet: Fleet, stored: bytes) -> None:
    app = generate(Algorithm.ED25519)
    release = fleet.release([app], data=b"A" * 5000)
    fleet.artifact(release["artifact"]["name"], stored)
    verdict, _ = verify(fleet, release, [fleet.entry(app, "application")])
    rejected(verdict, Reason.SizeMismatch)
    assert verdict.size == min(len(stored), 5001)


@pytest.mark.parametrize("url", ["https://[zz]/fw.bin", "https://a..b/fw.bin",
                                 "https://169.254.169.254/latest/meta-data/fw.bin",
                                 "https://10.0.0.1/fw.bin", "file:///etc/passwd",
                                 "https://kubernetes.default.svc/fw.bin"])
def test_artifact_url_not_allowed(fleet: Fleet, url: str) -> None:
    app = generate(Algorithm.ED25519)
    verdict, _ = verify(fleet, fleet.release([app], url=url), [fleet.entry(app, "application")])
    rejected(verdict, Reason.ArtifactURLNotAllowed)
    assert verdict.key_ids == [app.key_id]


@pytest.mark.parametrize("url", ["http://example.com/fw.bin", "gopher://x/", "no scheme at all"])
def test_artifact_urls_the_api_refuses_are_bad_requests(fleet: Fleet, url: str) -> None:
    """The request embeds the API's FirmwareReleaseSpec: what the API server would never admit
    is refused as a request (HTTP 400), not answered with a verdict."""
    app = generate(Algorithm.ED25519)
    with pytest.raises(ValidationError, match=r"artifact\.url"):
        verify(fleet, fleet.release([app], url=url), [fleet.entry(app, "application")])


def test_file_urls_off_unless_configured(fleet: Fleet) -> None:
    app = generate(Algorithm.ED25519)
    verdict, _ = verify(fleet, fleet.release([app]), [fleet.entry(app, "application")],
                        allowFileURLs=False)
    rejected(verdict, Reason.ArtifactURLNotAllowed)


def test_artifact_unavailable(fleet: Fleet) -> None:
    app = generate(Algorithm.ED25519)
    release = fleet.release([app])
    (fleet.artifacts / release["artifact"]["name"]).unlink()
    verdict, _ = verify(fleet, release, [fleet.entry(app, "application")])
    rejected(verdict, Reason.ArtifactUnavailable)
    s3, _ = verify(fleet, fleet.release([app], url="s3://bucket/fw.bin"),
                   [fleet.entry(app, "application")])
    rejected(s3, Reason.ArtifactUnavailable)
    assert "s3://" in s3.message and "not configured" in s3.message


def test_presigned_query_is_not_repeated_in_messages(fleet: Fleet) -> None:
    app = generate(Algorithm.ED25519)
    url = "s3://bucket/fw.bin?X-Amz-Signature=secret"
    verdict, _ = verify(fleet, fleet.release([app], url=url), [fleet.entry(app, "application")])
    assert "secret" not in verdict.message


def test_artifact_hosts_limited_by_fleet_policy(fleet: Fleet) -> None:
    """artifactURLPrefixes (default) and fleets.<fleet>.artifactURLPrefixes (own list): a URL
    elsewhere is refused before any download, naming the allowed prefixes."""
    app = generate(Algorithm.ED25519)
    keys = [fleet.entry(app, "application")]
    local = fleet.artifacts.as_uri() + "/"
    elsewhere = "https://fw.example.com.evil/gw/fw.bin"
    ok, calls = verify(fleet, fleet.release([app]), keys, artifactURLPrefixes=[local])
    assert ok.verdict == "accepted" and calls == 1, ok.message
    refused, calls = verify(fleet, fleet.release([app], url=elsewhere), keys,
                            artifactURLPrefixes=["https://fw.example.com/gw/", local])
    rejected(refused, Reason.ArtifactURLNotAllowed)
    assert calls == 0 and refused.key_ids == [app.key_id]
    assert refused.message == (
        f"artifact {elsewhere}: not under the artifact URL prefixes allowed for fleet "
        f"{fleet.name} (https://fw.example.com/gw/, {local})")
    # The fleet's own list replaces the default, both ways.
    own, _ = verify(fleet, fleet.release([app]), keys,
                    artifactURLPrefixes=["https://fw.example.com/gw/"],
                    fleets={fleet.name: {"artifactURLPrefixes": [local]}})
    assert own.verdict == "accepted", own.message
    other, _ = verify(fleet, fleet.release([app]), keys, artifactURLPrefixes=[local],
                      fleets={fleet.name: {"artifactURLPrefixes": ["s3://gw-firmware/"]}})
    rejected(other, Reason.ArtifactURLNotAllowed)
    assert "(s3://gw-firmware/)" in other.message


def test_credentials_in_the_url_are_refused_and_never_repeated(fleet: Fleet) -> None:
    app = generate(Algorithm.ED25519)
    url = "https://release-bot:hunter2@fw.example.com/gw/fw.bin?X-Amz-Signature=sekrit"
    verdict, calls = verify(fleet, fleet.release([app], url=url),
                            [fleet.entry(app, "application")])
    rejected(verdict, Reason.ArtifactURLNotAllowed)
    assert calls == 0
    assert verdict.message == (
        "artifact https://fw.example.com/gw/fw.bin: credentials in an artifact URL would be "
        "published to devices; use the sidecar's s3 credentials or a presigned URL")


def test_over_https_with_the_configured_ca(fleet: Fleet, tmp_path: Path) -> None:
    from .test_fetch import BODY, HttpsServer, make_routes

    ref: list[HttpsServer] = []
    server = HttpsServer(tmp_path / "tls", make_routes(ref))
    ref.append(server)
    server.start()
    try:
        app = generate(Algorithm.ED25519)
        release = fleet.release([app], data=BODY, url=server.url("/body"))
        keys = [fleet.entry(app, "application")]
        ok, _ = verify(fleet, release, keys, caFile=str(server.ca),
                       allowedNetworks=["127.0.0.1/32"])
        assert ok.verdict == "accepted", ok.message
        untrusted, _ = verify(fleet, release, keys, allowedNetworks=["127.0.0.1/32"])
        rejected(untrusted, Reason.ArtifactUnavailable)
        denied, _ = verify(fleet, release, keys, caFile=str(server.ca))
        rejected(denied, Reason.ArtifactURLNotAllowed)
    finally:
        server.stop()


# ---- verify_key ----------------------------------------------------------------------------

def verify_key(fleet: Fleet, spec: dict[str, Any]) -> Any:
    service, _ = service_for(fleet)
    return service.verify_key(KeyRequest.model_validate({"fleet": fleet.name, "spec": spec}))


def test_key_endorsed_values_from_the_payload(fleet: Fleet) -> None:
    key = generate(Algorithm.ES256)
    verdict = verify_key(fleet, fleet.key_spec(key, "driver"))
    assert verdict.endorsed and verdict.reason is None and verdict.key_id == key.key_id
    assert (verdict.tier, verdict.algorithm) == (Tier.DRIVER, Algorithm.ES256)
    assert (verdict.not_before, verdict.not_after) == (NOT_BEFORE, NOT_AFTER)
    assert verdict.revocation_verified is None


def test_key_not_endorsed(fleet: Fleet) -> None:
    key, impostor = generate(Algorithm.ED25519), generate(Algorithm.ED25519)
    by_impostor = verify_key(fleet, fleet.key_spec(
        key, "os", endorsement=fleet.endorse(key, "os", by=impostor)))
    assert not by_impostor.endorsed and by_impostor.reason == Reason.UnknownKey
    assert by_impostor.key_id == key.key_id and by_impostor.tier is None
    other_tier = verify_key(fleet, fleet.key_spec(
        key, "bootloader", endorsement=fleet.endorse(key, "os")))
    assert not other_tier.endorsed and other_tier.reason == Reason.ManifestMismatch
    not_a_key = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"  # PEM-shaped
    bad_pem = verify_key(fleet, {**fleet.key_spec(key, "os"), "publicKey": not_a_key})
    assert not bad_pem.endorsed and bad_pem.reason == Reason.SignatureInvalid
    fraction = verify_key(fleet, {**fleet.key_spec(key, "os"),
                                  "notBefore": rfc3339(NOT_BEFORE).replace("Z", ".5Z")})
    assert not fraction.endorsed and fraction.reason == Reason.ManifestMismatch


def test_key_revocation(fleet: Fleet) -> None:
    key, other, impostor = (generate(Algorithm.ED25519) for _ in range(3))
    good = verify_key(fleet, fleet.key_spec(key, "os", revoked=True,
                                            revocation=fleet.revocation(key)))
    assert good.endorsed and good.revocation_verified is True
    wrong_key = verify_key(fleet, fleet.key_spec(key, "os", revoked=True,
                                                 revocation=fleet.revocation(other)))
    assert wrong_key.revocation_verified is False and other.key_id in wrong_key.revocation_message
    not_root = verify_key(fleet, fleet.key_spec(key, "os", revoked=True,
                                                revocation=fleet.revocation(key, by=impostor)))
    assert not_root.revocation_verified is False


def test_downloads_are_bounded(fleet: Fleet) -> None:
    """maxConcurrentFetches: the third verification waits for a download slot."""

    class SlowSource:
        def __init__(self) -> None:
            self.running = self.peak = 0

        async def fetch(self, url: str, expected_size: int,
                        progress: ReadReporter | None = None) -> FetchResult:
            self.running += 1
            self.peak = max(self.peak, self.running)
            await asyncio.sleep(0.05)
            self.running -= 1
            return FetchResult(url, 0, b"", short=True, oversized=False, seconds=0.05)

    # One fleet may use both slots here (by default it gets half: see test_slots.py).
    settings = fleet.settings(maxConcurrentFetches=2, maxConcurrentFetchesPerFleet=2)
    source = SlowSource()
    service = VerifierService(settings.roots, settings.policy, source, Metrics(),
                              settings.config.max_concurrent_fetches, None,
                              settings.config.fetches_per_fleet)
    app = generate(Algorithm.ED25519)
    request = ReleaseRequest.model_validate({
        "fleet": fleet.name, "name": "r", "release": fleet.release([app]),
        "keys": [fleet.entry(app, "application")], "floor": 5, "now": NOW})

    async def many() -> list[ReleaseVerdict]:
        return list(await asyncio.gather(*(service.verify_release(request) for _ in range(5))))

    verdicts = asyncio.run(many())
    assert {v.reason for v in verdicts} == {Reason.SizeMismatch}
    assert source.peak == 2


# ---- robustness: whatever validates as a request gets a verdict, never an exception --------

_text = st.text(max_size=40)
_b64 = st.binary(max_size=200).map(b64)


@st.composite
def requests(draw: st.DrawFn, fleet: Fleet, good: dict[str, Any]) -> dict[str, Any]:
    release = dict(good["release"])
    artifact = dict(release["artifact"])
    artifact["url"] = draw(st.one_of(_text, st.sampled_from(
        ["https://[::1/x", "file:///etc/shadow", "https://a..b/", "s3://b/k", artifact["url"]])))
    artifact["size"] = draw(st.integers(0, 2**64 - 1))
    release["artifact"] = artifact
    release["signatures"] = draw(st.lists(st.one_of(_b64, _text), max_size=3)) + draw(
        st.sampled_from([[], release["signatures"]]))
    release["securityVersion"] = draw(st.integers(0, 2**64 - 1))
    keys = [dict(k, spec=dict(k["spec"], endorsement=draw(st.one_of(_b64, st.just(
        k["spec"]["endorsement"]))), publicKey=draw(st.one_of(_text, st.just(
            k["spec"]["publicKey"]))))) for k in good["keys"]]
    floor = draw(st.one_of(st.none(), st.integers(0, 2**64 - 1)))
    return {**good, "release": release, "keys": keys, "floor": floor,
            "now": draw(st.integers(0, 2**64 - 1))}


def test_any_valid_request_gets_a_verdict(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path)
    app = generate(Algorithm.ED25519)
    good = {"fleet": fleet.name, "name": "r", "release": fleet.release([app]),
            "keys": [fleet.entry(app, "application"), fleet.entry(app, "os")],
            "floor": 5, "now": NOW}
    service, _ = service_for(fleet, connectTimeoutSeconds=0.5)

    @settings(max_examples=150, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(requests(fleet, good))
    def check(body: dict[str, Any]) -> None:
        try:
            request = ReleaseRequest.model_validate(body)
        except ValidationError:
            return  # a 400, tested elsewhere
        verdict = asyncio.run(service.verify_release(request))
        assert verdict.verdict in ("accepted", "rejected") and verdict.message

    check()
