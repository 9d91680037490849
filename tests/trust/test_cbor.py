"""Deterministic CBOR (docs/format.md "Deterministic CBOR", RFC 8949 §4.2.1): one value, one encoding."""

from __future__ import annotations

import time
import tracemalloc
from typing import Any

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flashgate.trust import Reason, TrustError, decode, encode


@pytest.mark.parametrize(
    ("value", "hex_"),
    [  # RFC 8949 Appendix A, the part of the data model the wire format uses
        (0, "00"),
        (23, "17"),
        (24, "1818"),
        (100, "1864"),
        (1000, "1903e8"),
        (1000000, "1a000f4240"),
        (1000000000000, "1b000000e8d4a51000"),
        (18446744073709551615, "1bffffffffffffffff"),
        (-1, "20"),
        (-100, "3863"),
        (-1000, "3903e7"),
        (-18446744073709551616, "3bffffffffffffffff"),
        (b"", "40"),
        (b"\x01\x02\x03\x04", "4401020304"),
        ("", "60"),
        ("IETF", "6449455446"),
        ("\u00fc", "62c3bc"),
        ([], "80"),
        ([1, [2, 3], [4, 5]], "8301820203820405"),
        ({}, "a0"),
        ({1: 2, 3: 4}, "a201020304"),
        ({"a": 1, "b": [2, 3]}, "a26161016162820203"),
        ((1, 2), "820102"),
    ],
)
def test_encode_matches_rfc_8949(value: Any, hex_: str) -> None:
    assert encode(value).hex() == hex_
    expected = list(value) if isinstance(value, tuple) else value
    assert decode(bytes.fromhex(hex_)) == expected


def test_map_keys_sort_bytewise_not_length_first() -> None:
    # RFC 8949 §4.2.1's own example, restricted to int and text keys: 10, 100, -1, "z", "aa".
    # (cbor2's canonical mode would put -1 (0x20) before 100 (0x18 0x64): length-first.)
    value = {"aa": 5, "z": 4, -1: 3, 100: 2, 10: 1}
    assert encode(value).hex() == "a5" + "0a01" + "186402" + "2003" + "617a04" + "62616105"


@pytest.mark.parametrize(
    "value",
    [
        True,
        False,
        None,
        1.0,
        2**64,
        -(2**64) - 1,
        {(1, 2): 1},
        {b"k": 1},
        {1.5: 1},
        {1, 2},
        "\ud800",
    ],
)
def test_encode_refuses_what_the_wire_format_does_not_have(value: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        encode(value)


@pytest.mark.parametrize(
    ("kind", "hex_"),
    [
        ("non-shortest int (1 byte)", "1800"),
        ("non-shortest int (2 bytes)", "190017"),
        ("non-shortest int (4 bytes)", "1a00000100"),
        ("non-shortest int (8 bytes)", "1b00000000ffffffff"),
        ("non-shortest negative int", "3800"),
        ("non-shortest length", "580100"),
        ("non-shortest array length", "980100"),
        ("unsorted map", "a2020001 00".replace(" ", "")),
        ("length-first map order", "a2200018 6400".replace(" ", "")),
        ("unsorted text keys", "a2616200616100"),
        ("duplicate keys", "a2010001 00".replace(" ", "")),
        ("indefinite array", "9f01ff"),
        ("indefinite map", "bf0101ff"),
        ("indefinite bytes", "5f4101ff"),
        ("indefinite text", "7f6161ff"),
        ("half float", "f93c00"),
        ("single float", "fa3f800000"),
        ("double float", "fb3ff0000000000000"),
        ("date tag", "c06161"),
        ("bignum tag", "c24101"),
        ("bignum beyond 64 bits", "c249010000000000000000"),
        ("self-describe tag", "d9d9f700"),
        ("COSE_Sign1 tag", "d280"),
        ("false", "f4"),
        ("true", "f5"),
        ("null", "f6"),
        ("undefined", "f7"),
        ("simple value", "e0"),
        ("two-byte simple value", "f820"),
        ("trailing bytes", "0000"),
        ("truncated array", "8201"),
        ("truncated int", "1900"),
        ("truncated text", "6361"),
        ("empty", ""),
        ("invalid UTF-8", "62c328"),
        ("byte string key", "a14000"),
        ("array key", "a18000"),
        ("map key", "a1a000"),
        ("deep nesting", "81" * 40 + "00"),
        ("reserved additional info", "1c"),
        ("break alone", "ff"),
    ],
)
def test_decode_refuses_anything_but_the_deterministic_encoding(kind: str, hex_: str) -> None:
    with pytest.raises(TrustError) as caught:
        decode(bytes.fromhex(hex_))
    assert caught.value.reason is Reason.SignatureInvalid
    assert "deterministic" in caught.value.message


def _shared_reference_bomb(levels: int, fanout: int) -> bytes:
    """CBOR value sharing (tags 28/29): level i is an array of `fanout` references to level i-1,
    so a few kilobytes stand for fanout**(levels - 1) items once the references are followed."""
    body = b"\xd8\x1c\x81\x00"  # shareable 0: [0]
    for level in range(1, levels):
        body += b"\xd8\x1c" + cbor2.dumps([0] * fanout)[:-fanout]  # shareable i: array head
        body += (b"\xd8\x1d" + encode(level - 1)) * fanout  # fanout x sharedref(i - 1)
    return encode([0] * levels)[:-levels] + body


@pytest.mark.timeout(30)
def test_tags_are_refused_without_being_interpreted() -> None:
    # 3000**2 = 9e6 items behind 18 KB (cbor2 followed them: seconds; one more level, hours).
    bomb = _shared_reference_bomb(levels=3, fanout=3000)
    assert len(bomb) < 20_000
    started = time.monotonic()
    with pytest.raises(TrustError) as caught:
        decode(bomb)
    assert time.monotonic() - started < 1.0
    assert "tag" in caught.value.message


@pytest.mark.parametrize(
    ("kind", "hex_"),
    [
        ("byte string of 2**63 bytes", "5b8000000000000000" + "00"),
        ("text of 2**64 - 1 bytes", "7bffffffffffffffff" + "00"),
        ("array of 2**32 items", "9b0000000100000000" + "00"),
        ("map of 2**28 entries", "ba10000000" + "0000"),
    ],
)
def test_length_headers_are_checked_against_the_bytes_left_before_anything_is_allocated(
    kind: str, hex_: str
) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(TrustError) as caught:
            decode(bytes.fromhex(hex_))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.reason is Reason.SignatureInvalid
    assert peak < 1 << 20, f"{kind}: {peak} bytes allocated"


def test_decode_returns_lists_and_dicts() -> None:
    value = decode(encode({"a": [[1], {"b": b"x"}]}))
    assert value == {"a": [[1], {"b": b"x"}]}
    assert type(value["a"]) is list
    assert type(value["a"][1]) is dict


_KEYS = st.one_of(st.integers(-(2**64), 2**64 - 1), st.text(max_size=8))
_VALUES = st.recursive(
    st.one_of(st.integers(-(2**64), 2**64 - 1), st.text(), st.binary()),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(_KEYS, children, max_size=4)
    ),
    max_leaves=12,
)


@given(_VALUES)
def test_round_trip(value: Any) -> None:
    data = encode(value)
    assert decode(data) == value
    assert cbor2.loads(data) == value  # any CBOR decoder reads it back


@given(
    st.recursive(
        st.one_of(st.integers(-(2**64), 2**64 - 1), st.text(), st.binary()),
        lambda children: st.one_of(
            st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children)
        ),
        max_leaves=12,
    )
)
def test_agrees_with_cbor2_canonical_when_keys_are_text(value: Any) -> None:
    # For text keys, length-first and bytewise order coincide.
    assert encode(value) == cbor2.dumps(value, canonical=True)


@given(st.binary(max_size=64))
def test_decode_accepts_only_its_own_encodings(data: bytes) -> None:
    try:
        value = decode(data)
    except TrustError as exc:
        assert exc.reason is Reason.SignatureInvalid
    else:
        assert encode(value) == data
