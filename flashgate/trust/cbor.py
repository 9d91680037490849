"""Deterministic CBOR, docs/format.md "Deterministic CBOR" (RFC 8949 §4.2.1).

Only the data model the wire format uses: unsigned and negative integers (64-bit), byte strings,
UTF-8 text, arrays and maps with integer or text keys. No floats, tags, simple values or indefinite
lengths.

`encode` is written here rather than taken from cbor2: cbor2's canonical mode orders map keys
length-first (RFC 7049 §3.9), which differs from RFC 8949's bytewise order of the encoded keys
(e.g. -1 and 100). `decode` is written here too: cbor2 interprets tags while it parses (value
sharing, tags 28/29, turned a few kilobytes into millions of items before anything could refuse
them), and this subset is small enough to parse directly. `decode` parses only that subset, checks
every length against the bytes left before it reads or loops (so no header can make it allocate),
then re-encodes and compares bytes: whatever is not the one deterministic encoding of its value
(key order, integer or length width, trailing bytes) is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
        value, end = _item(raw, 0, 0)
        if end != len(raw):
            raise _Malformed(f"{len(raw) - end} trailing bytes")
    except _Malformed as exc:
        raise TrustError(Reason.SignatureInvalid, f"not deterministic CBOR: {exc}") from None
    if encode(value) != raw:
        raise TrustError(
            Reason.SignatureInvalid,
            "not deterministic CBOR: the bytes are not the one deterministic encoding of their "
            "value (map key order, or integer or length width)",
        )
    return value


class _Malformed(Exception):
    """Outside the subset `decode` reads; becomes TrustError there."""


def _item(raw: bytes, pos: int, depth: int) -> tuple[Any, int]:
    """The data item at `pos` and the position after it (RFC 8949 §3)."""
    if pos >= len(raw):
        raise _Malformed("premature end of data")
    major, info = raw[pos] >> 5, raw[pos] & 0x1F
    pos += 1
    if info < 24:
        arg = info
    elif info < 28:
        width = 1 << (info - 24)
        if width > len(raw) - pos:
            raise _Malformed("premature end of data")
        arg = int.from_bytes(raw[pos : pos + width], "big")
        pos += width
    else:  # 28-30 are reserved, 31 is an indefinite length or a break
        raise _Malformed(f"indefinite length or reserved head 0x{raw[pos - 1]:02x}")
    if major == 0:
        return arg, pos
    if major == 1:
        return -1 - arg, pos
    if major in (2, 3):
        if arg > len(raw) - pos:
            raise _Malformed(f"a string of {arg} bytes where {len(raw) - pos} are left")
        chunk, pos = raw[pos : pos + arg], pos + arg
        if major == 2:
            return chunk, pos
        try:
            return chunk.decode("utf-8"), pos
        except UnicodeDecodeError:
            raise _Malformed("text is not valid UTF-8") from None
    if major in (4, 5):
        if depth >= _MAX_DEPTH:
            raise _Malformed(f"nested deeper than {_MAX_DEPTH}")
        # Every item takes at least one byte: a count beyond the bytes left cannot be met.
        if arg > len(raw) - pos:
            raise _Malformed(f"{arg} items where {len(raw) - pos} bytes are left")
        if major == 4:
            items = []
            for _ in range(arg):
                item, pos = _item(raw, pos, depth + 1)
                items.append(item)
            return items, pos
        entries: dict[int | str, Any] = {}
        for _ in range(arg):
            key, pos = _item(raw, pos, depth + 1)
            if type(key) is not int and not isinstance(key, str):
                raise _Malformed(f"map key {key!r} is neither an integer nor text")
            if key in entries:
                raise _Malformed(f"duplicate map key {key!r}")
            entries[key], pos = _item(raw, pos, depth + 1)
        return entries, pos
    if major == 6:
        raise _Malformed(f"tag {arg}: tags are not used")
    raise _Malformed("floats and simple values are not used")
