"""Development file keys on disk: PKCS#8 PEM, mode 0600, with the key's tier written above it.

The private key is in the file, unprotected: for trying flashgate and for tests only. The lines
before "-----BEGIN PRIVATE KEY-----" are PEM explanatory text (RFC 7468 §2), which PEM readers
skip; the station reads its `tier:` line to refuse signing with a key of another tier, as it does
with the tier record of an HSM key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flashgate.signing.errors import UsageError
from flashgate.signing.filekeys import KeySigner, load_private_pem
from flashgate.signing.files import Output, read_text

WARNING = (
    "WARNING: this is a DEVELOPMENT key. Its private key is stored unprotected in a file; "
    "anyone who can read the file can sign as this key. Use an HSM (--label, --token) for "
    "keys that a real fleet trusts."
)
_BEGIN = "-----BEGIN"


@dataclass(frozen=True)
class DevKey:
    """A file key and the tier written with it ("root" for a root key; None if not recorded)."""

    signer: KeySigner
    tier: str | None
    path: Path


def dev_key_text(signer: KeySigner, tier: str) -> str:
    """The file's content: the header lines, then the PKCS#8 PEM."""
    header = (
        "flashgate development key: NOT FOR PRODUCTION (unprotected private key)\n"
        f"tier: {tier}\n"
        f"algorithm: {signer.algorithm}\n"
        f"keyId: {signer.key_id}\n"
    )
    return header + signer.private_pem().decode("ascii")


def dev_key_output(path: Path) -> Output:
    """Where `keygen --dev-file` writes: a new file, owner-only (0600), never overwritten."""
    return Output(path, flag="--dev-file", mode=0o600)


def load_dev_key(path: Path, flag: str) -> DevKey:
    """A development key file (ours, or any PKCS#8 Ed25519/P-256 PEM without a tier line).

    Raises:
        UsageError: Unreadable, not an unencrypted Ed25519/P-256 private key PEM.
    """
    text = read_text(path, flag)
    tier = None
    for line in text[: max(text.find(_BEGIN), 0)].splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "tier" and value.strip():
            tier = value.strip()
    try:
        signer = load_private_pem(text.encode("ascii"))
    except (ValueError, TypeError, UnicodeError) as err:
        raise UsageError(f"{flag} {path}: not an unencrypted Ed25519 or P-256 private key PEM "
                         f"({err})") from None
    return DevKey(signer=signer, tier=tier, path=path)
