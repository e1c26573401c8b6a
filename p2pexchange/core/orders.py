"""Orders, their statuses and reasons, price levels and trades: the matching engine's data.

An `Order` is one order's state; its `status` moves only along `LEGAL_TRANSITIONS`
once it rests (a new order may take any status on its first step). A `Level` is the
sentinel of one price level's circular list of resting orders, oldest first, with
the level's totals. A `Trade` is one fill, always at the maker's price. Reasons and
cancel codes are stable strings, recorded identically on every replica. The engine
that mutates these is `book.py` (and its undo log, `undo.py`); `unlink` takes an order
out of its level, for both.
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import IntEnum
from typing import NamedTuple

from .events import STP, OrderType, Side


class OrderStatus(IntEnum):
    RESTING = 0
    PARTIALLY_FILLED = 1  # resting, with some of it filled
    FILLED = 2
    CANCELLED = 3  # by its origin, or the unfilled rest of IOC/FOK/market/STP/budget
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
# The same table by target status, for the makers' checks on the hot path.
_LEGAL_FROM = {to: frozenset(f for f, t in LEGAL_TRANSITIONS if t is to) for to in OrderStatus}
MAY_BECOME_FILLED, MAY_BECOME_PARTIALLY_FILLED, MAY_BECOME_CANCELLED = (
    _LEGAL_FROM[FILLED], _LEGAL_FROM[PARTIALLY_FILLED], _LEGAL_FROM[CANCELLED])

# Reasons recorded with cancelled or rejected orders and cancel actions.
REASON_CANCELLED = "cancelled_by_origin"
REASON_IOC_REMAINDER = "ioc_remainder"
REASON_FOK_UNFILLABLE = "fok_unfillable"
REASON_FOK_TOO_DEEP = "fok_too_deep"
REASON_MATCH_BUDGET = "match_budget"
REASON_NO_LIQUIDITY = "market_no_liquidity"
REASON_POST_ONLY = "post_only_would_take"
REASON_STP_TAKER = "stp_expired_taker"
REASON_STP_MAKER = "stp_expired_maker"
REASON_DUPLICATE_ID = "duplicate_order_id"
CANCEL_NOT_OWNER = "not_owner"
CANCEL_NOT_OPEN = "not_open"


class Order:
    """One order's state. `remaining` is always qty - filled; it rests only while open.

    `prev`/`next` link it into its level while it rests (see `Level`); once it leaves,
    they keep pointing where it was, which is what its undo record relies on.
    """

    __slots__ = ("order_id", "origin", "side", "type", "price", "qty", "filled", "remaining",
                 "status", "reason", "stp", "market", "prev", "next", "encoded")

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
        self.encoded: bytes | None = None  # its entry in a checkpoint, until `remaining` changes

    def as_dict(self) -> dict:
        return {"order_id": self.order_id.hex(), "origin": self.origin.hex(),
                "market": self.market, "side": self.side.name.lower(),
                "type": self.type.name.lower(), "price": self.price, "qty": self.qty,
                "filled": self.filled, "status": self.status.name.lower(),
                "reason": self.reason}

    def __repr__(self) -> str:
        return (f"Order({self.order_id.hex()[:12]}, {self.side.name} {self.type.name} "
                f"{self.qty}@{self.price}, filled={self.filled}, {self.status.name})")


class Level:
    """One price level: the sentinel of a circular list of its resting orders, oldest
    first (`next` is the head, `prev` the tail), and its totals over them: `live`
    orders, `total` remaining lots, and remaining lots per origin (`lots_of`, without
    zero entries), and its `encoded` state for checkpoints, or None since it changed
    (`OrderBook.encoded_levels`). Never empty while it is in a tree. `OrderBook.place` builds one
    around the order that opens it."""

    __slots__ = ("prev", "next", "live", "total", "lots_of", "encoded")

    def __iter__(self) -> Iterator[Order]:
        node = self.next
        while node is not self:
            yield node
            node = node.next


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


def unlink(level: Level, order: Order) -> None:
    """Take `order` out of `level` and out of its totals (its state is the caller's)."""
    prev, nxt = order.prev, order.next
    prev.next = nxt
    nxt.prev = prev
    level.live -= 1
    lots = order.remaining
    level.total -= lots
    level.encoded = None
    lots_of = level.lots_of
    left = lots_of[order.origin] - lots
    if left:
        lots_of[order.origin] = left
    else:
        del lots_of[order.origin]
