"""The device agent's configuration: each mistake refused with where it is, and the command line
exits 2 for it."""
from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from flashgate.device.config import ConfigError, settings_from
from flashgate.trust import Tier

from ..delivery.conftest import Pki
from .conftest import World, running_world


@pytest.fixture(scope="module")
def world(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One for the module: configurations are only validated here."""
    with running_world(pki, tmp_path_factory.mktemp("config")) as made:
        yield made


def test_a_good_configuration(world: World) -> None:
    settings = settings_from(world.config("dev-1", thresholds={"bootloader": 2}))
    assert settings.policy.threshold(Tier.BOOTLOADER) == 2
    assert settings.policy.threshold(Tier.OS) == 1
    assert [r.key_id for r in settings.roots] == [world.root.key_id]
    assert settings.limits.max_artifact_bytes == 1 << 20


@pytest.mark.parametrize(("change", "says"), [
    ({"fleet": "Fleet_A"}, "fleet"),
    ({"device": "-dev"}, "device"),
    ({"tiers": []}, "tiers"),
    ({"tiers": ["application", "application"]}, "each tier once"),
    ({"tiers": ["firmware"]}, "tiers.0"),
    ({"roots": []}, "roots"),
    ({"roots": [{"publicKey": "not a key", "algorithm": "ed25519"}]}, "roots[0]"),
    ({"thresholds": {"os": 0}}, "thresholds.os"),
    ({"maxSecurityVersionJump": -1}, "maxSecurityVersionJump"),
    ({"delivery": {"url": "http://127.0.0.1:1"}}, "https only"),
    ({"delivery": {"certFile": "/nonexistent/device.crt"}}, "delivery.certFile"),
    ({"artifacts": {"maxImageBytes": 0}}, "artifacts.maxImageBytes"),
    ({"pollSeconds": 0}, "pollSeconds"),
    ({"colour": "blue"}, "colour"),
])
def test_a_mistake_is_refused_saying_where(world: World, change: dict[str, Any],
                                           says: str) -> None:
    config = world.config("dev-1")
    for key, value in change.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) and key in config \
            else value
    with pytest.raises(ConfigError) as refused:
        settings_from(config)
    assert says in str(refused.value), str(refused.value)


def test_the_command_line_exits_2_for_a_bad_configuration(world: World, tmp_path: Path) -> None:
    config = world.config("dev-1")
    config["roots"] = []
    path = tmp_path / "device.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run([sys.executable, "-m", "flashgate.device", "--config", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "roots" in result.stderr, result.stderr
    assert not Path(config["stateDir"]).exists(), "nothing is written for a bad configuration"
