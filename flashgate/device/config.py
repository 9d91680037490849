"""The reference device agent's configuration: what a real device has in ROM and in its
provisioning (fleet root, identity, certificate), and its own policy. Read once at start-up.

    fleet: gw-fleet-1              # the fleet (namespace) it belongs to
    device: dev-0001               # its id: the one its certificate names
    product: gw-3000               # hardware class: a release must be signed for it
    channel: stable
    tiers: [application, os]       # the tiers it has A/B slots for
    roots:                         # the fleet root(s) pinned in ROM
      - publicKey: |
          -----BEGIN PUBLIC KEY-----
          ...
        algorithm: ed25519
    thresholds: {bootloader: 2}    # its own policy: distinct keys per tier (default 1)
    maxSecurityVersionJump: 100    # and how far above its counter a release may be
    delivery:
      url: https://delivery.example.com:8443
      caFile: /etc/flashgate-device/delivery-ca.pem   # pinned: the delivery service's CA
      certFile: /etc/flashgate-device/device.crt      # its certificate from the fleet's device CA
      keyFile: /etc/flashgate-device/device.key
      timeoutSeconds: 30           # per request to the delivery service
    artifacts:
      caFile: null                 # extra CA for artifact hosts, besides the system CAs
      allowedHosts: []             # hosts exempt from the private-address denial (tests: localhost)
      maxImageBytes: 67108864      # the size of a slot: a larger signed size is refused unread
      connectTimeoutSeconds: 30
      readTimeoutSeconds: 60
      totalTimeoutSeconds: 3600
      minBytesPerSecond: 1024      # from the first byte, after minRateGraceSeconds; 0: no check
      minRateGraceSeconds: 30
      attempts: 2                  # downloads of one release per poll (each with a fresh URL)
    stateDir: /var/lib/flashgate-device   # trust store, counters, slots, staging
    pollSeconds: 86400

Thresholds and the jump are the device's, not the fleet's: nothing it is served changes them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from flashgate.configfile import ConfigError as ConfigError  # raised by load_settings
from flashgate.configfile import load, validate
from flashgate.delivery.identity import DEVICE, FLEET
from flashgate.trust import KeyRecord, Policy, Tier
from flashgate.verifier_sidecar.config import RootKey, root_record
from flashgate.verifier_sidecar.fetch import FetchLimits, URLPolicy


def _whole(pattern: re.Pattern[str]) -> str:
    return f"^(?:{pattern.pattern})$"


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid",
                              frozen=True)


class DeliverySection(_Model):
    url: AnyHttpUrl = Field(description="the delivery service, https://")
    ca_file: Path = Field(description="the delivery service's CA certificate (pinned)")
    cert_file: Path = Field(description="the device's certificate (PEM)")
    key_file: Path = Field(description="the device's private key (PEM)")
    timeout_seconds: float = Field(default=30.0, gt=0)

    @field_validator("url")
    @classmethod
    def _https(cls, value: AnyHttpUrl) -> AnyHttpUrl:
        if value.scheme != "https":
            raise ValueError("the delivery service is reached over https only")
        return value


class ArtifactsSection(_Model):
    ca_file: Path | None = None
    allowed_hosts: list[str] = Field(default_factory=list)
    max_image_bytes: int = Field(default=64 << 20, ge=1)
    connect_timeout_seconds: float = Field(default=30.0, gt=0)
    read_timeout_seconds: float = Field(default=60.0, gt=0)
    total_timeout_seconds: float = Field(default=3600.0, gt=0)
    min_bytes_per_second: int = Field(default=1024, ge=0)
    min_rate_grace_seconds: float = Field(default=30.0, ge=0)
    attempts: int = Field(default=2, ge=1, le=10)


class DeviceConfig(_Model):
    fleet: str = Field(pattern=_whole(FLEET))
    device: str = Field(pattern=_whole(DEVICE))
    product: str = Field(pattern=_whole(FLEET))
    channel: str = Field(pattern=_whole(FLEET))
    tiers: list[Tier] = Field(min_length=1)
    roots: list[RootKey] = Field(min_length=1)
    thresholds: dict[Tier, Annotated[int, Field(ge=1)]] = Field(default_factory=dict)
    max_security_version_jump: int = Field(default=100, ge=0)
    delivery: DeliverySection
    artifacts: ArtifactsSection = Field(default_factory=ArtifactsSection)
    state_dir: Path
    poll_seconds: float = Field(default=86400.0, gt=0)

    @field_validator("tiers")
    @classmethod
    def _distinct(cls, value: list[Tier]) -> list[Tier]:
        if len(set(value)) != len(value):
            raise ValueError("each tier once")
        return value


@dataclass(frozen=True)
class Settings:
    """What the agent runs with: the validated file plus the loaded roots."""

    config: DeviceConfig
    roots: tuple[KeyRecord, ...]

    @property
    def policy(self) -> Policy:
        return Policy(thresholds=dict(self.config.thresholds),
                      max_security_version_jump=self.config.max_security_version_jump)

    @property
    def url_policy(self) -> URLPolicy:
        return URLPolicy.make(allowed_hosts=self.config.artifacts.allowed_hosts)

    @property
    def limits(self) -> FetchLimits:
        a = self.config.artifacts
        return FetchLimits(connect_timeout=a.connect_timeout_seconds,
                           headers_timeout=a.read_timeout_seconds,
                           read_timeout=a.read_timeout_seconds,
                           total_timeout=a.total_timeout_seconds,
                           min_bytes_per_second=a.min_bytes_per_second,
                           min_rate_grace_seconds=a.min_rate_grace_seconds,
                           max_artifact_bytes=a.max_image_bytes)


def settings_from(data: object) -> Settings:
    """Validate an already parsed document. Raises ConfigError."""
    config = validate(DeviceConfig, data)
    roots = tuple(root_record(r.public_key, r.algorithm, f"roots[{i}]")
                  for i, r in enumerate(config.roots))
    for where, path in (("delivery.caFile", config.delivery.ca_file),
                        ("delivery.certFile", config.delivery.cert_file),
                        ("delivery.keyFile", config.delivery.key_file),
                        ("artifacts.caFile", config.artifacts.ca_file)):
        if path is not None and not path.is_file():
            raise ConfigError(f"{where}: {path} is not a file")
    return Settings(config=config, roots=roots)


def load_settings(path: Path) -> Settings:
    """Read, parse (YAML, or JSON) and validate. Raises ConfigError."""
    return load(path, settings_from)
