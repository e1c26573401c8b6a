"""CBOR messages of the network shell: heartbeats, trade reports, sync request/response.

Events have their own module (events.py). Each decoder returns a typed value or
raises `WireError` with a reason; none raises anything else on bad input. Schemas:
protocols/heartbeat.md, protocols/trade_report.md, protocols/sync.md.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import cbor2

from ..core.book import Trade
from ..core.events import CLOCK_ORIGINS_MAX, EVENT_BYTES_MAX, ORIGIN_BYTES_MAX, SEQ_MAX, canonical

VERSION = 1
HEARTBEAT_BYTES_MAX = 32 * 1024
TRADE_REPORT_BYTES_MAX = 4 * 1024
SYNC_REQUEST_BYTES_MAX = 32 * 1024
SYNC_EVENTS_MAX = 256  # per response
SYNC_RESPONSE_BYTES_MAX = SYNC_EVENTS_MAX * EVENT_BYTES_MAX + 1024
assert SYNC_RESPONSE_BYTES_MAX < 20 * 1024 * 1024


class WireError(Exception):
    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code


def _load(data: bytes, size_max: int, fields: frozenset[str]) -> dict:
    if not isinstance(data, (bytes, bytearray)) or len(data) > size_max:
        raise WireError("oversize", f"more than {size_max} bytes")
    try:
        msg = cbor2.loads(bytes(data))
    except Exception as exc:  # cbor2 raises several types on garbage
        raise WireError("bad_cbor", str(exc)[:120]) from None
    if type(msg) is not dict or set(msg) != fields:
        raise WireError("bad_schema", f"expected a map with keys {sorted(fields)}")
    if msg["v"] != VERSION or type(msg["v"]) is not int:
        raise WireError("bad_version")
    return msg


def _uint(value: object, name: str, hi: int = SEQ_MAX) -> int:
    if type(value) is not int or not 0 <= value <= hi:
        raise WireError("bad_type", f"{name} must be an integer in [0, {hi}]")
    return value


def _clock(value: object) -> dict[bytes, int]:
    if type(value) is not dict or len(value) > CLOCK_ORIGINS_MAX:
        raise WireError("bad_clock")
    for o, s in value.items():
        if type(o) is not bytes or not 0 < len(o) <= ORIGIN_BYTES_MAX:
            raise WireError("bad_clock", "keys must be peer id bytes")
        _uint(s, "clock entry")
    return value


@dataclass(frozen=True)
class Heartbeat:
    clock: dict[bytes, int]
    lamport: int
    digest: bytes
    events: int


def encode_heartbeat(hb: Heartbeat) -> bytes:
    return canonical({"v": VERSION, "c": hb.clock, "l": hb.lamport, "d": hb.digest,
                      "n": hb.events})


def decode_heartbeat(data: bytes) -> Heartbeat:
    msg = _load(data, HEARTBEAT_BYTES_MAX, frozenset("vcldn"))
    if type(msg["d"]) is not bytes or len(msg["d"]) != 32:
        raise WireError("bad_type", "digest must be 32 bytes")
    return Heartbeat(_clock(msg["c"]), _uint(msg["l"], "lamport"), msg["d"],
                     _uint(msg["n"], "events"))


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


def decode_trade_report(data: bytes) -> TradeReport:
    msg = _load(data, TRADE_REPORT_BYTES_MAX, frozenset("veth"))
    for key in "eh":
        if type(msg[key]) is not bytes or len(msg[key]) != 32:
            raise WireError("bad_type", f"{key} must be 32 bytes")
    return TradeReport(msg["e"], _uint(msg["t"], "trades"), msg["h"])


def encode_sync_request(clock: dict[bytes, int], limit: int) -> bytes:
    return canonical({"v": VERSION, "c": clock, "m": limit})


def decode_sync_request(data: bytes) -> tuple[dict[bytes, int], int]:
    msg = _load(data, SYNC_REQUEST_BYTES_MAX, frozenset("vcm"))
    return _clock(msg["c"]), min(_uint(msg["m"], "limit"), SYNC_EVENTS_MAX)


def encode_sync_response(events: list[bytes], more: bool) -> bytes:
    return canonical({"v": VERSION, "e": events, "more": more})


def decode_sync_response(data: bytes) -> tuple[list[bytes], bool]:
    msg = _load(data, SYNC_RESPONSE_BYTES_MAX, frozenset({"v", "e", "more"}))
    events, more = msg["e"], msg["more"]
    if type(events) is not list or len(events) > SYNC_EVENTS_MAX or type(more) is not bool:
        raise WireError("bad_schema", "e must be a list of events, more a bool")
    if not all(type(e) is bytes for e in events):
        raise WireError("bad_type", "events must be bytes")
    return events, more
