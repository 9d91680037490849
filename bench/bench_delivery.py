#!/usr/bin/env python3
"""The delivery service under a polling fleet: job-document requests/s, latency, memory.

    .venv/bin/python bench/bench_delivery.py            # 10,000 devices (a few minutes)
    .venv/bin/python bench/bench_delivery.py --quick    # 1,000 devices

Set-up, as in production: the local control plane (hack/controlplane.py), the published
ConfigMaps of one fleet (a channel of three tiers whose artifacts are s3:// URLs, so every 200
mints three presigned URLs; and a trust bundle), written here with the admin's credentials in the
operator's place; the delivery service as its own process, authenticated as its ServiceAccount
and watching them (hack/localgate.py), on loopback.

How devices are simulated: every simulated device has its own client certificate from the fleet's
device CA (10,000 certificates), so every poll pays what a real one does on the server: a full
mutual-TLS handshake (ECDSA P-256, TLS 1.3, no resumption), identity checks, the request. The
clients are asyncio streams in this one process speaking plain HTTP/1.1 (lighter than a client
library, so the server, not the client, is what is measured); both share the machine's cores.

1. A fleet's poll cycle: each device connects, GETs its channel (200: three presigned URLs),
   POSTs its status, disconnects; then each polls again with If-None-Match (304). 64 devices at
   once. Polls/s, p50/p99 per poll (connect to answer), the server's CPU per poll.
2. Keep-alive: 100 devices hold a connection each and ask in a loop for --seconds: requests/s
   and p50/p99 of 200s (presigning) and of 304s: the per-request cost without handshakes.
3. The server's RSS: listening with the documents, after 10,000 devices reported (their last
   state kept), and its peak (VmHWM).
Prints figures; never fails on a slow machine.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import ssl
import sys
import tempfile
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "hack"))

import controlplane  # noqa: E402
from localgate import LocalGate, install, kubectl_run  # noqa: E402

from flashgate.api import FirmwareReleaseSpec  # noqa: E402
from flashgate.api.published import (  # noqa: E402
    BUNDLE_CONFIGMAP,
    BUNDLE_KEY,
    BUNDLE_LABELS,
    CHANNEL_LABEL,
    CHANNEL_LABELS,
    MANAGED_BY,
    PRODUCT_LABEL,
    channel_name,
    document_key,
)
from flashgate.delivery.devcerts import DeviceCA  # noqa: E402
from flashgate.operator.ledger import job_document  # noqa: E402
from flashgate.operator.tls import make_serving_cert  # noqa: E402
from flashgate.signing.filekeys import generate  # noqa: E402
from flashgate.trust import Algorithm  # noqa: E402
from flashgate.trust.cose import CT_RELEASE, sign1  # noqa: E402

FLEET, PRODUCT, CHANNEL = "bench-fleet", "gw-3000", "stable"
PATH = f"/v1/fleets/{FLEET}/channels/{PRODUCT}/{CHANNEL}"


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def proc_status(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else 0.0


def publish(gate: LocalGate) -> None:
    """The channel and trust bundle the operator would publish, with real envelopes."""
    keys = [generate(Algorithm.ED25519), generate(Algorithm.ED25519)]
    docs = {}
    for tier, signers in (("bootloader", 2), ("os", 1), ("application", 1)):
        spec = FirmwareReleaseSpec.model_validate({
            "tier": tier, "product": PRODUCT, "version": "4.2.0", "securityVersion": 7,
            "channel": CHANNEL,
            "artifact": {"url": f"s3://firmware-images/{PRODUCT}/{tier}-4.2.0.bin",
                         "name": f"{tier}.bin", "sha256": "ab" * 32, "size": 8 << 20},
            "signatures": [base64.b64encode(sign1(key, CT_RELEASE, b"x" * 180)).decode()
                           for key in keys[:signers]]})
        docs[document_key(tier)] = job_document(fleet=FLEET, name=f"{tier}-4-2-0", spec=spec,
                                                published_at=datetime.now(UTC))
    bundle = json.dumps({"apiVersion": "ota.flashgate.dev/v1alpha1", "kind": "TrustBundle",
                         "fleet": FLEET, "endorsements": {"application": ["QQ==" * 60]},
                         "revocations": []})
    for name, labels, data in (
            (channel_name(PRODUCT, CHANNEL), {**CHANNEL_LABELS, PRODUCT_LABEL: PRODUCT,
                                              CHANNEL_LABEL: CHANNEL}, docs),
            (BUNDLE_CONFIGMAP, BUNDLE_LABELS, {BUNDLE_KEY: bundle})):
        kubectl_run(gate.kubectl, gate.kubeconfig, "apply", "-f", "-", input=json.dumps({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": FLEET,
                         "labels": {**MANAGED_BY, **labels}}, "data": data}))


@dataclass
class Device:
    name: str
    cert: Path
    key: Path


def make_devices(ca: DeviceCA, count: int, directory: Path) -> list[Device]:
    devices = []
    for i in range(count):
        name = f"dev-{i:05d}"
        cert, key = ca.issue(FLEET, name).write(directory, name)
        devices.append(Device(name, cert, key))
    return devices


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   request: bytes) -> tuple[int, dict[str, str], bytes]:
    writer.write(request)
    status_line = await reader.readline()
    status = int(status_line.split()[1])
    headers = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


def get(etag: str | None = None) -> bytes:
    extra = f"If-None-Match: {etag}\r\n" if etag else ""
    return f"GET {PATH} HTTP/1.1\r\nHost: delivery\r\n{extra}\r\n".encode()


def post_status(device: str) -> bytes:
    body = json.dumps({"installed": {"application": {"release": "application-4-2-0",
                                                     "securityVersion": 7}}}).encode()
    return (f"POST /v1/fleets/{FLEET}/devices/{device}/status HTTP/1.1\r\nHost: delivery\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode() + body


def device_context(server_ca: Path, device: Device) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(server_ca))
    context.load_cert_chain(device.cert, device.key)
    return context


async def poll_cycle(port: int, server_ca: Path, devices: list[Device], etag: str | None,
                     concurrency: int, seen: list[str]) -> tuple[list[float], int]:
    """Each device: connect, GET (If-None-Match when etag), POST status on the first round,
    disconnect. Returns per-poll seconds and failures; the ETag seen goes to `seen`."""
    gate = asyncio.Semaphore(concurrency)
    times: list[float] = []
    failures = 0

    async def one(device: Device) -> None:
        nonlocal failures
        async with gate:
            context = device_context(server_ca, device)
            started = time.perf_counter()
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
                status, headers, _ = await exchange(reader, writer, get(etag))
                if status == 200 and etag is None:
                    if not seen:
                        seen.append(headers["etag"])
                    reported, _, _ = await exchange(reader, writer, post_status(device.name))
                    status = status if reported == 204 else reported
                ok = status == (304 if etag else 200)
                writer.close()
            except (OSError, ValueError, asyncio.IncompleteReadError):
                ok = False
            if ok:
                times.append(time.perf_counter() - started)
            else:
                failures += 1

    await asyncio.gather(*(one(d) for d in devices))
    return times, failures


async def keep_alive(port: int, server_ca: Path, devices: list[Device], etag: str | None,
                     seconds: float) -> tuple[list[float], int]:
    """Each device on one connection, asking in a loop until the time is up."""
    times: list[float] = []
    failures = 0
    deadline = time.perf_counter() + seconds

    async def one(device: Device) -> None:
        nonlocal failures
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=device_context(server_ca, device))
        request = get(etag)
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            status, _, _ = await exchange(reader, writer, request)
            if status == (304 if etag else 200):
                times.append(time.perf_counter() - started)
            else:
                failures += 1
        writer.close()

    await asyncio.gather(*(one(d) for d in devices))
    return times, failures


def run(devices_count: int, concurrency: int, connections: int, seconds: float) -> None:
    work = Path(tempfile.mkdtemp(prefix="flashgate-bench-delivery-"))
    with controlplane.ControlPlane() as plane:
        kubectl = plane.binaries / "kubectl"
        install(kubectl, plane.kubeconfig)
        gate = LocalGate(kubectl=kubectl, kubeconfig=plane.kubeconfig, workdir=work, roots=[])
        kubectl_run(kubectl, plane.kubeconfig, "create", "namespace", FLEET)
        gate.bind_delivery(FLEET)
        publish(gate)
        ca = DeviceCA("bench fleet device CA")
        server_ca, cert, key = make_serving_cert(("127.0.0.1",)).write(work / "tls")
        (work / "s3").mkdir()
        (work / "s3" / "id").write_text("FGBENCHREADONLY\n")
        (work / "s3" / "secret").write_text("not-a-real-secret\n")
        log(f"making {devices_count} device certificates")
        started = time.perf_counter()
        devices = make_devices(ca, devices_count, work / "devices")
        log(f"  {time.perf_counter() - started:.1f}s")
        gate.start_delivery({
            "fleets": {FLEET: {"deviceCAFiles": [str(ca.write(work / "device-ca.pem"))]}},
            "tls": {"certFile": str(cert), "keyFile": str(key)},
            "s3": {"endpoint": "https://s3.example.com", "region": "eu-west-1",
                   "accessKeyIdFile": str(work / "s3" / "id"),
                   "secretAccessKeyFile": str(work / "s3" / "secret")}},
            extra_args=["--log-level", "WARNING"])
        assert gate.delivery is not None
        pid, port = gate.delivery.pid, gate.delivery_port
        rss_idle = proc_status(pid, "VmRSS")
        try:
            figures = asyncio.run(measure(pid, port, server_ca, devices, concurrency,
                                          connections, seconds))
        finally:
            gate.stop_delivery()
    cycles, alive, rss_after, rss_peak = figures
    print(f"## The delivery service: {devices_count:,} simulated devices, one fleet\n")
    print(f"{os.cpu_count()} CPUs shared by the server and the clients, Python "
          f"{sys.version.split()[0]}; a channel of 3 tiers with s3:// artifacts (three "
          f"presigned URLs per 200); each device has its own certificate.\n")
    print("| what | rate | p50 | p99 | server CPU | failures |")
    print("|---|---|---|---|---|---|")
    for label, p in cycles:
        print(f"| poll cycle, new mTLS connection per device ({concurrency} at once): {label} "
              f"| {len(p.times) / p.wall:,.0f} devices/s "
              f"| {percentile(p.times, 50) * 1e3:.1f} ms | {percentile(p.times, 99) * 1e3:.1f} ms "
              f"| {p.server_cpu / max(len(p.times), 1) * 1e3:.2f} ms/poll | {p.failures} |")
    for label, p in alive:
        print(f"| keep-alive, {connections} devices on a connection each ({seconds:.0f} s): "
              f"{label} | {len(p.times) / p.wall:,.0f} requests/s "
              f"| {percentile(p.times, 50) * 1e3:.2f} ms | {percentile(p.times, 99) * 1e3:.2f} ms "
              f"| {p.server_cpu / max(len(p.times), 1) * 1e6:.0f} us/request | {p.failures} |")
    print(f"\nServer RSS: {rss_idle:.0f} MiB listening with the documents, {rss_after:.0f} MiB "
          f"after {devices_count:,} devices polled and reported, peak {rss_peak:.0f} MiB.")


@dataclass
class Phase:
    times: list[float]  # seconds per poll or request, as the client saw it
    failures: int
    server_cpu: float  # seconds of the server process's CPU during the phase
    wall: float


async def phase(pid: int, name: str, work: Awaitable[tuple[list[float], int]]) -> Phase:
    log(name)
    cpu, wall = cpu_seconds(pid), time.perf_counter()
    times, failures = await work
    return Phase(times, failures, cpu_seconds(pid) - cpu, time.perf_counter() - wall)


async def measure(pid: int, port: int, server_ca: Path, devices: list[Device],
                  concurrency: int, connections: int, seconds: float
                  ) -> tuple[list[tuple[str, Phase]], list[tuple[str, Phase]], float, float]:
    etag: list[str] = []
    cycle = await phase(pid, "poll cycle: GET 200 + POST status",
                        poll_cycle(port, server_ca, devices, None, concurrency, etag))
    again = await phase(pid, "poll cycle: GET 304",
                        poll_cycle(port, server_ca, devices, etag[0], concurrency, etag))
    rss_after = proc_status(pid, "VmRSS")
    subset = devices[:connections]
    alive200 = await phase(pid, "keep-alive 200",
                           keep_alive(port, server_ca, subset, None, seconds))
    alive304 = await phase(pid, "keep-alive 304",
                           keep_alive(port, server_ca, subset, etag[0], seconds))
    return ([("GET 200 + POST status", cycle), ("GET 304 (If-None-Match)", again)],
            [("GET 200 (3 presigned)", alive200), ("GET 304", alive304)],
            rss_after, proc_status(pid, "VmHWM"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=64,
                        help="devices connecting at once in the poll cycle (default 64)")
    parser.add_argument("--connections", type=int, default=100,
                        help="keep-alive connections (default 100)")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="per keep-alive figure (default 10)")
    parser.add_argument("--quick", action="store_true", help="1,000 devices, 3 s figures")
    args = parser.parse_args()
    if args.quick:
        args.devices, args.seconds = 1_000, 3.0
    run(args.devices, args.concurrency, args.connections, args.seconds)


if __name__ == "__main__":
    main()
