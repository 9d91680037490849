"""The gate's invariants, checked from what was observed. Pure: no I/O, no clock of its own.

In: a `History` (every version of the RollbackFloors, channel and trust-bundle ConfigMaps,
FirmwareReleases, SigningKeys, RevocationLists and Events of the fleets under test, each with the
wall time it arrived and its resourceVersion; the faults injected, with when they began and
healed; the operator's clock offsets) and a `Setting` (the sidecar's roots and policy, and what is
served at each artifact URL). Out: `Violation`s, or the differences that keep the world from
having converged.

Order. Versions are ordered by resourceVersion: on this single-etcd test control plane it is
etcd's global revision, so "the keys at the moment a floor was written" is exact even across
watch streams that deliver out of step (Kubernetes calls resourceVersion opaque; only this test
tool relies on it). Wall times are used only for durations (the grace after a revocation).

The invariants (issue 13):
1. `published-untrusted`: every publication (an entry of a floor's ledger) is one the trust core
   accepts (`trust.verify_release` on the release's envelopes, `trust.fleet.fleet_keyring` from
   the SigningKeys and the RevocationList as they were when the entry was written, the floor just
   before it, then `trust.check_artifact` on the bytes served at its URL). Its `now`: some instant
   between the release's creation and the entry's publishedAt, on the operator's clock (the gate
   verifies, then records: a key may expire or retire in between, as it may during the
   verification itself). A revocation counts once its grace has passed (below): a publication
   racing a revocation is the next invariant's.
2. `revoked-in-channel`: a revoked key's job document is in no channel once the revocation's
   grace has passed. The revocation is observed when a SigningKey says revoked or its keyId is
   on the RevocationList, whichever came first. The grace: the operator records the revocation,
   then searches what the key published, while a publication writes its document, then reads the
   revocations afresh (flashgate/operator/releases.py, invariant 4): that order makes either side
   withdraw it, and bounds nothing in time while the API server or the operator is down. So the
   document may stay HEALTHY_GRACE seconds after the revocation was observed, and when a fault
   was in force during that time, RECOVERY_GRACE seconds after the fault healed (the operator's
   watches back off to 30 s; a key reconcile that failed is retried after its backoff).
   At convergence each publication a revoked key signed is marked withdrawn in its ledger, and
   its release says Withdrawn (`revoked-not-withdrawn`).
3. `floor-decreased`, `floor-below-published`: the floor of every (fleet, product, tier) never
   decreases over its versions, and each version is >= every securityVersion published there
   before it (its ledger's entries, and every release seen Published).
4. `announced-twice`: at most one Published event per release, named flashgate.<uid>.published;
   at convergence exactly one for each release in a ledger and not withdrawn, at most one for a
   withdrawn one, and none for the others
   (`differences`), and the publications metric of each operator process equals the Published
   events it posted (at most, for a process that was killed: its last increments die with it).
5. `channel-moved-back`, `channel-unrecorded`: a channel's document of a tier only moves to newer
   publications (higher ledger sequence) and is always one the ledger recorded.
6. Convergence (`differences`): every release is final for its generation and agrees with the
   ledger (Published: a live entry; Withdrawn: a withdrawn one; Rejected: none); every channel
   holds what its ledgers say (each tier: the current entry's document, none when withdrawn);
   the trust bundle is what the SigningKeys and the RevocationList say at the operator's now;
   every key's phase is the rotation state machine's; every revoked keyId is on the list.
"""
from __future__ import annotations

import bisect
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from flashgate.api import FirmwareReleaseSpec, RevocationList, SigningKeySpec
from flashgate.api.published import BUNDLE_CONFIGMAP, BUNDLE_KEY
from flashgate.operator import bundle
from flashgate.operator.fleets import FINAL_PHASES, ParsedKey, parse_key
from flashgate.trust import (
    KeyRecord,
    Policy,
    Reason,
    TrustError,
    Verdict,
    check_artifact,
    verify_release,
)
from flashgate.trust.cose import CT_RELEASE, parse_sign1
from flashgate.trust.fleet import (
    EndorsementCache,
    FleetKey,
    check_revocation,
    check_signing_key,
    expected_manifest,
    fleet_keyring,
    signer_key_ids,
)
from flashgate.trust.rotation import KeyPhase, PhaseResult, fleet_phases

JSON = Mapping[str, Any]

FLOOR, CHANNEL, RELEASE, KEY, REVOCATIONS, EVENT = (
    "RollbackFloor", "ConfigMap", "FirmwareRelease", "SigningKey", "RevocationList", "Event")
KINDS = (FLOOR, CHANNEL, RELEASE, KEY, REVOCATIONS, EVENT)

HEALTHY_GRACE = 10.0
"""Seconds a revoked key's document may stay in a channel after the revocation was observed,
when no fault was in force (watch delivery, one key reconcile, one withdrawal, on 2 busy cores)."""
RECOVERY_GRACE = 30.0
"""Seconds after a fault healed (the longest backoff of the operator's watches)."""


# ---- what was observed -----------------------------------------------------------------------

@dataclass(frozen=True)
class Observation:
    """One version of one object, as a watch delivered it."""

    seen: float  # wall time (time.time()) when it arrived
    kind: str
    event: str  # ADDED, MODIFIED, DELETED, or SYNC (in a listing)
    namespace: str
    name: str
    rv: int
    obj: JSON

    @property
    def deleted(self) -> bool:
        return self.event == "DELETED"


@dataclass(frozen=True)
class Fault:
    kind: str
    start: float
    end: float | None = None  # None: still in force


@dataclass(frozen=True)
class Violation:
    invariant: str
    subject: str
    detail: str

    def __str__(self) -> str:
        return f"{self.invariant}: {self.subject}: {self.detail}"


@dataclass(frozen=True)
class Setting:
    """What the checker must know of the system: the sidecar's roots and policy, and the size and
    SHA-256 of the bytes served at each artifact URL."""

    roots: tuple[KeyRecord, ...]
    policy: Policy
    served: Mapping[str, tuple[int, bytes]]


@dataclass
class History:
    """Every version observed, per object, in resourceVersion order; faults; clock offsets."""

    versions: dict[tuple[str, str, str], list[Observation]] = field(
        default_factory=lambda: defaultdict(list))
    faults: list[Fault] = field(default_factory=list)
    offsets: list[tuple[float, float]] = field(default_factory=list)  # (wall time, seconds)
    relists: int = 0  # listings after the first: versions in between may be missing

    def add(self, observation: Observation) -> None:
        versions = self.versions[(observation.kind, observation.namespace, observation.name)]
        if observation.rv == 0:  # a deletion found by a relisting: right after the last version
            if versions and not versions[-1].deleted:
                versions.append(Observation(observation.seen, observation.kind, "DELETED",
                                            observation.namespace, observation.name,
                                            versions[-1].rv, observation.obj))
            return
        rvs = [v.rv for v in versions]
        at = bisect.bisect_left(rvs, observation.rv)
        if at < len(versions) and versions[at].rv == observation.rv and \
                versions[at].deleted == observation.deleted:
            return  # the same version again (a relisting)
        versions.insert(bisect.bisect_right(rvs, observation.rv), observation)

    def set_offset(self, seen: float, offset: float) -> None:
        self.offsets.append((seen, offset))

    def offset_at(self, seen: float) -> float:
        offset = 0.0
        for when, value in self.offsets:
            if when <= seen:
                offset = value
        return offset

    def operator_time(self, seen: float) -> float:
        """The operator's clock at wall time `seen`."""
        return seen + self.offset_at(seen)

    def operator_span(self, start: float, end: float) -> tuple[float, float]:
        """The earliest and the latest the operator's clock read between wall times `start` and
        `end`: with a jump back in between, the end may read earlier than the start did."""
        readings = [self.operator_time(start), self.operator_time(end)]
        for when, value in self.offsets:
            if start < when <= end:
                readings += [when + self.offset_at(when - 1e-6), when + value]
        return min(readings), max(readings)

    def jumped_back(self, start: float, end: float) -> bool:
        """Whether the operator's clock was set back between wall times `start` and `end`."""
        return any(start < when <= end and value < self.offset_at(when - 1e-6)
                   for when, value in self.offsets)

    def objects(self, kind: str, namespace: str | None = None
                ) -> Iterator[tuple[str, str, list[Observation]]]:
        for (k, ns, name), versions in list(self.versions.items()):
            if k == kind and (namespace is None or ns == namespace) and versions:
                yield ns, name, versions

    def namespaces(self) -> set[str]:
        return {ns for (_, ns, _) in self.versions}

    def latest(self, kind: str, namespace: str, name: str) -> JSON | None:
        versions = self.versions.get((kind, namespace, name)) or []
        return versions[-1].obj if versions and not versions[-1].deleted else None

    def first_seen(self, kind: str, namespace: str, name: str, uid: str) -> float:
        """When the object of that uid was first seen (-inf: never, as far as recorded)."""
        for version in self.versions.get((kind, namespace, name)) or ():
            if (version.obj.get("metadata") or {}).get("uid") == uid:
                return version.seen
        return -math.inf

    def current(self, kind: str, namespace: str) -> dict[str, JSON]:
        """The objects of a kind in a namespace as last seen (deleted ones left out)."""
        return {name: versions[-1].obj for _, name, versions in self.objects(kind, namespace)
                if not versions[-1].deleted}

    def at(self, kind: str, namespace: str, rv: int) -> dict[str, JSON]:
        """The objects of a kind in a namespace as they were at resourceVersion `rv`."""
        found = {}
        for _, name, versions in self.objects(kind, namespace):
            index = bisect.bisect_right([v.rv for v in versions], rv) - 1
            if index >= 0 and not versions[index].deleted:
                found[name] = versions[index].obj
        return found


# ---- small readers ----------------------------------------------------------------------------

def _spec(obj: JSON) -> JSON:
    return obj.get("spec") or {}


def _status(obj: JSON) -> JSON:
    return obj.get("status") or {}


def _uid(obj: JSON) -> str:
    return str((obj.get("metadata") or {}).get("uid") or "")


def _entries(floor: JSON) -> list[JSON]:
    return list(_status(floor).get("publications") or ())


def _epoch(text: str) -> int:
    from datetime import datetime
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())


def document_signers(text: str) -> set[str]:
    """The keyIds a job document's envelopes name (unverified; enough to find a revoked key's)."""
    try:
        document = json.loads(text)
    except ValueError:
        return set()
    found = set()
    for envelope in (document.get("signatures") if isinstance(document, dict) else None) or ():
        try:
            found.add(parse_sign1(str(envelope), CT_RELEASE).key_id)
        except TrustError:
            continue
    return found


def document_release(text: str) -> str | None:
    try:
        document = json.loads(text)
    except ValueError:
        return None
    return str(document.get("release")) if isinstance(document, dict) else None


def _parsed_keys(keys: Mapping[str, JSON]) -> list[ParsedKey]:
    return [k for k in (parse_key(dict(obj)) for obj in keys.values()) if isinstance(k, ParsedKey)]


def _revoked_ids(keys: Iterable[ParsedKey], record: JSON | None) -> set[str]:
    revoked = set((_spec(record).get("keys") or {}) if record else ())
    revoked.update(k.key_id for k in keys if k.spec.revoked)
    return revoked


def deadline(seen: float, faults: Sequence[Fault], healthy: float = HEALTHY_GRACE,
             recovery: float = RECOVERY_GRACE) -> float:
    """When the grace that began at `seen` ends (invariant 2 of the module docstring): after
    `healthy` seconds when no fault was in force in that time nor healed less than `recovery`
    seconds before it (the operator's watches may still be backing off), else once `recovery`
    seconds without a fault in force have passed since `seen` (time under a fault does not
    count)."""
    spans = sorted((f.start, math.inf if f.end is None else f.end) for f in faults)
    lingering = any(a < seen + healthy and b + recovery > seen for a, b in spans)
    spans = [(a, b) for a, b in spans if b > seen]
    budget = recovery if lingering else healthy
    now = seen
    for start, end in spans:
        if start > now:
            if start - now >= budget:
                break
            budget -= start - now
        now = max(now, end)
    return now + budget


@dataclass
class Trust:
    """The trust core's view of a fleet from its objects, for the checks. Endorsements are
    verified once each (an `EndorsementCache`) and each publication's outcome is remembered, so
    checking the whole history again after each iteration costs only what is new."""

    setting: Setting
    cache: EndorsementCache = field(default_factory=EndorsementCache)
    _endorsed: dict[tuple[str, str], bool] = field(default_factory=dict)
    _checked: dict[tuple[object, ...], Violation | None] = field(default_factory=dict)

    def endorsed(self, fleet: str, key: ParsedKey) -> bool:
        cache_key = (fleet, key.spec.model_dump_json())
        if cache_key not in self._endorsed:
            self._endorsed[cache_key] = check_signing_key(key.spec, fleet, self.setting.roots,
                                                          self.cache).accepted
        return self._endorsed[cache_key]

    def phases(self, fleet: str, keys: Sequence[ParsedKey], revoked: set[str],
               now: int, unchecked: AbstractSet[str] = frozenset()) -> list[PhaseResult]:
        """The rotation state machine's phases; `revoked`: the keyIds that count as revoked
        (a SigningKey saying revoked counts only if its keyId is there); `unchecked`: keys (by
        name) whose endorsement the operator may not have had checked yet."""
        states = [_unrevoked(k.spec, k.key_id, revoked).key_state(
            k.name, endorsed=None if k.name in unchecked else self.endorsed(fleet, k),
            revoked=k.key_id in revoked) for k in keys]
        return fleet_phases(states, now)

    def release_verdict(self, fleet: str, spec: FirmwareReleaseSpec, keys: Sequence[ParsedKey],
                        revoked: set[str], floor: int | None, now: int,
                        known_revoked: set[str] | None = None,
                        unchecked: AbstractSet[str] = frozenset()) -> Verdict:
        """The trust core's verdict. `revoked`: the keyIds whose revocation counts against a
        signature; `known_revoked` (default the same): every revocation on record then, which
        decides the rotation (a revoked successor retires nothing, nor does one whose
        endorsement is `unchecked`: the operator may not have had it verified yet)."""
        phases = self.phases(fleet, keys, revoked if known_revoked is None else known_revoked,
                             now, unchecked)
        entries = [FleetKey(k.name, _unrevoked(k.spec, k.key_id, revoked),
                            retired=p.phase == KeyPhase.Retired, revoked=k.key_id in revoked)
                   for k, p in zip(keys, phases, strict=True)]
        keyring = fleet_keyring(fleet, entries, self.setting.roots, self.cache,
                                key_ids=signer_key_ids(spec.signatures)).keyring
        expected = expected_manifest(fleet, spec)
        signed = verify_release(spec.signatures, expected, keyring, self.setting.policy, floor,
                                now)
        if not signed.accepted:
            return signed
        served = self.setting.served.get(spec.artifact.url)
        if served is None:
            return Verdict.reject(Reason.ArtifactUnavailable,
                                  f"nothing known to be served at {spec.artifact.url}")
        size, digest = served
        return check_artifact(expected, min(size, spec.artifact.size), digest,
                              oversized=size > spec.artifact.size)


def _unrevoked(spec: SigningKeySpec, key_id: str, revoked: set[str]) -> SigningKeySpec:
    """The spec, its revocation left out unless its keyId counts as revoked."""
    if key_id in revoked or not (spec.revoked or spec.revocation):
        return spec
    return spec.model_copy(update={"revoked": False, "revocation": None})


def _boundaries(keys: Sequence[ParsedKey], signers: frozenset[str]) -> set[int]:
    """Instants at which the trust of the keys that signed (or of their successors, which
    retire them) can change by time alone, both sides of each."""
    named = {k.name for k in keys if k.key_id in signers}
    found: set[int] = set()
    for key in keys:
        if key.key_id not in signers and key.spec.replaces not in named:
            continue
        state = key.spec.key_state(key.name, endorsed=True)
        for moment in (state.not_before, state.not_after, state.activation,
                       state.activation + state.overlap_seconds):
            found.update((moment - 1, moment))
    return found


# ---- the checks over the whole history --------------------------------------------------------

@dataclass(frozen=True)
class Publication:
    fleet: str
    floor: str
    entry: JSON
    rv: int  # of the floor version that first held it
    seen: float
    floor_before: int | None


def publications(history: History) -> list[Publication]:
    """Every ledger entry, with the floor version that first held it and the floor before."""
    found = []
    for fleet, name, versions in history.objects(FLOOR):
        known: set[str] = set()
        previous: JSON | None = None
        for version in versions:
            if version.deleted:
                previous = None
                continue
            for entry in _entries(version.obj):
                uid = str(entry.get("uid"))
                if uid not in known:
                    known.add(uid)
                    before = (int(_spec(previous).get("securityVersion") or 0)
                              if previous is not None else None)
                    found.append(Publication(fleet, name, entry, version.rv, version.seen,
                                             before))
            previous = version.obj
    return found


def releases_by_uid(history: History) -> dict[str, tuple[str, str, list[Observation]]]:
    return {_uid(versions[-1].obj) or _uid(versions[0].obj): (ns, name, versions)
            for ns, name, versions in history.objects(RELEASE)}


def revocations_observed(history: History, fleet: str) -> dict[str, float]:
    """keyId -> when its revocation was first observed (a SigningKey saying revoked, or the keyId
    on the RevocationList)."""
    first: dict[str, float] = {}

    def note(kid: str, seen: float) -> None:
        first[kid] = min(first.get(kid, math.inf), seen)

    for _, _, versions in history.objects(KEY, fleet):
        for version in versions:
            if version.deleted:
                continue
            key = parse_key(dict(version.obj))
            if isinstance(key, ParsedKey) and (key.spec.revoked or key.spec.revocation):
                note(key.key_id, version.seen)
    for _, _, versions in history.objects(REVOCATIONS, fleet):
        for version in versions:
            for kid in (_spec(version.obj).get("keys") or {}) if not version.deleted else ():
                note(kid, version.seen)
    return first


def check_publications(history: History, setting: Setting,
                       trust: Trust | None = None) -> list[Violation]:
    """Invariant 1."""
    trust = trust or Trust(setting)
    by_uid = releases_by_uid(history)
    violations = []
    revoked_seen = {fleet: revocations_observed(history, fleet)
                    for fleet in history.namespaces()}
    for publication in publications(history):
        entry, fleet = publication.entry, publication.fleet
        subject = f"{fleet}/{entry.get('release')}"
        found = by_uid.get(str(entry.get("uid")))
        if found is None:
            violations.append(Violation("published-untrusted", subject,
                                        "no such FirmwareRelease was ever observed"))
            continue
        try:
            spec = FirmwareReleaseSpec.model_validate(_spec(found[2][-1].obj))
        except ValidationError as exc:
            violations.append(Violation("published-untrusted", subject,
                                        f"its spec does not parse: {exc.error_count()} errors"))
            continue
        keys = _parsed_keys(history.at(KEY, fleet, publication.rv))
        record = history.at(REVOCATIONS, fleet, publication.rv).get("revocations")
        on_record = _revoked_ids(keys, record)
        counted = {kid for kid in on_record
                   if deadline(revoked_seen[fleet].get(kid, publication.seen),
                               history.faults) < publication.seen}
        # A key the operator may not have had verified yet retires no predecessor.
        unchecked = {k.name for k in keys
                     if deadline(history.first_seen(KEY, fleet, k.name, k.uid),
                                 history.faults) >= publication.seen}
        published_at = _epoch(str(entry.get("publishedAt")))
        # The gate decided at some reading of the operator's clock between the release's
        # creation and the entry (the clock may have jumped either way in between).
        earliest, latest = history.operator_span(found[2][0].seen, publication.seen)
        created = int(earliest) - 1
        memo = (fleet, entry.get("uid"), publication.rv, frozenset(counted),
                frozenset(unchecked), created)
        if memo not in trust._checked:
            signers = signer_key_ids(spec.signatures)
            # Without a jump back the decision came before publishedAt was stamped.
            if not history.jumped_back(found[2][0].seen, publication.seen):
                latest = published_at
            candidates = {published_at} | {t for t in _boundaries(keys, signers)
                                           if created <= t < latest}
            verdicts = (trust.release_verdict(fleet, spec, keys, counted,
                                              publication.floor_before, now, on_record,
                                              unchecked)
                        for now in sorted(candidates, reverse=True))
            first = next(verdicts)
            trust._checked[memo] = None if first.accepted or any(
                v.accepted for v in verdicts) else Violation(
                "published-untrusted", subject,
                f"{first.reason}: {first.message} (floor before {publication.floor_before},"
                f" publishedAt {entry.get('publishedAt')}, ledger {publication.floor} "
                f"sequence {entry.get('sequence')})")
        violation = trust._checked[memo]
        if violation is not None:
            violations.append(violation)
    return violations


def _channel_states(history: History, fleet: str) -> Iterator[tuple[str, Observation, float]]:
    """Each channel ConfigMap version with the wall time until which it stood (inf: still)."""
    for _, name, versions in history.objects(CHANNEL, fleet):
        if not name.startswith("channel."):
            continue
        for index, version in enumerate(versions):
            until = versions[index + 1].seen if index + 1 < len(versions) else math.inf
            yield name, version, until


def check_revocations(history: History, now: float) -> list[Violation]:
    """Invariant 2, over time (`now`: the wall time the history reaches)."""
    violations = []
    for fleet in sorted(history.namespaces()):
        revoked = revocations_observed(history, fleet)
        if not revoked:
            continue
        ends = {kid: deadline(seen, history.faults) for kid, seen in revoked.items()}
        reported: set[tuple[str, str, str]] = set()
        for name, version, until in _channel_states(history, fleet):
            if version.deleted:
                continue
            for tier, text in (version.obj.get("data") or {}).items():
                for kid in document_signers(str(text)) & ends.keys():
                    stood = min(until, now)
                    if stood > ends[kid] and (name, tier, kid) not in reported:
                        reported.add((name, tier, kid))
                        violations.append(Violation(
                            "revoked-in-channel", f"{fleet}/{name} {tier}",
                            f"release {document_release(str(text))} signed by revoked key "
                            f"{kid[:16]}… was still there {stood - revoked[kid]:.1f}s after the "
                            f"revocation was observed (allowed until "
                            f"{ends[kid] - revoked[kid]:.1f}s)"))
    return violations


def check_floors(history: History) -> list[Violation]:
    """Invariant 3."""
    violations = []
    published: dict[tuple[str, str, str], list[tuple[int, int]]] = defaultdict(list)
    for fleet, _, versions in history.objects(RELEASE):
        for version in versions:
            if _status(version.obj).get("phase") == "Published":
                spec = _spec(version.obj)
                published[(fleet, str(spec.get("product")), str(spec.get("tier")))].append(
                    (version.rv, int(spec.get("securityVersion") or 0)))
    for fleet, name, versions in history.objects(FLOOR):
        highest, floor = -1, -1
        for version in versions:
            if version.deleted:
                continue
            spec = _spec(version.obj)
            value = int(spec.get("securityVersion") or 0)
            if value < floor:
                violations.append(Violation("floor-decreased", f"{fleet}/{name}",
                                            f"from {floor} to {value} (resourceVersion "
                                            f"{version.rv})"))
            floor = max(floor, value)
            highest = max([highest, *(int(e.get("securityVersion") or 0)
                                      for e in _entries(version.obj))])
            subject = (fleet, str(spec.get("product")), str(spec.get("tier")))
            highest = max([highest, *(sv for rv, sv in published[subject] if rv < version.rv)])
            if value < highest:
                violations.append(Violation("floor-below-published", f"{fleet}/{name}",
                                            f"floor {value} below securityVersion {highest} "
                                            f"published there (resourceVersion {version.rv})"))
    return violations


def published_events(history: History) -> dict[str, set[str]]:
    """release uid -> names of the Published events about it (every one ever observed)."""
    found: dict[str, set[str]] = defaultdict(set)
    for _, name, versions in history.objects(EVENT):
        event = versions[0].obj
        if event.get("reason") == "Published":
            found[str((event.get("involvedObject") or {}).get("uid"))].add(name)
    return found


def check_announcements(history: History) -> list[Violation]:
    """Invariant 4's "at most once" (a second one never goes away)."""
    violations = []
    for uid, names in published_events(history).items():
        expected = {f"flashgate.{uid}.published"}
        if names - expected or len(names) > 1:
            violations.append(Violation("announced-twice", uid, ", ".join(sorted(names))))
    return violations


@dataclass(frozen=True)
class Scrape:
    """One operator process's publications metric (per fleet), and whether the process was alive
    and done when it was read (else it was read before a kill: a lower bound)."""

    instance: str
    publications: Mapping[str, float]
    final: bool


def check_metrics(history: History, scrapes: Sequence[Scrape]) -> list[Violation]:
    """Invariant 4's metric: per process, the Published events it posted."""
    posted: dict[tuple[str, str], int] = defaultdict(int)
    for fleet, name, versions in history.objects(EVENT):
        event = versions[0].obj
        if event.get("reason") == "Published" and name.endswith(".published"):
            posted[(str(event.get("reportingInstance")), fleet)] += 1
    violations = []
    for scrape in scrapes:
        fleets = set(scrape.publications) | {f for (i, f) in posted if i == scrape.instance}
        for fleet in sorted(fleets & history.namespaces()):
            counted, events = scrape.publications.get(fleet, 0.0), posted[(scrape.instance, fleet)]
            if counted > events or (scrape.final and counted != events):
                violations.append(Violation(
                    "metric-miscounted", f"{fleet} {scrape.instance}",
                    f"flashgate_release_publications_total says {counted:g}, the process posted "
                    f"{events} Published events" + ("" if scrape.final else " (read before it "
                                                    "was killed)")))
    return violations


def check_channel_order(history: History) -> list[Violation]:
    """Invariant 5: documents only move forward, and each is a recorded publication."""
    violations = []
    for fleet in sorted(history.namespaces()):
        sequences: dict[tuple[str, str], int] = {}  # (floor name, release) -> sequence
        for _, floor_name, versions in history.objects(FLOOR, fleet):
            for version in versions:
                for entry in _entries(version.obj):
                    sequences[(floor_name, str(entry.get("release")))] = int(entry["sequence"])
        last: dict[tuple[str, str], int] = {}
        for name, version, _ in _channel_states(history, fleet):
            product = name.split(".")[1] if name.count(".") == 2 else ""
            for key, text in (version.obj.get("data") or {}).items() if not version.deleted \
                    else ():
                release = document_release(str(text))
                floor_name = f"{product}.{key.removesuffix('.json')}"
                sequence = sequences.get((floor_name, str(release)))
                if sequence is None:
                    violations.append(Violation("channel-unrecorded", f"{fleet}/{name} {key}",
                                                f"release {release} is in no ledger"))
                    continue
                if sequence < last.get((name, key), 0):
                    violations.append(Violation(
                        "channel-moved-back", f"{fleet}/{name} {key}",
                        f"release {release} (publication {sequence}) replaced publication "
                        f"{last[(name, key)]} (resourceVersion {version.rv})"))
                last[(name, key)] = max(sequence, last.get((name, key), 0))
    return violations


def check_history(history: History, setting: Setting, now: float,
                  scrapes: Sequence[Scrape] = (), trust: Trust | None = None) -> list[Violation]:
    """Every invariant checked over the whole history (`trust`: kept from one check to the next,
    it remembers what was verified)."""
    return [*check_publications(history, setting, trust), *check_revocations(history, now),
            *check_floors(history), *check_announcements(history),
            *check_channel_order(history), *check_metrics(history, scrapes)]


# ---- convergence -----------------------------------------------------------------------------

@dataclass
class DeliveryView:
    """What the delivery service served, asked as a device of each fleet: the trust bundle's
    text (None: 404), and the jobs (tier -> job document) of each (fleet, product, channel)."""

    bundles: dict[str, str | None] = field(default_factory=dict)
    channels: dict[tuple[str, str, str], Mapping[str, Any]] = field(default_factory=dict)


def delivery_differences(history: History, view: DeliveryView) -> list[str]:
    """What the delivery service serves that differs from what is published: the trust bundle
    byte for byte; each channel's job documents as published, but for an s3:// artifact a
    presigned https:// URL, and none for a file:// one (a device could not use it:
    docs/delivery.md)."""
    found = []
    for fleet, served in sorted(view.bundles.items()):
        published = history.current(CHANNEL, fleet).get(BUNDLE_CONFIGMAP)
        text = ((published or {}).get("data") or {}).get(BUNDLE_KEY)
        if served != text:
            found.append(f"delivery: the trust bundle of {fleet} is not the published one")
    for (fleet, product, channel), jobs in sorted(view.channels.items()):
        published = history.current(CHANNEL, fleet).get(f"channel.{product}.{channel}")
        expected: dict[str, Any] = {}
        for key, text in ((published or {}).get("data") or {}).items():
            document = json.loads(text)
            url = str(document.get("artifact", {}).get("url", ""))
            if url.startswith(("s3://", "https://")):
                expected[key.removesuffix(".json")] = document
        for tier in sorted(set(expected) | set(jobs)):
            want, have = expected.get(tier), jobs.get(tier)
            if want is None or have is None:
                found.append(f"delivery: {fleet}/{product}/{channel} {tier}: serves "
                             f"{have and have.get('release')}, published "
                             f"{want and want.get('release')}")
                continue
            want_url = str(want["artifact"]["url"])
            have_url = str(have.get("artifact", {}).get("url", ""))
            same = {**want, "artifact": {**want["artifact"], "url": ""}} == \
                {**have, "artifact": {**have.get("artifact", {}), "url": ""}}
            url_ok = (have_url.startswith("https://") and "X-Amz-Signature=" in have_url
                      if want_url.startswith("s3://") else have_url == want_url)
            if not (same and url_ok):
                found.append(f"delivery: {fleet}/{product}/{channel} {tier}: "
                             f"{have.get('release')} differs from the published document")
    return found


def differences(history: History, setting: Setting, fleets: Iterable[str],
                operator_now: int, trust: Trust | None = None) -> list[str]:
    """What keeps the fleets from having converged (empty: converged), from the latest versions.
    """
    trust = trust or Trust(setting)
    found: list[str] = []
    events = published_events(history)
    for fleet in sorted(fleets):
        found += _release_differences(history, fleet, events)
        found += _channel_differences(history, fleet)
        found += _key_differences(history, fleet, trust, operator_now)
    return found


def _ledger_state(history: History, fleet: str) -> dict[str, bool]:
    """uid -> withdrawn, for every publication ever in a ledger of the fleet."""
    state: dict[str, bool] = {}
    for _, _, versions in history.objects(FLOOR, fleet):
        for version in versions:
            for entry in _entries(version.obj):
                uid = str(entry.get("uid"))
                state[uid] = state.get(uid, False) or entry.get("withdrawnAt") is not None
    return state


def _release_differences(history: History, fleet: str,
                         events: Mapping[str, set[str]]) -> list[str]:
    found = []
    ledger = _ledger_state(history, fleet)
    revoked = _revoked_ids(_parsed_keys(history.current(KEY, fleet)),
                           history.current(REVOCATIONS, fleet).get("revocations"))
    for name, obj in sorted(history.current(RELEASE, fleet).items()):
        status, uid = _status(obj), _uid(obj)
        phase = status.get("phase") or "Pending"
        generation = (obj.get("metadata") or {}).get("generation")
        where = f"release {fleet}/{name}"
        if phase not in FINAL_PHASES or status.get("observedGeneration") != generation:
            found.append(f"{where} is {phase} (generation {generation}, observed "
                         f"{status.get('observedGeneration')})")
            continue
        expected = ("Rejected" if uid not in ledger else
                    "Withdrawn" if ledger[uid] else "Published")
        if phase != expected:
            found.append(f"{where} is {phase}; its ledger says {expected}")
        # A withdrawn entry may lack it: a gate that finds the revocation after its channel
        # write withdraws the release instead of announcing it (test_release_gate: the user
        # sees Withdrawn, never a Published that was not so), as does a withdrawal racing it.
        if uid in ledger and not ledger[uid] and not events.get(uid):
            found.append(f"{where} was published and has no Published event")
        if uid not in ledger and events.get(uid):
            found.append(f"{where} was never published and has a Published event")
        signers = set(status.get("verifiedKeyIds") or ())
        if phase == "Published" and signers & revoked:
            found.append(f"{where} is Published, signed by revoked "
                         f"{', '.join(sorted(signers & revoked))}")
    for _, floor_name, versions in history.objects(FLOOR, fleet):
        for entry in _entries(versions[-1].obj):
            if set(entry.get("keyIds") or ()) & revoked and entry.get("withdrawnAt") is None:
                found.append(f"ledger {fleet}/{floor_name}: publication {entry.get('sequence')} "
                             f"({entry.get('release')}) by a revoked key is not withdrawn")
    return found


def expected_channels(floors: Iterable[JSON]) -> dict[tuple[str, str], dict[str, str]]:
    """(product, channel) -> the data its ConfigMap must hold: per tier, the document of the
    current (highest sequence) publication, unless it was withdrawn."""
    heads: dict[tuple[str, str, str], JSON] = {}
    for floor in floors:
        spec = _spec(floor)
        for entry in _entries(floor):
            key = (str(spec.get("product")), str(entry.get("channel")), str(spec.get("tier")))
            if key not in heads or int(entry["sequence"]) > int(heads[key]["sequence"]):
                heads[key] = entry
    channels: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
    for (product, channel, tier), entry in heads.items():
        if entry.get("withdrawnAt") is None and entry.get("document"):
            channels[(product, channel)][f"{tier}.json"] = str(entry["document"])
        else:
            channels.setdefault((product, channel), {})
    return channels


def _channel_differences(history: History, fleet: str) -> list[str]:
    found = []
    expected = expected_channels(history.current(FLOOR, fleet).values())
    present = {name: obj for name, obj in history.current(CHANNEL, fleet).items()
               if name.startswith("channel.")}
    for (product, channel), data in sorted(expected.items()):
        name = f"channel.{product}.{channel}"
        actual = dict((present.get(name) or {}).get("data") or {})
        for tier in sorted(set(actual) | set(data)):
            if actual.get(tier) != data.get(tier):
                want = document_release(data[tier]) if tier in data else "nothing"
                have = document_release(actual[tier]) if tier in actual else "nothing"
                found.append(f"channel {fleet}/{name} {tier} holds {have}, its ledger {want}")
    for name, obj in sorted(present.items()):
        parts = name.split(".")
        if len(parts) == 3 and (parts[1], parts[2]) not in expected and obj.get("data"):
            found.append(f"channel {fleet}/{name} holds documents no ledger explains")
    return found


def _key_differences(history: History, fleet: str, trust: Trust, now: int) -> list[str]:
    keys = _parsed_keys(history.current(KEY, fleet))
    record_obj = history.current(REVOCATIONS, fleet).get("revocations")
    revoked = _revoked_ids(keys, record_obj)
    if not keys and record_obj is None:
        return []
    found = []
    recorded = set((_spec(record_obj).get("keys") or {}) if record_obj else ())
    for key in keys:
        if (key.spec.revoked or key.spec.revocation) and key.key_id not in recorded:
            found.append(f"key {fleet}/{key.name} says revoked; {key.key_id[:16]}… is not on "
                         "the RevocationList")
    phases = trust.phases(fleet, keys, revoked, now)
    for key, result in zip(keys, phases, strict=True):
        phase = _status(key.obj).get("phase")
        if phase != str(result.phase):
            found.append(f"key {fleet}/{key.name} is {phase}, the state machine says "
                         f"{result.phase} at {now}")
    present = history.current(CHANNEL, fleet).get(BUNDLE_CONFIGMAP)
    if ((present or {}).get("data") or {}).get(BUNDLE_KEY) != \
            expected_bundle(history, fleet, now, trust):
        found.append(f"trust bundle of {fleet} differs from its keys at {now}")
    return found


def expected_bundle(history: History, fleet: str, now: int, trust: Trust) -> str:
    """The trust bundle the fleet's SigningKeys and RevocationList (as last seen) make at `now`
    (flashgate.operator.bundle.build defines its text)."""
    keys = _parsed_keys(history.current(KEY, fleet))
    record_obj = history.current(REVOCATIONS, fleet).get("revocations")
    phases = trust.phases(fleet, keys, _revoked_ids(keys, record_obj), now)
    record = RevocationList.model_validate(record_obj) if record_obj else None
    refused = {k.spec.revocation: check.message or "" for k in keys if k.spec.revocation
               for check in [check_revocation(k.spec, fleet, trust.setting.roots, k.key_id)]
               if check.verified is False}
    return bundle.build(fleet, list(zip(keys, phases, strict=True)), record, now, refused).text

