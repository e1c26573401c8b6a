"""The matching engine: one price-time priority order book per market.

Theory of operation: a book holds two trees of price levels (`SortedDict`),
each level a FIFO `deque` of resting orders. Both trees are keyed so that the
best level comes first: asks by price, bids by minus price. A taker walks the
opposite tree from its first key while that key is within its limit key (its
price for a buy, minus its price for a sell, unbounded for a market order).
"Time" in price-time priority is the position in the replica's total order:
the book itself never reads a clock, it only sees actions in the order the
replica applies them.

Every mutation appends an undo record to `self.log`, so the replica can roll
the book back to any earlier mark in time proportional to what it undoes, not
to the size of the book or of its history. Undo records are applied in exact
reverse order, which is what makes positional records (index in a level)
sound.

Outcomes are values, not exceptions: a place returns its `Order` with a final
status for this step (resting, partially filled, filled, cancelled, rejected)
and a reason; a cancel returns None or a reject code. Only programmer errors
are asserts. Complexity: O(log L) to add a level (L levels), O(1) per fill,
O(n) in the level's length for a cancel; FOK pre-checks walk what they would
take.
"""

from __future__ import annotations

from collections import deque
from enum import IntEnum
from typing import NamedTuple

from sortedcontainers import SortedDict

from .events import STP, OrderType, Place, Side

_BUY = Side.BUY
_LIMIT, _IOC, _FOK, _POST_ONLY, _MARKET = (OrderType.LIMIT, OrderType.IOC, OrderType.FOK,
                                           OrderType.POST_ONLY, OrderType.MARKET)
_NO_LIMIT = 1 << 62  # beyond any price key: a market order walks the whole book


class OrderStatus(IntEnum):
    RESTING = 0
    PARTIALLY_FILLED = 1  # resting, with some of it filled
    FILLED = 2
    CANCELLED = 3  # by its origin, or the unfilled rest of IOC/FOK/market/STP
    REJECTED = 4


RESTING, PARTIALLY_FILLED, FILLED, CANCELLED, REJECTED = (
    OrderStatus.RESTING, OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED,
    OrderStatus.CANCELLED, OrderStatus.REJECTED)
OPEN_STATUSES = frozenset((RESTING, PARTIALLY_FILLED))

# The legal status transitions of an order already in the book. A new order may take
# any status on its first step. Checked on every maker transition.
LEGAL_TRANSITIONS = frozenset({
    (RESTING, PARTIALLY_FILLED), (RESTING, FILLED), (RESTING, CANCELLED),
    (PARTIALLY_FILLED, PARTIALLY_FILLED), (PARTIALLY_FILLED, FILLED),
    (PARTIALLY_FILLED, CANCELLED),
})

# Reasons recorded with cancelled or rejected orders and cancel actions.
REASON_CANCELLED = "cancelled_by_origin"
REASON_IOC_REMAINDER = "ioc_remainder"
REASON_FOK_UNFILLABLE = "fok_unfillable"
REASON_NO_LIQUIDITY = "market_no_liquidity"
REASON_POST_ONLY = "post_only_would_take"
REASON_STP_TAKER = "stp_expired_taker"
REASON_STP_MAKER = "stp_expired_maker"
REASON_DUPLICATE_ID = "duplicate_order_id"
CANCEL_UNKNOWN = "unknown_order"
CANCEL_NOT_OWNER = "not_owner"
CANCEL_NOT_OPEN = "not_open"


class Order:
    """One order's state. `remaining` is always qty - filled; it rests only while open."""

    __slots__ = ("order_id", "origin", "side", "type", "price", "qty", "filled", "remaining",
                 "status", "reason", "stp", "market")

    def __init__(self, order_id: bytes, origin: bytes, market: str, side: Side,
                 otype: OrderType, price: int, qty: int, stp: STP) -> None:
        self.order_id = order_id
        self.origin = origin
        self.market = market
        self.side = side
        self.type = otype
        self.price = price
        self.qty = qty
        self.filled = 0
        self.remaining = qty
        self.status = RESTING
        self.reason = ""
        self.stp = stp

    def as_dict(self) -> dict:
        return {"order_id": self.order_id.hex(), "origin": self.origin.hex(),
                "market": self.market, "side": self.side.name.lower(),
                "type": self.type.name.lower(), "price": self.price, "qty": self.qty,
                "filled": self.filled, "status": self.status.name.lower(),
                "reason": self.reason}

    def __repr__(self) -> str:
        return (f"Order({self.order_id.hex()[:12]}, {self.side.name} {self.type.name} "
                f"{self.qty}@{self.price}, filled={self.filled}, {self.status.name})")


class Trade(NamedTuple):
    market: str
    event_id: bytes  # the taker's event
    maker_order: bytes
    taker_order: bytes
    maker_origin: bytes
    taker_origin: bytes
    price: int  # ticks: always the maker's price
    qty: int  # lots
    taker_side: Side

    def as_dict(self) -> dict:
        return {"market": self.market, "event_id": self.event_id.hex(),
                "maker_order": self.maker_order.hex(), "taker_order": self.taker_order.hex(),
                "maker_origin": self.maker_origin.hex(), "taker_origin": self.taker_origin.hex(),
                "price": self.price, "qty": self.qty, "taker_side": self.taker_side.name.lower()}


_new_trade = tuple.__new__  # builds a Trade without the named tuple's Python-level __new__

# Undo record kinds. Each record restores exactly what one mutation changed.
_U_NEW_ORDER = 0  # (kind, order_id): forget an order the step created
_U_APPEND = 1  # (kind, tree, key): pop the order appended at the back of an existing level
_U_NEW_LEVEL = 2  # (kind, tree, key): delete a level created holding one order
_U_MAKER = 3  # (kind, order, filled, status, reason): restore a maker's state
_U_POP = 4  # (kind, tree, key, order, filled, status, reason): put back a maker taken off the front
_U_REMOVE = 5  # (kind, tree, key, index, order, status, reason): put back a cancelled order


class OrderBook:
    """Price-time priority book for one market; see the module docstring."""

    def __init__(self, market: str) -> None:
        self.market = market
        self.bids: SortedDict = SortedDict()  # key: -price
        self.asks: SortedDict = SortedDict()  # key: price
        self.orders: dict[bytes, Order] = {}
        self.trades: list[Trade] = []
        self.log: list[tuple] = []

    # -- queries -----------------------------------------------------------------

    def best_bid(self) -> int | None:
        return -self.bids.keys()[0] if self.bids else None

    def best_ask(self) -> int | None:
        return self.asks.keys()[0] if self.asks else None

    def depth(self, levels: int = 10) -> dict[str, list[tuple[int, int]]]:
        def side(tree: SortedDict, sign: int) -> list[tuple[int, int]]:
            out = []
            for key in tree.islice(0, levels):
                out.append((sign * key, sum(o.remaining for o in tree[key])))
            return out
        return {"bids": side(self.bids, -1), "asks": side(self.asks, 1)}

    def resting_count(self) -> int:
        return sum(len(level) for tree in (self.bids, self.asks) for level in tree.values())

    def resting(self) -> list[Order]:
        """Resting orders, best first, in priority order within a level."""
        return [o for tree in (self.bids, self.asks) for level in tree.values() for o in level]

    def snapshot(self) -> tuple:
        """A canonical, comparable picture of the book's resting state."""
        return tuple(
            tuple((key, tuple((o.order_id, o.remaining) for o in level))
                  for key, level in tree.items())
            for tree in (self.bids, self.asks))

    # -- actions -------------------------------------------------------------------

    def place(self, order_id: bytes, origin: bytes, place: Place, event_id: bytes) -> Order:
        """Apply one order; returns it with its status after this step."""
        side, otype, price, qty, stp = place
        order = Order(order_id, origin, self.market, side, otype, price, qty, stp)
        log = self.log
        orders = self.orders
        if order_id in orders:
            order.status = REJECTED
            order.reason = REASON_DUPLICATE_ID
            return order
        orders[order_id] = order
        log.append((_U_NEW_ORDER, order_id))
        if side is _BUY:
            opposite, own, limit_key, own_key = self.asks, self.bids, price, -price
        else:
            opposite, own, limit_key, own_key = self.bids, self.asks, -price, price
        if otype is _MARKET:
            limit_key = _NO_LIMIT
        # The first key of a SortedDict, read from its SortedList's first sublist: the
        # public `keys()[0]` builds a view object on every call, on the hottest path.
        crosses = bool(opposite) and opposite._list._lists[0][0] <= limit_key
        if crosses:
            if otype is _POST_ONLY:
                order.status = REJECTED
                order.reason = REASON_POST_ONLY
                return order
            if otype is _FOK and not self._fok_fillable(order, opposite, limit_key):
                order.status = CANCELLED
                order.reason = REASON_FOK_UNFILLABLE
                return order
            self._match(order, opposite, limit_key, event_id)
            if order.status is CANCELLED:  # expired by self-trade prevention
                return order
        if order.remaining == 0:
            order.status = FILLED
            return order
        if otype is _LIMIT or otype is _POST_ONLY:
            order.status = PARTIALLY_FILLED if order.filled else RESTING
            level = own.get(own_key)
            if level is None:
                own[own_key] = deque((order,))
                log.append((_U_NEW_LEVEL, own, own_key))
            else:
                level.append(order)
                log.append((_U_APPEND, own, own_key))
            return order
        order.status = CANCELLED
        if otype is _MARKET:
            order.reason = REASON_NO_LIQUIDITY
        elif otype is _FOK:
            order.reason = REASON_FOK_UNFILLABLE
        else:
            order.reason = REASON_IOC_REMAINDER
        return order

    def cancel(self, order_id: bytes, origin: bytes) -> str | None:
        """Cancel an open order of `origin`; returns None or a reject code."""
        order = self.orders.get(order_id)
        if order is None:
            return CANCEL_UNKNOWN
        if order.origin != origin:
            return CANCEL_NOT_OWNER
        if order.status not in OPEN_STATUSES:
            return CANCEL_NOT_OPEN
        if order.side is _BUY:
            tree, key = self.bids, -order.price
        else:
            tree, key = self.asks, order.price
        level = tree[key]
        index = level.index(order)
        del level[index]
        if not level:
            del tree[key]
        self.log.append((_U_REMOVE, tree, key, index, order, order.status, order.reason))
        order.status = CANCELLED  # from RESTING or PARTIALLY_FILLED: both legal
        order.reason = REASON_CANCELLED
        return None

    # -- rollback ------------------------------------------------------------------

    def mark(self) -> tuple[int, int]:
        return (len(self.log), len(self.trades))

    def rollback(self, mark: tuple[int, int]) -> None:
        """Undo every mutation since `mark`, newest first."""
        log_mark, trades_mark = mark
        log = self.log
        orders = self.orders
        while len(log) > log_mark:
            rec = log.pop()
            kind = rec[0]
            if kind == _U_MAKER:
                _, order, filled, status, reason = rec
                order.filled = filled
                order.remaining = order.qty - filled
                order.status = status
                order.reason = reason
            elif kind == _U_POP or kind == _U_REMOVE:
                if kind == _U_POP:
                    _, tree, key, order, filled, status, reason = rec
                    index = 0
                else:
                    _, tree, key, index, order, status, reason = rec
                    filled = order.filled
                order.filled = filled
                order.remaining = order.qty - filled
                order.status = status
                order.reason = reason
                level = tree.get(key)
                if level is None:
                    tree[key] = level = deque()
                level.insert(index, order)
            elif kind == _U_APPEND:
                rec[1][rec[2]].pop()
            elif kind == _U_NEW_LEVEL:
                del rec[1][rec[2]]
            elif kind == _U_NEW_ORDER:
                del orders[rec[1]]
            else:
                raise AssertionError(f"unknown undo record {rec!r}")
        del self.trades[trades_mark:]

    # -- internals -----------------------------------------------------------------

    def _fok_fillable(self, order: Order, opposite: SortedDict, limit_key: int) -> bool:
        """Would `order` fill completely, given self-trade prevention? Walks only what it takes."""
        need = order.remaining
        origin = order.origin
        expire_maker_only = order.stp is STP.EXPIRE_MAKER
        for key in opposite.keys():
            if key > limit_key:
                return False
            for maker in opposite[key]:
                if maker.origin == origin:
                    if expire_maker_only:
                        continue
                    return False  # the taker would be expired here
                need -= maker.remaining
                if need <= 0:
                    return True
        return False

    def _match(self, order: Order, opposite: SortedDict, limit_key: int, event_id: bytes) -> None:
        log = self.log
        trades = self.trades
        sublists = opposite._list._lists  # see place(): first key without a view object
        origin = order.origin
        taker_id = order.order_id
        side = order.side
        market = self.market
        while order.remaining and opposite:
            key = sublists[0][0]
            if key > limit_key:
                break
            level = opposite[key]
            while level and order.remaining:
                maker = level[0]
                if maker.origin == origin:
                    stp = order.stp
                    if stp is not STP.EXPIRE_TAKER:
                        level.popleft()
                        log.append((_U_POP, opposite, key, maker, maker.filled, maker.status,
                                    maker.reason))
                        assert (maker.status, CANCELLED) in LEGAL_TRANSITIONS, maker
                        maker.status = CANCELLED
                        maker.reason = REASON_STP_MAKER
                    if stp is not STP.EXPIRE_MAKER:
                        order.status = CANCELLED
                        order.reason = REASON_STP_TAKER
                        if not level:
                            del opposite[key]
                        return
                    continue
                fill = maker.remaining if maker.remaining < order.remaining else order.remaining
                trades.append(_new_trade(Trade, (market, event_id, maker.order_id, taker_id,
                                                 maker.origin, origin, maker.price, fill, side)))
                order.filled += fill
                order.remaining -= fill
                if fill == maker.remaining:
                    level.popleft()
                    log.append((_U_POP, opposite, key, maker, maker.filled, maker.status,
                                maker.reason))
                    assert (maker.status, FILLED) in LEGAL_TRANSITIONS, maker
                    maker.status = FILLED
                    maker.filled += fill
                    maker.remaining = 0
                else:
                    log.append((_U_MAKER, maker, maker.filled, maker.status, maker.reason))
                    assert (maker.status, PARTIALLY_FILLED) in LEGAL_TRANSITIONS, maker
                    maker.status = PARTIALLY_FILLED
                    maker.filled += fill
                    maker.remaining -= fill
            if not level:
                del opposite[key]

    def check_invariants(self) -> None:
        """Assert the book's internal invariants; for tests, after every step."""
        best_bid, best_ask = self.best_bid(), self.best_ask()
        assert best_bid is None or best_ask is None or best_bid < best_ask, "book is crossed"
        on_book = set()
        for tree, sign in ((self.bids, -1), (self.asks, 1)):
            for key, level in tree.items():
                assert level, f"empty level {key}"
                for o in level:
                    assert o.status in OPEN_STATUSES, o
                    assert sign * key == o.price, o
                    assert (o.side is _BUY) == (sign == -1), o
                    assert 0 < o.remaining == o.qty - o.filled, o
                    assert o.order_id not in on_book, o
                    on_book.add(o.order_id)
        for oid, o in self.orders.items():
            assert (o.status in OPEN_STATUSES) == (oid in on_book), o
            assert o.filled + o.remaining == o.qty and o.filled >= 0, o
            if o.status is FILLED:
                assert o.remaining == 0, o
