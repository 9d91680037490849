"""The signing station's command line: `flashgate` (also installed as `kubectl-flashgate`).

Shaped like sigstore-python's CLI: one parser builder (`build_parser`), one function per
subcommand (`_keygen`, `_endorse`, `_sign`, `_revoke`, `_verify`, `_status`) that turns flags into
calls of the station's rules (`flashgate.signing.station`: keys in hand, key files, endorsement,
revocation and release plans, co-signing checks) and prints the result, one place that catches
the station's base error (`main`). Each subcommand validates every flag, input and output path
before it asks for a PIN or signs anything, and never overwrites a file silently. Results go to
stdout; progress, warnings and "OK" to stderr.

Exit codes: 0 success (verify: accepted); 1 a trust, token or HSM failure (verify: rejected);
2 the command could not run as given (usage, missing or malformed input, existing output).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from flashgate.api import MAX_SECURITY_VERSION, FirmwareReleaseSpec
from flashgate.signing import devfile, filekeys, station
from flashgate.signing.errors import StationError, UsageError
from flashgate.signing.files import Output, check_readable, hash_file, read_text
from flashgate.signing.inputs import TIERS, parse_time
from flashgate.signing.offline import verify_offline
from flashgate.signing.resources import (
    check_release_fields,
    dump_yaml,
    load_release,
    load_signing_keys,
    release_doc,
    signing_key_doc,
)
from flashgate.trust import cose
from flashgate.trust.keyring import ROOT
from flashgate.trust.keys import key_id as compute_key_id
from flashgate.trust.keys import spki_from_pem, spki_to_pem
from flashgate.trust.payloads import KeyEndorsement, ReleaseManifest, Revocation
from flashgate.trust.release import Policy
from flashgate.trust.vocabulary import Algorithm, Tier

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
  flashgate sign --key app-2027 --tier application --fleet gw-1 --product gw-a \\
      --version 4.2.0 --security-version 7 --artifact build/fw.bin \\
      --url https://fw.example.com/gw-a/4.2.0/fw.bin --name gw-a-4.2.0-resigned \\
      --republish "re-signed with app-2027 after app-2026 leaked" -o resigned.yaml
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
    p.add_argument("--republish", metavar="REASON",
                   help="publish a build that was published before (a promotion, a functional "
                        "rollback, a build re-signed after a key leak): spec.republish, which "
                        "only release managers may apply; REASON is for the audit trail")
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


def _now() -> int:
    return int(time.time())


def _hsm(args: argparse.Namespace) -> station.HsmChoice:
    return station.HsmChoice(args.pkcs11_module, args.token, args.pin_env)


# --- subcommands: flags in, station rules, results out ----------------------------------------


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

        station.check_label(args.label)
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


def _endorse(args: argparse.Namespace) -> int:
    plan = station.key_plan(
        name=args.name, fleet=args.fleet, tier=args.tier, not_before=args.not_before,
        not_after=args.not_after, valid_for=args.valid_for, replaces=args.replaces,
        overlap=args.overlap, activate_at=args.activate_at, now=_now())
    output = Output(args.output)
    output.check()
    tier = plan.tier
    key_file = Path(args.key)
    spki = None
    if key_file.is_file() or args.key.endswith((".pem", ".pub")):
        spki, recorded = station.load_public_key(read_text(key_file, "--key"), args.key)
        if recorded is not None and recorded != tier:
            raise StationError(f"--key {args.key} is {station.a_or_an(recorded)} key, not "
                               f"{station.a_or_an(tier)} key")

    with station.open_key(_hsm(args), args.root_key, args.root_dev_file, _say,
                          "--root-dev-file") as root:
        station.require_tier(root, ROOT, "endorse keys (only a fleet root does)", _say)
        if spki is None:
            found = station.find_in_token(_hsm(args), root, args.key)
            if found.tier != tier:
                raise StationError(f"key {args.key!r} was generated for tier {found.tier}, "
                                   f"not {tier}", "endorse it for its own tier, or generate a "
                                   f"new key with --tier {tier}")
            spki = found.spki
        algorithm = station.algorithm_of(spki, f"--key {args.key}")
        if compute_key_id(spki) == root.signer.key_id:
            raise UsageError("--key is the root key itself; the root is never a tier key")
        payload = KeyEndorsement(fleet=plan.fleet, tier=tier,
                                 key_id=bytes.fromhex(compute_key_id(spki)), algorithm=algorithm,
                                 public_key=spki, not_before=plan.not_before,
                                 not_after=plan.not_after).to_cbor()
        envelope = station.sign_and_check(root, cose.CT_KEY, payload)
    doc = signing_key_doc(name=plan.name, fleet=plan.fleet, tier=tier, algorithm=algorithm,
                          public_pem=spki_to_pem(spki), not_before=plan.not_before,
                          not_after=plan.not_after, endorsement=envelope,
                          replaces=plan.replaces, overlap=plan.overlap,
                          activate_at=plan.activate_at)
    output.write(dump_yaml(doc))
    where = f" to {args.output}" if args.output else ""
    _say(f"OK: endorsed {compute_key_id(spki)} for {tier} in fleet {plan.fleet}; SigningKey "
         f"{plan.name}{where}")
    return 0


def _sign(args: argparse.Namespace) -> int:
    adding = args.add_signature is not None
    if args.in_place and not adding:
        raise UsageError("--in-place only goes with --add-signature")
    if args.republish is not None and adding:
        raise UsageError("--republish goes with a new release, not --add-signature (the "
                         "release being co-signed keeps its own spec.republish)")
    existing = load_release(args.add_signature, "--add-signature") if adding else None
    output = Output(args.add_signature if args.in_place else args.output, replace=args.in_place)
    check_readable(args.artifact, "--artifact")
    plan = station.release_plan(station.RequestedRelease(
        tier=args.tier, fleet=args.fleet, product=args.product, version=args.version,
        security_version=args.security_version, url=args.url, channel=args.channel,
        name=args.name, artifact_name=args.artifact_name, artifact=args.artifact), existing)
    if existing is None:
        # Every field the API would refuse is refused now, before the PIN and the signature.
        check_release_fields(ReleaseManifest(
            fleet=plan.fleet, product=plan.product, tier=Tier(plan.tier), version=plan.version,
            security_version=plan.security_version, artifact_name=plan.artifact_name,
            artifact_size=args.artifact.stat().st_size, artifact_sha256=bytes(32)),
            plan.url, plan.channel, args.republish)
    output.check()

    with station.open_key(_hsm(args), args.key, args.dev_file, _say) as key:
        station.require_tier(key, plan.tier, f"sign {station.a_or_an(plan.tier)} release", _say)
        if existing is not None:
            station.check_not_signed_by(existing, key)
        digest = hash_file(args.artifact, "--artifact", progress=sys.stderr)
        manifest = ReleaseManifest(
            fleet=plan.fleet, product=plan.product, tier=Tier(plan.tier), version=plan.version,
            security_version=plan.security_version, artifact_name=plan.artifact_name,
            artifact_size=digest.size, artifact_sha256=digest.sha256)
        if existing is not None:
            station.check_same_release(existing, manifest, args.artifact)
        envelope = station.sign_and_check(key, cose.CT_RELEASE, manifest.to_cbor())
        signer_id = key.signer.key_id

    if existing is None:
        doc = release_doc(name=plan.name, manifest=manifest, url=plan.url, channel=plan.channel,
                          signatures=[envelope], republish=args.republish)
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


def _revoke(args: argparse.Namespace) -> int:
    now = _now()
    target = station.revocation_target(signing_key_yaml=args.signing_key_yaml,
                                       key_id=args.key_id, fleet=args.fleet, name=args.name)
    revoked_at = parse_time(args.revoked_at, now, "--revoked-at")
    output = Output(args.output)
    output.check()

    with station.open_key(_hsm(args), args.root_key, args.root_dev_file, _say,
                          "--root-dev-file") as root:
        station.require_tier(root, ROOT, "revoke keys (only a fleet root does)", _say)
        payload = Revocation(fleet=target.fleet, key_id=bytes.fromhex(target.key_id),
                             revoked_at=revoked_at, reason=args.reason).to_cbor()
        envelope = station.sign_and_check(root, cose.CT_REVOCATION, payload)
    patch = json.dumps({"spec": {"revoked": True,
                                 "revocation": base64.b64encode(envelope).decode("ascii")}},
                       separators=(",", ":"))
    if args.output is not None:
        output.write(patch + "\n")
        print(f"kubectl patch signingkey {target.name} -n {target.fleet} --type merge "
              f"--patch-file {args.output}")
    else:
        print(f"kubectl patch signingkey {target.name} -n {target.fleet} --type merge "
              f"-p '{patch}'")
    _say(f"OK: root-signed revocation of key {target.key_id} (SigningKey {target.name}, fleet "
         f"{target.fleet}); apply the patch to withdraw it")
    return 0


def _verify(args: argparse.Namespace) -> int:
    now = parse_time(args.now, _now(), "--now") if args.now else _now()
    release = load_release(args.release, "--release")
    fleet = release.manifest.fleet
    check_readable(args.artifact, "--artifact")
    policy = Policy(thresholds=station.parse_thresholds(args.threshold),
                    max_security_version_jump=args.max_jump)
    roots = [station.root_record(path) for path in args.root]
    keys = station.fleet_keys(load_signing_keys(args.keys, "--keys"), fleet, _say)
    answer = verify_offline(
        roots=roots, policy=policy, fleet=fleet,
        release=station.validated_spec(FirmwareReleaseSpec, release.doc["spec"],
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
    argv = sys.argv[1:] if argv is None else list(argv)
    for arg in argv:
        # Python hands undecodable bytes over as surrogates; text that goes into a signed
        # payload must be UTF-8, so refuse it here, saying which (found by fuzzing).
        if not arg.isascii() and any("\udc80" <= c <= "\udcff" for c in arg):
            _say(f"error: argument {arg!a} is not valid UTF-8")
            return 2
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
