"""Structure-aware fuzzing of every decoder and every entry point of the replica.

Theory of operation: random bytes almost never get past a CBOR decoder, so the
inputs here start from *valid* messages (events signed with seeded keys, real
heartbeats, trade reports, sync requests and responses), are mutated at the
level of their CBOR structure (a field replaced by a >4,300-digit bignum, an
integer in 2^64..2^70, a negative number, a float, a tag, a nested map or array,
bytes of the wrong length, text where bytes belong, an unknown key whose repr is
huge, a missing or extra field, duplicate or zero clock entries, a clock naming
hundreds of origins, a malleated signature, a DAG of CBOR shared references whose
walk is exponential, ...), optionally re-signed so the
mutation reaches the checks behind the signature, and re-encoded canonically or
not (wide integer heads, indefinite lengths, unsorted or repeated keys), with an
occasional byte-level tweak on top. Every mutation is drawn through a small
`Choices` interface, so the same generators run under Hypothesis here (which
shrinks a failure to a short recipe) and under `scripts/fuzz.py` (long runs).

Properties (each call must also return within `SLOW_S`, 2 s: longer is a freeze):
- `decode_event` raises only `EventRejected`, with a code from `EVENT_CODES`;
- every `wire.decode_*` raises only `WireError`, with a code from `WIRE_CODES`,
  and whatever it returns can be fed to the replica entry point it is meant for;
- none of them reaches its last net (`malformed`: an exception no explicit check
  foresaw, refused anyway): a rejection there is reported as a finding;
- `Replica.receive(raw)` never raises and returns a `Receipt`;
- `Replica.on_heartbeat`, `events_for` and `missing` never raise on arbitrary Python
  values (ints of any size, floats, containers), nor do the finality queries
  (`final_key`, `finality`, `wants_ack`, `is_final`, `is_member`) on any hashable one;
- hostile inputs interleaved with honest events never change accepted state: the
  replica ends with the same digest, trades and books (and, with a genesis, the same
  final frontier) as one fed only the honest events;
- every file in `tests/crashers/` is rejected cleanly by every decoder and by
  `Replica.receive` (files named `wire_<kind>_*.bin` are wire messages).

Running:
- CI: `.venv/bin/python -m pytest tests/test_fuzz.py` runs a bounded number of
  examples per property (about 15 s in all), derandomized so every run tries the
  same inputs. A test stuck for `TEST_STALL_S` dumps every stack and exits, so a
  freeze inside C code fails CI instead of hanging it.
- Longer: `P2PX_FUZZ_EXAMPLES=100000 .venv/bin/python -m pytest tests/test_fuzz.py`
  sets the number of examples of every property; `P2PX_FUZZ_SEED=N` switches from
  the derandomized run to Hypothesis seed N (different inputs, still reproducible);
  `P2PX_FUZZ_SLOW_S` changes the freeze threshold.
  `scripts/fuzz.py --seconds N --seed S` runs a time-bounded fuzz (atheris if it
  is installed, else a built-in mutational loop) and saves crashers.
- A failure prints the falsifying recipe, the input's hex (truncated) and the path
  of a file holding the full input (under the system temp directory, in
  `p2pexchange-fuzz-failures/`); copy that file into `tests/crashers/` once the
  crash is fixed so the replay test keeps it fixed.
"""

from __future__ import annotations

import faulthandler
import hashlib
import json
import os
import pathlib
import struct
import tempfile
import time
import traceback
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol, TypeVar

import cbor2
import pytest
from hypothesis import HealthCheck, given, note, seed, settings
from hypothesis import strategies as st

from p2pexchange.core.events import (
    CLOCK_ORIGINS_MAX,
    EVENT_BYTES_MAX,
    EVENT_ID_BYTES,
    MEMBERSHIP_MARKET,
    SEQ_MAX,
    SIGNATURE_DOMAIN,
    STP,
    Cancel,
    Event,
    EventRejected,
    Join,
    OrderType,
    Place,
    Side,
    decode_event,
    sign_event,
)
from p2pexchange.core.market import DEFAULT_MARKETS, PRICE_TICKS_MAX, QTY_LOTS_MAX
from p2pexchange.core.replica import Receipt, Replica
from p2pexchange.net import wire
from p2pexchange.sim.workload import peer_id_bytes, seeded_key_pair, simulate_history

MARKETS = DEFAULT_MARKETS
ROOT = pathlib.Path(__file__).resolve().parent.parent
CRASHERS = ROOT / "tests" / "crashers"
VECTORS = ROOT / "protocols" / "vectors" / "events.json"
FAILURES = pathlib.Path(tempfile.gettempdir()) / "p2pexchange-fuzz-failures"

# The stable, machine-readable reasons a peer's input may be refused. A new code is a
# protocol change: add it here and to protocols/ (event.md, heartbeat.md, sync.md).
EVENT_CODES = frozenset({
    "oversize", "bad_cbor", "non_canonical", "bad_type", "bad_schema", "bad_version",
    "bad_origin", "out_of_range", "unknown_market", "bad_clock", "bad_actions",
    "bad_action", "bad_signature", "malformed",
})
REPLICA_CODES = EVENT_CODES | {"equivocation", "buffer_full", "bad_lamport", "impossible_clock",
                               "fork", "clock_regression", "not_member"}
WIRE_CODES = frozenset({
    "oversize", "bad_cbor", "non_canonical", "bad_schema", "bad_version", "bad_type",
    "bad_clock", "malformed",
})
# The decoders' last net: an exception no explicit check foresaw, still refused. Stable,
# but reaching it is a finding (the decoders promise that no known input does).
CATCH_ALL_CODES = frozenset({"malformed"})
HEARTBEAT_CODES = frozenset({"bad_heartbeat", "impossible_clock", "malformed"})
RECEIPT_STATUSES = frozenset({"delivered", "buffered", "duplicate", "rejected"})

SLOW_S = float(os.environ.get("P2PX_FUZZ_SLOW_S", "2.0"))  # one call longer is a freeze
TEST_STALL_S = 300  # a test running longer is stuck: dump every stack and exit
HEX_SHOWN_MAX = 256  # hex characters of a failing input printed inline

# -- settings -------------------------------------------------------------------

EXAMPLES_OVERRIDE = int(os.environ.get("P2PX_FUZZ_EXAMPLES", "0"))
SEED_OVERRIDE = os.environ.get("P2PX_FUZZ_SEED")

F = TypeVar("F", bound=Callable[..., Any])


def fuzz(examples: int) -> Callable[[F], F]:
    """Hypothesis settings of a fuzz property: `examples` in CI, derandomized, no database."""

    def wrap(test: F) -> F:
        test = settings(
            max_examples=EXAMPLES_OVERRIDE or examples,
            deadline=None,
            derandomize=SEED_OVERRIDE is None,
            database=None,
            print_blob=True,
            suppress_health_check=list(HealthCheck),
        )(test)
        if SEED_OVERRIDE is not None:
            test = seed(int(SEED_OVERRIDE))(test)
        return test

    return wrap


@pytest.fixture(autouse=True)
def _stall_guard():
    """A freeze must fail CI, not hang it: past the limit, dump every stack and exit."""
    limit_s = TEST_STALL_S * max(1, EXAMPLES_OVERRIDE // 500)
    faulthandler.dump_traceback_later(limit_s, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


# -- choices: one interface over Hypothesis draws and a seeded Random ----------------

T = TypeVar("T")


class Choices(Protocol):
    def integer(self, lo: int, hi: int) -> int: ...

    def binary(self, size_max: int) -> bytes: ...


class DrawChoices:
    """Choices drawn by Hypothesis, so a failure shrinks to a short recipe."""

    def __init__(self, draw: Callable[[st.SearchStrategy[Any]], Any]) -> None:
        self._draw = draw

    def integer(self, lo: int, hi: int) -> int:
        return self._draw(st.integers(lo, hi))

    def binary(self, size_max: int) -> bytes:
        return self._draw(st.binary(max_size=size_max))


class RandomChoices:
    """Choices from a seeded `random.Random` (scripts/fuzz.py)."""

    def __init__(self, rng: Any) -> None:
        self._rng = rng

    def integer(self, lo: int, hi: int) -> int:
        return self._rng.randint(lo, hi)

    def binary(self, size_max: int) -> bytes:
        return self._rng.randbytes(self._rng.randint(0, size_max))


def pick(ch: Choices, options: Sequence[T]) -> T:
    return options[ch.integer(0, len(options) - 1)]


def chance(ch: Choices, percent: int) -> bool:
    """True with about `percent`% probability; shrinks towards False."""
    return ch.integer(0, 99) >= 100 - percent


# -- a CBOR encoder that can also write what cbor2 refuses to --------------------------


class PairsMap:
    """A CBOR map written pair by pair in the given order, so keys may repeat."""

    def __init__(self, pairs: Sequence[tuple[Any, Any]]) -> None:
        self.pairs = list(pairs)

    def __repr__(self) -> str:
        return f"PairsMap({len(self.pairs)} pairs)"


class Raw:
    """CBOR bytes spliced in verbatim (deep nesting, reserved bytes, false length claims)."""

    def __init__(self, name: str, data: bytes) -> None:
        self.name = name
        self.data = data

    def __repr__(self) -> str:
        return f"Raw({self.name})"


def _head(major: int, n: int, width: int | None) -> bytes:
    """A major type and argument; `width` None is the shortest form, else 0/1/2/4/8 bytes."""
    if width is None:
        width = 0 if n < 24 else 1 if n < 2**8 else 2 if n < 2**16 else 4 if n < 2**32 else 8
    if width == 0 and n < 24:
        return bytes([major << 5 | n])
    width = max(width, (n.bit_length() + 7) // 8)
    width = 1 if width <= 1 else 2 if width <= 2 else 4 if width <= 4 else 8
    ai = {1: 24, 2: 25, 4: 26, 8: 27}[width]
    return bytes([major << 5 | ai]) + n.to_bytes(width, "big")


def encode(value: Any, ch: Choices | None = None) -> bytes:
    """CBOR of `value`: canonical when `ch` is None, else with non-canonical choices."""
    out = bytearray()
    _encode(value, ch, out)
    return bytes(out)


def _width(ch: Choices | None) -> int | None:
    if ch is None or not chance(ch, 25):
        return None
    return pick(ch, (1, 2, 4, 8))


def _encode(value: Any, ch: Choices | None, out: bytearray) -> None:
    if isinstance(value, Raw):
        out += value.data
    elif value is True or value is False:
        out.append(0xF5 if value else 0xF4)
    elif value is None:
        out.append(0xF6)
    elif value is cbor2.undefined:
        out.append(0xF7)
    elif isinstance(value, cbor2.CBORSimpleValue):
        out += bytes([0xE0 | value.value]) if value.value < 24 else bytes([0xF8, value.value])
    elif isinstance(value, int):
        _encode_int(value, ch, out)
    elif isinstance(value, float):
        _encode_float(value, ch, out)
    elif isinstance(value, (bytes, bytearray)):
        _encode_string(2, bytes(value), ch, out)
    elif isinstance(value, str):
        _encode_string(3, value.encode("utf-8", "surrogatepass"), ch, out)
    elif isinstance(value, (list, tuple)):
        _encode_items(4, [[v] for v in value], ch, out)
    elif isinstance(value, (dict, cbor2.frozendict, PairsMap)):
        pairs = value.pairs if isinstance(value, PairsMap) else list(value.items())
        encoded = [[encode(k, ch), v] for k, v in pairs]
        if ch is None or not chance(ch, 50):
            encoded.sort(key=lambda kv: (len(kv[0]), kv[0]))  # length-first, as cbor2
        elif chance(ch, 50):
            encoded.reverse()
        _encode_items(5, [[Raw("key", k), v] for k, v in encoded], ch, out)
    elif isinstance(value, cbor2.CBORTag):
        out += _head(6, value.tag, _width(ch))
        _encode(value.value, ch, out)
    else:
        out += cbor2.dumps(value, canonical=True)


def _encode_int(value: int, ch: Choices | None, out: bytearray) -> None:
    major, n = (0, value) if value >= 0 else (1, -1 - value)
    if n < 2**64 and (ch is None or not chance(ch, 10)):
        out += _head(major, n, _width(ch))
        return
    magnitude = n.to_bytes(max(1, (n.bit_length() + 7) // 8), "big")
    if ch is not None and chance(ch, 20):
        magnitude = b"\x00" * ch.integer(1, 3) + magnitude  # a bignum with leading zeros
    out += _head(6, 2 + major, _width(ch))
    _encode_string(2, magnitude, ch, out)


def _encode_float(value: float, ch: Choices | None, out: bytearray) -> None:
    if ch is None:
        out += cbor2.dumps(value, canonical=True)
        return
    form = pick(ch, ("e", "f", "d"))
    try:
        packed = struct.pack(">" + form, value)
        if form != "d" and struct.unpack(">" + form, packed)[0] != value and value == value:
            raise OverflowError("not exact")
    except (OverflowError, struct.error):
        form, packed = "d", struct.pack(">d", value)
    out.append({"e": 0xF9, "f": 0xFA, "d": 0xFB}[form])
    out += packed


def _encode_string(major: int, data: bytes, ch: Choices | None, out: bytearray) -> None:
    if ch is not None and chance(ch, 10):  # indefinite length, in chunks
        out.append(major << 5 | 31)
        cut = ch.integer(0, len(data))
        for chunk in (data[:cut], data[cut:]):
            out += _head(major, len(chunk), None) + chunk
        out.append(0xFF)
        return
    out += _head(major, len(data), _width(ch)) + data


def _encode_items(major: int, items: list[list[Any]], ch: Choices | None,
                  out: bytearray) -> None:
    indefinite = ch is not None and chance(ch, 10)
    out += bytes([major << 5 | 31]) if indefinite else _head(major, len(items), _width(ch))
    for item in items:
        for part in item:
            _encode(part, ch, out)
    if indefinite:
        out.append(0xFF)


# -- hostile values --------------------------------------------------------------------

BOUNDARY_INTS = (0, 1, 23, 24, 255, 256, 2**16, 2**32 - 1, 2**32, PRICE_TICKS_MAX,
                 PRICE_TICKS_MAX + 1, SEQ_MAX, SEQ_MAX + 1, 2**64 - 1, -1, -24, -25,
                 -(2**63), -(2**64))
FLOATS = (0.0, -0.0, 1.0, 1.5, 100.5, float("nan"), float("inf"), float("-inf"), 1e300,
          2.0**63, 2.0**64)
ATOMS = (True, False, None, cbor2.undefined, cbor2.CBORSimpleValue(0),
         cbor2.CBORSimpleValue(16), cbor2.CBORSimpleValue(255))
BYTE_LENGTHS = (0, 1, 31, 32, 33, 34, 35, 37, 38, 39, 63, 64, 65, 128, 129, 1000, 4096)
NO_SUCH_EVENT = bytes(EVENT_ID_BYTES)  # the id a hostile clock entry gives an unsigned event
TEXTS = ("", "BTC-USD", "btc-usd", "BTC-USD\x00", "ETH-USD ", "x" * 33, "\u00e9" * 20,
         "\ud800", "v", "s", "1", "DOGE-USD")
TAGS = (0, 1, 2, 3, 4, 5, 21, 24, 25, 28, 29, 30, 32, 35, 36, 37, 256, 258, 260, 261,
        55799, 1000, 2**32, 2**64 - 1)
RAW_FRAGMENTS = (
    Raw("deep_arrays", b"\x81" * 450 + b"\x00"),
    Raw("deep_maps", b"\xa1\x00" * 450 + b"\x00"),
    Raw("reserved_ai", b"\x1c"),
    Raw("stray_break", b"\xff"),
    Raw("array_claims_2^64", b"\x9b" + b"\xff" * 8),
    Raw("bytes_claim_2^63", b"\x5b\x7f" + b"\xff" * 7),
    Raw("invalid_utf8", b"\x62\xff\xfe"),
    Raw("simple_24_short", b"\xf8\x00"),
    Raw("indefinite_text_of_bytes", b"\x7f\x41\x00\xff"),
    Raw("tag_without_value", b"\xc2"),
    Raw("half_float_nan", b"\xf9\x7e\x00"),
    Raw("nested_indefinite", b"\x9f" * 300 + b"\xff" * 300),
)


def shared_dag(levels: int) -> Raw:
    """CBOR shared references (tags 28/29): each level an array holding the previous level
    twice, so a few bytes per level describe 2^levels leaves for whoever walks it (hash,
    repr, ==, re-encoding)."""
    out = bytearray(b"\xd8\x1c\x81\x00")  # shareable [0], shared index 0
    for i in range(levels):
        ref = b"\xd8\x1d" + _head(0, i, None)
        out += b"\xd8\x1c\x82" + ref + ref
    return Raw(f"shared_dag_{levels}", bytes(out))


SHARED_DAGS = tuple(shared_dag(n) for n in (8, 40, 64))


def huge_int(ch: Choices) -> int:
    """A bignum of more than 4,300 decimal digits, or one in 2^64..2^70, or a boundary."""
    kind = ch.integer(0, 2)
    if kind == 0:
        value = 10 ** ch.integer(4300, 4700) + ch.integer(0, 9)
    elif kind == 1:
        value = 2 ** ch.integer(64, 70) + ch.integer(-1, 1)
    else:
        value = pick(ch, BOUNDARY_INTS)
    return -value if chance(ch, 25) else value


def wrong_bytes(ch: Choices) -> bytes:
    n = pick(ch, BYTE_LENGTHS)
    fill = pick(ch, (b"\x00", b"\xff", b"\x00\x24\x08\x01\x12\x20", b""))
    if not fill:
        fill = ch.binary(8) or b"\x01"
    return (fill * (n // len(fill) + 1))[:n]


def hostile_text(ch: Choices) -> str:
    if chance(ch, 70):
        return pick(ch, TEXTS)
    return ch.binary(40).decode("latin-1")


def hostile_key(ch: Choices) -> Any:
    """A hashable map key, often one whose repr is huge or fails."""
    kind = ch.integer(0, 8)
    if kind == 0:
        return huge_int(ch)
    if kind == 1:
        return hostile_text(ch)
    if kind == 2:
        return wrong_bytes(ch) if chance(ch, 70) else b"\xee" * ch.integer(1000, 20000)
    if kind == 3:
        return (huge_int(ch), pick(ch, BOUNDARY_INTS))
    if kind == 4:
        return cbor2.frozendict({huge_int(ch): 1})
    if kind == 5:
        return pick(ch, FLOATS + ATOMS)
    if kind == 6:
        return cbor2.CBORTag(30, (10 ** ch.integer(4300, 4400), 3))  # a Fraction key
    if kind == 7:
        return pick(ch, SHARED_DAGS)  # (a Raw: hashable here, encoded verbatim)
    return cbor2.CBORTag(pick(ch, (99, 1000, 2**64 - 1)), huge_int(ch))


def hostile_value(ch: Choices, depth: int = 0) -> Any:
    """A value of the wrong type, size or shape for any field."""
    kind = ch.integer(0, 10 if depth < 2 else 5)
    if kind == 0:
        return pick(ch, BOUNDARY_INTS)
    if kind == 1:
        return huge_int(ch)
    if kind == 2:
        return pick(ch, FLOATS)
    if kind == 3:
        return pick(ch, ATOMS)
    if kind == 4:
        return wrong_bytes(ch)
    if kind == 5:
        return hostile_text(ch)
    if kind == 6:
        return hostile_tag(ch, depth)
    if kind == 7:
        return [hostile_value(ch, depth + 1) for _ in range(ch.integer(0, 4))]
    if kind == 8:
        return {hostile_key(ch): hostile_value(ch, depth + 1) for _ in range(ch.integer(0, 3))}
    if kind == 9:
        return pick(ch, SHARED_DAGS)
    return pick(ch, RAW_FRAGMENTS)


def hostile_tag(ch: Choices, depth: int) -> cbor2.CBORTag:
    tag = pick(ch, TAGS)
    special = {
        0: lambda: pick(ch, ("2024-02-30T25:61:61Z", "not a date", "9999999-01-01T00:00:00Z")),
        1: lambda: huge_int(ch),
        2: lambda: wrong_bytes(ch),
        3: lambda: b"\xff" * ch.integer(0, 2100),
        4: lambda: [huge_int(ch), huge_int(ch)],
        5: lambda: [huge_int(ch), huge_int(ch)],
        30: lambda: [huge_int(ch), pick(ch, (0, 3, -1))],
        35: lambda: pick(ch, ("(a+)+$", "(", "[" * 200)),
        37: lambda: wrong_bytes(ch),
        258: lambda: [[1], [2]],
        55799: lambda: 1,
    }
    make = special.get(tag)
    return cbor2.CBORTag(tag, make() if make else hostile_value(ch, depth + 1))


# -- identities and valid material -----------------------------------------------------

HISTORY_SEED = 20240601
HISTORY = simulate_history(HISTORY_SEED, MARKETS, origins=3, steps=24, actions_max=4)
KEYS = {peer_id_bytes(k): k for k in (seeded_key_pair(f"{HISTORY_SEED}-{i}") for i in range(3))}
ATTACKER_KEY = seeded_key_pair("fuzz-attacker")
ATTACKER = peer_id_bytes(ATTACKER_KEY)
OBSERVER_KEY = seeded_key_pair("fuzz-observer")
OBSERVER = peer_id_bytes(OBSERVER_KEY)
assert all(e.origin in KEYS for e in HISTORY)
ED25519_ORDER = 2**252 + 27742317777372353535851937790883648493


def fake_peer(i: int) -> bytes:
    """Peer-id-shaped bytes (38) that embed no real key."""
    return b"\x00\x24\x08\x01\x12\x20" + hashlib.sha256(i.to_bytes(4, "big")).digest()


VECTOR_SPECS = json.loads(VECTORS.read_text())["events"]
VECTOR_KEYS = {peer_id_bytes(k): k for k in (seeded_key_pair(v["key_seed"]) for v in VECTOR_SPECS)}


def _extra_events() -> list[Event]:
    """Events the history lacks: every order type and STP, a long batch, an attacker's,
    an acknowledgement and joins (the membership market)."""
    places = [Place(side, otype, 0 if otype is OrderType.MARKET else 100 + i, 1 + i, stp)
              for i, (side, otype, stp) in enumerate(
                  (s, o, p) for s in Side for o in OrderType for p in STP)]
    batch = places + [Cancel(HISTORY[0].id + b"\x00\x00")]
    first = sign_event(ATTACKER_KEY.private_key, ATTACKER, 1, {}, 1, "ETH-USD", batch)
    last = HISTORY[-1]
    second = sign_event(ATTACKER_KEY.private_key, ATTACKER, 2,
                        {ATTACKER: (1, first.id), last.origin: (last.seq, last.id)},
                        last.lamport + 1, "BTC-USD", places[:3])
    ack = sign_event(ATTACKER_KEY.private_key, ATTACKER, 3,
                     {ATTACKER: (2, second.id), last.origin: (last.seq, last.id)},
                     second.lamport + 1, MEMBERSHIP_MARKET, [])
    join = sign_event(ATTACKER_KEY.private_key, ATTACKER, 4, {ATTACKER: (3, ack.id)},
                      ack.lamport + 1, MEMBERSHIP_MARKET, [Join(OBSERVER), Join(fake_peer(5))])
    return [first, second, ack, join]


EVENT_CORPUS: list[bytes] = [e.raw for e in HISTORY] + [e.raw for e in _extra_events()]
EVENT_CORPUS += [r for r in (bytes.fromhex(v["cbor_hex"]) for v in VECTOR_SPECS)
                 if r not in EVENT_CORPUS]
CORPUS_SET = frozenset(EVENT_CORPUS)
CRASHERS_KEY = seeded_key_pair("crashers")  # signed the events the crasher files tamper with
SIGNERS = dict(VECTOR_KEYS) | dict(KEYS) | {ATTACKER: ATTACKER_KEY,
                                            peer_id_bytes(CRASHERS_KEY): CRASHERS_KEY}


def _wire_corpus() -> dict[str, list[dict]]:
    clock = {o: s for o, s in sorted(_replayed().clock.items())}
    digest = _replayed().digest
    return {
        "heartbeat": [cbor2.loads(wire.encode_heartbeat(wire.Heartbeat(clock, 40, digest, 24))),
                      cbor2.loads(wire.encode_heartbeat(wire.Heartbeat({}, 0, b"\0" * 32, 0))),
                      cbor2.loads(wire.encode_heartbeat(wire.Heartbeat(
                          clock, 40, digest, 24, (), (4096, digest),
                          (wire.TradeReport(HISTORY[3].id, 2, digest),))))],
        "trade_report": [cbor2.loads(wire.encode_trade_report(
            wire.TradeReport(HISTORY[3].id, 2, hashlib.sha256(b"t").digest())))],
        "sync_request": [cbor2.loads(wire.encode_sync_request(clock, 64)),
                         cbor2.loads(wire.encode_sync_request({}, 256))],
        "sync_response": [cbor2.loads(wire.encode_sync_response(EVENT_CORPUS[:5], True)),
                          cbor2.loads(wire.encode_sync_response([], False))],
    }


@lru_cache(maxsize=1)
def _replayed() -> Replica:
    replica = Replica(MARKETS)
    for event in HISTORY:
        replica.receive(event.raw)
    return replica


WIRE_CORPUS = _wire_corpus()
WIRE_KINDS = tuple(WIRE_CORPUS)


# -- structure-level mutation ------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One fuzz input with the recipe that made it (printed when a property fails)."""

    kind: str  # "event" or a wire kind
    raw: bytes
    recipe: tuple[str, ...]

    def __repr__(self) -> str:
        shown = self.raw[:48].hex() + ("..." if len(self.raw) > 48 else "")
        return f"Sample({self.kind}, recipe={list(self.recipe)}, {len(self.raw)} bytes {shown})"


def _short(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**70:
        return f"int({value.bit_length()} bits)"
    if isinstance(value, (bytes, str)) and len(value) > 12:
        return f"{type(value).__name__}[{len(value)}]"
    if isinstance(value, (list, dict, tuple, cbor2.CBORTag, cbor2.frozendict)):
        return type(value).__name__
    return repr(value)


def _mutate_clock(ch: Choices, msg: dict, origin: Any, recipe: list[str],
                  ids: bool = False) -> None:
    """Mutate the clock of `msg`: an event's (`ids`: entries are [seq, event id]) or a
    wire message's (entries are seqs)."""
    clock = msg.get("c")
    clock = dict(clock) if isinstance(clock, dict) else {}

    def entry(seq: Any) -> Any:
        return [seq, NO_SUCH_EVENT] if ids else seq

    def seq_of(value: Any) -> Any:
        return value[0] if ids and isinstance(value, list) and value else value

    op = ch.integer(0, 8 if ids else 6)
    if op == 0:
        n = pick(ch, (2, 17, CLOCK_ORIGINS_MAX, CLOCK_ORIGINS_MAX + 1, 1000))
        clock.update({fake_peer(i): entry(ch.integer(1, 3)) for i in range(n)})
        recipe.append(f"clock naming {n} more origins")
    elif op == 1:
        clock[pick(ch, (fake_peer(0), *KEYS))] = entry(0)
        recipe.append("clock zero entry")
    elif op == 2:
        key = pick(ch, (*clock, fake_peer(1))) if clock else fake_peer(1)
        value = hostile_value(ch)
        clock[key] = entry(value) if ids and chance(ch, 50) else value
        recipe.append(f"clock entry = {_short(value)}")
    elif op == 3:
        clock[key := hostile_key(ch)] = entry(1)
        recipe.append(f"clock key {_short(key)}")
    elif op == 4:
        pairs = list(clock.items()) or [(fake_peer(2), entry(1))]
        dup = pick(ch, pairs)
        seq = seq_of(dup[1])
        other = seq + 1 if type(seq) is int else 1
        pairs.insert(ch.integer(0, len(pairs)), (dup[0], pick(ch, (dup[1], entry(other),
                                                                  entry(0)))))
        msg["c"] = PairsMap(pairs)
        recipe.append("clock duplicate entry")
        return
    elif op == 5:
        own = seq_of(clock.get(origin, entry(0))) if isinstance(origin, bytes) else None
        if type(own) is int:
            clock[origin] = entry(pick(ch, (own + 1, own + 2**64)))
        recipe.append("clock own entry wrong")
    elif op == 6:
        msg["c"] = value = hostile_value(ch)
        recipe.append(f"clock = {_short(value)}")
        return
    elif op == 7:  # an event's entry: the id of the wrong length or type
        key = pick(ch, (*clock, fake_peer(3))) if clock else fake_peer(3)
        seq = seq_of(clock.get(key, 1))
        clock[key] = value = [seq if type(seq) is int else 1,
                              pick(ch, (wrong_bytes(ch), hostile_value(ch), NO_SUCH_EVENT.hex()))]
        recipe.append(f"clock entry id {_short(value[1])}")
    else:  # an event's entry in another shape: the v1 seq alone, too short, too long
        key = pick(ch, (*clock, fake_peer(4))) if clock else fake_peer(4)
        seq = seq_of(clock.get(key, 1))
        seq = seq if type(seq) is int else 1
        clock[key] = value = pick(ch, (seq, [seq], [seq, NO_SUCH_EVENT, 0], [NO_SUCH_EVENT, seq],
                                       (seq, NO_SUCH_EVENT)))
        recipe.append(f"clock entry shape {_short(value)}")
    msg["c"] = clock


def _mutate_actions(ch: Choices, msg: dict, recipe: list[str]) -> None:
    actions = msg.get("a")
    actions = [list(a) if isinstance(a, list) else a for a in actions] \
        if isinstance(actions, list) and actions else [[0, 0, 0, 100, 1, 0]]
    i = ch.integer(0, len(actions) - 1)
    op = ch.integer(0, 7)
    action = actions[i] if isinstance(actions[i], list) and actions[i] else [0]
    if op == 0 and action:
        j = ch.integer(0, len(action) - 1)
        action[j] = value = hostile_value(ch)
        recipe.append(f"action[{i}][{j}] = {_short(value)}")
    elif op == 1:
        action[0] = value = pick(ch, (1, 2, -1, 255, 2**64, True, 10**4300 + 1, 1.0))
        recipe.append(f"action kind {_short(value)}")
    elif op == 2:
        action = [1, wrong_bytes(ch)] if chance(ch, 50) else [1, hostile_value(ch)]
        recipe.append("cancel with a wrong order id")
    elif op == 3:
        if chance(ch, 50):
            action = action[: ch.integer(0, max(0, len(action) - 1))]
            recipe.append("action truncated")
        else:
            action = action + [hostile_value(ch) for _ in range(ch.integer(1, 3))]
            recipe.append("action extended")
    elif op == 4:
        action = value = hostile_value(ch)
        recipe.append(f"action = {_short(value)}")
    elif op == 7:
        # A join: a peer id of the wrong size or type, or a valid one (on any market).
        member = pick(ch, (ATTACKER, OBSERVER, wrong_bytes(ch), hostile_value(ch)))
        action = [2, member] if chance(ch, 80) else [2, member, hostile_value(ch)]
        if chance(ch, 30):
            msg["m"] = MEMBERSHIP_MARKET
        recipe.append(f"join {_short(member)}")
    elif op == 5:
        # Near-valid: every field an int, some just outside its range.
        action = [0, pick(ch, (0, 1, 2)), pick(ch, (0, 1, 2, 3, 4, 5)),
                  pick(ch, (0, 1, PRICE_TICKS_MAX, PRICE_TICKS_MAX + 1)),
                  pick(ch, (0, 1, QTY_LOTS_MAX, QTY_LOTS_MAX + 1)), pick(ch, (0, 1, 2, 3))]
        recipe.append(f"action {action}")
    else:
        n = pick(ch, (0, 1000, 1001, 1600))
        msg["a"] = [pick(ch, ([0, 0, 0, 100, 1, 0], [2, fake_peer(6)]))] * n
        recipe.append(f"{n} actions")
        return
    actions[i] = action
    msg["a"] = actions


def _mutate_event_field(ch: Choices, msg: dict, recipe: list[str]) -> None:
    op = ch.integer(0, 9)
    if op == 0:
        key = pick(ch, "vosclmag")
        msg[key] = value = hostile_value(ch)
        recipe.append(f"{key} = {_short(value)}")
    elif op == 1:
        key = pick(ch, "vosclmag")
        msg.pop(key, None)
        recipe.append(f"drop {key}")
    elif op == 2:
        msg[key := hostile_key(ch)] = value = hostile_value(ch)
        recipe.append(f"extra key {_short(key)} = {_short(value)}")
    elif op == 3:
        key = pick(ch, "vosclmag")
        if key in msg:
            new = pick(ch, (key.encode(), key.upper(), ord(key), key + key))
            msg[new] = msg.pop(key)
            recipe.append(f"key {key!r} -> {new!r}")
    elif op == 4:
        key = pick(ch, "sl")
        msg[key] = value = pick(ch, (0, 1, 2, 1000, SEQ_MAX, SEQ_MAX + 1, 2**64))
        recipe.append(f"{key} = {_short(value)}")
    elif op == 5:
        msg["v"] = value = pick(ch, (0, 2, 1.0, True, 2**64, 10**4300 + 7, -1, "1"))
        recipe.append(f"v = {_short(value)}")
    elif op == 6:
        msg["m"] = value = pick(ch, ("ETH-USD", "DOGE-USD", b"BTC-USD", "BTC-USD\x00", "",
                                     "B" * 32, "B" * 33, "\ud800", 10**4300 + 1))
        recipe.append(f"m = {_short(value)}")
    elif op == 7:
        sig = msg.get("g")
        sig = sig if isinstance(sig, bytes) and len(sig) == 64 else b"\x01" * 64
        form = ch.integer(0, 4)
        if form == 0:
            s = int.from_bytes(sig[32:], "little") + ED25519_ORDER
            sig = sig[:32] + (s % 2**256).to_bytes(32, "little")  # S + L: malleated
        elif form == 1:
            bit = ch.integer(0, 511)
            sig = bytearray(sig)
            sig[bit // 8] ^= 1 << (bit % 8)
            sig = bytes(sig)
        elif form == 2:
            sig = sig[: ch.integer(0, 63)]
        elif form == 3:
            sig = sig + b"\x00" * pick(ch, (1, 64, 65))
        else:
            sig = bytes(64)
        msg["g"] = sig
        recipe.append(f"signature form {form}")
    elif op == 8:
        msg["o"] = value = pick(ch, (ATTACKER, fake_peer(3), b"\x12\x20" + b"\x01" * 32,
                                     b"\x00\x24\x08\x09\x12\x20" + b"\x01" * 32,
                                     b"\x00\x24\x08\x00\x12\x20" + b"\x01" * 32,
                                     b"\x00\x24\x08\x02\x12\x20" + b"\x01" * 32,
                                     b"\x00\x23\x08\x01\x12\x20" + b"\x01" * 31, b"", b"\0" * 65,
                                     "origin"))
        recipe.append(f"o = {_short(value)}")
    elif chance(ch, 50):
        _mutate_clock(ch, msg, msg.get("o"), recipe, ids=True)
    else:
        _mutate_actions(ch, msg, recipe)


def _resign(msg: dict, key_pair: Any) -> None:
    body = {k: v for k, v in msg.items() if k != "g"}
    msg["g"] = key_pair.private_key.sign(SIGNATURE_DOMAIN + encode(body))


def _post_bytes(ch: Choices, raw: bytes, recipe: list[str]) -> bytes:
    """An occasional byte-level tweak of the encoded structure."""
    if not chance(ch, 15) or not raw:
        return raw
    op = ch.integer(0, 4)
    i = ch.integer(0, len(raw) - 1)
    recipe.append(["truncated", "garbage appended", "byte flipped", "break inserted",
                   "doubled"][op])
    if op == 0:
        return raw[:i]
    if op == 1:
        return raw + (ch.binary(8) or b"\x00")
    if op == 2:
        return raw[:i] + bytes([raw[i] ^ (1 << ch.integer(0, 7))]) + raw[i + 1:]
    if op == 3:
        return raw[:i] + b"\xff" + raw[i:]
    return raw + raw


def mutated_event(ch: Choices, *, honest_resign: bool = True,
                  base: bytes | None = None) -> Sample:
    """A valid event mutated at the CBOR-structure level, maybe re-signed, re-encoded."""
    raw = base if base is not None else pick(ch, EVENT_CORPUS)
    msg = cbor2.loads(raw)
    recipe = [f"event {hashlib.sha256(raw).hexdigest()[:8]}"]
    for _ in range(ch.integer(1, 3)):
        _mutate_event_field(ch, msg, recipe)
    signer = ch.integer(0, 2)
    if signer == 1 and isinstance(msg.get("o"), bytes) and msg["o"] in SIGNERS \
            and (honest_resign or msg["o"] == ATTACKER):
        _resign(msg, SIGNERS[msg["o"]])
        recipe.append("re-signed by origin")
    elif signer == 2:
        msg["o"] = ATTACKER
        _resign(msg, ATTACKER_KEY)
        recipe.append("re-signed by the attacker as origin")
    loose = chance(ch, 30)
    out = encode(msg, ch if loose else None)
    recipe.append("non-canonical" if loose else "canonical")
    return Sample("event", _post_bytes(ch, out, recipe), tuple(recipe))


def mutated_wire(ch: Choices, kind: str | None = None, base: dict | None = None) -> Sample:
    """A valid heartbeat / trade report / sync message mutated at the CBOR-structure level."""
    kind = kind or pick(ch, WIRE_KINDS)
    msg = dict(base if base is not None else pick(ch, WIRE_CORPUS[kind]))
    recipe = [kind]
    keys = sorted(k for k in msg if isinstance(k, str)) or ["v"]
    for _ in range(ch.integer(1, 3)):
        op = ch.integer(0, 6)
        if op == 0:
            key = pick(ch, keys)
            msg[key] = value = hostile_value(ch)
            recipe.append(f"{key} = {_short(value)}")
        elif op == 1:
            key = pick(ch, keys)
            msg.pop(key, None)
            recipe.append(f"drop {key}")
        elif op == 2:
            msg[key := hostile_key(ch)] = value = hostile_value(ch)
            recipe.append(f"extra key {_short(key)} = {_short(value)}")
        elif op == 3 and "c" in keys:
            _mutate_clock(ch, msg, None, recipe)
        elif op == 4 and kind == "sync_response":
            events = list(msg.get("e")) if isinstance(msg.get("e"), list) else []
            form = ch.integer(0, 3)
            if form == 0:
                events = [EVENT_CORPUS[0]] * pick(ch, (256, 257, 1000))
            elif form == 1:
                events.append(hostile_value(ch))
            elif form == 2:
                events.append(mutated_event(ch).raw)
            else:
                msg["more"] = pick(ch, (0, 1, None, "true", cbor2.undefined))
            msg["e"] = events
            recipe.append(f"sync response events form {form}")
        elif op == 5:
            key = pick(ch, keys)
            msg[key] = value = pick(ch, (0, 1, 2, SEQ_MAX, SEQ_MAX + 1, 2**64, -1, 1.0, True,
                                         b"\0" * 31, b"\0" * 32, b"\0" * 33, "x" * 32))
            recipe.append(f"{key} = {_short(value)}")
        else:
            key = pick(ch, keys)
            if key in msg:
                new = pick(ch, (key.encode(), key.upper(), key + key))
                msg[new] = msg.pop(key)
                recipe.append(f"key {key!r} -> {new!r}")
    loose = chance(ch, 30)
    out = encode(msg, ch if loose else None)
    recipe.append("non-canonical" if loose else "canonical")
    return Sample(kind, _post_bytes(ch, out, recipe), tuple(recipe))


INTERESTING_BYTES = (0x00, 0x01, 0x17, 0x18, 0x1B, 0x3B, 0x5B, 0x7F, 0x80, 0x9F, 0xBF, 0xC2,
                     0xC3, 0xD8, 0xF4, 0xF7, 0xF9, 0xFB, 0xFF)


def byte_mutated(ch: Choices, raw: bytes) -> bytes:
    """Classic byte-level mutations: flips, interesting bytes, inserts, deletes, splices."""
    data = bytearray(raw)
    for _ in range(ch.integer(1, 4)):
        op = ch.integer(0, 4)
        i = ch.integer(0, max(0, len(data) - 1))
        if op == 0 and data:
            data[i] ^= 1 << ch.integer(0, 7)
        elif op == 1 and data:
            data[i] = pick(ch, INTERESTING_BYTES)
        elif op == 2:
            data[i:i] = ch.binary(8) or b"\xff"
        elif op == 3 and data:
            del data[i:i + ch.integer(1, 8)]
        else:
            other = pick(ch, EVENT_CORPUS)
            j = ch.integer(0, len(other) - 1)
            data[i:] = other[j:]
    return bytes(data)


# -- oracles (shared with scripts/fuzz.py) -------------------------------------------------


@dataclass(frozen=True)
class Crash:
    """An entry point that did something other than accept or cleanly reject."""

    target: str
    error: str
    where: str
    raw: bytes

    @property
    def signature(self) -> tuple[str, str, str]:
        return (self.target, self.error.split(":")[0], self.where)

    def describe(self) -> str:
        shown = self.raw.hex()
        if len(shown) > HEX_SHOWN_MAX:
            shown = shown[:HEX_SHOWN_MAX] + f"... ({len(self.raw)} bytes)"
        return f"{self.target} -> {self.error} at {self.where}; input {shown}"


def _where(exc: BaseException) -> str:
    """The innermost frame of the project's code (else the innermost frame)."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "p2pexchange" in f.filename.replace("\\", "/").split("/")]
    frame = (ours or frames or [None])[-1]
    if frame is None:
        return "?"
    path = pathlib.Path(frame.filename)
    parts = path.parts[path.parts.index("p2pexchange"):] if "p2pexchange" in path.parts \
        else (path.name,)
    return f"{'/'.join(parts)}:{frame.lineno} in {frame.name}"


def _crash(target: str, raw: bytes, exc: BaseException | None, problem: str = "") -> Crash:
    if exc is None:
        return Crash(target, problem, "-", raw)
    return Crash(target, f"{type(exc).__name__}: {str(exc)[:160]}", _where(exc), raw)


def _slow(target: str, raw: bytes, started: float) -> list[Crash]:
    """A call that took longer than `SLOW_S`: a freeze (every input is at most 64 KiB
    for events, a few MiB for sync responses; honest ones take milliseconds)."""
    elapsed = time.perf_counter() - started
    if elapsed <= SLOW_S:
        return []
    return [Crash(target, f"took {elapsed:.1f} s (more than {SLOW_S} s: a freeze)", "-", raw)]


def check_decode_event(raw: bytes) -> tuple[str, list[Crash]]:
    """("accepted" | a reject code, crashes)."""
    started = time.perf_counter()
    try:
        event = decode_event(raw, MARKETS)
    except EventRejected as rejected:
        slow = _slow("decode_event", raw, started)
        if not rejected.code or rejected.code not in EVENT_CODES:
            return "?", slow + [_crash("decode_event", raw, None, (
                f"unknown reject code {rejected.code!r} (add it to EVENT_CODES and "
                "protocols/event.md if it is meant)"))]
        if rejected.code in CATCH_ALL_CODES:
            return rejected.code, slow + [_crash("decode_event", raw, None, (
                f"reached the last net: {rejected.detail[:160]}"))]
        return rejected.code, slow
    except BaseException as exc:  # noqa: B036 - a fuzz oracle must see every escape
        if isinstance(exc, KeyboardInterrupt):
            raise
        return "?", [_crash("decode_event", raw, exc)]
    slow = _slow("decode_event", raw, started)
    if event.raw != bytes(raw) or (event.raw not in CORPUS_SET and event.origin not in SIGNERS):
        return "?", slow + [_crash("decode_event", raw, None, "accepted an event nobody signed")]
    return "accepted", slow


DECODERS: dict[str, Callable[[bytes], Any]] = {
    "heartbeat": wire.decode_heartbeat,
    "trade_report": wire.decode_trade_report,
    "sync_request": wire.decode_sync_request,
    "sync_response": wire.decode_sync_response,
}


def check_wire(kind: str, raw: bytes, replica: Replica) -> tuple[str, list[Crash]]:
    """Decode `raw` as a `kind` message and hand what decodes to the replica's entry point."""
    target = f"wire.decode_{kind}"
    started = time.perf_counter()
    try:
        value = DECODERS[kind](raw)
    except wire.WireError as error:
        slow = _slow(target, raw, started)
        if not error.code or error.code not in WIRE_CODES:
            return "?", slow + [_crash(target, raw, None, f"unknown wire code {error.code!r}")]
        if error.code in CATCH_ALL_CODES:
            detail = str(getattr(error, "detail", error))[:160]
            return error.code, slow + [_crash(target, raw, None,
                                              f"reached the last net: {detail}")]
        return error.code, slow
    except BaseException as exc:  # noqa: B036
        if isinstance(exc, KeyboardInterrupt):
            raise
        return "?", [_crash(target, raw, exc)]
    slow = _slow(target, raw, started)
    return "accepted", slow + follow_through(kind, value, raw, replica)


def follow_through(kind: str, value: Any, raw: bytes, replica: Replica) -> list[Crash]:
    """Feed a decoded wire message to the entry point the shell feeds it to."""
    target = {"heartbeat": "Replica.on_heartbeat", "sync_request": "Replica.events_for",
              "sync_response": "Replica.receive", "trade_report": "-"}[kind]
    started = time.perf_counter()
    crashes: list[Crash] = []
    try:
        if kind == "heartbeat":
            code = replica.on_heartbeat(ATTACKER, value.clock)
            crashes += _heartbeat_code(code, raw)
            replica.finality()
            replica.missing()
        elif kind == "sync_request":
            clock, limit = value
            raws = replica.events_for(clock, limit)
            if len(raws) > limit:
                crashes.append(_crash(target, raw, None, f"{len(raws)} events > limit {limit}"))
        elif kind == "sync_response":
            for event_raw in value[0]:
                crashes += check_receive(replica, event_raw)
    except BaseException as exc:  # noqa: B036
        if isinstance(exc, KeyboardInterrupt):
            raise
        return crashes + [_crash(f"{target} after wire.decode_{kind}", raw, exc)]
    return crashes + _slow(f"{target} after wire.decode_{kind}", raw, started)


def _heartbeat_code(code: object, raw: bytes) -> list[Crash]:
    if code is not None and code not in HEARTBEAT_CODES:
        return [_crash("Replica.on_heartbeat", raw, None, f"unknown code {code!r}")]
    if code in CATCH_ALL_CODES:
        return [_crash("Replica.on_heartbeat", raw, None, "reached the last net")]
    return []


def check_receive(replica: Replica, raw: Any) -> list[Crash]:
    started = time.perf_counter()
    shown = bytes(raw) if isinstance(raw, (bytes, bytearray)) else safe_repr(raw).encode()
    try:
        receipt = replica.receive(raw)
    except BaseException as exc:  # noqa: B036
        if isinstance(exc, KeyboardInterrupt):
            raise
        return [_crash("Replica.receive", shown, exc)]
    crashes = _slow("Replica.receive", shown, started)
    if not isinstance(receipt, Receipt) or receipt.status not in RECEIPT_STATUSES:
        return crashes + [_crash("Replica.receive", shown, None, f"returned {receipt!r}")]
    if receipt.status == "rejected" and receipt.code not in REPLICA_CODES:
        crashes.append(_crash("Replica.receive", shown, None, f"unknown code {receipt.code!r}"))
    elif receipt.status == "rejected" and receipt.code in CATCH_ALL_CODES:
        crashes.append(_crash("Replica.receive", shown, None,
                              f"reached the last net: {receipt.detail[:160]}"))
    return crashes


def check_everywhere(raw: bytes, replica: Replica, kind: str | None = None,
                     calling: Callable[[str], None] | None = None
                     ) -> tuple[dict[str, str], list[Crash]]:
    """Feed one input to every decoder and to `Replica.receive`; outcomes and crashes.
    The decoder of `kind` (the message the input was made from) goes first; `calling` is
    told each target before it runs (scripts/fuzz.py names a freeze after it)."""
    outcomes: dict[str, str] = {}
    crashes: list[Crash] = []
    order = ["event", *DECODERS]
    if kind in DECODERS:
        order.remove(kind)
        order.insert(0, kind)
    for target in order:
        if calling is not None:
            calling("decode_event" if target == "event" else f"wire.decode_{target}")
        if target == "event":
            outcomes["decode_event"], found = check_decode_event(raw)
        else:
            outcomes[f"wire.decode_{target}"], found = check_wire(target, raw, replica)
        crashes += found
    if calling is not None:
        calling("Replica.receive")
    crashes += check_receive(replica, raw)
    return outcomes, crashes


def record(crashes: list[Crash]) -> str:
    """Save each crashing input under the temp dir and describe the crashes for a report."""
    FAILURES.mkdir(parents=True, exist_ok=True)
    lines = []
    for crash in crashes:
        path = FAILURES / f"{hashlib.sha256(crash.raw).hexdigest()[:16]}.bin"
        path.write_bytes(crash.raw)
        lines.append(f"{crash.describe()}\n  saved to {path}")
    text = "\n".join(lines)
    note(text)
    return text


def assert_no_crash(crashes: list[Crash]) -> None:
    if crashes:
        pytest.fail("input not handled cleanly:\n" + record(crashes), pytrace=False)


# -- strategies ---------------------------------------------------------------------------


@st.composite
def near_valid_events(draw: Any, honest_resign: bool = True) -> Sample:
    return mutated_event(DrawChoices(draw), honest_resign=honest_resign)


@st.composite
def near_valid_wire(draw: Any) -> Sample:
    return mutated_wire(DrawChoices(draw))


@st.composite
def byte_level(draw: Any) -> Sample:
    ch = DrawChoices(draw)
    if chance(ch, 20):
        return Sample("bytes", ch.binary(200), ("random bytes",))
    base = pick(ch, BYTE_POOL)
    return Sample("bytes", byte_mutated(ch, base), (f"bytes of {base[:6].hex()}...",))


BYTE_POOL = EVENT_CORPUS + [encode(m) for ms in WIRE_CORPUS.values() for m in ms]
HUGE_INTS = (10**4300, -(10**4300), 10**4301 + 7, 2**64, 2**70, -(2**64), 2**63)


def _nth_huge_int(i: int) -> int:
    return (HUGE_INTS + BOUNDARY_INTS)[i]


def safe_repr(value: Any, size_max: int = 300) -> str:
    """repr that survives ints too large to print (Hypothesis prints examples with it)."""
    try:
        text = repr(value)
    except ValueError:
        text = f"<{type(value).__name__} holding an int of more than 4,300 digits>"
    return text if len(text) <= size_max else text[:size_max] + "..."


# Strategies never hold a huge int as a constant: Hypothesis reprs its strategies.
huge_ints = st.integers(0, len(HUGE_INTS + BOUNDARY_INTS) - 1).map(_nth_huge_int)
hashable_values = st.one_of(
    st.none(), st.booleans(), st.integers(), huge_ints, st.floats(),
    st.binary(max_size=70), st.text(max_size=12), st.sampled_from(sorted(KEYS)))
python_values = st.recursive(
    hashable_values | st.just(cbor2.undefined),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.tuples(inner, inner),
        st.dictionaries(hashable_values, inner, max_size=4),
        st.dictionaries(hashable_values, inner, max_size=4).map(types.MappingProxyType)),
    max_leaves=12)
ints = st.one_of(st.integers(-(2**70), 2**70), huge_ints)
clocks = st.one_of(
    st.dictionaries(st.one_of(st.sampled_from([*KEYS, ATTACKER, OBSERVER]),
                              st.binary(max_size=70), hashable_values),
                    st.one_of(ints, python_values), max_size=6),
    st.dictionaries(st.sampled_from([*KEYS, OBSERVER]), st.integers(0, SEQ_MAX), max_size=4),
    st.builds(dict, st.just([(fake_peer(i), 1) for i in range(CLOCK_ORIGINS_MAX + 1)])),
    python_values)
origins = st.one_of(st.sampled_from([*KEYS, ATTACKER, OBSERVER]), st.binary(max_size=70),
                    python_values)


@dataclass(frozen=True)
class Args:
    """Arguments of one call, printed safely when a property fails."""

    values: tuple

    def __repr__(self) -> str:
        return f"Args({', '.join(safe_repr(v, 120) for v in self.values)})"


def arguments(*strategies: st.SearchStrategy[Any]) -> st.SearchStrategy[Args]:
    return st.tuples(*strategies).map(Args)


# -- properties -------------------------------------------------------------------------------


@fuzz(examples=500)
@given(near_valid_events())
def test_decode_event_raises_only_a_coded_rejection(sample):
    code, crashes = check_decode_event(sample.raw)
    assert_no_crash(crashes)
    assert code == "accepted" or code in EVENT_CODES


@fuzz(examples=250)
@given(near_valid_events())
def test_replica_receive_never_raises_and_returns_a_receipt(sample):
    replica = Replica(MARKETS, OBSERVER)
    for raw in EVENT_CORPUS[:6]:
        replica.receive(raw)
    before = fingerprint(replica), replica.clock
    crashes = check_receive(replica, sample.raw)
    assert_no_crash(crashes)
    if replica.stats()["events_delivered"] == 6:  # nothing delivered: nothing changed
        assert (fingerprint(replica), replica.clock) == before


@fuzz(examples=500)
@given(near_valid_wire())
def test_wire_decoders_raise_only_wire_error(sample):
    replica = Replica(MARKETS, OBSERVER)
    code, crashes = check_wire(sample.kind, sample.raw, replica)
    assert_no_crash(crashes)
    assert code == "accepted" or code in WIRE_CODES


@fuzz(examples=300)
@given(st.one_of(byte_level(), near_valid_wire(), near_valid_events()))
def test_every_decoder_and_the_replica_handle_every_kind_of_input(sample):
    """Cross-feeding: an event to the wire decoders, a heartbeat to decode_event, bytes to all."""
    outcomes, crashes = check_everywhere(sample.raw, _loaded_replica())
    assert_no_crash(crashes)
    assert all(outcome for outcome in outcomes.values())


@fuzz(examples=300)
@given(arguments(origins, clocks))
def test_on_heartbeat_never_raises_on_arbitrary_values(args):
    origin, clock = args.values
    replica = _loaded_replica(fresh=True)
    missing_before = replica.missing()
    final_before = replica.finality()
    try:
        code = replica.on_heartbeat(origin, clock)
    except Exception as exc:
        pytest.fail(f"on_heartbeat raised {type(exc).__name__}: {str(exc)[:200]} "
                    f"at {_where(exc)}", pytrace=False)
    assert_no_crash(_heartbeat_code(code, safe_repr(args).encode()))
    if code == "bad_heartbeat":
        assert replica.missing() == missing_before  # a refused heartbeat changes nothing
    final = replica.finality()
    assert final == final_before  # heartbeats are sync hints: finality never reads them
    assert final.final_events + final.pending_events == len(HISTORY)


@fuzz(examples=200)
@given(arguments(clocks, ints, hashable_values, hashable_values))
def test_queries_never_raise_on_arbitrary_values(args):
    """events_for, missing and the finality queries: a peer's clock, any integer, and any
    hashable value where an event id or a peer id belongs."""
    clock, limit, event_id, peer = args.values
    replica = _loaded_replica()
    try:
        if isinstance(clock, Mapping):
            raws = replica.events_for(clock, limit)
            assert len(raws) <= max(0, limit)
        replica.missing()
        replica.final_key()
        replica.finality()
        replica.wants_ack()
        assert replica.is_final(event_id) in (False, True)
        assert replica.is_member(peer) in (False, True)
    except AssertionError:
        raise
    except Exception as exc:
        pytest.fail(f"raised {type(exc).__name__}: {str(exc)[:200]} at {_where(exc)}",
                    pytrace=False)


_loaded: list[Replica] = []


def _loaded_replica(fresh: bool = False) -> Replica:
    """A replica holding the whole history (shared between examples unless `fresh`), whose
    genesis is the history's origins, so that the finality queries have work to do."""
    if fresh or not _loaded:
        replica = Replica(MARKETS, OBSERVER, genesis=sorted(KEYS))
        for event in HISTORY:
            assert replica.receive(event.raw).status == "delivered"
        if fresh:
            return replica
        _loaded.append(replica)
    return _loaded[0]


# -- hostile inputs never change accepted state ----------------------------------------------


@lru_cache(maxsize=16)
def honest_history(history_seed: int) -> tuple[Event, ...]:
    return tuple(simulate_history(history_seed, MARKETS, origins=3, steps=14, actions_max=3))


def fingerprint(replica: Replica) -> tuple:
    return (replica.digest, tuple(replica.applied_ids()), tuple(replica.trades()),
            tuple(book.snapshot() for book in replica.books.values()))


def attacker_event(ch: Choices, history: Sequence[Event]) -> Sample:
    """A validly signed attacker event that must never be delivered: its Lamport time is
    wrong for its clock, its clock names events that do not exist, or names an event
    that exists by another id (a fork)."""
    by_key = {(e.origin, e.seq): e for e in history}
    named: dict[bytes, int] = {}
    for _ in range(ch.integer(0, 2)):
        event = pick(ch, history)
        named[event.origin] = max(named.get(event.origin, 0), event.seq)
    clock = {o: (s, by_key[o, s].id) for o, s in named.items()}
    expected = 1 + max((by_key[o, s].lamport for o, s in named.items()), default=0)
    seq = 1
    if chance(ch, 30):
        seq = ch.integer(2, 4)
        clock[ATTACKER] = (seq - 1, NO_SUCH_EVENT)  # its previous seq never arrives
        lamport = ch.integer(1, 100)
    elif chance(ch, 30):
        clock[fake_peer(9)] = (ch.integer(1, SEQ_MAX), NO_SUCH_EVENT)  # does not exist
        lamport = pick(ch, (expected, SEQ_MAX))
    elif clock and chance(ch, 30):
        forked = pick(ch, sorted(clock))  # names a real event by an id it does not have
        clock[forked] = (clock[forked][0], pick(ch, (NO_SUCH_EVENT, history[0].id)))
        if clock[forked][1] == by_key[forked, clock[forked][0]].id:
            clock[forked] = (clock[forked][0], NO_SUCH_EVENT)
        lamport = expected
    else:
        lamport = pick(ch, (expected + 1, expected + 2, SEQ_MAX, max(1, expected - 1)))
        if lamport == expected:
            lamport += 1
    if chance(ch, 20):
        market, actions = MEMBERSHIP_MARKET, [Join(ATTACKER)] if chance(ch, 50) else []
    else:
        market = pick(ch, sorted(MARKETS))
        actions = [Place(pick(ch, tuple(Side)), OrderType.LIMIT, ch.integer(9000, 11000),
                         ch.integer(1, 10))]
    event = sign_event(ATTACKER_KEY.private_key, ATTACKER, seq, clock, lamport, market, actions)
    return Sample("attacker_event", event.raw,
                  (f"seq {seq} clock {len(clock)} l {lamport} m {market!r}",))


@dataclass(frozen=True)
class HostileCall:
    kind: str  # "receive" | "heartbeat" | "wire" | "finality" (no arguments)
    sample: Sample | None = None
    args: tuple = ()

    def __repr__(self) -> str:
        if self.sample:
            return f"{self.kind}({self.sample!r})"
        return f"{self.kind}({', '.join(safe_repr(v, 120) for v in self.args)})"


@st.composite
def hostile_calls(draw: Any, history: Sequence[Event]) -> HostileCall:
    ch = DrawChoices(draw)
    kind = ch.integer(0, 6)
    if kind == 0:
        base = pick(ch, [e.raw for e in history])
        return HostileCall("receive", mutated_event(ch, honest_resign=False, base=base))
    if kind == 1:
        return HostileCall("receive", attacker_event(ch, history))
    if kind == 2:
        return HostileCall("receive", draw(byte_level()))
    if kind == 3:
        return HostileCall("heartbeat", args=(draw(origins), draw(clocks)))
    if kind == 4:
        return HostileCall("wire", mutated_wire(ch))
    if kind == 5:
        return HostileCall("finality")
    return HostileCall("receive", mutated_event(ch, honest_resign=False))


def _is_hostile(raw: bytes, history: Sequence[Event]) -> bool:
    """Whether `raw` is hostile input rather than some member's valid event. Invalid bytes
    and honest events (early copies) are fed; so are the attacker's signed events, built
    never to be deliverable, except a seq 1 whose Lamport time is right for events that
    exist. A valid event of any other origin (a corpus event a byte splice restored) is a
    member's event too: feeding it would change state legitimately."""
    try:
        event = decode_event(raw, MARKETS)
    except Exception:
        return True
    if any(raw == e.raw for e in history):
        return True
    if event.origin != ATTACKER:
        return False
    by_key = {(e.origin, e.seq): e for e in history}
    if event.seq != 1 or any((o, s) not in by_key or by_key[o, s].id != event.heads[o]
                             for o, s in event.clock.items()):
        return True
    return event.lamport != 1 + max((by_key[o, s].lamport for o, s in event.clock.items()),
                                    default=0)


@fuzz(examples=80)
@given(history_seed=st.integers(0, 7), with_genesis=st.booleans(), data=st.data())
def test_hostile_inputs_never_change_accepted_state(history_seed, with_genesis, data):
    """With a genesis (the honest origins) the attacker is a stranger; without one every
    origin may originate events, so its events meet every other delivery check."""
    history = honest_history(history_seed)
    honest = [e.raw for e in history]
    genesis = sorted({e.origin for e in history}) if with_genesis else None
    reference = Replica(MARKETS, OBSERVER, genesis=genesis)
    for raw in honest:
        assert reference.receive(raw).status == "delivered"
    order = data.draw(st.permutations(honest), label="honest order")
    calls = data.draw(st.lists(hostile_calls(history), min_size=1, max_size=12), label="hostile")
    slots = data.draw(st.lists(st.integers(0, len(order)), min_size=len(calls),
                               max_size=len(calls)), label="slots")
    schedule: list[tuple[int, int, Any]] = [(i, 1, raw) for i, raw in enumerate(order)]
    schedule += [(slot, 0, call) for slot, call in zip(slots, calls, strict=True)]
    schedule.sort(key=lambda step: (step[0], step[1]))
    replica = Replica(MARKETS, OBSERVER, genesis=genesis)
    for _, is_honest, step in schedule:
        if is_honest:
            receipt = replica.receive(step)
            assert receipt.status != "rejected", f"honest event rejected: {receipt.code}"
            continue
        _hostile(replica, step, history)
    assert fingerprint(replica) == fingerprint(reference)
    assert replica.stats()["events_delivered"] == len(honest)
    assert replica.clock == reference.clock
    assert replica.members() == reference.members()
    assert replica.final_key() == reference.final_key()


def _hostile(replica: Replica, call: HostileCall, history: Sequence[Event]) -> None:
    crashes: list[Crash] = []
    if call.kind == "receive":
        if not _is_hostile(call.sample.raw, history):
            note(f"not fed, a member's valid event: {call.sample!r}")
            return
        crashes = check_receive(replica, call.sample.raw)
    elif call.kind == "wire":
        _, crashes = check_wire(call.sample.kind, call.sample.raw, replica)
    elif call.kind == "heartbeat":
        try:
            replica.on_heartbeat(*call.args)
        except Exception as exc:
            crashes = [_crash("Replica.on_heartbeat", safe_repr(call.args).encode(), exc)]
    else:
        try:
            replica.finality()
            replica.wants_ack()
        except Exception as exc:
            crashes = [_crash("Replica.finality", b"", exc)]
    assert_no_crash(crashes)


# -- the corpus of past crashers -------------------------------------------------------------


def crasher_files() -> list[pathlib.Path]:
    return sorted(CRASHERS.glob("*.bin"))


@pytest.mark.parametrize("path", crasher_files(), ids=lambda p: p.name)
def test_every_crasher_is_rejected_cleanly_by_every_decoder_and_the_replica(path):
    raw = path.read_bytes()
    replica = _loaded_replica(fresh=True)
    code, crashes = check_decode_event(raw)
    assert_no_crash(crashes)
    assert code in EVENT_CODES, f"{path.name} decoded as an event"
    for kind in DECODERS:
        outcome, crashes = check_wire(kind, raw, replica)
        assert_no_crash(crashes)
        if path.name.startswith(f"wire_{kind}_"):
            assert outcome in WIRE_CODES, f"{path.name} decoded as a {kind}"
    crashes = check_receive(replica, raw)
    assert_no_crash(crashes)
    assert replica.receive(raw).status == "rejected"
    assert fingerprint(replica) == fingerprint(_loaded_replica(fresh=True))


def test_the_crasher_corpus_covers_events_and_wire_messages():
    names = [p.name for p in crasher_files()]
    assert len(names) >= 12
    assert any(n.startswith("wire_") for n in names), "no wire crasher in the corpus"


# -- the fuzzer itself -------------------------------------------------------------------------


def test_the_canonical_encoder_matches_cbor2_on_valid_messages():
    for raw in EVENT_CORPUS:
        assert encode(cbor2.loads(raw)) == raw
    for messages in WIRE_CORPUS.values():
        for msg in messages:
            assert encode(msg) == cbor2.dumps(msg, canonical=True)


def test_the_generator_reaches_every_validation_stage():
    """Structure-aware means past the CBOR decoder: over a fixed sample the mutated events
    are refused for many different reasons, and some decode (re-signed, still valid)."""
    import random

    ch = RandomChoices(random.Random(1))
    seen: dict[str, int] = {}
    for _ in range(1_500):  # half a second; some stages are reached by a few in a thousand
        code, _ = check_decode_event(mutated_event(ch).raw)
        seen[code] = seen.get(code, 0) + 1
    expected = {"bad_cbor", "non_canonical", "bad_schema", "bad_version", "bad_origin",
                "out_of_range", "bad_type", "bad_clock", "bad_actions", "bad_action",
                "bad_signature", "unknown_market", "accepted"}
    assert expected <= set(seen), f"never reached: {sorted(expected - set(seen))}; {seen}"
    wire_seen = {check_wire(s.kind, s.raw, Replica(MARKETS))[0]
                 for s in (mutated_wire(ch) for _ in range(300))}
    assert {"accepted", "bad_schema", "bad_type", "bad_clock", "bad_cbor"} <= wire_seen


def test_a_malleated_signature_is_rejected():
    """Ed25519 S + L verifies in lax implementations: it would give an honest event a second
    id, and a relay could make every node reject the original as equivocation."""
    event = HISTORY[0]
    msg = cbor2.loads(event.raw)
    s = int.from_bytes(msg["g"][32:], "little") + ED25519_ORDER
    msg["g"] = msg["g"][:32] + s.to_bytes(32, "little")
    with pytest.raises(EventRejected) as info:
        decode_event(encode(msg), MARKETS)
    assert info.value.code == "bad_signature"


def test_lying_claims_about_our_seq_cannot_stop_a_node_from_creating_events():
    """A heartbeat or a (validly signed) event claiming we signed more than we did."""
    replica = Replica(MARKETS, OBSERVER)
    assert replica.on_heartbeat(ATTACKER, {OBSERVER: 10**6}) in HEARTBEAT_CODES
    liar = sign_event(ATTACKER_KEY.private_key, ATTACKER, 1, {OBSERVER: (7, NO_SUCH_EVENT)}, 8,
                      "BTC-USD", [Place(Side.SELL, OrderType.LIMIT, 100, 1)])
    assert replica.receive(liar.raw).status in ("rejected", "buffered")
    for _ in range(2):
        _, receipt = replica.create_event(OBSERVER_KEY.private_key, "BTC-USD",
                                          [Place(Side.BUY, OrderType.LIMIT, 100, 1)])
        assert receipt.status == "delivered"
    assert replica.clock[OBSERVER] == 2


def test_oversize_inputs_are_refused_before_decoding():
    huge = b"\xa0" + b"\x00" * EVENT_BYTES_MAX
    assert check_decode_event(huge)[0] == "oversize"
    assert check_wire("heartbeat", b"\x00" * (wire.HEARTBEAT_BYTES_MAX + 1),
                      Replica(MARKETS))[0] == "oversize"
