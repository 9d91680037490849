"""The sidecar's own configuration: fleet roots, policy and fetch limits, read once at start-up.

Thresholds and the maximum securityVersion jump are the sidecar's policy, not the operator's: a
compromised operator must not be able to lower a bootloader threshold, so they are read from this
read-only file (a ConfigMap mounted into the sidecar container) and never from a request.

    roots:                       # or rootFiles: [{path: /etc/flashgate/root.pem, algorithm: ...}]
      - publicKey: |
          -----BEGIN PUBLIC KEY-----
          ...
        algorithm: ed25519       # or ecdsa-p256-sha256
    thresholds: {bootloader: 2}  # distinct keys per tier; tiers not listed need 1
    maxSecurityVersionJump: 100
    connectTimeoutSeconds: 10
    headersTimeoutSeconds: 30    # until a response's headers are complete
    readTimeoutSeconds: 30
    totalTimeoutSeconds: 600
    minBytesPerSecond: 65536     # from the first byte, after minRateGraceSeconds; 0: no check
    minRateGraceSeconds: 10
    maxArtifactBytes: 8589934592
    maxConcurrentFetches: 4      # downloads at once, all fleets
    maxConcurrentFetchesPerFleet: 2  # at once for one fleet (default: half, at least 1); free
                                 # slots go to the waiting fleets in turn
    allowFileURLs: false         # demos and tests only; then fileRoot is required
    fileRoot: /srv/artifacts
    artifactURLPrefixes:         # when set, artifact URLs must lie under one of these (all fleets)
      - https://fw.example.com/firmware/
    fleets:                      # per fleet (namespace); a fleet's own list replaces the default
      gw-1: {artifactURLPrefixes: [s3://gw-1-firmware/]}
    allowedHosts: []             # host names or IPs exempt from the private-address denial
    allowedNetworks: []          # CIDRs exempt from it
    caFile: /etc/flashgate/ca.pem  # extra CAs for https, besides the system ones
    s3:                          # for s3://bucket/key URLs; without it they are unavailable
      endpoint: https://s3.eu-west-1.amazonaws.com  # a private one must be allow-listed
      region: eu-west-1
      addressingStyle: path      # or virtual (bucket.endpoint)
      accessKeyIdFile: /var/run/secrets/flashgate-s3/access-key-id  # else AWS_* env vars
      secretAccessKeyFile: /var/run/secrets/flashgate-s3/secret-access-key
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyNetwork,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from flashgate.configfile import ConfigError as ConfigError  # raised by load_settings
from flashgate.configfile import load, validate
from flashgate.s3 import S3Section, S3Settings
from flashgate.trust import Algorithm, KeyRecord, Policy, Tier, TrustError, spki_from_pem
from flashgate.trust.keyring import root_key
from flashgate.verifier_sidecar.fetch import FetchLimits, URLPolicy
from flashgate.verifier_sidecar.slots import default_share
from flashgate.verifier_sidecar.urlpolicy import ArtifactPrefixes, URLPrefix


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid",
                              frozen=True)


class RootKey(_Model):
    public_key: str = Field(description="PEM SubjectPublicKeyInfo of a fleet root")
    algorithm: Algorithm


class RootFile(_Model):
    path: Path = Field(description="a PEM public key file of a fleet root")
    algorithm: Algorithm


def _prefixes(value: list[str] | None) -> list[str] | None:
    for text in value or ():
        URLPrefix.parse(text)  # ValueError says which and why
    return value


class FleetSection(_Model):
    """What differs for one fleet (namespace)."""

    artifact_url_prefixes: list[str] | None = Field(
        default=None, alias="artifactURLPrefixes",
        description="this fleet's allowed artifact locations; replaces the default list")

    _check_prefixes = field_validator("artifact_url_prefixes")(_prefixes)


class SidecarConfig(_Model):
    """The file's schema; field names are camelCase in the file."""

    roots: list[RootKey] = Field(default_factory=list)
    root_files: list[RootFile] = Field(default_factory=list)
    thresholds: dict[Tier, int] = Field(
        default_factory=dict,  # the schema says what _thresholds checks (the chart's schema)
        json_schema_extra={"additionalProperties": {"type": "integer", "minimum": 1}})
    max_security_version_jump: int = Field(default=100, ge=0)
    connect_timeout_seconds: float = Field(default=10.0, gt=0)
    headers_timeout_seconds: float = Field(default=30.0, gt=0)
    read_timeout_seconds: float = Field(default=30.0, gt=0)
    total_timeout_seconds: float = Field(default=600.0, gt=0)
    min_bytes_per_second: int = Field(default=64 * 1024, ge=0)
    min_rate_grace_seconds: float = Field(default=10.0, ge=0)
    max_artifact_bytes: int = Field(default=8 << 30, ge=1)
    max_concurrent_fetches: int = Field(default=4, ge=1, le=256)
    max_concurrent_fetches_per_fleet: int | None = Field(default=None, ge=1, le=256)
    allow_file_urls: bool = Field(default=False, alias="allowFileURLs")
    file_root: Path | None = None
    artifact_url_prefixes: list[str] | None = Field(
        default=None, alias="artifactURLPrefixes",
        description="when set, every artifact URL must lie under one of these")
    fleets: dict[str, FleetSection] = Field(default_factory=dict)
    allowed_hosts: list[str] = Field(default_factory=list)
    allowed_networks: list[IPvAnyNetwork] = Field(default_factory=list)
    ca_file: Path | None = None
    s3: S3Section | None = None

    _check_prefixes = field_validator("artifact_url_prefixes")(_prefixes)

    @field_validator("thresholds")
    @classmethod
    def _thresholds(cls, value: dict[Tier, int]) -> dict[Tier, int]:
        bad = {str(t): k for t, k in value.items() if k < 1}
        if bad:
            raise ValueError(f"thresholds must be at least 1, got {bad}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SidecarConfig:
        if not self.roots and not self.root_files:
            raise ValueError("no fleet root configured: set roots or rootFiles")
        if self.allow_file_urls and self.file_root is None:
            raise ValueError("allowFileURLs needs fileRoot (the directory file:// URLs must "
                             "resolve inside)")
        if self.file_root is not None and not self.file_root.is_dir():
            raise ValueError(f"fileRoot {self.file_root} is not a directory")
        if self.ca_file is not None and not self.ca_file.is_file():
            raise ValueError(f"caFile {self.ca_file} is not a file")
        per_fleet = self.max_concurrent_fetches_per_fleet
        if per_fleet is not None and per_fleet > self.max_concurrent_fetches:
            raise ValueError(f"maxConcurrentFetchesPerFleet ({per_fleet}) cannot exceed "
                             f"maxConcurrentFetches ({self.max_concurrent_fetches})")
        return self

    @property
    def fetches_per_fleet(self) -> int:
        """maxConcurrentFetchesPerFleet, or half of maxConcurrentFetches (at least 1)."""
        return self.max_concurrent_fetches_per_fleet or default_share(self.max_concurrent_fetches)


@dataclass(frozen=True)
class Settings:
    """What the sidecar runs with: the validated file plus the loaded roots."""

    config: SidecarConfig
    roots: tuple[KeyRecord, ...]

    @property
    def policy(self) -> Policy:
        return Policy(thresholds=dict(self.config.thresholds),
                      max_security_version_jump=self.config.max_security_version_jump)

    @property
    def url_policy(self) -> URLPolicy:
        c = self.config
        return URLPolicy.make(allow_file=c.allow_file_urls, file_root=c.file_root,
                              allowed_hosts=c.allowed_hosts,
                              allowed_networks=[str(n) for n in c.allowed_networks])

    @property
    def artifact_prefixes(self) -> ArtifactPrefixes:
        c = self.config
        return ArtifactPrefixes.make(c.artifact_url_prefixes, {
            fleet: section.artifact_url_prefixes for fleet, section in c.fleets.items()})

    @property
    def s3(self) -> S3Settings | None:
        return self.config.s3.settings() if self.config.s3 is not None else None

    @property
    def limits(self) -> FetchLimits:
        c = self.config
        return FetchLimits(connect_timeout=c.connect_timeout_seconds,
                           headers_timeout=c.headers_timeout_seconds,
                           read_timeout=c.read_timeout_seconds,
                           total_timeout=c.total_timeout_seconds,
                           min_bytes_per_second=c.min_bytes_per_second,
                           min_rate_grace_seconds=c.min_rate_grace_seconds,
                           max_artifact_bytes=c.max_artifact_bytes)


def root_record(pem: str, algorithm: Algorithm, where: str) -> KeyRecord:
    """A fleet root as a KeyRecord of tier "root", valid for as long as it is configured."""
    try:
        return root_key(spki_from_pem(pem), algorithm, name=f"root {where}")
    except TrustError as exc:
        raise ConfigError(f"{where}: {exc.message}") from None


def settings_from(data: object) -> Settings:
    """Validate an already parsed document. Raises ConfigError."""
    config = validate(SidecarConfig, data)
    roots = [root_record(r.public_key, r.algorithm, f"roots[{i}]")
             for i, r in enumerate(config.roots)]
    for i, f in enumerate(config.root_files):
        try:
            pem = f.path.read_text(encoding="ascii")
        except (OSError, UnicodeError) as exc:
            raise ConfigError(f"rootFiles[{i}]: cannot read {f.path}: {exc}") from None
        roots.append(root_record(pem, f.algorithm, f"rootFiles[{i}] {f.path}"))
    return Settings(config=config, roots=tuple(roots))


def load_settings(path: Path) -> Settings:
    """Read, parse (YAML, or JSON which YAML reads too) and validate. Raises ConfigError."""
    return load(path, settings_from)
