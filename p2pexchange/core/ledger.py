"""The ledger: delivered events applied in the total order, the books they built, the digest.

The replica (replica.py) decides what is delivered; the ledger only applies it. Its
state is a function of the set of events it was given, whatever order they came in:

- Order. Entries are kept in ascending `Event.key`. A batch whose earliest event
  sorts before applied entries undoes those entries once (the books keep undo
  records, book.py), then applies the batch merged with what was undone. The cost
  is the engine's per-event bound times the events undone plus the batch, never
  the size of the book or of the history.
- Digest. Each entry extends a running SHA-256 over its event id and the trades it
  produced, so two ledgers given the same events hold the same digest.
- Membership events (market "") touch no book: their effect is decided at delivery
  (finality.py); they are recorded here in the order and the digest all the same.
- Void events. Once a member is removed (finality.py), its events beyond the decided
  cut stay in the order but count as empty: `void` re-applies them so, from the
  earliest of them (none is final anywhere: protocols/finality.md, R1).

A failure while applying an event that passed every check is our bug and is never
caught: the books would be half-changed.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_left, bisect_right
from collections.abc import Mapping

from .book import OrderBook
from .clock import OrderKey
from .events import MEMBERSHIP_MARKET, Cancel, Event, Join, Leave, Place, Vote
from .market import Market
from .orders import Trade

GENESIS_DIGEST = hashlib.sha256(b"p2pexchange/digest/v1").digest()


class _Applied:
    """One event in the applied sequence, with what is needed to undo it."""

    __slots__ = ("book", "digest", "event", "key", "mark", "outcomes", "trades", "trades_upto",
                 "void")

    def __init__(self, key: OrderKey, event: Event, book: OrderBook | None) -> None:
        self.key = key
        self.event = event
        self.book = book
        self.mark: tuple[int, int] = (0, 0)
        self.digest = b""
        self.trades: list[Trade] = []
        self.trades_upto = 0  # trades of the applied sequence up to and including this
        self.outcomes: list[str] = []  # per action: order status name or cancel result
        self.void = False  # its origin was removed before it: applied as empty


class Ledger:
    """The applied sequence of one replica; see the module docstring."""

    def __init__(self, markets: Mapping[str, Market]) -> None:
        self.books = {name: OrderBook(name) for name in sorted(markets)}
        self._applied: list[_Applied] = []
        self._keys: list[OrderKey] = []
        self._index: dict[bytes, _Applied] = {}  # event id -> applied entry
        self.trade_count = 0
        self.cuts: dict[bytes, int] = {}  # removed origin -> its last seq that counts

    def __len__(self) -> int:
        return len(self._applied)

    @property
    def digest(self) -> bytes:
        return self._applied[-1].digest if self._applied else GENESIS_DIGEST

    def trades(self) -> list[Trade]:
        return [t for entry in self._applied for t in entry.trades]

    def trades_of(self, event_id: bytes) -> list[Trade]:
        entry = self._index.get(event_id)
        return list(entry.trades) if entry else []

    def outcomes_of(self, event_id: bytes) -> list[str]:
        entry = self._index.get(event_id)
        return list(entry.outcomes) if entry else []

    def event_ids(self) -> list[bytes]:
        return [entry.event.id for entry in self._applied]

    def count_upto(self, key: OrderKey | None) -> int:
        """How many entries have a key at most `key` (they are the first ones)."""
        return 0 if key is None else bisect_right(self._keys, key)

    def trades_in_first(self, count: int) -> int:
        """Trades produced by the first `count` entries."""
        return self._applied[count - 1].trades_upto if count else 0

    def with_actions(self, start: int, backwards: bool = False) -> Event | None:
        """The first (or last) event with actions from position `start` on."""
        applied = self._applied
        positions = range(len(applied) - 1, start - 1, -1) if backwards else \
            range(start, len(applied))
        for i in positions:
            if applied[i].event.actions and not applied[i].void:
                return applied[i].event
        return None

    def is_void(self, event: Event) -> bool:
        """Whether `event` counts as empty: its origin was removed at an earlier seq."""
        return event.seq > self.cuts.get(event.origin, event.seq)

    def void(self, origin: bytes, cut: int) -> int:
        """From now on `origin`'s events beyond seq `cut` count as empty; those applied
        are undone and applied again so. Returns how many entries were undone."""
        assert origin not in self.cuts, "a member is removed once"
        self.cuts[origin] = cut
        applied = self._applied
        first = next((i for i, entry in enumerate(applied)
                      if entry.event.origin == origin and entry.event.seq > cut), None)
        if first is None:
            return 0
        undone = self._undo_to(first)
        for entry in reversed(undone):
            self._apply(entry.event)
        return len(undone)

    def apply(self, events: list[Event]) -> tuple[int, list[list[Trade]]]:
        """Apply newly delivered `events`, sorted by key: undo once, down to the earliest
        of them, then apply them merged with what was undone. Returns how many entries
        were undone (and applied again) and the trades of each of `events`."""
        if not events:
            return 0, []
        undone = self._undo_to(bisect_left(self._keys, events[0].key))
        redo = [entry.event for entry in reversed(undone)]  # ascending keys
        trades: list[list[Trade]] = []
        i = j = 0
        while i < len(events) or j < len(redo):
            if j == len(redo) or (i < len(events) and events[i].key < redo[j].key):
                trades.append(self._apply(events[i]))
                i += 1
            else:
                self._apply(redo[j])
                j += 1
        return len(undone), trades

    def _undo_to(self, position: int) -> list[_Applied]:
        """Undo applied events from the end down to `position`; newest first."""
        undone = []
        applied = self._applied
        while len(applied) > position:
            entry = applied.pop()
            self._keys.pop()
            del self._index[entry.event.id]
            if entry.book is not None:
                entry.book.rollback(entry.mark)
            self.trade_count -= len(entry.trades)
            undone.append(entry)
        return undone

    def _apply(self, event: Event) -> list[Trade]:
        if event.market == MEMBERSHIP_MARKET or (self.cuts and self.is_void(event)):
            return self._apply_membership(event)
        book = self.books[event.market]
        entry = _Applied(event.key, event, book)
        entry.mark = mark = book.mark()
        origin = event.origin
        event_id = event.id
        outcomes = entry.outcomes
        budget = book.event_budget()  # bounds the matching work of the whole event
        for index, action in enumerate(event.actions):
            if action.__class__ is Place:
                order = book.place(event_id + index.to_bytes(2, "big"), origin, action, event_id,
                                   budget)
                outcomes.append(order.status.name.lower())
            else:
                assert isinstance(action, Cancel)
                code = book.cancel(action.order_id, origin)
                outcomes.append(code or "cancelled")
        trades = book.trades[mark[1]:]
        entry.trades = trades
        self.trade_count += len(trades)
        self._append(entry)
        return trades

    def _apply_membership(self, event: Event) -> list[Trade]:
        entry = _Applied(event.key, event, None)
        if self.cuts and self.is_void(event):
            entry.void = True
            entry.outcomes = ["void"] * len(event.actions)
            self._append(entry)
            return []
        seen = set()
        for action in event.actions:
            if action.__class__ is Leave:
                entry.outcomes.append("left")
                continue
            if action.__class__ is Vote:
                entry.outcomes.append("voted" if action.target else "refused")
                continue
            assert isinstance(action, Join)
            entry.outcomes.append("joined" if action.member not in seen else "duplicate")
            seen.add(action.member)
        self._append(entry)
        return []

    def _append(self, entry: _Applied) -> None:
        applied = self._applied
        entry.trades_upto = (applied[-1].trades_upto if applied else 0) + len(entry.trades)
        h = hashlib.sha256(self.digest)
        h.update(entry.event.id)
        for t in entry.trades:
            h.update(t.maker_order)
            h.update(t.taker_order)
            h.update(t.price.to_bytes(8, "big"))
            h.update(t.qty.to_bytes(8, "big"))
        entry.digest = h.digest()
        applied.append(entry)
        self._keys.append(entry.key)
        self._index[entry.event.id] = entry
