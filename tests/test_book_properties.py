"""Property tests of the matching engine, checked after every action.

A model replays each action against a plain list of resting orders to predict which
maker must trade next (best price, then earliest), so price-time priority is checked
independently of the engine's data structures. `ModelBook` goes further: it applies
every documented rule (order types, self-trade prevention, the fill budget, FOK
feasibility from level totals) with lists and sums, and the engine must agree with it
on every outcome, trade, status and resting order.
"""

from __future__ import annotations

import gc
import random
from dataclasses import dataclass

from hypothesis import event, given, settings
from hypothesis import strategies as st

from p2pexchange.core import undo
from p2pexchange.core.book import FillBudget, OrderBook
from p2pexchange.core.events import STP, OrderType, Place, Side
from p2pexchange.core.orders import (
    CANCEL_NOT_OPEN,
    CANCEL_NOT_OWNER,
    CANCELLED,
    FILLED,
    LEGAL_TRANSITIONS,
    OPEN_STATUSES,
    PARTIALLY_FILLED,
    REASON_CANCELLED,
    REASON_FOK_TOO_DEEP,
    REASON_FOK_UNFILLABLE,
    REASON_IOC_REMAINDER,
    REASON_MATCH_BUDGET,
    REASON_NO_LIQUIDITY,
    REASON_POST_ONLY,
    REASON_STP_MAKER,
    REASON_STP_TAKER,
    REJECTED,
    RESTING,
)

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
        book.encoded_levels()  # kept: check_invariants finds any a change did not clear
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
            if target is None or before[oid][0] not in OPEN_STATUSES:
                assert code == CANCEL_NOT_OPEN  # (whatever its origin: state_machine.md §4)
            elif target.origin != origin:
                assert code == CANCEL_NOT_OWNER
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


UNDO_RECORD_FIELDS = {undo.U_NEW_ORDER: 1, undo.U_APPEND: 2, undo.U_NEW_LEVEL: 3,
                      undo.U_FILL: 3, undo.U_UNLINK: 3}


def undo_kinds(log: list, since: int) -> list[str]:
    """The names of the kinds of the undo records after position `since`, newest first."""
    names = {kind: name for name, kind in vars(undo).items() if name.startswith("U_")}
    kinds, end = [], len(log)
    while end > since:
        kinds.append(names[log[end - 1]])
        end -= 1 + UNDO_RECORD_FIELDS[log[end - 1]]
    assert end == since
    return kinds


@settings(max_examples=300, deadline=None)
@given(st.deferred(lambda: event_steps), st.integers(0, 100),
       st.sampled_from([0, 1, 2, 3, 5, 1000]), st.sampled_from([1, 2, 64]), st.booleans())
def test_rollback_restores_exactly_and_replay_is_identical(program, cut, fills_max,
                                                           fok_levels_max, settle_first):
    def run(book, part, offset=0):
        budget = FillBudget(fills_max)
        for step, (new_event, (kind, origin, arg)) in enumerate(part, offset):
            if new_event:
                budget = FillBudget(fills_max)
            if kind == "place":
                book.place(step.to_bytes(34, "big"), origin, arg, EVENT, budget)
            else:
                book.cancel((arg % max(1, step)).to_bytes(34, "big"), origin)
            book.encoded_levels()  # (kept encodings, which every change must clear)

    cut = min(cut, len(program))
    book = OrderBook("TEST", fok_levels_max=fok_levels_max)
    run(book, program[:cut])
    snapshot = book.snapshot()
    states = {oid: (o.status, o.filled, o.reason) for oid, o in book.orders.items()}
    trades = list(book.trades)
    mark = book.mark()
    run(book, program[cut:], cut)
    after = (book.snapshot(), list(book.trades))
    for kind in set(undo_kinds(book.log, mark[0])):
        event(f"undoes {kind}")
    if settle_first:
        # Settling what came before the mark changes nothing the rollback restores (it
        # clears the links of levels left empty, which undo writes and never reads); it
        # forgets the trades and the closed orders from before the mark.
        book.settle(mark)
        states = {oid: s for oid, s in states.items() if s[0] in OPEN_STATUSES}
        after = (after[0], after[1][len(trades):])
        trades = []
    book.rollback(mark)
    book.check_invariants()  # also the levels' totals, restored by the undo records
    assert book.snapshot() == snapshot and book.trades == trades
    assert {oid: (o.status, o.filled, o.reason) for oid, o in book.orders.items()} == states
    run(book, program[cut:], cut)
    assert (book.snapshot(), list(book.trades)) == after
    book.check_invariants()


def test_what_settling_and_rollback_drop_is_freed_without_the_collector():
    """Orders and levels that left the book in settled steps, and those a rollback took
    out, hold no reference cycle (an empty level links to itself; a new level and its
    one order link to each other): reference counting frees them, not a full pass of
    the garbage collector, which under load comes minutes apart (runtime.py)."""
    rng = random.Random(7)
    gc.collect()
    gc.disable()
    try:
        book = OrderBook("TEST")
        for step in range(3000):
            side = Side.BUY if rng.random() < 0.5 else Side.SELL
            if step % 500 == 400:
                mark = book.mark()
            if rng.random() < 0.3 and step > 10:
                book.cancel(rng.randrange(step).to_bytes(34, "big"), ORIGINS[step % 3])
            else:
                price = 100 + rng.randrange(-8, 9) + (2 if side is Side.SELL else -2)
                book.place(step.to_bytes(34, "big"), ORIGINS[step % 3],
                           Place(side, OrderType.LIMIT, price, rng.randrange(1, 5)), EVENT)
            if step % 500 == 499:
                book.rollback(mark)  # the last 100 (new levels and their orders taken out)
        book.settle(book.mark())
        book.check_invariants()
        assert gc.collect() == 0
    finally:
        gc.enable()


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


# -- the engine against a model of every documented rule --------------------------------


@dataclass
class ModelOrder:
    order_id: bytes
    origin: bytes
    side: Side
    price: int
    qty: int
    filled: int = 0
    status: object = RESTING
    reason: str = ""

    @property
    def remaining(self) -> int:
        return self.qty - self.filled


class ModelBook:
    """The engine's rules on a plain list of resting orders in arrival order."""

    def __init__(self, fok_levels_max: int) -> None:
        self.fok_levels_max = fok_levels_max
        self.resting: list[ModelOrder] = []
        self.orders: dict[bytes, ModelOrder] = {}
        self.trades: list[tuple] = []  # (maker, taker, price, qty)

    def queue(self, taker: Place) -> list[ModelOrder]:
        """Makers within the taker's limit, in priority order (best price, then oldest)."""
        def within(o: ModelOrder) -> bool:
            if taker.type is OrderType.MARKET:
                return True
            return o.price <= taker.price if taker.side is Side.BUY else o.price >= taker.price
        makers = [o for o in self.resting if o.side is not taker.side and within(o)]
        sign = 1 if taker.side is Side.BUY else -1
        return sorted(makers, key=lambda o: sign * o.price)  # stable: time within a price

    def fok_refusal(self, taker: Place, origin: bytes, queue: list, fills_left: int):
        levels: list[list[ModelOrder]] = []
        for o in queue:
            if levels and levels[-1][0].price == o.price:
                levels[-1].append(o)
            else:
                levels.append([o])
        need, makers = taker.qty, 0
        for walked, level in enumerate(levels):
            if walked == self.fok_levels_max:
                return REASON_FOK_TOO_DEEP
            own = sum(o.remaining for o in level if o.origin == origin)
            if own and taker.stp is not STP.EXPIRE_MAKER:
                return REASON_FOK_UNFILLABLE
            available = sum(o.remaining for o in level) - own
            if available >= need:
                makers += min(len(level), need + own)
                return None if makers <= fills_left else REASON_MATCH_BUDGET
            need -= available
            makers += len(level)
        return REASON_FOK_UNFILLABLE

    def place(self, oid: bytes, origin: bytes, p: Place, budget: list[int]) -> ModelOrder:
        order = ModelOrder(oid, origin, p.side, p.price, p.qty)
        self.orders[oid] = order
        queue = self.queue(p)
        if queue and p.type is OrderType.POST_ONLY:
            order.status, order.reason = REJECTED, REASON_POST_ONLY
            return order
        if queue and p.type is OrderType.FOK:
            refusal = self.fok_refusal(p, origin, queue, budget[0])
            if refusal is not None:
                order.status, order.reason = CANCELLED, refusal
                return order
        stopped = False
        for maker in queue:
            if order.remaining == 0:
                break
            if budget[0] == 0:
                order.status, order.reason = CANCELLED, REASON_MATCH_BUDGET
                return order
            if maker.origin == origin:
                if p.stp is not STP.EXPIRE_TAKER:
                    budget[0] -= 1
                    maker.status, maker.reason = CANCELLED, REASON_STP_MAKER
                    self.resting.remove(maker)
                if p.stp is not STP.EXPIRE_MAKER:
                    order.status, order.reason = CANCELLED, REASON_STP_TAKER
                    stopped = True
                    break
                continue
            budget[0] -= 1
            fill = min(maker.remaining, order.remaining)
            self.trades.append((maker.order_id, oid, maker.price, fill))
            maker.filled += fill
            order.filled += fill
            if maker.remaining == 0:
                maker.status = FILLED
                self.resting.remove(maker)
            else:
                maker.status = PARTIALLY_FILLED
        if stopped:
            return order
        if p.type is OrderType.FOK and queue:
            assert order.remaining == 0, "a FOK that passes its check fills completely"
        if order.remaining == 0:
            order.status = FILLED
        elif p.type in (OrderType.LIMIT, OrderType.POST_ONLY):
            order.status = PARTIALLY_FILLED if order.filled else RESTING
            self.resting.append(order)
        else:
            order.status = CANCELLED
            order.reason = {OrderType.MARKET: REASON_NO_LIQUIDITY,
                            OrderType.FOK: REASON_FOK_UNFILLABLE}.get(p.type,
                                                                     REASON_IOC_REMAINDER)
        return order

    def cancel(self, oid: bytes, origin: bytes) -> str | None:
        order = self.orders.get(oid)
        if order is None or order.status not in OPEN_STATUSES:
            return CANCEL_NOT_OPEN
        if order.origin != origin:
            return CANCEL_NOT_OWNER
        order.status, order.reason = CANCELLED, REASON_CANCELLED
        self.resting.remove(order)
        return None

    def snapshot(self) -> tuple:
        def side(s: Side, sign: int) -> tuple:
            keys = sorted({sign * o.price for o in self.resting if o.side is s})
            return tuple((k, tuple((o.order_id, o.remaining) for o in self.resting
                                   if o.side is s and sign * o.price == k)) for k in keys)
        return (side(Side.BUY, -1), side(Side.SELL, 1))


deep_places = st.builds(
    Place,
    side=st.sampled_from(list(Side)),
    type=st.sampled_from(list(OrderType)),
    price=st.integers(98, 102),
    qty=st.integers(1, 12),
    stp=st.sampled_from(list(STP)),
).map(lambda p: p._replace(price=0) if p.type is OrderType.MARKET else p)
# Each step may start a new event (a fresh budget); otherwise it shares the previous one.
event_steps = st.lists(
    st.tuples(
        st.booleans(),
        st.one_of(
            st.tuples(st.just("place"), st.sampled_from(ORIGINS), deep_places),
            st.tuples(st.just("cancel"), st.sampled_from(ORIGINS), st.integers(0, 100)),
        )),
    min_size=30, max_size=100)


@settings(max_examples=300, deadline=None)
@given(event_steps, st.sampled_from([1, 2, 3, 5, 8, 10_000]), st.sampled_from([1, 2, 3, 64]))
def test_engine_agrees_with_the_model_of_every_rule(program, fills_max, fok_levels_max):
    book = OrderBook("TEST", fok_levels_max=fok_levels_max)
    model = ModelBook(fok_levels_max)
    budget, model_budget = FillBudget(fills_max), [fills_max]
    ids: list[bytes] = []
    for step, (new_event, (kind, origin, arg)) in enumerate(program):
        if new_event:
            budget, model_budget = FillBudget(fills_max), [fills_max]
        if kind == "place":
            oid = step.to_bytes(34, "big")
            ids.append(oid)
            trades_before, model_trades_before = len(book.trades), len(model.trades)
            order = book.place(oid, origin, arg, EVENT, budget)
            expected = model.place(oid, origin, arg, model_budget)
            event(f"{arg.type.name} {order.status.name} {order.reason}")
            assert (order.status, order.reason, order.filled) == (
                expected.status, expected.reason, expected.filled), (arg, order, expected)
            assert [(t.maker_order, t.taker_order, t.price, t.qty)
                    for t in book.trades[trades_before:]] == model.trades[model_trades_before:]
            assert budget.left == model_budget[0]
        elif ids:
            oid = ids[arg % len(ids)]
            assert book.cancel(oid, origin) == model.cancel(oid, origin)
        book.check_invariants()
        assert book.snapshot() == model.snapshot()
        assert len(book.trades) == len(model.trades)
    assert {oid: (o.status, o.filled, o.reason) for oid, o in book.orders.items()} == {
        oid: (o.status, o.filled, o.reason) for oid, o in model.orders.items()}
    assert [(t.maker_order, t.taker_order, t.price, t.qty) for t in book.trades] == model.trades
