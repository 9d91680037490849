"""Fuzz targets of the trust core: one function per parser, bytes in, AssertionError on a finding.

Each target runs one input through the trust core and through `reference` (an independent reading
of docs/format.md) and asserts:
- the core raises nothing but TrustError (the verify_* functions raise nothing at all);
- it decides like the reference: it accepts exactly what the reference accepts, and for releases
  and root-signed documents it gives the very same reason;
- what it accepts has one encoding: re-encoding gives the input back;
- it answers within `TIME_LIMIT` seconds.
The same targets serve hypothesis (tests/fuzz/test_properties.py), atheris
(tests/fuzz/atheris_main.py, tests/fuzz/test_atheris.py, bench/fuzz_trust.py) and the regression
files (tests/fuzz/regressions). `seeds(target)` is the starting corpus: the test vectors, and
variants of them.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cache
from typing import Any

from cryptography.hazmat.primitives import serialization

from flashgate.trust import (
    CT_KEY,
    CT_RELEASE,
    CT_REVOCATION,
    MAX_ENVELOPE_BYTES,
    Algorithm,
    KeyEndorsement,
    ReleaseManifest,
    Revocation,
    Tier,
    TrustError,
    cbor,
    check_artifact,
    decode_b64,
    envelope_size,
    load_spki,
    parse_sign1,
    sign1,
    spki_from_pem,
    spki_to_pem,
    verify_endorsement,
    verify_release,
    verify_revocation,
)
from tests.fuzz import reference
from tests.fuzz.world import vectors, wire, world
from tests.trust.test_vectors import expected_manifest as manifest_of

TIME_LIMIT = 1.0
"""Seconds one input may take (the slowest real case, 16 ES256 envelopes, takes milliseconds)."""

REFUSED = object()


def _core(call: Callable[[], Any]) -> Any:
    """The core's answer, or REFUSED; any exception but TrustError is a finding."""
    try:
        return call()
    except TrustError as exc:
        assert exc.message, "a TrustError without a message"
        return REFUSED


def _reference(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except reference.Refused:
        return REFUSED


# --- cbor --------------------------------------------------------------------------------------


def check_cbor(data: bytes) -> None:
    ours = _core(lambda: cbor.decode(data))
    theirs = _reference(lambda: reference.decode(data))
    if ours is REFUSED:
        assert theirs is REFUSED, f"the core refuses what the reference decodes: {theirs!r}"
        return
    assert theirs is not REFUSED, f"the core accepts what the reference refuses: {ours!r}"
    assert ours == theirs, f"decoded differently: {ours!r} vs {theirs!r}"
    assert cbor.encode(ours) == data, "encode(decode(b)) != b"


# --- base64 ------------------------------------------------------------------------------------


def check_base64(data: bytes) -> None:
    text = data.decode("latin-1")  # every byte a character, so any text up to U+00FF
    ours = _core(lambda: decode_b64(text))
    theirs = _reference(lambda: reference.b64(text))
    assert (ours is REFUSED) == (theirs is REFUSED), f"base64 {text!r}: {ours!r} vs {theirs!r}"
    if ours is not REFUSED:
        assert ours == theirs
        assert base64.b64encode(ours).decode("ascii") == text
        assert envelope_size(text) == len(ours)


# --- COSE_Sign1 --------------------------------------------------------------------------------

_KINDS = [("release", CT_RELEASE), ("key", CT_KEY), ("revocation", CT_REVOCATION)]


def check_sign1(data: bytes) -> None:
    """First byte: content type expected (bits 0-1) and whether to pass base64 text (bit 2)."""
    flags, raw = (data[0], data[1:]) if data else (0, b"")
    kind, content_type = _KINDS[(flags & 3) % 3]
    envelope: bytes | str = base64.b64encode(raw).decode() if flags & 4 else raw
    ours = _core(lambda: parse_sign1(envelope, content_type))
    theirs = _reference(lambda: reference.envelope(envelope, kind))
    if ours is REFUSED:
        assert theirs is REFUSED, "the core refuses an envelope the reference parses"
        return
    assert theirs is not REFUSED, "the core parses an envelope the reference refuses"
    assert (ours.protected, ours.payload, ours.signature, ours.alg, ours.kid) == (
        theirs.protected,
        theirs.payload,
        theirs.signature,
        theirs.alg,
        theirs.kid,
    )
    again = b"\xd2" + cbor.encode([ours.protected, {}, ours.payload, ours.signature])
    assert again == raw, "the envelope has another encoding"


# --- payloads ----------------------------------------------------------------------------------

_PAYLOADS: list[tuple[str, type[ReleaseManifest] | type[KeyEndorsement] | type[Revocation]]] = [
    ("release", ReleaseManifest),
    ("key", KeyEndorsement),
    ("revocation", Revocation),
]


def check_payload(data: bytes) -> None:
    """First byte: which payload table (mod 3)."""
    selector, raw = (data[0], data[1:]) if data else (0, b"")
    kind, cls = _PAYLOADS[selector % 3]
    ours = _core(lambda: cls.from_cbor(raw))
    theirs = _reference(lambda: reference.payload(raw, kind))
    if ours is REFUSED:
        assert theirs is REFUSED, f"the core refuses a {kind} payload the reference accepts"
        return
    assert theirs is not REFUSED, f"the core accepts a {kind} payload the reference refuses"
    assert ours.to_cbor() == raw, f"{kind}: to_cbor(from_cbor(b)) != b"


# --- keys --------------------------------------------------------------------------------------


def _pem(der: bytes) -> str:
    body = base64.encodebytes(der).decode("ascii")
    return f"-----BEGIN PUBLIC KEY-----\n{body}-----END PUBLIC KEY-----\n"


def check_spki(data: bytes) -> None:
    """First byte: 0 Ed25519 DER, 1 P-256 DER, 2 the rest as PEM text, 3 the rest armoured."""
    mode, raw = (data[0] % 4, data[1:]) if data else (0, b"")
    if mode < 2:
        algorithm = list(Algorithm)[mode]
        ours = _core(lambda: load_spki(raw, algorithm))
        theirs = _reference(lambda: reference.spki(raw, str(algorithm)))
        assert (ours is REFUSED) == (theirs is REFUSED), f"{algorithm} {raw.hex()}: {ours!r}"
        if ours is not REFUSED:
            assert spki_from_pem(spki_to_pem(raw)) == raw
        return
    text = raw.decode("latin-1") if mode == 2 else _pem(raw)
    der = _core(lambda: spki_from_pem(text))
    if der is not REFUSED:
        key = serialization.load_pem_public_key(text.encode("ascii"))
        assert der == key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )


# --- verify_release ----------------------------------------------------------------------------


class Reader:
    """Reads a fuzz input as a sequence of small decisions; past the end, everything is 0."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def byte(self) -> int:
        value = self.data[self.pos] if self.pos < len(self.data) else 0
        self.pos += 1
        return value

    def chunk(self) -> bytes:
        """Two bytes of length (big-endian), then that many bytes (fewer at the end)."""
        length = self.byte() << 8 | self.byte()
        start = min(self.pos, len(self.data))
        self.pos += length
        return self.data[start : self.pos]


class Writer:
    """The inverse of Reader, for seeds."""

    def __init__(self) -> None:
        self.out = bytearray()

    def byte(self, value: int) -> Writer:
        self.out.append(value)
        return self

    def chunk(self, data: bytes) -> Writer:
        self.out += len(data).to_bytes(2, "big") + data
        return self


@cache
def expected_manifests() -> list[ReleaseManifest]:
    """What a release resource may declare: the vectors' releases, then other tiers."""
    found: list[ReleaseManifest] = []
    for case in vectors()["release_cases"]:
        manifest = manifest_of(case["release"])
        if manifest not in found:
            found.append(manifest)
    good = world().good
    found += [replace(good, tier=tier) for tier in Tier if replace(good, tier=tier) not in found]
    return found


_NOWS = [0, 1795000001, 1789913600, 1821536000]  # 0 = the vectors' now
_CONTENT_TYPES = [CT_RELEASE, CT_KEY, CT_REVOCATION, "application/cbor"]


def _names() -> list[str]:
    return sorted(world().signers)


@dataclass(frozen=True)
class ReleaseCase:
    envelopes: list[bytes | str]
    expected: ReleaseManifest
    floor: int | None
    now: int
    artifact: bytes  # what the fetcher received: at most the signed size
    more: bool  # the source had more bytes than that


def release_case(data: bytes) -> ReleaseCase:
    """Decode a fuzz input into a release to verify:

    now (byte), floor (byte: 0 the world's, 1 none, else that value - 2), expected manifest (byte),
    envelope count (byte, 0-18), then per envelope a mode byte:
      0 raw bytes (chunk);  1 text (chunk, as Latin-1);
      2 signed here: key, flags (bit 0 base64, bit 1 claim the other alg, bits 2-3 content type),
        payload (chunk);
      3 signed here over one of the expected manifests: key, flags, manifest (byte);
    then the artifact fetched (byte: 0 as signed, 1 a byte short, 2 a byte changed, 3 a byte
    more at the source).
    """
    w, reader = world(), Reader(data)
    now = _NOWS[reader.byte() % len(_NOWS)] or w.now
    manifests = expected_manifests()
    floor_byte = reader.byte()
    expected = manifests[reader.byte() % len(manifests)]
    floor = w.floor(expected) if floor_byte == 0 else None if floor_byte == 1 else floor_byte - 2
    envelopes: list[bytes | str] = []
    names = _names()
    for _ in range(reader.byte() % 19):
        mode = reader.byte() % 4
        if mode == 0:
            envelopes.append(reader.chunk())
        elif mode == 1:
            envelopes.append(reader.chunk().decode("latin-1"))
        else:
            signer = w.signers[names[reader.byte() % len(names)]]
            flags = reader.byte()
            if mode == 2:
                payload = reader.chunk()
            else:
                payload = manifests[reader.byte() % len(manifests)].to_cbor()
            envelopes.append(_signed(signer, flags, payload))
    artifact, fetched = bytes.fromhex(vectors()["artifact"]["hex"]), reader.byte() % 4
    if fetched == 1:
        artifact = artifact[:-1]
    elif fetched == 2:
        artifact = artifact[:-1] + bytes([artifact[-1] ^ 1])
    return ReleaseCase(envelopes, expected, floor, now, artifact, more=fetched == 3)


def _signed(signer: Any, flags: int, payload: bytes) -> bytes | str:
    if flags & 2:
        other = next(a for a in Algorithm if a is not signer.algorithm)
        signer = _Claiming(signer, other)
    envelope = sign1(signer, _CONTENT_TYPES[flags >> 2 & 3], payload)
    return base64.b64encode(envelope).decode() if flags & 1 else envelope


class _Claiming:
    """Signs with one key while its envelope's `alg` names the other algorithm."""

    def __init__(self, inner: Any, algorithm: Algorithm) -> None:
        self.inner, self.algorithm, self.key_id = inner, algorithm, inner.key_id

    def sign(self, tbs: bytes) -> bytes:
        signature: bytes = self.inner.sign(tbs)
        return signature


def check_release(data: bytes) -> None:
    case = release_case(data)
    w = world()
    verdict = verify_release(case.envelopes, case.expected, w.ring, w.policy, case.floor, case.now)
    ours = None if verdict.accepted else str(verdict.reason)
    assert verdict.accepted is (verdict.reason is None) and verdict.message
    theirs = reference.release(
        case.envelopes, wire(case.expected), w.keys, w.thresholds,
        w.policy.max_security_version_jump, case.floor, case.now,
    )  # fmt: skip
    assert ours == theirs, f"core {ours} ({verdict.message}), reference {theirs}"
    if verdict.accepted:  # then the fetched artifact, step 8's tail
        digest = hashlib.sha256(case.artifact).digest()
        checked = check_artifact(case.expected, len(case.artifact), digest, case.more)
        theirs = reference.artifact(wire(case.expected), case.artifact, case.more)
        assert (checked.reason and str(checked.reason)) == theirs, checked.message


# --- root-signed documents ---------------------------------------------------------------------


def check_rootsigned(data: bytes) -> None:
    """An endorsement or revocation: kind (byte: even key, odd revocation), the root's state
    (byte: 0 trusted, 1 revoked, 2 retired), the SigningKey it is checked against (byte), then one
    envelope as in `release_case` (mode 0-2)."""
    w, reader = world(), Reader(data)
    kind = "key" if reader.byte() % 2 == 0 else "revocation"
    state = reader.byte() % 3
    root = replace(w.root, revoked=state == 1, retired=state == 2)
    names = sorted(n for n, k in w.table.items() if k["tier"] != "root")
    declared = w.table[names[reader.byte() % len(names)]]
    mode = reader.byte() % 3
    envelope: bytes | str
    if mode == 0:
        envelope = reader.chunk()
    elif mode == 1:
        envelope = reader.chunk().decode("latin-1")
    else:
        signers = _names()
        signer = w.signers[signers[reader.byte() % len(signers)]]
        envelope = _signed(signer, reader.byte(), reader.chunk())
    root_key = replace(w.keys[bytes.fromhex(root.key_id)], revoked=root.revoked,
                       retired=root.retired)  # fmt: skip
    roots = {bytes.fromhex(root.key_id): root_key}
    if kind == "key":
        spec = reference.Key(
            spki=bytes.fromhex(declared["spki"]), tier=declared["tier"],
            algorithm=declared["algorithm"], not_before=declared["notBefore"],
            not_after=declared["notAfter"],
        )  # fmt: skip
        verdict = verify_endorsement(
            envelope, w.fleet, [root], tier=Tier(spec.tier), algorithm=Algorithm(spec.algorithm),
            public_key=spec.spki, not_before=spec.not_before, not_after=spec.not_after,
        )  # fmt: skip
        ours = None if verdict.accepted else str(verdict.reason)
        theirs = reference.endorsement(envelope, w.fleet, roots, spec)
        assert ours == theirs, f"endorsement: core {ours} ({verdict.message}), reference {theirs}"
    else:
        try:
            verify_revocation(envelope, w.fleet, [root])
            ours = None
        except TrustError as exc:
            ours = str(exc.reason)
        theirs = reference.revocation(envelope, w.fleet, roots)
        assert ours == theirs, f"revocation: core {ours}, reference {theirs}"


# --- all targets, time limit, seeds -------------------------------------------------------------

TARGETS: dict[str, Callable[[bytes], None]] = {
    "cbor": check_cbor,
    "base64": check_base64,
    "sign1": check_sign1,
    "payload": check_payload,
    "spki": check_spki,
    "release": check_release,
    "rootsigned": check_rootsigned,
}


def run(target: str, data: bytes, time_limit: float | None = TIME_LIMIT) -> None:
    """One input through one target; AssertionError on a finding (time included)."""
    timed(TARGETS[target], target, data, time_limit)


def timed(check: Callable[[bytes], None], name: str, data: bytes,
          time_limit: float | None) -> None:
    """`check(data)`, and an AssertionError when it took `time_limit` seconds or more."""
    started = time.monotonic()
    check(data)
    elapsed = time.monotonic() - started
    if time_limit is not None:
        assert elapsed < time_limit, f"{name}: {elapsed:.2f} s for {len(data)} bytes"


def _all_envelopes() -> list[bytes]:
    v = vectors()
    found = [bytes.fromhex(e) for e in v["endorsements"].values()]
    for case in v["release_cases"]:
        found += [bytes.fromhex(s) for s in case["signatures"]]
    found += [bytes.fromhex(case["endorsement"]) for case in v["key_cases"]]
    return list(dict.fromkeys(found))


def _payloads() -> list[bytes]:
    found = []
    for envelope in _all_envelopes():
        items = reference.decode(envelope[1:]) if envelope[:1] == b"\xd2" else None
        if isinstance(items, list) and len(items) == 4:
            found += [items[0], items[2]]
    return list(dict.fromkeys(found))


def _good_envelope() -> bytes:
    good = next(c for c in vectors()["release_cases"] if c["name"] == "good-ed25519")
    return bytes.fromhex(good["signatures"][0])


def _envelope_variants() -> list[bytes]:
    """The good envelope with one part wrong in each way check 1 knows, and at the size limit."""
    protected, _, payload, signature = cbor.decode(_good_envelope()[1:])
    header = cbor.decode(protected)
    kid = header[4]
    headers: list[Any] = [
        {**header, 1: -7}, {**header, 1: -35}, {**header, 3: 0}, {**header, 4: kid[:31]},
        {1: -8, 3: CT_RELEASE}, {**header, 5: b""}, [1, 3, 4], {},
    ]  # fmt: skip
    parts: list[list[Any]] = [[cbor.encode(h), {}, payload, signature] for h in headers]
    parts += [
        [b"", {}, payload, signature], [protected, {4: kid}, payload, signature],
        [protected, {}, "text", signature], [protected, {}, payload, signature.hex()],
        [protected, {}, payload],
    ]  # fmt: skip
    found = [b"\xd2" + cbor.encode(p) for p in parts]
    for size in (MAX_ENVELOPE_BYTES, MAX_ENVELOPE_BYTES + 1):
        padded = b"\xd2" + cbor.encode([protected, {}, payload + b"\x00" * size, signature])
        found.append(padded[:size])
    return found


def _spki_variants() -> list[bytes]:
    """Other spellings of the vectors' keys: compressed and hybrid P-256, Ed25519 y >= p and
    points of small order."""
    es256 = next(bytes.fromhex(k["spki"]) for k in vectors()["keys"].values()
                 if k["algorithm"] == "ecdsa-p256-sha256")  # fmt: skip
    x, y = es256[-64:-32], es256[-32:]
    compressed = b"\x30\x39" + es256[2:23] + b"\x03\x22\x00" + bytes([2 | y[-1] & 1]) + x
    hybrid = es256[:-65] + bytes([6 | y[-1] & 1]) + x + y
    prefix, p = bytes.fromhex("302a300506032b6570032100"), 2**255 - 19
    ed = [prefix + n.to_bytes(32, "little") for n in (1, 0, p - 1, p, p + 1, 2**255 - 1)]
    return [compressed, hybrid, *ed]


def _signed_payload_seeds() -> list[tuple[int, bytes]]:
    """(kind, payload) seeds the vectors do not have: a revocation, and payloads one rule off."""
    w = world()
    app1 = bytes.fromhex(w.table["app1"]["spki"])
    revocation = Revocation(w.fleet, hashlib.sha256(app1).digest(), w.now, "lost").to_cbor()
    compressed = _spki_variants()[0]
    endorsement = cbor.encode({
        "v": 1, "type": "key", "fleet": w.fleet, "tier": "application",
        "keyId": hashlib.sha256(compressed).digest(), "algorithm": "ecdsa-p256-sha256",
        "publicKey": compressed, "notBefore": 1, "notAfter": 2,
    })  # fmt: skip
    short = w.good.to_cbor().replace(b"\x58\x20" + w.good.artifact_sha256, b"\x58\x1f" + bytes(31))
    return [(2, revocation), (1, endorsement), (0, short)]


@cache
def seeds(target: str) -> list[bytes]:
    """The starting corpus of `target`: the test vectors, and variants of them made here."""
    envelopes = _all_envelopes()
    spkis = [bytes.fromhex(k["spki"]) for k in vectors()["keys"].values()] + _spki_variants()
    if target == "cbor":
        return envelopes + [e[1:] for e in envelopes] + _payloads()
    if target == "base64":
        return [base64.b64encode(e) for e in envelopes]
    if target == "sign1":
        every = envelopes + _envelope_variants()
        return [bytes([flags]) + e for e in every for flags in (0, 1, 4)]
    if target == "payload":
        extra = [bytes([kind]) + p for kind, p in _signed_payload_seeds()]
        return [bytes([kind]) + p for p in _payloads() for kind in range(3)] + extra
    if target == "spki":
        return [bytes([mode]) + s for s in spkis for mode in (0, 1, 3)]
    if target == "release":
        return _release_seeds()
    if target == "rootsigned":
        return _rootsigned_seeds()
    raise KeyError(target)


def _release_seeds() -> list[bytes]:
    manifests, names = expected_manifests(), _names()
    found = []
    for case in vectors()["release_cases"]:
        writer = Writer().byte(0).byte(0).byte(manifests.index(manifest_of(case["release"])))
        writer.byte(len(case["signatures"]))
        for signature in case["signatures"]:
            writer.byte(0).chunk(bytes.fromhex(signature))
        found.append(bytes(writer.out))
    good = world().good
    at = manifests.index(good)
    for name in names:  # every key over the good manifest, as bytes and as base64
        for flags in (0, 1):
            writer = Writer().byte(0).byte(0).byte(at).byte(1)
            writer.byte(2).byte(names.index(name)).byte(flags).chunk(good.to_cbor())
            found.append(bytes(writer.out))
    for tier in (Tier.BOOTLOADER, Tier.CONFIG):  # two signatures of a tier's own keys
        manifest = replace(good, tier=tier)
        own = [n for n in names if world().signers[n].key_id in _tier_key_ids(tier)]
        writer = Writer().byte(0).byte(0).byte(manifests.index(manifest)).byte(len(own))
        for name in own:
            writer.byte(3).byte(names.index(name)).byte(0).byte(manifests.index(manifest))
        found.append(bytes(writer.out))
    app1 = names.index("app1")
    for count in (16, 17):  # the envelope limit, then one more
        writer = Writer().byte(0).byte(0).byte(at).byte(count)
        for _ in range(count):
            writer.byte(3).byte(app1).byte(0).byte(at)
        found.append(bytes(writer.out))
    for size in (MAX_ENVELOPE_BYTES, MAX_ENVELOPE_BYTES + 1):  # the size limit beside a good one
        writer = Writer().byte(0).byte(0).byte(at).byte(2).byte(3).byte(app1).byte(0).byte(at)
        found.append(bytes(writer.byte(0).chunk(b"\xd2" * size).out))
    for fetched in (1, 2, 3):  # the artifact as fetched, after a good signature
        writer = Writer().byte(0).byte(0).byte(at).byte(1).byte(3).byte(app1).byte(0).byte(at)
        found.append(bytes(writer.byte(fetched).out))
    return found


def _rootsigned_seeds() -> list[bytes]:
    w, names = world(), _names()
    declared = sorted(n for n, k in w.table.items() if k["tier"] != "root")
    v = vectors()
    found = []
    for name, envelope in v["endorsements"].items():  # against its own key, then another
        other = declared[(declared.index(name) + 1) % len(declared)]
        for state, spec in ((0, name), (1, name), (2, name), (0, other)):
            writer = Writer().byte(0).byte(state).byte(declared.index(spec))
            found.append(bytes(writer.byte(0).chunk(bytes.fromhex(envelope)).out))
    for case in v["key_cases"]:
        writer = Writer().byte(0).byte(0).byte(declared.index(case["key"])).byte(0)
        found.append(bytes(writer.chunk(bytes.fromhex(case["endorsement"])).out))
    root = names.index("root")
    revocation, endorsement = (p for _, p in _signed_payload_seeds()[:2])
    elsewhere = revocation.replace(b"\x67" + w.fleet.encode(), b"\x67fleet-b")  # another fleet
    for kind, payload in ((2, revocation), (1, endorsement), (2, elsewhere)):  # root-signed here
        flags = kind << 2  # the content type of the payload: key 1, revocation 2
        writer = Writer().byte(kind - 1).byte(0).byte(0).byte(2).byte(root).byte(flags)
        found.append(bytes(writer.chunk(payload).out))
    return found


def _tier_key_ids(tier: Tier) -> set[str]:
    return {r.key_id for r in world().ring if r.tier == tier}
