"""The reference device agent: what device firmware does, in Python, for a C implementation to
follow (docs/devices.md). The decisions are `flashgate.trust.device`'s; this is the I/O around
them, in the order that makes a device safe against whoever owns the delivery path.

A poll (`cycle`):
1. the trust bundle → `apply_bundle` (each entry against the pinned root; nothing unsigned
   changes the store) → the store saved if it changed; keys past notAfter leave it either way;
2. the channel's job documents → per tier the device has slots for, the job checked before any
   download (`check_job`: envelopes with its own thresholds and keys, the signed fleet, product
   and tier, the securityVersion against its own counter and maximum jump); a verified manifest
   it already runs is nothing new;
3. the download: streamed into the staging area (never a slot), bounded by the signed size, time
   and a minimum rate (the verifier sidecar's fetcher); an expired or refused URL is asked for
   again, up to `attempts`; then `check_artifact` (size, SHA-256);
4. the install: the inactive slot emptied, written, switched to, "booted" (the slot verified as a
   bootloader would), confirmed, and only then the counter raised (`raised_counter`);
5. the status report: what runs per tier, the last release refused and why.
Any failure: nothing written to a slot, the reason reported (and the job tried again at the next
poll when the failure was the download's).

Crash safety (`boot`, run at every start, as a device's boot is): a pending slot that verifies
is confirmed, one that does not is dropped; the counter is raised to what the active slot runs
if a power cut came between the confirmation and the raise; the staging area is emptied. The
crash points (`flashgate.failpoints`, FLASHGATE_FAILPOINTS) are the steps of `CRASH_POINTS`.
"""
from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp

from flashgate.api.schema import DNS_SUBDOMAIN_PATTERN
from flashgate.delivery.status import DeviceStatus
from flashgate.device.client import DeliveryClient, DeliveryError
from flashgate.device.config import Settings
from flashgate.device.storage import (
    Image,
    SecureCounter,
    StatusFile,
    TierSlots,
    TrustStoreFile,
)
from flashgate.failpoints import failpoint
from flashgate.trust import Reason, ReleaseManifest, Tier, Verdict, check_artifact
from flashgate.trust.device import (
    BundleUpdate,
    apply_bundle,
    check_job,
    expire,
    manifest_digest,
    raised_counter,
)
from flashgate.verifier_sidecar.fetch import Fetcher, FetchError, FetchResult
from flashgate.verifier_sidecar.urlpolicy import redact

log = logging.getLogger("flashgate.device")

CRASH_POINTS = ("after-staging", "during-slot-write", "after-slot-write", "after-switch",
                "after-boot", "after-confirm", "after-counter")
"""The steps of an install, in order, where a test kills the agent (docs/devices.md)."""

_RELEASE_NAME = re.compile(DNS_SUBDOMAIN_PATTERN)
MAX_MESSAGE = 512

Action = Literal["installed", "refused", "unchanged", "retry"]


@dataclass(frozen=True)
class Outcome:
    """What one tier's job came to in a poll."""

    tier: str
    action: Action
    release: str
    reason: Reason | None = None
    message: str = ""
    manifest: str | None = None  # the signed manifest's digest, once verified


@dataclass
class CycleReport:
    """What one poll did."""

    bundle: BundleUpdate | None = None
    outcomes: list[Outcome] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    fresh_urls: int = 0  # job documents asked for again for a new artifact URL
    reported: bool = False


def factory_image(device: str, tier: str) -> bytes:
    """The image a device leaves the factory with (in slot A, running no release)."""
    return f"factory {tier} image of {device}\n".encode()


class Agent:
    """One device: its settings, its files, its connection to the delivery service."""

    def __init__(self, settings: Settings, *, fetcher: Fetcher | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        c = settings.config
        self.config = c
        self.clock = clock
        self.state = c.state_dir
        self.state.mkdir(parents=True, exist_ok=True)
        (self.state / "staging").mkdir(exist_ok=True)
        self.store_file = TrustStoreFile(self.state / "trust-store.json")
        self.store = self.store_file.load()
        self.status_file = StatusFile(self.state / "status.json")
        self.last_rejection = self.status_file.load()
        self.slots = {t: TierSlots(self.state / str(t)) for t in c.tiers}
        self.counters = {t: SecureCounter(self.state / str(t) / "counter") for t in c.tiers}
        for tier, slots in self.slots.items():
            slots.load(factory_image(c.device, str(tier)))
        self.client = DeliveryClient(c.delivery, c.fleet, c.device)
        self.fetcher = fetcher or Fetcher(settings.url_policy, settings.limits,
                                          ca_file=c.artifacts.ca_file)
        self.bundle_etag: str | None = None
        self.channel_etag: str | None = None
        self.installs: list[str] = []  # manifest digests installed by this process, in order

    # --- boot ------------------------------------------------------------------------------

    def boot(self) -> list[str]:
        """Recover from whatever step a power cut interrupted (see the module docstring);
        returns what was done, for the log."""
        done = []
        for tier, slots in self.slots.items():
            pending = slots.control.pending
            if pending is not None:
                if slots.boot():
                    slots.confirm()
                    done.append(f"{tier}: confirmed slot {pending} after a restart")
                else:
                    done.append(f"{tier}: dropped slot {pending}, which does not verify")
            installed = slots.control.installed
            counter = self.counters[tier]
            if installed is not None and installed.security_version > counter.read():
                counter.raise_to(raised_counter(counter.read(), installed.security_version))
                done.append(f"{tier}: counter raised to {installed.security_version}")
            if not slots.verifies(slots.control.active):
                log.critical("%s: %s: the active slot does not verify", self.config.device, tier)
            staging = self._staging(tier)
            if staging.exists():
                staging.unlink()
                done.append(f"{tier}: staging area emptied")
        for line in done:
            log.warning("%s: %s", self.config.device, line)
        return done

    # --- a poll ----------------------------------------------------------------------------

    async def cycle(self) -> CycleReport:
        """One poll: the trust bundle, the channel, installs, the status report."""
        report = CycleReport()
        try:
            async with self.client.session() as session:
                await self._refresh_store(session, report)
                await self._jobs(session, report)
                await self._report(session, report)
        except DeliveryError as exc:
            report.errors.append(str(exc))
            log.warning("%s: %s", self.config.device, exc)
        return report

    async def run(self, cycles: int | None = None) -> None:
        """Poll every pollSeconds (forever, or `cycles` times)."""
        done = 0
        while cycles is None or done < cycles:
            if done:
                await asyncio.sleep(self.config.poll_seconds)
            await self.cycle()
            done += 1

    def now(self) -> int:
        return int(self.clock())

    async def _refresh_store(self, session: aiohttp.ClientSession, report: CycleReport) -> None:
        c = self.config
        update: BundleUpdate | None = None
        try:
            answer = await self.client.bundle(session, self.bundle_etag)
            if answer.status == 200:
                update = apply_bundle(self.store, answer.json(), c.fleet,
                                      self.settings.roots, self.now())
                self.bundle_etag = answer.etag
            elif answer.status != 304:
                report.errors.append(f"trust bundle: HTTP {answer.status}")
        except DeliveryError as exc:
            report.errors.append(f"trust bundle: {exc}")
        if update is None:
            update = expire(self.store, self.now())
        report.bundle = update
        for label, why in update.ignored:
            log.warning("%s: trust bundle entry %s ignored: %s", c.device, label, why)
        if update.store is not self.store:
            self.store = update.store
            self.store_file.save(self.store)
            self.channel_etag = None  # what was refused for want of a key may pass now

    async def _jobs(self, session: aiohttp.ClientSession, report: CycleReport) -> None:
        c = self.config
        answer = await self.client.channel(session, c.product, c.channel, self.channel_etag)
        if answer.status in (304, 404):
            return  # nothing new, or nothing published
        if answer.status != 200:
            report.errors.append(f"channel: HTTP {answer.status}")
            return
        document = answer.json()
        jobs = document.get("jobs") if isinstance(document, dict) else None
        jobs = jobs if isinstance(jobs, dict) else {}
        retry = False
        for tier in c.tiers:
            job = jobs.get(str(tier))
            if not isinstance(job, dict):
                continue
            outcome = await self._consider(session, tier, job, report)
            report.outcomes.append(outcome)
            retry = retry or outcome.action == "retry"
        # Asked again without If-None-Match next time while a download failed: the store may
        # be repaired, or the URL renewed.
        self.channel_etag = None if retry else answer.etag

    async def _consider(self, session: aiohttp.ClientSession, tier: Tier, job: dict[str, Any],
                        report: CycleReport) -> Outcome:
        """One tier's job document: checked, downloaded, installed; or refused."""
        c = self.config
        name = job.get("release")
        release = name if isinstance(name, str) and len(name) <= 253 and \
            _RELEASE_NAME.fullmatch(name) else "unnamed"  # reported: it must be a name
        verdict = self._check(tier, job)
        if not verdict.accepted or verdict.manifest is None:
            return self._refuse(tier, release, verdict)
        manifest = verdict.manifest
        digest = manifest_digest(manifest)
        installed = self.slots[tier].control.installed
        if installed is not None and installed.manifest_sha256 == digest:
            return Outcome(str(tier), "unchanged", release, manifest=digest)
        if manifest.artifact_size > c.artifacts.max_image_bytes:
            return self._refuse(tier, release, Verdict.reject(
                Reason.SizeMismatch, f"the signed size {manifest.artifact_size} is larger than "
                                     f"the slot ({c.artifacts.max_image_bytes} bytes)"), digest)
        fetched, failure = await self._download(session, tier, job, manifest, report)
        if fetched is None:
            assert failure is not None
            return self._refuse(tier, release, failure, digest, retry=True)
        artifact = check_artifact(manifest, fetched.size, fetched.sha256, fetched.oversized)
        if not artifact.accepted:
            self._staging(tier).unlink(missing_ok=True)
            return self._refuse(tier, release, artifact, digest, retry=True)
        failpoint("after-staging")
        try:
            self._install(tier, manifest, release)
        except (OSError, RuntimeError) as exc:  # the device's own storage failed
            log.error("%s: %s: install of %s failed: %s", c.device, tier, release, exc)
            report.errors.append(f"{tier}: install failed: {exc}")
            return Outcome(str(tier), "retry", release, None, str(exc), digest)
        self.installs.append(digest)
        log.info("%s: %s: installed %s (securityVersion %d)", c.device, tier, release,
                 manifest.security_version)
        return Outcome(str(tier), "installed", release, manifest=digest)

    def _check(self, tier: Tier, job: dict[str, Any]) -> Verdict:
        c = self.config
        envelopes = job.get("signatures")
        if not isinstance(envelopes, list) or \
                not all(isinstance(e, str) for e in envelopes):
            return Verdict.reject(Reason.SignatureInvalid,
                                  "the job document has no list of base64 signatures")
        return check_job(envelopes, fleet=c.fleet, product=c.product, tier=tier,
                         keyring=self.store.keyring(self.settings.roots),
                         policy=self.settings.policy, counter=self.counters[tier].read(),
                         now=self.now())

    async def _download(self, session: aiohttp.ClientSession, tier: Tier, job: dict[str, Any],
                        manifest: ReleaseManifest, report: CycleReport
                        ) -> tuple[FetchResult | None, Verdict | None]:
        """The artifact into the staging area, asking for a fresh job document (a new URL) when
        a download fails, up to `attempts` downloads; the job must still sign the same
        manifest."""
        c = self.config
        failure: Verdict | None = None
        for attempt in range(c.artifacts.attempts):
            if attempt:
                try:
                    answer = await self.client.job(session, c.product, c.channel, str(tier))
                    renewed = answer.json() if answer.status == 200 else None
                except DeliveryError as exc:
                    report.errors.append(f"{tier} job: {exc}")
                    break
                if not isinstance(renewed, dict):
                    break
                again = self._check(tier, renewed)
                if again.manifest != manifest or not again.accepted:
                    break  # another release now: the next poll's business
                job = renewed
                report.fresh_urls += 1
            artifact = job.get("artifact")
            url = artifact.get("url") if isinstance(artifact, dict) else None
            if not isinstance(url, str) or not url.startswith("https://"):
                return None, Verdict.reject(
                    Reason.ArtifactURLNotAllowed, "a device downloads from https:// URLs only "
                    "(the delivery service presigns s3:// ones); the job document gives "
                    f"{redact(url) if isinstance(url, str) else 'none'}")
            try:
                return await self.fetch(url, manifest, self._staging(tier)), None
            except FetchError as exc:
                failure = Verdict.reject(exc.reason, exc.message)
                self._staging(tier).unlink(missing_ok=True)
        return None, failure or Verdict.reject(Reason.ArtifactUnavailable, "no download")

    async def fetch(self, url: str, manifest: ReleaseManifest, staging: Path) -> FetchResult:
        """Stream the artifact into `staging`, at most the signed size + 1 bytes."""
        with open(staging, "wb") as file:
            def write(data: memoryview) -> None:
                file.write(data)

            result = await self.fetcher.fetch(url, manifest.artifact_size, sink=write)
            file.flush()
        return result

    def _install(self, tier: Tier, manifest: ReleaseManifest, release: str) -> None:
        """Inactive slot emptied, written, switched to, booted, confirmed; then the counter."""
        slots, staging = self.slots[tier], self._staging(tier)
        slot = slots.begin()
        slots.write(slot, staging, halfway=lambda: failpoint("during-slot-write"))
        failpoint("after-slot-write")
        slots.switch(slot, Image(manifest.artifact_sha256.hex(), manifest.artifact_size,
                                 release, manifest.version, manifest.security_version,
                                 manifest_digest(manifest)))
        failpoint("after-switch")
        if not slots.boot():
            raise RuntimeError(f"{tier}: slot {slot} does not verify after it was written")
        failpoint("after-boot")
        slots.confirm()
        failpoint("after-confirm")
        counter = self.counters[tier]
        counter.raise_to(raised_counter(counter.read(), manifest.security_version))
        failpoint("after-counter")
        staging.unlink(missing_ok=True)

    def _staging(self, tier: Tier | str) -> Path:
        return self.state / "staging" / f"{tier}.part"

    def _refuse(self, tier: Tier, release: str, verdict: Verdict, digest: str | None = None,
                *, retry: bool = False) -> Outcome:
        assert verdict.reason is not None
        self.last_rejection = {"release": release, "tier": str(tier),
                               "reason": str(verdict.reason),
                               "message": verdict.message[:MAX_MESSAGE]}
        self.status_file.save(self.last_rejection)
        log.warning("%s: %s: refused %s: %s: %s", self.config.device, tier, release,
                    verdict.reason, verdict.message)
        return Outcome(str(tier), "retry" if retry else "refused", release, verdict.reason,
                       verdict.message, digest)

    # --- status ----------------------------------------------------------------------------

    def status(self) -> DeviceStatus:
        """What the device reports: per tier what runs, and the last release it refused."""
        installed = {}
        for tier, slots in self.slots.items():
            image = slots.control.installed
            if image is not None and image.release is not None:
                installed[tier] = {"release": image.release,
                                   "securityVersion": image.security_version}
        return DeviceStatus.model_validate({"installed": installed,
                                            "lastRejection": self.last_rejection})

    async def _report(self, session: aiohttp.ClientSession, report: CycleReport) -> None:
        """Every poll repeats the device's state (the service counts only what is new)."""
        body = self.status().model_dump_json(by_alias=True, exclude_none=True)
        code = await self.client.report(session, body.encode())
        if code == 204:
            report.reported = True
        else:
            report.errors.append(f"status report: HTTP {code}")
