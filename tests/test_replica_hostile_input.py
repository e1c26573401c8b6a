"""No input can crash or freeze a decoder or a replica entry point.

Every crasher file goes through `decode_event`, every wire decoder and
`Replica.receive`; each must end in that entry point's typed rejection, with a
code from an explicit check (the last `except Exception` net is never reached by
a known input). The nets themselves are tested by injecting a fault; an
AssertionError, our own bug, always passes through them.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator, Mapping

import cbor2
import pytest

from p2pexchange.core import events as events_module
from p2pexchange.core.events import (
    EventRejected,
    OrderType,
    Place,
    Side,
    decode_event,
    describe,
    sign_event,
    strict_loads,
)
from p2pexchange.core.market import DEFAULT_MARKETS
from p2pexchange.core.replica import Replica
from p2pexchange.net import wire
from p2pexchange.sim.workload import peer_id_bytes, seeded_key_pair

CRASHERS = sorted((pathlib.Path(__file__).parent / "crashers").glob("*.bin"))
DECODERS = {"heartbeat": wire.decode_heartbeat, "trade_report": wire.decode_trade_report,
            "sync_request": wire.decode_sync_request,
            "sync_response": wire.decode_sync_response}
KEY = seeded_key_pair("hostile")
ORIGIN = peer_id_bytes(KEY)
HUGE = 10**5000


def wire_kind(path: pathlib.Path) -> str | None:
    return next((k for k in DECODERS if path.name.startswith(f"wire_{k}_")), None)


@pytest.mark.parametrize("path", CRASHERS, ids=lambda p: p.name)
def test_every_crasher_is_refused_by_an_explicit_check_everywhere(path):
    raw = path.read_bytes()
    with pytest.raises(EventRejected) as info:
        decode_event(raw, DEFAULT_MARKETS)
    assert info.value.code != "malformed", info.value
    # Crashers are kept in the current format, so each still reaches the check it is
    # about instead of stopping at the version.
    assert info.value.code != "bad_version" or "version" in path.name, info.value
    receipt = Replica(DEFAULT_MARKETS, ORIGIN).receive(raw)
    assert (receipt.status, receipt.code) == ("rejected", info.value.code)
    for kind, decode in DECODERS.items():
        try:
            decode(raw)
        except wire.WireError as error:
            assert error.code != "malformed", error
        else:
            assert kind != wire_kind(path), f"{path.name} decoded as a {kind}"


def test_the_corpus_holds_the_audit_findings():
    names = {p.name for p in CRASHERS}
    for field in ("seq", "lamport", "version", "clock_entry", "qty_huge", "action_kind",
                  "unexpected_key"):
        assert f"bignum_{field}.bin" in names
    assert {"shared_ref_dag_key.bin", "shared_ref_dag_action_kind.bin"} <= names
    assert {wire_kind(p) for p in CRASHERS} >= set(DECODERS)


# -- error messages --------------------------------------------------------------------


class Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("no")


class Deep(list):
    pass


def deep(levels: int) -> list:
    value: list = []
    for _ in range(levels):
        value = [value]
    return value


def self_referencing() -> list:
    value: list = [1]
    value.append(value)
    return value


@pytest.mark.parametrize("value", [HUGE, -HUGE, 2**70, b"\x00" * 10**6, "y" * 10**6,
                                   deep(100_000), self_referencing(), Unprintable(),
                                   {HUGE: HUGE}, (HUGE,), 1.5, None, True, Deep([HUGE])],
                         ids=lambda v: type(v).__name__)
def test_describe_is_short_and_never_raises(value):
    text = describe(value)
    assert isinstance(text, str) and len(text) <= 120, text


@pytest.mark.parametrize("call", [
    lambda: events_module._uint(HUGE, "seq", 1, 5),
    lambda: events_module._uint(-HUGE, "seq", 1, 5),
    lambda: events_module._uint(b"x" * 10**6, "seq", 1, 5),
    lambda: events_module._decode_action([HUGE], 0),
    lambda: events_module._decode_action([deep(10_000)], 0),
    lambda: events_module._decode_action([0, 0, 0, 100, HUGE, 0], 0),
], ids=["huge", "huge_negative", "bytes", "kind_huge", "kind_deep", "qty_huge"])
def test_every_message_about_an_untrusted_value_is_bounded(call):
    """The CBOR decoder no longer produces such values (no tags); the messages would
    still describe them safely."""
    with pytest.raises(EventRejected) as info:
        call()
    assert len(str(info.value)) < 200


def test_strict_cbor_refuses_every_tag():
    for tag in [*range(70_000), 2**32, 2**63, 2**64 - 1]:
        with pytest.raises(cbor2.CBORDecodeError):
            strict_loads(cbor2.dumps(cbor2.CBORTag(tag, 0)))


# -- the last nets ---------------------------------------------------------------------


def valid_event():
    return sign_event(KEY.private_key, ORIGIN, 1, {}, 1, "BTC-USD",
                      [Place(Side.BUY, OrderType.LIMIT, 100, 1)])


def test_decode_event_turns_the_unforeseen_into_a_rejection(monkeypatch):
    raw = valid_event().raw

    def broken(*_):
        raise KeyError("a check we did not write")

    monkeypatch.setattr(events_module, "_decode_action", broken)
    with pytest.raises(EventRejected) as info:
        decode_event(raw, DEFAULT_MARKETS)
    assert info.value.code == "malformed"
    receipt = Replica(DEFAULT_MARKETS).receive(raw)
    assert (receipt.status, receipt.code) == ("rejected", "malformed")


def test_the_nets_never_hide_our_own_assertions(monkeypatch):
    def bug(*_):
        raise AssertionError("our bug")

    monkeypatch.setattr(events_module, "_decode_action", bug)
    with pytest.raises(AssertionError):
        decode_event(valid_event().raw, DEFAULT_MARKETS)
    monkeypatch.undo()
    monkeypatch.setattr(wire, "_clock", bug)
    with pytest.raises(AssertionError):
        wire.decode_heartbeat(wire.encode_heartbeat(wire.Heartbeat({}, 1, b"\x00" * 32, 0)))
    monkeypatch.setattr(Replica, "_delivered_or_buffered", bug)
    with pytest.raises(AssertionError):
        Replica(DEFAULT_MARKETS).admit(valid_event())


def test_every_wire_decoder_turns_the_unforeseen_into_a_wire_error(monkeypatch):
    def broken(*_):
        raise TypeError("a check we did not write")

    monkeypatch.setattr(wire, "_clock", broken)
    monkeypatch.setattr(wire, "_uint", broken)
    messages = {
        "heartbeat": wire.encode_heartbeat(wire.Heartbeat({ORIGIN: 1}, 1, b"\x00" * 32, 1)),
        "trade_report": wire.encode_trade_report(wire.TradeReport(b"\x01" * 32, 1, b"\x02" * 32)),
        "sync_request": wire.encode_sync_request({ORIGIN: 1}, 5),
    }
    for kind, data in messages.items():
        with pytest.raises(wire.WireError) as info:
            DECODERS[kind](data)
        assert info.value.code == "malformed", kind
    for data in (None, 7, [b"x"], "text"):
        for decode in DECODERS.values():
            with pytest.raises(wire.WireError):
                decode(data)  # type: ignore[arg-type]


def test_admit_and_on_heartbeat_turn_the_unforeseen_into_a_code(monkeypatch):
    replica = Replica(DEFAULT_MARKETS, ORIGIN)
    assert replica.admit("not an event").code == "malformed"  # type: ignore[arg-type]
    assert replica.receive(None).code == "bad_type"  # type: ignore[arg-type]

    class Treacherous(Mapping):
        def __getitem__(self, key):
            raise RuntimeError("no")

        def __iter__(self) -> Iterator:
            raise RuntimeError("no")

        def __len__(self) -> int:
            return 1

    assert replica.on_heartbeat(b"peer", Treacherous()) == "malformed"
    assert replica.on_heartbeat(b"peer", {b"o": HUGE}) == "bad_heartbeat"
    assert replica.on_heartbeat(b"peer", {b"o": -HUGE}) == "bad_heartbeat"
    assert replica.on_heartbeat(b"p" * 10**6, {}) == "bad_heartbeat"
    assert replica.on_heartbeat(b"peer", {}) is None
    assert replica.events_for(Treacherous(), 10) == []
    assert replica.events_for({}, HUGE) == [] and replica.events_for({}, -1) == []

    def broken(*_):
        raise KeyError("a check we did not write")

    monkeypatch.setattr(Replica, "_delivered_or_buffered", broken)
    receipt = replica.admit(valid_event())
    assert (receipt.status, receipt.code) == ("rejected", "malformed")
    assert replica.stats()["rejected"]["malformed"] == 2
