"""Durations as people write them in SigningKeys and on the signing station: one grammar.

The API's form is Go's, as Kubernetes tools print it, restricted to whole hours, minutes and
seconds in that order: `168h`, `1h30m`, `90s`, `0s`. The signing station's flags also take days
(`365d`), which Go has no unit for; they are written back as hours (`format_duration`).
`DURATION_PATTERN` is the same grammar as an RE2 pattern, for the CRD schema.
"""

from __future__ import annotations

import re

DURATION_PATTERN = r"^(?:[0-9]+h)?(?:[0-9]+m)?(?:[0-9]+s)?$"
"""The API's durations (RE2): at least one of h, m, s, in that order (the CRD adds minLength 2)."""

_GRAMMAR = re.compile(r"(?:([0-9]+)d)?(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s)?")
_MAX_TEXT = 32


def parse_duration(text: str, *, days: bool = False) -> int:
    """Seconds in a duration such as "168h", "1h30m", "90s" or "0s"; with `days`, also "365d".

    Raises:
        ValueError: for anything else (empty, signs, fractions, spaces, other units or order).
    """
    match = _GRAMMAR.fullmatch(text) if len(text) <= _MAX_TEXT else None
    if match is None or not any(match.groups()) or (match.group(1) and not days):
        forms = "'365d', '168h', '1h30m' or '90s'" if days else "'168h', '1h30m', '90s' or '0s'"
        raise ValueError(f"{text!r} is not a duration such as {forms}")
    d, h, m, s = (int(group or 0) for group in match.groups())
    return ((d * 24 + h) * 60 + m) * 60 + s


def format_duration(seconds: int) -> str:
    """The API's text for a duration ("168h", "1h30m", "45s", "0s"): days are written as hours."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{v}{unit}" for v, unit in ((hours, "h"), (minutes, "m"), (secs, "s")) if v]
    return "".join(parts) or "0s"
