"""What the operator knows of its fleets, kept from its watches: small, and pure to query.

- every SigningKey (a fleet has a few dozen; they are needed for every verification),
- each fleet's RevocationList,
- of FirmwareReleases only a few fields: the phase of each (for the gauges), since when each
  undecided one has been waiting, and of the Published ones what withdrawal and a floor rebuild
  need. Full release objects are not kept: a fleet holds tens of thousands of them, almost all
  long decided.
- of RollbackFloors only (product, tier) -> securityVersion, for the gauges (decisions read the
  floor fresh from the API server, never from here).

The key facts every reconciler shares are computed here once: a SigningKey's keyId, whether its
spec can be used at all (one malformed object is set aside with a reason, never an exception for
its neighbours), which keyIds are revoked (the RevocationList, and any SigningKey that says
revoked: a key revoked under one name is revoked under every name), and which keys the rotation
state machine has retired.
"""
from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import datetime

from pydantic import ValidationError

from flashgate.api import RevocationList, SigningKeySpec
from flashgate.api.schema import problems
from flashgate.kube.client import JSON
from flashgate.kube.runtime import object_key
from flashgate.trust.keys import key_id, spki_from_pem
from flashgate.trust.rotation import KeyPhase, KeyState, PhaseResult, fleet_phases
from flashgate.trust.vocabulary import TrustError
from flashgate.verifier_api.models import KeyEntry

FINAL_PHASES = frozenset({"Published", "Rejected", "Withdrawn"})


@dataclass(frozen=True)
class ParsedKey:
    """A SigningKey whose spec parsed, with its keyId."""

    name: str
    uid: str
    generation: int
    spec: SigningKeySpec
    key_id: str
    obj: JSON


@dataclass(frozen=True)
class UnusableKey:
    """A SigningKey that cannot be used at all, and why (shown on the key, never fatal)."""

    name: str
    message: str
    obj: JSON


def parse_key(obj: JSON) -> ParsedKey | UnusableKey:
    metadata = obj.get("metadata") or {}
    name = str(metadata.get("name"))
    try:
        spec = SigningKeySpec.model_validate(obj.get("spec") or {})
        kid = key_id(spki_from_pem(spec.public_key))
        spec.key_state(name, endorsed=None)  # every time in it must be usable
    except ValidationError as exc:
        found = "; ".join(problems(exc, limit=5))
        return UnusableKey(name, f"spec cannot be used: {found}", obj)
    except (TrustError, ValueError, OverflowError, OSError) as exc:
        return UnusableKey(name, f"spec cannot be used: {exc}", obj)
    return ParsedKey(name=name, uid=str(metadata.get("uid") or ""),
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

    keys: dict[str, dict[str, ParsedKey | UnusableKey]] = field(
        default_factory=lambda: defaultdict(dict))
    revocation_lists: dict[str, RevocationList] = field(default_factory=dict)
    phases: dict[tuple[str, str], str] = field(default_factory=dict)
    published: dict[tuple[str, str], PublishedRelease] = field(default_factory=dict)
    endorsed: dict[tuple[str, str], tuple[int, bool]] = field(default_factory=dict)
    # Undecided releases -> since when they wait (Unix seconds); floors -> (product, tier,
    # securityVersion).
    waiting: dict[tuple[str, str], float] = field(default_factory=dict)
    floors: dict[tuple[str, str], tuple[str, str, int]] = field(default_factory=dict)
    synced: asyncio.Event = field(default_factory=asyncio.Event)
    # Indices, so that no per-release question costs a scan of the fleet:
    # (fleet, product, tier) -> {release: securityVersion} of Published releases, and
    # (fleet, product, tier) -> {ConfigMap: securityVersion} of job documents in channels.
    _published_versions: dict[tuple[str, str, str], dict[str, int]] = field(
        default_factory=lambda: defaultdict(dict))
    _channel_versions: dict[tuple[str, str, str], dict[str, int]] = field(
        default_factory=lambda: defaultdict(dict))
    _channel_subjects: dict[tuple[str, str], set[tuple[str, str, str]]] = field(
        default_factory=dict)
    # Per fleet: a counter bumped by every change of its keys, revocations or endorsements, and
    # what was computed from them (keyed by that counter, and the second for phases).
    _versions: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    _revoked: dict[str, tuple[int, frozenset[str]]] = field(default_factory=dict)
    _entries: dict[str, tuple[int, int, dict[str, list[KeyEntry]], int]] = field(
        default_factory=dict)

    # ---- fed by the watches ---------------------------------------------------------------

    def on_key(self, event: str, obj: JSON) -> str:
        """Keep a SigningKey; returns its fleet (whose keys must be evaluated again)."""
        fleet, name = object_key(obj)
        before = self.keys[fleet].get(name)
        if event == "DELETED":
            self.keys[fleet].pop(name, None)
        else:
            self.keys[fleet][name] = parse_key(obj)
        after = self.keys[fleet].get(name)
        if _identity(before) != _identity(after):  # not for a status write, say
            self._versions[fleet] += 1
        return fleet

    def on_revocations(self, event: str, obj: JSON) -> str:
        fleet, _ = object_key(obj)
        if event == "DELETED":
            self.revocation_lists.pop(fleet, None)
        else:
            self.revocation_lists[fleet] = RevocationList.model_validate(obj)
        self._versions[fleet] += 1
        return fleet

    def set_revocations(self, fleet: str, record: RevocationList) -> None:
        """The list as just written (before the watch brings it)."""
        self.revocation_lists[fleet] = record
        self._versions[fleet] += 1

    def set_endorsed(self, fleet: str, key: ParsedKey, endorsed: bool) -> None:
        self.endorsed[(fleet, key.uid)] = (key.generation, endorsed)
        self._versions[fleet] += 1

    def on_channel(self, event: str, obj: JSON) -> None:
        """Keep the securityVersion of each job document in a channel ConfigMap."""
        fleet, name = object_key(obj)
        for subject in self._channel_subjects.pop((fleet, name), ()):
            self._channel_versions[subject].pop(name, None)
        labels = (obj.get("metadata") or {}).get("labels") or {}
        product = labels.get("ota.flashgate.dev/product")
        if event == "DELETED" or not product:
            return
        subjects = set()
        for key, text in (obj.get("data") or {}).items():
            version = _document_version(text)
            if version is not None and key.endswith(".json"):
                subject = (fleet, product, key.removesuffix(".json"))
                self._channel_versions[subject][name] = version
                subjects.add(subject)
        self._channel_subjects[(fleet, name)] = subjects

    def on_floor(self, event: str, obj: JSON) -> None:
        """Keep a RollbackFloor's product, tier and securityVersion (for the gauges only)."""
        key, spec = object_key(obj), obj.get("spec") or {}
        version = spec.get("securityVersion")
        if event == "DELETED" or not isinstance(version, int):
            self.floors.pop(key, None)
        else:
            self.floors[key] = (str(spec.get("product")), str(spec.get("tier")), version)

    def on_release(self, event: str, obj: JSON, now: float | None = None) -> bool:
        """Keep a release's few fields; True when it needs a decision."""
        fleet, name = object_key(obj)
        if event == "DELETED":
            self.waiting.pop((fleet, name), None)
            self.phases.pop((fleet, name), None)
            gone = self.published.pop((fleet, name), None)
            if gone is not None:
                self._published_versions[(fleet, gone.product, gone.tier)].pop(name, None)
            return False
        metadata, status = obj.get("metadata") or {}, obj.get("status") or {}
        spec = obj.get("spec") or {}
        phase = str(status.get("phase") or "Pending")
        self.phases[(fleet, name)] = phase
        if phase == "Published":
            published = self.published[(fleet, name)] = PublishedRelease(
                name=name, uid=str(metadata.get("uid") or ""), product=str(spec.get("product")),
                tier=str(spec.get("tier")),
                security_version=int(spec.get("securityVersion") or 0),
                key_ids=tuple(status.get("verifiedKeyIds") or ()))
            self._published_versions[(fleet, published.product, published.tier)][name] = \
                published.security_version
        else:
            gone = self.published.pop((fleet, name), None)
            if gone is not None:
                self._published_versions[(fleet, gone.product, gone.tier)].pop(name, None)
        decided = (phase in FINAL_PHASES
                   and status.get("observedGeneration") == metadata.get("generation"))
        if decided:
            self.waiting.pop((fleet, name), None)
        elif (fleet, name) not in self.waiting:
            self.waiting[(fleet, name)] = _waiting_since(metadata, now)
        return not decided

    # ---- queries --------------------------------------------------------------------------

    def fleet_keys(self, fleet: str) -> list[ParsedKey]:
        return [k for k in self.keys.get(fleet, {}).values() if isinstance(k, ParsedKey)]

    def bad_keys(self, fleet: str) -> list[UnusableKey]:
        return [k for k in self.keys.get(fleet, {}).values() if isinstance(k, UnusableKey)]

    def revoked_key_ids(self, fleet: str) -> frozenset[str]:
        """The fleet's RevocationList, and every keyId some SigningKey says is revoked."""
        version = self._versions[fleet]
        cached = self._revoked.get(fleet)
        if cached is not None and cached[0] == version:
            return cached[1]
        record = self.revocation_lists.get(fleet)
        revoked = set(record.spec.keys) if record is not None else set()
        revoked.update(k.key_id for k in self.fleet_keys(fleet) if k.spec.revoked)
        self._revoked[fleet] = (version, frozenset(revoked))
        return self._revoked[fleet][1]

    def endorsement(self, fleet: str, key: ParsedKey) -> bool | None:
        """Whether the root endorsed this generation of the key (None: not checked yet)."""
        known = self.endorsed.get((fleet, key.uid))
        return known[1] if known is not None and known[0] == key.generation else None

    def unchecked_successors(self, fleet: str, key_ids: Iterable[str]) -> list[str]:
        """The SigningKeys that rotate out a key with one of `key_ids` and whose endorsement
        was not checked yet: until it is, whether they retired that key is not known (an
        unchecked successor retires nothing, so deciding a release now could trust a key
        that was rotated out)."""
        wanted = set(key_ids)
        names = {k.name for k in self.fleet_keys(fleet) if k.key_id in wanted}
        return [k.name for k in self.fleet_keys(fleet)
                if k.spec.replaces in names and self.endorsement(fleet, k) is None]

    def states(self, fleet: str, keys: list[ParsedKey] | None = None) -> list[KeyState]:
        revoked = self.revoked_key_ids(fleet)
        return [k.spec.key_state(k.name, endorsed=self.endorsement(fleet, k),
                                 revoked=k.key_id in revoked)
                for k in (self.fleet_keys(fleet) if keys is None else keys)]

    def phases_of(self, fleet: str, now: int) -> list[tuple[ParsedKey, PhaseResult]]:
        keys = self.fleet_keys(fleet)
        return list(zip(keys, fleet_phases(self.states(fleet, keys), now), strict=True))

    def key_entries(self, fleet: str, now: int,
                    key_ids: Iterable[str] | None = None) -> list[KeyEntry]:
        """The SigningKeys of the fleet for the verifier (those with `key_ids` only, when given:
        the keys a release's envelopes name), with what only the operator knows: retired by
        rotation, revoked outside its own spec. Computed once per fleet change and second."""
        version = self._versions[fleet]
        cached = self._entries.get(fleet)
        # Valid while nothing they depend on changed and no time-driven transition came.
        if cached is None or cached[0] != version or not cached[1] > now >= cached[3]:
            revoked = self.revoked_key_ids(fleet)
            by_id: dict[str, list[KeyEntry]] = defaultdict(list)
            phases = self.phases_of(fleet, now)
            for key, result in phases:
                by_id[key.key_id].append(KeyEntry.model_validate({
                    "name": key.name, "spec": key.spec.model_dump(by_alias=True, mode="json"),
                    "retired": result.phase == KeyPhase.Retired,
                    "revoked": key.key_id in revoked}))
            until = min((r.next_transition for _, r in phases if r.next_transition is not None),
                        default=2**63)
            cached = self._entries[fleet] = (version, until, by_id, now)
        wanted = cached[2].keys() if key_ids is None else key_ids
        return [entry for kid in wanted for entry in cached[2].get(kid, ())]

    def published_floor(self, fleet: str, product: str, tier: str) -> int | None:
        """The highest securityVersion of a Published release of (product, tier), if any."""
        return max(self._published_versions.get((fleet, product, tier), {}).values(),
                   default=None)

    def channel_floor(self, fleet: str, product: str, tier: str) -> int | None:
        """The highest securityVersion of a job document of (product, tier) in a channel."""
        return max(self._channel_versions.get((fleet, product, tier), {}).values(),
                   default=None)

    def published_by(self, fleet: str, key_ids: AbstractSet[str]) -> list[PublishedRelease]:
        return [p for (f, _), p in self.published.items()
                if f == fleet and not key_ids.isdisjoint(p.key_ids)]


def _waiting_since(metadata: JSON, now: float | None) -> float:
    """A new release waits since its creation; one whose spec changed after a decision (a
    republish intent), since the operator saw the change."""
    created = metadata.get("creationTimestamp")
    if int(metadata.get("generation") or 1) == 1 and isinstance(created, str):
        try:
            return datetime.fromisoformat(created).timestamp()
        except ValueError:
            pass
    return time.time() if now is None else now


def _document_version(text: str) -> int | None:
    try:
        value = json.loads(text).get("securityVersion")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _identity(key: ParsedKey | UnusableKey | None) -> object:
    """What a key's phase depends on, of the object: which object, which spec."""
    if isinstance(key, ParsedKey):
        return key.uid, key.generation
    if isinstance(key, UnusableKey):
        return key.message
    return None
