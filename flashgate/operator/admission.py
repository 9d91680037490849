"""What the admission webhook refuses at `kubectl apply` time, without downloading anything.

Fast, clear feedback for people and GitOps tools; never the only gate: the reconcile loop and the
verifier sidecar do the full check. Pure functions over the objects the operator already indexes.
Parsing an envelope here is not verification: no signature is checked and nothing is trusted.
"""
from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

from flashgate.trust import Algorithm, TrustError
from flashgate.trust.cose import CT_KEY, CT_RELEASE, decode_b64, parse_sign1
from flashgate.trust.keys import key_id, load_spki, spki_from_pem

NamedSpec = tuple[str, Mapping[str, Any]]


def _key_ids(keys: Iterable[NamedSpec]) -> dict[str, NamedSpec]:
    by_id = {}
    for name, spec in keys:
        try:
            by_id[key_id(spki_from_pem(_text(spec, "publicKey")))] = (name, spec)
        except (TrustError, ValueError):
            continue  # a malformed key is reported on the key itself, not here
    return by_id


def release_problems(*, fleet: str, spec: Mapping[str, Any],
                     keys: Iterable[NamedSpec],
                     floor: int | None, revoked: Collection[str] = ()) -> list[str]:
    """Reasons to refuse this FirmwareRelease now; empty when admission has no objection.

    `revoked` holds the fleet's revoked keyIds (its RevocationList, and every SigningKey that
    says revoked): a key revoked under one name is revoked under every name."""
    problems: list[str] = []
    tier = spec.get("tier")
    by_id = _key_ids(keys)
    signatures = spec.get("signatures")
    if not isinstance(signatures, list):
        signatures = []
        problems.append("spec.signatures is not a list of envelopes")
    elif not signatures:
        problems.append(f"spec.signatures is empty: every {tier} release, config and models "
                        "included, must be signed by a key of its tier (flashgate sign)")
    for index, text in enumerate(signatures):
        where = f"spec.signatures[{index}]"
        try:
            envelope = parse_sign1(decode_b64(text), CT_RELEASE)
        except TrustError as error:
            problems.append(f"{where} is not a flashgate release signature: {error.message}")
            continue
        kid = envelope.kid.hex()
        known = by_id.get(kid)
        if known is None:
            problems.append(f"{where} is signed by key {kid[:16]}…, which no SigningKey in fleet "
                            f"{fleet} holds (UnknownKey): apply its endorsed SigningKey first")
            continue
        name, key_spec = known
        if key_spec.get("tier") != tier:
            problems.append(f"{where} is signed by SigningKey {name} of tier "
                            f"{key_spec.get('tier')}; a {tier} release needs a {tier} key "
                            "(KeyNotTrustedForTier)")
        elif key_spec.get("revoked") or kid in revoked:
            problems.append(f"{where} is signed by SigningKey {name}, whose key {kid[:16]}… is "
                            f"revoked in fleet {fleet} (KeyRevoked)")
    security_version = spec.get("securityVersion")
    if floor is not None and isinstance(security_version, int) and security_version < floor:
        problems.append(f"securityVersion {security_version} is below the rollback floor {floor} "
                        f"for {spec.get('product')}/{tier} (RollbackRejected)")
    return problems


def key_warnings(spec: Mapping[str, Any], revoked: Collection[str]) -> list[str]:
    """What to tell whoever applies this SigningKey without refusing it."""
    kid = key_id_of(spec)
    if kid is not None and kid in revoked and not spec.get("revoked"):
        return [f"key {kid} is on this fleet's RevocationList: this SigningKey will be Revoked, "
                "whatever spec.revoked says, and nothing it signs will be published"]
    return []


def key_problems(spec: Mapping[str, Any]) -> list[str]:
    """Reasons to refuse a SigningKey: a public key that does not parse or is of another
    algorithm, an endorsement that is not an envelope. (Whether the root endorsed it is the
    sidecar's to say.)"""
    problems: list[str] = []
    try:
        load_spki(spki_from_pem(_text(spec, "publicKey")), Algorithm(str(spec.get("algorithm"))))
    except (TrustError, ValueError) as error:
        problems.append(f"spec.publicKey is not a {spec.get('algorithm')} public key: {error}")
    try:
        parse_sign1(decode_b64(spec.get("endorsement", "")), CT_KEY)
    except TrustError as error:
        problems.append(f"spec.endorsement is not a key endorsement envelope: {error.message}")
    return problems


def key_id_of(spec: Mapping[str, Any]) -> str | None:
    """The keyId of a SigningKey spec's public key, or None when it does not parse."""
    try:
        return key_id(spki_from_pem(_text(spec, "publicKey")))
    except (TrustError, ValueError):
        return None


def _text(spec: Mapping[str, Any], field: str) -> str:
    """A field that must be text; ValueError when it is something else (the API server's schema
    says so, but the webhook may be called by anyone)."""
    value = spec.get(field, "")
    if not isinstance(value, str):
        raise ValueError(f"spec.{field} is not text")
    return value
