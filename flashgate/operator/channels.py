"""The operator owns what it publishes: channel ConfigMaps that drift are restored, and said so.

Anyone who may write ConfigMaps in a fleet's namespace could add a job document to a channel (a
Rejected release's, say) or change one. The truth is each floor's publication ledger
(`ledger.channel_content`): the guard compares every channel ConfigMap with it, when the
ConfigMap changes by someone else's hand and once for every fleet at start-up, and writes back
exactly what the ledger says, with a Warning event on the ConfigMap and a metric.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from flashgate.api import RollbackFloor
from flashgate.api.published import channel_name, parse_channel_name
from flashgate.kube.client import JSON
from flashgate.kube.runtime import SYNC, object_key
from flashgate.operator import ledger
from flashgate.operator.metrics import Metrics
from flashgate.operator.store import Store
from flashgate.trust.cose import CT_RELEASE, parse_sign1
from flashgate.trust.vocabulary import Tier, TrustError

log = logging.getLogger("flashgate.operator")


def signer_key_ids(document: str) -> set[str]:
    """The keyIds named by a job document's envelopes (unverified hints: enough to find what a
    revoked key signed)."""
    found = set()
    for text in ledger.document_fields(document).get("signatures") or ():
        try:
            found.add(parse_sign1(str(text), CT_RELEASE).key_id)
        except TrustError:
            continue
    return found


@dataclass
class ChannelGuard:
    store: Store
    metrics: Metrics

    def on_channel(self, event: str, obj: JSON) -> tuple[str, str] | None:
        """A channel ConfigMap changed: the (fleet, name) to check, or None. Objects listed at
        start-up are left to `audit`, which checks a whole fleet at once."""
        fleet, name = object_key(obj)
        if event == SYNC or parse_channel_name(name) is None:
            return None
        if event != "DELETED" and self.store.wrote(fleet, name, obj):
            return None
        return fleet, name

    async def check(self, fleet: str, name: str) -> None:
        parsed = parse_channel_name(name)
        if parsed is None:
            return
        product, channel = parsed
        await self._repair(fleet, product, channel, await self._floors(fleet, product))

    async def _floors(self, fleet: str, product: str) -> list[RollbackFloor]:
        return [f for f in [await self.store.get_floor(fleet, product, str(tier))
                            for tier in Tier] if f is not None]

    async def audit(self, fleet: str) -> int:
        """Check every channel of a fleet against the ledgers; the number repaired."""
        floors = await self.store.list_floors(fleet)
        by_product: dict[str, list[RollbackFloor]] = {}
        for floor in floors:
            by_product.setdefault(floor.spec.product, []).append(floor)
        targets = {(product, p.channel) for product, fs in by_product.items() for f in fs
                   for p in ledger.publications(f)}
        for cm in await self.store.list_channels(fleet):
            parsed = parse_channel_name(object_key(cm)[1])
            if parsed is not None:
                targets.add(parsed)
        repaired = 0
        for product, channel in sorted(targets):
            repaired += await self._repair(fleet, product, channel, by_product.get(product, []))
        return repaired

    async def _repair(self, fleet: str, product: str, channel: str,
                      floors: Iterable[RollbackFloor]) -> int:
        """Write what the ledgers say into the channel. The ledgers were read before the
        channel: a publication recorded in between may have written its document already, and
        taking the channel back to the ledgers as read would remove it for good (the guard's own
        write is no drift to repair). The channel says the sequence of each document it holds,
        so one newer than the ledgers as read makes the guard read them again, after the
        channel; a sequence that those still do not know was never recorded (a publication is
        recorded before its document is written): forged, and repaired like any drift."""
        floors = list(floors)
        changes: list[str] = []
        desired = ledger.ChannelContent()
        forged: set[tuple[str, int]] = set()
        newer: dict[str, int] = {}

        def update(content: ledger.ChannelContent) -> ledger.ChannelContent | None:
            nonlocal desired
            heads = _heads(floors, channel)
            newer.clear()
            newer.update({tier: n for tier, n in content.sequences.items()
                          if n > heads.get(tier, 0) and (tier, n) not in forged})
            if newer:
                return None
            desired = ledger.channel_content(floors, channel, content)
            changes.clear()
            for key in sorted(set(content.documents) | set(desired.documents)):
                if content.documents.get(key) != desired.documents.get(key):
                    changes.append(f"{key} {'restored' if key in desired.documents else 'removed'}")
            if content.sequences != desired.sequences and not changes:
                changes.append("publication sequences restored")
            return None if not changes else desired

        name = channel_name(product, channel)
        for _ in range(_ROUNDS):
            written = await self.store.update_channel(fleet, product, channel, update)
            if not newer:
                break
            floors = await self._floors(fleet, product)
            heads = _heads(floors, channel)
            forged.update((tier, n) for tier, n in newer.items() if n > heads.get(tier, 0))
        else:
            log.warning("%s/%s: publications kept racing the repair; left for the next look",
                        fleet, name)
            return 0
        if not written or not changes:
            return 0
        message = (f"channel {name} differed from what flashgate published ("
                   + ", ".join(changes) + "); restored from the publication ledger")
        log.warning("%s/%s: %s", fleet, name, message)
        self.metrics.channel_repairs.labels(fleet).inc()
        await self.store.event(
            {"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": {"namespace": fleet, "name": name, "uid": ""}},
            "Warning", "ChannelRepaired", message)
        return 1


_ROUNDS = 5
"""Reads of the ledgers one repair may take while publications race it."""


def _heads(floors: Iterable[RollbackFloor], channel: str) -> dict[str, int]:
    """Per tier, the sequence of the channel's current publication in these ledgers."""
    return {str(f.spec.tier): h.sequence for f in floors
            if (h := ledger.head(f, channel)) is not None}

