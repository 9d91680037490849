"""The `flashgate` CLI end to end, in subprocesses, against a SoftHSM2 token made at test time:
keygen → endorse → sign → verify, thresholds, revocation, and every bad input with its exit code
and message (0 ok, 1 trust/token failure or rejected, 2 unusable command)."""
from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import re
import select
import shlex
import stat
import subprocess
import sys
import termios
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from flashgate.trust.keyring import ROOT, KeyRecord, verify_revocation
from flashgate.trust.keys import key_id
from flashgate.trust.vocabulary import Algorithm

from .softhsm import SoftHsm, flashgate

FLEET = "gw-1"
SUBCOMMANDS = ("keygen", "endorse", "sign", "revoke", "verify", "status")


@dataclass
class Station:
    """A token with a root, an application key (ES256) and an os key, endorsed for FLEET."""

    hsm: SoftHsm
    dir: Path
    root: str
    app: str
    os: str
    artifact: Path

    def run(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return flashgate(self.hsm, *args, cwd=self.dir, env=env)

    def ok(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = self.run(*args)
        assert result.returncode == 0, f"flashgate {shlex.join(args)}:\n{result.stderr}"
        return result

    def keygen(self, label: str, tier: str | None, algorithm: str = "ed25519",
               *extra: str) -> str:
        who = ["--root"] if tier is None else ["--tier", tier]
        out = self.ok("keygen", *who, "--algorithm", algorithm, "--label", label, *extra).stdout
        return out.splitlines()[0].removeprefix("keyId: ")

    def endorse(self, key: str, tier: str, name: str, *extra: str) -> Path:
        path = self.dir / f"{name}.yaml"
        self.ok("endorse", "--root-key", self.root, "--key", key, "--tier", tier, "--fleet",
                FLEET, "--valid-for", "30d", "--not-before", "2026-01-01T00:00:00Z",
                "--name", name, "-o", str(path), *extra)
        return path

    def sign_args(self, key: str, tier: str = "application", version: str = "4.2.0",
                  artifact: Path | None = None) -> list[str]:
        return ["sign", "--key", key, "--tier", tier, "--fleet", FLEET, "--product", "gw-a",
                "--version", version, "--security-version", "7",
                "--artifact", str(artifact or self.artifact),
                "--url", "https://fw.example.com/gw-a/fw.bin"]

    def verify(self, release: Path, *keys: Path, extra: Sequence[str] = (),
               artifact: Path | None = None) -> subprocess.CompletedProcess[str]:
        return self.run("verify", "--release", str(release), "--artifact",
                        str(artifact or self.artifact), "--keys", *map(str, keys),
                        "--root", "root.pem", "--now", "2026-01-10T00:00:00Z", *extra)


@pytest.fixture(scope="module")
def station(softhsm: SoftHsm, tmp_path_factory: pytest.TempPathFactory) -> Station:
    workdir = tmp_path_factory.mktemp("station")
    artifact = workdir / "fw.bin"
    artifact.write_bytes(os.urandom(300_000))
    st = Station(softhsm, workdir, softhsm.label("root"), softhsm.label("app"),
                 softhsm.label("os"), artifact)
    st.keygen(st.root, None, "ed25519", "--public-key-out", "root.pem")
    st.keygen(st.app, "application", "ecdsa-p256-sha256")
    st.keygen(st.os, "os")
    st.endorse(st.app, "application", "app")
    st.endorse(st.os, "os", "os")
    return st


def _load(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text())
    assert isinstance(doc, dict)
    return doc


def _error(result: subprocess.CompletedProcess[str], code: int, pattern: str) -> None:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert re.search(pattern, result.stderr), result.stderr
    assert "Traceback" not in result.stderr


# --- the release flow ---------------------------------------------------------------------------


def test_keygen_endorse_sign_verify_accepted(station: Station) -> None:
    release = station.dir / "release.yaml"
    result = station.ok(*station.sign_args(station.app), "-o", str(release))
    assert result.stdout == "" and "OK: signed application release" in result.stderr

    doc = _load(release)
    assert (doc["apiVersion"], doc["kind"]) == ("ota.flashgate.dev/v1alpha1", "FirmwareRelease")
    assert doc["metadata"] == {"name": "gw-a-application-4.2.0", "namespace": FLEET}
    spec = doc["spec"]
    data = station.artifact.read_bytes()
    assert spec["artifact"] == {"url": "https://fw.example.com/gw-a/fw.bin", "name": "fw.bin",
                                "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    assert (spec["tier"], spec["product"], spec["version"], spec["securityVersion"],
            spec["channel"]) == ("application", "gw-a", "4.2.0", 7, "stable")
    assert len(spec["signatures"]) == 1

    verdict = station.verify(release, station.dir / "app.yaml", station.dir / "os.yaml")
    assert verdict.returncode == 0, verdict.stdout + verdict.stderr
    assert verdict.stdout.startswith("accepted gw-a-application-4.2.0: application gw-a 4.2.0")
    assert "signed by app (" in verdict.stdout


def test_signing_key_yaml_is_ready_to_apply(station: Station) -> None:
    doc = _load(station.dir / "app.yaml")
    assert (doc["apiVersion"], doc["kind"]) == ("ota.flashgate.dev/v1alpha1", "SigningKey")
    assert doc["metadata"] == {"name": "app", "namespace": FLEET}
    spec = doc["spec"]
    assert (spec["tier"], spec["algorithm"]) == ("application", "ecdsa-p256-sha256")
    assert (spec["notBefore"], spec["notAfter"]) == ("2026-01-01T00:00:00Z",
                                                     "2026-01-31T00:00:00Z")
    assert spec["publicKey"].startswith("-----BEGIN PUBLIC KEY-----\n")
    assert base64.b64decode(spec["endorsement"], validate=True)[:1] == b"\xd2"  # tag 18


def test_sign_writes_to_stdout_without_o(station: Station) -> None:
    result = station.ok(*station.sign_args(station.app, version="4.2.1"))
    doc = yaml.safe_load(result.stdout)
    assert doc["kind"] == "FirmwareRelease" and doc["spec"]["version"] == "4.2.1"
    assert result.stderr.startswith("OK: ")


def test_endorse_rotation_fields(station: Station) -> None:
    label = station.hsm.label("app2")
    station.keygen(label, "application")
    path = station.endorse(label, "application", "app-next", "--replaces", "app",
                           "--overlap", "1d", "--activate-at", "2026-01-02T00:00:00Z")
    spec = _load(path)["spec"]
    assert (spec["replaces"], spec["overlap"], spec["activateAt"]) == (
        "app", "24h", "2026-01-02T00:00:00Z")

    # verify computes rotation phases as the operator does: the old key is Retiring for a day
    # after its successor activates, then Retired.
    release = station.dir / "rotation-release.yaml"
    station.ok(*station.sign_args(station.app, version="4.3.0"), "-o", str(release))
    keys = ["--keys", "app.yaml", str(path)]
    common = ["verify", "--release", str(release), "--artifact", "fw.bin", "--root", "root.pem",
              *keys]
    retiring = station.run(*common, "--now", "2026-01-02T12:00:00Z")
    assert retiring.returncode == 0, retiring.stdout + retiring.stderr
    retired = station.run(*common, "--now", "2026-01-03T00:00:01Z")
    assert retired.returncode == 1 and retired.stdout.startswith("rejected KeyExpired: ")


def test_a_key_whose_endorsement_does_not_hold_is_unknown(station: Station) -> None:
    release = station.dir / "tampered-release.yaml"
    station.ok(*station.sign_args(station.app, version="4.4.0"), "-o", str(release))
    tampered = station.dir / "app-tampered.yaml"
    doc = _load(station.dir / "app.yaml")
    doc["spec"]["notAfter"] = "2030-01-01T00:00:00Z"  # not what the root endorsed
    tampered.write_text(yaml.safe_dump(doc))
    result = station.verify(release, tampered)
    assert result.returncode == 1 and result.stdout.startswith("rejected UnknownKey: ")
    assert "warning: SigningKey app is not trusted: ManifestMismatch: " in result.stderr


def test_key_of_another_tier_is_refused_by_verify(station: Station) -> None:
    """A key endorsed for os signs an application release: the trust core says
    KeyNotTrustedForTier, as the sidecar does."""
    label = station.hsm.label("stray")
    station.keygen(label, "application", "ed25519", "--public-key-out", f"{label}.pem")
    station.endorse(f"{label}.pem", "os", "stray-os")  # endorsed for os from its public key
    release = station.dir / "stray-release.yaml"
    station.ok(*station.sign_args(label, version="9.9.9"), "-o", str(release))
    result = station.verify(release, station.dir / "app.yaml", station.dir / "stray-os.yaml")
    assert result.returncode == 1
    assert result.stdout.startswith("rejected KeyNotTrustedForTier: ")


def test_verify_rejects_a_different_artifact_and_a_low_security_version(station: Station) -> None:
    release = station.dir / "release-v.yaml"
    station.ok(*station.sign_args(station.app, version="5.0.0"), "-o", str(release))
    other = station.dir / "other.bin"
    data = bytearray(station.artifact.read_bytes())
    data[0] ^= 1
    other.write_bytes(bytes(data))
    keys = station.dir / "app.yaml"
    assert station.verify(release, keys, artifact=other).stdout.startswith("rejected HashMismatch")
    longer = station.dir / "longer.bin"
    longer.write_bytes(bytes(data) + b"x")
    assert station.verify(release, keys, artifact=longer).stdout.startswith(
        "rejected SizeMismatch")
    floor = station.verify(release, keys, extra=["--floor", "8"])
    assert floor.returncode == 1 and floor.stdout.startswith("rejected RollbackRejected")
    expired = station.run("verify", "--release", str(release), "--artifact",
                          str(station.artifact), "--keys", str(keys), "--root", "root.pem",
                          "--now", "2027-01-01T00:00:00Z")
    assert expired.stdout.startswith("rejected KeyExpired")


def test_bootloader_threshold_with_add_signature(station: Station) -> None:
    boot_a, boot_b = station.hsm.label("boot-a"), station.hsm.label("boot-b")
    station.keygen(boot_a, "bootloader", "ecdsa-p256-sha256")
    station.keygen(boot_b, "bootloader", "ed25519")
    keys = [station.endorse(boot_a, "bootloader", "boot-a"),
            station.endorse(boot_b, "bootloader", "boot-b")]
    one = station.dir / "boot-1.yaml"
    station.ok(*station.sign_args(boot_a, tier="bootloader", version="2.1.0"), "-o", str(one))
    threshold = ["--threshold", "bootloader=2"]
    result = station.verify(one, *keys, extra=threshold)
    assert result.returncode == 1 and result.stdout.startswith("rejected ThresholdNotMet")

    two = station.dir / "boot-2.yaml"
    station.ok("sign", "--key", boot_b, "--add-signature", str(one), "--artifact",
               str(station.artifact), "-o", str(two))
    assert len(_load(two)["spec"]["signatures"]) == 2
    result = station.verify(two, *keys, extra=threshold)
    assert result.returncode == 0, result.stdout
    assert "boot-a (" in result.stdout and "boot-b (" in result.stdout

    again = station.run("sign", "--key", boot_a, "--add-signature", str(two), "--artifact",
                        str(station.artifact), "--in-place")
    _error(again, 1, "already signed this release; a threshold needs distinct keys")

    # --in-place rewrites the file it was given, on purpose.
    inplace = station.dir / "boot-inplace.yaml"
    inplace.write_text(one.read_text())
    station.ok("sign", "--key", boot_b, "--add-signature", str(inplace), "--artifact",
               str(station.artifact), "--in-place")
    assert _load(inplace)["spec"]["signatures"] == _load(two)["spec"]["signatures"]


def test_add_signature_checks_artifact_and_manifest(station: Station) -> None:
    release = station.dir / "cosign.yaml"
    station.ok(*station.sign_args(station.app, version="6.0.0"), "-o", str(release))
    other = station.dir / "cosign-other.bin"
    other.write_bytes(b"another build")
    second = station.hsm.label("app-b")
    station.keygen(second, "application")
    result = station.run("sign", "--key", second, "--add-signature", str(release),
                         "--artifact", str(other))
    _error(result, 1, "the release declares")

    edited = station.dir / "cosign-edited.yaml"
    doc = _load(release)
    doc["spec"]["version"] = "6.0.1"
    edited.write_text(yaml.safe_dump(doc))
    result = station.run("sign", "--key", second, "--add-signature", str(edited),
                         "--artifact", str(station.artifact))
    _error(result, 1, r"signature 1 of the release covers another manifest: version")

    result = station.run("sign", "--key", second, "--add-signature", str(release),
                         "--artifact", str(station.artifact), "--version", "7.0.0")
    _error(result, 2, "--version '7.0.0' differs from the release being co-signed")


def test_revoke_prints_the_kubectl_patch_with_a_root_signed_statement(station: Station) -> None:
    result = station.ok("revoke", "--root-key", station.root, "--signing-key-yaml", "app.yaml",
                        "--reason", "laptop stolen", "--revoked-at", "2026-01-05T00:00:00Z")
    command = shlex.split(result.stdout)
    assert command[:8] == ["kubectl", "patch", "signingkey", "app", "-n", FLEET, "--type",
                           "merge"]
    patch = json.loads(command[command.index("-p") + 1])
    assert patch["spec"]["revoked"] is True
    root_pem = (station.dir / "root.pem").read_text()
    spki = serialization.load_pem_public_key(root_pem.encode()).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    root = KeyRecord(key_id(spki), ROOT, Algorithm.ED25519, spki, 0, 2**63)
    revocation = verify_revocation(patch["spec"]["revocation"], FLEET, [root])
    app_spki = serialization.load_pem_public_key(
        _load(station.dir / "app.yaml")["spec"]["publicKey"].encode()).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert (revocation.key_id, revocation.reason, revocation.revoked_at) == (
        bytes.fromhex(key_id(app_spki)), "laptop stolen", 1767571200)

    # The patched key, given to verify, refuses what it signed.
    release = station.dir / "revoked-release.yaml"
    station.ok(*station.sign_args(station.app, version="8.0.0"), "-o", str(release))
    revoked = station.dir / "app-revoked.yaml"
    doc = _load(station.dir / "app.yaml")
    doc["spec"].update(patch["spec"])
    revoked.write_text(yaml.safe_dump(doc))
    assert station.verify(release, revoked).stdout.startswith("rejected KeyRevoked")


def test_revoke_by_key_id_to_a_patch_file(station: Station) -> None:
    key_hex = "ab" * 32
    result = station.ok("revoke", "--root-key", station.root, "--key-id", key_hex, "--fleet",
                        FLEET, "--name", "old-key", "--reason", "", "-o", "revoke.json")
    assert result.stdout.strip() == (f"kubectl patch signingkey old-key -n {FLEET} --type merge "
                                     "--patch-file revoke.json")
    assert json.loads((station.dir / "revoke.json").read_text())["spec"]["revoked"] is True
    again = station.run("revoke", "--root-key", station.root, "--key-id", key_hex, "--fleet",
                        FLEET, "--name", "old-key", "--reason", "", "-o", "revoke.json")
    _error(again, 2, "revoke.json: the file already exists")
    _error(station.run("revoke", "--root-key", station.root, "--key-id", key_hex,
                       "--reason", "x"), 2, "--key-id needs --fleet and --name")
    _error(station.run("revoke", "--root-key", station.root, "--key-id", "xyz", "--fleet",
                       FLEET, "--name", "k", "--reason", "x"), 2, "not 64 hex digits")


def test_only_the_root_endorses_and_revokes_and_it_signs_no_release(station: Station) -> None:
    result = station.run("endorse", "--root-key", station.app, "--key", station.os, "--tier",
                         "os", "--fleet", FLEET, "--valid-for", "1d", "--name", "x",
                         "-o", "never.yaml")
    _error(result, 1, "is an application key; it may not endorse keys")
    assert not (station.dir / "never.yaml").exists()
    result = station.run(*station.sign_args(station.root))
    _error(result, 1, "is a fleet root key; it may not sign an application release")


def test_endorse_refuses_a_key_recorded_for_another_tier(station: Station) -> None:
    result = station.run("endorse", "--root-key", station.root, "--key", station.os, "--tier",
                         "application", "--fleet", FLEET, "--valid-for", "1d", "--name", "x")
    _error(result, 1, "was generated for tier os, not application")


# --- development file keys ----------------------------------------------------------------------


def test_dev_file_keys_flow(station: Station) -> None:
    result = station.ok("keygen", "--root", "--dev-file", "dev-root.pem",
                        "--public-key-out", "dev-root.pub.pem")
    assert "DEVELOPMENT key" in result.stderr and "NOT FOR PRODUCTION" not in result.stdout
    assert stat.S_IMODE((station.dir / "dev-root.pem").stat().st_mode) == 0o600
    station.ok("keygen", "--tier", "config", "--algorithm", "ecdsa-p256-sha256",
               "--dev-file", "dev-config.pem")
    again = station.run("keygen", "--tier", "config", "--dev-file", "dev-config.pem")
    _error(again, 2, "dev-config.pem: the file already exists")

    station.ok("endorse", "--root-dev-file", "dev-root.pem", "--key", "dev-config.pem",
               "--tier", "config", "--fleet", FLEET, "--not-before", "2026-01-01T00:00:00Z",
               "--valid-for", "30d", "--name", "dev-config", "-o", "dev-config.yaml")
    signed = station.ok("sign", "--dev-file", "dev-config.pem", "--tier", "config", "--fleet",
                        FLEET, "--product", "gw-a", "--version", "1.0.0", "--security-version",
                        "1", "--artifact", "fw.bin", "--url", "file:///srv/fw.bin",
                        "-o", "dev-release.yaml")
    assert "development file key" in signed.stderr
    result = station.run("verify", "--release", "dev-release.yaml", "--artifact", "fw.bin",
                         "--keys", "dev-config.yaml", "--root", "dev-root.pub.pem", "--now",
                         "2026-01-10T00:00:00Z")
    assert result.returncode == 0, result.stdout + result.stderr

    wrong = station.run("sign", "--dev-file", "dev-config.pem", *station.sign_args("x")[3:])
    _error(wrong, 1, "is a config key; it may not sign an application release")
    root_as_signer = station.run("sign", "--dev-file", "dev-root.pem",
                                 *station.sign_args("x")[3:])
    _error(root_as_signer, 1, "is a fleet root key")


def test_sign_with_republish_states_the_intent(station: Station) -> None:
    station.ok(*station.sign_args(station.app), "--name", "resigned", "--republish",
               "re-signed with app-2027 after app-2026 leaked", "-o", "resigned.yaml")
    doc = _load(station.dir / "resigned.yaml")
    assert doc["spec"]["republish"] == {"reason": "re-signed with app-2027 after app-2026 leaked"}
    station.ok(*station.sign_args(station.app), "--name", "plain", "-o", "plain.yaml")
    assert "republish" not in _load(station.dir / "plain.yaml")["spec"]
    _error(station.run(*station.sign_args(station.app), "--republish", "", "-o", "empty.yaml"),
           2, "--republish")
    assert not (station.dir / "empty.yaml").exists()
    _error(station.run("sign", "--key", station.app, "--add-signature", "resigned.yaml",
                       "--artifact", str(station.artifact), "--republish", "again",
                       "-o", "co.yaml"), 2, "--republish goes with a new release")


# --- bad input ----------------------------------------------------------------------------------


def test_wrong_pin(station: Station) -> None:
    env = station.hsm.env(FLASHGATE_PKCS11_PIN="000000")
    result = station.run(*station.sign_args(station.app), "-o", "wrong-pin.yaml", env=env)
    _error(result, 1, r"error: wrong PIN for token 'flashgate-test'\nhint: ")
    assert "000000" not in result.stderr
    assert not (station.dir / "wrong-pin.yaml").exists()


def test_verbose_shows_the_traceback(station: Station) -> None:
    env = station.hsm.env(FLASHGATE_PKCS11_PIN="000000")
    result = station.run(*station.sign_args(station.app), "--verbose", env=env)
    assert result.returncode == 1 and "Traceback" in result.stderr


def test_pin_from_a_named_variable_or_nowhere(station: Station) -> None:
    env = station.hsm.env(RELEASE_PIN=station.hsm.pin)
    env.pop("FLASHGATE_PKCS11_PIN")
    station_result = station.run(*station.sign_args(station.app, version="1.0.1"),
                                 "--pin-env", "RELEASE_PIN", env=env)
    assert station_result.returncode == 0, station_result.stderr
    _error(station.run(*station.sign_args(station.app), "--pin-env", "UNSET_PIN", env=env), 2,
           "the variable UNSET_PIN is not set")
    no_tty = subprocess.run([sys.executable, "-m", "flashgate.signing",
                             *station.sign_args(station.app)], cwd=station.dir, env=env,
                            stdin=subprocess.DEVNULL, capture_output=True, text=True)
    _error(no_tty, 2, "no PIN for token 'flashgate-test' and no terminal")


def _run_on_a_terminal(argv: list[str], env: dict[str, str], cwd: Path,
                       answer: str) -> tuple[int, str]:
    """Runs argv with a pseudo-terminal as its controlling terminal, answers the PIN prompt;
    returns the exit code and everything the terminal showed."""
    main, child_end = os.openpty()

    def controlling_terminal() -> None:
        os.setsid()
        fcntl.ioctl(child_end, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(argv, stdin=child_end, stdout=subprocess.DEVNULL, stderr=child_end,
                            env=env, cwd=cwd, preexec_fn=controlling_terminal)
    os.close(child_end)
    shown = b""

    def read(until: float) -> None:
        nonlocal shown
        while time.monotonic() < until and select.select([main], [], [], 0.2)[0]:
            try:
                shown += os.read(main, 4096)
            except OSError:  # the child closed the terminal
                return

    deadline = time.monotonic() + 30
    while b"PIN for token" not in shown and time.monotonic() < deadline:
        read(time.monotonic() + 1)
    os.write(main, answer.encode() + b"\n")
    code = proc.wait(timeout=60)
    read(time.monotonic() + 2)
    os.close(main)
    return code, shown.decode(errors="replace")


def test_pin_prompt_on_the_terminal(station: Station) -> None:
    env = station.hsm.env()
    env.pop("FLASHGATE_PKCS11_PIN")
    argv = [sys.executable, "-m", "flashgate.signing",
            *station.sign_args(station.app, version="1.0.2"), "-o", "prompted.yaml"]
    code, shown = _run_on_a_terminal(argv, env, station.dir, station.hsm.pin)
    assert code == 0, shown
    assert "PIN for token 'flashgate-test': " in shown and "OK: signed" in shown
    assert station.hsm.pin not in shown  # not echoed
    assert (station.dir / "prompted.yaml").exists()


def test_missing_token(station: Station) -> None:
    result = station.run(*station.sign_args(station.app), "--token", "no-such-token")
    _error(result, 1, "no token labelled 'no-such-token'.*tokens present: 'flashgate-test'")


def test_missing_module(station: Station) -> None:
    result = station.run(*station.sign_args(station.app), "--pkcs11-module", "/nope/lib.so")
    _error(result, 2, "PKCS#11 module /nope/lib.so does not exist")


def test_missing_key_label(station: Station) -> None:
    _error(station.run(*station.sign_args("no-such-label")), 1,
           "no private key labelled 'no-such-label'")


def test_unknown_tier(station: Station) -> None:
    result = station.run(*station.sign_args(station.app, tier="kernel"))
    assert result.returncode == 2
    assert "unknown tier 'kernel' (choose from bootloader, os, application, driver, config)" in (
        result.stderr)
    _error(station.run("keygen", "--tier", "firmware", "--label", "x"), 2, "unknown tier")


def test_key_of_another_tier_is_refused_by_the_station(station: Station) -> None:
    result = station.run(*station.sign_args(station.os), "-o", "other-tier.yaml")
    _error(result, 1, "is an os key; it may not sign an application release")
    assert not (station.dir / "other-tier.yaml").exists()


def test_artifact_missing_or_unreadable(station: Station) -> None:
    _error(station.run(*station.sign_args(station.app, artifact=station.dir / "missing.bin")),
           2, "--artifact .*missing.bin: no such file")
    _error(station.run(*station.sign_args(station.app, artifact=station.dir)), 2,
           "not a regular file")
    empty = station.dir / "empty.bin"
    empty.write_bytes(b"")
    _error(station.run(*station.sign_args(station.app, artifact=empty)), 2,
           r"--artifact \(its size\) 0")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_artifact_without_read_permission(station: Station) -> None:
    locked = station.dir / "locked.bin"
    locked.write_bytes(b"x")
    locked.chmod(0)
    _error(station.run(*station.sign_args(station.app, artifact=locked)), 2, "cannot read it")


def test_output_file_exists_is_never_overwritten(station: Station) -> None:
    existing = station.dir / "exists.yaml"
    existing.write_text("keep me\n")
    _error(station.run(*station.sign_args(station.app), "-o", str(existing)), 2,
           "exists.yaml: the file already exists")
    _error(station.run("endorse", "--root-key", station.root, "--key", station.app, "--tier",
                       "application", "--fleet", FLEET, "--valid-for", "1d", "--name", "x",
                       "-o", str(existing)), 2, "already exists")
    _error(station.run("keygen", "--tier", "os", "--label", station.hsm.label("x"),
                       "--public-key-out", str(existing)), 2, "already exists")
    assert existing.read_text() == "keep me\n"
    _error(station.run(*station.sign_args(station.app), "-o", "no-dir/out.yaml"), 2,
           "directory no-dir does not exist")


def test_malformed_yaml_given_to_verify_and_add_signature(station: Station) -> None:
    bad = station.dir / "bad.yaml"
    bad.write_text("spec: [unclosed\n")
    result = station.run("verify", "--release", str(bad), "--artifact", "fw.bin", "--keys",
                         "app.yaml", "--root", "root.pem")
    _error(result, 2, r"--release .*bad.yaml: not valid YAML \(.* at line 2\)")
    result = station.run("sign", "--key", station.app, "--add-signature", str(bad),
                         "--artifact", "fw.bin")
    _error(result, 2, "--add-signature .*bad.yaml: not valid YAML")
    _error(station.run("verify", "--release", "app.yaml", "--artifact", "fw.bin", "--keys",
                       "app.yaml", "--root", "root.pem"), 2, "expected one FirmwareRelease, found 0")
    _error(station.run("verify", "--release", "release.yaml", "--artifact", "fw.bin", "--keys",
                       str(bad), "--root", "root.pem"), 2, "--keys .*bad.yaml: not valid YAML")
    incomplete = station.dir / "incomplete.yaml"
    doc = _load(station.dir / "release.yaml")
    del doc["spec"]["artifact"]["sha256"]
    incomplete.write_text(yaml.safe_dump(doc))
    _error(station.run("verify", "--release", str(incomplete), "--artifact", "fw.bin", "--keys",
                       "app.yaml", "--root", "root.pem"), 2, "spec.artifact.sha256 is missing")
    _error(station.run("verify", "--release", "release.yaml", "--artifact", "fw.bin", "--keys",
                       "app.yaml", "--root", "fw.bin"), 2, "--root fw.bin: not UTF-8 text|"
                                                          "not a PEM public key")


def test_fields_the_api_refuses_are_refused_before_signing(station: Station) -> None:
    args = station.sign_args(station.app)
    args[args.index("--product") + 1] = "GW A"
    args[args.index("--url") + 1] = "http://plain.example.com/fw.bin"
    result = station.run(*args)
    _error(result, 2, "--product 'GW A': product must be a DNS label")
    assert "--url 'http://plain.example.com/fw.bin': artifact.url must start with https://" in (
        result.stderr)
    _error(station.run("endorse", "--root-key", station.root, "--key", station.app, "--tier",
                       "application", "--fleet", FLEET, "--not-before", "2026-01-01",
                       "--valid-for", "1d", "--name", "x"), 2, "has no time zone")
    _error(station.run("endorse", "--root-key", station.root, "--key", station.app, "--tier",
                       "application", "--fleet", FLEET, "--valid-for", "1y", "--name", "x"), 2,
           "--valid-for '1y' is not a duration")
    _error(station.run("endorse", "--root-key", station.root, "--key", station.app, "--tier",
                       "application", "--fleet", "Fleet_1", "--valid-for", "1d", "--name", "x"),
           2, "not a valid namespace name")
    _error(station.run("endorse", "--root-key", station.root, "--key", station.app, "--tier",
                       "application", "--fleet", FLEET, "--valid-for", "1d", "--name", "x",
                       "--overlap", "1h"), 2, "--overlap needs --replaces")


def test_artifact_name_defaults_to_the_file_name(station: Station) -> None:
    odd = station.dir / "fw build (final).bin"
    odd.write_bytes(b"image")
    _error(station.run(*station.sign_args(station.app, artifact=odd)), 2,
           r"--artifact-name \(default: the file's name\) 'fw build \(final\).bin': "
           "artifact.name must be a file name")
    result = station.ok(*station.sign_args(station.app, artifact=odd), "--artifact-name",
                        "gw-a-4.2.0.bin")
    assert yaml.safe_load(result.stdout)["spec"]["artifact"]["name"] == "gw-a-4.2.0.bin"


def test_security_version_fits_a_device_counter(station: Station) -> None:
    args = station.sign_args(station.app)
    args[args.index("--security-version") + 1] = str(2**32)
    result = station.run(*args)
    assert result.returncode == 2
    assert "4294967296 is above 4294967295 (a device's 32-bit secure counter)" in result.stderr


def test_status_without_a_kubeconfig(tmp_path: Path) -> None:
    result = flashgate(None, "status", "-n", FLEET, "--kubeconfig", "missing", cwd=tmp_path)
    _error(result, 2, "--kubeconfig missing: no such file")


def test_flag_combinations(station: Station) -> None:
    _error(station.run("keygen", "--tier", "os", "--root", "--label", "x"), 2,
           "not allowed with argument")
    _error(station.run("sign", "--key", station.app, "--artifact", "fw.bin"), 2,
           "sign needs --tier, --fleet, --product, --version, --security-version, --url")
    _error(station.run(*station.sign_args(station.app), "--in-place"), 2,
           "--in-place only goes with --add-signature")


# --- help ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_each_subcommand_help_teaches(command: str, tmp_path: Path) -> None:
    result = flashgate(None, command, "--help", cwd=tmp_path)
    assert result.returncode == 0
    assert f"usage: flashgate {command}" in result.stdout
    assert "examples:" in result.stdout and f"flashgate {command}" in result.stdout.split(
        "examples:")[1]
    assert "--pin" not in result.stdout.split("examples:")[1].replace("--pin-env", "")


def test_main_help_lists_commands_and_exit_codes(tmp_path: Path) -> None:
    result = flashgate(None, "--help", cwd=tmp_path)
    assert result.returncode == 0
    for command in SUBCOMMANDS:
        assert command in result.stdout
    assert "exit codes:" in result.stdout
    assert flashgate(None, cwd=tmp_path).returncode == 2


def test_kubectl_plugin_name(tmp_path: Path) -> None:
    plugin = Path(sys.executable).parent / "kubectl-flashgate"
    if not plugin.exists():
        pytest.skip("the kubectl-flashgate console script is not installed in this venv")
    result = subprocess.run([str(plugin), "status", "--help"], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0 and "usage: kubectl flashgate status" in result.stdout
