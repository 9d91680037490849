#!/usr/bin/env python3
"""Release verifications per second through the verifier sidecar's service, by fleet size.

    .venv/bin/python bench/bench_sidecar.py                   # this checkout
    .venv/bin/python bench/bench_sidecar.py --before 64b3bb4  # and that commit, side by side
    .venv/bin/python bench/bench_sidecar.py --keys 1 500 2000 --seconds 3

Each figure is one request body (JSON, as the operator sends it) parsed into a ReleaseRequest and
answered by `VerifierService.verify_release`, HTTP left out: steps 1-7 and a 1 KiB file://
artifact (so the fetch is there but costs little). The request carries every SigningKey of the
fleet (N keys: the signer, an application key, and the rest spread over the other tiers, half
Ed25519 and half ES256), as the operator sends them.
- warm: the same service answers again and again (what a running sidecar does);
- cold: a new service for each request (the first request after a start: nothing cached).
`--before REV` extracts REV with `git archive` into a temporary directory and runs the same
measurements on it in a child process. Figures drift between machines and runs: compare the
columns of one run. It prints; it never fails on a slow machine.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
NOW = 1_800_000_000
FLEET = "bench-fleet"
TIERS = ("bootloader", "os", "application", "driver", "config")


def _rfc3339(t: int) -> str:
    return datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def request_body(keys: int, artifacts: Path) -> tuple[bytes, dict[str, Any]]:
    """A release signed by the first of `keys` SigningKeys, and the sidecar config for it."""
    from flashgate.signing.filekeys import generate
    from flashgate.trust import (
        CT_KEY,
        CT_RELEASE,
        Algorithm,
        KeyEndorsement,
        ReleaseManifest,
        Tier,
        sign1,
    )

    root = generate(Algorithm.ED25519)
    entries = []
    signer = None
    for i in range(keys):
        key = generate(Algorithm.ED25519 if i % 2 == 0 else Algorithm.ES256)
        tier = "application" if i < 2 else TIERS[i % len(TIERS)]
        signer = signer or key
        endorsement = KeyEndorsement(FLEET, Tier(tier), bytes.fromhex(key.key_id),
                                     key.algorithm, key.spki_der, NOW - 86_400,
                                     NOW + 86_400 * 365)
        entries.append({"name": f"key-{i}", "retired": False, "spec": {
            "tier": tier, "algorithm": str(key.algorithm), "publicKey": key.public_pem,
            "notBefore": _rfc3339(NOW - 86_400), "notAfter": _rfc3339(NOW + 86_400 * 365),
            "endorsement": _b64(sign1(root, CT_KEY, endorsement.to_cbor())),
            "revoked": False}})
    assert signer is not None
    data = os.urandom(1024)
    artifact = artifacts / "fw.bin"
    artifact.write_bytes(data)
    manifest = ReleaseManifest(fleet=FLEET, product="gw-3000", tier=Tier.APPLICATION,
                               version="4.2.0", security_version=7, artifact_name="fw.bin",
                               artifact_size=len(data),
                               artifact_sha256=hashlib.sha256(data).digest())
    body = {"fleet": FLEET, "name": "gw-3000-4.2.0", "floor": 5, "now": NOW, "keys": entries,
            "release": {"tier": "application", "product": "gw-3000", "version": "4.2.0",
                        "securityVersion": 7, "channel": "stable",
                        "artifact": {"url": artifact.as_uri(), "name": "fw.bin",
                                     "sha256": hashlib.sha256(data).hexdigest(),
                                     "size": len(data)},
                        "signatures": [_b64(sign1(signer, CT_RELEASE, manifest.to_cbor()))]}}
    config = {"roots": [{"publicKey": root.public_pem, "algorithm": "ed25519"}],
              "allowFileURLs": True, "fileRoot": str(artifacts)}
    return json.dumps(body).encode(), config


def measure(keys: int, seconds: float) -> dict[str, float]:
    """Verifications per second, warm and cold, for a request carrying `keys` SigningKeys."""
    from flashgate.verifier_api.models import ReleaseRequest
    from flashgate.verifier_sidecar.config import settings_from
    from flashgate.verifier_sidecar.fetch import Fetcher
    from flashgate.verifier_sidecar.metrics import Metrics
    from flashgate.verifier_sidecar.service import VerifierService

    with tempfile.TemporaryDirectory(prefix="flashgate-bench-") as tmp:
        body, config = request_body(keys, Path(tmp))
        settings = settings_from(config)

        fetcher = Fetcher(settings.url_policy, settings.limits)  # its TLS context costs ~30 ms

        def service() -> Any:
            return VerifierService(settings.roots, settings.policy, fetcher, Metrics(), 4)

        async def rate(fresh: bool) -> float:
            answering = service()
            count, started = 0, time.perf_counter()
            while True:
                verdict = await (service() if fresh else answering).verify_release(
                    ReleaseRequest.model_validate_json(body))
                assert verdict.verdict == "accepted", verdict.message
                count += 1
                elapsed = time.perf_counter() - started
                if elapsed >= seconds and count >= 3:
                    return count / elapsed

        return {"warm": asyncio.run(rate(False)), "cold": asyncio.run(rate(True)),
                "body_kib": len(body) / 1024}


def run_here(key_counts: list[int], seconds: float) -> dict[str, dict[str, float]]:
    return {str(n): measure(n, seconds) for n in key_counts}


def run_at(revision: str, key_counts: list[int], seconds: float) -> dict[str, dict[str, float]]:
    """The same measurements on `revision`, extracted with git archive, in a child process."""
    with tempfile.TemporaryDirectory(prefix="flashgate-before-") as tmp:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", revision], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        out = subprocess.run(
            [sys.executable, __file__, "--json", "--keys", *map(str, key_counts),
             "--seconds", str(seconds)], check=True, capture_output=True, text=True,
            cwd=tmp, env={**os.environ, "PYTHONPATH": tmp, "FLASHGATE_BENCH_CODE": tmp})
        result: dict[str, dict[str, float]] = json.loads(out.stdout.strip().splitlines()[-1])
        return result


def describe(revision: str) -> str:
    found = subprocess.run(["git", "-C", str(REPO), "log", "-1", "--format=%h %s", revision],
                           capture_output=True, text=True)
    return found.stdout.strip()[:72] or revision


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, nargs="+", default=[1, 500],
                        help="SigningKeys in the request (default: 1 500)")
    parser.add_argument("--seconds", type=float, default=2.0, help="per figure (default 2)")
    parser.add_argument("--before", metavar="REV", help="also measure this git revision")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    code = os.environ.get("FLASHGATE_BENCH_CODE")
    sys.path.insert(0, code or str(REPO))
    if args.json:
        print(json.dumps(run_here(args.keys, args.seconds)))
        return
    after = run_here(args.keys, args.seconds)
    before = run_at(args.before, args.keys, args.seconds) if args.before else None
    print(f"release verifications/s through VerifierService ({os.cpu_count()} CPUs, "
          f"Python {sys.version.split()[0]}); request parsed from JSON, 1 KiB file:// artifact")
    if before is not None:
        print(f"  before: {describe(args.before)}")
    print(f"  after:  {describe('HEAD')} + working tree")
    header = f"  {'keys':>5} {'body':>9}  {'warm after':>11} {'cold after':>11}"
    if before is not None:
        header += f"  {'warm before':>12} {'cold before':>12}  {'warm x':>7} {'cold x':>7}"
    print(header)
    for n in map(str, args.keys):
        a = after[n]
        line = f"  {n:>5} {a['body_kib']:>6.0f} KiB  {a['warm']:>11.0f} {a['cold']:>11.0f}"
        if before is not None:
            b = before[n]
            line += (f"  {b['warm']:>12.0f} {b['cold']:>12.0f}  {a['warm'] / b['warm']:>6.1f}x "
                     f"{a['cold'] / b['cold']:>6.1f}x")
        print(line)


if __name__ == "__main__":
    main()
