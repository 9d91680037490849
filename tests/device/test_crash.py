"""A power cut at any step of an install: the agent runs as its own process and is killed there
(FLASHGATE_FAILPOINTS: it exits at once, as under kill -9, nothing flushed or cleaned up), and
once with a real SIGKILL in the middle of a download. Afterwards the active slot verifies, the
counter is unchanged or correctly raised (never ahead of the image that runs), and the next
start finishes the install exactly once."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hostile import Trickle

from flashgate.device.agent import CRASH_POINTS
from flashgate.signing.filekeys import generate
from flashgate.trust import Algorithm

from .conftest import World

OLD, NEW = os.urandom(30_000), os.urandom(40_000)
KILLED = 137


def run_agent(config: Path, failpoint: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FLASHGATE_FAILPOINTS": failpoint or ""}
    return subprocess.run([sys.executable, "-m", "flashgate.device", "--config", str(config),
                           "--cycles", "1"], env=env, capture_output=True, text=True,
                          timeout=60)


def state(directory: Path) -> dict[str, Any]:
    """What the device's files say: the boot control block, each slot's image, the counter."""
    tier = directory / "application"
    control = json.loads((tier / "boot.json").read_text())
    images = {slot: (tier / f"slot-{slot}.img").read_bytes() for slot in ("a", "b")}
    return {"control": control, "images": images,
            "counter": int((tier / "counter").read_text()),
            "staging": sorted(p.name for p in (directory / "staging").iterdir())}


def active_release(s: dict[str, Any]) -> str | None:
    """The release the active slot runs, after checking that it verifies (it boots) and that
    no slot is described as holding what it does not hold (a half-written one is not)."""
    for slot, described in s["control"]["slots"].items():
        if described is not None:
            image = s["images"][slot]
            assert len(image) == described["size"], f"slot {slot} holds what it says"
            assert hashlib.sha256(image).hexdigest() == described["image_sha256"], slot
    described = s["control"]["slots"][s["control"]["active"]]
    assert described is not None, "the active slot is described, and verifies: it boots"
    release: str | None = described["release"]
    return release


@pytest.fixture
def installed_old(world: World) -> tuple[World, Path]:
    """A device running app-1 (securityVersion 2), and app-2 (3) published."""
    app = generate(Algorithm.ED25519)
    world.publish_bundle([world.endorse(app)])
    world.publish_release("app-1", OLD, [app], security_version=2)
    config = world.write_config("dev-crash")
    assert run_agent(config).returncode == 0
    world.publish_release("app-2", NEW, [app], security_version=3)
    return world, config


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_a_power_cut_at_each_step_of_an_install(installed_old: tuple[World, Path],
                                                point: str) -> None:
    world, config = installed_old
    directory = Path(world.config("dev-crash")["stateDir"])
    before = state(directory)
    assert (active_release(before), before["counter"]) == ("app-1", 2)

    killed = run_agent(config, point)
    assert killed.returncode == KILLED, killed.stderr[-2000:]
    assert f"failpoint {point}" in killed.stderr
    after = state(directory)
    confirmed = CRASH_POINTS.index(point) >= CRASH_POINTS.index("after-confirm")
    assert active_release(after) == ("app-2" if confirmed else "app-1")
    raised = point == "after-counter"
    assert after["counter"] == (3 if raised else 2), "unchanged, or raised with the image"
    old_slot = before["control"]["active"]
    assert after["images"][old_slot] == OLD, "the old image is untouched until it is replaced"

    restarted = run_agent(config)
    assert restarted.returncode == 0, restarted.stderr[-2000:]
    final = state(directory)
    assert (active_release(final), final["counter"]) == ("app-2", 3)
    assert final["control"]["pending"] is None and final["staging"] == []
    assert final["images"][final["control"]["active"]] == NEW
    # Exactly once: a restart after the switch finishes the install at boot; it does not
    # download or write again. Before the switch, the install starts over.
    switched = CRASH_POINTS.index(point) >= CRASH_POINTS.index("after-switch")
    wrote_again = "installed app-2" in restarted.stderr
    assert wrote_again is not switched, restarted.stderr[-2000:]
    if switched and not confirmed:
        assert "confirmed slot" in restarted.stderr
    reported = world.delivery.service.book.devices[("fleet-a", "dev-crash")]
    assert ("application", "app-2") in reported[0]


def test_a_sigkill_in_the_middle_of_a_download(installed_old: tuple[World, Path]) -> None:
    world, config = installed_old
    directory = Path(world.config("dev-crash")["stateDir"])
    world.host.artifacts["app-2"] = [Trickle(NEW[:1000], every=0.2, seconds=30), NEW]
    env = {**os.environ, "FLASHGATE_FAILPOINTS": ""}
    process = subprocess.Popen([sys.executable, "-m", "flashgate.device", "--config",
                                str(config), "--cycles", "1"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    staging = directory / "staging" / "application.part"
    deadline = time.monotonic() + 30
    while not (staging.exists() and staging.stat().st_size > 0):
        assert time.monotonic() < deadline and process.poll() is None, "no download began"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    assert process.wait(10) == -signal.SIGKILL
    assert process.stderr is not None
    process.stderr.close()
    killed = state(directory)
    assert (active_release(killed), killed["counter"]) == ("app-1", 2)
    assert killed["control"]["slots"][killed["control"]["active"]]["release"] == "app-1"
    restarted = run_agent(config)
    assert restarted.returncode == 0, restarted.stderr[-2000:]
    assert "staging area emptied" in restarted.stderr
    final = state(directory)
    assert (active_release(final), final["counter"]) == ("app-2", 3)
