"""SigningKey: a public key the fleet root endorsed for one tier of a fleet."""

from datetime import timedelta
from typing import ClassVar

from pydantic import ConfigDict, Field

from flashgate.api.schema import (
    _OBSERVED_GENERATION,
    AGE_COLUMN,
    BASE64_PATTERN,
    DNS_SUBDOMAIN_PATTERN,
    MAX_ENVELOPE_BASE64,
    MAX_ENVELOPE_BYTES,
    PEM_PUBLIC_KEY_PATTERN,
    REASON_PATTERN,
    SHA256_HEX_PATTERN,
    Condition,
    CRDNames,
    PrinterColumn,
    Resource,
    Timestamp,
    _cel,
    _conditions_field,
    _immutable,
    _Model,
    _StatusModel,
)
from flashgate.trust.durations import DURATION_PATTERN, parse_duration
from flashgate.trust.rotation import DEFAULT_OVERLAP, KeyPhase, KeyState
from flashgate.trust.vocabulary import Algorithm, DocEnum, Tier


class SigningKeyConditionType(DocEnum):
    """The condition types of a SigningKey's status."""

    ENDORSED = (
        "Endorsed",
        "True when spec.endorsement is a valid COSE_Sign1 by the fleet root over a key payload "
        "that agrees with the spec (fleet, tier, keyId, algorithm, publicKey, notBefore, "
        "notAfter).",
    )
    TRUSTED = (
        "Trusted",
        "True while the key is in the trust set of its tier (Staged, Active or Retiring, inside "
        "its validity).",
    )
    READY = (
        "Ready",
        "True when the key is Active, the primary signer of its tier; False in every other "
        "phase, its reason saying why.",
    )
    DEVICES_TOLD = (
        "DevicesToldOfRevocation",
        "Set on a revoked key only. True when the fleet's trust bundle carries a root-signed "
        "revocation of the key; False when none was given (spec.revocation): devices keep "
        "trusting the key until its notAfter, since only the root can tell them otherwise.",
    )


class SigningKeySpec(_Model):
    """The desired state of a SigningKey: public key, tier, validity, endorsement, rotation."""

    model_config = ConfigDict(
        json_schema_extra=_cel(
            {
                "rule": "self.notAfter > self.notBefore",
                "message": "notAfter must be later than notBefore",
            },
            {
                # A time the schema takes but code cannot (year 0) must stop here: one such key
                # used to fail every release of its fleet.
                "rule": "self.notBefore >= timestamp('1970-01-01T00:00:00Z') && "
                "self.notAfter <= timestamp('9999-12-31T23:59:59Z')",
                "message": "notBefore and notAfter must lie between 1970-01-01T00:00:00Z and "
                "9999-12-31T23:59:59Z (the times an endorsement can carry)",
            },
            {
                "rule": "!has(self.activateAt) || "
                "(self.activateAt >= self.notBefore && self.activateAt < self.notAfter)",
                "message": "activateAt must lie inside the validity: notBefore <= activateAt "
                "< notAfter",
            },
            {
                "rule": "!has(self.overlap) || has(self.replaces)",
                "message": "overlap is the dual-trust window with the key named in replaces: "
                "set replaces too, or remove overlap",
            },
            {
                "rule": "!has(self.revocation) || self.revoked",
                "message": "revocation is the root-signed statement of a revoked key: set "
                "revoked: true together with it",
            },
        )
    )

    tier: Tier = Field(
        description=(
            "The one tier this key may sign releases of: a release of tier T verifies only with "
            "keys of tier T. Must equal the tier in the endorsement. Required. Immutable: for "
            "another tier, generate and endorse another key."
        ),
        json_schema_extra=_cel(
            _immutable("tier", "a key signs for one tier for life; generate and endorse a new "
                       "key for another tier")
        ),
    )
    algorithm: Algorithm = Field(
        description=(
            "The signature algorithm; must match publicKey and the endorsement. The verifier "
            "takes the algorithm from this key, never from a message: an envelope whose COSE "
            "alg differs is refused. Required. Immutable."
        ),
        json_schema_extra=_cel(
            _immutable("algorithm", "it is bound to publicKey; generate and endorse a new key")
        ),
    )
    public_key: str = Field(
        min_length=1,
        max_length=2048,
        pattern=PEM_PUBLIC_KEY_PATTERN,
        description=(
            "The public key as a PEM SubjectPublicKeyInfo (a '-----BEGIN PUBLIC KEY-----' "
            "block) of the type algorithm names. status.keyId is the hex SHA-256 of its DER "
            "bytes. The private key never enters the cluster: it stays in the signing station's "
            "HSM. Required; at most 2048 characters. Immutable: a new key is a new SigningKey."
        ),
        json_schema_extra=_cel(
            _immutable("publicKey", "a new key is a new SigningKey (generate and endorse it)"),
            pattern_message="publicKey must be a PEM public key: a '-----BEGIN PUBLIC KEY-----' "
            "line, lines of base64, and a '-----END PUBLIC KEY-----' line",
        ),
    )
    not_before: Timestamp = Field(
        description=(
            "Start of the key's validity, an RFC 3339 date-time such as 2026-01-01T00:00:00Z; "
            "the key is not trusted before it. Must equal notBefore in the endorsement, which "
            "counts whole seconds. Required; must be earlier than notAfter."
        ),
    )
    not_after: Timestamp = Field(
        description=(
            "End of the key's validity, an RFC 3339 date-time. From this instant the key is "
            "Expired: no new release verifies with it (releases it published stay Published). "
            "Must equal notAfter in the endorsement. Required; must be later than notBefore."
        ),
    )
    endorsement: str = Field(
        min_length=4,
        max_length=MAX_ENVELOPE_BASE64,
        pattern=BASE64_PATTERN,
        description=(
            "The fleet root's endorsement of this key, made offline by `flashgate endorse`: "
            "standard base64 (with padding) of a COSE_Sign1 (RFC 9052) by the root over a key "
            "payload whose fleet (this namespace), tier, keyId, algorithm, publicKey, notBefore "
            "and notAfter must all agree with this spec, else the key is Invalid. Only an "
            "endorsed key is ever trusted; the verifier sidecar checks the endorsement against "
            f"the root it was configured with. Required; at most {MAX_ENVELOPE_BASE64} "
            f"characters (a {MAX_ENVELOPE_BYTES // 1024} KiB envelope)."
        ),
        json_schema_extra=_cel(
            pattern_message="endorsement must be standard base64 with padding of a COSE_Sign1 "
            "envelope, as `flashgate endorse` writes it"
        ),
    )
    replaces: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN_PATTERN,
        description=(
            "Name of the SigningKey of the same tier, in this namespace, that this key rotates "
            "out. When this key becomes Active the replaced key becomes Retiring, stays trusted "
            "for overlap, then becomes Retired. Optional; a DNS subdomain name of at most 253 "
            "characters; cannot name this SigningKey itself."
        ),
        json_schema_extra=_cel(
            pattern_message="replaces must be the name of a SigningKey: lowercase letters, "
            "digits, '-' and '.'"
        ),
    )
    overlap: str | None = Field(
        default=None,
        min_length=2,
        max_length=32,
        pattern=DURATION_PATTERN,
        description=(
            "The dual-trust window of a rotation: how long the key named in replaces stays "
            "trusted (Retiring) after this key becomes Active, so that devices and releases in "
            "flight catch up. Hours, minutes and seconds in that order, integers only, e.g. "
            f"{DEFAULT_OVERLAP}, 36h or 1h30m; 0s ends trust in the old key at once. Default "
            f"{DEFAULT_OVERLAP} (7 days) when replaces is set. Only valid together with replaces."
        ),
        json_schema_extra=_cel(
            pattern_message="overlap must be a duration in hours, minutes and seconds, in that "
            "order, such as 168h or 1h30m"
        ),
    )
    activate_at: Timestamp | None = Field(
        default=None,
        description=(
            "When this key becomes the primary signer (Active), an RFC 3339 date-time. Until "
            "then it is Staged: trusted and distributed to devices in the trust bundle, but not "
            "primary. Optional; when unset the key is Active from notBefore. Must lie inside "
            "the validity: notBefore <= activateAt < notAfter."
        ),
    )
    revoked: bool = Field(
        default=False,
        description=(
            "Set to true to revoke the key. It leaves the trust set at once, with or without a "
            "root signature: releases it signed are no longer accepted (KeyRevoked) and releases "
            "it published are Withdrawn from their channels. Default false. One-way: the API "
            "server refuses setting it back to false (a revoked key stays revoked: generate and "
            "endorse a new key)."
        ),
        json_schema_extra=_cel(
            {
                "rule": "self || !oldSelf",
                "message": "a revoked key stays revoked: revoked cannot go back from true to "
                "false; generate and endorse a new key",
            }
        ),
    )
    revocation: str | None = Field(
        default=None,
        min_length=4,
        max_length=MAX_ENVELOPE_BASE64,
        pattern=BASE64_PATTERN,
        description=(
            "The fleet root's revocation of this key for devices, made offline by `flashgate "
            "revoke`: standard base64 of a COSE_Sign1 by the root over a revocation payload "
            "(fleet, keyId, revokedAt, reason). The cluster distrusts the key on revoked: true "
            "alone; devices need this statement, which is published in the trust bundle. "
            f"Optional; at most {MAX_ENVELOPE_BASE64} characters. Only valid with revoked: true."
        ),
        json_schema_extra=_cel(
            pattern_message="revocation must be standard base64 with padding of a COSE_Sign1 "
            "envelope, as `flashgate revoke` writes it"
        ),
    )

    def effective_overlap(self) -> timedelta | None:
        """The rotation overlap: ``overlap``, else 168h when ``replaces`` is set, else None."""
        if self.overlap is not None:
            return timedelta(seconds=parse_duration(self.overlap))
        if self.replaces is not None:
            return timedelta(seconds=parse_duration(DEFAULT_OVERLAP))
        return None

    def key_state(self, name: str, *, endorsed: bool | None, revoked: bool = False) -> KeyState:
        """What the rotation state machine needs of this key: the one place a spec becomes a
        `KeyState`. `revoked` adds what the spec cannot say (the keyId is on the fleet's
        RevocationList, or another SigningKey with the same public key is revoked)."""
        overlap = self.effective_overlap()
        return KeyState(
            name=name,
            endorsed=endorsed,
            revoked=self.revoked or revoked,
            not_before=int(self.not_before.timestamp()),
            not_after=int(self.not_after.timestamp()),
            activate_at=int(self.activate_at.timestamp()) if self.activate_at else None,
            replaces=self.replaces,
            overlap_seconds=int(overlap.total_seconds()) if overlap is not None else 0,
        )


class SigningKeyStatus(_StatusModel):
    """The observed state of a SigningKey, written by the operator only."""

    phase: KeyPhase | None = Field(
        default=None,
        description=(
            "Where the key is in its life, computed by the operator from the spec, the "
            "endorsement check and the current time. Time-driven changes (activation, end of "
            "overlap, expiry) happen on their own at nextTransition, without any edit."
        ),
    )
    key_id: str | None = Field(
        default=None,
        min_length=64,
        max_length=64,
        pattern=SHA256_HEX_PATTERN,
        description=(
            "The key's identifier: SHA-256 of the DER SubjectPublicKeyInfo in publicKey, 64 "
            "lowercase hex digits. Envelopes name their signer by it (COSE kid)."
        ),
    )
    trusted_from: Timestamp | None = Field(
        default=None,
        description=(
            "Start of the interval in which the key is in the trust set of its tier (RFC 3339). "
            "Unset when the key is not trusted at any time (Pending, Invalid, Revoked)."
        ),
    )
    trusted_until: Timestamp | None = Field(
        default=None,
        description=(
            "End of that interval: notAfter, or the end of the overlap once a newer key "
            "replaced this one (RFC 3339). Unset when the key is not trusted at any time."
        ),
    )
    next_transition: Timestamp | None = Field(
        default=None,
        description=(
            "When the phase next changes by time alone (activation, end of overlap, expiry); "
            "the operator re-evaluates the key then. Unset when no such change is ahead."
        ),
    )
    reason: str | None = Field(
        default=None,
        min_length=1,
        max_length=1024,
        pattern=REASON_PATTERN,
        description=(
            "Why the key is in its phase, a CamelCase word; for Invalid, why the endorsement was "
            "refused (e.g. SignatureInvalid, UnknownKey, ManifestMismatch)."
        ),
    )
    message: str | None = Field(
        default=None,
        max_length=32768,
        description="Why the key is in its phase, for people: what was expected and observed.",
    )
    conditions: list[Condition] = _conditions_field(SigningKeyConditionType)
    observed_generation: int | None = Field(default=None, ge=0, description=_OBSERVED_GENERATION)


class SigningKey(Resource):
    """A public key that the fleet root endorsed for one tier of a fleet (its namespace).

    The key is trusted for releases of its tier while it is Staged, Active or Retiring and inside
    its validity; revoking it (spec.revoked) distrusts it at once. The private key stays offline
    in the signing station. Created by `flashgate keygen` and `flashgate endorse`.
    """

    model_config = ConfigDict(
        json_schema_extra=_cel(
            {
                "rule": "!has(self.spec.replaces) || self.spec.replaces != self.metadata.name",
                "message": "a SigningKey cannot replace itself: spec.replaces names the older "
                "SigningKey that this one rotates out",
                "fieldPath": ".spec.replaces",
            }
        ),
    )
    crd: ClassVar[CRDNames] = CRDNames(
        kind="SigningKey",
        plural="signingkeys",
        singular="signingkey",
        short_names=("sk", "signkey"),
        printer_columns=(
            PrinterColumn("Phase", "string", ".status.phase", "Where the key is in its life."),
            PrinterColumn("Tier", "string", ".spec.tier", "The tier the key may sign."),
            PrinterColumn("Algorithm", "string", ".spec.algorithm", "The signature algorithm.",
                          priority=1),
            PrinterColumn("KeyID", "string", ".status.keyId",
                          "SHA-256 of the key's SubjectPublicKeyInfo.", priority=1),
            # A string, not a date: kubectl shows a date column as an age, and a time ahead
            # as <invalid>.
            PrinterColumn("Until", "string", ".status.trustedUntil",
                          "When the key stops being trusted."),
            PrinterColumn("Ready", "string", '.status.conditions[?(@.type=="Ready")].status',
                          "Whether the key is the Active signer of its tier.", priority=1),
            PrinterColumn("Reason", "string", ".status.reason", "Why the key is in its phase."),
            AGE_COLUMN,
        ),
        selectable_fields=(".status.phase", ".spec.tier"),
    )

    spec: SigningKeySpec = Field(
        description=(
            "The key: its tier, algorithm and public key (immutable), validity, the root's "
            "endorsement, rotation (replaces, overlap, activateAt) and revocation."
        ),
    )
    status: SigningKeyStatus | None = Field(
        default=None,
        description="The key's phase, identifier and trust window, written by the operator.",
    )
