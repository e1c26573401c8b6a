"""The engine's work per action is bounded whatever the book holds (no timed assertions).

Work is observed through the structure: orders and levels are built from instrumented
subclasses that count every attribute read and write, so a test can say "this cancel
touched a constant number of orders" or "this FOK read no resting order at all" for a
level of 50,000 orders. A scan in C (`deque.index`, `list.remove`) would show up too:
the instrumented orders count equality comparisons.
"""

from __future__ import annotations

import pytest
from test_book_properties import undo_kinds

from p2pexchange.core import book as engine
from p2pexchange.core import undo
from p2pexchange.core.book import EVENT_FILLS_MAX, FillBudget, OrderBook
from p2pexchange.core.events import STP, OrderType, Place, Side
from p2pexchange.core.market import DEFAULT_MARKETS
from p2pexchange.core.orders import (
    CANCELLED,
    FILLED,
    OPEN_STATUSES,
    PARTIALLY_FILLED,
    REASON_FOK_TOO_DEEP,
    REASON_FOK_UNFILLABLE,
    REASON_MATCH_BUDGET,
    REASON_STP_MAKER,
    REJECTED,
    RESTING,
)
from p2pexchange.core.replica import Replica
from p2pexchange.sim.workload import peer_id_bytes, seeded_key_pair

UNDO_KINDS = {name for name in vars(undo) if name.startswith("U_")}  # every kind of record

EVENT = bytes(32)
DEEP = 50_000
MAKER, TAKER = b"maker", b"taker"


class Touches:
    """Counts accesses to instrumented objects while `on`."""

    on = False
    orders = 0
    levels = 0


class CountedOrder(engine.Order):
    __slots__ = ()

    def __getattribute__(self, name):
        if Touches.on:
            Touches.orders += 1
        return object.__getattribute__(self, name)

    def __setattr__(self, name, value):
        if Touches.on:
            Touches.orders += 1
        object.__setattr__(self, name, value)

    def __eq__(self, other):
        if Touches.on:
            Touches.orders += 1
        return self is other

    __hash__ = object.__hash__


class CountedLevel(engine.Level):
    __slots__ = ()

    def __getattribute__(self, name):
        if Touches.on:
            Touches.levels += 1
        return object.__getattribute__(self, name)


@pytest.fixture
def counted(monkeypatch):
    """Orders and levels the engine creates from now on count their accesses."""
    monkeypatch.setattr(engine, "Order", CountedOrder)
    monkeypatch.setattr(engine, "Level", CountedLevel)

    def measure(action):
        Touches.orders = Touches.levels = 0
        Touches.on = True
        try:
            result = action()
        finally:
            Touches.on = False
        return result, Touches.orders, Touches.levels
    return measure


def oid(i: int) -> bytes:
    return i.to_bytes(34, "big")


def one_level(depth: int, origin_of=lambda i: MAKER, qty: int = 1) -> OrderBook:
    """A book holding one ask level at 100 of `depth` orders."""
    book = OrderBook("TEST")
    for i in range(depth):
        book.place(oid(i), origin_of(i), Place(Side.SELL, OrderType.LIMIT, 100, qty), EVENT)
    return book


# -- cancel ------------------------------------------------------------------------------


def test_cancel_at_the_back_of_a_deep_level_touches_only_its_neighbours(counted):
    costs = {}
    for depth in (10, DEEP):
        book = one_level(depth)
        log_before = len(book.log)
        last = oid(depth - 1)
        code, orders, levels = counted(lambda book=book, last=last: book.cancel(last, MAKER))
        assert code is None
        costs[depth] = (orders, levels)
        # One undo record, the level still there and its totals updated in place.
        assert undo_kinds(book.log, log_before) == ["U_UNLINK"]
        level = book.asks[100]
        assert (level.live, level.total, level.lots_of) == (depth - 1, depth - 1,
                                                           {MAKER: depth - 1})
        assert level.prev is book.orders[oid(depth - 2)]
        book.check_invariants()
    assert costs[10] == costs[DEEP]
    assert costs[DEEP][0] <= 12  # the order itself and its two neighbours' links


def test_cancel_in_the_middle_and_rollback_restore_the_exact_level(counted):
    book = one_level(DEEP)
    snapshot = book.snapshot()
    mark = book.mark()
    costs = set()
    for i in (DEEP // 2, 0, DEEP - 1, DEEP // 2 + 1):
        _, orders, _ = counted(lambda i=i: book.cancel(oid(i), MAKER))
        costs.add(orders)
    assert max(costs) <= 12
    assert book.resting_count() == DEEP - 4
    _, orders, _ = counted(lambda: book.rollback(mark))
    assert orders <= 4 * 12
    assert book.snapshot() == snapshot
    book.check_invariants()


def test_the_last_order_to_leave_takes_its_level_out_and_rollback_puts_it_back():
    book = one_level(3)
    mark = book.mark()
    for i in (1, 0, 2):
        assert book.cancel(oid(i), MAKER) is None
    assert not book.asks and book.depth() == {"bids": [], "asks": []}
    book.rollback(mark)
    assert book.depth()["asks"] == [(100, 3)]
    assert [o.order_id for o in book.resting()] == [oid(0), oid(1), oid(2)]
    book.check_invariants()


def test_books_with_the_same_live_orders_have_the_same_snapshot():
    sell = Place(Side.SELL, OrderType.LIMIT, 100, 2)
    quiet, busy = OrderBook("TEST"), OrderBook("TEST")
    for i in (0, 2):
        quiet.place(oid(i), MAKER, sell, EVENT)
    for i in range(5):  # the same two orders, with others around them that are gone
        busy.place(oid(i), MAKER, sell, EVENT)
    for i in (4, 1, 3):
        assert busy.cancel(oid(i), MAKER) is None
    assert busy.snapshot() == quiet.snapshot()
    assert busy.depth() == quiet.depth() == {"bids": [], "asks": [(100, 4)]}
    assert busy.resting_count() == quiet.resting_count() == 2


# -- FOK ---------------------------------------------------------------------------------


def fok(qty: int, stp: STP = STP.EXPIRE_TAKER, price: int = 100) -> Place:
    return Place(Side.BUY, OrderType.FOK, price, qty, stp)


def test_fok_against_a_deep_level_is_decided_without_reading_an_order(counted):
    book = one_level(DEEP)
    snapshot = book.snapshot()
    for qty, reason in ((DEEP + 1, REASON_FOK_UNFILLABLE),
                        (EVENT_FILLS_MAX + 1, REASON_MATCH_BUDGET)):
        order, orders, levels = counted(lambda qty=qty: book.place(
            oid(DEEP + qty), TAKER, fok(qty), EVENT))
        assert (order.status, order.reason) == (CANCELLED, reason)
        # Only the taker's own fields are touched: no resting order is read.
        assert orders <= 40 and levels <= 5
        assert book.snapshot() == snapshot
    # A FOK that fits fills completely, and reads only the makers it fills.
    order, orders, _ = counted(lambda: book.place(oid(2 * DEEP), TAKER, fok(3), EVENT))
    assert (order.status, order.filled) == (FILLED, 3)
    assert orders <= 40 + 3 * 30
    book.check_invariants()


def test_fok_expire_maker_counts_the_level_total_minus_its_own_lots():
    # 10 lots at 100: 4 of the taker's origin, then 6 of others.
    book = one_level(10, origin_of=lambda i: TAKER if i < 4 else MAKER)
    order = book.place(b"f" * 34, TAKER, fok(7, STP.EXPIRE_MAKER), EVENT)
    assert (order.status, order.reason) == (CANCELLED, REASON_FOK_UNFILLABLE)
    assert book.resting_count() == 10  # nothing was expired by a FOK that did not run
    order = book.place(b"g" * 34, TAKER, fok(6, STP.EXPIRE_MAKER), EVENT)
    assert (order.status, order.filled) == (FILLED, 6)
    assert all(book.orders[oid(i)].reason == REASON_STP_MAKER for i in range(4))


@pytest.mark.parametrize("stp", [STP.EXPIRE_TAKER, STP.EXPIRE_BOTH])
def test_fok_expire_taker_or_both_counts_no_liquidity_at_or_behind_its_own_order(stp):
    # Level 100: 5 lots of others, then 1 lot of the taker's origin; level 101: 5 others.
    book = one_level(6, origin_of=lambda i: TAKER if i == 5 else MAKER)
    for i in range(5):
        book.place(oid(100 + i), MAKER, Place(Side.SELL, OrderType.LIMIT, 101, 1), EVENT)
    # 5 lots are ahead of its own order, but the FOK may not count on that level.
    order = book.place(b"f" * 34, TAKER, fok(5, stp, price=101), EVENT)
    assert (order.status, order.reason) == (CANCELLED, REASON_FOK_UNFILLABLE)
    assert book.resting_count() == 11 and not book.trades
    # Without its own order in the way the same FOK fills.
    assert book.cancel(oid(5), TAKER) is None
    order = book.place(b"g" * 34, TAKER, fok(5, stp, price=101), EVENT)
    assert (order.status, order.filled) == (FILLED, 5)


def test_fok_that_needs_more_than_fok_levels_max_levels_is_cancelled_as_too_deep(counted):
    book = OrderBook("TEST")
    levels_n = engine.FOK_LEVELS_MAX + 10
    for i in range(levels_n):
        book.place(oid(i), MAKER, Place(Side.SELL, OrderType.LIMIT, 100 + i, 1), EVENT)
    needs_all = fok(engine.FOK_LEVELS_MAX + 1, price=100 + levels_n)
    order, orders, levels = counted(lambda: book.place(b"f" * 34, TAKER, needs_all, EVENT))
    assert (order.status, order.reason) == (CANCELLED, REASON_FOK_TOO_DEEP)
    assert orders <= 40 and levels <= 4 * engine.FOK_LEVELS_MAX
    # Within its limit there are only FOK_LEVELS_MAX levels: not too deep, unfillable.
    capped = fok(engine.FOK_LEVELS_MAX + 1, price=100 + engine.FOK_LEVELS_MAX - 1)
    order = book.place(b"g" * 34, TAKER, capped, EVENT)
    assert (order.status, order.reason) == (CANCELLED, REASON_FOK_UNFILLABLE)
    order = book.place(b"h" * 34, TAKER, fok(engine.FOK_LEVELS_MAX, price=200), EVENT)
    assert (order.status, order.filled) == (FILLED, engine.FOK_LEVELS_MAX)


# -- the fill budget ---------------------------------------------------------------------


def test_reaching_the_budget_cancels_the_rest_of_the_taker_with_match_budget(counted):
    book = one_level(DEEP)
    budget = FillBudget()
    sweep = Place(Side.BUY, OrderType.MARKET, 0, DEEP)
    order, orders, _ = counted(lambda: book.place(b"m" * 34, TAKER, sweep, EVENT, budget))
    assert (order.status, order.reason) == (CANCELLED, REASON_MATCH_BUDGET)
    assert order.filled == len(book.trades) == EVENT_FILLS_MAX and budget.left == 0
    assert orders <= 40 * EVENT_FILLS_MAX
    assert book.resting_count() == DEEP - EVENT_FILLS_MAX
    # Later actions of the same event: a taker that crosses is cancelled untouched...
    ioc = book.place(b"i" * 34, TAKER, Place(Side.BUY, OrderType.IOC, 100, 1), EVENT, budget)
    assert (ioc.status, ioc.reason, ioc.filled) == (CANCELLED, REASON_MATCH_BUDGET, 0)
    # ...and an order that does not cross rests as usual.
    bid = book.place(b"b" * 34, TAKER, Place(Side.BUY, OrderType.LIMIT, 99, 1), EVENT, budget)
    assert bid.status is RESTING
    # The next event has a budget of its own.
    ioc = book.place(b"j" * 34, TAKER, Place(Side.BUY, OrderType.IOC, 100, 1), EVENT,
                     FillBudget())
    assert ioc.status is FILLED
    book.check_invariants()


def test_a_taker_that_no_longer_crosses_when_the_budget_ends_rests():
    book = one_level(3)
    budget = FillBudget(3)
    order = book.place(b"t" * 34, TAKER, Place(Side.BUY, OrderType.LIMIT, 100, 5), EVENT,
                       budget)
    assert (order.status, order.filled, budget.left) == (PARTIALLY_FILLED, 3, 0)
    assert book.depth()["bids"] == [(100, 2)]


def test_makers_expired_by_self_trade_prevention_count_against_the_budget():
    book = one_level(4, origin_of=lambda i: TAKER if i < 2 else MAKER)
    budget = FillBudget(3)
    taker = Place(Side.BUY, OrderType.IOC, 100, 2, STP.EXPIRE_MAKER)
    order = book.place(b"t" * 34, TAKER, taker, EVENT, budget)
    assert (order.status, order.reason, order.filled) == (CANCELLED, REASON_MATCH_BUDGET, 1)
    assert [book.orders[oid(i)].status for i in range(4)] == [
        CANCELLED, CANCELLED, FILLED, RESTING]


def test_fok_counts_as_feasible_only_if_the_makers_it_may_meet_fit_the_budget():
    book = one_level(10)
    order = book.place(b"f" * 34, TAKER, fok(4), EVENT, FillBudget(3))
    assert (order.status, order.reason) == (CANCELLED, REASON_MATCH_BUDGET)
    assert not book.trades
    budget = FillBudget(4)
    order = book.place(b"g" * 34, TAKER, fok(4), EVENT, budget)
    assert (order.status, budget.left) == (FILLED, 0)


def test_replica_gives_each_event_one_budget():
    maker_key, taker_key = seeded_key_pair("budget-maker"), seeded_key_pair("budget-taker")
    makers = Replica(DEFAULT_MARKETS, peer_id_bytes(maker_key))
    events = [makers.create_event(maker_key.private_key, "BTC-USD",
                                  [Place(Side.SELL, OrderType.LIMIT, 100, 1)] * 1000)[0]
              for _ in range(6)]
    taker = Replica(DEFAULT_MARKETS, peer_id_bytes(taker_key))
    for e in events:
        assert taker.receive(e.raw).status == "delivered"
    sweep, receipt = taker.create_event(taker_key.private_key, "BTC-USD", [
        Place(Side.BUY, OrderType.MARKET, 0, 6000),
        Place(Side.BUY, OrderType.IOC, 100, 1),
    ])
    assert len(receipt.trades) == EVENT_FILLS_MAX
    assert taker.outcomes_of(sweep.id) == ["cancelled", "cancelled"]
    assert {taker.order(sweep.order_id(i)).reason for i in range(2)} == {REASON_MATCH_BUDGET}
    follow_up, receipt = taker.create_event(taker_key.private_key, "BTC-USD",
                                            [Place(Side.BUY, OrderType.IOC, 100, 1)])
    assert len(receipt.trades) == 1
    # The same outcome on a replica that receives the events in another order.
    other = Replica(DEFAULT_MARKETS)
    for e in [sweep, follow_up, *reversed(events)]:
        other.receive(e.raw)
    assert other.digest == taker.digest


# -- rollback of every kind of undo record -----------------------------------------------

def state(book: OrderBook) -> tuple:
    levels = tuple((key, lvl.live, lvl.total, tuple(sorted(lvl.lots_of.items())))
                   for tree in (book.bids, book.asks) for key, lvl in tree.items())
    orders = tuple(sorted((o.order_id, o.status, o.filled, o.remaining, o.reason)
                          for o in book.orders.values()))
    return book.snapshot(), levels, orders, tuple(book.trades)


def test_each_kind_of_undo_record_rolls_back_to_the_exact_state():
    a, b, c = b"a", b"b", b"c"
    script = [  # (action, its outcome); every place has a budget of 2 makers
        (("place", a, Place(Side.SELL, OrderType.LIMIT, 101, 3)), RESTING),  # opens a level
        (("place", c, Place(Side.SELL, OrderType.LIMIT, 101, 2)), RESTING),  # joins it
        (("place", a, Place(Side.SELL, OrderType.LIMIT, 102, 4)), RESTING),
        (("place", c, Place(Side.SELL, OrderType.LIMIT, 101, 5)), RESTING),
        (("cancel", c, oid(1)), None),  # out of the middle of its level
        (("place", b, Place(Side.BUY, OrderType.IOC, 101, 1)), FILLED),  # a maker part-filled
        # Two makers fill and their level drops; the budget is spent but the taker no
        # longer crosses, so it rests, opening a level.
        (("place", b, Place(Side.BUY, OrderType.LIMIT, 101, 9)), PARTIALLY_FILLED),
        (("place", a, Place(Side.SELL, OrderType.FOK, 101, 9)), CANCELLED),  # only its record
        # Self-trade prevention expires its own maker, whose level drops; it rests.
        (("place", a, Place(Side.BUY, OrderType.LIMIT, 102, 4, STP.EXPIRE_MAKER)), RESTING),
        (("place", b, Place(Side.SELL, OrderType.POST_ONLY, 90, 1)), REJECTED),
        (("place", b, Place(Side.BUY, OrderType.LIMIT, 99, 1)), RESTING),
        (("cancel", b, oid(10)), None),  # the last order of its level: the level drops
        (("place", b, Place(Side.BUY, OrderType.LIMIT, 100, 1)), RESTING),
        (("place", c, Place(Side.SELL, OrderType.MARKET, 0, 9)), CANCELLED),  # budget
    ]
    book = OrderBook("TEST")
    states, marks = [], []
    for step, ((kind, origin, arg), outcome) in enumerate(script):
        book.encoded_levels()  # kept: check_invariants finds any a change did not clear
        states.append(state(book))
        marks.append(book.mark())
        if kind == "place":
            assert book.place(oid(step), origin, arg, EVENT, FillBudget(2)).status is outcome
        else:
            assert book.cancel(arg, origin) is None
        book.check_invariants()
    assert book.orders[oid(13)].reason == REASON_MATCH_BUDGET
    assert set(undo_kinds(book.log, 0)) == UNDO_KINDS
    for step in reversed(range(len(script))):
        book.encoded_levels()
        book.rollback(marks[step])
        book.check_invariants()
        assert state(book) == states[step], step
    assert not book.log and not book.orders


def test_cancel_of_a_filled_order_is_refused_and_changes_nothing():
    book = one_level(2)
    book.place(b"t" * 34, TAKER, Place(Side.BUY, OrderType.IOC, 100, 1), EVENT)
    before = state(book)
    assert book.cancel(oid(0), MAKER) == engine.CANCEL_NOT_OPEN
    assert state(book) == before and book.orders[oid(1)].status in OPEN_STATUSES
