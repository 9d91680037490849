#!/usr/bin/env python3
"""The fleet simulation at scale (`make fleetsim`): the six scenarios of docs/devices.md with
1,000 devices each, against the real control plane, operator, sidecar, delivery service and
versitygw on this machine.

    .venv/bin/python bench/bench_fleet.py                  # 1,000 devices per scenario
    .venv/bin/python bench/bench_fleet.py --devices 200    # quicker

Each device is the reference agent (flashgate/device/) with its own certificate from its fleet's
device CA, its own trust store, secure counters and A/B slots on disk (tmpfs when there is one),
polling as asyncio tasks in this one process, --concurrency at once. Per scenario it prints the
counts (installed, refused by reason, stranded, bad images written, bricked); for the good release
the time the fleet took to converge and the delivery service's request rate meanwhile (every
request of every poll: trust bundle, channel, status report; artifacts come from versitygw); for
the leak drill how long it took with the signing station and kubectl. The devices and every server
share the machine's cores: the figures are what this machine does, not what the service can.
Prints figures; never fails on a slow machine (a scenario whose counts are off says so).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "hack"))

import controlplane  # noqa: E402
import fleetsim  # noqa: E402
from localgate import LocalGate, install, kubectl_run  # noqa: E402
from s3server import S3Server  # noqa: E402

from flashgate.signing.filekeys import generate  # noqa: E402
from flashgate.trust import Algorithm  # noqa: E402


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def workdir() -> Path:
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="flashgate-fleetsim-", dir=base))


async def scenarios(stack: fleetsim.Stack, namespaces: dict[str, str], n: int
                    ) -> list[tuple[fleetsim.Counts, float]]:
    results = []
    runs = {
        "good": lambda f: fleetsim.good_release(f, n),
        "store": lambda f: fleetsim.store_owned(f, n),
        "path": lambda f: fleetsim.delivery_owned(f, n),
        "url": lambda f: fleetsim.expired_url(f, n),
        "leak": lambda f: fleetsim.leak_drill(f, n, n // 5),
        "rotation": lambda f: fleetsim.planned_rotation(f, n),
    }
    for key, run in runs.items():
        log(f"scenario {key}: {n} devices")
        started = time.monotonic()
        counts = await run(fleetsim.SimFleet(stack, namespaces[key]))
        seconds = time.monotonic() - started
        log(f"  {counts.summary()} ({seconds:.0f}s)")
        results.append((counts, seconds))
    return results


def report(results: list[tuple[fleetsim.Counts, float]], n: int, concurrency: int,
           ttl: int) -> None:
    print(f"## The fleet simulation: {n:,} devices per scenario\n")
    print(f"{os.cpu_count()} CPUs shared by the devices (one Python process, {concurrency} "
          f"polling at once) and every server; Python {sys.version.split()[0]}; presigned "
          f"URLs live {ttl} s; images of 24 KB; each device has its own certificate, trust "
          "store, counters and A/B slots on disk.\n")
    print("| scenario | installed | refused (by reason) | stranded | bad images written "
          "| bricked | wall time |")
    print("|---|---|---|---|---|---|---|")
    for counts, seconds in results:
        refused = ", ".join(f"{r} {v:,}" for r, v in sorted(counts.refused.items())) or "none"
        print(f"| {counts.scenario} | {counts.installed:,} | {refused} | {counts.stranded:,} "
              f"| {counts.bad_images} | {counts.bricked} | {seconds:.0f} s |")
    by_name = {c.scenario.split()[0]: c for c, _ in results}
    good = by_name["1"].notes
    print(f"\nConvergence (scenario 1): {n:,} devices running the new release "
          f"{good['converge_seconds']:.1f} s after it was Published, in {good['polls']} "
          f"poll(s) per device; the delivery service answered "
          f"{good['delivery_requests_per_second']:,.0f} requests/s meanwhile; installs per "
          f"device {good['installs_per_device']}, none on the next poll "
          f"({good['installs_after']}).")
    path = by_name["3"].notes
    print("\nScenario 3, per attack (devices refusing, by reason): " + "; ".join(
        f"{what}: {refused or 'nothing to refuse'}" for what, refused in path["attacks"].items())
        + f". Still trusting the key the bundle dropped: {path['still_trusting_the_dropped_key']:,}"
        f"; running the next release once the real path answered again: "
        f"{path['installed_after_the_attack_ended']:,}.")
    url = by_name["4"].notes
    print(f"\nScenario 4: {url['late_devices']:,} devices started their download after the URL "
          f"expired; fresh URLs asked for: {url['fresh_urls_late']:,} by them, "
          f"{url['fresh_urls_prompt']:,} by the others.")
    leak = by_name["5"].notes
    drill = leak["drill_seconds"]
    print(f"\nScenario 5, the leak drill: the station's commands and kubectl took "
          f"{drill['station_and_kubectl']:.1f} s; the cluster was done (old key Revoked, new "
          f"key Active, the current release re-signed and Published, the trust bundle carrying "
          f"both) {drill['cluster_ready']:.1f} s after the first command; every online device "
          f"held the revocation and the new key {drill['online_devices_told']:.1f} s after it "
          f"({n - leak['offline_through_the_drill']:,} devices, one poll each). Offline through "
          f"the drill: {leak['offline_through_the_drill']:,}, all running the next release "
          f"afterwards ({leak['offline_running_v2']:,}).")
    rotation = by_name["6"].notes
    print(f"\nScenario 6: groups {rotation['installed_by_group']} installed the release signed "
          f"by the new key (of {rotation['window']:,} that polled in the window, "
          f"{rotation['away']:,} away through it, {rotation['blind_to_bundles']:,} that missed "
          f"every bundle).")


def run(n: int, concurrency: int, ttl: int) -> None:
    work = workdir()
    fleetsim.CONCURRENCY = concurrency
    fleetsim.quiet()
    root = generate(Algorithm.ED25519)
    with controlplane.ControlPlane() as plane, S3Server(iam=True) as s3:
        kubectl = plane.binaries / "kubectl"
        install(kubectl, plane.kubeconfig)
        gate = LocalGate(kubectl=kubectl, kubeconfig=plane.kubeconfig, workdir=work,
                         roots=[{"publicKey": root.public_pem,
                                 "algorithm": str(root.algorithm)}])
        namespaces = {key: f"sim-{key}" for key in ("good", "store", "path", "url", "leak",
                                                     "rotation")}
        for ns in namespaces.values():
            kubectl_run(kubectl, plane.kubeconfig, "create", "namespace", ns)
        gate.start_sidecar()
        gate.start_operator()
        stack = fleetsim.start_stack(gate, s3, root, work / "sim", list(namespaces.values()),
                                     ttl=ttl)
        try:
            results = asyncio.run(scenarios(stack, namespaces, n))
        finally:
            fleetsim.stop_stack(stack)
            gate.stop()
            shutil.rmtree(work, ignore_errors=True)
    report(results, n, concurrency, ttl)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000, help="devices per scenario")
    parser.add_argument("--concurrency", type=int, default=100,
                        help="devices polling at once")
    parser.add_argument("--ttl", type=int, default=5,
                        help="seconds a presigned URL lives (scenario 4 downloads later)")
    args = parser.parse_args()
    run(args.devices, args.concurrency, args.ttl)


if __name__ == "__main__":
    main()
