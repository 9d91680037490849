"""What a device decides, pure: its trust store, kept current from trust bundles, and whether the
release of a job document may be installed. docs/devices.md is the description a device
implementation follows; the reference agent (`flashgate/device/`) does the I/O around this.

The trust store starts with nothing but the fleet root(s) pinned in ROM. `apply_bundle` changes it
only through entries that verify against those roots (docs/format.md "Trust bundle"):
1. every entry is checked on its own (`verify_revocation`, `endorsed_record`: content type, root
   signature, payload table, `fleet` equal to the device's); an entry that fails changes nothing
   and is reported. Nothing else of the bundle is trusted: not its grouping by tier, not its
   `fleet` field, not what it leaves out;
2. revocations first: a root-signed revocation distrusts its key for good, known or not yet;
3. then endorsements: a new key enters with the tier, algorithm and validity of its signed
   payload (a revoked one too, flagged: what it signed is refused as `KeyRevoked`, and its
   notAfter says when the revocation may be forgotten); a second endorsement of a known key can
   only narrow its validity (the intersection); one that gives a known key another tier or
   algorithm distrusts it (endorsed for two tiers, trusted for none); an endorsement of a
   retired key changes nothing;
4. the device's clock: a key past its notAfter leaves the trust set and is remembered as retired
   (so that no endorsement brings it back, and what it signed is refused as `KeyExpired`, the
   reason the cluster gives); an endorsement already past its notAfter enters retired.
Nothing else removes a key: a key missing from a bundle stays (a bundle that drops keys is a
denial of service at most, never a way to make a device distrust a good key early).

`check_job` is what a device checks of a job document before it downloads anything: the
envelopes (docs/format.md checks 0-5, `verify_signatures`, with the device's own thresholds and
the keys of its store), the signed manifest's fleet, product and tier against the device's own,
and the securityVersion against the device's secure counter of that tier and its own maximum
jump (`check_rollback`). After the download, `check_artifact` (size, then SHA-256); after the new
image is confirmed, `raised_counter`.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from flashgate.trust.keyring import ROOT, KeyRecord, KeyRing, endorsed_record, verify_revocation
from flashgate.trust.payloads import ReleaseManifest
from flashgate.trust.release import Policy, check_rollback, verify_signatures
from flashgate.trust.vocabulary import Algorithm, Reason, Tier, TrustError, Verdict

MAX_KEYS = 64
"""Tier keys a store holds (revoked ones it knew included); a new key beyond it is not added."""
MAX_REVOKED = 256
"""Revocations a store holds; one beyond it is reported and not applied (a fleet root that
revoked this many keys of one fleet, all still within their validity, has other problems)."""
MAX_RETIRED = 256
"""Retired keys remembered (so that an endorsement cannot bring them back); oldest forgotten
first."""
MAX_BUNDLE_ENTRIES = 1024
"""Entries of one bundle looked at (each costs a signature verification); the rest are ignored."""


@dataclass(frozen=True)
class TrustStore:
    """A device's trust store, besides the roots in ROM.

    Attributes:
        keys: keyId -> the tier key's record (tier, algorithm and validity as endorsed).
        revoked: keyId -> revokedAt of each root-signed revocation applied; a key the device
            knows stays in `keys` (flagged by `keyring`) until its notAfter.
        retired: Keys past their notAfter, or endorsed for two tiers, oldest first: never
            trusted again.
    """

    keys: Mapping[str, KeyRecord] = field(default_factory=dict)
    revoked: Mapping[str, int] = field(default_factory=dict)
    retired: tuple[KeyRecord, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", MappingProxyType(dict(self.keys)))
        object.__setattr__(self, "revoked", MappingProxyType(dict(self.revoked)))

    def keyring(self, roots: Sequence[KeyRecord]) -> KeyRing:
        """The roots and every stored key, revoked and retired ones flagged: what a release is
        checked against."""
        return KeyRing([*roots, *(replace(r, revoked=r.key_id in self.revoked)
                                  for r in self.keys.values()),
                        *(replace(r, retired=True) for r in self.retired)])

    def trusted(self, now: int) -> list[KeyRecord]:
        """The keys that may sign a release at `now`: not revoked, within their validity."""
        return [r for r in self.keys.values() if r.key_id not in self.revoked and r.valid_at(now)]

    def to_json(self) -> dict[str, Any]:
        """The store as JSON data (the agent's file; docs/devices.md)."""
        return {"keys": [_record_json(r) for r in self.keys.values()],
                "revoked": dict(self.revoked),
                "retired": [_record_json(r) for r in self.retired]}

    @classmethod
    def from_json(cls, data: Any) -> TrustStore:
        """The store from `to_json` data.

        Raises:
            ValueError: the data is not a store (the caller decides what a device does then).
        """
        try:
            records = [_record_of(k) for k in data["keys"]]
            revoked = {str(k): int(v) for k, v in data["revoked"].items()}
            retired = tuple(_record_of(k) for k in data["retired"])
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ValueError(f"not a trust store: {type(exc).__name__}: {exc}") from None
        return cls({r.key_id: r for r in records}, revoked, retired)


def _record_json(record: KeyRecord) -> dict[str, Any]:
    return {"keyId": record.key_id, "tier": str(record.tier), "algorithm": str(record.algorithm),
            "publicKey": record.public_key.hex(), "notBefore": record.not_before,
            "notAfter": record.not_after}


def _record_of(data: Any) -> KeyRecord:
    return KeyRecord(key_id=str(data["keyId"]), tier=Tier(data["tier"]),
                     algorithm=Algorithm(data["algorithm"]),
                     public_key=bytes.fromhex(data["publicKey"]),
                     not_before=int(data["notBefore"]), not_after=int(data["notAfter"]))


@dataclass(frozen=True)
class BundleUpdate:
    """What `apply_bundle` (or `expire`) did.

    Attributes:
        store: The store afterwards (the very same object when nothing changed).
        added: keyIds that entered the store.
        revoked: keyIds newly revoked.
        retired: keyIds retired now (notAfter passed, or endorsed for two tiers).
        ignored: (which entry, why) of each entry that changed nothing because it failed.
    """

    store: TrustStore
    added: tuple[str, ...] = ()
    revoked: tuple[str, ...] = ()
    retired: tuple[str, ...] = ()
    ignored: tuple[tuple[str, str], ...] = ()


class _Update:
    """The store being changed by one bundle, and what changed."""

    def __init__(self, store: TrustStore) -> None:
        self.before = store
        self.keys, self.revoked = dict(store.keys), dict(store.revoked)
        self.retired = {r.key_id: r for r in store.retired}
        self.added: list[str] = []
        self.newly_revoked: list[str] = []
        self.newly_retired: list[str] = []
        self.ignored: list[tuple[str, str]] = []

    def revoke(self, label: str, key_id: str, revoked_at: int) -> None:
        if key_id in self.revoked or key_id in self.retired:
            return  # revoked already, or retired for good
        if len(self.revoked) >= MAX_REVOKED:
            self.ignored.append((label, f"the store holds {MAX_REVOKED} revocations already"))
            return
        self.revoked[key_id] = revoked_at
        self.newly_revoked.append(key_id)

    def retire(self, record: KeyRecord) -> None:
        self.keys.pop(record.key_id, None)
        self.revoked.pop(record.key_id, None)  # retired covers it from now on
        self.retired[record.key_id] = record
        self.newly_retired.append(record.key_id)

    def endorse(self, label: str, record: KeyRecord, now: int) -> None:
        key_id = record.key_id
        known = self.keys.get(key_id)
        if key_id in self.retired:
            return
        if known is None:
            if record.not_after <= now:
                self.retire(record)  # its validity is over already
            elif len(self.keys) >= MAX_KEYS:
                self.ignored.append((label, f"the store holds {MAX_KEYS} keys already"))
            else:
                self.keys[key_id] = record
                self.added.append(key_id)
        elif (known.tier, known.algorithm) != (record.tier, record.algorithm):
            self.retire(known)
            self.ignored.append((label, f"key {key_id} is endorsed for {known.tier} "
                                        f"({known.algorithm}) and for {record.tier} "
                                        f"({record.algorithm}): trusted for neither"))
        else:
            self.keys[key_id] = replace(known,
                                        not_before=max(known.not_before, record.not_before),
                                        not_after=min(known.not_after, record.not_after))

    def expire(self, now: int) -> None:
        for record in list(self.keys.values()):
            if record.not_after <= now:
                self.retire(record)

    def result(self) -> BundleUpdate:
        store = self.before
        if self.keys != dict(store.keys) or self.revoked != dict(store.revoked) \
                or list(self.retired.values()) != list(store.retired):
            retired = tuple(self.retired.values())[-MAX_RETIRED:]
            store = TrustStore(self.keys, self.revoked, retired)
        return BundleUpdate(store, tuple(self.added), tuple(self.newly_revoked),
                            tuple(self.newly_retired), tuple(self.ignored))


def _entries(bundle: Any) -> tuple[list[tuple[str, object]], list[tuple[str, object]]]:
    """The (label, entry) of each endorsement and each revocation a bundle lists, endorsements
    of every tier group together (the grouping is not signed: the payload says the tier)."""
    if not isinstance(bundle, dict):
        return [], []
    endorsements: list[tuple[str, object]] = []
    groups = bundle.get("endorsements")
    for tier, listed in (groups.items() if isinstance(groups, dict) else ()):
        for i, entry in enumerate(listed if isinstance(listed, list) else [listed]):
            endorsements.append((f"endorsements.{str(tier)[:40]}[{i}]", entry))
    listed = bundle.get("revocations")
    revocations = [(f"revocations[{i}]", entry)
                   for i, entry in enumerate(listed if isinstance(listed, list) else [])]
    return endorsements, revocations


def apply_bundle(store: TrustStore, bundle: Any, fleet: str, roots: Sequence[KeyRecord],
                 now: int) -> BundleUpdate:
    """The trust store after a trust bundle (parsed JSON, of any shape), by the rules of the
    module docstring. Never raises: what cannot be used is reported in `ignored`.

    Args:
        store: The store before.
        bundle: The bundle as parsed from JSON; nothing of it is trusted but verified entries.
        fleet: The device's fleet (every entry's signed `fleet` must equal it).
        roots: The pinned fleet root(s), as `root_key` records.
        now: The device's clock, Unix seconds.
    """
    roots = [r for r in roots if r.tier == ROOT]
    update = _Update(store)
    if not isinstance(bundle, dict) or bundle.get("kind") != "TrustBundle":
        update.ignored.append(("bundle", "not a TrustBundle"))
    endorsements, revocations = _entries(bundle)
    budget = MAX_BUNDLE_ENTRIES
    for kind, entries in (("revocation", revocations), ("endorsement", endorsements)):
        for label, entry in entries:
            if budget <= 0:
                update.ignored.append((label, f"beyond {MAX_BUNDLE_ENTRIES} entries"))
                continue
            budget -= 1
            if not isinstance(entry, str):
                update.ignored.append((label, "not base64 text"))
                continue
            try:
                if kind == "revocation":
                    revocation = verify_revocation(entry, fleet, roots)
                    update.revoke(label, revocation.key_id.hex(), revocation.revoked_at)
                else:
                    update.endorse(label, endorsed_record(entry, fleet, roots), now)
            except TrustError as exc:
                update.ignored.append((label, f"{exc.reason}: {exc.message}"))
    update.expire(now)
    return update.result()


def expire(store: TrustStore, now: int) -> BundleUpdate:
    """Rule 4 alone, for a poll that brought no new bundle: keys past notAfter by the device's
    clock leave the store."""
    update = _Update(store)
    update.expire(now)
    return update.result()


def check_job(envelopes: Sequence[str | bytes], *, fleet: str, product: str, tier: Tier,
              keyring: KeyRing, policy: Policy, counter: int, now: int) -> Verdict:
    """May a device of (fleet, product) with this secure counter for `tier` install the release
    these envelopes sign? Everything before the download (docs/devices.md "Order of checks").
    Never raises.

    1. checks 0-5 of docs/format.md with the device's thresholds and keys (`verify_signatures`);
    2. the signed manifest's fleet, product and tier against the device's → `ManifestMismatch`;
    3. its securityVersion against the counter: below → `RollbackRejected` (equal is allowed:
       another build of the same security epoch); above counter + the device's maximum jump →
       `FastForwardRejected`.

    Returns:
        The verdict; `manifest` and `key_ids` are set once the signatures verified.
    """
    signed = verify_signatures(envelopes, tier, keyring, policy, now)
    if not signed.accepted or signed.manifest is None:
        return signed
    manifest, key_ids = signed.manifest, signed.key_ids
    wrong = [f"{name} {theirs!r}, this device is {mine!r}"
             for name, mine, theirs in (("fleet", fleet, manifest.fleet),
                                        ("product", product, manifest.product),
                                        ("tier", str(tier), str(manifest.tier)))
             if mine != theirs]
    if wrong:
        return Verdict.reject(Reason.ManifestMismatch, "the release is signed for " +
                              "; ".join(wrong), key_ids=key_ids, manifest=manifest)
    rollback = check_rollback(manifest.security_version, counter,
                              policy.max_security_version_jump,
                              subject=f"the device's {tier} counter")
    if not rollback.accepted:
        return replace(rollback, key_ids=key_ids, manifest=manifest)
    return Verdict.accept(f"{signed.message}; {rollback.message}", key_ids=key_ids,
                          manifest=manifest)


def manifest_digest(manifest: ReleaseManifest) -> str:
    """SHA-256 (hex) of the signed manifest's one deterministic encoding: what identifies an
    installed release (a job document whose verified manifest has this digest brings nothing
    new)."""
    return hashlib.sha256(manifest.to_cbor()).hexdigest()


def raised_counter(counter: int, security_version: int) -> int:
    """The secure counter of a tier once an image of `security_version` is confirmed running:
    raised to it, never lowered. Raised only after the confirmation, so a power cut before it
    leaves the old counter (and the old image bootable); the counter is checked before every
    download, so an image below it is never written."""
    return max(counter, security_version)

