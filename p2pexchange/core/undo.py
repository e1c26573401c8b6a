"""The undo log of an order book (book.py): marks, rollback to a mark, and settling.

Every mutation appends an undo record to `self.log` (a flat list, see
`U_NEW_ORDER`), so the replica can roll the book back to any earlier mark in
time proportional to what it undoes, not to the size of the book or of its
history. Records are applied in exact reverse order, which is what makes the
links sound: an order taken out of its level keeps its own `prev`/`next`, and
putting it back (`prev.next = next.prev = order`) is exact because everything
done after it has been undone first ("dancing links"); a level that emptied goes
back into its tree with the undo of its last order.

`UndoLog` is a part of `OrderBook`, kept apart because it is one concern: the book's
actions (place, cancel, matching) append the records, and only this part reads them.
It works on the book's trees, orders and trades.

Settling (`settle`) forgets the records and trades from before a mark that nothing
will roll back again (the replica's final entries), and with them the orders that left
the book in those steps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .events import Side
from .orders import OPEN_STATUSES, PARTIALLY_FILLED, RESTING, Order, Trade, unlink

if TYPE_CHECKING:
    from sortedcontainers import SortedDict

_BUY = Side.BUY

# The undo log is flat: a record is its fields pushed in order, then its kind, so that
# recording one allocates nothing the garbage collector must later scan (a temporary
# tuple passed to `extend` is freed at once). Rollback pops the kind, then the fields
# in reverse. An open order's status follows from its fill (resting, or partially
# filled) and its reason is empty, so records keep only what else changed.
U_NEW_ORDER = 0  # order_id: forget an order the step created that does not rest
U_APPEND = 1  # level, order: unlink and forget an order the step rested at the back
#               of an existing level
U_NEW_LEVEL = 2  # tree, key, order_id: delete the level the step created for the order
#                  it rested, and forget that order
U_FILL = 3  # level, order, fill: undo a maker's partial fill
U_UNLINK = 4  # level, order, filled: relink an open order that left its level (filled,
#               expired by STP or cancelled) and reopen it with `filled` lots filled; if
#               the level is empty, it left its tree with that order and goes back first
_RECORD_ITEMS = {U_NEW_ORDER: 2, U_APPEND: 3, U_NEW_LEVEL: 4, U_FILL: 4, U_UNLINK: 4}


class UndoLog:
    """The undo log of one `OrderBook`; see the module docstring."""

    bids: SortedDict
    asks: SortedDict
    orders: dict[bytes, Order]
    trades: list[Trade]
    log: list
    log_base: int
    trades_base: int

    def mark(self) -> tuple[int, int]:
        return (self.log_base + len(self.log), self.trades_base + len(self.trades))

    def trades_since(self, mark: tuple[int, int]) -> list[Trade]:
        """The trades made since `mark`."""
        return self.trades[mark[1] - self.trades_base:]

    def settle(self, mark: tuple[int, int]) -> list[Order]:
        """Forget the undo records and trades from before `mark` (nothing before it will
        be rolled back: the replica settles what is final, core/replica.py `compact`),
        and the orders that left the book in those steps; returns those orders, in the
        order they left. A cancel that names one of them is `not_open`, as it was before
        (state_machine.md §4: a cancel's outcome is read from the open orders alone)."""
        log_cut, trades_cut = mark[0] - self.log_base, mark[1] - self.trades_base
        assert 0 <= log_cut <= len(self.log) and 0 <= trades_cut <= len(self.trades), mark
        closed = self._forget_closed(log_cut)
        del self.log[:log_cut]
        del self.trades[:trades_cut]
        self.log_base, self.trades_base = mark
        return closed

    def _forget_closed(self, end: int) -> list[Order]:
        """Forget each order that left the book in `log[:end]` (undo records about to be
        forgotten: nothing will roll them back). An order leaves in the step of a
        `U_NEW_ORDER` record (it never rested) or of a `U_UNLINK` record (it left its
        level: filled, expired or cancelled), and only undoing that record could put it
        back; no later record names it. The records are read from the end, each ending
        with its kind: a look at each record, not at each item. Its `prev`/`next` (kept
        for its undo record) are cleared, so it holds nothing alive and no cycle; so are
        those of a level it left empty (an empty level links to itself): both are freed
        at once, not by a rare full pass of the garbage collector."""
        log, orders = self.log, self.orders
        closed = []
        i = end - 1
        while i >= 0:
            kind = log[i]
            if kind == U_NEW_ORDER:
                order = orders.pop(log[i - 1])
            elif kind == U_UNLINK:
                order = log[i - 2]
                del orders[order.order_id]
                level = log[i - 3]
                if not level.live:  # out of its tree (an empty level links to itself)
                    # If a record still held puts it back, relinking its last order
                    # sets both links again (undo writes a level's links, never reads).
                    level.prev = level.next = None
            else:
                i -= _RECORD_ITEMS[kind]
                continue
            i -= _RECORD_ITEMS[kind]
            assert order.status not in OPEN_STATUSES, order
            order.prev = order.next = None
            closed.append(order)
        closed.reverse()  # in the order they left
        return closed

    def rollback(self, mark: tuple[int, int]) -> None:
        """Undo every mutation since `mark`, newest first."""
        log_mark, trades_mark = mark[0] - self.log_base, mark[1] - self.trades_base
        assert log_mark >= 0 and trades_mark >= 0, "rolled back past what was settled"
        log = self.log
        pop = log.pop
        orders = self.orders
        while len(log) > log_mark:
            kind = pop()
            if kind == U_UNLINK:
                filled = pop()
                order = pop()
                level = pop()
                if not level.live:  # the order was its last: the level left its tree
                    if order.side is _BUY:
                        self.bids[-order.price] = level
                    else:
                        self.asks[order.price] = level
                order.filled = filled
                lots = order.remaining = order.qty - filled  # (as when it left: `encoded` holds)
                order.status = PARTIALLY_FILLED if filled else RESTING
                order.reason = ""
                order.prev.next = order
                order.next.prev = order
                level.live += 1
                level.total += lots
                level.encoded = None
                lots_of = level.lots_of
                lots_of[order.origin] = lots_of.get(order.origin, 0) + lots
            elif kind == U_FILL:
                fill = pop()
                order = pop()
                level = pop()
                order.filled -= fill
                order.remaining += fill
                order.encoded = None
                order.status = PARTIALLY_FILLED if order.filled else RESTING
                level.total += fill
                level.encoded = None
                level.lots_of[order.origin] += fill
            elif kind == U_APPEND:
                order = pop()
                unlink(pop(), order)
                del orders[order.order_id]
            elif kind == U_NEW_LEVEL:
                order = orders.pop(pop())
                key = pop()
                level = pop().pop(key)
                # The level and its one order link to each other: a cycle, which only a
                # full pass of the garbage collector would free (minutes under load).
                level.prev = level.next = order.prev = order.next = None
            elif kind == U_NEW_ORDER:
                del orders[pop()]
            else:
                raise AssertionError(f"unknown undo record kind {kind!r}")
        del self.trades[trades_mark:]
