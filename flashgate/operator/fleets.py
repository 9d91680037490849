"""What the operator knows of its fleets, kept from its watches: small, and pure to query.

- every SigningKey (a fleet has a few dozen; they are needed for every verification),
- each fleet's RevocationList,
- of FirmwareReleases only a few fields: the phase of each (for the gauges), and of the Published
  ones what withdrawal and a floor rebuild need. Full release objects are not kept: a fleet holds
  tens of thousands of them, almost all long decided.

The key facts every reconciler shares are computed here once: a SigningKey's keyId, whether its
spec can be used at all (one malformed object is set aside with a reason, never an exception for
its neighbours), which keyIds are revoked (the RevocationList, and any SigningKey that says
revoked: a key revoked under one name is revoked under every name), and which keys the rotation
state machine has retired.
"""
from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field

from pydantic import ValidationError

from flashgate.api import RevocationList, SigningKeySpec
from flashgate.operator.kube import JSON
from flashgate.operator.runtime import object_key
from flashgate.trust.keys import key_id, spki_from_pem
from flashgate.trust.rotation import KeyPhase, KeyState, PhaseResult, key_phase
from flashgate.trust.vocabulary import TrustError
from flashgate.verifier_api.models import KeyEntry

FINAL_PHASES = frozenset({"Published", "Rejected", "Withdrawn"})


@dataclass(frozen=True)
class FleetKey:
    """A SigningKey whose spec parsed, with its keyId."""

    name: str
    uid: str
    generation: int
    spec: SigningKeySpec
    key_id: str
    obj: JSON


@dataclass(frozen=True)
class BadKey:
    """A SigningKey that cannot be used at all, and why (shown on the key, never fatal)."""

    name: str
    message: str
    obj: JSON


def parse_key(obj: JSON) -> FleetKey | BadKey:
    metadata = obj.get("metadata") or {}
    name = str(metadata.get("name"))
    try:
        spec = SigningKeySpec.model_validate(obj.get("spec") or {})
        kid = key_id(spki_from_pem(spec.public_key))
        spec.key_state(name, endorsed=None)  # every time in it must be usable
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                             for e in exc.errors(include_input=False)[:5])
        return BadKey(name, f"spec cannot be used: {problems}", obj)
    except (TrustError, ValueError, OverflowError, OSError) as exc:
        return BadKey(name, f"spec cannot be used: {exc}", obj)
    return FleetKey(name=name, uid=str(metadata.get("uid") or ""),
                    generation=int(metadata.get("generation") or 1), spec=spec, key_id=kid,
                    obj=obj)


@dataclass(frozen=True)
class PublishedRelease:
    name: str
    uid: str
    product: str
    tier: str
    security_version: int
    key_ids: tuple[str, ...]


@dataclass
class FleetView:
    """See the module docstring. `synced` is set once every watch has listed its objects."""

    keys: dict[str, dict[str, FleetKey | BadKey]] = field(
        default_factory=lambda: defaultdict(dict))
    revocation_lists: dict[str, RevocationList] = field(default_factory=dict)
    phases: dict[tuple[str, str], str] = field(default_factory=dict)
    published: dict[tuple[str, str], PublishedRelease] = field(default_factory=dict)
    endorsed: dict[tuple[str, str], tuple[int, bool]] = field(default_factory=dict)
    synced: asyncio.Event = field(default_factory=asyncio.Event)

    # ---- fed by the watches ---------------------------------------------------------------

    def on_key(self, event: str, obj: JSON) -> str:
        """Keep a SigningKey; returns its fleet (whose keys must be evaluated again)."""
        fleet, name = object_key(obj)
        if event == "DELETED":
            self.keys[fleet].pop(name, None)
        else:
            self.keys[fleet][name] = parse_key(obj)
        return fleet

    def on_revocations(self, event: str, obj: JSON) -> str:
        fleet, _ = object_key(obj)
        if event == "DELETED":
            self.revocation_lists.pop(fleet, None)
        else:
            self.revocation_lists[fleet] = RevocationList.model_validate(obj)
        return fleet

    def on_release(self, event: str, obj: JSON) -> bool:
        """Keep a release's few fields; True when it needs a decision."""
        fleet, name = object_key(obj)
        if event == "DELETED":
            self.phases.pop((fleet, name), None)
            self.published.pop((fleet, name), None)
            return False
        metadata, status = obj.get("metadata") or {}, obj.get("status") or {}
        spec = obj.get("spec") or {}
        phase = str(status.get("phase") or "Pending")
        self.phases[(fleet, name)] = phase
        if phase == "Published":
            self.published[(fleet, name)] = PublishedRelease(
                name=name, uid=str(metadata.get("uid") or ""), product=str(spec.get("product")),
                tier=str(spec.get("tier")),
                security_version=int(spec.get("securityVersion") or 0),
                key_ids=tuple(status.get("verifiedKeyIds") or ()))
        else:
            self.published.pop((fleet, name), None)
        decided = (phase in FINAL_PHASES
                   and status.get("observedGeneration") == metadata.get("generation"))
        return not decided

    # ---- queries --------------------------------------------------------------------------

    def fleet_keys(self, fleet: str) -> list[FleetKey]:
        return [k for k in self.keys.get(fleet, {}).values() if isinstance(k, FleetKey)]

    def bad_keys(self, fleet: str) -> list[BadKey]:
        return [k for k in self.keys.get(fleet, {}).values() if isinstance(k, BadKey)]

    def revoked_key_ids(self, fleet: str) -> set[str]:
        """The fleet's RevocationList, and every keyId some SigningKey says is revoked."""
        record = self.revocation_lists.get(fleet)
        revoked = set(record.spec.keys) if record is not None else set()
        revoked.update(k.key_id for k in self.fleet_keys(fleet) if k.spec.revoked)
        return revoked

    def endorsement(self, fleet: str, key: FleetKey) -> bool | None:
        """Whether the root endorsed this generation of the key (None: not checked yet)."""
        known = self.endorsed.get((fleet, key.uid))
        return known[1] if known is not None and known[0] == key.generation else None

    def states(self, fleet: str, keys: list[FleetKey] | None = None) -> list[KeyState]:
        revoked = self.revoked_key_ids(fleet)
        return [k.spec.key_state(k.name, endorsed=self.endorsement(fleet, k),
                                 revoked=k.key_id in revoked)
                for k in (self.fleet_keys(fleet) if keys is None else keys)]

    def phases_of(self, fleet: str, now: int) -> Iterator[tuple[FleetKey, PhaseResult]]:
        keys = self.fleet_keys(fleet)
        states = self.states(fleet, keys)
        for key, state in zip(keys, states, strict=True):
            yield key, key_phase(state, states, now)

    def key_entries(self, fleet: str, now: int) -> list[KeyEntry]:
        """Every usable SigningKey of the fleet for the verifier, with what only the operator
        knows: retired by rotation, revoked outside its own spec."""
        revoked = self.revoked_key_ids(fleet)
        return [KeyEntry(name=key.name, spec=key.spec.model_dump(by_alias=True, mode="json"),
                         retired=result.phase == KeyPhase.Retired,
                         revoked=key.key_id in revoked)
                for key, result in self.phases_of(fleet, now)]

    def published_floor(self, fleet: str, product: str, tier: str) -> int | None:
        """The highest securityVersion of a Published release of (product, tier), if any."""
        versions = [p.security_version for (f, _), p in self.published.items()
                    if f == fleet and p.product == product and p.tier == tier]
        return max(versions, default=None)

    def published_by(self, fleet: str, key_ids: set[str]) -> list[PublishedRelease]:
        return [p for (f, _), p in self.published.items()
                if f == fleet and key_ids.intersection(p.key_ids)]
