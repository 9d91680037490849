"""flashgate's trust core: pure, no I/O. Bytes, an explicit `now` and the stored floor in; a
verdict with a reason out. docs/format.md is the specification it implements;
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
    envelope_size,
    parse_sign1,
    sign1,
    to_be_signed,
    verify_sign1,
)
from flashgate.trust.durations import DURATION_PATTERN, format_duration, parse_duration
from flashgate.trust.keyring import (
    ROOT,
    ROOT_NOT_AFTER,
    KeyRecord,
    KeyRing,
    endorsed_record,
    root_key,
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
from flashgate.trust.payloads import KeyEndorsement, ReleaseManifest, Revocation
from flashgate.trust.release import (
    MAX_SIGNATURES,
    Policy,
    check_artifact,
    check_rollback,
    verify_release,
)
from flashgate.trust.rotation import (
    DEFAULT_OVERLAP,
    TRUSTED_PHASES,
    KeyPhase,
    KeyState,
    PhaseResult,
    key_phase,
)
from flashgate.trust.vocabulary import (
    Algorithm,
    DocEnum,
    Reason,
    Tier,
    TrustError,
    Verdict,
    format_time,
)

__all__ = [
    "CT_KEY",
    "CT_RELEASE",
    "CT_REVOCATION",
    "DEFAULT_OVERLAP",
    "DURATION_PATTERN",
    "MAX_ENVELOPE_BYTES",
    "MAX_SIGNATURES",
    "ROOT",
    "ROOT_NOT_AFTER",
    "TRUSTED_PHASES",
    "Algorithm",
    "DocEnum",
    "KeyEndorsement",
    "KeyPhase",
    "KeyRecord",
    "KeyRing",
    "KeyState",
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
    "envelope_size",
    "format_duration",
    "format_time",
    "key_id",
    "key_phase",
    "load_spki",
    "parse_duration",
    "parse_sign1",
    "root_key",
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
