"""The ledger: delivered events applied in the total order, the books they built, the digest.

The replica (replica.py) decides what is delivered; the ledger only applies it. Its
state is a function of the set of events it was given, whatever order they came in:

- Order. Entries are kept in ascending `Event.key`. A batch whose earliest event
  sorts before applied entries undoes those entries once (the books keep undo
  records, book.py), then applies the batch merged with what was undone. The cost
  is the engine's per-event bound times the events undone plus the batch, never
  the size of the book or of the history.
- Digest. Each entry that acts (it has actions and is not void) extends a running
  SHA-256 over its event id and the trades it produced, so two ledgers given the same
  events hold the same digest. An empty or void entry leaves the digest as it was: it
  changes no book, so where it sorts changes nothing either (protocols/state_machine.md,
  section 7), and one that sorts among final entries costs no re-chaining.
- Membership events (market "") touch no book: their effect is decided at delivery
  (finality.py); they are recorded here in the order all the same, and those with
  actions (joins, a leave, a vote) in the digest.
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
from .events import (
    MEMBERSHIP_MARKET,
    Cancel,
    Event,
    Join,
    Leave,
    Place,
    Vote,
)
from .market import Market
from .orders import Order, OrderStatus, Trade
from .params import CHECKPOINT_ACTIONS, CHECKPOINT_EVERY
from .settled import (
    R_ACTS,
    R_COUNT,
    R_FIRST,
    R_MARKET,
    R_ORIGIN,
    R_OUTCOMES,
    R_PLACES,
    packed_trade,
    settled_record,
    unpacked_trades,
)

GENESIS_DIGEST = hashlib.sha256(b"p2pexchange/digest/v2").digest()


class _Applied:
    """One event in the applied sequence that is not settled, with what is needed to
    undo it. A settled one (`Ledger.settle`) is kept as a `_settled_record`."""

    __slots__ = ("acts", "acts_upto", "book", "capture", "digest", "event", "id", "key", "mark",
                 "outcomes", "since", "trades", "trades_upto", "void")

    def __init__(self, key: OrderKey, event: Event, book: OrderBook | None) -> None:
        self.key = key
        self.id = event.id
        self.event: Event | None = event
        self.book = book
        self.mark: tuple[int, int] | None = (0, 0)
        self.digest = b""
        self.trades: list[Trade] | tuple = []
        self.trades_upto = 0  # trades of the applied sequence up to and including this
        self.outcomes: list[str] | tuple = []  # per action: order status or cancel result
        self.void = False  # its origin was removed before it: applied as empty
        self.acts = False  # it has actions and is not void (what finality waits on)
        self.acts_upto = 0  # entries that act in the applied sequence up to this one
        # Since the latest checkpoint's entry up to this one: (entries that act, their
        # actions); (0, 0) at a checkpoint's entry, whose `capture` is then not None.
        self.since = _SINCE_NONE
        self.capture: tuple | None = None  # (books' `encoded_levels()`, digest), or _TAKEN


_SINCE_NONE = (0, 0)
_TAKEN = ()  # a checkpoint's capture once `take_captures` gave it out


# Each place's outcome is its status's name: one shared string per status.
_OUTCOME_OF = {status: status.name.lower() for status in OrderStatus}


def _chained(previous: bytes, entry: _Applied) -> bytes:
    h = hashlib.sha256(previous)
    h.update(entry.id)
    for t in entry.trades:
        h.update(t.maker_order)
        h.update(t.taker_order)
        h.update(t.price.to_bytes(8, "big"))
        h.update(t.qty.to_bytes(8, "big"))
    return h.digest()


class Ledger:
    """The applied sequence of one replica; see the module docstring."""

    def __init__(self, markets: Mapping[str, Market]) -> None:
        self.books = {name: OrderBook(name) for name in sorted(markets)}
        # Entries in ascending key: the first `settled` ones (final: `settle`) as their id
        # in `_ids`, a record in `_index` and their trades in `_settled_trades`; the
        # others whole in `_applied`. `_keys` has every entry's key.
        self._applied: list[_Applied] = []
        self._keys: list[OrderKey] = []
        self._index: dict[bytes, _Applied | tuple] = {}  # event id -> entry or record
        self._ids: list[bytes] = []
        self._settled_trades: list[bytes | tuple] = []  # packed (packed_trade)
        self._settled_digest = GENESIS_DIGEST  # the digest after the settled entries
        self._settled_acts = 0  # settled entries that act
        self.trade_count = 0
        # Entries dropped from the front (`forget`) and their trades: positions here count
        # from the first entry held, trade numbers from the first trade ever.
        self.forgotten = 0
        self.trades_forgotten = 0
        self.cuts: dict[bytes, int] = {}  # removed origin -> its last seq that counts
        self.settled = 0
        # Started from a checkpoint (`restore`): its key. Everything at or before it is
        # final and not held here; an event that sorts there goes in as a settled entry.
        self.floor: OrderKey | None = None
        # What the commit rule says cannot happen, and a settled ledger cannot undo: an
        # event with actions sorting among final entries, or a removal voiding one
        # (only with more dishonest members than protocols/finality.md tolerates). Such
        # an event is taken as empty and what was final stays final; counted and
        # described here for the node's status and alarm (never silently).
        self.broken = 0
        self.broken_detail = ""
        # Checkpoints (core/checkpoint.py): whether to capture the books at each
        # checkpoint's entry as it is applied (the replica: only with a membership), and
        # the rule that makes an entry a checkpoint's (protocols/heartbeat.md): the
        # `checkpoint_events`-th entry that acts since the previous checkpoint's, or the
        # first one that brings their actions to `checkpoint_actions`.
        self.captures = False
        self.checkpoint_events = CHECKPOINT_EVERY
        self.checkpoint_actions = CHECKPOINT_ACTIONS
        self._settled_since = _SINCE_NONE  # `since` after the last settled entry

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def digest(self) -> bytes:
        return self._applied[-1].digest if self._applied else self._settled_digest

    def trades(self) -> list[Trade]:
        return unpacked_trades(self._settled_trades) + \
            [t for entry in self._applied for t in entry.trades]

    def recent_trades(self, limit: int) -> list[Trade]:
        """The last `limit` trades, oldest first: read from the newest entries back, so
        it costs what it returns, not the history."""
        if limit <= 0:
            return []
        chunks, count = [], 0
        for entry in reversed(self._applied):
            if count >= limit:
                break
            if entry.trades:
                chunks.append(entry.trades)
                count += len(entry.trades)
        if count < limit:
            chunks.append(unpacked_trades(self._settled_trades[-(limit - count):]))
        return [t for chunk in reversed(chunks) for t in chunk][-limit:]

    def trades_of(self, event_id: bytes) -> list[Trade]:
        entry = self._index.get(event_id)
        if entry is None:
            return []
        if type(entry) is tuple:
            first = entry[R_FIRST] - self.trades_forgotten
            return unpacked_trades(self._settled_trades[first:first + entry[R_COUNT]])
        return list(entry.trades)

    def outcomes_of(self, event_id: bytes) -> list[str]:
        entry = self._index.get(event_id)
        if entry is None:
            return []
        return list(entry[R_OUTCOMES] if type(entry) is tuple else entry.outcomes)

    def event_ids(self, acting: bool = False) -> list[bytes]:
        """Event ids in the applied order; `acting`: only those with actions, not void."""
        if acting:
            index = self._index
            return [i for i in self._ids if index[i][R_ACTS]] + \
                [entry.id for entry in self._applied if entry.acts]
        return self._ids + [entry.id for entry in self._applied]

    def acts(self, event_id: bytes) -> bool:
        """Whether an applied event has actions and is not void (it changes the state)."""
        entry = self._index.get(event_id)
        if entry is None:
            return False
        return entry[R_ACTS] if type(entry) is tuple else entry.acts

    def count_upto(self, key: OrderKey | None) -> int:
        """How many entries have a key at most `key` (they are the first ones)."""
        return 0 if key is None else bisect_right(self._keys, key)

    def trades_in_first(self, count: int) -> int:
        """Trades produced by the first `count` entries."""
        settled = self.settled
        if count > settled:
            return self._applied[count - settled - 1].trades_upto
        if count == settled:
            return self.trades_forgotten + len(self._settled_trades)
        index = self._index  # among settled entries: rare, costs `count`
        return self.trades_forgotten + sum(index[i][R_COUNT] for i in self._ids[:count])

    def frontier_within(self, key: OrderKey, actions_max: int) -> OrderKey:
        """`key`, or the key of an earlier entry, so that the entries not settled yet up
        to it carry at most `actions_max` actions (at least one entry, however many it
        carries): how far one call of `Replica.compact` with a bound settles."""
        applied, total = self._applied, 0
        for i in range(self.count_upto(key) - self.settled):
            event = applied[i].event
            total += len(event.actions) if event is not None else 0
            if total > actions_max and i:
                return applied[i - 1].key
        return key

    def take_captures(self, count: int
                      ) -> list[tuple[int, OrderKey, bytes, dict[str, list[list[bytes]]]]]:
        """Each checkpoint's entry among the first `count` (none settled) whose capture
        was not taken yet, ascending: (n, its key, the digest after it, each book's
        `encoded_levels()` as they stood after it). Each is given out once."""
        taken, applied = [], self._applied
        for i in range(min(count, len(self._keys)) - self.settled):
            entry = applied[i]
            if entry.capture:
                books, digest = entry.capture
                entry.capture = _TAKEN
                taken.append((entry.acts_upto, entry.key, digest, books))
        return taken

    def with_actions(self, start: int, backwards: bool = False) -> Event | None:
        """The first (or last) event with actions from position `start` on, which is not
        before the first entry that is not settled."""
        assert start >= self.settled, "asked for a settled event"
        applied = self._applied
        start -= self.settled
        positions = range(len(applied) - 1, start - 1, -1) if backwards else \
            range(start, len(applied))
        for i in positions:
            if applied[i].acts:
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
        keys = self._keys
        first = next((i for i in range(len(keys))
                      if keys[i][2] == origin and keys[i][3] > cut), None)
        if first is None:
            return 0
        if first < self.settled:  # none of them is final anywhere (finality.md, R1)
            self._broke(f"the removal of {origin.hex()[-8:]} at seq {cut} would void a "
                        f"final event: what was final stays")
            first = next((i for i in range(self.settled, len(keys))
                          if keys[i][2] == origin and keys[i][3] > cut), None)
            if first is None:
                return 0
        undone = self._undo_to(first)
        for entry in reversed(undone):
            self._apply(entry.event)  # type: ignore[arg-type]
        return len(undone)

    def settle(self, count: int) -> list[Order]:
        """Keep the first `count` entries (final: nothing with actions will sort before
        them again, finality.md) as what queries read of them (`_settled_record`: no
        event, undo record or digest), and the digest after the last of them: nothing is
        chained again before the last entry that acts among them (an entry that sorts
        among them later does not act, `_insert_settled`), so only that digest is read
        again. The books forget their undo records and trades from before the first
        entry left, and the orders that left them in settled steps: returns those."""
        applied = self._applied
        count = min(count, len(self._keys))
        if count <= self.settled:
            return []
        moved = count - self.settled
        marks: dict[str, tuple[int, int]] = {}
        for i in range(moved, len(applied)):  # each book's first entry that stays
            entry = applied[i]
            if entry.book is not None and entry.book.market not in marks:
                marks[entry.book.market] = entry.mark  # type: ignore[assignment]
                if len(marks) == len(self.books):
                    break
        closed = []
        for name, book in self.books.items():
            closed += book.settle(marks.get(name) or book.mark())
        index, ids, trades = self._index, self._ids, self._settled_trades
        base = self.trades_forgotten
        for entry in applied[:moved]:
            index[entry.id] = settled_record(entry, base + len(trades))
            ids.append(entry.id)
            trades.extend(map(packed_trade, entry.trades))
        self._settled_digest = applied[moved - 1].digest
        self._settled_acts = applied[moved - 1].acts_upto
        self._settled_since = applied[moved - 1].since
        del applied[:moved]
        self.settled = count
        return closed

    def forget(self, count: int) -> int:
        """Drop the first `count` entries, all settled (final), from memory: their ids,
        keys, records and trades (docs/snapshot_design.md, step 5). What they did is in
        the books and the digest; what sorts at or before the last of them later goes in
        as a settled entry (`floor`, as after `restore`: it changes no book). Queries no
        longer know them: `outcomes_of` and `trades_of` answer nothing, `trades` lists
        from the first trade held. Returns how many were dropped."""
        count = min(count, self.settled)
        if count <= 0:
            return 0
        trades = self.trades_in_first(count) - self.trades_forgotten
        key = self._keys[count - 1]
        index = self._index
        for event_id in self._ids[:count]:
            del index[event_id]
        del self._ids[:count], self._keys[:count], self._settled_trades[:trades]
        self.settled -= count
        self.forgotten += count
        self.trades_forgotten += trades
        if self.floor is None or key > self.floor:
            self.floor = key
        return count

    def restore(self, acting: int, key: OrderKey, digest: bytes,
                books: Mapping[str, list]) -> None:
        """Start an empty ledger from a checkpoint: the state after the `acting`-th event
        that acts, whose key is `key`, with digest `digest` and books `books` (a state
        per market, `OrderBook.state`). The entries up to it are not held: queries know
        only the trades from here on (a cancel's outcome needs nothing older: it reads the
        open orders alone, protocols/state_machine.md §4)."""
        assert not self._keys and self.floor is None, "restore into an empty ledger"
        for name, book in self.books.items():
            book.restore(books[name])
        self._settled_digest = digest
        self._settled_acts = acting
        self.floor = key

    def apply(self, events: list[Event]) -> tuple[int, list[list[Trade]]]:
        """Apply newly delivered `events`, sorted by key: undo once, down to the earliest
        of them, then apply them merged with what was undone. Returns how many entries
        were undone (and applied again) and the trades of each of `events`."""
        if not events:
            return 0, []
        low, floor = 0, self.floor
        while low < len(events) and (bisect_left(self._keys, events[low].key) < self.settled
                                     or (floor is not None and events[low].key <= floor)):
            low += 1
        if low:  # among settled entries: only empty events can (see _insert_settled)
            self._insert_settled(events[:low])
            trades_low: list[list[Trade]] = [[] for _ in range(low)]
            undone_n, trades_rest = self.apply(events[low:])
            return undone_n, trades_low + trades_rest
        if any(e.market == MEMBERSHIP_MARKET and not e.actions for e in events):
            return self._apply_acting_then_insert_empty(events)
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

    def _apply_acting_then_insert_empty(self, events: list[Event]
                                        ) -> tuple[int, list[list[Trade]]]:
        """`apply`, when some of `events` are empty membership events (acknowledgements,
        half of all events under load): the others are applied as usual, then each empty
        one goes in at its place, undoing nothing. An entry that does not act changes no
        book, no trade and no digest (its `acts_upto`, `trades_upto` and `digest` are
        those before it), so no entry after it changes either: a late acknowledgement
        re-applied everything after its place, for nothing."""
        acting = [e for e in events if e.market != MEMBERSHIP_MARKET or e.actions]
        undone_n, acting_trades = self.apply(acting) if acting else (0, [])
        made = iter(acting_trades)
        for event in events:
            if event.market == MEMBERSHIP_MARKET and not event.actions:
                self._insert_empty(event)
        return undone_n, [[] if e.market == MEMBERSHIP_MARKET and not e.actions else next(made)
                          for e in events]

    def _insert_empty(self, event: Event) -> None:
        """An empty membership event into the unsettled entries, at its key's place."""
        keys, applied = self._keys, self._applied
        position = bisect_left(keys, event.key)
        if position < self.settled or (self.floor is not None and event.key <= self.floor):
            self._insert_settled([event])  # (what `apply` does before anything else)
            return
        entry = _Applied(event.key, event, None)
        entry.void = bool(self.cuts) and self.is_void(event)
        before = position - self.settled - 1  # the unsettled entry just before, if any
        if before >= 0:
            prior = applied[before]
            entry.acts_upto, entry.trades_upto, entry.digest, entry.since = (
                prior.acts_upto, prior.trades_upto, prior.digest, prior.since)
        else:
            entry.acts_upto, entry.since = self._settled_acts, self._settled_since
            entry.trades_upto = self.trades_forgotten + len(self._settled_trades)
            entry.digest = self._settled_digest
        applied.insert(position - self.settled, entry)
        keys.insert(position, entry.key)
        self._index[event.id] = entry

    def _insert_settled(self, events: list[Event]) -> None:
        """Take in events that sort among settled entries. Only an event that changes no
        book can (a removed member's event beyond its cut, or an empty event: an event
        with actions never sorts before what is final, finality.md; if one did, it is
        taken as empty and counted in `broken`), so no book is rolled back and, as such
        an entry does not extend the digest, no digest after it changes: the entries go
        in, settled, as records without trades. Costs a binary search and two list
        insertions per event."""
        keys = self._keys
        for event in events:
            void = bool(self.cuts) and self.is_void(event)
            if not void and event.actions:
                self._broke(f"event {event.id.hex()[:12]} with actions sorts before final "
                            f"events: taken as empty")
                void = True
            position = bisect_left(keys, event.key)
            keys.insert(position, event.key)
            self._ids.insert(position, event.id)
            entry = _Applied(event.key, event, None)
            entry.outcomes, entry.void = ["void"] * len(event.actions), void
            self._index[event.id] = settled_record(entry, 0)
            self.settled += 1

    def settled_placer(self, order_id: bytes, market: str | None = None) -> bytes | None:
        """The origin of the settled event that placed `order_id` (in `market`, if
        given), or None. An order's id is its event's id and its action index (2 bytes)."""
        record = self._index.get(order_id[:32])
        if type(record) is not tuple or len(order_id) != 34 or \
                not (record[R_PLACES] >> int.from_bytes(order_id[32:], "big")) & 1 or \
                (market is not None and record[R_MARKET] != market):
            return None
        return record[R_ORIGIN]

    def _broke(self, detail: str) -> None:
        self.broken += 1
        self.broken_detail = detail

    def _undo_to(self, position: int) -> list[_Applied]:
        """Undo applied events from the end down to `position`; newest first."""
        assert position >= self.settled, "rolled back into settled entries"
        undone = []
        applied = self._applied
        while len(self._keys) > position:
            entry = applied.pop()
            self._keys.pop()
            del self._index[entry.id]
            if entry.book is not None:
                entry.book.rollback(entry.mark)  # type: ignore[arg-type]
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
                outcomes.append(_OUTCOME_OF[order.status])
            else:
                assert isinstance(action, Cancel)
                outcomes.append(book.cancel(action.order_id, origin) or "cancelled")
        trades = book.trades_since(mark)
        entry.trades = trades
        entry.acts = True
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
        entry.acts = bool(event.actions)
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
        entry.acts_upto = (applied[-1].acts_upto if applied else self._settled_acts) + entry.acts
        entry.trades_upto = (applied[-1].trades_upto if applied else self.trades_forgotten
                             + len(self._settled_trades)) + len(entry.trades)
        since = applied[-1].since if applied else self._settled_since
        if entry.acts:
            entry.digest = _chained(self.digest, entry)
            since = (since[0] + 1, since[1] + len(entry.event.actions))  # type: ignore[union-attr]
            if since[0] >= self.checkpoint_events or since[1] >= self.checkpoint_actions:
                since = _SINCE_NONE  # a checkpoint's entry: the books as they are now
                if self.captures:
                    entry.capture = ({m: b.encoded_levels() for m, b in self.books.items()},
                                     entry.digest)
        else:
            entry.digest = self.digest
        entry.since = since
        applied.append(entry)
        self._keys.append(entry.key)
        self._index[entry.id] = entry
