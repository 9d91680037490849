"""The signing station's rules, apart from its command line: which key is in hand and what it may
sign, what a key file holds, what a new or co-signed release is, what an endorsement and a
revocation name, and what `verify` is given. `flashgate.signing.cli` parses flags and calls these;
every function here validates before anything is signed and raises `UsageError` (the command
cannot run as given) or `StationError` (a trust, token or HSM failure), never a traceback.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from pydantic import BaseModel, ValidationError

from flashgate.api import DEFAULT_OVERLAP, SigningKeySpec
from flashgate.api.schema import problems
from flashgate.signing import devfile
from flashgate.signing.errors import StationError, UsageError
from flashgate.signing.files import read_text
from flashgate.signing.inputs import (
    TIERS,
    check_fleet,
    check_name,
    default_release_name,
    parse_duration,
    parse_time,
)
from flashgate.signing.resources import (
    DEFAULT_CHANNEL,
    ReleaseFile,
    SigningKeyFile,
    check_key_fields,
    load_signing_keys,
)
from flashgate.trust import cose
from flashgate.trust.durations import format_duration
from flashgate.trust.fleet import FleetKey
from flashgate.trust.keyring import ROOT, KeyRecord, root_key
from flashgate.trust.keys import key_id as compute_key_id
from flashgate.trust.keys import spki_from_pem
from flashgate.trust.payloads import ReleaseManifest
from flashgate.trust.vocabulary import Algorithm, Tier, TrustError

if TYPE_CHECKING:
    from flashgate.signing.pkcs11 import HsmKey, Pkcs11Token

_S = TypeVar("_S", bound=BaseModel)
Warn = Callable[[str], None]


def a_or_an(word: str) -> str:
    """"an application", "a bootloader": for messages."""
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"


# --- keys in hand ------------------------------------------------------------------------------


@dataclass(frozen=True)
class HsmChoice:
    """Which HSM to open, as the flags say (None: the environment's default)."""

    module: str | None = None
    token: str | None = None
    pin_env: str | None = None


@dataclass(frozen=True)
class KeyInHand:
    """A signing key in hand: the signer, its recorded tier, how messages name it, and the open
    token it lives in (None for a file key), for finding other keys in the same login."""

    signer: cose.Signer
    tier: str | None
    spki: bytes
    name: str
    token: Pkcs11Token | None = None


@contextlib.contextmanager
def open_key(hsm: HsmChoice, label: str | None, dev_file: Path | None, warn: Warn,
             flag: str = "--dev-file") -> Iterator[KeyInHand]:
    """The key named by an HSM label or a development file, open for signing."""
    if dev_file is not None:
        key = devfile.load_dev_key(dev_file, flag)
        warn(f"warning: signing with development file key {dev_file}: not for production")
        yield KeyInHand(key.signer, key.tier, key.signer.spki_der, str(dev_file))
        return
    assert label is not None
    from flashgate.signing.pkcs11 import Pkcs11Token, hsm_args_config

    config = hsm_args_config(hsm.module, hsm.token, hsm.pin_env, os.environ)
    with Pkcs11Token(config) as token:
        signer = token.signer(label)
        yield KeyInHand(signer, signer.key.tier, signer.key.spki,
                        f"key {label!r} in token {config.token!r}", token)


def find_in_token(hsm: HsmChoice, root: KeyInHand, label: str) -> HsmKey:
    """The HSM key `label`: in the root's token session when the root is there (one login)."""
    if root.token is not None:
        return root.token.find(label)
    from flashgate.signing.pkcs11 import Pkcs11Token, hsm_args_config

    config = hsm_args_config(hsm.module, hsm.token, hsm.pin_env, os.environ)
    with Pkcs11Token(config) as token:
        return token.find(label)


def require_tier(key: KeyInHand, tier: str, doing: str, warn: Warn) -> None:
    """Refuses a key recorded for another tier: the station's guard against slips (the
    verifier's endorsement check is the real boundary)."""
    if key.tier is None:
        warn(f"warning: {key.name} does not record its tier; cannot check it is "
             f"{a_or_an(tier)} key")
        return
    if key.tier != tier:
        kind = "a fleet root key" if key.tier == ROOT else f"{a_or_an(key.tier)} key"
        raise StationError(f"{key.name} is {kind}; it may not {doing}",
                           f"use a key generated with `flashgate keygen --tier {tier}`"
                           if tier != ROOT else "use the fleet root key")


def sign_and_check(key: KeyInHand, content_type: str, payload: bytes) -> bytes:
    """Signs, then verifies the envelope with the key's public key before anything is written:
    an HSM that returns a wrong signature fails here, not at the cluster."""
    try:
        envelope = cose.sign1(key.signer, content_type, payload)
        cose.verify_sign1(cose.parse_sign1(envelope, content_type), key.signer.algorithm,
                          key.spki)
    except (TrustError, ValueError) as err:
        raise StationError(f"{key.name} produced a signature that does not verify: {err}",
                           "check the HSM and its PKCS#11 module") from err
    return envelope


def check_label(label: str) -> None:
    """A label people can type and tools can show: printable, no leading/trailing blanks."""
    if not label or label != label.strip() or not label.isprintable() or len(label) > 128:
        raise UsageError(f"--label {label!r}: use up to 128 printable characters, no leading or "
                         "trailing spaces")


# --- key files ---------------------------------------------------------------------------------


def load_public_key(text: str, where: str) -> tuple[bytes, str | None]:
    """DER SPKI of a PEM public key, or of a development private key file (with its tier)."""
    if "PRIVATE KEY" in text:
        key = devfile.load_dev_key(Path(where), "--key")
        return key.signer.spki_der, key.tier
    try:
        public = serialization.load_pem_public_key(text.encode("ascii"))
    except (ValueError, UnicodeError) as err:
        raise UsageError(f"--key {where}: not a PEM public key ({err})") from None
    if not isinstance(public, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey):
        raise UsageError(f"--key {where}: an {type(public).__name__}, expected Ed25519 or P-256")
    return public.public_bytes(serialization.Encoding.DER,
                               serialization.PublicFormat.SubjectPublicKeyInfo), None


def algorithm_of(spki: bytes, where: str) -> Algorithm:
    """The algorithm of a DER SubjectPublicKeyInfo; UsageError unless Ed25519 or P-256."""
    public = serialization.load_der_public_key(spki)
    if isinstance(public, ed25519.Ed25519PublicKey):
        return Algorithm.ED25519
    if isinstance(public, ec.EllipticCurvePublicKey) and isinstance(public.curve, ec.SECP256R1):
        return Algorithm.ES256
    raise UsageError(f"{where}: only Ed25519 and P-256 keys are supported")


def root_record(path: Path) -> KeyRecord:
    """A fleet root from its PEM public key file (`verify --root`)."""
    text = read_text(path, "--root")
    try:
        public = serialization.load_pem_public_key(text.encode("ascii"))
    except (ValueError, UnicodeError) as err:
        raise UsageError(f"--root {path}: not a PEM public key ({err})") from None
    spki = public.public_bytes(serialization.Encoding.DER,
                               serialization.PublicFormat.SubjectPublicKeyInfo)
    return root_key(spki, algorithm_of(spki, f"--root {path}"), name=f"root {path.name}")


# --- endorsements and revocations --------------------------------------------------------------


@dataclass(frozen=True)
class KeyPlan:
    """The SigningKey an endorsement makes, its fields checked against the API."""

    name: str
    fleet: str
    tier: Tier
    not_before: int
    not_after: int
    replaces: str | None
    overlap: str | None
    activate_at: int | None


def key_plan(*, name: str, fleet: str, tier: str, not_before: str, not_after: str | None,
             valid_for: str | None, replaces: str | None, overlap: str | None,
             activate_at: str | None, now: int) -> KeyPlan:
    """The endorsement's fields from the flags: times parsed, rotation consistent, and every
    field the API would refuse refused now, before the root signs anything."""
    fleet = check_fleet(fleet)
    name = check_name(name, "--name")
    begins = parse_time(not_before, now, "--not-before")
    if valid_for is not None:
        ends = begins + parse_duration(valid_for, "--valid-for")
    else:
        assert not_after is not None
        ends = parse_time(not_after, now, "--not-after")
    if ends <= begins:
        raise UsageError("--not-after must be later than --not-before")
    if overlap is not None and replaces is None:
        raise UsageError("--overlap needs --replaces (the key whose trust overlaps this one)")
    replaced = check_name(replaces, "--replaces") if replaces else None
    if replaced == name:
        raise UsageError("--replaces names the key itself")
    window = (format_duration(parse_duration(overlap or DEFAULT_OVERLAP, "--overlap"))
              if replaced else None)
    activation = parse_time(activate_at, now, "--activate-at") if activate_at else None
    if activation is not None and not begins <= activation < ends:
        raise UsageError("--activate-at must be inside the validity (--not-before .. --not-after)")
    plan = KeyPlan(name, fleet, Tier(tier), begins, ends, replaced, window, activation)
    check_key_fields(tier=plan.tier, not_before=begins, not_after=ends, replaces=replaced,
                     overlap=window, activate_at=activation)
    return plan


@dataclass(frozen=True)
class RevocationTarget:
    """The key a revocation names and the SigningKey the patch goes to."""

    key_id: str
    fleet: str
    name: str


def revocation_target(*, signing_key_yaml: Path | None, key_id: str | None, fleet: str | None,
                      name: str | None) -> RevocationTarget:
    """From a SigningKey YAML (flags given must agree with it) or from --key-id, --fleet and
    --name."""
    if signing_key_yaml is not None:
        found = load_signing_keys([signing_key_yaml], "--signing-key-yaml")
        if len(found) != 1:
            raise UsageError(f"--signing-key-yaml {signing_key_yaml}: expected one "
                             f"SigningKey, found {len(found)}")
        record = found[0]
        try:
            key_hex = compute_key_id(spki_from_pem(record.public_pem))
        except TrustError as err:
            raise UsageError(f"{record.where}: spec.publicKey: {err.message}") from None
        for flag, given, value in (("--fleet", fleet, record.fleet),
                                   ("--name", name, record.name)):
            if given is not None and given != value:
                raise UsageError(f"{flag} {given!r} differs from the SigningKey's {value!r}")
        fleet, name = record.fleet, record.name
    else:
        assert key_id is not None
        key_hex = key_id.lower()
        if len(key_hex) != 64 or any(c not in "0123456789abcdef" for c in key_hex):
            raise UsageError(f"--key-id {key_id!r} is not 64 hex digits")
        if fleet is None or name is None:
            raise UsageError("--key-id needs --fleet and --name (the SigningKey to patch)")
    return RevocationTarget(key_hex, check_fleet(fleet), check_name(name, "--name"))


# --- releases ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestedRelease:
    """What the `sign` flags say of the release (None: not given)."""

    tier: str | None
    fleet: str | None
    product: str | None
    version: str | None
    security_version: int | None
    url: str | None
    channel: str | None
    name: str | None
    artifact_name: str | None
    artifact: Path


@dataclass(frozen=True)
class ReleasePlan:
    """The release to sign: every field of the manifest but the artifact's size and digest."""

    name: str
    fleet: str
    tier: str
    product: str
    version: str
    security_version: int
    url: str
    channel: str
    artifact_name: str


def release_plan(given: RequestedRelease, existing: ReleaseFile | None) -> ReleasePlan:
    """The release to sign, from the flags (new) or the YAML (co-signing with --add-signature:
    flags given must agree with it)."""
    if existing is not None:
        m = existing.manifest
        declared: Mapping[str, Any] = {
            "tier": str(m.tier), "fleet": m.fleet, "product": m.product, "version": m.version,
            "security_version": m.security_version, "url": existing.url,
            "channel": existing.channel, "name": existing.name}
        for flag, value in declared.items():
            flag_value = getattr(given, flag)
            if flag_value is not None and flag_value != value:
                raise UsageError(f"--{flag.replace('_', '-')} {flag_value!r} differs from the "
                                 f"release being co-signed ({value!r})")
        if given.artifact_name not in (None, m.artifact_name):
            raise UsageError(f"--artifact-name {given.artifact_name!r} differs from the release "
                             f"being co-signed ({m.artifact_name!r})")
        return ReleasePlan(existing.name, m.fleet, str(m.tier), m.product, m.version,
                           m.security_version, existing.url, existing.channel, m.artifact_name)
    required = ("tier", "fleet", "product", "version", "security_version", "url")
    missing = [f"--{f.replace('_', '-')}" for f in required if getattr(given, f) is None]
    if missing:
        raise UsageError(f"sign needs {', '.join(missing)} (or --add-signature RELEASE.yaml)")
    assert given.tier is not None and given.fleet is not None and given.product is not None
    assert given.version is not None and given.security_version is not None
    assert given.url is not None
    name = given.name or default_release_name(given.product, given.tier, given.version)
    return ReleasePlan(check_name(name, "--name"), check_fleet(given.fleet), given.tier,
                       given.product, given.version, given.security_version, given.url,
                       given.channel or DEFAULT_CHANNEL,
                       given.artifact_name or given.artifact.name)


def check_not_signed_by(existing: ReleaseFile, key: KeyInHand) -> None:
    """A threshold needs distinct keys: refuse a key that already signed the release."""
    for envelope in existing.signatures:
        with contextlib.suppress(TrustError):
            if cose.parse_sign1(envelope, cose.CT_RELEASE).key_id == key.signer.key_id:
                raise StationError(f"{key.name} already signed this release; a threshold "
                                   "needs distinct keys", "have another key holder sign it")


def check_same_release(existing: ReleaseFile, manifest: ReleaseManifest, path: Path) -> None:
    """The co-signed manifest must be byte for byte the one each existing signature covers, and
    the YAML's spec must declare exactly it: a second signer signs what they hashed themselves."""
    declared = existing.manifest
    if (declared.artifact_size, declared.artifact_sha256) != (manifest.artifact_size,
                                                              manifest.artifact_sha256):
        raise StationError(
            f"--artifact {path} is {manifest.artifact_size} bytes with sha256 "
            f"{manifest.artifact_sha256.hex()}; the release declares {declared.artifact_size} "
            f"bytes with sha256 {declared.artifact_sha256.hex()}",
            "co-sign only the very build the first signer signed")
    payload = manifest.to_cbor()
    for i, envelope in enumerate(existing.signatures, start=1):
        try:
            signed = cose.parse_sign1(envelope, cose.CT_RELEASE).payload
        except TrustError as err:
            raise UsageError(f"--add-signature: signature {i} is malformed ({err.message})"
                             ) from None
        if signed != payload:
            try:
                detail = "; ".join(ReleaseManifest.from_cbor(signed).differences(manifest))
            except TrustError as err:
                detail = err.message
            raise StationError(f"signature {i} of the release covers another manifest: {detail}",
                               "the YAML was edited after it was signed; start from the "
                               "signer's original file")


# --- what verify is given ----------------------------------------------------------------------


def fleet_keys(found: Sequence[SigningKeyFile], fleet: str, warn: Warn) -> list[FleetKey]:
    """The release's fleet's SigningKeys, as the operator hands them to the sidecar."""
    keys = []
    for key in found:
        if key.fleet != fleet:
            warn(f"warning: {key.where}: belongs to fleet {key.fleet!r}, the release to "
                 f"{fleet!r}; not used")
            continue
        keys.append(FleetKey(key.name, validated_spec(SigningKeySpec, key.spec, key.where)))
    return keys


def validated_spec(model: type[_S], spec: Any, where: str) -> _S:
    """A spec read from YAML, validated by the API's model; UsageError naming each field."""
    try:
        return model.model_validate(spec)
    except ValidationError as err:
        raise UsageError(f"{where}: {'; '.join(problems(err, prefix='spec.'))}") from None


def parse_thresholds(items: Sequence[str]) -> dict[Tier, int]:
    """`--threshold TIER=K` flags as the policy's thresholds."""
    result: dict[Tier, int] = {}
    for item in items:
        tier, _, count = item.partition("=")
        if tier not in TIERS or not count.isdigit() or int(count) < 1:
            raise UsageError(f"--threshold {item!r}: write TIER=K, e.g. bootloader=2")
        result[Tier(tier)] = int(count)
    return result
