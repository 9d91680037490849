"""File keys for development: an in-memory `Signer` (flashgate.trust.cose) from a private key.

Production keys live in an HSM (PKCS#11); this module is for development keys and tests. It does
no file I/O: PEM comes in and goes out as bytes, and the caller decides where they are stored.
ES256 mirrors the HSM path: SHA-256 of ToBeSigned on the host, the digest signed, the signature
returned as raw r||s (32 + 32 bytes, big-endian; docs/format.md "Envelope").
"""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature

from flashgate.trust.keys import key_id, spki_to_pem
from flashgate.trust.vocabulary import Algorithm

PrivateKey = Ed25519PrivateKey | ec.EllipticCurvePrivateKey


class KeySigner:
    """Signs ToBeSigned with an in-memory Ed25519 or P-256 private key."""

    def __init__(self, private_key: PrivateKey) -> None:
        """
        Raises:
            ValueError: for a key that is neither Ed25519 nor EC P-256.
        """
        if isinstance(private_key, Ed25519PrivateKey):
            self._algorithm = Algorithm.ED25519
        elif isinstance(private_key, ec.EllipticCurvePrivateKey) and isinstance(
            private_key.curve, ec.SECP256R1
        ):
            self._algorithm = Algorithm.ES256
        else:
            raise ValueError("only Ed25519 and EC P-256 private keys are supported")
        self._key = private_key
        self._spki = private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @property
    def algorithm(self) -> Algorithm:
        return self._algorithm

    @property
    def key_id(self) -> str:
        """Hex SHA-256 of the public key's DER SubjectPublicKeyInfo."""
        return key_id(self._spki)

    @property
    def spki_der(self) -> bytes:
        """The public key as DER SubjectPublicKeyInfo (what endorsements carry)."""
        return self._spki

    @property
    def public_pem(self) -> str:
        """The public key as PEM (what a SigningKey's `publicKey` holds)."""
        return spki_to_pem(self._spki)

    def sign(self, tbs: bytes) -> bytes:
        """Raw 64-byte signature of `tbs`: Ed25519, or ES256 r||s over SHA-256(tbs)."""
        if isinstance(self._key, Ed25519PrivateKey):
            return self._key.sign(tbs)
        digest = hashlib.sha256(tbs).digest()
        der = self._key.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256())))
        r, s = decode_dss_signature(der)
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def private_pem(self, password: bytes | None = None) -> bytes:
        """PEM PKCS#8 bytes of the private key, encrypted when `password` is given."""
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(password)
            if password
            else serialization.NoEncryption()
        )
        return self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )

    def __repr__(self) -> str:  # never the private key
        return f"KeySigner({self._algorithm}, {self.key_id})"


def generate(algorithm: Algorithm) -> KeySigner:
    """A fresh random key of `algorithm`."""
    if Algorithm(algorithm) is Algorithm.ED25519:
        return KeySigner(Ed25519PrivateKey.generate())
    return KeySigner(ec.generate_private_key(ec.SECP256R1()))


def load_private_pem(data: bytes, password: bytes | None = None) -> KeySigner:
    """A signer from PEM private key bytes (PKCS#8, optionally encrypted with `password`).

    Raises:
        ValueError: when the bytes are not such a key, the password is wrong, or the key is of
            another type.
        TypeError: when a password is given for an unencrypted key, or missing for an
            encrypted one.
    """
    key = serialization.load_pem_private_key(data, password=password)
    if not isinstance(key, Ed25519PrivateKey | ec.EllipticCurvePrivateKey):
        raise ValueError(f"unsupported private key type {type(key).__name__}")
    return KeySigner(key)
