"""The sidecar's verification logic, without HTTP: `verify_key` and `verify_release`.

Every decision about signatures and keys is flashgate.trust's; the key ring is built by
`flashgate.trust.fleet` (the same function the signing station's `flashgate verify` uses):
- the configured roots (tier "root", so a root-signed release is KeyNotTrustedForTier) and each
  caller-supplied SigningKey whose endorsement verifies against those roots *now*, with tier,
  algorithm and validity from the verified payload. A key whose endorsement does not verify, or
  disagrees with its spec, is simply absent (UnknownKey);
- the caller's `revoked` and `retired` flags, and a verified root-signed revocation, only ever
  remove trust;
- verified endorsements are kept in an `EndorsementCache`, so a release's cost does not grow
  with the number of keys in the fleet; only the keys its envelopes name are looked at;
- thresholds and the maximum jump come from the sidecar's own configuration.
Then docs/format.md steps 1-7 (`trust.verify_release`) and, only if those pass, step 8: URL policy,
fetch, size and digest (`trust.check_artifact`). Nothing is downloaded for a refused release.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Protocol

from flashgate.trust import (
    KeyRecord,
    Policy,
    TrustError,
    Verdict,
    check_artifact,
    final_verdict,
    key_id,
    spki_from_pem,
    verify_release,
)
from flashgate.trust.fleet import (
    EndorsementCache,
    check_revocation,
    check_signing_key,
    expected_manifest,
    fleet_keyring,
    signer_key_ids,
)
from flashgate.verifier_api.models import (
    KeyRequest,
    KeyVerdict,
    ReleaseRequest,
    ReleaseVerdict,
)
from flashgate.verifier_sidecar.fetch import FetchError, FetchResult, ReadReporter
from flashgate.verifier_sidecar.metrics import Metrics
from flashgate.verifier_sidecar.slots import DownloadProgress, FairSlots, default_share
from flashgate.verifier_sidecar.urlpolicy import ArtifactPrefixes, check_release_url, redact

log = logging.getLogger("flashgate.verifier")
SCHEMES = frozenset({"https", "file", "s3"})


class ArtifactSource(Protocol):
    """What the service needs of a fetcher (fetch.Fetcher; tests may use another)."""

    async def fetch(self, url: str, expected_size: int,
                    progress: ReadReporter | None = None) -> FetchResult: ...


class VerifierService:
    """Verifies keys and releases for one sidecar (its roots, policy and fetcher).

    Args:
        roots: the configured fleet roots (KeyRecords of tier "root").
        policy: thresholds and maximum securityVersion jump from the sidecar's config.
        source: fetches artifacts.
        metrics: where fetch counters go.
        max_fetches: downloads allowed at once; further verifications wait for a slot.
        prefixes: where each fleet's artifacts may be (default: anywhere the address rules
            admit).
        max_fetches_per_fleet: downloads of one fleet at once (default: half of max_fetches,
            at least 1); free slots go to the waiting fleets in turn (`slots.FairSlots`).
    """

    def __init__(self, roots: Sequence[KeyRecord], policy: Policy, source: ArtifactSource,
                 metrics: Metrics, max_fetches: int = 4,
                 prefixes: ArtifactPrefixes | None = None,
                 max_fetches_per_fleet: int | None = None) -> None:
        self.roots = tuple(roots)
        self.policy = policy
        self.source = source
        self.prefixes = prefixes or ArtifactPrefixes()
        self.metrics = metrics
        self.endorsements = EndorsementCache()
        self.slots = FairSlots(max_fetches, max_fetches_per_fleet or default_share(max_fetches))
        metrics.fetches_waiting.set_function(lambda: self.slots.queued)
        metrics.fetches_in_flight.set_function(lambda: self.slots.active)

    # ---- keys -----------------------------------------------------------------------------

    def verify_key(self, request: KeyRequest) -> KeyVerdict:
        """Did a configured root endorse exactly this SigningKey (and revoke it, if it says so)?"""
        spec, fleet = request.spec, request.fleet
        try:
            spki = spki_from_pem(spec.public_key)
        except TrustError as exc:
            return KeyVerdict(endorsed=False, reason=exc.reason,
                              message=f"publicKey: {exc.message}")
        kid = key_id(spki)
        revocation = check_revocation(spec, fleet, self.roots, kid)
        check = check_signing_key(spec, fleet, self.roots, self.endorsements, spki=spki)
        if check.endorsement is None:
            return KeyVerdict(endorsed=False, key_id=kid, reason=check.verdict.reason,
                              message=check.verdict.message,
                              revocation_verified=revocation.verified,
                              revocation_message=revocation.message)
        endorsed = check.endorsement
        return KeyVerdict(endorsed=True, key_id=endorsed.key_id.hex(),
                          message=check.verdict.message,
                          tier=endorsed.tier,
                          algorithm=endorsed.algorithm, not_before=endorsed.not_before,
                          not_after=endorsed.not_after, revocation_verified=revocation.verified,
                          revocation_message=revocation.message)

    # ---- releases -------------------------------------------------------------------------

    async def verify_release(self, request: ReleaseRequest) -> ReleaseVerdict:
        """docs/format.md steps 1-8 for one FirmwareRelease; never raises for bad input."""
        started = time.monotonic()
        spec = request.release
        expected = expected_manifest(request.fleet, spec)
        fleet = fleet_keyring(request.fleet, request.keys, self.roots, self.endorsements,
                              key_ids=signer_key_ids(spec.signatures))
        for note in fleet.left_out:
            log.warning("fleet %s: %s", request.fleet, note)
        signed = verify_release(spec.signatures, expected, fleet.keyring, self.policy,
                                request.floor, request.now)
        if not signed.accepted:
            return _answer(signed, None, started)
        try:
            # The rules that need no DNS first: a refused URL never waits for a download slot.
            check_release_url(spec.artifact.url, request.fleet, self.prefixes)
            fetched = await self._fetch(request.fleet, request.name, spec.artifact.url,
                                        expected.artifact_size)
        except FetchError as exc:
            failed = Verdict.reject(exc.reason,
                                    f"artifact {redact(spec.artifact.url)}: {exc.message}",
                                    key_ids=signed.key_ids)
            return _answer(failed, None, started)
        checked = check_artifact(expected, fetched.size, fetched.sha256,
                                 oversized=fetched.oversized)
        return _answer(final_verdict(signed, checked), fetched, started)

    def progress(self, fleet: str, name: str) -> DownloadProgress:
        """Where the download of a release stands (queued, fetching or unknown)."""
        return self.slots.progress(fleet, name)

    async def _fetch(self, fleet: str, name: str, url: str, size: int) -> FetchResult:
        scheme = url.partition("://")[0].lower()
        scheme = scheme if scheme in SCHEMES else "other"  # bounded label values
        async with self.slots.download(fleet, name) as download:
            started = time.monotonic()
            try:
                result = await self.source.fetch(url, size, download.add)
            except FetchError as exc:
                self.metrics.fetch_seconds.labels(scheme, exc.reason).observe(
                    time.monotonic() - started)
                raise
        self.metrics.fetch_bytes.labels(scheme).inc(result.size)
        self.metrics.fetch_seconds.labels(scheme, "ok").observe(time.monotonic() - started)
        return result


def _answer(verdict: Verdict, fetched: FetchResult | None, started: float) -> ReleaseVerdict:
    return ReleaseVerdict(
        verdict="accepted" if verdict.accepted else "rejected", reason=verdict.reason,
        # A fetch error may quote a URL, query and all (aiohttp's messages do).
        message=redact(verdict.message), key_ids=list(verdict.key_ids),
        sha256=fetched.sha256.hex() if fetched and fetched.sha256 else None,
        size=fetched.size if fetched else None, seconds=round(time.monotonic() - started, 6))
