"""A fleet's trust bundle: what devices need to keep their trust stores current. Pure.

The bundle carries only root-signed envelopes, copied verbatim from the SigningKeys and the
fleet's RevocationList; a device verifies every entry against the root pinned in its ROM and
trusts the bundle as a whole not at all (docs/format.md, "Trust bundle"):
- per tier, the endorsements of every key trusted now (Staged, Active or Retiring): a Staged key
  reaches devices before it signs anything, so a planned rotation strands nobody;
- the root-signed revocations of revoked keys whose endorsement could still be valid (notAfter
  ahead): a device can only be told by the root, so a revoked key without one is left out, and
  devices keep trusting it until its notAfter (the operator says so on the key). A revocation
  the verifier sidecar found not to be a root-signed revocation of its key is left out too, and
  its key counts as one without.
Entries are sorted, so the same keys always give the same bytes (and a device polling with
If-None-Match costs nothing when nothing changed).
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from flashgate.api import RevocationList
from flashgate.operator.fleets import ParsedKey
from flashgate.trust.rotation import PhaseResult
from flashgate.trust.vocabulary import Tier


@dataclass(frozen=True)
class Unrevocable:
    """A revoked key that devices cannot be told about: no root-signed revocation."""

    key: ParsedKey
    not_after: int
    refused: str | None = None  # why the verifier refused the key's spec.revocation, if it did


@dataclass(frozen=True)
class Bundle:
    text: str  # the JSON document, the same bytes for the same keys
    unrevocable: list[Unrevocable] = field(default_factory=list)
    next_change: int | None = None  # when a carried revocation's key expires (and leaves it)


def build(fleet: str, keys: Iterable[tuple[ParsedKey, PhaseResult]],
          record: RevocationList | None, now: int,
          refused: Mapping[str, str] | None = None) -> Bundle:
    """The bundle of a fleet's keys (with their phases now) and RevocationList. `refused` maps
    revocation envelopes the verifier found not root-signed for their key to its message."""
    refused = refused or {}
    endorsements: dict[str, set[str]] = {str(t): set() for t in Tier}
    revocations: dict[str, int | None] = {}  # envelope -> its key's notAfter
    missing: list[Unrevocable] = []
    recorded = dict(record.spec.keys) if record is not None else {}
    for key, result in keys:
        not_after = int(key.spec.not_after.timestamp())
        if result.trusted:
            endorsements[str(key.spec.tier)].add(key.spec.endorsement)
        elif result.phase == "Revoked" and not_after > now:
            entry = recorded.get(key.key_id)
            candidates = [e for e in (key.spec.revocation, entry and entry.revocation) if e]
            good = next((e for e in candidates if e not in refused), None)
            if good is not None:
                revocations[good] = not_after
            else:
                why = next((refused[e] for e in candidates if e in refused), None)
                missing.append(Unrevocable(key, not_after, why))
    # Revocations of keys whose SigningKey is gone stay on the record; devices still need them
    # while the key could still be valid.
    for entry in recorded.values():
        ends = int(entry.not_after.timestamp()) if entry.not_after is not None else None
        if entry.revocation and entry.revocation not in refused and (ends is None or ends > now):
            revocations.setdefault(entry.revocation, ends)
    document = {
        "apiVersion": "ota.flashgate.dev/v1alpha1", "kind": "TrustBundle", "fleet": fleet,
        "endorsements": {tier: sorted(found) for tier, found in endorsements.items()},
        "revocations": sorted(revocations),
    }
    expiries = [end for end in revocations.values() if end is not None]
    return Bundle(json.dumps(document, indent=2, sort_keys=True), missing,
                  min(expiries, default=None))
