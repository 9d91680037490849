"""A fleet's trust bundle: what devices need to keep their trust stores current. Pure.

The bundle carries only root-signed envelopes, copied verbatim from the SigningKeys and the
fleet's RevocationList; a device verifies every entry against the root pinned in its ROM and
trusts the bundle as a whole not at all (docs/format.md, "Trust bundle"):
- per tier, the endorsements of every key trusted now (Staged, Active or Retiring): a Staged key
  reaches devices before it signs anything, so a planned rotation strands nobody;
- the root-signed revocations of revoked keys whose endorsement could still be valid (notAfter
  ahead): a device can only be told by the root, so a revoked key without one is left out, and
  devices keep trusting it until its notAfter (the operator says so on the key).
Entries are sorted, so the same keys always give the same bytes (and a device polling with
If-None-Match costs nothing when nothing changed).
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from flashgate.api import RevocationList
from flashgate.operator.fleets import ParsedKey
from flashgate.trust.rotation import PhaseResult
from flashgate.trust.vocabulary import Tier


@dataclass(frozen=True)
class Unrevocable:
    """A revoked key that devices cannot be told about: no root-signed revocation."""

    key: ParsedKey
    not_after: int


def build(fleet: str, keys: Iterable[tuple[ParsedKey, PhaseResult]],
          record: RevocationList | None, now: int) -> tuple[str, list[Unrevocable]]:
    """The bundle's JSON text, and the revoked keys it cannot carry a revocation for."""
    endorsements: dict[str, set[str]] = {str(t): set() for t in Tier}
    revocations: set[str] = set()
    missing: list[Unrevocable] = []
    recorded = dict(record.spec.keys) if record is not None else {}
    for key, result in keys:
        not_after = int(key.spec.not_after.timestamp())
        if result.trusted:
            endorsements[str(key.spec.tier)].add(key.spec.endorsement)
        elif result.phase == "Revoked" and not_after > now:
            envelope = key.spec.revocation or (
                recorded[key.key_id].revocation if key.key_id in recorded else None)
            if envelope:
                revocations.add(envelope)
            else:
                missing.append(Unrevocable(key, not_after))
    # Revocations of keys whose SigningKey is gone stay on the record; devices still need them
    # while the key could still be valid.
    revocations.update(entry.revocation for entry in recorded.values()
                       if entry.revocation and (entry.not_after is None
                                                or entry.not_after.timestamp() > now))
    document = {
        "apiVersion": "ota.flashgate.dev/v1alpha1", "kind": "TrustBundle", "fleet": fleet,
        "endorsements": {tier: sorted(found) for tier, found in endorsements.items()},
        "revocations": sorted(revocations),
    }
    return json.dumps(document, indent=2, sort_keys=True), missing
