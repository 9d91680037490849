"""PKCS#11 keys and signer: the station's private keys are made in the HSM and never leave it.

Library: python-pkcs11 (not PyKCS11). It ships type information (`py.typed` and stubs for its
Cython core), so this module is checked by `mypy --strict` without ignores; sessions are context
managers; attributes and mechanisms are enums; every CKR_* code is its own exception class
(`PinIncorrect`, `NoSuchToken`, `AttributeSensitive`, ...), which is what turns HSM failures into
clear messages here; and it has CKM_EC_EDWARDS_KEY_PAIR_GEN/CKM_EDDSA. PyKCS11 mirrors the C API
through SWIG: untyped, one exception class with a numeric code, templates as raw tuples.

Keys (docs/format.md "Envelope"):
- `ed25519`: CKM_EC_EDWARDS_KEY_PAIR_GEN with CKA_EC_PARAMS = the id-Ed25519 OID (RFC 8410);
  signatures by CKM_EDDSA over ToBeSigned itself.
- `ecdsa-p256-sha256`: CKM_EC_KEY_PAIR_GEN on P-256; the host hashes ToBeSigned with SHA-256 and
  the HSM signs the digest with CKM_ECDSA, which returns raw r||s, the COSE ES256 form. SoftHSM2
  does not offer CKM_ECDSA_SHA256, and hashing on the host lets artifacts of any size be signed
  through a fixed-size HSM call anyway.

Every private key is generated with CKA_TOKEN, CKA_PRIVATE, CKA_SENSITIVE = true and
CKA_EXTRACTABLE = false (the HSM then reports CKA_ALWAYS_SENSITIVE and CKA_NEVER_EXTRACTABLE);
CKA_SIGN is its only capability. Public and private objects share CKA_LABEL (the name people use)
and CKA_ID = the 32 raw bytes of the keyId (SHA-256 of the DER SubjectPublicKeyInfo).

Where the tier is recorded: in a CKO_DATA object next to the key pair, with CKA_APPLICATION
"flashgate", the key's CKA_LABEL, and CKA_VALUE = JSON {"v", "keyId", "tier", "algorithm"}.
The keyId inside links it to the key's CKA_ID (checked on every use); it is a token object with
CKA_PRIVATE = true (creating or deleting it needs the user PIN, not just a public session) and
CKA_MODIFIABLE = false. A data object rather than a label convention keeps labels free for people
and the tier out of a string that HSM tools let anyone rename. The record is a guard against
mistakes (signing a bootloader with an application key), not the trust boundary: that is the
root-signed endorsement, checked by the verifier whatever this token says.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType, TracebackType

import pkcs11
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11

from flashgate.signing.errors import StationError, UsageError
from flashgate.trust.keys import key_id as compute_key_id
from flashgate.trust.keys import spki_to_pem
from flashgate.trust.vocabulary import Algorithm

MODULE_ENV = "FLASHGATE_PKCS11_MODULE"
TOKEN_ENV = "FLASHGATE_PKCS11_TOKEN"
PIN_ENV = "FLASHGATE_PKCS11_PIN"
ROOT_TIER = "root"
APPLICATION = "flashgate"

# Where Debian/Ubuntu (all architectures), Fedora and Homebrew install SoftHSM2's module.
DEFAULT_MODULE_PATHS = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
    "/opt/homebrew/lib/softhsm/libsofthsm2.so",
)

ED25519_OID_PARAMS = bytes.fromhex("06032b6570")  # DER OID 1.3.101.112 (id-Ed25519)
ED25519_NAME_PARAMS = b"\x13\x0cedwards25519"  # PrintableString form, PKCS#11 3.0 also allows it
P256_PARAMS = bytes.fromhex("06082a8648ce3d030107")  # DER OID 1.2.840.10045.3.1.7 (prime256v1)

_MECHANISMS = MappingProxyType({
    Algorithm.ED25519: (KeyType.EC_EDWARDS, Mechanism.EC_EDWARDS_KEY_PAIR_GEN, Mechanism.EDDSA),
    Algorithm.ES256: (KeyType.EC, Mechanism.EC_KEY_PAIR_GEN, Mechanism.ECDSA),
})


def find_module(explicit: str | None, environ: Mapping[str, str]) -> Path:
    """The PKCS#11 module to load: the flag, else $FLASHGATE_PKCS11_MODULE, else SoftHSM2's.

    Raises:
        UsageError: The named module does not exist, or no default SoftHSM2 module is installed.
    """
    named = explicit or environ.get(MODULE_ENV)
    if named:
        path = Path(named)
        if not path.is_file():
            raise UsageError(
                f"PKCS#11 module {path} does not exist",
                "pass the vendor's module (e.g. /usr/lib/x86_64-linux-gnu/opensc-pkcs11.so) with "
                f"--pkcs11-module or ${MODULE_ENV}",
            )
        return path
    for candidate in DEFAULT_MODULE_PATHS:
        if Path(candidate).is_file():
            return Path(candidate)
    raise UsageError(
        "no PKCS#11 module given and SoftHSM2 is not installed in the usual places",
        f"install softhsm2 (apt-get install softhsm2) or pass --pkcs11-module / ${MODULE_ENV}",
    )


def resolve_pin(pin_env: str | None, environ: Mapping[str, str], token: str) -> str:
    """The user PIN: from the variable named by --pin-env, else $FLASHGATE_PKCS11_PIN, else asked
    for on the terminal. Never from a command-line argument (it would land in shell history and
    in the process list).

    Raises:
        UsageError: The named variable is unset, or there is no terminal to ask on.
    """
    if pin_env:
        if pin_env not in environ:
            raise UsageError(f"--pin-env {pin_env}: the variable {pin_env} is not set")
        return environ[pin_env]
    if PIN_ENV in environ:
        return environ[PIN_ENV]
    if not sys.stdin.isatty():
        raise UsageError(
            f"no PIN for token {token!r} and no terminal to ask for one",
            f"set ${PIN_ENV}, or name another variable with --pin-env VAR",
        )
    return getpass.getpass(f"PIN for token {token!r}: ")


@dataclass(frozen=True)
class Pkcs11Config:
    """How to reach the keys: the module, the token label and the user PIN."""

    module: Path
    token: str
    pin: str = field(repr=False)


@dataclass(frozen=True)
class HsmKey:
    """A key pair in the token, as the station knows it.

    Attributes:
        label: CKA_LABEL shared by the private key, the public key and the tier record.
        tier: A tier name, or "root" for a fleet root key.
        algorithm: The key's signature algorithm.
        spki: The public key as DER SubjectPublicKeyInfo.
    """

    label: str
    tier: str
    algorithm: Algorithm
    spki: bytes

    @property
    def key_id(self) -> str:
        """64 lowercase hex digits: SHA-256 of the DER SubjectPublicKeyInfo."""
        return compute_key_id(self.spki)

    @property
    def public_pem(self) -> str:
        return spki_to_pem(self.spki)


class Pkcs11Signer:
    """The trust core's `Signer` backed by a private key in the HSM (see `cose.sign1`).

    Valid while the `Pkcs11Token` session that made it is open.
    """

    def __init__(self, private_key: pkcs11.SignMixin, key: HsmKey) -> None:
        self._private_key = private_key
        self.key = key
        self.algorithm: Algorithm = key.algorithm
        self.key_id: str = key.key_id

    def sign(self, tbs: bytes) -> bytes:
        """Signs COSE ToBeSigned; returns the raw signature (Ed25519, or ES256 as r||s).

        Raises:
            StationError: The HSM refused or returned something that is not a raw signature.
        """
        try:
            if self.algorithm is Algorithm.ED25519:
                signature = self._private_key.sign(tbs, mechanism=Mechanism.EDDSA)
            else:
                digest = hashlib.sha256(tbs).digest()
                signature = self._private_key.sign(digest, mechanism=Mechanism.ECDSA)
        except p11.PKCS11Error as err:
            raise StationError(f"the HSM refused to sign with {self.key.label!r}: "
                               f"{_describe(err)}") from err
        # Both are 64 bytes; anything else (e.g. a DER ECDSA-Sig-Value) would not verify as COSE.
        if len(signature) != 64:
            raise StationError(
                f"the HSM returned a {len(signature)}-byte signature for {self.algorithm}; "
                "expected 64 raw bytes"
            )
        return bytes(signature)


class Pkcs11Token:
    """A logged-in session on one token; use as a context manager.

    Raises (on entry):
        StationError: The module cannot be loaded, the token is missing, or the PIN is wrong or
            locked.
    """

    def __init__(self, config: Pkcs11Config, *, rw: bool = False) -> None:
        self._config = config
        self._rw = rw
        self._session: pkcs11.Session | None = None

    def __enter__(self) -> Pkcs11Token:
        module = str(self._config.module)
        try:
            lib = pkcs11.lib(module)
        except (RuntimeError, OSError) as err:
            raise StationError(f"cannot load PKCS#11 module {module}: {_describe(err)}",
                               "check the path and that it matches this machine's architecture; "
                               "for SoftHSM2, check that $SOFTHSM2_CONF names a readable config"
                               ) from err
        try:
            token = lib.get_token(token_label=self._config.token)
        except p11.NoSuchToken as err:
            present = sorted(t.label for t in lib.get_tokens() if t.label)
            listing = ", ".join(repr(p) for p in present) or "none"
            raise StationError(
                f"no token labelled {self._config.token!r} in {module} (tokens present: "
                f"{listing})",
                "pass --token LABEL; for SoftHSM2 make one with `softhsm2-util --init-token "
                "--free --label LABEL` (check SOFTHSM2_CONF)",
            ) from err
        except p11.PKCS11Error as err:
            raise StationError(f"cannot list the tokens of {module}: {_describe(err)}") from err
        try:
            self._session = token.open(rw=self._rw, user_pin=self._config.pin)
        except (p11.PinIncorrect, p11.PinInvalid, p11.PinLenRange) as err:
            raise StationError(
                f"wrong PIN for token {self._config.token!r}",
                "check the PIN variable (--pin-env or $FLASHGATE_PKCS11_PIN); repeated failures "
                "lock the token",
            ) from err
        except p11.PinLocked as err:
            raise StationError(f"the user PIN of token {self._config.token!r} is locked",
                               "the token's security officer must reset it") from err
        except p11.PKCS11Error as err:
            raise StationError(f"cannot log in to token {self._config.token!r}: "
                               f"{_describe(err)}") from err
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    @property
    def session(self) -> pkcs11.Session:
        if self._session is None:
            raise RuntimeError("Pkcs11Token used outside its `with` block")
        return self._session

    def generate(self, label: str, tier: str, algorithm: Algorithm) -> HsmKey:
        """Generates a non-extractable key pair of `algorithm` for `tier` ("root" for a root key).

        Raises:
            UsageError: A key with this label already exists in the token.
            StationError: The token cannot make this kind of key.
        """
        if not self._rw:
            raise RuntimeError("generate() needs a read-write session (Pkcs11Token(rw=True))")
        if self._objects(label):
            raise UsageError(f"token {self._config.token!r} already holds objects labelled "
                             f"{label!r}", "choose another --label; labels name one key each")
        key_type, keygen, sign_mech = _MECHANISMS[algorithm]
        self._require_mechanisms(algorithm, keygen, sign_mech)
        params = ED25519_OID_PARAMS if algorithm is Algorithm.ED25519 else P256_PARAMS
        session = self.session
        created: list[pkcs11.Object] = []
        try:
            domain = session.create_domain_parameters(key_type, {Attribute.EC_PARAMS: params},
                                                      local=True)
            public, private = domain.generate_keypair(
                store=True,
                label=label,
                mechanism=keygen,
                public_template={Attribute.TOKEN: True, Attribute.PRIVATE: False,
                                 Attribute.VERIFY: True},
                private_template={
                    Attribute.TOKEN: True,
                    Attribute.PRIVATE: True,
                    Attribute.SENSITIVE: True,
                    Attribute.EXTRACTABLE: False,
                    Attribute.SIGN: True,
                    Attribute.DECRYPT: False,
                    Attribute.UNWRAP: False,
                    Attribute.DERIVE: False,
                },
            )
            created += [public, private]
            spki = _public_spki(public, algorithm)
            key = HsmKey(label=label, tier=tier, algorithm=algorithm, spki=spki)
            # The keyId is known only once the public key exists, so CKA_ID is set afterwards.
            key_id = bytes.fromhex(key.key_id)
            public[Attribute.ID] = key_id
            private[Attribute.ID] = key_id
            created.append(session.create_object({
                Attribute.CLASS: ObjectClass.DATA,
                Attribute.TOKEN: True,
                Attribute.PRIVATE: True,
                Attribute.MODIFIABLE: False,
                Attribute.APPLICATION: APPLICATION,
                Attribute.LABEL: label,
                Attribute.VALUE: _tier_record(key),
            }))
        except p11.PKCS11Error as err:
            for obj in created:  # no half-made key left behind under this label
                _destroy_quietly(obj)
            raise StationError(f"token {self._config.token!r} could not generate a "
                               f"{algorithm} key: {_describe(err)}") from err
        return key

    def find(self, label: str) -> HsmKey:
        """The key pair labelled `label`, its tier record checked against its CKA_ID.

        Raises:
            StationError: No such key, several, or a tier record that does not match the key.
        """
        private = self._private_key(label)
        return self._describe_key(label, private)

    def signer(self, label: str) -> Pkcs11Signer:
        """A `Signer` for the key labelled `label` (see `find` for the errors)."""
        private = self._private_key(label)
        return Pkcs11Signer(private, self._describe_key(label, private))

    def _objects(self, label: str) -> list[pkcs11.Object]:
        return list(self.session.get_objects({Attribute.LABEL: label}))

    def _private_key(self, label: str) -> pkcs11.SignMixin:
        found = list(self.session.get_objects({Attribute.CLASS: ObjectClass.PRIVATE_KEY,
                                               Attribute.LABEL: label}))
        if not found:
            raise StationError(
                f"no private key labelled {label!r} in token {self._config.token!r}",
                "make one with `flashgate keygen --label ...`, or check --token",
            )
        if len(found) > 1:
            raise StationError(f"{len(found)} private keys are labelled {label!r} in token "
                               f"{self._config.token!r}; refusing to guess")
        private = found[0]
        if not isinstance(private, pkcs11.SignMixin):
            raise StationError(f"key {label!r} cannot sign (CKA_SIGN is false)")
        return private

    def _describe_key(self, label: str, private: pkcs11.SignMixin) -> HsmKey:
        key_id = bytes(private[Attribute.ID])
        publics = list(self.session.get_objects({Attribute.CLASS: ObjectClass.PUBLIC_KEY,
                                                 Attribute.ID: key_id}))
        if len(publics) != 1:
            raise StationError(f"key {label!r}: expected one public key with its CKA_ID, found "
                               f"{len(publics)}", "was it generated by `flashgate keygen`?")
        records = list(self.session.get_objects({Attribute.CLASS: ObjectClass.DATA,
                                                 Attribute.APPLICATION: APPLICATION,
                                                 Attribute.LABEL: label}))
        if len(records) != 1:
            raise StationError(
                f"key {label!r} has {len(records)} flashgate tier records; expected exactly one",
                "only keys made by `flashgate keygen` carry their tier",
            )
        record = _parse_tier_record(bytes(records[0][Attribute.VALUE]), label)
        spki = _public_spki(publics[0], record.algorithm)
        key = HsmKey(label=label, tier=record.tier, algorithm=record.algorithm, spki=spki)
        if bytes.fromhex(key.key_id) != key_id or record.key_id != key.key_id:
            raise StationError(
                f"key {label!r}: CKA_ID, public key and tier record disagree on the keyId "
                f"(CKA_ID {key_id.hex()}, public key {key.key_id}, record {record.key_id})",
                "the token was edited outside flashgate; do not sign with this key",
            )
        return key

    def _require_mechanisms(self, algorithm: Algorithm, *mechanisms: Mechanism) -> None:
        offered = self.session.token.slot.get_mechanisms()
        missing = [m.name for m in mechanisms if m not in offered]
        if missing:
            raise StationError(f"token {self._config.token!r} does not offer "
                               f"{', '.join('CKM_' + m for m in missing)}, needed for "
                               f"{algorithm} keys", "choose the other --algorithm")


@dataclass(frozen=True)
class _TierRecord:
    key_id: str
    tier: str
    algorithm: Algorithm


def _tier_record(key: HsmKey) -> bytes:
    return json.dumps({"v": 1, "keyId": key.key_id, "tier": key.tier,
                       "algorithm": str(key.algorithm)}, sort_keys=True).encode()


def _parse_tier_record(value: bytes, label: str) -> _TierRecord:
    try:
        data = json.loads(value)
        return _TierRecord(key_id=str(data["keyId"]), tier=str(data["tier"]),
                           algorithm=Algorithm(data["algorithm"]))
    except (ValueError, KeyError, TypeError) as err:
        raise StationError(f"key {label!r}: its tier record is not readable ({err})") from err


def _public_spki(public: pkcs11.Object, algorithm: Algorithm) -> bytes:
    """DER SubjectPublicKeyInfo from CKA_EC_PARAMS and CKA_EC_POINT."""
    params = bytes(public[Attribute.EC_PARAMS])
    point = _unwrap_point(bytes(public[Attribute.EC_POINT]), 32 if algorithm is
                          Algorithm.ED25519 else 65)
    key: ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey
    if algorithm is Algorithm.ED25519:
        if params not in (ED25519_OID_PARAMS, ED25519_NAME_PARAMS):
            raise StationError(f"public key is not on edwards25519 (CKA_EC_PARAMS {params.hex()})")
        key = ed25519.Ed25519PublicKey.from_public_bytes(point)
    else:
        if params != P256_PARAMS:
            raise StationError(f"public key is not on P-256 (CKA_EC_PARAMS {params.hex()})")
        key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    return key.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def _unwrap_point(value: bytes, size: int) -> bytes:
    """The raw point of CKA_EC_POINT, which most tokens (SoftHSM2 included) wrap in a DER OCTET
    STRING and some return bare. Decided by the exact expected length, never by guessing: a bare
    P-256 point can start with bytes that look like an OCTET STRING header."""
    if len(value) == size:
        return value
    if len(value) == size + 2 and value[0] == 0x04 and value[1] == size:
        return value[2:]
    raise StationError(f"CKA_EC_POINT of {len(value)} bytes is neither a {size}-byte point nor "
                       "one wrapped in a DER OCTET STRING")


def _destroy_quietly(obj: pkcs11.Object) -> None:
    with contextlib.suppress(p11.PKCS11Error):
        obj.destroy()


def _describe(err: BaseException) -> str:
    # python-pkcs11's exceptions mostly carry no text; their class name is the CKR_ code.
    text = str(err).strip()
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def hsm_args_config(module: str | None, token: str | None, pin_env: str | None,
                    environ: Mapping[str, str]) -> Pkcs11Config:
    """`Pkcs11Config` from the CLI's --pkcs11-module/--token/--pin-env and the environment.

    Raises:
        UsageError: No token label, no module, or no way to get the PIN.
    """
    label = token or environ.get(TOKEN_ENV)
    if not label:
        raise UsageError("no token label", f"pass --token LABEL or set ${TOKEN_ENV}")
    path = find_module(module, environ)
    return Pkcs11Config(module=path, token=label, pin=resolve_pin(pin_env, environ, label))

