"""flashgate's trust core: pure, no I/O. Bytes, an explicit `now` and the stored floor in; a
verdict with a reason out. FORMAT.md (beside DESIGN.md) is the specification it implements;
docs/trust-core-api.md is the contract with its callers.
"""

from flashgate.trust.cbor import decode, encode
from flashgate.trust.cose import (
    CT_KEY,
    CT_RELEASE,
    CT_REVOCATION,
    MAX_ENVELOPE_BYTES,
    Sign1,
    Signer,
    decode_b64,
    parse_sign1,
    sign1,
    to_be_signed,
    verify_sign1,
)
from flashgate.trust.keyring import (
    ROOT,
    KeyRecord,
    KeyRing,
    endorsed_record,
    verify_endorsement,
    verify_revocation,
)
from flashgate.trust.keys import (
    PublicKey,
    key_id,
    load_spki,
    spki_from_pem,
    spki_to_pem,
    verify_signature,
)
from flashgate.trust.model import Algorithm, Reason, Tier, TrustError, Verdict, format_time
from flashgate.trust.payloads import KeyEndorsement, ReleaseManifest, Revocation
from flashgate.trust.release import (
    MAX_SIGNATURES,
    Policy,
    check_artifact,
    check_rollback,
    verify_release,
)
from flashgate.trust.rotation import (
    TRUSTED_PHASES,
    KeyState,
    Phase,
    PhaseResult,
    key_phase,
    parse_duration,
)

__all__ = [
    "CT_KEY",
    "CT_RELEASE",
    "CT_REVOCATION",
    "MAX_ENVELOPE_BYTES",
    "MAX_SIGNATURES",
    "ROOT",
    "TRUSTED_PHASES",
    "Algorithm",
    "KeyEndorsement",
    "KeyRecord",
    "KeyRing",
    "KeyState",
    "Phase",
    "PhaseResult",
    "Policy",
    "PublicKey",
    "Reason",
    "ReleaseManifest",
    "Revocation",
    "Sign1",
    "Signer",
    "Tier",
    "TrustError",
    "Verdict",
    "check_artifact",
    "check_rollback",
    "decode",
    "decode_b64",
    "encode",
    "endorsed_record",
    "format_time",
    "key_id",
    "key_phase",
    "load_spki",
    "parse_duration",
    "parse_sign1",
    "sign1",
    "spki_from_pem",
    "spki_to_pem",
    "to_be_signed",
    "verify_endorsement",
    "verify_release",
    "verify_revocation",
    "verify_sign1",
    "verify_signature",
]
