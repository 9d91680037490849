"""Offline verification: the verifier sidecar's own service, with the artifact read from disk.

`flashgate verify` must give the verdict and reason the cluster will give. Rather than repeat
the sidecar's rules for building the key ring (endorsements re-verified against the roots and
the spec, `revoked` and root-signed revocations only removing trust, a root never becoming a
tier key, a key endorsed for two tiers trusted for neither), it calls the sidecar's
`VerifierService` itself, which runs FORMAT.md steps 1-8 through `flashgate.trust`. Only two
inputs differ from the cluster: the artifact comes from a local file (`LocalArtifact`, read as
the sidecar's fetcher reads: stop at the signed size, note any byte beyond), and the retired
keys are computed here from the specs by the same pure rotation state machine the operator uses
(`trust.rotation.key_phase`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from flashgate.api import FirmwareReleaseSpec, SigningKeySpec
from flashgate.signing.files import hash_file
from flashgate.trust.durations import parse_duration
from flashgate.trust.keyring import KeyRecord
from flashgate.trust.release import Policy
from flashgate.trust.rotation import DEFAULT_OVERLAP, KeyPhase, KeyState, key_phase
from flashgate.verifier_api.models import KeyEntry, KeyRequest, ReleaseRequest, ReleaseVerdict
from flashgate.verifier_sidecar.fetch import FetchResult
from flashgate.verifier_sidecar.metrics import Metrics
from flashgate.verifier_sidecar.service import VerifierService


class LocalArtifact:
    """The sidecar's `ArtifactSource` for a file on disk (the release's URL is not fetched)."""

    def __init__(self, path: Path, progress: TextIO | None) -> None:
        self._path = path
        self._progress = progress

    async def fetch(self, url: str, expected_size: int) -> FetchResult:
        started = time.monotonic()
        digest = hash_file(self._path, "--artifact", limit=expected_size,
                           progress=self._progress)
        return FetchResult(url=url, size=digest.size, sha256=digest.sha256,
                           truncated=digest.size < expected_size, oversized=digest.truncated,
                           seconds=time.monotonic() - started)


@dataclass(frozen=True)
class FleetKey:
    """A SigningKey of the release's fleet, as read from YAML."""

    name: str
    spec: SigningKeySpec


def verify_offline(*, roots: Sequence[KeyRecord], policy: Policy, fleet: str, name: str,
                   release: FirmwareReleaseSpec, keys: Sequence[FleetKey], artifact: Path,
                   floor: int | None, now: int, progress: TextIO | None,
                   warn: Callable[[str], None]) -> ReleaseVerdict:
    """The sidecar's verdict on `release`, with `artifact` as the bytes behind its URL.

    Keys whose endorsement does not hold are reported through `warn` (the sidecar leaves them
    out of the key ring silently; a release they signed is then signed by an unknown key).
    """
    service = VerifierService(roots, policy, LocalArtifact(artifact, progress), Metrics())
    endorsed = {}
    for key in keys:
        verdict = service.verify_key(KeyRequest(fleet=fleet, spec=key.spec))
        endorsed[key.name] = verdict.endorsed
        if not verdict.endorsed:
            warn(f"SigningKey {key.name} is not trusted: {verdict.reason}: {verdict.message}")
    states = [_state(k, endorsed[k.name]) for k in keys]
    retired = {s.name for s in states if key_phase(s, states, now).phase == KeyPhase.Retired}
    request = ReleaseRequest(
        fleet=fleet, name=name, release=release, floor=floor, now=now,
        keys=[KeyEntry(name=k.name, spec=k.spec, retired=k.name in retired) for k in keys])
    return asyncio.run(service.verify_release(request))


def _state(key: FleetKey, endorsed: bool) -> KeyState:
    """The rotation state machine's view of a key, built as the operator builds it."""
    spec = key.spec
    overlap = parse_duration(spec.overlap or DEFAULT_OVERLAP) if spec.replaces else None
    return KeyState(
        name=key.name,
        endorsed=endorsed,
        revoked=spec.revoked,
        not_before=int(spec.not_before.timestamp()),
        not_after=int(spec.not_after.timestamp()),
        activate_at=int(spec.activate_at.timestamp()) if spec.activate_at else None,
        replaces=spec.replaces,
        overlap_seconds=overlap if overlap is not None else 0,
    )
