"""Credentials never reach a status, an event or a log line: URLs in free text lose their
userinfo and their query (presigned URLs carry signatures there)."""
from __future__ import annotations

import re

_URL = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://)([^\s/?#@]*@)?([^\s?#]*)(\?[^\s#]*)?(#\S*)?")


def redact_text(text: str) -> str:
    """`text` with every URL's userinfo replaced by `***@` and its query and fragment dropped."""

    def clean(match: re.Match[str]) -> str:
        scheme, userinfo, rest = match.group(1), match.group(2), match.group(3)
        return f"{scheme}{'***@' if userinfo else ''}{rest}"

    return _URL.sub(clean, text)
