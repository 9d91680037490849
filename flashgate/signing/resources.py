"""The Kubernetes resources the station writes and reads: SigningKey and FirmwareRelease YAML.

Written through the API's pydantic models (`flashgate.api.models`), so what the station writes
is what the API server accepts, and a field it would refuse is caught before anything is signed
(`check_release_fields`, `check_key_fields`). Reading is strict: a malformed document is a
`UsageError` naming the file and the field, never a traceback and never a guess.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from flashgate import api as models
from flashgate.signing.errors import UsageError
from flashgate.signing.files import read_text
from flashgate.trust.payloads import ReleaseManifest
from flashgate.trust.vocabulary import Algorithm, Tier

API_VERSION = models.API_VERSION
SIGNING_KEY = "SigningKey"
FIRMWARE_RELEASE = "FirmwareRelease"
DEFAULT_CHANNEL = models.DEFAULT_CHANNEL

_M = TypeVar("_M", bound=BaseModel)


class _Dumper(yaml.SafeDumper):
    """Writes multi-line strings (PEM public keys) as literal blocks, as people write them."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump_yaml(doc: Mapping[str, Any]) -> str:
    """The document as YAML, keys in the order given (apiVersion, kind, metadata, spec)."""
    return yaml.dump(dict(doc), Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                     allow_unicode=True)


_PLACEHOLDER_ENVELOPE = "AAAA"
_PLACEHOLDER_PEM = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"


def signing_key_doc(*, name: str, fleet: str, tier: Tier, algorithm: Algorithm,
                    public_pem: str, not_before: int, not_after: int, endorsement: bytes,
                    replaces: str | None = None, overlap: str | None = None,
                    activate_at: int | None = None) -> dict[str, Any]:
    """A ready-to-apply SigningKey, built and validated by the API's own model.

    Args:
        endorsement: The root's COSE_Sign1 bytes (written as base64).
        overlap: A duration such as "168h", used only with `replaces` (the API's default then).

    Raises:
        UsageError: A field the API server would refuse, in the words of the API.
    """
    spec = _validated(models.SigningKeySpec, {
        "tier": str(tier),
        "algorithm": str(algorithm),
        "public_key": public_pem,
        "not_before": _utc(not_before),
        "not_after": _utc(not_after),
        "endorsement": base64.b64encode(endorsement).decode("ascii"),
        "replaces": replaces,
        "overlap": overlap if replaces is not None else None,
        "activate_at": None if activate_at is None else _utc(activate_at),
    }, KEY_FLAGS)
    return models.SigningKey(metadata={"name": name, "namespace": fleet}, spec=spec).to_k8s()


def release_doc(*, name: str, manifest: ReleaseManifest, url: str, channel: str,
                signatures: Sequence[bytes], republish: str | None = None) -> dict[str, Any]:
    """A ready-to-apply FirmwareRelease whose spec equals the signed manifest field for field;
    with `republish`, the intent to publish a build that was published before (its reason).

    Raises:
        UsageError: A field the API server would refuse, in the words of the API.
    """
    spec = _validated(models.FirmwareReleaseSpec, _release_fields(
        manifest, url, channel, [base64.b64encode(s).decode("ascii") for s in signatures],
        republish), RELEASE_FLAGS)
    return models.FirmwareRelease(metadata={"name": name, "namespace": manifest.fleet},
                                  spec=spec).to_k8s()


def check_release_fields(manifest: ReleaseManifest, url: str, channel: str,
                         republish: str | None = None) -> None:
    """Checks a release's fields against the API before anything is signed (the signature is
    not made yet: a placeholder stands in for it).

    Raises:
        UsageError: A field the API server would refuse, naming the flag that set it.
    """
    _validated(models.FirmwareReleaseSpec,
               _release_fields(manifest, url, channel, [_PLACEHOLDER_ENVELOPE], republish),
               RELEASE_FLAGS)


def check_key_fields(*, tier: Tier, not_before: int, not_after: int, replaces: str | None,
                     overlap: str | None, activate_at: int | None,
                     algorithm: Algorithm = Algorithm.ED25519,
                     public_pem: str = _PLACEHOLDER_PEM) -> None:
    """Checks a SigningKey's fields against the API before the root signs anything (the key
    itself may not be read from the HSM yet: a placeholder stands in for it).

    Raises:
        UsageError: A field the API server would refuse, naming the flag that set it.
    """
    signing_key_doc(name="check", fleet="check", tier=tier, algorithm=algorithm,
                    public_pem=public_pem, not_before=not_before, not_after=not_after,
                    endorsement=b"\0\0\0", replaces=replaces, overlap=overlap,
                    activate_at=activate_at)


KEY_FLAGS = MappingProxyType({
    "not_before": "--not-before", "not_after": "--not-after / --valid-for",
    "replaces": "--replaces", "overlap": "--overlap", "activate_at": "--activate-at",
    "tier": "--tier", "public_key": "--key"})
RELEASE_FLAGS = MappingProxyType({
    "tier": "--tier", "product": "--product", "version": "--version",
    "security_version": "--security-version", "channel": "--channel", "artifact.url": "--url",
    "artifact.name": "--artifact-name (default: the file's name)",
    "artifact.size": "--artifact (its size)", "republish.reason": "--republish"})


def _release_fields(manifest: ReleaseManifest, url: str, channel: str,
                    signatures: list[str], republish: str | None = None) -> dict[str, Any]:
    return {
        **({"republish": {"reason": republish}} if republish is not None else {}),
        "tier": str(manifest.tier),
        "product": manifest.product,
        "version": manifest.version,
        "security_version": manifest.security_version,
        "channel": channel,
        "artifact": {"url": url, "name": manifest.artifact_name,
                     "sha256": manifest.artifact_sha256.hex(), "size": manifest.artifact_size},
        "signatures": signatures,
    }


def _utc(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def _validated(model: type[_M], fields: dict[str, Any], flags: Mapping[str, str]) -> _M:
    try:
        return model.model_validate({k: v for k, v in fields.items() if v is not None})
    except ValidationError as err:
        raise UsageError("; ".join(_explain(model, e, flags) for e in err.errors()),
                         "nothing was signed") from None


def _explain(model: type[BaseModel], error: Mapping[str, Any], flags: Mapping[str, str]) -> str:
    """One validation error in the API's words: the field's pattern message when it has one."""
    loc = tuple(str(part) for part in error["loc"])
    dotted = ".".join(p for p in loc if not p.isdigit())
    flag = flags.get(dotted, dotted)
    message = str(error["msg"])
    if error.get("type") == "string_pattern_mismatch":
        message = _pattern_message(model, loc) or message
    value = error.get("input")
    shown = f" {value!r}" if isinstance(value, str | int) and not isinstance(value, bool) else ""
    return f"{flag}{shown}: {message}"


def _pattern_message(model: type[BaseModel], loc: Sequence[str]) -> str | None:
    current: Any = model
    info = None
    for part in loc:
        fields = getattr(current, "model_fields", None)
        if fields is None or part not in fields:
            break
        info = fields[part]
        current = info.annotation
    extra = info.json_schema_extra if info is not None else None
    message = extra.get(models.PATTERN_MESSAGE) if isinstance(extra, dict) else None
    return str(message) if message else None


def load_documents(path: Path, flag: str) -> list[dict[str, Any]]:
    """The YAML documents of a file (a `kind: List` is flattened into its items).

    Raises:
        UsageError: Unreadable, not YAML, or a document that is not a mapping.
    """
    text = read_text(path, flag)
    try:
        raw = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as err:
        raise UsageError(f"{flag} {path}: not valid YAML ({_yaml_problem(err)})") from None
    docs: list[dict[str, Any]] = []
    for doc in raw:
        if not isinstance(doc, dict):
            raise UsageError(f"{flag} {path}: a document is a {type(doc).__name__}, expected a "
                             "Kubernetes object")
        if doc.get("kind") == "List" and isinstance(doc.get("items"), list):
            docs.extend(i for i in doc["items"] if isinstance(i, dict))
        else:
            docs.append(doc)
    return docs


def _yaml_problem(err: yaml.YAMLError) -> str:
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or "parse error"
    return f"{problem} at line {mark.line + 1}" if mark is not None else str(problem)


class _Fields:
    """Typed access to a document's fields, each failure naming file and field path."""

    def __init__(self, doc: Mapping[str, Any], where: str) -> None:
        self._doc = doc
        self._where = where

    def get(self, dotted: str, required: bool = True) -> Any:
        value: Any = self._doc
        for part in dotted.split("."):
            if not isinstance(value, Mapping) or part not in value:
                if required:
                    raise self.error(dotted, "is missing")
                return None
            value = value[part]
        return value

    def text(self, dotted: str, required: bool = True) -> str | None:
        value = self.get(dotted, required)
        if value is None and not required:
            return None
        if not isinstance(value, str):
            raise self.error(dotted, f"is {value!r}, expected text")
        return value

    def must_text(self, dotted: str) -> str:
        value = self.text(dotted)
        assert value is not None
        return value

    def uint(self, dotted: str) -> int:
        value = self.get(dotted)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self.error(dotted, f"is {value!r}, expected a non-negative integer")
        return value

    def time(self, dotted: str) -> int:
        value = self.get(dotted)
        if isinstance(value, datetime):  # YAML reads an unquoted RFC 3339 time as a datetime
            parsed = value
        elif isinstance(value, str):
            try:
                parsed = datetime.fromisoformat(value)
            except ValueError:
                raise self.error(dotted, f"is {value!r}, expected an RFC 3339 time") from None
        else:
            raise self.error(dotted, f"is {value!r}, expected an RFC 3339 time")
        if parsed.tzinfo is None:
            raise self.error(dotted, f"is {value!r}, which has no time zone")
        return int(parsed.timestamp())

    def error(self, dotted: str, problem: str) -> UsageError:
        return UsageError(f"{self._where}: {dotted} {problem}")


@dataclass(frozen=True)
class ReleaseFile:
    """A FirmwareRelease read from YAML: the manifest its spec declares, and the rest.

    Attributes:
        doc: The document as read (to write it back with one more signature).
        name: metadata.name.
        manifest: The release manifest the spec declares (fleet = metadata.namespace).
        url: spec.artifact.url.
        channel: spec.channel (default "stable").
        signatures: spec.signatures, base64 text as written.
    """

    doc: dict[str, Any]
    name: str
    manifest: ReleaseManifest
    url: str
    channel: str
    signatures: tuple[str, ...]


def load_release(path: Path, flag: str) -> ReleaseFile:
    """The one FirmwareRelease in `path`.

    Raises:
        UsageError: Not exactly one FirmwareRelease, or a field missing or of the wrong type.
    """
    docs = [d for d in load_documents(path, flag) if d.get("kind") == FIRMWARE_RELEASE]
    if len(docs) != 1:
        raise UsageError(f"{flag} {path}: expected one FirmwareRelease, found {len(docs)}")
    doc = docs[0]
    f = _Fields(doc, f"{flag} {path}")
    if doc.get("apiVersion") != API_VERSION:
        raise f.error("apiVersion", f"is {doc.get('apiVersion')!r}, expected {API_VERSION!r}")
    tier = f.must_text("spec.tier")
    if tier not in set(Tier):
        raise f.error("spec.tier", f"is {tier!r}, expected one of {', '.join(Tier)}")
    digest_hex = f.must_text("spec.artifact.sha256")
    try:
        digest = bytes.fromhex(digest_hex)
    except ValueError:
        digest = b""
    if len(digest) != 32 or digest_hex != digest.hex():
        raise f.error("spec.artifact.sha256", "is not 64 lowercase hex digits")
    signatures = f.get("spec.signatures", required=False) or []
    if not isinstance(signatures, list) or not all(isinstance(s, str) for s in signatures):
        raise f.error("spec.signatures", "is not a list of base64 texts")
    manifest = ReleaseManifest(
        fleet=f.must_text("metadata.namespace"),
        product=f.must_text("spec.product"),
        tier=Tier(tier),
        version=f.must_text("spec.version"),
        security_version=f.uint("spec.securityVersion"),
        artifact_name=f.must_text("spec.artifact.name"),
        artifact_size=f.uint("spec.artifact.size"),
        artifact_sha256=digest,
    )
    return ReleaseFile(doc=doc, name=f.must_text("metadata.name"), manifest=manifest,
                       url=f.must_text("spec.artifact.url"),
                       channel=f.text("spec.channel", required=False) or DEFAULT_CHANNEL,
                       signatures=tuple(signatures))


@dataclass(frozen=True)
class SigningKeyFile:
    """A SigningKey read from YAML (from `endorse -o`, or `kubectl get signingkey -o yaml`).

    Attributes:
        where: "file: name", for messages.
        name: metadata.name.
        fleet: metadata.namespace.
        tier, algorithm, public_pem, not_before, not_after: What the spec declares.
        endorsement: The root's COSE_Sign1 bytes.
        revoked: spec.revoked.
        spec: The spec as read (for the verifier's own model).
    """

    where: str
    name: str
    fleet: str
    tier: str
    algorithm: str
    public_pem: str
    not_before: int
    not_after: int
    endorsement: bytes
    revoked: bool
    spec: Mapping[str, Any]


def load_signing_keys(paths: Iterable[Path], flag: str) -> list[SigningKeyFile]:
    """Every SigningKey in the given files and directories (*.yaml, *.yml; other kinds skipped).

    Raises:
        UsageError: A path that does not exist, bad YAML, or a malformed SigningKey.
    """
    keys: list[SigningKeyFile] = []
    for path in paths:
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml"))
        else:
            files = [path]
        for file in files:
            for doc in load_documents(file, flag):
                if doc.get("kind") == SIGNING_KEY:
                    keys.append(_signing_key(doc, f"{flag} {file}"))
    return keys


def _signing_key(doc: Mapping[str, Any], where: str) -> SigningKeyFile:
    f = _Fields(doc, where)
    name = f.must_text("metadata.name")
    f = _Fields(doc, f"{where} (SigningKey {name})")
    try:
        endorsement = base64.b64decode(f.must_text("spec.endorsement"), validate=True)
    except (binascii.Error, ValueError):
        raise f.error("spec.endorsement", "is not base64") from None
    revoked = f.get("spec.revoked", required=False)
    if revoked is not None and not isinstance(revoked, bool):
        raise f.error("spec.revoked", f"is {revoked!r}, expected true or false")
    return SigningKeyFile(
        where=f"{where}: {name}",
        name=name,
        fleet=f.must_text("metadata.namespace"),
        tier=f.must_text("spec.tier"),
        algorithm=f.must_text("spec.algorithm"),
        public_pem=f.must_text("spec.publicKey"),
        not_before=f.time("spec.notBefore"),
        not_after=f.time("spec.notAfter"),
        endorsement=endorsement,
        revoked=bool(revoked),
        spec=doc["spec"],
    )
