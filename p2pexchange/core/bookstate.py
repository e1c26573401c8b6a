"""An order book's resting state as a whole: the views a checkpoint, a test or a
comparison reads (`snapshot`, `state`, `encoded_levels`), putting a checkpoint's state
back into an empty book (`restore`), and the invariant check the tests run after every
step (`check_invariants`).

`BookState` is a part of `OrderBook` (core/book.py), kept apart because it only reads
the levels, or fills an empty book, and never matches: the matching engine and its undo
records are book.py's. Kept encodings: a level keeps its canonical CBOR
(`Level.encoded`) and a resting order its own (`Order.encoded`) until they change;
book.py and undo.py clear them wherever a level or an order's remaining lots change,
and `check_invariants` finds one a change did not clear.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .cbor import canonical, head
from .events import STP, OrderType, Side
from .orders import FILLED, OPEN_STATUSES, PARTIALLY_FILLED, RESTING, Level, Order

if TYPE_CHECKING:
    from sortedcontainers import SortedDict

_BUY = Side.BUY
_new_level = object.__new__  # a Level's attributes are set where it opens
_LEVEL_HEAD = head(4, 2)  # [price, orders]


def _level_state(key: int, level: Level) -> list:
    return [abs(key), [_order_state(o) for o in level]]


def _order_state(o: Order) -> list:
    return [o.order_id, o.origin, int(o.side), int(o.type), o.qty, o.remaining, int(o.stp)]


def _encoded_level(key: int, level: Level) -> bytes:
    """`canonical(_level_state(key, level))`, from each order's kept encoding (made once
    per order and `remaining`: a resting order changes in nothing else)."""
    parts = [_LEVEL_HEAD, canonical(abs(key)), head(4, level.live)]
    for o in level:
        encoded = o.encoded
        if encoded is None:
            encoded = o.encoded = canonical(_order_state(o))
        parts.append(encoded)
    return b"".join(parts)


class BookState:
    """The whole resting state of one book; see the module docstring."""

    market: str
    bids: SortedDict  # key: -price -> Level
    asks: SortedDict  # key: price -> Level
    orders: dict[bytes, Order]
    log: list

    if TYPE_CHECKING:  # the book's own (core/book.py)
        def best_bid(self) -> int | None: ...
        def best_ask(self) -> int | None: ...

    def snapshot(self) -> tuple:
        """A canonical, comparable picture of the book's resting state."""
        return tuple(
            tuple((key, tuple((o.order_id, o.remaining) for o in level))
                  for key, level in tree.items())
            for tree in (self.bids, self.asks))

    def state(self) -> list:
        """The resting state in full, for a checkpoint (core/checkpoint.py): bids best
        first, then asks, each level as [price, its orders in priority order], each order
        as [id, origin, side, type, qty, remaining, stp], all integers and bytes."""
        return [[_level_state(key, level) for key, level in tree.items()]
                for tree in (self.bids, self.asks)]

    def encoded_levels(self) -> list[list[bytes]]:
        """`state()` in canonical CBOR level by level: per side, best first, each level's
        `[price, orders]` encoded. A level keeps its encoding until it changes (every
        change to a level or to the remaining lots of one of its orders clears it), so
        a checkpoint encodes again only the levels that changed since the previous one:
        under load, most resting orders sit in levels away from the price."""
        sides = []
        for tree in (self.bids, self.asks):
            side = []
            for key, level in tree.items():
                encoded = level.encoded
                if encoded is None:
                    encoded = level.encoded = _encoded_level(key, level)
                side.append(encoded)
            sides.append(side)
        return sides

    def restore(self, state: list) -> None:
        """Rest the orders of a checkpoint's `state()` of this market in an empty book,
        in their priority order, without undo records: what a replica started from a
        checkpoint holds (`Replica.install`). The state was checked by the caller
        (core/checkpoint.py `decode_checkpoint`)."""
        assert not self.orders and not self.log, "restore into an empty book"
        for tree, sign, side in ((self.bids, -1, Side.BUY), (self.asks, 1, Side.SELL)):
            for price, orders in state[0 if side is _BUY else 1]:
                level = _new_level(Level)
                level.prev = level.next = level
                level.live, level.total, level.lots_of, level.encoded = 0, 0, {}, None
                for oid, origin, _, otype, qty, remaining, stp in orders:
                    order = Order(oid, origin, self.market, side, OrderType(otype), price,
                                  qty, STP(stp))
                    order.remaining, order.filled = remaining, qty - remaining
                    if order.filled:
                        order.status = PARTIALLY_FILLED
                    tail = level.prev
                    order.prev, order.next = tail, level
                    tail.next = level.prev = order
                    level.live += 1
                    level.total += remaining
                    level.lots_of[origin] = level.lots_of.get(origin, 0) + remaining
                    self.orders[oid] = order
                tree[sign * price] = level

    def check_invariants(self) -> None:
        """Assert the book's internal invariants; for tests, after every step."""
        best_bid, best_ask = self.best_bid(), self.best_ask()
        assert best_bid is None or best_ask is None or best_bid < best_ask, "book is crossed"
        on_book = set()
        for tree, sign in ((self.bids, -1), (self.asks, 1)):
            for key, level in tree.items():
                assert level.next is not level, f"empty level {key}"
                live = total = 0
                lots_of: dict[bytes, int] = {}
                node = level
                while node.next is not level:
                    assert node.next.prev is node, f"broken links in level {key}"
                    node = o = node.next
                    # What the undo records rely on: an open order's status and reason
                    # follow from its fill.
                    assert o.status is (PARTIALLY_FILLED if o.filled else RESTING), o
                    assert o.reason == "", o
                    assert sign * key == o.price, o
                    assert (o.side is _BUY) == (sign == -1), o
                    assert 0 < o.remaining == o.qty - o.filled, o
                    assert o.order_id not in on_book, o
                    on_book.add(o.order_id)
                    live += 1
                    total += o.remaining
                    lots_of[o.origin] = lots_of.get(o.origin, 0) + o.remaining
                assert level.prev is node, f"broken tail in level {key}"
                assert (level.live, level.total, level.lots_of) == (live, total, lots_of), key
                assert level.encoded in (None, canonical(_level_state(key, level))), \
                    f"level {key}: a kept encoding that a change did not clear"
                assert all(o.encoded in (None, canonical(_order_state(o))) for o in level), \
                    f"level {key}: an order's kept encoding that a fill did not clear"
        for oid, o in self.orders.items():
            assert (o.status in OPEN_STATUSES) == (oid in on_book), o
            assert o.filled + o.remaining == o.qty and o.filled >= 0, o
            if o.status is FILLED:
                assert o.remaining == 0, o
