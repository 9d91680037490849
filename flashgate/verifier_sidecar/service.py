"""The sidecar's verification logic, without HTTP: `verify_key` and `verify_release`.

Every decision about signatures and keys is flashgate.trust's; this module only decides what the
trust core is given:
- the KeyRing holds the configured roots (tier "root", so a root-signed release is
  KeyNotTrustedForTier) and each caller-supplied SigningKey whose endorsement verifies against
  those roots *now*, with tier, algorithm and validity from the verified payload. A key whose
  endorsement does not verify, or disagrees with its spec, is simply absent (UnknownKey).
- the caller's `revoked` and `retired` flags, and a verified root-signed revocation, only ever
  remove trust.
- thresholds and the maximum jump come from the sidecar's own configuration.
Then FORMAT.md steps 1-7 (`trust.verify_release`) and, only if those pass, step 8: URL policy,
fetch, size and digest (`trust.check_artifact`). Nothing is downloaded for a refused release.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Protocol

from yarl import URL

from flashgate.api import SigningKeySpec
from flashgate.trust import (
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
    key_id,
    spki_from_pem,
    verify_endorsement,
    verify_release,
    verify_revocation,
)
from flashgate.verifier_api.models import (
    KeyEntry,
    KeyRequest,
    KeyVerdict,
    ReleaseRequest,
    ReleaseVerdict,
)
from flashgate.verifier_sidecar.fetch import FetchError, FetchResult
from flashgate.verifier_sidecar.metrics import Metrics

log = logging.getLogger("flashgate.verifier")
SCHEMES = frozenset({"https", "file", "s3"})


class ArtifactSource(Protocol):
    """What the service needs of a fetcher (fetch.Fetcher; tests may use another)."""

    async def fetch(self, url: str, expected_size: int) -> FetchResult: ...


def whole_seconds(value: datetime) -> int | None:
    """Unix seconds of an RFC 3339 time, or None when it has a fraction (payloads are whole)."""
    if value.microsecond:
        return None
    return int(value.timestamp())


def redact(url: str) -> str:
    """The URL for messages and logs: no query (presigned URLs carry credentials there)."""
    try:
        return str(URL(url).with_query(None).with_fragment(None))
    except ValueError:
        return "(unparseable URL)"


class VerifierService:
    """Verifies keys and releases for one sidecar (its roots, policy and fetcher).

    Args:
        roots: the configured fleet roots (KeyRecords of tier "root").
        policy: thresholds and maximum securityVersion jump from the sidecar's config.
        source: fetches artifacts.
        metrics: where fetch counters go.
        max_fetches: downloads allowed at once; further verifications wait for a slot.
    """

    def __init__(self, roots: Sequence[KeyRecord], policy: Policy, source: ArtifactSource,
                 metrics: Metrics, max_fetches: int = 4) -> None:
        self.roots = tuple(roots)
        self.policy = policy
        self.source = source
        self.metrics = metrics
        self._slots = asyncio.Semaphore(max_fetches)

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
        revoked, revocation_message = self._revocation(fleet, spec, kid)
        verdict = self._endorsement(fleet, spec, spki)
        if not verdict.accepted:
            return KeyVerdict(endorsed=False, key_id=kid, reason=verdict.reason,
                              message=verdict.message, revocation_verified=revoked,
                              revocation_message=revocation_message)
        record = endorsed_record(spec.endorsement, fleet, self.roots)
        return KeyVerdict(endorsed=True, key_id=record.key_id, message=verdict.message,
                          tier=record.tier if isinstance(record.tier, Tier) else None,
                          algorithm=record.algorithm, not_before=record.not_before,
                          not_after=record.not_after, revocation_verified=revoked,
                          revocation_message=revocation_message)

    def _endorsement(self, fleet: str, spec: SigningKeySpec, spki: bytes) -> Verdict:
        not_before, not_after = whole_seconds(spec.not_before), whole_seconds(spec.not_after)
        if not_before is None or not_after is None:
            return Verdict.reject(Reason.ManifestMismatch, "notBefore/notAfter have fractions "
                                  "of a second; endorsements carry whole seconds")
        return verify_endorsement(spec.endorsement, fleet, self.roots, tier=spec.tier,
                                  algorithm=spec.algorithm, public_key=spki,
                                  not_before=not_before, not_after=not_after)

    def _revocation(self, fleet: str, spec: SigningKeySpec, kid: str) -> tuple[bool | None,
                                                                                str | None]:
        """Whether spec.revocation is a root-signed revocation of kid (None when absent)."""
        if spec.revocation is None:
            return None, None
        try:
            revocation = verify_revocation(spec.revocation, fleet, self.roots)
        except TrustError as exc:
            return False, f"revocation: {exc.reason}: {exc.message}"
        if revocation.key_id.hex() != kid:
            return False, f"revocation is of key {revocation.key_id.hex()}, not {kid}"
        return True, f"revoked by a fleet root at {revocation.revoked_at}: {revocation.reason}"

    def _trusted_record(self, fleet: str, entry: KeyEntry) -> KeyRecord | None:
        """The key as the KeyRing may hold it, or None when its endorsement does not hold."""
        spec = entry.spec
        try:
            spki = spki_from_pem(spec.public_key)
        except TrustError:
            return None
        if not self._endorsement(fleet, spec, spki).accepted:
            return None
        kid = key_id(spki)
        revoked = (entry.revoked or spec.revoked
                   or self._revocation(fleet, spec, kid)[0] is True)
        return endorsed_record(spec.endorsement, fleet, self.roots, name=entry.name,
                               revoked=revoked, retired=entry.retired)

    def keyring(self, fleet: str, entries: Iterable[KeyEntry]) -> KeyRing:
        """Roots plus every caller-supplied key that a root endorsed (see the module docstring)."""
        roots = {r.key_id for r in self.roots}
        by_id: dict[str, list[KeyRecord]] = {}
        for entry in entries:
            record = self._trusted_record(fleet, entry)
            if record is not None and record.key_id not in roots:  # a root stays a root
                by_id.setdefault(record.key_id, []).append(record)
        records: list[KeyRecord] = list(self.roots)
        for kid, found in by_id.items():
            if len({(r.tier, r.algorithm) for r in found}) > 1:
                # The root endorsed one key for two tiers: trust it for neither.
                log.warning("key %s is endorsed for several tiers; left out of the key ring", kid)
                continue
            records.extend(found)  # KeyRing merges duplicates: distrust wins
        return KeyRing(records)

    # ---- releases -------------------------------------------------------------------------

    async def verify_release(self, request: ReleaseRequest) -> ReleaseVerdict:
        """FORMAT.md steps 1-8 for one FirmwareRelease; never raises for bad input."""
        started = time.monotonic()
        spec = request.release
        expected = ReleaseManifest(
            fleet=request.fleet, product=spec.product, tier=spec.tier, version=spec.version,
            security_version=spec.security_version, artifact_name=spec.artifact.name,
            artifact_size=spec.artifact.size, artifact_sha256=bytes.fromhex(spec.artifact.sha256))
        keyring = self.keyring(request.fleet, request.keys)
        signed = verify_release(spec.signatures, expected, keyring, self.policy, request.floor,
                                request.now)
        if not signed.accepted:
            return _answer(signed, None, started)
        try:
            fetched = await self._fetch(spec.artifact.url, expected.artifact_size)
        except FetchError as exc:
            failed = Verdict.reject(Reason(exc.reason),
                                    f"artifact {redact(spec.artifact.url)}: {exc.message}",
                                    key_ids=signed.key_ids)
            return _answer(failed, None, started)
        # trust's `truncated` means "the fetcher stopped early": the source had more bytes.
        checked = check_artifact(expected, fetched.size, fetched.sha256,
                                 truncated=fetched.oversized)
        if not checked.accepted:
            return _answer(replace(checked, key_ids=signed.key_ids), fetched, started)
        accepted = Verdict.accept(f"{signed.message}; {checked.message}", key_ids=signed.key_ids)
        return _answer(accepted, fetched, started)

    async def _fetch(self, url: str, size: int) -> FetchResult:
        scheme = url.partition("://")[0].lower()
        scheme = scheme if scheme in SCHEMES else "other"  # bounded label values
        with self.metrics.fetches_waiting.track_inprogress():
            await self._slots.acquire()
        started = time.monotonic()
        try:
            with self.metrics.fetches_in_flight.track_inprogress():
                result = await self.source.fetch(url, size)
        except FetchError as exc:
            self.metrics.fetch_seconds.labels(scheme, exc.reason).observe(
                time.monotonic() - started)
            raise
        finally:
            self._slots.release()
        self.metrics.fetch_bytes.labels(scheme).inc(result.size)
        self.metrics.fetch_seconds.labels(scheme, "ok").observe(time.monotonic() - started)
        return result


def _answer(verdict: Verdict, fetched: FetchResult | None, started: float) -> ReleaseVerdict:
    return ReleaseVerdict(
        verdict="accepted" if verdict.accepted else "rejected", reason=verdict.reason,
        message=verdict.message, key_ids=list(verdict.key_ids),
        sha256=fetched.sha256.hex() if fetched and fetched.sha256 else None,
        size=fetched.size if fetched else None, seconds=round(time.monotonic() - started, 6))
