"""The delivery service's configuration: each mistake refused at start-up with where it is, and
the process exits 2."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from flashgate.delivery.config import ConfigError, load_settings, settings_from
from flashgate.delivery.server import main

from .conftest import Pki


def test_a_valid_configuration(pki: Pki) -> None:
    settings = settings_from(pki.config())
    assert set(settings.fleet_cas) == {"fleet-a", "fleet-b"}
    assert settings.config.presign_ttl_seconds == 900


@pytest.mark.parametrize(("change", "message"), [
    (lambda c, d: c.update(fleets={}), "fleets"),
    (lambda c, d: c["fleets"].update({"Fleet_B": c["fleets"]["fleet-a"]}), "DNS labels"),
    (lambda c, d: c["fleets"]["fleet-a"].update(deviceCAFiles=[]), "deviceCAFiles"),
    (lambda c, d: c["fleets"]["fleet-a"].update(deviceCAFiles=[str(d / "absent.pem")]),
     "cannot read"),
    (lambda c, d: c["fleets"]["fleet-a"].update(deviceCAFiles=[c["tls"]["keyFile"]]),
     "holds no PEM certificates"),
    (lambda c, d: c["fleets"]["fleet-a"].update(deviceCAFiles=[c["tls"]["certFile"]]),
     "is not a CA certificate"),
    (lambda c, d: c["tls"].update(keyFile=str(d / "absent.key")), "is not a file"),
    (lambda c, d: c.update(s3={"endpoint": "http://s3.example.com"}), "endpoint must be https"),
    (lambda c, d: c.update(maxTrackedDevices=0), "maxTrackedDevices"),
    (lambda c, d: c.update(listen="0.0.0.0:1"), "listen"),
])
def test_a_bad_configuration_says_where(pki: Pki, tmp_path: Path, change: Any,
                                        message: str) -> None:
    config = pki.config()
    change(config, tmp_path)
    with pytest.raises(ConfigError, match=message):
        settings_from(config)


def test_the_process_exits_2_on_a_bad_configuration(pki: Pki, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "delivery.yaml"
    path.write_text(yaml.safe_dump({**pki.config(), "presignTTLSeconds": 7200}))
    assert main(["--config", str(path)]) == 2
    assert "presignTTLSeconds" in capsys.readouterr().err
    path.write_text("fleets: [")
    with pytest.raises(ConfigError, match="not valid yaml"):
        load_settings(path)
    assert main(["--config", str(path), "--listen", "nowhere"]) == 2
