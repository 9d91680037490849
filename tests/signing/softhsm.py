"""A SoftHSM2 token made at test time: its own config and token directory, a random PIN.

Shared by the signing station's unit tests (tests/signing/conftest.py) and its e2e test. Nothing
here is a fixed secret: each run makes a fresh token and fresh keys.
"""
from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from flashgate.signing.pkcs11 import DEFAULT_MODULE_PATHS, Pkcs11Config

SKIP_REASON = ("softhsm2-util is not installed (apt-get install softhsm2; hack/setup.sh does it): "
               "the PKCS#11 tests need a SoftHSM2 token")


@dataclass(frozen=True)
class SoftHsm:
    """One initialised token and how to reach it."""

    conf: Path
    module: Path
    token: str
    pin: str

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for a `flashgate` subprocess: config, token and PIN (never argv)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLASHGATE_PKCS11_")}
        env.update(SOFTHSM2_CONF=str(self.conf), FLASHGATE_PKCS11_TOKEN=self.token,
                   FLASHGATE_PKCS11_PIN=self.pin, FLASHGATE_PKCS11_MODULE=str(self.module))
        env.update(extra)
        return env

    def config(self, pin: str | None = None, token: str | None = None) -> Pkcs11Config:
        return Pkcs11Config(self.module, token or self.token, self.pin if pin is None else pin)

    def label(self, prefix: str) -> str:
        """A key label unique in this token."""
        return f"{prefix}-{uuid.uuid4().hex[:8]}"


def init_softhsm(workdir: Path, token: str = "flashgate-test") -> SoftHsm:
    """Initialises a token in `workdir`; skips the calling test when SoftHSM2 is missing."""
    util = shutil.which("softhsm2-util")
    module = next((Path(p) for p in DEFAULT_MODULE_PATHS if Path(p).is_file()), None)
    if util is None or module is None:
        pytest.skip(SKIP_REASON)
    tokens = workdir / "tokens"
    tokens.mkdir(parents=True)
    conf = workdir / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\n"
                    "log.level = ERROR\nslots.removable = false\n")
    pin = secrets.token_hex(6)
    subprocess.run([util, "--init-token", "--free", "--label", token, "--pin", pin,
                    "--so-pin", secrets.token_hex(8)],
                   env={**os.environ, "SOFTHSM2_CONF": str(conf)}, check=True,
                   capture_output=True)
    return SoftHsm(conf=conf, module=module, token=token, pin=pin)


def flashgate(hsm: SoftHsm | None, *args: str, cwd: Path, env: dict[str, str] | None = None,
              timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Runs the station CLI as users do, in a subprocess (`python -m flashgate.signing`)."""
    return subprocess.run([sys.executable, "-m", "flashgate.signing", *args], cwd=cwd,
                          env=env if env is not None else (hsm.env() if hsm else dict(os.environ)),
                          capture_output=True, text=True, timeout=timeout)
