"""Parsing what people type: times, durations, Kubernetes names, tiers.

Each parser raises `UsageError` with the accepted forms, so a typo never reaches the HSM.
"""

from __future__ import annotations

import re
from datetime import datetime

from flashgate.signing.errors import UsageError
from flashgate.trust import durations
from flashgate.trust.vocabulary import Tier

_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")

TIERS = tuple(str(t) for t in Tier)


def parse_time(text: str, now: int, flag: str) -> int:
    """Unix seconds of an RFC 3339 time with a zone ("2026-01-01T00:00:00Z") or "now".

    Raises:
        UsageError: Anything else, including a time without a zone (ambiguous on a laptop).
    """
    if text == "now":
        return now
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{flag} {text!r} is not an RFC 3339 time",
                         "write it like 2026-01-01T00:00:00Z, or use 'now'") from None
    if parsed.tzinfo is None:
        raise UsageError(f"{flag} {text!r} has no time zone",
                         "add Z for UTC (2026-01-01T00:00:00Z) or an offset (+02:00)")
    seconds = int(parsed.timestamp())
    if seconds < 0:
        raise UsageError(f"{flag} {text!r} is before 1970")
    return seconds


def parse_duration(text: str, flag: str) -> int:
    """Seconds of a positive duration in the grammar of trust.durations, days allowed: "365d",
    "168h", "1h30m".

    Raises:
        UsageError: Empty, zero, or another unit.
    """
    try:
        total = durations.parse_duration(text, days=True)
    except ValueError:
        raise UsageError(f"{flag} {text!r} is not a duration",
                         "use whole days/hours/minutes/seconds, e.g. 365d, 168h, 1h30m") from None
    if total <= 0:
        raise UsageError(f"{flag} {text!r} must be longer than zero")
    return total


def check_name(name: str, flag: str) -> str:
    """A Kubernetes object name (DNS-1123 subdomain).

    Raises:
        UsageError: When the API server would refuse it.
    """
    if len(name) > 253 or not _DNS_SUBDOMAIN.fullmatch(name):
        raise UsageError(f"{flag} {name!r} is not a valid Kubernetes name",
                         "use lowercase letters, digits, '-' and '.', starting and ending with "
                         "a letter or digit")
    return name


def check_fleet(fleet: str) -> str:
    """A fleet, which is a Kubernetes namespace (DNS-1123 label).

    Raises:
        UsageError: When it cannot be a namespace name.
    """
    if len(fleet) > 63 or not _DNS_LABEL.fullmatch(fleet):
        raise UsageError(f"--fleet {fleet!r} is not a valid namespace name",
                         "a fleet is a Kubernetes namespace: lowercase letters, digits and '-', "
                         "at most 63 characters")
    return fleet


def default_release_name(product: str, tier: str, version: str) -> str:
    """`<product>-<tier>-<version>`, lowercased, with characters a name cannot hold as '-'."""
    raw = f"{product}-{tier}-{version}".lower()
    cleaned = re.sub(r"[^a-z0-9.-]+", "-", raw).strip("-.")
    return re.sub(r"-{2,}", "-", cleaned)[:253].rstrip("-.")
