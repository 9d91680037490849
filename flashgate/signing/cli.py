"""The signing station's command line: `flashgate` (also installed as `kubectl-flashgate`).

Shaped like sigstore-python's CLI: one parser builder (`build_parser`), one function per
subcommand (`_keygen`, `_endorse`, `_sign`, `_revoke`, `_verify`, `_status`), one place that
catches the station's base error (`main`). Each subcommand validates every flag, input and output
path before it asks for a PIN or signs anything, and never overwrites a file silently. Results go
to stdout; progress, warnings and "OK" to stderr.

Exit codes: 0 success (verify: accepted); 1 a trust, token or HSM failure (verify: rejected);
2 the command could not run as given (usage, missing or malformed input, existing output).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from pydantic import BaseModel, ValidationError

from flashgate.api import (
    DEFAULT_OVERLAP,
    MAX_SECURITY_VERSION,
    FirmwareReleaseSpec,
    SigningKeySpec,
)
from flashgate.signing import devfile, filekeys
from flashgate.signing.errors import StationError, UsageError
from flashgate.signing.files import Output, check_readable, hash_file, read_text
from flashgate.signing.inputs import (
    TIERS,
    check_fleet,
    check_name,
    default_release_name,
    parse_duration,
    parse_time,
)
from flashgate.signing.offline import verify_offline
from flashgate.signing.resources import (
    DEFAULT_CHANNEL,
    ReleaseFile,
    SigningKeyFile,
    check_key_fields,
    check_release_fields,
    dump_yaml,
    load_release,
    load_signing_keys,
    release_doc,
    signing_key_doc,
)
from flashgate.trust import cose
from flashgate.trust.durations import format_duration
from flashgate.trust.fleet import FleetKey
from flashgate.trust.keyring import ROOT, KeyRecord, root_key
from flashgate.trust.keys import key_id as compute_key_id
from flashgate.trust.keys import spki_from_pem, spki_to_pem
from flashgate.trust.payloads import KeyEndorsement, ReleaseManifest, Revocation
from flashgate.trust.release import Policy
from flashgate.trust.vocabulary import Algorithm, Tier, TrustError

if TYPE_CHECKING:
    from flashgate.signing.pkcs11 import HsmKey, Pkcs11Token

_S = TypeVar("_S", bound=BaseModel)

ALGORITHMS = tuple(str(a) for a in Algorithm)

# --- help texts --------------------------------------------------------------------------------

_MAIN_DESCRIPTION = """\
flashgate signing station: make, endorse and use the offline keys that decide which firmware a
fleet may install. Private keys live in a PKCS#11 HSM (SoftHSM2 for trying); the cluster only
ever sees public keys, endorsements and signatures.

The HSM is chosen with --pkcs11-module (or $FLASHGATE_PKCS11_MODULE; default: SoftHSM2) and
--token (or $FLASHGATE_PKCS11_TOKEN); the PIN comes from $FLASHGATE_PKCS11_PIN, from the
variable named by --pin-env, or is asked for on the terminal. It is never a flag.
"""

_MAIN_EPILOG = """\
typical flow:
  flashgate keygen --root --label fleet-root --token station
  flashgate keygen --tier application --label app-2026 --token station
  flashgate endorse --root-key fleet-root --key app-2026 --tier application --fleet gw-1 \\
      --valid-for 365d --name app-2026 -o app-2026.yaml
  flashgate sign --key app-2026 --tier application --fleet gw-1 --product gw-a \\
      --version 4.2.0 --security-version 7 --artifact fw.bin \\
      --url https://fw.example.com/gw-a/4.2.0/fw.bin -o release.yaml
  kubectl apply -f app-2026.yaml -f release.yaml

exit codes: 0 ok (verify: accepted), 1 trust/token/HSM failure (verify: rejected),
            2 the command could not run as given (nothing was signed)
"""

_KEYGEN = ("generate a signing key in the HSM (or a development file key)", """\
Generates a key pair inside the HSM token: the private key is created sensitive and
non-extractable (it can sign, nothing can read it out) and is stored with its tier, so the station
refuses later to sign a release of another tier with it. Prints the keyId and the public key PEM
(the part that goes into the cluster: give it to `endorse`, or to the verifier as the root).

--dev-file writes a development key to a file instead (PKCS#8 PEM, mode 0600, never
overwritten). Anyone who can read that file can sign: use it to try flashgate, never for a fleet.
""", """\
examples:
  export FLASHGATE_PKCS11_TOKEN=station
  flashgate keygen --root --label fleet-root --public-key-out root.pem
  flashgate keygen --tier application --label app-2026
  flashgate keygen --tier bootloader --algorithm ecdsa-p256-sha256 --label boot-a-2026
  flashgate keygen --tier config --dev-file dev-config.pem     # development only
""")

_ENDORSE = ("the root endorses a key for one tier: writes a SigningKey", """\
The fleet root signs a key endorsement (keyId, tier, algorithm, public key, validity, fleet) and
the station writes a ready-to-apply SigningKey YAML carrying it. The verifier admits a key only
through such an endorsement, checked against the root it was configured with.

--key is a label in the HSM, or a PEM file (a public key from another station, or a development
key file). Rotation: --replaces names the SigningKey this one rotates out; both are trusted during
--overlap (default 168h) after the new key activates (--activate-at, default: when applied).
""", """\
examples:
  flashgate endorse --root-key fleet-root --key app-2026 --tier application --fleet gw-1 \\
      --valid-for 365d --name app-2026 -o app-2026.yaml
  flashgate endorse --root-key fleet-root --key boot-b.pub.pem --tier bootloader --fleet gw-1 \\
      --not-before 2026-01-01T00:00:00Z --not-after 2028-01-01T00:00:00Z \\
      --name boot-b -o boot-b.yaml
  flashgate endorse --root-key fleet-root --key app-2027 --tier application --fleet gw-1 \\
      --valid-for 365d --replaces app-2026 --overlap 168h --activate-at 2027-01-01T00:00:00Z \\
      --name app-2027 -o app-2027.yaml
""")

_SIGN = ("sign a firmware artifact: writes a FirmwareRelease", """\
Streams the artifact (SHA-256, 1 MiB at a time), builds the release manifest (fleet, product,
tier, version, securityVersion, artifact name/size/sha256), signs it with a key of that tier and
writes a ready-to-apply FirmwareRelease YAML (stdout unless -o). The artifact URL is not signed:
it may change (a presigned URL); the bytes behind it may not.

Threshold tiers (e.g. bootloader with 2 signatures): a second signer runs
  flashgate sign --key KEY2 --add-signature release.yaml --artifact fw.bin -o release-2.yaml
which hashes the artifact again, checks that the YAML's spec and every existing signature cover
exactly these bytes and this manifest, and adds the signature (or --in-place).
""", """\
examples:
  flashgate sign --key app-2026 --tier application --fleet gw-1 --product gw-a \\
      --version 4.2.0 --security-version 7 --artifact build/fw.bin \\
      --url https://fw.example.com/gw-a/4.2.0/fw.bin -o release.yaml
  flashgate sign --key boot-a --tier bootloader --fleet gw-1 --product gw-a --version 2.1.0 \\
      --security-version 3 --artifact boot.bin --url s3://fw/gw-a/boot-2.1.0.bin -o boot.yaml
  flashgate sign --key boot-b --add-signature boot.yaml --artifact boot.bin --in-place
""")

_REVOKE = ("the root revokes a key: prints the kubectl patch", """\
The fleet root signs a revocation statement (keyId, fleet, time, reason) for devices, and the
station prints the `kubectl patch` that marks the SigningKey revoked and carries the statement.
The cluster honours `revoked: true` at once, with or without the statement; devices need the
statement. With -o the merge patch is written to a file instead (for a git commit).
""", """\
examples:
  flashgate revoke --root-key fleet-root --signing-key-yaml app-2026.yaml \\
      --reason "laptop of the release engineer stolen"
  flashgate revoke --root-key fleet-root --key-id 3f2a...e9 --fleet gw-1 --name app-2026 \\
      --reason "compromised" -o revoke-app-2026.json
""")

_VERIFY = ("verify a FirmwareRelease offline, as the cluster will", """\
Runs the trust core the verifier sidecar runs (the same checks, in the same order, with the same
rejection reasons): the key endorsements against the root(s), the signatures against the keys
trusted for the release's tier, the signed manifest against the YAML, the security version
against --floor, then the artifact's size and SHA-256.

Prints "accepted ..." and exits 0, or "rejected <Reason>: ..." and exits 1.
""", """\
examples:
  flashgate verify --release release.yaml --artifact fw.bin --keys keys/ --root root.pem
  flashgate verify --release boot.yaml --artifact boot.bin --keys boot-a.yaml boot-b.yaml \\
      --root root.pem --threshold bootloader=2 --floor 3
  kubectl get signingkeys -n gw-1 -o yaml > keys.yaml
  flashgate verify --release release.yaml --artifact fw.bin --keys keys.yaml --root root.pem \\
      --now 2026-06-01T00:00:00Z
""")

_STATUS = ("show a fleet's trust set, floors and channels (reads the cluster)", """\
Reads, with your kubeconfig, what the fleet trusts and publishes now: per tier the SigningKeys
in the trust set (Staged, Active, Retiring; --all for every key), the rollback floor of each
product and tier, and the release each channel publishes. Read only.
""", """\
examples:
  flashgate status -n gw-1
  kubectl flashgate status -n gw-1 --all
""")


# --- parser ------------------------------------------------------------------------------------


def _tier(text: str) -> str:
    if text not in TIERS:
        raise argparse.ArgumentTypeError(
            f"unknown tier {text!r} (choose from {', '.join(TIERS)})")
    return text


def _uint(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative")
    return value


def _security_version(text: str) -> int:
    value = _uint(text)
    if value > MAX_SECURITY_VERSION:
        raise argparse.ArgumentTypeError(
            f"{text} is above {MAX_SECURITY_VERSION} (a device's 32-bit secure counter)")
    return value


def build_parser(prog: str = "flashgate") -> argparse.ArgumentParser:
    """The whole command line: global flags and one subparser per subcommand."""
    parser = argparse.ArgumentParser(
        prog=prog, description=_MAIN_DESCRIPTION, epilog=_MAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="on errors, also print the traceback")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="on errors, also print the traceback")

    hsm = argparse.ArgumentParser(add_help=False)
    group = hsm.add_argument_group("HSM (PKCS#11)")
    group.add_argument("--pkcs11-module", metavar="PATH",
                       help="the HSM vendor's PKCS#11 module (default: $FLASHGATE_PKCS11_MODULE, "
                            "else SoftHSM2's libsofthsm2.so)")
    group.add_argument("--token", metavar="LABEL",
                       help="token label (default: $FLASHGATE_PKCS11_TOKEN)")
    group.add_argument("--pin-env", metavar="VAR",
                       help="name of the environment variable holding the user PIN (default: "
                            "$FLASHGATE_PKCS11_PIN, else asked for on the terminal)")

    subs = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def sub(name: str, texts: tuple[str, str, str], parents: list[argparse.ArgumentParser],
            func: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        short, description, examples = texts
        p = subs.add_parser(name, help=short, description=description, epilog=examples,
                            parents=[common, *parents],
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(func=func)
        return p

    p = sub("keygen", _KEYGEN, [hsm], _keygen)
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--tier", type=_tier,
                     help=f"the one tier the key may sign ({', '.join(TIERS)})")
    who.add_argument("--root", action="store_true", help="a fleet root key (signs only "
                     "endorsements and revocations)")
    p.add_argument("--algorithm", choices=ALGORITHMS, default=str(Algorithm.ED25519),
                   help="signature algorithm (default: ed25519)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--label", help="CKA_LABEL of the new key in the HSM (unique in the token)")
    where.add_argument("--dev-file", type=Path, metavar="PATH",
                       help="DEVELOPMENT ONLY: write the private key to this new file instead")
    p.add_argument("--public-key-out", type=Path, metavar="PATH",
                   help="also write the public key PEM to this new file")

    p = sub("endorse", _ENDORSE, [hsm], _endorse)
    _root_key_flags(p)
    p.add_argument("--key", required=True, metavar="LABEL|PEM",
                   help="the key to endorse: a label in the HSM, or a PEM file (public key, or "
                        "a development key file)")
    p.add_argument("--tier", type=_tier, required=True, help="the tier the key may sign")
    p.add_argument("--fleet", required=True, help="the fleet (Kubernetes namespace)")
    p.add_argument("--not-before", default="now", metavar="TIME",
                   help="start of validity, RFC 3339 (default: now)")
    until = p.add_mutually_exclusive_group(required=True)
    until.add_argument("--not-after", metavar="TIME", help="end of validity, RFC 3339")
    until.add_argument("--valid-for", metavar="DURATION",
                       help="validity from --not-before, e.g. 365d, 8760h")
    p.add_argument("--replaces", metavar="NAME", help="the SigningKey this key rotates out")
    p.add_argument("--overlap", metavar="DURATION",
                   help="with --replaces: how long both keys are trusted (default: 168h)")
    p.add_argument("--activate-at", metavar="TIME",
                   help="when the key becomes the active signer, RFC 3339 (default: at once)")
    p.add_argument("--name", required=True, help="metadata.name of the SigningKey")
    p.add_argument("-o", "--output", type=Path, metavar="FILE",
                   help="write the YAML to this new file (default: stdout)")

    p = sub("sign", _SIGN, [hsm], _sign)
    key = p.add_mutually_exclusive_group(required=True)
    key.add_argument("--key", metavar="LABEL", help="label of the signing key in the HSM")
    key.add_argument("--dev-file", type=Path, metavar="PATH",
                     help="DEVELOPMENT ONLY: sign with this file key")
    p.add_argument("--tier", type=_tier, help="the release's tier; the key must be of this tier")
    p.add_argument("--fleet", help="the fleet (Kubernetes namespace) the release is for")
    p.add_argument("--product", help="hardware class id the image is built for")
    p.add_argument("--version", help="human version, e.g. 4.2.0")
    p.add_argument("--security-version", type=_security_version, metavar="N",
                   help=f"monotonic anti-rollback counter (0 to {MAX_SECURITY_VERSION})")
    p.add_argument("--artifact", type=Path, required=True, metavar="FILE",
                   help="the firmware image to sign (read, never changed)")
    p.add_argument("--artifact-name", metavar="NAME",
                   help="the image's name as signed (default: the file's name)")
    p.add_argument("--url", help="where devices download it: https://, s3:// (file:// for demos)")
    p.add_argument("--channel", help="the channel that publishes it (default: stable)")
    p.add_argument("--name", help="metadata.name (default: <product>-<tier>-<version>)")
    p.add_argument("--add-signature", type=Path, metavar="RELEASE.yaml",
                   help="add a signature to this FirmwareRelease instead of making a new one")
    out = p.add_mutually_exclusive_group()
    out.add_argument("-o", "--output", type=Path, metavar="FILE",
                     help="write the YAML to this new file (default: stdout)")
    out.add_argument("--in-place", action="store_true",
                     help="with --add-signature: rewrite that file (atomically)")

    p = sub("revoke", _REVOKE, [hsm], _revoke)
    _root_key_flags(p)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--key-id", metavar="HEX", help="keyId of the key to revoke (64 hex)")
    which.add_argument("--signing-key-yaml", type=Path, metavar="FILE",
                       help="the key's SigningKey YAML (gives keyId, name and fleet)")
    p.add_argument("--fleet", help="the fleet (required with --key-id)")
    p.add_argument("--name", help="the SigningKey's name (required with --key-id)")
    p.add_argument("--reason", required=True, help="why, for people (may be empty)")
    p.add_argument("--revoked-at", default="now", metavar="TIME",
                   help="time of the revocation, RFC 3339 (default: now)")
    p.add_argument("-o", "--output", type=Path, metavar="FILE",
                   help="write the merge patch (JSON) to this new file instead of printing it")

    p = sub("verify", _VERIFY, [], _verify)
    p.add_argument("--release", type=Path, required=True, metavar="FILE",
                   help="the FirmwareRelease YAML")
    p.add_argument("--artifact", type=Path, required=True, metavar="FILE",
                   help="the firmware image")
    p.add_argument("--keys", type=Path, nargs="+", required=True, metavar="DIR|FILE",
                   help="SigningKey YAML files, or directories of them (*.yaml, *.yml)")
    p.add_argument("--root", type=Path, action="append", required=True, metavar="ROOT.pem",
                   help="a fleet root public key PEM (repeat for several roots)")
    p.add_argument("--floor", type=_uint, metavar="N",
                   help="the rollback floor of the release's product and tier (default: none)")
    p.add_argument("--max-jump", type=_uint, default=Policy().max_security_version_jump,
                   metavar="N", help="largest allowed securityVersion jump above the floor "
                   f"(default: {Policy().max_security_version_jump})")
    p.add_argument("--threshold", action="append", default=[], metavar="TIER=K",
                   help="signatures a tier needs (default 1; repeatable)")
    p.add_argument("--now", metavar="TIME", help="verify as of this RFC 3339 time (default: now)")

    p = sub("status", _STATUS, [], _status)
    p.add_argument("-n", "--namespace", metavar="FLEET",
                   help="the fleet namespace (default: the kubeconfig context's)")
    p.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)")
    p.add_argument("--context", help="kubeconfig context (default: the current one)")
    p.add_argument("--all", action="store_true",
                   help="list every SigningKey, not only the trust set")
    return parser


def _root_key_flags(p: argparse.ArgumentParser) -> None:
    root = p.add_mutually_exclusive_group(required=True)
    root.add_argument("--root-key", metavar="LABEL", help="label of the fleet root key in the HSM")
    root.add_argument("--root-dev-file", type=Path, metavar="PATH",
                      help="DEVELOPMENT ONLY: a root file key")


# --- shared steps ------------------------------------------------------------------------------


def _say(message: str) -> None:
    print(message, file=sys.stderr)


def _a(word: str) -> str:
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"


def _now() -> int:
    return int(time.time())


@dataclass(frozen=True)
class _Key:
    """A signing key in hand: the signer, its recorded tier, how messages name it, and the open
    token it lives in (None for a file key), for finding other keys in the same login."""

    signer: cose.Signer
    tier: str | None
    spki: bytes
    name: str
    token: Pkcs11Token | None = None


@contextlib.contextmanager
def _open_key(args: argparse.Namespace, label: str | None, dev_file: Path | None,
              flag: str = "--dev-file") -> Iterator[_Key]:
    """The key named by an HSM label or a development file, open for signing."""
    if dev_file is not None:
        key = devfile.load_dev_key(dev_file, flag)
        _say(f"warning: signing with development file key {dev_file}: not for production")
        yield _Key(key.signer, key.tier, key.signer.spki_der, str(dev_file))
        return
    assert label is not None
    from flashgate.signing.pkcs11 import Pkcs11Token, hsm_args_config

    config = hsm_args_config(args.pkcs11_module, args.token, args.pin_env, os.environ)
    with Pkcs11Token(config) as token:
        signer = token.signer(label)
        yield _Key(signer, signer.key.tier, signer.key.spki,
                   f"key {label!r} in token {config.token!r}", token)


def _find_in_token(args: argparse.Namespace, root: _Key, label: str) -> HsmKey:
    """The HSM key `label`: in the root's token session when the root is there (one login)."""
    if root.token is not None:
        return root.token.find(label)
    from flashgate.signing.pkcs11 import Pkcs11Token, hsm_args_config

    config = hsm_args_config(args.pkcs11_module, args.token, args.pin_env, os.environ)
    with Pkcs11Token(config) as token:
        return token.find(label)


def _require_tier(key: _Key, tier: str, doing: str) -> None:
    """Refuses a key recorded for another tier: the station's guard against slips (the
    verifier's endorsement check is the real boundary)."""
    if key.tier is None:
        _say(f"warning: {key.name} does not record its tier; cannot check it is {_a(tier)} key")
        return
    if key.tier != tier:
        kind = "a fleet root key" if key.tier == ROOT else f"{_a(key.tier)} key"
        raise StationError(f"{key.name} is {kind}; it may not {doing}",
                           f"use a key generated with `flashgate keygen --tier {tier}`"
                           if tier != ROOT else "use the fleet root key")


def _sign_and_check(key: _Key, content_type: str, payload: bytes) -> bytes:
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


def _load_public_key(text: str, where: str) -> tuple[bytes, str | None]:
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


def _algorithm_of(spki: bytes, where: str) -> Algorithm:
    public = serialization.load_der_public_key(spki)
    if isinstance(public, ed25519.Ed25519PublicKey):
        return Algorithm.ED25519
    if isinstance(public, ec.EllipticCurvePublicKey) and isinstance(public.curve, ec.SECP256R1):
        return Algorithm.ES256
    raise UsageError(f"{where}: only Ed25519 and P-256 keys are supported")


# --- subcommands -------------------------------------------------------------------------------


def _keygen(args: argparse.Namespace) -> int:
    tier = ROOT if args.root else args.tier
    algorithm = Algorithm(args.algorithm)
    public_out = Output(args.public_key_out, flag="--public-key-out") \
        if args.public_key_out else None
    if public_out is not None:
        public_out.check()
    if args.dev_file is not None:
        if public_out is not None and args.public_key_out.resolve() == args.dev_file.resolve():
            raise UsageError("--public-key-out and --dev-file name the same file")
        target = devfile.dev_key_output(args.dev_file)
        target.check()
        _say(devfile.WARNING)
        signer = filekeys.generate(algorithm)
        target.write(devfile.dev_key_text(signer, tier))
        key_id, pem = signer.key_id, signer.public_pem
        _say(f"OK: wrote {tier} development key to {args.dev_file} (mode 0600)")
    else:
        from flashgate.signing.pkcs11 import Pkcs11Token, hsm_args_config

        _check_label(args.label)
        config = hsm_args_config(args.pkcs11_module, args.token, args.pin_env, os.environ)
        with Pkcs11Token(config, rw=True) as token:
            made = token.generate(args.label, tier, algorithm)
        key_id, pem = made.key_id, made.public_pem
        _say(f"OK: generated {algorithm} {tier} key {args.label!r} in token {config.token!r} "
             "(sensitive, non-extractable)")
    if public_out is not None:
        public_out.write(pem)
    sys.stdout.write(f"keyId: {key_id}\n{pem}")
    return 0


def _check_label(label: str) -> None:
    """A label people can type and tools can show: printable, no leading/trailing blanks."""
    if not label or label != label.strip() or not label.isprintable() or len(label) > 128:
        raise UsageError(f"--label {label!r}: use up to 128 printable characters, no leading or "
                         "trailing spaces")


def _endorse(args: argparse.Namespace) -> int:
    now = _now()
    fleet = check_fleet(args.fleet)
    name = check_name(args.name, "--name")
    tier = Tier(args.tier)
    not_before = parse_time(args.not_before, now, "--not-before")
    if args.valid_for is not None:
        not_after = not_before + parse_duration(args.valid_for, "--valid-for")
    else:
        not_after = parse_time(args.not_after, now, "--not-after")
    if not_after <= not_before:
        raise UsageError("--not-after must be later than --not-before")
    if args.overlap is not None and args.replaces is None:
        raise UsageError("--overlap needs --replaces (the key whose trust overlaps this one)")
    replaces = check_name(args.replaces, "--replaces") if args.replaces else None
    if replaces == name:
        raise UsageError("--replaces names the key itself")
    overlap = (format_duration(parse_duration(args.overlap or DEFAULT_OVERLAP, "--overlap"))
               if replaces else None)
    activate_at = (parse_time(args.activate_at, now, "--activate-at")
                   if args.activate_at else None)
    if activate_at is not None and not not_before <= activate_at < not_after:
        raise UsageError("--activate-at must be inside the validity (--not-before .. --not-after)")
    check_key_fields(tier=tier, not_before=not_before, not_after=not_after, replaces=replaces,
                     overlap=overlap, activate_at=activate_at)
    output = Output(args.output)
    output.check()
    key_file = Path(args.key)
    spki = None
    if key_file.is_file() or args.key.endswith((".pem", ".pub")):
        spki, recorded = _load_public_key(read_text(key_file, "--key"), args.key)
        if recorded is not None and recorded != tier:
            raise StationError(f"--key {args.key} is {_a(recorded)} key, not {_a(tier)} key")

    with _open_key(args, args.root_key, args.root_dev_file, "--root-dev-file") as root:
        _require_tier(root, ROOT, "endorse keys (only a fleet root does)")
        if spki is None:
            found = _find_in_token(args, root, args.key)
            if found.tier != tier:
                raise StationError(f"key {args.key!r} was generated for tier {found.tier}, "
                                   f"not {tier}", "endorse it for its own tier, or generate a "
                                   f"new key with --tier {tier}")
            spki = found.spki
        algorithm = _algorithm_of(spki, f"--key {args.key}")
        if compute_key_id(spki) == root.signer.key_id:
            raise UsageError("--key is the root key itself; the root is never a tier key")
        payload = KeyEndorsement(fleet=fleet, tier=tier, key_id=bytes.fromhex(compute_key_id(spki)),
                                 algorithm=algorithm, public_key=spki, not_before=not_before,
                                 not_after=not_after).to_cbor()
        envelope = _sign_and_check(root, cose.CT_KEY, payload)
    doc = signing_key_doc(name=name, fleet=fleet, tier=tier, algorithm=algorithm,
                          public_pem=spki_to_pem(spki), not_before=not_before,
                          not_after=not_after, endorsement=envelope, replaces=replaces,
                          overlap=overlap, activate_at=activate_at)
    output.write(dump_yaml(doc))
    where = f" to {args.output}" if args.output else ""
    _say(f"OK: endorsed {compute_key_id(spki)} for {tier} in fleet {fleet}; SigningKey {name}"
         f"{where}")
    return 0


def _sign(args: argparse.Namespace) -> int:
    adding = args.add_signature is not None
    if args.in_place and not adding:
        raise UsageError("--in-place only goes with --add-signature")
    existing = load_release(args.add_signature, "--add-signature") if adding else None
    output = Output(args.add_signature if args.in_place else args.output, replace=args.in_place)
    check_readable(args.artifact, "--artifact")
    plan = _release_plan(args, existing)
    if existing is None:
        # Every field the API would refuse is refused now, before the PIN and the signature.
        check_release_fields(ReleaseManifest(
            fleet=plan.fleet, product=plan.product, tier=Tier(plan.tier), version=plan.version,
            security_version=plan.security_version, artifact_name=plan.artifact_name,
            artifact_size=args.artifact.stat().st_size, artifact_sha256=bytes(32)),
            plan.url, plan.channel)
    output.check()

    with _open_key(args, args.key, args.dev_file) as key:
        _require_tier(key, plan.tier, f"sign {_a(plan.tier)} release")
        if existing is not None:
            _check_not_signed_by(existing, key)
        digest = hash_file(args.artifact, "--artifact", progress=sys.stderr)
        manifest = ReleaseManifest(
            fleet=plan.fleet, product=plan.product, tier=Tier(plan.tier), version=plan.version,
            security_version=plan.security_version, artifact_name=plan.artifact_name,
            artifact_size=digest.size, artifact_sha256=digest.sha256)
        if existing is not None:
            _check_same_release(existing, manifest, args.artifact)
        envelope = _sign_and_check(key, cose.CT_RELEASE, manifest.to_cbor())
        signer_id = key.signer.key_id

    if existing is None:
        doc = release_doc(name=plan.name, manifest=manifest, url=plan.url, channel=plan.channel,
                          signatures=[envelope])
    else:
        doc = existing.doc
        doc["spec"]["signatures"] = [*existing.signatures,
                                     base64.b64encode(envelope).decode("ascii")]
    output.write(dump_yaml(doc))
    count = len(doc["spec"]["signatures"])
    where = f" to {output.path}" if output.path else ""
    _say(f"OK: signed {plan.tier} release {plan.name} ({manifest.product} {manifest.version}, "
         f"securityVersion {manifest.security_version}, sha256 {digest.sha256.hex()}) with key "
         f"{signer_id}; {count} signature{'s' if count > 1 else ''}{where}")
    return 0


@dataclass(frozen=True)
class _Plan:
    name: str
    fleet: str
    tier: str
    product: str
    version: str
    security_version: int
    url: str
    channel: str
    artifact_name: str


def _release_plan(args: argparse.Namespace, existing: ReleaseFile | None) -> _Plan:
    """The release to sign, from the flags (new) or the YAML (--add-signature; flags given must
    agree with it)."""
    if existing is not None:
        m = existing.manifest
        declared = {"tier": str(m.tier), "fleet": m.fleet, "product": m.product,
                    "version": m.version, "security_version": m.security_version,
                    "url": existing.url, "channel": existing.channel, "name": existing.name}
        for flag, value in declared.items():
            given = getattr(args, flag)
            if given is not None and given != value:
                raise UsageError(f"--{flag.replace('_', '-')} {given!r} differs from the "
                                 f"release being co-signed ({value!r})")
        if args.artifact_name not in (None, m.artifact_name):
            raise UsageError(f"--artifact-name {args.artifact_name!r} differs from the release "
                             f"being co-signed ({m.artifact_name!r})")
        return _Plan(existing.name, m.fleet, str(m.tier), m.product, m.version,
                     m.security_version, existing.url, existing.channel, m.artifact_name)
    required = ("tier", "fleet", "product", "version", "security_version", "url")
    missing = [f"--{f.replace('_', '-')}" for f in required if getattr(args, f) is None]
    if missing:
        raise UsageError(f"sign needs {', '.join(missing)} (or --add-signature RELEASE.yaml)")
    name = args.name or default_release_name(args.product, args.tier, args.version)
    return _Plan(check_name(name, "--name"), check_fleet(args.fleet), args.tier, args.product,
                 args.version, args.security_version, args.url,
                 args.channel or DEFAULT_CHANNEL, args.artifact_name or args.artifact.name)


def _check_not_signed_by(existing: ReleaseFile, key: _Key) -> None:
    for envelope in existing.signatures:
        with contextlib.suppress(TrustError):
            if cose.parse_sign1(envelope, cose.CT_RELEASE).key_id == key.signer.key_id:
                raise StationError(f"{key.name} already signed this release; a threshold "
                                   "needs distinct keys", "have another key holder sign it")


def _check_same_release(existing: ReleaseFile, manifest: ReleaseManifest, path: Path) -> None:
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


def _revoke(args: argparse.Namespace) -> int:
    now = _now()
    if args.signing_key_yaml is not None:
        found = load_signing_keys([args.signing_key_yaml], "--signing-key-yaml")
        if len(found) != 1:
            raise UsageError(f"--signing-key-yaml {args.signing_key_yaml}: expected one "
                             f"SigningKey, found {len(found)}")
        record = found[0]
        try:
            key_hex = compute_key_id(spki_from_pem(record.public_pem))
        except TrustError as err:
            raise UsageError(f"{record.where}: spec.publicKey: {err.message}") from None
        for flag, given, value in (("--fleet", args.fleet, record.fleet),
                                   ("--name", args.name, record.name)):
            if given is not None and given != value:
                raise UsageError(f"{flag} {given!r} differs from the SigningKey's {value!r}")
        fleet, name = record.fleet, record.name
    else:
        key_hex = args.key_id.lower()
        if len(key_hex) != 64 or any(c not in "0123456789abcdef" for c in key_hex):
            raise UsageError(f"--key-id {args.key_id!r} is not 64 hex digits")
        if args.fleet is None or args.name is None:
            raise UsageError("--key-id needs --fleet and --name (the SigningKey to patch)")
        fleet, name = args.fleet, args.name
    check_fleet(fleet)
    check_name(name, "--name")
    revoked_at = parse_time(args.revoked_at, now, "--revoked-at")
    output = Output(args.output)
    output.check()

    with _open_key(args, args.root_key, args.root_dev_file, "--root-dev-file") as root:
        _require_tier(root, ROOT, "revoke keys (only a fleet root does)")
        payload = Revocation(fleet=fleet, key_id=bytes.fromhex(key_hex), revoked_at=revoked_at,
                             reason=args.reason).to_cbor()
        envelope = _sign_and_check(root, cose.CT_REVOCATION, payload)
    patch = json.dumps({"spec": {"revoked": True,
                                 "revocation": base64.b64encode(envelope).decode("ascii")}},
                       separators=(",", ":"))
    if args.output is not None:
        output.write(patch + "\n")
        print(f"kubectl patch signingkey {name} -n {fleet} --type merge "
              f"--patch-file {args.output}")
    else:
        print(f"kubectl patch signingkey {name} -n {fleet} --type merge -p '{patch}'")
    _say(f"OK: root-signed revocation of key {key_hex} (SigningKey {name}, fleet {fleet}); "
         "apply the patch to withdraw it")
    return 0


def _verify(args: argparse.Namespace) -> int:
    now = parse_time(args.now, _now(), "--now") if args.now else _now()
    release = load_release(args.release, "--release")
    fleet = release.manifest.fleet
    check_readable(args.artifact, "--artifact")
    policy = Policy(thresholds=_thresholds(args.threshold),
                    max_security_version_jump=args.max_jump)
    roots = [_root_record(path) for path in args.root]
    keys = _fleet_keys(load_signing_keys(args.keys, "--keys"), fleet)
    answer = verify_offline(
        roots=roots, policy=policy, fleet=fleet,
        release=_validated_spec(FirmwareReleaseSpec, release.doc["spec"],
                                f"--release {args.release}"),
        keys=keys, artifact=args.artifact, floor=args.floor, now=now, progress=sys.stderr,
        warn=lambda message: _say(f"warning: {message}"))
    verdict = answer.verdict
    if not verdict.accepted:
        print(f"rejected {verdict.reason}: {verdict.message}")
        return 1
    names = {compute_key_id(spki_from_pem(k.spec.public_key)): k.name for k in keys}
    signers = ", ".join(f"{names[k]} ({k})" if k in names else k for k in verdict.key_ids)
    m = release.manifest
    sha256 = answer.sha256.hex() if answer.sha256 is not None else None
    print(f"accepted {release.name}: {m.tier} {m.product} {m.version} (securityVersion "
          f"{m.security_version}), sha256 {sha256}, signed by {signers}")
    _say(f"OK: {verdict.message}")
    return 0


def _fleet_keys(found: Sequence[SigningKeyFile], fleet: str) -> list[FleetKey]:
    """The release's fleet's SigningKeys, as the operator hands them to the sidecar."""
    keys = []
    for key in found:
        if key.fleet != fleet:
            _say(f"warning: {key.where}: belongs to fleet {key.fleet!r}, the release to "
                 f"{fleet!r}; not used")
            continue
        keys.append(FleetKey(key.name, _validated_spec(SigningKeySpec, key.spec, key.where)))
    return keys


def _validated_spec(model: type[_S], spec: Any, where: str) -> _S:
    try:
        return model.model_validate(spec)
    except ValidationError as err:
        problems = "; ".join(f"spec.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                             for e in err.errors())
        raise UsageError(f"{where}: {problems}") from None


def _thresholds(items: Sequence[str]) -> dict[Tier, int]:
    result: dict[Tier, int] = {}
    for item in items:
        tier, _, count = item.partition("=")
        if tier not in TIERS or not count.isdigit() or int(count) < 1:
            raise UsageError(f"--threshold {item!r}: write TIER=K, e.g. bootloader=2")
        result[Tier(tier)] = int(count)
    return result


def _root_record(path: Path) -> KeyRecord:
    text = read_text(path, "--root")
    try:
        public = serialization.load_pem_public_key(text.encode("ascii"))
    except (ValueError, UnicodeError) as err:
        raise UsageError(f"--root {path}: not a PEM public key ({err})") from None
    spki = public.public_bytes(serialization.Encoding.DER,
                               serialization.PublicFormat.SubjectPublicKeyInfo)
    return root_key(spki, _algorithm_of(spki, f"--root {path}"), name=f"root {path.name}")


def _status(args: argparse.Namespace) -> int:
    from flashgate.signing.status import current_namespace, read_fleet, render

    if args.kubeconfig is not None and not Path(args.kubeconfig).is_file():
        raise UsageError(f"--kubeconfig {args.kubeconfig}: no such file")
    fleet = args.namespace or current_namespace(args.kubeconfig, args.context)
    view = read_fleet(fleet, args.kubeconfig, args.context)
    sys.stdout.write(render(view, _now(), all_keys=args.all))
    return 0


# --- entry point -------------------------------------------------------------------------------


def _prog(argv0: str) -> str:
    # kubectl runs plugins as kubectl-<name>; show the command the user typed.
    name = Path(argv0).name
    return "kubectl flashgate" if name.startswith("kubectl-") else "flashgate"


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one command; returns the exit code (the console scripts exit with it)."""
    parser = build_parser(_prog(sys.argv[0]))
    args = parser.parse_args(argv)
    try:
        result: int = args.func(args)
        return result
    except StationError as err:
        if args.verbose:
            traceback.print_exc()
        _say(f"error: {err.message}")
        if err.hint:
            _say(f"hint: {err.hint}")
        return err.exit_code
    except KeyboardInterrupt:
        _say("interrupted; nothing was written")
        return 130
