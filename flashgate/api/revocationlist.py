"""RevocationList: the keys revoked in a fleet, for good, whatever happens to their SigningKeys."""

import re
from typing import ClassVar

from pydantic import ConfigDict, Field, field_validator

from flashgate.api.schema import (
    AGE_COLUMN,
    BASE64_PATTERN,
    DNS_SUBDOMAIN_PATTERN,
    MAX_ENVELOPE_BASE64,
    PEM_PUBLIC_KEY_PATTERN,
    SHA256_HEX_PATTERN,
    CRDNames,
    Resource,
    Timestamp,
    _cel,
    _Model,
)
from flashgate.trust.vocabulary import Tier

REVOCATION_LIST_NAME = "revocations"
"""A fleet has one RevocationList, with this name."""
MAX_REVOKED_KEYS = 4096


class RevokedKey(_Model):
    """One revoked key, as recorded when its revocation was first observed."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            {
                "rule": "!has(oldSelf.revocation) || has(self.revocation)",
                "message": "a recorded root-signed revocation is never removed",
            }
        )
    )

    revoked_at: Timestamp = Field(description="When the revocation was recorded (RFC 3339).")
    signing_key: str = Field(
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN_PATTERN,
        description="The name of the SigningKey that was revoked (it may since be deleted).",
    )
    tier: Tier = Field(description="The tier the key was endorsed for.")
    public_key: str = Field(
        max_length=2048,
        pattern=PEM_PUBLIC_KEY_PATTERN,
        description="The revoked public key (PEM), so the record explains itself.",
    )
    not_after: Timestamp | None = Field(
        default=None,
        description=(
            "The end of the key's validity (its SigningKey's notAfter): until then devices "
            "need the root-signed revocation in the trust bundle."
        ),
    )
    revocation: str | None = Field(
        default=None,
        min_length=4,
        max_length=MAX_ENVELOPE_BASE64,
        pattern=BASE64_PATTERN,
        description=(
            "The fleet root's signed revocation of the key (base64 COSE_Sign1), once a "
            "SigningKey carried one: what devices need to distrust the key. Once set it is never "
            "removed."
        ),
    )


class RevocationListSpec(_Model):
    """The revoked keyIds of a fleet."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            {
                "rule": "!has(oldSelf.keys) || "
                "(has(self.keys) && oldSelf.keys.all(k, k in self.keys))",
                "message": "a revoked key stays revoked: entries of a RevocationList are never "
                "removed",
            }
        )
    )

    keys: dict[str, RevokedKey] = Field(
        default_factory=dict,
        max_length=MAX_REVOKED_KEYS,
        description=(
            "Revoked keys by keyId (SHA-256 of the DER SubjectPublicKeyInfo, 64 lowercase hex). "
            "A SigningKey whose keyId is here is Revoked, whatever its own spec says, and a "
            "release it signed is refused and withdrawn. Entries are added by the operator when "
            "it sees a SigningKey revoked (or by the security team); the API server refuses "
            f"removing one. At most {MAX_REVOKED_KEYS}."
        ),
        json_schema_extra=_cel(
            {
                "rule": f"self.all(k, k.matches('{SHA256_HEX_PATTERN}'))",
                "message": "each key of keys must be a keyId: 64 lowercase hex digits",
            }
        ),
    )

    @field_validator("keys")
    @classmethod
    def _key_ids(cls, value: dict[str, RevokedKey]) -> dict[str, RevokedKey]:
        bad = [k for k in value if not re.fullmatch(SHA256_HEX_PATTERN, k)]
        if bad:
            raise ValueError(f"keys must be keyIds (64 lowercase hex digits), not {bad[:3]}")
        return value


class RevocationList(Resource):
    """The keys revoked in a fleet (its namespace): one object, named revocations.

    Revocation is the answer to a leaked key, so it must outlive the SigningKey: deleting a
    revoked SigningKey and applying it again, or applying the same public key under another
    name, still gives Revoked. The API server refuses removing an entry (CEL) and deleting the
    list (admission policy, deploy/), as it does for rollback floors.
    """

    model_config = ConfigDict(
        json_schema_extra=_cel(
            {
                "rule": f"self.metadata.name == '{REVOCATION_LIST_NAME}'",
                "message": f"a fleet has one RevocationList, named {REVOCATION_LIST_NAME}",
            }
        ),
    )
    crd: ClassVar[CRDNames] = CRDNames(
        kind="RevocationList",
        plural="revocationlists",
        singular="revocationlist",
        short_names=("rvl",),
        printer_columns=(
            AGE_COLUMN,
        ),
    )

    spec: RevocationListSpec = Field(
        default_factory=RevocationListSpec,
        description="The revoked keys of the fleet.",
    )
