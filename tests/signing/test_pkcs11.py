"""The PKCS#11 layer against a real SoftHSM2 token: keys made in the token, signatures that the
trust core verifies, and private keys that cannot be read out."""
from __future__ import annotations

import hashlib

import pkcs11
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11

from flashgate.signing.errors import StationError, UsageError
from flashgate.signing.pkcs11 import (
    APPLICATION,
    Pkcs11Token,
    _unwrap_point,
    find_module,
    resolve_pin,
)
from flashgate.trust import cose
from flashgate.trust.keys import key_id, verify_signature
from flashgate.trust.payloads import ReleaseManifest
from flashgate.trust.vocabulary import Algorithm, Tier

from .softhsm import SoftHsm

ALGORITHMS = [Algorithm.ED25519, Algorithm.ES256]


def _manifest() -> bytes:
    return ReleaseManifest(fleet="gw-1", product="gw-a", tier=Tier.APPLICATION, version="1.0.0",
                           security_version=1, artifact_name="fw.bin", artifact_size=3,
                           artifact_sha256=hashlib.sha256(b"abc").digest()).to_cbor()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_key_made_in_the_token_signs_what_the_trust_core_verifies(
        softhsm: SoftHsm, algorithm: Algorithm) -> None:
    label = softhsm.label("app")
    with Pkcs11Token(softhsm.config(), rw=True) as token:
        made = token.generate(label, "application", algorithm)
    assert made.key_id == key_id(made.spki) and made.algorithm is algorithm
    assert serialization.load_pem_public_key(made.public_pem.encode())

    with Pkcs11Token(softhsm.config()) as token:
        signer = token.signer(label)
        assert (signer.algorithm, signer.key_id, signer.key.tier) == (
            algorithm, made.key_id, "application")
        envelope = cose.sign1(signer, cose.CT_RELEASE, _manifest())
        tbs = b"to be signed"
        raw = signer.sign(tbs)

    message = cose.parse_sign1(envelope, cose.CT_RELEASE)
    cose.verify_sign1(message, algorithm, made.spki)  # raises unless valid
    assert message.kid == bytes.fromhex(made.key_id)
    assert len(raw) == 64 and verify_signature(algorithm, made.spki, tbs, raw)
    assert not verify_signature(algorithm, made.spki, b"other", raw)


def test_es256_signature_is_raw_r_s_over_sha256(softhsm: SoftHsm) -> None:
    label = softhsm.label("es")
    with Pkcs11Token(softhsm.config(), rw=True) as token:
        made = token.generate(label, "os", Algorithm.ES256)
        signature = token.signer(label).sign(b"message")
    public = serialization.load_der_public_key(made.spki)
    assert isinstance(public, ec.EllipticCurvePublicKey)
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    public.verify(encode_dss_signature(r, s), b"message", ec.ECDSA(hashes.SHA256()))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_private_key_never_leaves_the_token(softhsm: SoftHsm, algorithm: Algorithm) -> None:
    label = softhsm.label("secret")
    with Pkcs11Token(softhsm.config(), rw=True) as token:
        token.generate(label, "bootloader", algorithm)
        session = token.session
        private = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=label)
        assert private[Attribute.SENSITIVE] is True
        assert private[Attribute.ALWAYS_SENSITIVE] is True
        assert private[Attribute.EXTRACTABLE] is False
        assert private[Attribute.NEVER_EXTRACTABLE] is True
        assert private[Attribute.TOKEN] is True and private[Attribute.PRIVATE] is True
        assert private[Attribute.SIGN] is True and private[Attribute.DERIVE] is False

        with pytest.raises(p11.AttributeSensitive):
            private[Attribute.VALUE]  # the private scalar / seed: refused
        with pytest.raises(p11.PKCS11Error):
            private[Attribute.EXTRACTABLE] = True  # cannot be made extractable later
        with pytest.raises(p11.PKCS11Error):
            private[Attribute.SENSITIVE] = False
        with pytest.raises(p11.PKCS11Error):
            private.copy({Attribute.EXTRACTABLE: True})
        wrapping = session.generate_key(KeyType.AES, 256, store=False,
                                        template={Attribute.WRAP: True})
        assert isinstance(wrapping, pkcs11.WrapMixin)
        with pytest.raises(p11.PKCS11Error):  # CKR_KEY_UNEXTRACTABLE
            wrapping.wrap_key(private, mechanism=Mechanism.AES_KEY_WRAP_PAD)


def test_key_objects_carry_key_id_label_and_a_locked_tier_record(softhsm: SoftHsm) -> None:
    label = softhsm.label("tagged")
    with Pkcs11Token(softhsm.config(), rw=True) as token:
        made = token.generate(label, "driver", Algorithm.ED25519)
        session = token.session
        for cls in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY):
            obj = session.get_key(object_class=cls, label=label)
            assert bytes(obj[Attribute.ID]) == bytes.fromhex(made.key_id)
        [record] = list(session.get_objects({Attribute.CLASS: ObjectClass.DATA,
                                             Attribute.APPLICATION: APPLICATION,
                                             Attribute.LABEL: label}))
        assert record[Attribute.PRIVATE] is True and record[Attribute.MODIFIABLE] is False
        assert b'"tier": "driver"' in bytes(record[Attribute.VALUE])
        with pytest.raises(p11.PKCS11Error):
            record[Attribute.VALUE] = b'{"tier": "bootloader"}'
        found = token.find(label)
    assert (found.tier, found.key_id, found.algorithm) == ("driver", made.key_id,
                                                           Algorithm.ED25519)


def test_a_label_names_one_key(softhsm: SoftHsm) -> None:
    label = softhsm.label("dup")
    with Pkcs11Token(softhsm.config(), rw=True) as token:
        token.generate(label, "config", Algorithm.ED25519)
        with pytest.raises(UsageError, match="already holds objects labelled"):
            token.generate(label, "config", Algorithm.ES256)


def test_a_key_without_a_tier_record_is_not_used(softhsm: SoftHsm) -> None:
    """A key made by another tool carries no tier: the station will not guess one."""
    label = softhsm.label("foreign")
    with Pkcs11Token(softhsm.config(), rw=True) as token:
        params = token.session.create_domain_parameters(
            KeyType.EC, {Attribute.EC_PARAMS: bytes.fromhex("06082a8648ce3d030107")}, local=True)
        params.generate_keypair(store=True, label=label, id=b"\x01" * 32)
        with pytest.raises(StationError, match="tier record"):
            token.signer(label)


def test_missing_key_label(softhsm: SoftHsm) -> None:
    with Pkcs11Token(softhsm.config()) as token, pytest.raises(
            StationError, match="no private key labelled 'nope'"):
        token.signer("nope")


def test_wrong_pin_is_a_clear_error(softhsm: SoftHsm) -> None:
    with pytest.raises(StationError, match="wrong PIN") as caught:
        Pkcs11Token(softhsm.config(pin="not-the-pin")).__enter__()
    assert caught.value.exit_code == 1
    assert "not-the-pin" not in caught.value.message + caught.value.hint


def test_missing_token_lists_the_tokens_present(softhsm: SoftHsm) -> None:
    with pytest.raises(StationError, match=r"no token labelled 'absent'.*'flashgate-test'"):
        Pkcs11Token(softhsm.config(token="absent")).__enter__()


def test_module_and_pin_resolution() -> None:
    with pytest.raises(UsageError, match="does not exist"):
        find_module("/nonexistent/libpkcs11.so", {})
    with pytest.raises(UsageError, match="does not exist"):
        find_module(None, {"FLASHGATE_PKCS11_MODULE": "/nonexistent/lib.so"})
    assert resolve_pin("MY_PIN", {"MY_PIN": "1234"}, "t") == "1234"
    assert resolve_pin(None, {"FLASHGATE_PKCS11_PIN": "5678"}, "t") == "5678"
    with pytest.raises(UsageError, match="MY_PIN is not set"):
        resolve_pin("MY_PIN", {}, "t")


def test_ec_point_with_and_without_its_octet_string_wrapper() -> None:
    point = bytes([4]) + bytes(range(64))
    assert _unwrap_point(point, 65) == point
    assert _unwrap_point(b"\x04\x41" + point, 65) == point
    ed = bytes(range(32))
    assert _unwrap_point(ed, 32) == ed and _unwrap_point(b"\x04\x20" + ed, 32) == ed
    # A bare P-256 point whose X starts with 0x3f looks like an OCTET STRING header: decided by
    # the length, it is taken as the bare point it is.
    tricky = b"\x04\x3f" + bytes(63)
    assert _unwrap_point(tricky, 65) == tricky
    with pytest.raises(StationError, match="neither"):
        _unwrap_point(b"\x04\x10" + bytes(16), 32)

