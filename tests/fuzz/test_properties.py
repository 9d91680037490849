"""Property-based fuzzing of the trust core's parsers (hypothesis), on the targets of targets.py.

Each target is fed random bytes and mutations of its seeds (the test vectors); the structured
strategies below add what random bytes rarely reach: deterministic CBOR values of every shape,
validly signed envelopes over arbitrary payloads, and releases of up to 18 envelopes.
"""

from __future__ import annotations

import tracemalloc
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from flashgate.trust import (
    MAX_ENVELOPE_BYTES,
    MAX_SIGNATURES,
    Reason,
    TrustError,
    cbor,
    verify_release,
)
from tests.fuzz.targets import (
    TARGETS,
    Writer,
    expected_manifests,
    release_case,
    run,
    seeds,
)
from tests.fuzz.world import world

# World construction (key derivation, endorsements) happens once, before the first example.
world()

FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=150)

_INTERESTING = [0x00, 0x17, 0x18, 0x19, 0x1A, 0x1B, 0x1C, 0x1F, 0x40, 0x58, 0x5B, 0x5F, 0x60]
_INTERESTING += [0x7B, 0x7F, 0x80, 0x98, 0x9B, 0x9F, 0xA0, 0xBB, 0xBF, 0xC2, 0xD2, 0xD8, 0xF4]
_INTERESTING += [0xF6, 0xF7, 0xF9, 0xFB, 0xFF]

_EDIT = st.one_of(
    st.tuples(st.just("set"), st.integers(0, 1 << 16), st.integers(0, 255)),
    st.tuples(st.just("set"), st.integers(0, 1 << 16), st.sampled_from(_INTERESTING)),
    st.tuples(st.just("insert"), st.integers(0, 1 << 16), st.binary(min_size=1, max_size=9)),
    st.tuples(st.just("delete"), st.integers(0, 1 << 16), st.integers(1, 9)),
    st.tuples(st.just("truncate"), st.integers(0, 1 << 16), st.just(0)),
)


def _mutate(seed: bytes, edits: list[tuple[str, int, Any]]) -> bytes:
    data = bytearray(seed)
    for kind, where, what in edits:
        at = where % (len(data) + 1)
        if kind == "set" and data:
            data[at % len(data)] = what
        elif kind == "insert":
            data[at:at] = what
        elif kind == "delete":
            del data[at : at + what]
        elif kind == "truncate":
            del data[at:]
    return bytes(data)


def inputs(target: str) -> st.SearchStrategy[bytes]:
    """Random bytes, or one of the target's seeds with up to 4 edits."""
    mutated = st.builds(_mutate, st.sampled_from(seeds(target)), st.lists(_EDIT, max_size=4))
    return st.one_of(st.binary(max_size=512), mutated, mutated)


@pytest.mark.parametrize("target", sorted(TARGETS))
@FUZZ
@given(data=st.data())
def test_target_holds_on_random_and_mutated_inputs(target: str, data: st.DataObject) -> None:
    run(target, data.draw(inputs(target), label="input"))


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_seed_holds(target: str) -> None:
    assert seeds(target)
    for data in seeds(target):
        run(target, data)


# --- deterministic CBOR: one meaning, one encoding -----------------------------------------------

_INTS = st.one_of(
    st.integers(-(2**64), 2**64 - 1),
    st.sampled_from([0, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1]),
    st.sampled_from([-1, -24, -25, -256, -257, -(2**32), -(2**32) - 1, -(2**64)]),
)
_KEYS = st.one_of(_INTS, st.text(max_size=6))
_VALUES = st.recursive(
    st.one_of(_INTS, st.text(), st.binary()),
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(_KEYS, inner, max_size=5)),
    max_leaves=25,
)


@FUZZ
@given(_VALUES)
def test_decode_encode_is_the_identity(value: Any) -> None:
    data = cbor.encode(value)
    assert cbor.decode(data) == value
    run("cbor", data)  # and the reference decodes it to the same value


@FUZZ
@given(
    st.recursive(
        st.one_of(
            st.none(), st.booleans(), st.floats(), st.integers(), st.text(), st.binary(),
            st.sets(st.integers(), max_size=2), st.just("\ud800"),
        ),
        lambda inner: st.one_of(
            st.lists(inner, max_size=3), st.tuples(inner),
            st.dictionaries(st.one_of(st.integers(), st.text(), st.binary(), st.floats()),
                            inner, max_size=3),
        ),
        max_leaves=8,
    )
)  # fmt: skip
def test_encode_raises_only_its_documented_errors(value: Any) -> None:
    try:
        data = cbor.encode(value)
    except (TypeError, ValueError):
        return
    assert cbor.decode(data) == _as_lists(value)


def _as_lists(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [_as_lists(item) for item in value]
    if isinstance(value, dict):
        return {key: _as_lists(item) for key, item in value.items()}
    return value


@FUZZ
@given(
    prefix=st.binary(max_size=16),
    head=st.sampled_from([0x5B, 0x7B, 0x9B, 0xBB]),  # bytes, text, array, map: 8-byte length
    length=st.integers(2**20, 2**64 - 1),
)
def test_decoding_allocates_what_the_input_holds_not_what_it_claims(
    prefix: bytes, head: int, length: int
) -> None:
    data = prefix + bytes([head]) + length.to_bytes(8, "big") + b"\x00" * 8
    tracemalloc.start()
    try:
        try:
            cbor.decode(data)
        except TrustError as exc:
            assert exc.reason is Reason.SignatureInvalid
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024, f"{peak} bytes for {len(data)} bytes of input"


# --- verify_release on structured releases -------------------------------------------------------


@st.composite
def releases(draw: st.DrawFn) -> bytes:
    """A release in targets.release_case's input form: mostly envelopes signed here, often by a
    key of the release's tier over the release's own manifest, else by any key of the world over
    another manifest, a mutated seed payload, or raw bytes."""
    w, manifests = world(), expected_manifests()
    names = sorted(w.signers)
    writer = Writer()
    writer.byte(draw(st.sampled_from([0, 0, 0, 1, 2, 3])))  # now: mostly the vectors' own
    writer.byte(draw(st.sampled_from([0, 0, 1, 2, 7, 9, 200])))  # floor
    expected = draw(st.integers(0, len(manifests) - 1))
    writer.byte(expected)
    tier = str(manifests[expected].tier)
    own = [
        i
        for i, name in enumerate(names)
        if (r := w.ring.get(w.signers[name].key_id)) and r.tier == tier
    ]
    count = draw(st.sampled_from([0, 1, 1, 1, 2, 2, 2, 3, 4, MAX_SIGNATURES, 17]))
    writer.byte(count)
    payloads = seeds("payload")
    for _ in range(count):
        mode = draw(st.sampled_from([0, 1, 2, 2] + [3] * 8))
        writer.byte(mode)
        if mode in (0, 1):
            size = draw(st.sampled_from([0, 10, 100, MAX_ENVELOPE_BYTES, MAX_ENVELOPE_BYTES + 1]))
            pattern = draw(st.binary(min_size=1, max_size=8))
            writer.chunk((pattern * size)[:size])  # large sizes without large draws
            continue
        anyone = st.integers(0, len(names) - 1)
        writer.byte(draw(st.one_of(st.sampled_from(own), anyone) if own else anyone))
        writer.byte(draw(st.sampled_from([0] * 12 + [1, 1, 2, 4, 8, 12])))
        if mode == 2:
            payload = draw(st.sampled_from(payloads))[1:]
            writer.chunk(_mutate(payload, draw(st.lists(_EDIT, max_size=1))))
        else:
            writer.byte(draw(st.sampled_from([expected] * 3 + list(range(len(manifests))))))
    return bytes(writer.out)


@FUZZ
@given(releases())
def test_verify_release_decides_like_the_reference(data: bytes) -> None:
    run("release", data)
    case = release_case(data)
    w = world()
    verdict = verify_release(case.envelopes, case.expected, w.ring, w.policy, case.floor, case.now)
    event(f"verdict: {verdict.reason or 'accepted'}")
