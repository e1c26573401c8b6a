"""Property tests of the matching engine, checked after every action.

A model replays each action against a plain list of resting orders to predict which
maker must trade next (best price, then earliest), so price-time priority is checked
independently of the engine's data structures.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from p2pexchange.core.book import (
    CANCEL_NOT_OPEN,
    CANCEL_NOT_OWNER,
    CANCEL_UNKNOWN,
    CANCELLED,
    FILLED,
    LEGAL_TRANSITIONS,
    OPEN_STATUSES,
    REASON_POST_ONLY,
    REJECTED,
    OrderBook,
)
from p2pexchange.core.events import STP, OrderType, Place, Side

ORIGINS = [b"alice", b"bob", b"carol"]
EVENT = bytes(32)

places = st.builds(
    Place,
    side=st.sampled_from(list(Side)),
    type=st.sampled_from(list(OrderType)),
    price=st.integers(95, 105),
    qty=st.integers(1, 8),
    stp=st.sampled_from(list(STP)),
).map(lambda p: p._replace(price=0) if p.type is OrderType.MARKET else p)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("place"), st.sampled_from(ORIGINS), places),
        st.tuples(st.just("cancel"), st.sampled_from(ORIGINS), st.integers(0, 60)),
    ),
    max_size=60)


def expected_makers(resting: list, place: Place, seq_of: dict[bytes, int]) -> list:
    """Resting orders the taker may meet, in priority order (ignoring self-trade rules)."""
    opposite = [o for o in resting if o.side is not place.side]
    if place.side is Side.BUY:
        opposite.sort(key=lambda o: (o.price, seq_of[o.order_id]))
        return [o for o in opposite if place.type is OrderType.MARKET or o.price <= place.price]
    opposite.sort(key=lambda o: (-o.price, seq_of[o.order_id]))
    return [o for o in opposite if place.type is OrderType.MARKET or o.price >= place.price]


@settings(max_examples=300, deadline=None)
@given(steps)
def test_engine_invariants_hold_after_every_action(program):
    book = OrderBook("TEST")
    ids: list[bytes] = []
    seq_of: dict[bytes, int] = {}
    for step, (kind, origin, arg) in enumerate(program):
        before = {oid: (o.status, o.filled) for oid, o in book.orders.items()}
        resting_before = book.resting()
        trades_before = len(book.trades)
        if kind == "place":
            oid = step.to_bytes(34, "big")
            seq_of[oid] = step
            order = book.place(oid, origin, arg, EVENT)
            ids.append(oid)
            new = book.trades[trades_before:]
            filled = sum(t.qty for t in new)
            assert filled == order.filled
            assert all(t.taker_order == oid and t.maker_origin != origin for t in new)
            # Price-time priority: the makers traded are a prefix of the model's queue
            # once same-origin makers (expired or skipped by STP) are taken out.
            queue = [o.order_id for o in expected_makers(resting_before, arg, seq_of)
                     if o.origin != origin]
            traded = list(dict.fromkeys(t.maker_order for t in new))
            assert traded == queue[:len(traded)]
            for t in new:
                assert t.price == book.orders[t.maker_order].price
            if arg.type is OrderType.FOK:
                assert order.filled in (0, arg.qty)
            if arg.type is OrderType.POST_ONLY:
                assert not new
                if order.status is REJECTED:
                    assert order.reason == REASON_POST_ONLY
            if arg.type in (OrderType.IOC, OrderType.FOK, OrderType.MARKET):
                assert order.status in (FILLED, CANCELLED)
            if order.status is CANCELLED:
                assert order.reason
        else:
            if not ids:
                continue
            oid = ids[arg % len(ids)]
            target = book.orders.get(oid)
            code = book.cancel(oid, origin)
            if target is None:
                assert code == CANCEL_UNKNOWN
            elif target.origin != origin:
                assert code == CANCEL_NOT_OWNER
            elif code == CANCEL_NOT_OPEN:
                assert before[oid][0] not in OPEN_STATUSES
            else:
                assert code is None and target.status is CANCELLED
        book.check_invariants()  # never crossed; open orders exactly the resting ones
        for oid, (status, filled) in before.items():
            now = book.orders[oid]
            if now.status is not status:
                assert (status, now.status) in LEGAL_TRANSITIONS
            assert now.filled >= filled
    # Quantity is conserved: per order, trades add up to its fills, on both sides.
    taken: dict[bytes, int] = {}
    for t in book.trades:
        taken[t.maker_order] = taken.get(t.maker_order, 0) + t.qty
        taken[t.taker_order] = taken.get(t.taker_order, 0) + t.qty
    for oid, order in book.orders.items():
        assert taken.get(oid, 0) == order.filled
        resting = order.remaining if order.status in OPEN_STATUSES else 0
        cancelled = order.remaining if order.status in (CANCELLED, REJECTED) else 0
        assert order.qty == order.filled + resting + cancelled


@settings(max_examples=200, deadline=None)
@given(steps, st.integers(0, 60))
def test_rollback_restores_exactly_and_replay_is_identical(program, cut):
    def run(book, part, offset=0):
        for step, (kind, origin, arg) in enumerate(part, offset):
            if kind == "place":
                book.place(step.to_bytes(34, "big"), origin, arg, EVENT)
            else:
                book.cancel((arg % max(1, step)).to_bytes(34, "big"), origin)

    cut = min(cut, len(program))
    book = OrderBook("TEST")
    run(book, program[:cut])
    snapshot = book.snapshot()
    states = {oid: (o.status, o.filled, o.reason) for oid, o in book.orders.items()}
    trades = list(book.trades)
    mark = book.mark()
    run(book, program[cut:], cut)
    after = (book.snapshot(), list(book.trades))
    book.rollback(mark)
    book.check_invariants()
    assert book.snapshot() == snapshot and book.trades == trades
    assert {oid: (o.status, o.filled, o.reason) for oid, o in book.orders.items()} == states
    run(book, program[cut:], cut)
    assert (book.snapshot(), list(book.trades)) == after


def test_self_trade_prevention_modes_behave_as_named():
    def setup():
        book = OrderBook("TEST")
        book.place(b"m" * 34, b"alice", Place(Side.SELL, OrderType.LIMIT, 100, 5), EVENT)
        book.place(b"o" * 34, b"bob", Place(Side.SELL, OrderType.LIMIT, 100, 5), EVENT)
        return book

    book = setup()
    taker = book.place(b"t" * 34, b"alice", Place(Side.BUY, OrderType.LIMIT, 100, 5,
                                                     STP.EXPIRE_TAKER), EVENT)
    assert taker.status is CANCELLED and book.orders[b"m" * 34].status in OPEN_STATUSES
    book = setup()
    taker = book.place(b"t" * 34, b"alice", Place(Side.BUY, OrderType.LIMIT, 100, 5,
                                                     STP.EXPIRE_MAKER), EVENT)
    assert taker.status is FILLED and book.orders[b"m" * 34].status is CANCELLED
    assert book.trades[0].maker_origin == b"bob"
    book = setup()
    taker = book.place(b"t" * 34, b"alice", Place(Side.BUY, OrderType.LIMIT, 100, 5,
                                                     STP.EXPIRE_BOTH), EVENT)
    assert taker.status is CANCELLED and book.orders[b"m" * 34].status is CANCELLED
    assert not book.trades
