"""Key ids, SubjectPublicKeyInfo handling, raw signatures, and the development file keys."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PrivateKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from flashgate.signing.filekeys import KeySigner, generate, load_private_pem
from flashgate.trust import (
    Algorithm,
    Reason,
    TrustError,
    key_id,
    load_spki,
    spki_from_pem,
    spki_to_pem,
    verify_signature,
)

P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
TBS = b"to be signed"


@pytest.fixture(scope="module", params=list(Algorithm))
def signer(request: pytest.FixtureRequest) -> KeySigner:
    return generate(request.param)


def _spki(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | Ed448PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_key_id_is_hex_sha256_of_the_spki(signer: KeySigner) -> None:
    assert signer.key_id == hashlib.sha256(signer.spki_der).hexdigest()
    assert key_id(signer.spki_der) == signer.key_id
    assert len(signer.key_id) == 64 and signer.key_id == signer.key_id.lower()


def test_load_spki_accepts_the_matching_algorithm(signer: KeySigner) -> None:
    load_spki(signer.spki_der, signer.algorithm)
    other = Algorithm.ES256 if signer.algorithm is Algorithm.ED25519 else Algorithm.ED25519
    for _ in range(2):  # a refusal is not remembered as a key
        with pytest.raises(TrustError) as caught:
            load_spki(signer.spki_der, other)
        assert caught.value.reason is Reason.SignatureInvalid
    # Loaded keys are remembered: the same object for the same bytes and algorithm.
    assert load_spki(bytearray(signer.spki_der), signer.algorithm) is load_spki(
        signer.spki_der, signer.algorithm)


@pytest.mark.parametrize(
    "spki",
    [
        b"",
        b"\x30\x00",
        b"junk",
        _spki(ec.generate_private_key(ec.SECP384R1())),
        _spki(ec.generate_private_key(ec.SECP256K1())),
        _spki(Ed448PrivateKey.generate()),
    ],
    ids=["empty", "empty sequence", "junk", "P-384", "secp256k1", "Ed448"],
)
def test_load_spki_refuses_other_keys(spki: bytes) -> None:
    for algorithm in Algorithm:
        with pytest.raises(TrustError) as caught:
            load_spki(spki, algorithm)
        assert caught.value.reason is Reason.SignatureInvalid


def _der(tag: int, body: bytes) -> bytes:
    assert len(body) < 128
    return bytes([tag, len(body)]) + body


# SubjectPublicKeyInfo of algorithms and curves cryptography knows by name but cannot load: it
# raises UnsupportedAlgorithm (not ValueError) for these.
_UNKNOWN_ALGORITHM = _der(0x30, _der(0x30, _der(0x06, b"\x2a\x03\x04")) + _der(0x03, bytes(33)))
_UNSUPPORTED_CURVE = _der(
    0x30,
    _der(0x30, _der(0x06, bytes.fromhex("2a8648ce3d0201")) + _der(0x06, b"\x2b\x81\x04\x00\x06"))
    + _der(0x03, b"\x00\x04" + b"\x01" * 28),
)  # secp112r1


@pytest.mark.parametrize(
    "spki", [_UNKNOWN_ALGORITHM, _UNSUPPORTED_CURVE], ids=["1.2.3.4", "secp112r1"]
)
def test_keys_cryptography_does_not_support_are_refused_as_data(spki: bytes) -> None:
    for algorithm in Algorithm:
        with pytest.raises(TrustError) as caught:
            load_spki(spki, algorithm)
        assert caught.value.reason is Reason.SignatureInvalid
    pem = spki_to_pem_text(spki)
    with pytest.raises(TrustError) as caught:
        spki_from_pem(pem)
    assert caught.value.reason is Reason.SignatureInvalid


def spki_to_pem_text(der: bytes) -> str:
    """PEM armour around any DER (spki_to_pem itself needs a key cryptography can load)."""
    body = base64.encodebytes(der).decode("ascii")
    return f"-----BEGIN PUBLIC KEY-----\n{body}-----END PUBLIC KEY-----\n"


def test_load_spki_refuses_non_canonical_encodings() -> None:
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    canonical = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    load_spki(canonical, Algorithm.ES256)
    # The same key with a compressed point would have another keyId: refused.
    point = key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
    )
    compressed = bytes.fromhex("3039301306072a8648ce3d020106082a8648ce3d030107032200") + point
    same = serialization.load_der_public_key(compressed)
    assert isinstance(same, ec.EllipticCurvePublicKey)
    assert same.public_numbers() == key.public_numbers()
    with pytest.raises(TrustError, match="canonical"):
        load_spki(compressed, Algorithm.ES256)
    with pytest.raises(TrustError):
        load_spki(canonical + b"\x00", Algorithm.ES256)


# --- Ed25519 point encodings (RFC 8032 §5.1.3), in plain integer arithmetic -------------------

_P = 2**255 - 19
_D = -121665 * pow(121666, -1, _P) % _P
_ED25519_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")


def _edwards_add(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    (x1, y1), (x2, y2) = a, b
    t = _D * x1 * x2 * y1 * y2
    return (x1 * y2 + x2 * y1) * pow(1 + t, -1, _P) % _P, (y1 * y2 + x1 * x2) * pow(
        1 - t, -1, _P
    ) % _P


def _encode_point(point: tuple[int, int]) -> bytes:
    x, y = point
    return (y | (x & 1) << 255).to_bytes(32, "little")


def _torsion_points() -> list[tuple[int, int]]:
    """The 8 points of order dividing 8: multiples of a point of order 8 (x from y, §5.1.3)."""
    y = 0x7A03AC9277FDC74EC6CC392CFA53202A0F67100D760B3CBA4FD84D3D706A17C7
    xx = (y * y - 1) * pow(_D * y * y + 1, -1, _P) % _P
    x = pow(xx, (_P + 3) // 8, _P)
    if (x * x - xx) % _P:
        x = x * pow(2, (_P - 1) // 4, _P) % _P
    points, point = [], (0, 1)
    for _ in range(8):
        points.append(point)
        point = _edwards_add(point, (x, y))
    assert point == (0, 1) and len(set(points)) == 8  # order exactly 8
    return points


_SMALL_ORDER = [_encode_point(point) for point in _torsion_points()]
# x = 0 with the sign bit set ("-0"): the identity and the point of order 2, spelled another way.
_MINUS_ZERO = [(1 | 1 << 255).to_bytes(32, "little"), (_P - 1 | 1 << 255).to_bytes(32, "little")]
# y >= p: another spelling of the point with y - p (here the identity, y = 0, and y = 5).
_Y_NOT_REDUCED = [
    (_P + 1).to_bytes(32, "little"),
    _P.to_bytes(32, "little"),
    (_P + 5).to_bytes(32, "little"),
]


@pytest.mark.parametrize(
    "point", _SMALL_ORDER + _MINUS_ZERO + _Y_NOT_REDUCED, ids=lambda b: b.hex()[:8] + ".."
)
def test_ed25519_keys_must_be_canonical_points_of_large_order(point: bytes) -> None:
    # A small-order key verifies forged signatures (the identity: (R = [S]B, S) for any message),
    # and a y >= p spelling would give one key two keyIds.
    with pytest.raises(TrustError) as caught:
        load_spki(_ED25519_SPKI_PREFIX + point, Algorithm.ED25519)
    assert caught.value.reason is Reason.SignatureInvalid


def test_other_ed25519_points_load() -> None:
    # Only the spellings above are refused; their neighbours load (a 32-byte string that is not a
    # point at all is not refused here: it never verifies anything).
    for y in (2, _P - 2, _P - 20):
        load_spki(_ED25519_SPKI_PREFIX + y.to_bytes(32, "little"), Algorithm.ED25519)
    load_spki(generate(Algorithm.ED25519).spki_der, Algorithm.ED25519)


def test_pem_round_trip(signer: KeySigner) -> None:
    pem = spki_to_pem(signer.spki_der)
    assert pem.startswith("-----BEGIN PUBLIC KEY-----")
    assert spki_from_pem(pem) == signer.spki_der
    assert signer.public_pem == pem


@pytest.mark.parametrize(
    "pem", ["", "junk", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "é"]
)
def test_spki_from_pem_refuses_junk(pem: str) -> None:
    with pytest.raises(TrustError) as caught:
        spki_from_pem(pem)
    assert caught.value.reason is Reason.SignatureInvalid


def test_signatures_verify_and_tampering_does_not(signer: KeySigner) -> None:
    signature = signer.sign(TBS)
    assert len(signature) == 64
    assert verify_signature(signer.algorithm, signer.spki_der, TBS, signature)
    assert not verify_signature(signer.algorithm, signer.spki_der, TBS + b"!", signature)
    flipped = bytes([signature[0] ^ 1]) + signature[1:]
    assert not verify_signature(signer.algorithm, signer.spki_der, TBS, flipped)
    assert not verify_signature(signer.algorithm, signer.spki_der, TBS, signature[:63])
    assert not verify_signature(signer.algorithm, signer.spki_der, TBS, signature + b"\x00")


def test_verify_signature_with_a_key_of_another_algorithm_raises(signer: KeySigner) -> None:
    other = Algorithm.ES256 if signer.algorithm is Algorithm.ED25519 else Algorithm.ED25519
    with pytest.raises(TrustError):
        verify_signature(other, signer.spki_der, TBS, signer.sign(TBS))


def test_es256_is_raw_r_s_over_sha256_of_the_input() -> None:
    signer = generate(Algorithm.ES256)
    raw = signer.sign(TBS)
    r, s = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
    public = serialization.load_der_public_key(signer.spki_der)
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(encode_dss_signature(r, s), TBS, ec.ECDSA(hashes.SHA256()))  # raises if not
    # Out-of-range scalars never verify.
    for bad in ((0, s), (r, 0), (r + P256_ORDER, s), (r, s + P256_ORDER)):
        if max(bad) < 2**256:
            forged = bad[0].to_bytes(32, "big") + bad[1].to_bytes(32, "big")
            assert not verify_signature(Algorithm.ES256, signer.spki_der, TBS, forged)


def test_es256_signatures_are_randomized_ed25519_deterministic() -> None:
    es, ed = generate(Algorithm.ES256), generate(Algorithm.ED25519)
    assert es.sign(TBS) != es.sign(TBS)
    assert ed.sign(TBS) == ed.sign(TBS)


# --- filekeys ------------------------------------------------------------------------------


@pytest.mark.parametrize("password", [None, b"correct horse"])
def test_private_pem_round_trip(signer: KeySigner, password: bytes | None) -> None:
    pem = signer.private_pem(password)
    assert pem.startswith(b"-----BEGIN ")
    assert (b"ENCRYPTED" in pem) is (password is not None)
    loaded = load_private_pem(pem, password)
    assert loaded.key_id == signer.key_id
    assert loaded.algorithm is signer.algorithm
    assert verify_signature(signer.algorithm, signer.spki_der, TBS, loaded.sign(TBS))


def test_a_wrong_password_is_refused(signer: KeySigner) -> None:
    with pytest.raises(ValueError):
        load_private_pem(signer.private_pem(b"right"), b"wrong")


@pytest.mark.parametrize(
    "key",
    [ec.generate_private_key(ec.SECP384R1()), rsa.generate_private_key(65537, 2048)],
    ids=["P-384", "RSA"],
)
def test_unsupported_private_keys_are_refused(
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ValueError):
        load_private_pem(pem)
    with pytest.raises(ValueError):
        KeySigner(key)  # type: ignore[arg-type]


def test_repr_shows_no_private_material(signer: KeySigner) -> None:
    assert repr(signer) == f"KeySigner({signer.algorithm}, {signer.key_id})"
