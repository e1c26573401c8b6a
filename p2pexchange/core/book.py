"""The matching engine: one price-time priority order book per market.

Theory of operation (the data it works on is in orders.py): a book holds two trees
of price levels (`SortedDict`), keyed so that the best level comes first: asks by
price, bids by minus price. A level is a `Level`: the sentinel of a circular doubly
linked list of its resting orders in time priority, which also keeps the level's
totals (live orders, remaining lots, remaining lots per origin). A taker walks the
opposite tree from its first key while that key is within its limit key (its price
for a buy, minus its price for a sell, unbounded for a market order). "Time" in
price-time priority is the position in the replica's total order: the book itself
never reads a clock, it only sees actions in the order the replica applies them. A
level holds only live orders, and the last order to leave takes its level out of the
tree: an order is unlinked in O(1) wherever it stands. (Lazy deletion from a deque
would leave cancelled entries for later takers to skip, and a taker re-applied after
each rollback would skip them again: its cost would follow the level's history, not
the event.)

Every mutation appends an undo record to `self.log`, so the replica can roll the book
back to any earlier mark in time proportional to what it undoes (undo.py). The views of
the whole resting state (for checkpoints and comparisons), `restore` and the invariant
check are core/bookstate.py's, a part of `OrderBook`.

Outcomes are values, not exceptions: a place returns its `Order` with a final
status for this step (resting, partially filled, filled, cancelled, rejected) and
a reason; a cancel returns None or a reject code. Only programmer errors are
asserts.

Business rules that bound the work one event can cause (identical on every
replica: each is a pure function of the book's state and the event):

- Fill budget. An event's takers may meet at most `EVENT_FILLS_MAX` makers in
  all; a maker counts once each time a taker meets it, whether they trade or
  self-trade prevention expires the maker. A taker that still crosses the book
  when the event's budget is spent is cancelled with reason `match_budget`
  (whatever it filled before stays filled). A taker that no longer crosses rests
  or ends as its type says.
- FOK feasibility is decided from level totals, never by simulating fills. The
  FOK walks the opposite levels within its limit, best first, counting on each
  level's remaining lots, and is executed only if the lots suffice within
  `FOK_LEVELS_MAX` levels and the makers it may meet fit the event's remaining
  budget. Self-trade prevention: with `expire_maker` a level offers its total
  minus the taker origin's own lots in it (those makers would be expired); with
  `expire_taker` or `expire_both`, a level holding any live order of the
  taker's origin ends the liquidity the FOK may count on (the FOK is cancelled
  rather than risk a self-trade part-way through). The makers a FOK may meet are
  every live order of each level it empties, plus, in its last level, at most
  min(live orders in that level, lots still needed + own lots in that level).
  Reasons: `fok_unfillable` (not enough lots, counting the rules above),
  `fok_too_deep` (it would need a level beyond the first `FOK_LEVELS_MAX`),
  `match_budget` (enough lots, but not enough budget). A FOK that passes fills
  completely.

Complexity (L = levels in a tree, F = EVENT_FILLS_MAX, A = actions in an event):
- cancel: O(1) to unlink the order, plus O(log L) if its level empties;
- place that rests without trading: O(1) into an existing level, O(log L) for a
  new level;
- taker: O(1) per maker met (at most the budget left) plus O(log L) per level it
  empties (each emptied level held a maker it met);
- FOK decision: O(log L + FOK_LEVELS_MAX) level reads; no order is read;
- one event: O((A + F) log L) in all, and at most A + F undo records (one per
  action, one per maker met), so the replica's rollback and re-apply of an event
  are bounded by its size too, whatever the book holds;
- rollback: O(1) per record, plus O(log L) to put back a level that had emptied;
- queries: `depth(n)` O(log L + n), `resting_count()` O(L), `resting()` and
  `snapshot()` O(L + resting orders).
"""

from __future__ import annotations

from sortedcontainers import SortedDict

from .bookstate import BookState
from .events import STP, OrderType, Place, Side
from .orders import (
    CANCEL_NOT_OPEN,
    CANCEL_NOT_OWNER,
    CANCELLED,
    FILLED,
    MAY_BECOME_CANCELLED,
    MAY_BECOME_FILLED,
    MAY_BECOME_PARTIALLY_FILLED,
    OPEN_STATUSES,
    PARTIALLY_FILLED,
    REASON_CANCELLED,
    REASON_DUPLICATE_ID,
    REASON_FOK_TOO_DEEP,
    REASON_FOK_UNFILLABLE,
    REASON_IOC_REMAINDER,
    REASON_MATCH_BUDGET,
    REASON_NO_LIQUIDITY,
    REASON_POST_ONLY,
    REASON_STP_MAKER,
    REASON_STP_TAKER,
    REJECTED,
    Level,
    Order,
    Trade,
    unlink,
)
from .undo import (
    U_APPEND,
    U_FILL,
    U_NEW_LEVEL,
    U_NEW_ORDER,
    U_UNLINK,
    UndoLog,
)

# A protocol constant like EVENT_ACTIONS_MAX: every replica must use the same value.
EVENT_FILLS_MAX = 5_000  # makers an event's takers may meet in all (fills + STP expiries)
FOK_LEVELS_MAX = 64  # price levels a FOK may count on

assert EVENT_FILLS_MAX > 0 and FOK_LEVELS_MAX > 0

_BUY = Side.BUY
_LIMIT, _IOC, _FOK, _POST_ONLY, _MARKET = (OrderType.LIMIT, OrderType.IOC, OrderType.FOK,
                                           OrderType.POST_ONLY, OrderType.MARKET)
_EXPIRE_TAKER, _EXPIRE_MAKER = STP.EXPIRE_TAKER, STP.EXPIRE_MAKER
_NO_LIMIT = 1 << 62  # beyond any price key: a market order walks the whole book


class FillBudget:
    """The makers an event's takers may still meet; one per event, shared by its places."""

    __slots__ = ("left",)

    def __init__(self, left: int = EVENT_FILLS_MAX) -> None:
        assert left >= 0
        self.left = left


_new_trade = tuple.__new__  # builds a Trade without the named tuple's Python-level __new__
_new_level = object.__new__  # a Level's attributes are set where it opens


class OrderBook(BookState, UndoLog):
    """Price-time priority book for one market; see the module docstring."""

    def __init__(self, market: str, *, fok_levels_max: int = FOK_LEVELS_MAX) -> None:
        """`fok_levels_max` is for tests of that rule; every replica uses the default."""
        assert fok_levels_max > 0
        self.market = market
        self.bids: SortedDict = SortedDict()  # key: -price -> Level
        self.asks: SortedDict = SortedDict()  # key: price -> Level
        # Every order placed here, except those that left in a settled step (`settle`).
        self.orders: dict[bytes, Order] = {}
        self.trades: list[Trade] = []
        self.log: list = []  # flat undo records, see U_NEW_ORDER
        # What `settle` dropped from the front of `log` and `trades`: marks stay absolute.
        self.log_base = 0
        self.trades_base = 0
        self._fok_levels_max = fok_levels_max

    # -- queries -----------------------------------------------------------------

    def best_bid(self) -> int | None:
        return -self.bids.keys()[0] if self.bids else None

    def best_ask(self) -> int | None:
        return self.asks.keys()[0] if self.asks else None

    def depth(self, levels: int = 10) -> dict[str, list[tuple[int, int]]]:
        def side(tree: SortedDict, sign: int) -> list[tuple[int, int]]:
            return [(sign * key, tree[key].total) for key in tree.islice(0, levels)]
        return {"bids": side(self.bids, -1), "asks": side(self.asks, 1)}

    def resting_count(self) -> int:
        return sum(level.live for tree in (self.bids, self.asks) for level in tree.values())

    def resting(self) -> list[Order]:
        """Resting orders, best first, in priority order within a level."""
        return [o for tree in (self.bids, self.asks) for level in tree.values() for o in level]

    @staticmethod
    def event_budget() -> FillBudget:
        """A fresh budget for one event's places (the replica's `_apply` takes one)."""
        return FillBudget(EVENT_FILLS_MAX)

    # -- actions -------------------------------------------------------------------

    def place(self, order_id: bytes, origin: bytes, place: Place, event_id: bytes,
              budget: FillBudget | None = None) -> Order:
        """Apply one order; returns it with its status after this step. `budget` is the
        event's (shared by its places); without one, this place alone gets a full one."""
        side, otype, price, qty, stp = place
        order = Order(order_id, origin, self.market, side, otype, price, qty, stp)
        log = self.log
        orders = self.orders
        if order_id in orders:
            order.status = REJECTED
            order.reason = REASON_DUPLICATE_ID
            return order
        # The order's own undo record comes last, after its fills: it is undone first.
        orders[order_id] = order
        if side is _BUY:
            opposite, own, limit_key, own_key = self.asks, self.bids, price, -price
        else:
            opposite, own, limit_key, own_key = self.bids, self.asks, -price, price
        if otype is _MARKET:
            limit_key = _NO_LIMIT
        # The first key of a SortedDict, read from its SortedList's first sublist: the
        # public `keys()[0]` builds a view object on every call, on the hottest path.
        if opposite and opposite._list._lists[0][0] <= limit_key:
            if otype is _POST_ONLY:
                order.status = REJECTED
                order.reason = REASON_POST_ONLY
                log.extend((order_id, U_NEW_ORDER))
                return order
            left = EVENT_FILLS_MAX if budget is None else budget.left
            if otype is _FOK:
                refusal = self._fok_refusal(order, opposite, limit_key, left)
                if refusal is not None:
                    order.status = CANCELLED
                    order.reason = refusal
                    log.extend((order_id, U_NEW_ORDER))
                    return order
            left = self._match(order, opposite, limit_key, event_id, left)
            if budget is not None:
                budget.left = left
            if order.status is CANCELLED:  # expired by self-trade prevention, or budget
                log.extend((order_id, U_NEW_ORDER))
                return order
            assert otype is not _FOK or order.remaining == 0, order
        remaining = order.remaining
        if remaining == 0:
            order.status = FILLED
            log.extend((order_id, U_NEW_ORDER))
            return order
        if otype is _LIMIT or otype is _POST_ONLY:
            if order.filled:
                order.status = PARTIALLY_FILLED
            level = own.get(own_key)
            if level is None:  # a new level holding this order (no __init__ call)
                level = _new_level(Level)
                level.prev = level.next = order
                order.prev = order.next = level
                level.live = 1
                level.total = remaining
                level.lots_of = {origin: remaining}
                level.encoded = None
                own[own_key] = level
                log.extend((own, own_key, order_id, U_NEW_LEVEL))
            else:
                tail = level.prev
                order.prev = tail
                order.next = level
                tail.next = level.prev = order
                level.live += 1
                level.total += remaining
                level.encoded = None
                lots_of = level.lots_of
                lots_of[origin] = lots_of.get(origin, 0) + remaining
                log.extend((level, order, U_APPEND))
            return order
        order.status = CANCELLED
        if otype is _MARKET:
            order.reason = REASON_NO_LIQUIDITY
        elif otype is _FOK:
            order.reason = REASON_FOK_UNFILLABLE
        else:
            order.reason = REASON_IOC_REMAINDER
        log.extend((order_id, U_NEW_ORDER))
        return order

    def cancel(self, order_id: bytes, origin: bytes) -> str | None:
        """Cancel an open order of `origin`; returns None or a reject code, judged from
        the book's open orders alone (protocols/state_machine.md §4): `not_open` for an
        id that is not open here, whatever its past (closed, never placed, another
        market's), so the outcome does not depend on what a replica still remembers."""
        order = self.orders.get(order_id)
        if order is None or order.status not in OPEN_STATUSES:
            return CANCEL_NOT_OPEN
        if order.origin != origin:
            return CANCEL_NOT_OWNER
        if order.side is _BUY:
            tree, key = self.bids, -order.price
        else:
            tree, key = self.asks, order.price
        level = tree[key]
        self.log.extend((level, order, order.filled, U_UNLINK))
        # `_unlink`, inlined with `origin` already in hand: a cancel touches only the
        # order and its two neighbours (tests/test_book_bounds.py counts the accesses).
        prev, nxt = order.prev, order.next
        prev.next = nxt
        nxt.prev = prev
        level.live -= 1
        lots = order.remaining
        level.total -= lots
        level.encoded = None
        lots_of = level.lots_of
        left = lots_of[origin] - lots
        if left:
            lots_of[origin] = left
        else:
            del lots_of[origin]
        if level.next is level:
            del tree[key]  # the undo of its last order puts it back
        order.status = CANCELLED  # from RESTING or PARTIALLY_FILLED: both legal
        order.reason = REASON_CANCELLED
        return None

    # -- internals -----------------------------------------------------------------

    def _fok_refusal(self, order: Order, opposite: SortedDict, limit_key: int,
                     fills_left: int) -> str | None:
        """None if the FOK may execute (it will fill completely), else the reason it is
        cancelled; reads level totals only (the rules are in the module docstring)."""
        need = order.remaining
        origin = order.origin
        expire_maker = order.stp is _EXPIRE_MAKER
        levels_max = self._fok_levels_max
        makers = 0
        for walked, key in enumerate(opposite.islice(0, levels_max + 1)):
            if key > limit_key:
                break
            if walked == levels_max:
                return REASON_FOK_TOO_DEEP
            level = opposite[key]
            own = level.lots_of.get(origin, 0)
            if own and not expire_maker:
                break  # the FOK counts on no liquidity at or behind its own order
            available = level.total - own
            if available >= need:
                makers += min(level.live, need + own)
                return None if makers <= fills_left else REASON_MATCH_BUDGET
            need -= available
            makers += level.live
        return REASON_FOK_UNFILLABLE

    def _match(self, order: Order, opposite: SortedDict, limit_key: int, event_id: bytes,
               fills_left: int) -> int:
        """Take liquidity for `order`; returns the budget left. Leaves `order` cancelled
        if self-trade prevention expired it or the budget ran out while it crossed."""
        log = self.log
        trades = self.trades
        sublists = opposite._list._lists  # see place(): first key without a view object
        origin = order.origin
        taker_id = order.order_id
        side = order.side
        market = self.market
        need = order.remaining
        while need and opposite:
            key = sublists[0][0]
            if key > limit_key:
                break
            level = opposite[key]
            level.encoded = None  # (whatever this taker does to it)
            lots_of = level.lots_of
            maker = level.next
            while True:
                if not fills_left:
                    order.remaining = need
                    order.filled = order.qty - need
                    order.status = CANCELLED
                    order.reason = REASON_MATCH_BUDGET
                    return 0
                maker_origin = maker.origin
                if maker_origin == origin:
                    stp = order.stp
                    nxt = maker.next
                    if stp is not _EXPIRE_TAKER:
                        fills_left -= 1
                        log.extend((level, maker, maker.filled, U_UNLINK))
                        unlink(level, maker)
                        assert maker.status in MAY_BECOME_CANCELLED, maker
                        maker.status = CANCELLED
                        maker.reason = REASON_STP_MAKER
                        if nxt is level:
                            del opposite[key]
                    if stp is not _EXPIRE_MAKER:
                        order.remaining = need
                        order.filled = order.qty - need
                        order.status = CANCELLED
                        order.reason = REASON_STP_TAKER
                        return fills_left
                    if nxt is level:
                        break
                    maker = nxt
                    continue
                fills_left -= 1
                lots = maker.remaining
                if lots <= need:  # the maker fills completely and leaves its level
                    trades.append(_new_trade(Trade, (market, event_id, maker.order_id,
                                                     taker_id, maker_origin, origin,
                                                     maker.price, lots, side)))
                    need -= lots
                    nxt = maker.next
                    level.next = nxt
                    nxt.prev = level
                    log.extend((level, maker, maker.filled, U_UNLINK))
                    assert maker.status in MAY_BECOME_FILLED, maker
                    maker.status = FILLED
                    maker.filled += lots
                    maker.remaining = 0
                    level.live -= 1
                    level.total -= lots
                    left = lots_of[maker_origin] - lots
                    if left:
                        lots_of[maker_origin] = left
                    else:
                        del lots_of[maker_origin]
                    if nxt is level:
                        del opposite[key]
                        break
                    if not need:
                        break
                    maker = nxt
                else:  # the taker fills completely; the maker stays, partially filled
                    trades.append(_new_trade(Trade, (market, event_id, maker.order_id,
                                                     taker_id, maker_origin, origin,
                                                     maker.price, need, side)))
                    log.extend((level, maker, need, U_FILL))
                    assert maker.status in MAY_BECOME_PARTIALLY_FILLED, maker
                    maker.status = PARTIALLY_FILLED
                    maker.filled += need
                    maker.remaining = lots - need
                    maker.encoded = None
                    level.total -= need
                    lots_of[maker_origin] -= need
                    need = 0
                    break
        order.remaining = need
        order.filled = order.qty - need
        return fills_left
