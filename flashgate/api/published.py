"""What the operator publishes for devices, as ConfigMaps in each fleet's namespace: their names,
data keys and labels. The operator writes them and the delivery service reads them; both take the
names from here, so writer and reader cannot drift apart.

- a channel: ConfigMap `channel.<product>.<channel>`, one key `<tier>.json` per tier holding the
  current job document (docs/format.md, "Job document");
- the fleet's trust bundle: ConfigMap `flashgate-trust-bundle`, key `bundle.json`
  (docs/delivery.md, "Trust bundle").
"""
from __future__ import annotations

from flashgate.api.schema import DEFAULT_CHANNEL

MANAGED_BY = {"app.kubernetes.io/managed-by": "flashgate"}
KIND_LABEL = "ota.flashgate.dev/kind"
PRODUCT_LABEL = "ota.flashgate.dev/product"
CHANNEL_LABEL = "ota.flashgate.dev/channel"

CHANNEL_LABELS = {KIND_LABEL: "channel"}
BUNDLE_LABELS = {KIND_LABEL: "trust-bundle"}
PUBLISHED_SELECTOR = f"{KIND_LABEL} in (channel,trust-bundle)"
CHANNEL_SELECTOR = f"{KIND_LABEL}=channel"
# What a reader of the published ConfigMaps (the delivery service) watches: the operator's only.
MANAGED_PUBLISHED_SELECTOR = ",".join(
    [*(f"{k}={v}" for k, v in MANAGED_BY.items()), PUBLISHED_SELECTOR])

BUNDLE_CONFIGMAP = "flashgate-trust-bundle"
BUNDLE_KEY = "bundle.json"
DOCUMENT_SUFFIX = ".json"


def channel_name(product: str, channel: str = DEFAULT_CHANNEL) -> str:
    """The ConfigMap holding the current job document per tier of (product, channel)."""
    return f"channel.{product}.{channel}"


def parse_channel_name(name: str) -> tuple[str, str] | None:
    """(product, channel) of a ConfigMap named channel.<product>.<channel>."""
    parts = name.split(".")
    if len(parts) != 3 or parts[0] != "channel" or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def document_key(tier: str) -> str:
    """The data key of a tier's job document in a channel ConfigMap."""
    return f"{tier}{DOCUMENT_SUFFIX}"
