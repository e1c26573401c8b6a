"""CBOR messages of the network shell: heartbeats, trade reports, proofs of
equivocation, sync request/response.

Events have their own module (events.py). Each decoder returns a typed value or
raises `WireError` with a reason; none raises anything else on bad input. Schemas:
protocols/heartbeat.md, protocols/trade_report.md, protocols/sync.md.

Hostile input is handled as for events: the size is checked first, the CBOR is
decoded by `strict_loads` (no tags, so no bignums and no shared references, definite
lengths, string map keys, shallow nesting), messages never format an untrusted
value, and each public decoder ends in a net that turns anything its checks did not
foresee into `WireError("malformed")` (an AssertionError, our own bug, excepted).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from ..core.events import (
    CLOCK_ORIGINS_MAX,
    EVENT_BYTES_MAX,
    ORIGIN_BYTES_MAX,
    SEQ_MAX,
    Event,
    EventRejected,
    canonical,
    decode_event,
    describe,
    describe_error,
    strict_loads,
)
from ..core.market import DEFAULT_MARKETS
from ..core.orders import Trade

VERSION = 2
HEARTBEAT_BYTES_MAX = 32 * 1024
HEARTBEAT_REPORTS_MAX = 128  # trade reports in one heartbeat (about 75 bytes each)
JOIN_REQUEST_BYTES_MAX = 256
TRADE_REPORT_BYTES_MAX = 4 * 1024
SYNC_REQUEST_BYTES_MAX = 32 * 1024
PROOF_BYTES_MAX = 2 * EVENT_BYTES_MAX + 256
SYNC_EVENTS_MAX = 256  # per response
SYNC_RESPONSE_BYTES_MAX = SYNC_EVENTS_MAX * EVENT_BYTES_MAX + 1024
assert SYNC_RESPONSE_BYTES_MAX < 20 * 1024 * 1024


class WireError(Exception):
    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail


Decoded = TypeVar("Decoded")


def _guarded(decode: Callable[[bytes], Decoded]) -> Callable[[bytes], Decoded]:
    """The last net of a public decoder: only WireError (or our own AssertionError)
    leaves it."""
    @functools.wraps(decode)
    def guarded(data: bytes) -> Decoded:
        try:
            return decode(data)
        except (WireError, AssertionError):
            raise
        except Exception as exc:  # input the checks did not foresee: still refused
            raise WireError("malformed", f"unexpected {type(exc).__name__}: "
                            + describe_error(exc)) from None
    return guarded


def _load(data: bytes, size_max: int, fields: frozenset[str],
          optional: frozenset[str] = frozenset()) -> dict:
    if not isinstance(data, (bytes, bytearray)):
        raise WireError("bad_type", "a message must be bytes")
    if len(data) > size_max:
        raise WireError("oversize", f"more than {size_max} bytes")
    try:
        msg = strict_loads(bytes(data))
    except Exception as exc:  # cbor2 raises several types on garbage
        raise WireError("bad_cbor", describe_error(exc)[:120]) from None
    if type(msg) is not dict or not fields <= set(msg) <= fields | optional:
        raise WireError("bad_schema", f"expected a map with keys {sorted(fields)}"
                        + (f" and optionally {sorted(optional)}" if optional else ""))
    if type(msg["v"]) is not int or msg["v"] != VERSION:
        raise WireError("bad_version", describe(msg["v"]))
    if canonical(msg) != data:  # one encoding per message: sorted keys, shortest ints
        raise WireError("non_canonical", "encoding is not canonical CBOR")
    return msg


def _uint(value: object, name: str, hi: int = SEQ_MAX) -> int:
    if type(value) is not int or not 0 <= value <= hi:
        raise WireError("bad_type", f"{name} must be an integer in [0, {hi}], got "
                        + describe(value))
    return value


def _clock(value: object) -> dict[bytes, int]:
    if type(value) is not dict or len(value) > CLOCK_ORIGINS_MAX:
        raise WireError("bad_clock")
    for o, s in value.items():
        if type(o) is not bytes or not 0 < len(o) <= ORIGIN_BYTES_MAX:
            raise WireError("bad_clock", "keys must be peer id bytes")
        _uint(s, "clock entry")
    return value


def _peer_id(value: object, name: str) -> bytes:
    if type(value) is not bytes or not 0 < len(value) <= ORIGIN_BYTES_MAX:
        raise WireError("bad_type", f"{name} must be peer id bytes")
    return value


@dataclass(frozen=True)
class Heartbeat:
    clock: dict[bytes, int]
    lamport: int
    digest: bytes
    events: int
    genesis: tuple[bytes, ...] = ()  # the network's founding members; () if not known yet
    # The sender's latest checkpoint (core/checkpoint.py): (n, H_N); None before its first.
    checkpoint: tuple[int, bytes] | None = None
    # Trade reports of the sender's own taker events that became final since its last
    # heartbeat (protocols/trade_report.md): at most HEARTBEAT_REPORTS_MAX.
    reports: tuple[TradeReport, ...] = ()


def encode_heartbeat(hb: Heartbeat) -> bytes:
    msg = {"v": VERSION, "c": hb.clock, "l": hb.lamport, "d": hb.digest, "n": hb.events,
           "g": sorted(hb.genesis)}
    if hb.checkpoint is not None:
        msg["k"] = list(hb.checkpoint)
    if hb.reports:
        assert len(hb.reports) <= HEARTBEAT_REPORTS_MAX, len(hb.reports)
        msg["r"] = [[r.event_id, r.trades, r.hash] for r in hb.reports]
    return canonical(msg)


@_guarded
def decode_heartbeat(data: bytes) -> Heartbeat:
    msg = _load(data, HEARTBEAT_BYTES_MAX, frozenset("vcldng"), frozenset("kr"))
    if type(msg["d"]) is not bytes or len(msg["d"]) != 32:
        raise WireError("bad_type", "digest must be 32 bytes")
    genesis = msg["g"]
    if type(genesis) is not list or len(genesis) > CLOCK_ORIGINS_MAX:
        raise WireError("bad_schema", f"g must be a list of at most {CLOCK_ORIGINS_MAX} peer ids")
    members = tuple(_peer_id(m, "a genesis member") for m in genesis)
    if list(members) != sorted(set(members)):
        raise WireError("bad_schema", "genesis members must be sorted and distinct")
    checkpoint = None
    if "k" in msg:
        k = msg["k"]
        if type(k) is not list or len(k) != 2 or type(k[1]) is not bytes or len(k[1]) != 32:
            raise WireError("bad_type", "k must be [n, the 32-byte checkpoint hash]")
        n = _uint(k[0], "checkpoint n")
        if n == 0:
            raise WireError("bad_type", "checkpoint n must be at least 1")
        checkpoint = (n, k[1])
    return Heartbeat(_clock(msg["c"]), _uint(msg["l"], "lamport"), msg["d"],
                     _uint(msg["n"], "events"), members, checkpoint,
                     _reports(msg["r"]) if "r" in msg else ())


def _reports(value: object) -> tuple[TradeReport, ...]:
    """A heartbeat's `r`: a non-empty list of at most HEARTBEAT_REPORTS_MAX reports, each
    [event id (32 bytes), trades, hash (32 bytes)], event ids distinct."""
    if type(value) is not list or not 0 < len(value) <= HEARTBEAT_REPORTS_MAX:
        raise WireError("bad_schema", "r must be a list of 1 to "
                        f"{HEARTBEAT_REPORTS_MAX} trade reports")
    reports = []
    for entry in value:
        if (type(entry) is not list or len(entry) != 3 or type(entry[0]) is not bytes
                or len(entry[0]) != 32 or type(entry[2]) is not bytes or len(entry[2]) != 32):
            raise WireError("bad_type", "a trade report must be [the 32-byte event id, "
                            "trades, the 32-byte trades hash]")
        reports.append(TradeReport(entry[0], _uint(entry[1], "trades"), entry[2]))
    if len({r.event_id for r in reports}) != len(reports):
        raise WireError("bad_schema", "r names an event twice")
    return tuple(reports)


def encode_join_request(sponsor: bytes) -> bytes:
    """A newcomer asks the member `sponsor` to admit it (the sender, by pubsub signature)."""
    return canonical({"v": VERSION, "s": sponsor})


@_guarded
def decode_join_request(data: bytes) -> bytes:
    msg = _load(data, JOIN_REQUEST_BYTES_MAX, frozenset("vs"))
    return _peer_id(msg["s"], "sponsor")


def encode_proof(first: bytes, second: bytes) -> bytes:
    """A proof of equivocation: two signed events of one origin with one seq."""
    return canonical({"v": VERSION, "a": first, "b": second})


@_guarded
def decode_proof(data: bytes) -> tuple[Event, Event]:
    """The two events of a proof of equivocation, each decoded and its signature
    verified; `bad_proof` unless they are two versions of one (origin, seq)."""
    msg = _load(data, PROOF_BYTES_MAX, frozenset("vab"))
    try:
        first, second = decode_event(msg["a"], DEFAULT_MARKETS), decode_event(msg["b"],
                                                                          DEFAULT_MARKETS)
    except EventRejected as exc:
        raise WireError("bad_proof", f"an event of the proof: {exc.code}") from None
    if (first.origin, first.seq) != (second.origin, second.seq) or first.id == second.id:
        raise WireError("bad_proof", "not two versions of one origin's seq")
    return first, second


def trades_hash(trades: list[Trade]) -> bytes:
    h = hashlib.sha256()
    for t in trades:
        h.update(t.maker_order + t.taker_order + t.price.to_bytes(8, "big")
                 + t.qty.to_bytes(8, "big"))
    return h.digest()


@dataclass(frozen=True)
class TradeReport:
    event_id: bytes
    trades: int
    hash: bytes


def encode_trade_report(report: TradeReport) -> bytes:
    return canonical({"v": VERSION, "e": report.event_id, "t": report.trades, "h": report.hash})


@_guarded
def decode_trade_report(data: bytes) -> TradeReport:
    msg = _load(data, TRADE_REPORT_BYTES_MAX, frozenset("veth"))
    for key in "eh":
        if type(msg[key]) is not bytes or len(msg[key]) != 32:
            raise WireError("bad_type", f"{key} must be 32 bytes")
    return TradeReport(msg["e"], _uint(msg["t"], "trades"), msg["h"])


def encode_sync_request(clock: dict[bytes, int], limit: int) -> bytes:
    return canonical({"v": VERSION, "c": clock, "m": limit})


@_guarded
def decode_sync_request(data: bytes) -> tuple[dict[bytes, int], int]:
    msg = _load(data, SYNC_REQUEST_BYTES_MAX, frozenset("vcm"))
    return _clock(msg["c"]), min(_uint(msg["m"], "limit"), SYNC_EVENTS_MAX)


def encode_sync_response(events: list[bytes], more: bool) -> bytes:
    return canonical({"v": VERSION, "e": events, "more": more})


@_guarded
def decode_sync_response(data: bytes) -> tuple[list[bytes], bool]:
    msg = _load(data, SYNC_RESPONSE_BYTES_MAX, frozenset({"v", "e", "more"}))
    return _events_and_more(msg)


def _events_and_more(msg: dict) -> tuple[list[bytes], bool]:
    """An answer's events (at most `SYNC_EVENTS_MAX`, each bytes) and its `more` flag."""
    events, more = msg["e"], msg["more"]
    if type(events) is not list or len(events) > SYNC_EVENTS_MAX or type(more) is not bool:
        raise WireError("bad_schema", "e must be a list of events, more a bool")
    if not all(type(e) is bytes for e in events):
        raise WireError("bad_type", "events must be bytes")
    return events, more


# -- the snapshot protocol (protocols/sync.md, "Snapshot") -----------------------------
SNAPSHOT_REQUEST_BYTES_MAX = 64
SNAPSHOT_PART_BYTES = 1024 * 1024  # of S_N, per response message
SNAPSHOT_RESPONSE_BYTES_MAX = SNAPSHOT_PART_BYTES + SYNC_RESPONSE_BYTES_MAX
CHECKPOINT_BYTES_MAX = 64 * 1024 * 1024  # S_N in all (a client stops reading beyond)
SNAPSHOT_EVENTS_MAX = 1 << 17  # segment events in all
SNAPSHOT_EVENT_BYTES_MAX = 128 * 1024 * 1024  # ... and their bytes in all


def encode_snapshot_request(n: int) -> bytes:
    return canonical({"v": VERSION, "n": n})


@_guarded
def decode_snapshot_request(data: bytes) -> int:
    msg = _load(data, SNAPSHOT_REQUEST_BYTES_MAX, frozenset("vn"))
    return _uint(msg["n"], "n")


def encode_snapshot_response(n: int, part: bytes, events: list[bytes], more: bool) -> bytes:
    """One message of an answer: checkpoint `n` (0: not served), a part of S_N, some of
    the segments' events, and whether more messages follow."""
    return canonical({"v": VERSION, "n": n, "p": part, "e": events, "more": more})


@_guarded
def decode_snapshot_response(data: bytes) -> tuple[int, bytes, list[bytes], bool]:
    msg = _load(data, SNAPSHOT_RESPONSE_BYTES_MAX, frozenset({"v", "n", "p", "e", "more"}))
    n, part = _uint(msg["n"], "n"), msg["p"]
    if type(part) is not bytes or len(part) > SNAPSHOT_PART_BYTES:
        raise WireError("bad_type", f"p must be at most {SNAPSHOT_PART_BYTES} bytes")
    return (n, part, *_events_and_more(msg))
