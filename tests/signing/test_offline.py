"""`flashgate verify` gives the sidecar's verdict: the station's offline verification and the
verifier sidecar's service (real fetcher on file://) run on the same inputs, and their verdicts,
reasons, messages, signers, digests and sizes are compared, case by case."""
from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from flashgate.api import FirmwareReleaseSpec, SigningKeySpec
from flashgate.signing.filekeys import generate
from flashgate.signing.offline import verify_offline
from flashgate.trust import Algorithm
from flashgate.trust.fleet import FleetKey, retired_names
from flashgate.verifier_api.models import KeyRequest, ReleaseRequest

from ..verifier_sidecar.test_service import NOT_AFTER, NOT_BEFORE, NOW, Fleet, service_for

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    return Fleet(tmp_path)


def both(fleet: Fleet, release: dict[str, Any], keys: list[dict[str, Any]], *,
         floor: int | None = 5, now: int = NOW) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """(sidecar, station) verdicts as (verdict, reason, message, keyIds, sha256, size)."""
    service, _ = service_for(fleet)
    # The operator's part: retired keys from the rotation state machine, endorsements as the
    # sidecar reported them.
    specs = [(k["name"], SigningKeySpec.model_validate(k["spec"])) for k in keys]
    endorsed = {name: service.verify_key(KeyRequest(fleet=fleet.name, spec=spec)).endorsed
                for name, spec in specs}
    retired = retired_names([(name, spec, endorsed[name]) for name, spec in specs], now)
    request = ReleaseRequest.model_validate({
        "fleet": fleet.name, "name": "r1", "release": release, "floor": floor, "now": now,
        "keys": [{**k, "retired": k["name"] in retired} for k in keys]})
    sidecar = asyncio.run(service.verify_release(request))

    settings = fleet.settings()
    artifact = fleet.artifacts / release["artifact"]["name"]
    station = verify_offline(
        roots=settings.roots, policy=settings.policy, fleet=fleet.name,
        release=FirmwareReleaseSpec.model_validate(release),
        keys=[FleetKey(name, spec, revoked=k["revoked"])
              for (name, spec), k in zip(specs, keys, strict=True)],
        artifact=artifact, floor=floor, now=now, progress=None, warn=lambda _: None)
    v = station.verdict
    return ((sidecar.verdict, sidecar.reason, sidecar.message, sidecar.key_ids, sidecar.sha256,
             sidecar.size),
            ("accepted" if v.accepted else "rejected", v.reason, v.message, list(v.key_ids),
             station.sha256.hex() if station.sha256 is not None else None, station.size))


def cases(fleet: Fleet) -> dict[str, tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]]:
    app, app2, os_key, impostor = (generate(Algorithm.ED25519) for _ in range(4))
    boot_a, boot_b = generate(Algorithm.ES256), generate(Algorithm.ED25519)
    keys = [fleet.entry(app, "application", "app"), fleet.entry(os_key, "os", "os")]
    swapped = fleet.release([app], data=b"A" * 5000, security_version=8)
    fleet.artifact(swapped["artifact"]["name"], b"B" * 5000)
    short = fleet.release([app], data=b"C" * 6000, security_version=9)
    fleet.artifact(short["artifact"]["name"], b"C" * 5999)
    long = fleet.release([app], data=b"D" * 7000, security_version=10)
    fleet.artifact(long["artifact"]["name"], b"D" * 7001)
    # app (old) replaced by app2, active since a day ago with a one-hour overlap: app is retired.
    rotation = [fleet.entry(app, "application", "app"),
                fleet.entry(app2, "application", "app2", not_before=NOT_BEFORE,
                            replaces="app", overlap="1h")]
    return {
        "accepted": (fleet.release([app]), keys, {}),
        "HashMismatch": (swapped, keys, {}),
        "SizeMismatch short": (short, keys, {}),
        "SizeMismatch long": (long, keys, {}),
        "UnknownKey": (fleet.release([app]), [fleet.entry(app, "application", endorsement=(
            fleet.endorse(app, "application", by=impostor)))], {}),
        "KeyRevoked by spec": (fleet.release([app]), [revoked_in_spec(fleet.entry(
            app, "application"))], {}),
        "KeyRevoked by record": (fleet.release([app]), [fleet.entry(app, "application",
                                                                    revoked=True)], {}),
        # revoked: false beside a root-signed revocation (the CRD refuses it; the rule that a
        # verified revocation revokes holds anyway).
        "KeyRevoked by signed revocation": (fleet.release([app]), [fleet.entry(
            app, "application", revocation=fleet.revocation(app))], {}),
        "KeyExpired (retired)": (fleet.release([app]), rotation, {}),
        "accepted (successor)": (fleet.release([app2]), rotation, {}),
        "KeyExpired (validity)": (fleet.release([app]), keys, {"now": NOT_AFTER}),
        "KeyNotTrustedForTier": (fleet.release([os_key]), keys, {}),
        "root signs": (fleet.release([fleet.root]), [fleet.entry(fleet.root, "application")],
                       {}),
        "several tiers": (fleet.release([app]), [fleet.entry(app, "application", "a"),
                                                 fleet.entry(app, "os", "b")], {}),
        "ManifestMismatch": (fleet.release([app], version="4.2.1"), keys, {}),
        "RollbackRejected": (fleet.release([app], security_version=4), keys, {}),
        "FastForwardRejected": (fleet.release([app], security_version=106), keys, {}),
        "ThresholdNotMet": (fleet.release([boot_a], "bootloader"),
                            [fleet.entry(boot_a, "bootloader"), fleet.entry(boot_b, "bootloader")],
                            {}),
        "threshold met": (fleet.release([boot_a, boot_b], "bootloader"),
                          [fleet.entry(boot_a, "bootloader"), fleet.entry(boot_b, "bootloader")],
                          {}),
        "no floor": (fleet.release([app]), keys, {"floor": None}),
    }


def revoked_in_spec(entry: dict[str, Any]) -> dict[str, Any]:
    return {**entry, "spec": {**entry["spec"], "revoked": True}}


def test_station_and_sidecar_agree_case_by_case(fleet: Fleet) -> None:
    seen = set()
    for name, (release, keys, extra) in cases(fleet).items():
        sidecar, station = both(fleet, release, keys, **extra)
        assert station == sidecar, name
        seen.add((sidecar[0], sidecar[1]))
    # The cases reach acceptance and every reason the station can give.
    assert {reason for _, reason in seen} == {
        None, "HashMismatch", "SizeMismatch", "UnknownKey", "KeyRevoked", "KeyExpired",
        "KeyNotTrustedForTier", "ManifestMismatch", "RollbackRejected", "FastForwardRejected",
        "ThresholdNotMet"}


def test_the_station_imports_nothing_of_the_sidecar() -> None:
    code = ("import sys\n"
            "import flashgate.signing.cli, flashgate.signing.offline, flashgate.signing.station\n"
            "bad = sorted(m for m in sys.modules if m.startswith(('flashgate.verifier_sidecar',"
            " 'flashgate.verifier_api', 'aiohttp')))\n"
            "print(','.join(bad))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"the station imports {result.stdout.strip()}"
