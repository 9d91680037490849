"""The delivery service's configuration file (YAML or JSON), read once at start-up.

    fleets:                        # the fleets (namespaces) served; nothing else is watched
      gw-fleet-1:
        deviceCAFiles:             # PEM CA certificates that issue this fleet's device
          - /etc/flashgate-delivery/device-ca/gw-fleet-1.pem   # certificates (directly)
    tls:                           # the service's own certificate (devices pin its CA)
      certFile: /etc/flashgate-delivery/tls/tls.crt
      keyFile: /etc/flashgate-delivery/tls/tls.key
    presignTTLSeconds: 900         # presigned artifact URLs live this long (1 to 3600)
    s3:                            # for s3:// artifacts; read-only credentials, see below
      endpoint: https://s3.eu-west-1.amazonaws.com
      region: eu-west-1
      addressingStyle: path        # or virtual
      accessKeyIdFile: /var/run/secrets/flashgate-delivery-s3/access-key-id
      secretAccessKeyFile: /var/run/secrets/flashgate-delivery-s3/secret-access-key
    maxTrackedDevices: 100000      # devices whose last status is remembered (per replica)
    maxReleaseRows: 1000           # rows of the release table (GET /v1/releases)

The S3 credentials need s3:GetObject on the artifact objects and nothing else: a presigned URL
can do no more than the credentials that signed it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from flashgate.configfile import ConfigError as ConfigError  # raised by load_settings
from flashgate.configfile import load, validate
from flashgate.delivery.identity import FLEET
from flashgate.delivery.links import DEFAULT_TTL, MAX_TTL
from flashgate.delivery.status import DEFAULT_MAX_DEVICES, DEFAULT_MAX_RELEASES
from flashgate.s3 import S3Section


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid",
                              frozen=True)


class FleetSection(_Model):
    device_ca_files: list[Path] = Field(
        alias="deviceCAFiles", min_length=1,
        description="PEM files of the CA certificates that issue this fleet's device "
                    "certificates")


class TLSSection(_Model):
    cert_file: Path
    key_file: Path


class DeliveryConfig(_Model):
    fleets: dict[str, FleetSection] = Field(min_length=1)
    tls: TLSSection
    presign_ttl_seconds: int = Field(default=DEFAULT_TTL, ge=1, le=MAX_TTL,
                                     alias="presignTTLSeconds")
    s3: S3Section | None = None
    max_tracked_devices: int = Field(default=DEFAULT_MAX_DEVICES, ge=1, le=10_000_000)
    max_release_rows: int = Field(default=DEFAULT_MAX_RELEASES, ge=1, le=100_000)

    @field_validator("fleets")
    @classmethod
    def _fleet_names(cls, value: dict[str, FleetSection]) -> dict[str, FleetSection]:
        bad = [name for name in value if not FLEET.fullmatch(name)]
        if bad:
            raise ValueError(f"fleet names are namespaces (DNS labels): {bad}")
        return value


@dataclass(frozen=True)
class Settings:
    config: DeliveryConfig
    fleet_cas: dict[str, list[x509.Certificate]]  # fleet -> its device CAs, loaded

    @property
    def ca_files(self) -> list[Path]:
        return sorted({p for f in self.config.fleets.values() for p in f.device_ca_files})


def _load_cas(path: Path, where: str) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {path}: {exc}") from None
    except ValueError as exc:
        raise ConfigError(f"{where}: {path} holds no PEM certificates: {exc}") from None
    for cert in certs:
        try:
            is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if not is_ca:
            raise ConfigError(f"{where}: {path}: {cert.subject.rfc4514_string()} is not a CA "
                              "certificate (basicConstraints CA:TRUE)")
    return certs


def settings_from(data: object) -> Settings:
    """Validate an already parsed document. Raises ConfigError."""
    config = validate(DeliveryConfig, data)
    cas = {fleet: [ca for i, path in enumerate(section.device_ca_files)
                   for ca in _load_cas(path, f"fleets.{fleet}.deviceCAFiles[{i}]")]
           for fleet, section in config.fleets.items()}
    for path in (config.tls.cert_file, config.tls.key_file):
        if not path.is_file():
            raise ConfigError(f"tls: {path} is not a file")
    return Settings(config=config, fleet_cas=cas)


def load_settings(path: Path) -> Settings:
    """Read, parse (YAML, or JSON) and validate. Raises ConfigError."""
    return load(path, settings_from)
