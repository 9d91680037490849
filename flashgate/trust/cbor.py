"""Deterministic CBOR, FORMAT.md "Payloads: deterministic CBOR" (RFC 8949 §4.2.1).

Only the data model the wire format uses: unsigned and negative integers (64-bit), byte strings,
UTF-8 text, arrays and maps with integer or text keys. No floats, tags, simple values or indefinite
lengths.

`encode` is written here rather than taken from cbor2: cbor2's canonical mode orders map keys
length-first (RFC 7049 §3.9), which differs from RFC 8949's bytewise order of the encoded keys
(e.g. -1 and 100). `decode` lets cbor2 parse, then re-encodes and compares bytes: whatever is not
the one deterministic encoding of its value (key order, integer or length width, duplicate keys,
trailing bytes, tags, floats, indefinite lengths) is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cbor2

from flashgate.trust.vocabulary import Reason, TrustError

_UINT_LIMIT = 1 << 64
# The wire format nests two levels at most; this bound keeps hostile input shallow and cheap.
_MAX_DEPTH = 16


def encode(obj: object) -> bytes:
    """Encode int/str/bytes/list/tuple/dict values as deterministic CBOR.

    Raises:
        TypeError: for any other type (bool, float, None, ...) or a map key that is not int/str.
        ValueError: for an integer outside the CBOR 64-bit range or text that is not UTF-8.
    """
    out = bytearray()
    _encode(obj, out)
    return bytes(out)


def _head(major: int, n: int, out: bytearray) -> None:
    """Append a shortest-form head: major type and argument (RFC 8949 §3)."""
    if n < 24:
        out.append(major << 5 | n)
        return
    for extra, width in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < 1 << (8 * width):
            out.append(major << 5 | extra)
            out += n.to_bytes(width, "big")
            return
    raise ValueError(f"integer {n} does not fit in 64 bits")


def _encode(obj: object, out: bytearray) -> None:
    if type(obj) is int:  # exactly int: bool is not an integer on this wire
        if 0 <= obj < _UINT_LIMIT:
            _head(0, obj, out)
        elif -_UINT_LIMIT <= obj < 0:
            _head(1, -1 - obj, out)
        else:
            raise ValueError(f"integer {obj} is outside the CBOR 64-bit range")
    elif isinstance(obj, bytes):
        _head(2, len(obj), out)
        out += obj
    elif isinstance(obj, str):
        data = obj.encode("utf-8")
        _head(3, len(data), out)
        out += data
    elif isinstance(obj, list | tuple):
        _head(4, len(obj), out)
        for item in obj:
            _encode(item, out)
    elif isinstance(obj, Mapping):
        entries = []
        for key, value in obj.items():
            if type(key) is not int and not isinstance(key, str):
                raise TypeError(f"map key {key!r} is neither an integer nor text")
            entries.append((encode(key), value))
        entries.sort(key=lambda entry: entry[0])  # bytewise order of the encoded keys
        _head(5, len(entries), out)
        for key_bytes, value in entries:
            out += key_bytes
            _encode(value, out)
    else:
        raise TypeError(f"{type(obj).__name__} is not part of the deterministic CBOR data model")


def decode(data: bytes) -> Any:
    """Decode deterministic CBOR; arrays come back as lists, maps as dicts.

    Raises:
        TrustError: `SignatureInvalid` unless `data` is exactly the deterministic encoding of the
            value it decodes to.
    """
    raw = bytes(data)
    try:
        value = cbor2.loads(
            raw, allow_indefinite=False, allow_duplicate_keys=False, max_depth=_MAX_DEPTH
        )
        canonical = encode(value)
    # cbor2 raises several unrelated types on hostile input (its own errors, ValueError,
    # OverflowError, ...); all of them mean the same thing here.
    except Exception as exc:
        raise TrustError(Reason.SignatureInvalid, f"not deterministic CBOR: {exc}") from None
    if canonical != raw:
        raise TrustError(
            Reason.SignatureInvalid,
            "not deterministic CBOR: the bytes are not the one deterministic encoding of their "
            "value (map key order, integer or length width, or trailing bytes)",
        )
    return _normalise(value)


def _normalise(value: Any) -> Any:
    """Lists for arrays and dicts for maps, whatever container types cbor2 chose."""
    if isinstance(value, list | tuple):
        return [_normalise(item) for item in value]
    if isinstance(value, Mapping):
        return {key: _normalise(item) for key, item in value.items()}
    return value
