"""The fleet simulation: N devices, each the reference agent (flashgate/device/) with its own
certificate, trust store, counters and A/B slots on disk, run as asyncio tasks in one process
against the real control plane, operator, verifier sidecar, delivery service and versitygw; and
the six scenarios of docs/devices.md, each returning its counts (`Counts`): devices installed,
refused by reason, stranded, bad images written, bricked.

tests/e2e/test_fleet.py runs the scenarios with a few dozen devices and asserts the counts;
bench/bench_fleet.py (`make fleetsim`) runs them with 1,000 and prints them with the time the fleet
took to converge and the delivery service's request rate.

`start_stack` sets up what the devices talk to on a running `LocalGate` (sidecar and operator
started): an S3 bucket on versitygw, the sidecar reading it with a read-only account, the
delivery service for the given fleets (their device CAs, a short presigned-URL TTL, signing with
another read-only account). `SimFleet` is one fleet (namespace): keys and releases applied with
kubectl through the gate, artifacts put in the bucket, devices made. The attacker of scenarios 3
and 5 is hack/hostile.py: a delivery path the attacker owns.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hostile import Endless, HostileDelivery, Trickle
from localgate import LocalGate, kubectl_run
from s3server import S3Server

from flashgate.delivery.devcerts import DeviceCA
from flashgate.device.agent import Agent, CycleReport, factory_image
from flashgate.device.config import settings_from
from flashgate.device.storage import file_sha256
from flashgate.operator.tls import make_serving_cert
from flashgate.signing.devfile import dev_key_output, dev_key_text
from flashgate.signing.filekeys import KeySigner, generate
from flashgate.signing.resources import release_doc, signing_key_doc
from flashgate.trust import (
    CT_KEY,
    CT_RELEASE,
    Algorithm,
    KeyEndorsement,
    ReleaseManifest,
    Tier,
    sign1,
)
from flashgate.trust.device import manifest_digest

BUCKET = "fleet-firmware"
PRODUCT, CHANNEL = "gw-sim", "stable"
TIERS = ("application", "os")  # the slots of every simulated device
MANAGER = ("--as=release-manager", "--as-group=system:masters",
           "--as-group=flashgate:release-managers")
DAY = 86400
CONCURRENCY = 48  # devices polling at once (one process; the machine is shared)


def log(message: str) -> None:
    print(f"[fleetsim] {message}", file=sys.stderr, flush=True)


# --- the stack ---------------------------------------------------------------------------------

@dataclass
class Stack:
    """What the devices talk to."""

    gate: LocalGate
    s3: S3Server
    root: KeySigner  # the fleet root's private key: the signing station's
    workdir: Path
    server_ca: Path
    server_cert: Path
    server_key: Path
    cas: dict[str, DeviceCA]
    ttl: int

    @property
    def artifact_cas(self) -> Path:
        """What devices trust for artifact hosts: the S3 server's CA, and the CA of the hostile
        server's certificate, as a public CA would issue an attacker a certificate for a host of
        its own (artifact hosts are checked against the public CAs, not pinned)."""
        path = self.workdir / "artifact-cas.pem"
        if not path.exists():
            path.write_bytes(self.s3.ca_file.read_bytes() + self.server_ca.read_bytes())
        return path

    def kubectl(self, *args: str, input: str | None = None,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        return kubectl_run(self.gate.kubectl, self.gate.kubeconfig, *args, input=input,
                           check=check)

    @property
    def delivery_url(self) -> str:
        return f"https://127.0.0.1:{self.gate.delivery_port}"

    def ops(self, path: str) -> str:
        url = f"http://127.0.0.1:{self.gate.delivery_ops_port}{path}"
        with urllib.request.urlopen(url, timeout=10) as response:
            return str(response.read().decode())

    def metric(self, name: str, **labels: str) -> float:
        """The sum of a delivery service metric's samples that carry `labels`."""
        total = 0.0
        wanted = [f'{k}="{v}"' for k, v in labels.items()]
        for line in self.ops("/metrics").splitlines():
            sample, _, value = line.rpartition(" ")
            if sample.startswith(name + "{") and all(w in sample for w in wanted):
                total += float(value)
        return total

    def requests_answered(self) -> float:
        """flashgate_delivery_requests_total, all routes and codes."""
        return self.metric("flashgate_delivery_requests_total")


def start_stack(gate: LocalGate, s3: S3Server, root: KeySigner, workdir: Path,
                fleets: Sequence[str], ttl: int = 3) -> Stack:
    """The bucket, the sidecar reading it, the delivery service for `fleets` (namespaces that
    exist), on a gate whose sidecar and operator run."""
    workdir.mkdir(parents=True, exist_ok=True)
    s3.create_bucket(BUCKET)
    endpoint = {"endpoint": f"https://localhost:{s3.port}", "region": "us-east-1"}
    gate.sidecar_extra = {"allowedHosts": ["localhost"], "caFile": str(s3.ca_file),
                          "s3": {**endpoint, **s3.read_only_files(BUCKET, workdir / "sidecar-s3")}}
    gate.stop_sidecar()
    gate.start_sidecar()
    cas = {ns: DeviceCA(f"{ns} device CA") for ns in fleets}
    server_ca, cert, key = make_serving_cert(("127.0.0.1", "localhost"),
                                             ca_name_text="fleetsim delivery CA"
                                             ).write(workdir / "tls")
    for ns in fleets:
        gate.bind_delivery(ns)
    gate.start_delivery({
        "fleets": {ns: {"deviceCAFiles": [str(cas[ns].write(workdir / f"{ns}-ca.pem"))]}
                   for ns in fleets},
        "tls": {"certFile": str(cert), "keyFile": str(key)},
        "presignTTLSeconds": ttl,
        "s3": {**endpoint, **s3.read_only_files(BUCKET, workdir / "delivery-s3")}})
    return Stack(gate, s3, root, workdir, server_ca, cert, key, cas, ttl)


def stop_stack(stack: Stack) -> None:
    stack.gate.stop_delivery()
    stack.gate.sidecar_extra = {}
    stack.gate.stop_sidecar()
    stack.gate.start_sidecar()


# --- a fleet -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Release:
    name: str
    data: bytes
    manifest: ReleaseManifest

    @property
    def digest(self) -> str:
        return manifest_digest(self.manifest)


@dataclass
class SimFleet:
    """One fleet (namespace): its keys and releases through the gate, and its devices."""

    stack: Stack
    namespace: str
    genuine: set[str] = field(default_factory=set)  # sha256 of every image published

    @property
    def workdir(self) -> Path:
        return self.stack.workdir / self.namespace

    def kubectl(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return self.stack.kubectl("-n", self.namespace, *args, **kwargs)

    def get(self, kind: str, name: str) -> dict[str, Any]:
        return dict(json.loads(self.kubectl("get", kind, name, "-o", "json").stdout))

    def wait_phase(self, kind: str, name: str, phases: set[str], timeout: float = 60
                   ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            obj = self.get(kind, name)
            if (obj.get("status") or {}).get("phase") in phases:
                return obj
            if time.monotonic() > deadline:
                raise AssertionError(f"{kind} {name} not in {phases} after {timeout}s: "
                                     f"{json.dumps(obj.get('status'))}")
            time.sleep(0.2)

    def key_doc(self, name: str, tier: str = "application", signer: KeySigner | None = None,
                **extra: Any) -> tuple[KeySigner, dict[str, Any]]:
        """A SigningKey endorsed by the root: valid from an hour ago for 30 days."""
        signer = signer or generate(Algorithm.ED25519)
        now = int(time.time())
        endorsement = KeyEndorsement(self.namespace, Tier(tier), bytes.fromhex(signer.key_id),
                                     signer.algorithm, signer.spki_der, now - 3600,
                                     now + 30 * DAY)
        doc = signing_key_doc(name=name, fleet=self.namespace, tier=Tier(tier),
                              algorithm=signer.algorithm, public_pem=signer.public_pem,
                              not_before=now - 3600, not_after=now + 30 * DAY,
                              endorsement=sign1(self.stack.root, CT_KEY,
                                                endorsement.to_cbor()), **extra)
        return signer, doc

    def key(self, name: str, tier: str = "application", *, wait: str = "Active",
            **extra: Any) -> KeySigner:
        signer, doc = self.key_doc(name, tier, **extra)
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))
        self.wait_phase("signingkey", name, {wait})
        return signer

    def upload(self, name: str, data: bytes) -> str:
        key = f"{self.namespace}/{name}.bin"
        self.stack.s3.put_object(BUCKET, key, data)
        self.genuine.add(hashlib.sha256(data).hexdigest())
        return f"s3://{BUCKET}/{key}"

    def publish(self, name: str, data: bytes, signers: Sequence[KeySigner], *,
                security_version: int, tier: str = "application") -> Release:
        """Upload, sign and apply a release; wait until it is Published."""
        manifest = ReleaseManifest(self.namespace, PRODUCT, Tier(tier), "1.0.0",
                                   security_version, f"{name}.bin", len(data),
                                   hashlib.sha256(data).digest())
        doc = release_doc(name=name, manifest=manifest, url=self.upload(name, data),
                          channel=CHANNEL,
                          signatures=[sign1(s, CT_RELEASE, manifest.to_cbor()) for s in signers])
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))
        self.published(name)
        return Release(name, data, manifest)

    def published(self, name: str) -> None:
        status = self.wait_phase("firmwarerelease", name, {"Published", "Rejected"})["status"]
        if status["phase"] != "Published":
            raise AssertionError(f"release {name} was rejected: {status}")

    def configmap(self, name: str) -> dict[str, str]:
        return dict(json.loads(self.kubectl("get", "configmap", name, "-o", "json").stdout)
                    .get("data") or {})

    def job_document(self, tier: str = "application") -> dict[str, Any]:
        """The job document published now (its artifact URL the s3:// one)."""
        data: dict[str, Any] = json.loads(
            self.configmap(f"channel.{PRODUCT}.{CHANNEL}")[f"{tier}.json"])
        return data

    def bundle(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.configmap("flashgate-trust-bundle")["bundle.json"])
        return data

    def wait_bundle(self, ready: Callable[[dict[str, Any]], bool], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not ready(self.bundle()):
            if time.monotonic() > deadline:
                raise AssertionError("the trust bundle did not change in time")
            time.sleep(0.2)

    def devices(self, count: int, prefix: str, agent: type[Agent] = Agent) -> list[Agent]:
        """`count` devices of this fleet, each with its own certificate and files."""
        made = []
        ca = self.stack.cas[self.namespace]
        for i in range(count):
            name = f"{prefix}-{i:04d}"
            home = self.workdir / "devices" / name
            cert, key = ca.issue(self.namespace, name).write(home, "device")
            settings = settings_from({
                "fleet": self.namespace, "device": name, "product": PRODUCT,
                "channel": CHANNEL, "tiers": list(TIERS),
                "roots": [{"publicKey": self.stack.root.public_pem,
                           "algorithm": str(self.stack.root.algorithm)}],
                "thresholds": {"bootloader": 2},
                "delivery": {"url": self.stack.delivery_url, "caFile": str(self.stack.server_ca),
                             "certFile": str(cert), "keyFile": str(key), "timeoutSeconds": 60},
                "artifacts": {"caFile": str(self.stack.artifact_cas),
                              "allowedHosts": ["localhost"], "minBytesPerSecond": 2000,
                              "minRateGraceSeconds": 2, "readTimeoutSeconds": 10,
                              "totalTimeoutSeconds": 30, "maxImageBytes": 1 << 20},
                "stateDir": str(home / "state")})
            device = agent(settings)
            device.boot()
            made.append(device)
        return made


# --- polling and counting ----------------------------------------------------------------------

async def poll(devices: Iterable[Agent]) -> list[CycleReport]:
    """One poll of each device, CONCURRENCY at a time."""
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(device: Agent) -> CycleReport:
        async with gate:
            return await device.cycle()

    return list(await asyncio.gather(*(one(d) for d in devices)))


def runs(device: Agent, release: Release, tier: str = "application") -> bool:
    image = device.slots[Tier(tier)].control.installed
    return image is not None and image.manifest_sha256 == release.digest


@dataclass
class Converged:
    reports: list[tuple[Agent, CycleReport]]
    seconds: float
    polls: int
    requests_per_second: float


async def converge(stack: Stack, devices: Sequence[Agent], done: Callable[[Agent], bool],
                   rounds: int = 10) -> Converged:
    """Every device polls, round after round, until `done` holds for all (or `rounds` ran)."""
    before, start = stack.requests_answered(), time.monotonic()
    reports: list[tuple[Agent, CycleReport]] = []
    polls = 0
    for _ in range(rounds):
        if all(done(d) for d in devices):
            break
        reports.extend(zip(devices, await poll(devices), strict=True))
        polls += 1
    seconds = time.monotonic() - start
    answered = stack.requests_answered() - before
    return Converged(reports, seconds, polls, answered / seconds if seconds else 0.0)


@dataclass
class Counts:
    """A scenario's result."""

    scenario: str
    devices: int
    installed: int  # devices running the scenario's release at the end
    refused: dict[str, int]  # refusals by reason: (device, release) pairs
    stranded: int  # devices that should run it and cannot
    bad_images: int  # slot images that are not a published image (nor a factory one)
    bricked: int  # devices whose active slot does not verify
    notes: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        refused = ", ".join(f"{r} {n}" for r, n in sorted(self.refused.items())) or "none"
        return (f"{self.scenario}: {self.devices} devices; installed {self.installed}; refused "
                f"{refused}; stranded {self.stranded}; bad images written {self.bad_images}; "
                f"bricked {self.bricked}")


def refusals(reports: Iterable[tuple[Agent, CycleReport]]) -> Counter[str]:
    """Reasons of refusals, each (device, release, reason) once."""
    seen = {(device.config.device, o.release, str(o.reason))
            for device, report in reports for o in report.outcomes
            if o.action in ("refused", "retry") and o.reason is not None}
    return Counter(reason for _, _, reason in seen)


def tally(scenario: str, fleet: SimFleet, devices: Sequence[Agent], release: Release | None,
          reports: Iterable[tuple[Agent, CycleReport]], *, should_run: Sequence[Agent] = (),
          **notes: Any) -> Counts:
    """Counts from the devices' own files (slots, boot control) and what they reported."""
    bad = bricked = 0
    for device in devices:
        for tier, slots in device.slots.items():
            allowed = fleet.genuine | {hashlib.sha256(
                factory_image(device.config.device, str(tier))).hexdigest()}
            for slot in ("a", "b"):
                path = slots.image_path(slot)
                if path.stat().st_size == 0:
                    continue
                _, digest = file_sha256(path, 1 << 30)
                bad += digest.hex() not in allowed
            bricked += not slots.verifies(slots.control.active)
    installed = sum(runs(d, release) for d in devices) if release is not None else 0
    stranded = sum(not runs(d, release) for d in should_run) if release is not None else 0
    return Counts(scenario, len(devices), installed, dict(refusals(reports)), stranded, bad,
                  bricked, dict(notes))


# --- the attacker's documents ------------------------------------------------------------------

class Impostor:
    """A signer that puts another key's keyId in `kid`: a forged signature."""

    def __init__(self, claimed: str) -> None:
        self._key = generate(Algorithm.ED25519)
        self.algorithm = self._key.algorithm
        self._claimed = claimed

    @property
    def key_id(self) -> str:
        return self._claimed

    def sign(self, tbs: bytes) -> bytes:
        return self._key.sign(tbs)


def forged_job(template: dict[str, Any], *, release: str, manifest: ReleaseManifest,
               signatures: Sequence[bytes], url: str) -> dict[str, Any]:
    """A job document as the attacker writes it: the template's shape, any content."""
    return {**template, "release": release, "tier": str(manifest.tier),
            "version": manifest.version, "securityVersion": manifest.security_version,
            "artifact": {"url": url, "sha256": manifest.artifact_sha256.hex(),
                         "size": manifest.artifact_size},
            "signatures": [base64.b64encode(s).decode() for s in signatures]}


def evil_manifest(fleet: str, tier: str, security_version: int, data: bytes,
                  name: str = "evil") -> ReleaseManifest:
    return ReleaseManifest(fleet, PRODUCT, Tier(tier), "6.6.6", security_version, f"{name}.bin",
                           len(data), hashlib.sha256(data).digest())


def hostile_server(stack: Stack) -> HostileDelivery:
    """The attacker's delivery path, with the delivery service's own certificate (stolen)."""
    return HostileDelivery(stack.server_cert, stack.server_key).start()


def route(devices: Iterable[Agent], url: str) -> None:
    """Where the devices' requests go (the attacker owns DNS, or the service itself)."""
    for device in devices:
        device.client.base_url = url


# --- the six scenarios -------------------------------------------------------------------------

def image(tag: str, size: int = 24_000) -> bytes:
    return tag.encode() + os.urandom(size - len(tag))


async def good_release(fleet: SimFleet, n: int) -> Counts:
    """1. A good release: every device installs it exactly once; counters raised."""
    app = fleet.key("app")
    devices = fleet.devices(n, "good")
    release = fleet.publish("good-1", image("good-1"), [app], security_version=1)
    done = await converge(fleet.stack, devices, lambda d: runs(d, release))
    again = await poll(devices)  # and once more: nothing new
    return tally("1 good release", fleet, devices, release, done.reports,
                 should_run=devices,
                 installs_per_device=sorted(Counter(d.installs.count(release.digest)
                                                    for d in devices).items()),
                 installs_after=sum(o.action == "installed" for r in again for o in r.outcomes),
                 counters_raised=sum(d.counters[Tier.APPLICATION].read() == 1 for d in devices),
                 converge_seconds=round(done.seconds, 2), polls=done.polls,
                 delivery_requests_per_second=round(done.requests_per_second, 1))


async def store_owned(fleet: SimFleet, n: int) -> Counts:
    """2. The attacker owns the artifact store: the object's bytes are replaced after the
    release was published."""
    app = fleet.key("app")
    devices = fleet.devices(n, "store")
    release = fleet.publish("store-1", image("store-1"), [app], security_version=1)
    replaced = image("replaced by the attacker", len(release.data))
    fleet.stack.s3.put_object(BUCKET, f"{fleet.namespace}/store-1.bin", replaced)
    done = await converge(fleet.stack, devices, lambda d: False, rounds=2)
    table = json.loads(fleet.stack.ops(f"/v1/releases?fleet={fleet.namespace}"))
    row: dict[str, Any] = next((r for r in table["releases"] if r["release"] == "store-1"), {})
    refusing = fleet.stack.metric("flashgate_delivery_devices_refusing",
                                  fleet=fleet.namespace, reason="HashMismatch")
    return tally("2 artifact store owned", fleet, devices, release, done.reports,
                 slot_writes=sum(len(d.installs) for d in devices),
                 devices_refusing_gauge=refusing,
                 release_table_row={k: row.get(k) for k in ("devicesInstalled",
                                                            "devicesRefusing")})


async def delivery_owned(fleet: SimFleet, n: int) -> Counts:
    """3. The attacker owns the delivery path: a hostile delivery server (hack/hostile.py, the
    attacker) answers the devices, one attack per poll; then the real path again."""
    stack = fleet.stack
    app = fleet.key("app")
    devices = fleet.devices(n, "path")
    old = fleet.publish("path-0", image("path-0"), [app], security_version=1)
    old_job = fleet.job_document()
    current = fleet.publish("path-1", image("path-1"), [app], security_version=2)
    await converge(stack, devices, lambda d: runs(d, current))
    genuine_bundle = fleet.bundle()
    hostile = hostile_server(stack)
    try:
        route(devices, hostile.url)
        nxt = fleet.publish("path-2", image("path-2"), [app], security_version=3)
        next_job = fleet.job_document()
        evil = image("evil")
        ns = fleet.namespace
        other_fleet_key = generate(Algorithm.ED25519)
        other_fleet = evil_manifest("other-fleet", "application", 3, evil)
        stranger = generate(Algorithm.ED25519)
        stranger_endorsement = sign1(app, CT_KEY, KeyEndorsement(
            ns, Tier.APPLICATION, bytes.fromhex(stranger.key_id), stranger.algorithm,
            stranger.spki_der, int(time.time()) - 60, int(time.time()) + DAY).to_cbor())
        other_endorsement = sign1(stack.root, CT_KEY, KeyEndorsement(
            "other-fleet", Tier.APPLICATION, bytes.fromhex(other_fleet_key.key_id),
            other_fleet_key.algorithm, other_fleet_key.spki_der, int(time.time()) - 60,
            int(time.time()) + DAY).to_cbor())

        def with_endorsements(*extra: bytes) -> dict[str, Any]:
            endorsements = dict(genuine_bundle["endorsements"])
            endorsements["application"] = [*endorsements["application"],
                                           *(base64.b64encode(e).decode() for e in extra)]
            return {**genuine_bundle, "endorsements": endorsements}

        def job(release: str, manifest: ReleaseManifest, signers: Sequence[Any]
                ) -> dict[str, Any]:
            return forged_job(old_job, release=release, manifest=manifest,
                              signatures=[sign1(s, CT_RELEASE, manifest.to_cbor())
                                          for s in signers],
                              url=hostile.artifact_url("evil"))

        channel = (ns, PRODUCT, CHANNEL)
        attacks: dict[str, dict[str, Any]] = {
            "forged signature": {"channels": {channel: {"application": job(
                "attack-forged", evil_manifest(ns, "application", 3, evil),
                [Impostor(app.key_id)])}},
                "artifacts": {"evil": evil}},
            "old release (rollback)": {"channels": {channel: {"application": {
                **old_job, "artifact": {**old_job["artifact"],
                                        "url": hostile.artifact_url("old")}}}},
                "artifacts": {"old": old.data}},
            "another tier, signed by the application key": {"channels": {channel: {"os": job(
                "attack-other-tier", evil_manifest(ns, "os", 3, evil), [app])}},
                "artifacts": {"evil": evil}},
            "another fleet's release": {
                "bundle": with_endorsements(other_endorsement),
                "channels": {channel: {"application": job("attack-other-fleet", other_fleet,
                                                          [other_fleet_key])}},
                "artifacts": {"evil": evil}},
            "bundle: endorsement signed by a non-root key": {
                "bundle": with_endorsements(stranger_endorsement),
                "channels": {channel: {"application": job(
                    "attack-stranger", evil_manifest(ns, "application", 3, evil), [stranger])}},
                "artifacts": {"evil": evil}},
            "bundle that silently drops a key": {
                "bundle": {**genuine_bundle, "endorsements": {t: [] for t in TIERS},
                           "revocations": []}},
            "endless artifact body": {"channels": {channel: {"application": {
                **next_job, "artifact": {**next_job["artifact"],
                                         "url": hostile.artifact_url("next")}}}},
                "artifacts": {"next": Endless()}},
            "trickling artifact body": {"channels": {channel: {"application": {
                **next_job, "artifact": {**next_job["artifact"],
                                         "url": hostile.artifact_url("next")}}}},
                "artifacts": {"next": Trickle(b"x" * 64, every=0.25, seconds=60)}},
        }
        per_attack: dict[str, dict[str, int]] = {}
        reports: list[tuple[Agent, CycleReport]] = []
        for what, attack in attacks.items():
            hostile.serve(bundle=attack.get("bundle", genuine_bundle),
                          channels=attack.get("channels"), artifacts=attack.get("artifacts"))
            for device in devices:  # each attack is a new poll, not a 304
                device.bundle_etag = device.channel_etag = None
            round_reports = list(zip(devices, await poll(devices), strict=True))
            reports.extend(round_reports)
            per_attack[what] = dict(refusals(round_reports))
        now = int(time.time())
        still_trusted = sum(app.key_id in {r.key_id for r in d.store.trusted(now)}
                            for d in devices)
    finally:
        route(devices, stack.delivery_url)
        hostile.stop()
    after = await converge(stack, devices, lambda d: runs(d, nxt))
    return tally("3 delivery path owned", fleet, devices, nxt, reports, should_run=devices,
                 attacks=per_attack, still_trusting_the_dropped_key=still_trusted,
                 installed_after_the_attack_ended=sum(runs(d, nxt) for d in devices),
                 polls_to_recover=after.polls)


class LateAgent(Agent):
    """A device that starts its download `late_by` seconds after it got the job document (a
    slow device, a busy link): past the presigned URL's lifetime."""

    late_by = 4.0
    waited = False

    async def fetch(self, url: str, manifest: ReleaseManifest, staging: Path) -> Any:
        if not self.waited:
            self.waited = True
            await asyncio.sleep(self.late_by)
        return await super().fetch(url, manifest, staging)


async def expired_url(fleet: SimFleet, n: int) -> Counts:
    """4. An expired presigned URL: a device that downloads late is refused by the store, asks
    again, gets a fresh URL, installs."""
    app = fleet.key("app")
    LateAgent.late_by = fleet.stack.ttl + 1.5
    late = fleet.devices(n // 4, "late", LateAgent)
    prompt = fleet.devices(n - n // 4, "prompt")
    release = fleet.publish("url-1", image("url-1"), [app], security_version=1)
    devices = [*late, *prompt]
    done = await converge(fleet.stack, devices, lambda d: runs(d, release),
                          rounds=3)
    fresh = Counter(d.config.device.split("-")[0] for d, r in done.reports
                    for _ in range(r.fresh_urls))
    return tally("4 expired presigned URL", fleet, devices, release, done.reports,
                 should_run=devices, late_devices=len(late),
                 fresh_urls_late=fresh.get("late", 0), fresh_urls_prompt=fresh.get("prompt", 0),
                 polls=done.polls)


def station(*args: str, cwd: Path) -> str:
    """The signing station's CLI (`flashgate ...`), as an operator runs it."""
    result = subprocess.run([sys.executable, "-m", "flashgate.signing", *args], cwd=cwd,
                            capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"flashgate {' '.join(args)}:\n{result.stderr}")
    return result.stdout


async def leak_drill(fleet: SimFleet, n: int, offline: int) -> Counts:
    """5. The leak drill: the application key leaks. Revoke it, endorse a new key, re-sign the
    current release with it (the signing station with development file keys, and kubectl),
    timed; then the attacker ships an image signed with the leaked key through a compromised
    delivery path; then the next release, signed with the new key, reaches every device, those
    offline through the whole drill included."""
    stack, ns = fleet.stack, fleet.namespace
    work = fleet.workdir / "station"
    work.mkdir(parents=True, exist_ok=True)
    dev_key_output(work / "root.pem").write(dev_key_text(stack.root, "root"))
    leaked, doc = fleet.key_doc("app-1")
    (work / "app-1.yaml").write_text(yaml.safe_dump(doc))
    fleet.kubectl("apply", "-f", str(work / "app-1.yaml"))
    fleet.wait_phase("signingkey", "app-1", {"Active"})
    online = fleet.devices(n - offline, "online")
    away = fleet.devices(offline, "offline")
    current = fleet.publish("app-v1", image("app-v1"), [leaked], security_version=1)
    (work / "app-v1.bin").write_bytes(current.data)
    url = f"s3://{BUCKET}/{ns}/app-v1.bin"
    await converge(stack, [*online, *away], lambda d: runs(d, current))

    # The drill: what the runbook says (docs/devices.md), timed end to end.
    start = time.monotonic()
    station("revoke", "--root-dev-file", "root.pem", "--signing-key-yaml", "app-1.yaml",
            "--reason", "leaked: found in a public repository", "-o", "revoke-app-1.json",
            cwd=work)
    fleet.kubectl("patch", "signingkey", "app-1", "--type", "merge", "--patch-file",
                  str(work / "revoke-app-1.json"))
    station("keygen", "--tier", "application", "--dev-file", "app-2.pem", cwd=work)
    station("endorse", "--root-dev-file", "root.pem", "--key", "app-2.pem", "--tier",
            "application", "--fleet", ns, "--valid-for", "30d", "--name", "app-2",
            "-o", "app-2.yaml", cwd=work)
    fleet.kubectl("apply", "-f", str(work / "app-2.yaml"))
    station("sign", "--dev-file", "app-2.pem", "--tier", "application", "--fleet", ns,
            "--product", PRODUCT, "--version", "1.0.0", "--security-version", "1",
            "--artifact", "app-v1.bin", "--url", url, "--name", "app-v1-resigned",
            "--republish", "leak drill: app-v1 re-signed with app-2", "-o", "resigned.yaml",
            cwd=work)
    fleet.kubectl(*MANAGER, "apply", "-f", str(work / "resigned.yaml"))
    station_done = time.monotonic() - start
    # The runbook's checks, as it gives them.
    for what, phase in (("signingkey/app-1", "Revoked"), ("signingkey/app-2", "Active"),
                        ("firmwarerelease/app-v1-resigned", "Published")):
        fleet.kubectl("wait", what, f"--for=jsonpath={{.status.phase}}={phase}",
                      "--timeout=60s")
    told_condition = fleet.kubectl(
        "get", "signingkey", "app-1", "-o",
        'jsonpath={.status.conditions[?(@.type=="DevicesToldOfRevocation")].status}').stdout
    leaked_id = leaked.key_id
    fleet.wait_bundle(lambda b: len(b["revocations"]) == 1 and len(b["endorsements"]
                                                                      ["application"]) == 1)
    cluster_done = time.monotonic() - start
    told = await converge(stack, online, lambda d: leaked_id in d.store.revoked and any(
        r.tier == Tier.APPLICATION for r in d.store.trusted(int(time.time()))))
    devices_done = time.monotonic() - start

    # The attacker ships an image signed with the leaked key through a compromised path.
    hostile = hostile_server(stack)
    try:
        route(online, hostile.url)
        evil = image("evil")
        manifest = evil_manifest(ns, "application", 2, evil)
        hostile.serve(channels={(ns, PRODUCT, CHANNEL): {"application": forged_job(
            fleet.job_document(), release="evil-signed-with-the-leaked-key", manifest=manifest,
            signatures=[sign1(leaked, CT_RELEASE, manifest.to_cbor())],
            url=hostile.artifact_url("evil"))}}, artifacts={"evil": evil})
        for device in online:
            device.channel_etag = None
        attacked = list(zip(online, await poll(online), strict=True))
    finally:
        route(online, stack.delivery_url)
        hostile.stop()

    # The next release, signed with the new key; the devices offline all along come back.
    (work / "app-v2.bin").write_bytes(image("app-v2"))
    v2_url = fleet.upload("app-v2", (work / "app-v2.bin").read_bytes())
    station("sign", "--dev-file", "app-2.pem", "--tier", "application", "--fleet", ns,
            "--product", PRODUCT, "--version", "2.0.0", "--security-version", "2",
            "--artifact", "app-v2.bin", "--url", v2_url, "--name", "app-v2", "-o", "v2.yaml",
            cwd=work)
    fleet.kubectl("apply", "-f", str(work / "v2.yaml"))
    fleet.published("app-v2")
    data = (work / "app-v2.bin").read_bytes()
    v2 = Release("app-v2", data, ReleaseManifest(ns, PRODUCT, Tier.APPLICATION, "2.0.0", 2,
                                                 "app-v2.bin", len(data),
                                                 hashlib.sha256(data).digest()))
    devices = [*online, *away]
    final = await converge(stack, devices, lambda d: runs(d, v2))
    return tally("5 leak drill", fleet, devices, v2, attacked, should_run=devices,
                 offline_through_the_drill=offline, devices_told_condition=told_condition,
                 drill_seconds={"station_and_kubectl": round(station_done, 1),
                                "cluster_ready": round(cluster_done, 1),
                                "online_devices_told": round(devices_done, 1)},
                 polls_to_tell_online_devices=told.polls,
                 offline_running_v2=sum(runs(d, v2) for d in away),
                 polls_to_v2=final.polls)


class BlindAgent(Agent):
    """A device that, once `blind`, misses every trust bundle (its bundle requests fail) and
    still gets job documents: the only way a planned rotation strands a device."""

    blind = False

    async def _refresh_store(self, session: Any, report: CycleReport) -> None:
        if self.blind:
            report.errors.append("trust bundle: unreachable (simulated)")
        else:
            await super()._refresh_store(session, report)


async def planned_rotation(fleet: SimFleet, n: int, *, staged_seconds: int = 4,
                           overlap_seconds: int = 3) -> Counts:
    """6. A planned rotation: the next key is Staged (in the bundle) before it activates, the
    old one retires after the overlap. Devices that polled during the window, devices away
    through all of it, and devices that miss every bundle."""
    old_key = fleet.key("app-old")
    window = fleet.devices(n - 2 * (n // 4), "window")
    away = fleet.devices(n // 4, "away")
    blind = fleet.devices(n // 4, "blind", BlindAgent)
    devices = [*window, *away, *blind]
    first = fleet.publish("rot-1", image("rot-1"), [old_key], security_version=1)
    await converge(fleet.stack, devices, lambda d: runs(d, first))
    for device in blind:
        device.blind = True  # type: ignore[attr-defined]
    start = int(time.time())
    new_key = fleet.key("app-new", wait="Staged", replaces="app-old",
                        overlap=f"{overlap_seconds}s", activate_at=start + staged_seconds)
    fleet.wait_bundle(lambda b: len(b["endorsements"]["application"]) == 2)
    saw = await converge(fleet.stack, window, lambda d: new_key.key_id in d.store.keys)
    staged_in_store = sum(new_key.key_id in d.store.keys for d in window)
    fleet.wait_phase("signingkey", "app-old", {"Retired"},
                     timeout=staged_seconds + overlap_seconds + 30)
    second = fleet.publish("rot-2", image("rot-2"), [new_key], security_version=2)
    done = await converge(fleet.stack, devices, lambda d: runs(d, second) or d in blind,
                          rounds=4)
    if not done.reports:  # converged before any poll: the blind devices still poll once
        done.reports.extend(zip(blind, await poll(blind), strict=True))
    return tally("6 planned rotation", fleet, devices, second, done.reports,
                 should_run=devices, window=len(window), away=len(away),
                 blind_to_bundles=len(blind),
                 window_had_the_staged_key=staged_in_store, polls_in_window=saw.polls,
                 installed_by_group={g: sum(runs(d, second) for d in group) for g, group in
                                     (("window", window), ("away", away), ("blind", blind))})


SCENARIOS: dict[str, Callable[..., Awaitable[Counts]]] = {
    "good": good_release, "store": store_owned, "path": delivery_owned, "url": expired_url,
    "leak": leak_drill, "rotation": planned_rotation}


def quiet() -> None:
    """A simulated fleet refuses a lot on purpose: the devices' warnings are not news."""
    logging.getLogger("flashgate.device").setLevel(logging.ERROR)

