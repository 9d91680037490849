"""Pure parts of the signing station: input parsing, files, YAML resources, the status screen.
No HSM and no cluster needed."""
from __future__ import annotations

import hashlib
import io
import json
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from flashgate.signing.errors import UsageError
from flashgate.signing.filekeys import generate
from flashgate.signing.files import PROGRESS_MIN_BYTES, Output, _Bar, hash_file
from flashgate.signing.inputs import (
    check_fleet,
    check_name,
    default_release_name,
    parse_duration,
    parse_time,
)
from flashgate.signing.resources import (
    load_release,
    load_signing_keys,
    release_doc,
    signing_key_doc,
)
from flashgate.signing.status import FleetView, render
from flashgate.trust.durations import format_duration
from flashgate.trust.payloads import ReleaseManifest
from flashgate.trust.vocabulary import Algorithm, Tier, format_time

NOW = 1_767_225_600  # 2026-01-01T00:00:00Z


def test_parse_time() -> None:
    assert parse_time("now", NOW, "--t") == NOW
    assert parse_time("2026-01-01T00:00:00Z", 0, "--t") == NOW
    assert parse_time("2026-01-01T02:00:00+02:00", 0, "--t") == NOW
    with pytest.raises(UsageError, match="no time zone"):
        parse_time("2026-01-01T00:00:00", 0, "--t")
    with pytest.raises(UsageError, match="not an RFC 3339 time"):
        parse_time("tomorrow", 0, "--t")


def test_durations() -> None:
    assert parse_duration("365d", "--d") == 365 * 86400
    assert parse_duration("1h30m", "--d") == 5400
    assert parse_duration("90s", "--d") == 90
    for bad in ("", "0h", "1y", "h", "1.5h", "-1h"):
        with pytest.raises(UsageError):
            parse_duration(bad, "--d")
    assert format_duration(7 * 86400) == "168h"
    assert format_duration(5400) == "1h30m"
    assert format_duration(45) == "45s"


def test_names() -> None:
    assert check_name("app-2026.v1", "--name") == "app-2026.v1"
    assert check_fleet("gw-1") == "gw-1"
    for bad in ("App", "-x", "x-", "a_b", ""):
        with pytest.raises(UsageError):
            check_name(bad, "--name")
    with pytest.raises(UsageError):
        check_fleet("gw.1")
    assert default_release_name("gw-a", "os", "4.2.0+build_7") == "gw-a-os-4.2.0-build-7"


def test_output_is_never_overwritten_and_keys_are_owner_only(tmp_path: Path) -> None:
    target = tmp_path / "out.yaml"
    Output(target).write("first\n")
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    with pytest.raises(UsageError, match="already exists"):
        Output(target).check()
    with pytest.raises(UsageError, match="appeared while signing"):
        Output(target).write("second\n")  # the race check() cannot see
    assert target.read_text() == "first\n"
    Output(target, replace=True).write("third\n")
    assert target.read_text() == "third\n"
    key = tmp_path / "dev.pem"
    Output(key, mode=0o600).write("secret\n")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dev.pem", "out.yaml"]  # no temp left


def test_hash_file_streams_and_stops_at_a_limit(tmp_path: Path) -> None:
    data = bytes(range(256)) * 9000  # > 2 MiB: several 1 MiB reads
    path = tmp_path / "a.bin"
    path.write_bytes(data)
    digest = hash_file(path, "--artifact")
    assert (digest.size, digest.sha256, digest.oversized) == (
        len(data), hashlib.sha256(data).digest(), False)
    exact = hash_file(path, "--artifact", limit=len(data))
    assert exact.size == len(data) and not exact.oversized
    short = hash_file(path, "--artifact", limit=100)
    assert (short.size, short.sha256, short.oversized) == (
        100, hashlib.sha256(data[:100]).digest(), True)
    with pytest.raises(UsageError, match="no such file"):
        hash_file(tmp_path / "missing", "--artifact")


def _manifest() -> ReleaseManifest:
    return ReleaseManifest(fleet="gw-1", product="gw-a", tier=Tier.OS, version="4.2",
                           security_version=3, artifact_name="os.img", artifact_size=10,
                           artifact_sha256=hashlib.sha256(b"0123456789").digest())


def test_release_yaml_round_trip(tmp_path: Path) -> None:
    doc = release_doc(name="gw-a-os-4.2", manifest=_manifest(), url="s3://fw/os.img",
                      channel="beta", signatures=[b"\xd2\x84"])
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(doc))
    loaded = load_release(path, "--release")
    assert loaded.manifest == _manifest()
    assert (loaded.name, loaded.url, loaded.channel, loaded.signatures) == (
        "gw-a-os-4.2", "s3://fw/os.img", "beta", ("0oQ=",))
    assert doc["spec"]["version"] == "4.2"  # a string, even where YAML could read a number


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d["spec"].pop("product"), "spec.product is missing"),
    (lambda d: d["spec"].update(securityVersion="7"), "spec.securityVersion is '7', expected"),
    (lambda d: d["spec"]["artifact"].update(sha256="AB" * 32), "64 lowercase hex digits"),
    (lambda d: d["spec"].update(tier="kernel"), "spec.tier is 'kernel', expected one of"),
    (lambda d: d["metadata"].pop("namespace"), "metadata.namespace is missing"),
    (lambda d: d.update(apiVersion="v1"), "apiVersion is 'v1'"),
])
def test_malformed_release_fields(tmp_path: Path, edit: Any, message: str) -> None:
    doc = release_doc(name="r", manifest=_manifest(), url="s3://fw/os.img", channel="beta",
                      signatures=[b"\xd2\x84"])
    edit(doc)
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(UsageError, match=message):
        load_release(path, "--release")


def test_signing_keys_from_files_directories_and_kubectl_lists(tmp_path: Path) -> None:
    signer = generate(Algorithm.ED25519)
    doc = signing_key_doc(name="k1", fleet="gw-1", tier=Tier.CONFIG, algorithm=signer.algorithm,
                          public_pem=signer.public_pem, not_before=NOW, not_after=NOW + 60,
                          endorsement=b"\xd2", replaces="k0", overlap="1h")
    assert doc["spec"]["overlap"] == "1h" and doc["spec"]["notBefore"] == "2026-01-01T00:00:00Z"
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "k1.yaml").write_text(yaml.safe_dump(doc))
    listed = {"apiVersion": "v1", "kind": "List", "items": [
        {**doc, "metadata": {"name": "k2", "namespace": "gw-1"},
         "status": {"phase": "Retired"}}]}
    # kubectl writes times unquoted: YAML reads them as datetimes, which must work too.
    text = yaml.safe_dump(listed).replace("'2026-01-01T00:00:00Z'", "2026-01-01T00:00:00Z")
    (keys / "all.yml").write_text(text)
    (keys / "notes.txt").write_text("ignored")
    found = load_signing_keys([keys], "--keys")
    assert [(k.name, k.not_before, k.spec["replaces"]) for k in found] == [
        ("k2", NOW, "k0"), ("k1", NOW, "k0")]


def _key(name: str, tier: str, phase: str, key_id: str = "ab" * 32) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"tier": tier},
            "status": {"phase": phase, "keyId": key_id, "trustedFrom": "2026-01-01T00:00:00Z",
                       "trustedUntil": "2027-01-01T00:00:00Z"}}


def test_status_screen() -> None:
    job = {"channel": "stable", "product": "gw-a", "tier": "application", "release": "rel-1",
           "version": "4.2.0", "securityVersion": 7, "publishedAt": "2026-01-02T00:00:00Z"}
    view = FleetView(
        fleet="gw-1",
        signing_keys=[_key("app-2026", "application", "Active", "3f2a" * 16),
                      _key("boot-a", "bootloader", "Staged"),
                      _key("app-2025", "application", "Retired")],
        floors=[{"spec": {"product": "gw-a", "tier": "application", "securityVersion": 7}}],
        channel_maps=[{"metadata": {"name": "channel.gw-a.stable"},
                       "data": {"application.json": json.dumps(job), "os.json": "{broken"}}],
    )
    text = render(view, NOW)
    lines = text.splitlines()
    assert lines[0] == "Fleet gw-1 at 2026-01-01T00:00:00Z"
    header = lines[lines.index("TRUST SET") + 1]
    assert header.split() == ["TIER", "NAME", "PHASE", "KEY", "ID", "TRUSTED", "FROM",
                              "TRUSTED", "UNTIL"]
    rows = lines[lines.index("TRUST SET") + 2:lines.index("TRUST SET") + 4]
    assert rows[0].split()[:4] == ["bootloader", "boot-a", "Staged", "abababababab"]
    assert rows[1].split()[:4] == ["application", "app-2026", "Active", "3f2a3f2a3f2a"]
    assert "app-2025" not in text  # not in the trust set
    assert "no trusted key for: os, driver, config" in text
    # Columns line up: every value starts where its header does.
    assert rows[1].index("Active") == header.index("PHASE")
    assert any(line.split() == ["gw-a", "application", "7"] for line in lines)
    assert any(line.split()[:6] == ["stable", "gw-a", "application", "rel-1", "4.2.0", "7"]
               for line in lines)
    assert "(unreadable in channel.gw-a.stable)" in text
    assert "app-2025" in render(view, NOW, all_keys=True)


def test_status_screen_of_an_empty_fleet() -> None:
    text = render(FleetView("gw-2", [], [], []), NOW)
    assert "no trusted key for: bootloader, os, application, driver, config" in text
    assert "no floor yet" in text and "nothing published" in text


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_only_on_a_terminal_for_large_files() -> None:
    total = PROGRESS_MIN_BYTES
    screen = _Terminal()
    bar = _Bar(screen, "fw.bin", total)
    for done in (0, total // 4, total // 4 + 1, total):
        bar.update(done)
    bar.done()
    frames = screen.getvalue().split("\r")[1:]
    assert len(frames) == 3  # redrawn once per percent, not per read
    assert frames[-1].startswith("hashing fw.bin [" + "#" * 30 + "] 100% 64/64 MiB")
    piped = io.StringIO()
    _Bar(piped, "fw.bin", total).update(total)
    small = _Terminal()
    _Bar(small, "fw.bin", total - 1).update(total - 1)
    assert piped.getvalue() == small.getvalue() == ""


def test_status_screen_says_first_what_the_alerts_page_about() -> None:
    def release(name: str, phase: str | None, created: int, reason: str | None = None,
                message: str = "") -> dict[str, Any]:
        status = {"phase": phase, "reason": reason, "message": message} if phase else {}
        return {"metadata": {"name": name, "creationTimestamp": format_time(created)},
                "spec": {"tier": "application"}, "status": status}

    def key(name: str, tier: str, phase: str, until: int) -> dict[str, Any]:
        return {"metadata": {"name": name}, "spec": {"tier": tier},
                "status": {"phase": phase, "reason": phase, "message": f"{name} is {phase}",
                           "trustedUntil": format_time(until)}}

    day = 86400
    view = FleetView(
        fleet="gw-1", floors=[], channel_maps=[],
        signing_keys=[key("app", "application", "Active", NOW + 9 * day),
                      key("cfg", "config", "Active", NOW + 5 * day),
                      key("cfg-next", "config", "Staged", NOW + 90 * day),
                      key("os-old", "os", "Revoked", NOW),
                      key("os", "os", "Active", NOW + 90 * day),
                      key("boot", "bootloader", "Pending", NOW)],
        releases=[release("fw-old", "Rejected", NOW - 7200, "HashMismatch", "sha256 differs"),
                  release("fw-new", "Rejected", NOW - 60, "RollbackRejected", "x" * 200),
                  release("fw-gone", "Withdrawn", NOW - 600, "KeyRevoked", "signed by os-old"),
                  release("fw-stuck", "Pending", NOW - 1200, "VerifierUnavailable", "down"),
                  release("fw-fresh", None, NOW - 60)])
    lines = render(view, NOW).splitlines()
    section = lines[lines.index("NEEDS ATTENTION") + 1:lines.index("TRUST SET") - 1]
    assert section[0].split() == ["WHAT", "NAME", "TIER", "DETAIL"]
    assert [line.split()[:3] for line in section[1:]] == [
        ["rejected", "fw-new", "application"], ["rejected", "fw-old", "application"],
        ["withdrawn", "fw-gone", "application"], ["waiting", "fw-stuck", "application"],
        ["expires", "app", "application"], ["revoked", "os-old", "os"],
        ["no", "Active", "key"]]
    assert section[1].endswith("RollbackRejected: " + "x" * 99 + "...")
    assert section[2].endswith("HashMismatch: sha256 differs")
    assert section[4].endswith("20 min: VerifierUnavailable: down")
    assert section[5].endswith(f"trusted until {format_time(NOW + 9 * day)}, in 9 days; "
                               "no successor Staged")
    assert section[7].split()[3] == "bootloader"

    many = FleetView("gw-1", [], [], [], releases=[
        release(f"fw-{i:02d}", "Rejected", NOW - i) for i in range(13)])
    lines = render(many, NOW).splitlines()
    assert sum(line.startswith("rejected") for line in lines) == 11
    assert lines[14].split() == ["rejected", "...", "3", "more", "kubectl", "get",
                                 "firmwarereleases", "-n", "gw-1", "--field-selector",
                                 "status.phase=Rejected"]
    quiet = render(FleetView("gw-2", [], [], []), NOW)
    assert "nothing: no release rejected, withdrawn or stuck" in quiet
