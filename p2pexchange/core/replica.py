"""The replica: causal delivery, one total order, rollback and replay, finality, digest.

Theory of operation. A replica is fed bytes (events from any peer, in any
order, with duplicates) and heartbeats, and returns what happened; it never
performs I/O, reads a clock or draws a random number, so two replicas fed the
same events end in the same state whatever the arrival order.

1. Admission. `decode_event` checks everything stateless (schema, signature,
   ...). The replica then rejects a seq already seen with other content
   (equivocation) and ignores exact duplicates.
2. Causal delivery. An event is delivered once the replica has delivered
   everything its vector clock names (which includes its origin's previous
   seq). Until then it waits in a bounded buffer, registered on its first
   unmet dependency, and `missing()` tells the shell what to fetch. On
   delivery its Lamport time must be 1 + the largest Lamport time among the
   events its clock names; otherwise it is rejected (`bad_lamport`).
3. Total order. Delivered events are applied in order of `(lamport, origin,
   seq)`. This order extends causality, so a cancel always comes after the
   place it names. An event that sorts before already-applied events makes
   the replica undo those (the books keep undo records), apply it, and
   re-apply them: the cost is proportional to the events undone.
4. Digest. Each applied event extends a running SHA-256 over the event id and
   the trades it produced; two replicas with the same delivered set have the
   same digest.
5. Finality. Heartbeats carry a member's vector clock and Lamport time. Every
   future event of member m has a Lamport time above the one m announced,
   and per-origin FIFO tells whether we already hold m's earlier events; so an
   event is final once, for every live member (heard from within the liveness
   timeout) and for ourselves, no event that could still arrive sorts before
   it. A member silent for longer than the timeout stops holding finality
   back; if its late events then sort before final ones they are still
   applied (convergence wins) and counted in `stats()["late_after_final"]`.
   Members are those heard from, by heartbeat or by event: a node nobody has
   heard of yet cannot hold finality back, so the shell reports nothing as
   final before it has listened for one liveness timeout.

Limits: the causal buffer holds at most `buffer_events_max` events; beyond
that new out-of-order events are refused (`buffer_full`) and come back via
sync. Business outcomes (a rejected cancel, a post-only that would take) are
recorded identically on every replica; a misbehaving peer's input is a
`Receipt` with status "rejected" and a code, never an exception.
"""

from __future__ import annotations

import hashlib
import heapq
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice

from libp2p.crypto.keys import PrivateKey

from .book import Order, OrderBook, Trade
from .clock import OrderKey, VectorClock
from .events import (
    CLOCK_ORIGINS_MAX,
    ORIGIN_BYTES_MAX,
    SEQ_MAX,
    Action,
    Cancel,
    Event,
    EventRejected,
    Place,
    decode_event,
    sign_event,
)
from .market import Market

BUFFER_EVENTS_MAX = 100_000
GENESIS_DIGEST = hashlib.sha256(b"p2pexchange/digest/v1").digest()


class OwnHistoryBehind(Exception):
    """The network holds events of this replica's origin that the replica lacks."""


@dataclass
class Receipt:
    status: str  # "delivered" | "buffered" | "duplicate" | "rejected"
    code: str | None = None
    detail: str = ""
    event: Event | None = None
    delivered: list[Event] = field(default_factory=list)
    rolled_back: int = 0
    trades: list[Trade] = field(default_factory=list)
    missing: dict[bytes, tuple[int, int]] = field(default_factory=dict)


class _Applied:
    """One event in the applied sequence, with what is needed to undo it."""

    __slots__ = ("book", "digest", "event", "key", "mark", "outcomes", "trades")

    def __init__(self, key: OrderKey, event: Event, book: OrderBook) -> None:
        self.key = key
        self.event = event
        self.book = book
        self.mark: tuple[int, int] = (0, 0)
        self.digest = b""
        self.trades: list[Trade] = []
        self.outcomes: list[str] = []  # per action: order status name or cancel result


@dataclass(frozen=True)
class Finality:
    frontier: int  # events with lamport <= frontier are final
    final_events: int
    pending_events: int
    final_trades: int
    pending_trades: int


@dataclass
class _Heartbeat:
    clock: dict[bytes, int]
    lamport: int
    at_ms: int


class Replica:
    """Deterministic replicated state for a set of markets; see the module docstring."""

    def __init__(self, markets: Mapping[str, Market], origin: bytes | None = None, *,
                 buffer_events_max: int = BUFFER_EVENTS_MAX) -> None:
        assert buffer_events_max > 0
        self.markets = dict(markets)
        self.origin = origin
        self.books = {name: OrderBook(name) for name in sorted(self.markets)}
        self._buffer_events_max = buffer_events_max
        self._clock: dict[bytes, int] = {}
        self._events: dict[bytes, list[Event]] = {}  # origin -> delivered events by seq-1
        self._by_id: dict[bytes, Event] = {}
        self._lamport = 0
        self._buffer: dict[tuple[bytes, int], Event] = {}
        self._waiting: dict[tuple[bytes, int], list[Event]] = {}
        self._known: dict[bytes, int] = {}  # origin -> highest seq known to exist
        self._applied: list[_Applied] = []
        self._keys: list[OrderKey] = []
        self._index: dict[bytes, _Applied] = {}  # event id -> applied entry
        self._heartbeats: dict[bytes, _Heartbeat] = {}
        self._now_ms = 0  # the latest time the shell has told us about
        self._safe_lamport: dict[bytes, int] = {}  # member -> its future events sort above
        self._final_seen = 0  # highest frontier ever reported
        self._trade_count = 0
        self._stats = {"events_delivered": 0, "rollbacks": 0, "events_reapplied": 0,
                       "duplicates": 0, "late_after_final": 0}
        self._rejected: dict[str, int] = {}

    # -- queries -----------------------------------------------------------------

    @property
    def clock(self) -> VectorClock:
        return dict(self._clock)

    @property
    def lamport(self) -> int:
        return self._lamport

    @property
    def digest(self) -> bytes:
        return self._applied[-1].digest if self._applied else GENESIS_DIGEST

    @property
    def digest_hex(self) -> str:
        return self.digest.hex()

    def book(self, market: str) -> OrderBook:
        return self.books[market]

    def order(self, order_id: bytes) -> Order | None:
        for book in self.books.values():
            found = book.orders.get(order_id)
            if found is not None:
                return found
        return None

    def event(self, event_id: bytes) -> Event | None:
        return self._by_id.get(event_id)

    def events_of(self, origin: bytes, after_seq: int = 0) -> list[Event]:
        """Delivered events of `origin` with seq > `after_seq`, in seq order."""
        return self._events.get(origin, [])[max(0, after_seq):]

    def trades(self) -> list[Trade]:
        return [t for entry in self._applied for t in entry.trades]

    def trades_of(self, event_id: bytes) -> list[Trade]:
        entry = self._index.get(event_id)
        return list(entry.trades) if entry else []

    def outcomes_of(self, event_id: bytes) -> list[str]:
        """Per action of a delivered event: the order's status after its step, or the
        cancel's result ("cancelled" or a reject code)."""
        entry = self._index.get(event_id)
        return list(entry.outcomes) if entry else []

    def applied_ids(self) -> list[bytes]:
        """Event ids in the applied total order."""
        return [entry.event.id for entry in self._applied]

    def stats(self) -> dict:
        return {
            **self._stats,
            "events_buffered": len(self._buffer),
            "rejected": dict(sorted(self._rejected.items())),
            "trades": self._trade_count,
            "resting": {m: b.resting_count() for m, b in self.books.items()},
        }

    def missing(self) -> dict[bytes, tuple[int, int]]:
        """Seq ranges known to exist (from buffered events and heartbeats) but not delivered."""
        return {o: (self._clock.get(o, 0) + 1, s) for o, s in sorted(self._known.items())
                if s > self._clock.get(o, 0)}

    def events_for(self, their_clock: Mapping[bytes, int], limit: int) -> list[bytes]:
        """Raw events delivered here that `their_clock` lacks, causes first, at most `limit`."""
        streams = []
        for o, events in self._events.items():
            have = their_clock.get(o, 0)
            if isinstance(have, int) and 0 <= have < len(events):
                streams.append(map(events.__getitem__, range(have, len(events))))
        merged = heapq.merge(*streams, key=lambda e: e.key)
        return [e.raw for e in islice(merged, max(0, limit))]

    # -- inputs ------------------------------------------------------------------

    def receive(self, raw: bytes) -> Receipt:
        """Admit one event from the wire. Never raises on bad input."""
        try:
            event = decode_event(raw, self.markets)
        except EventRejected as rejected:
            return self._reject(rejected.code, rejected.detail)
        return self.admit(event)

    def create_event(self, private_key: PrivateKey, market: str,
                     actions: Sequence[Action]) -> tuple[Event, Receipt]:
        """Sign a new event of this replica's origin and deliver it locally."""
        assert self.origin is not None, "a replica without an origin cannot create events"
        assert market in self.markets, market
        seq = self._clock.get(self.origin, 0) + 1
        if self._known.get(self.origin, 0) >= seq:
            # Peers hold events of ours that we lack (a lost or stale data dir): a new
            # event now would reuse a seq, which every peer would reject as equivocation.
            raise OwnHistoryBehind(f"peers know our seq {self._known[self.origin]}, we hold "
                                   f"{seq - 1}: sync before creating events")
        event = sign_event(private_key, self.origin, seq, self._clock, self._lamport + 1,
                           market, tuple(actions))
        receipt = self.admit(event)
        assert receipt.status == "delivered", receipt
        return event, receipt

    def admit(self, event: Event) -> Receipt:
        """Admit an already decoded and verified event."""
        origin, seq = event.origin, event.seq
        previous = self._delivered_or_buffered(origin, seq)
        if previous is not None:
            if previous.id == event.id:
                self._stats["duplicates"] += 1
                return Receipt("duplicate", event=event)
            return self._reject("equivocation", f"seq {seq} of {origin.hex()[:12]} seen "
                                f"with other content", event)
        first_unmet = self._first_unmet(event)
        if first_unmet is not None:
            if len(self._buffer) >= self._buffer_events_max:
                return self._reject("buffer_full", "causal buffer is full", event)
            self._buffer[(origin, seq)] = event
            self._waiting.setdefault(first_unmet, []).append(event)
            self._note_known(origin, seq)
            for o, s in event.clock.items():
                self._note_known(o, s)
            return Receipt("buffered", event=event, missing=self.missing())
        receipt = Receipt("delivered", event=event)
        rejected = self._deliver_chain(event, receipt)
        if rejected is not None and not receipt.delivered:
            return rejected
        return receipt

    def on_heartbeat(self, origin: bytes, clock: Mapping[bytes, int], lamport: int,
                     now_ms: int) -> str | None:
        """Record a member's heartbeat; returns None or a reject code for nonsense."""
        if (type(origin) is not bytes or not 0 < len(origin) <= ORIGIN_BYTES_MAX
                or type(lamport) is not int or not 0 <= lamport <= SEQ_MAX
                or not isinstance(clock, Mapping) or len(clock) > CLOCK_ORIGINS_MAX
                or type(now_ms) is not int):
            return "bad_heartbeat"
        clean: dict[bytes, int] = {}
        for o, s in clock.items():
            if type(o) is not bytes or type(s) is not int or not 0 <= s <= SEQ_MAX:
                return "bad_heartbeat"
            clean[o] = s
        self._now_ms = max(self._now_ms, now_ms)
        old = self._heartbeats.get(origin)
        if old is not None and old.lamport > lamport:
            return "stale_heartbeat"
        if old is not None:
            self._promote(origin, old)
        self._heartbeats[origin] = _Heartbeat(clean, lamport, now_ms)
        for o, s in clean.items():
            self._note_known(o, s)
        return None

    # -- finality ----------------------------------------------------------------

    def final_frontier(self, now_ms: int, liveness_timeout_ms: int) -> int:
        """Events with Lamport time <= the returned value can no longer be preceded."""
        self._now_ms = max(self._now_ms, now_ms)
        frontier = self._lamport
        for member, hb in self._heartbeats.items():
            if member == self.origin or now_ms - hb.at_ms > liveness_timeout_ms:
                continue
            self._promote(member, hb)
            have = self._events.get(member)
            bound = max(have[-1].lamport if have else 0, self._safe_lamport.get(member, 0))
            frontier = min(frontier, bound)
        self._final_seen = max(self._final_seen, frontier)
        return frontier

    def finality(self, now_ms: int, liveness_timeout_ms: int) -> Finality:
        """Final versus pending events and trades; walks only the pending tail."""
        frontier = self.final_frontier(now_ms, liveness_timeout_ms)
        pending_events = pending_trades = 0
        for entry in reversed(self._applied):
            if entry.key[0] <= frontier:
                break
            pending_events += 1
            pending_trades += len(entry.trades)
        return Finality(frontier, len(self._applied) - pending_events, pending_events,
                        self._trade_count - pending_trades, pending_trades)

    def _promote(self, member: bytes, hb: _Heartbeat) -> None:
        """Once we hold every event of `member` that its heartbeat counted, all its other
        events were created later and carry a Lamport time above the heartbeat's."""
        if (self._clock.get(member, 0) >= hb.clock.get(member, 0)
                and hb.lamport > self._safe_lamport.get(member, 0)):
            self._safe_lamport[member] = hb.lamport

    def is_final(self, event_id: bytes, now_ms: int, liveness_timeout_ms: int) -> bool:
        event = self._by_id.get(event_id)
        return event is not None and event.lamport <= self.final_frontier(
            now_ms, liveness_timeout_ms)

    # -- internals ---------------------------------------------------------------

    def _reject(self, code: str, detail: str, event: Event | None = None) -> Receipt:
        self._rejected[code] = self._rejected.get(code, 0) + 1
        return Receipt("rejected", code=code, detail=detail, event=event)

    def _delivered_or_buffered(self, origin: bytes, seq: int) -> Event | None:
        if seq <= self._clock.get(origin, 0):
            return self._events[origin][seq - 1]
        return self._buffer.get((origin, seq))

    def _first_unmet(self, event: Event) -> tuple[bytes, int] | None:
        clock = self._clock
        for o, s in event.clock.items():
            if clock.get(o, 0) < s:
                return (o, clock.get(o, 0) + 1)
        return None

    def _note_known(self, origin: bytes, seq: int) -> None:
        if seq > self._known.get(origin, 0):
            self._known[origin] = seq

    def _deliver_chain(self, first: Event, receipt: Receipt) -> Receipt | None:
        """Deliver `first` and every buffered event that becomes ready."""
        ready = [first]
        rejected = None
        while ready:
            event = ready.pop()
            self._buffer.pop((event.origin, event.seq), None)
            expected = 1 + max((self._events[o][s - 1].lamport for o, s in event.clock.items()),
                               default=0)
            if event.lamport != expected:
                rejected = self._reject("bad_lamport", f"lamport {event.lamport} but its clock "
                                        f"implies {expected}", event)
                continue
            self._deliver(event, receipt)
            for waiter in self._waiting.pop((event.origin, event.seq), ()):
                unmet = self._first_unmet(waiter)
                if unmet is None:
                    ready.append(waiter)
                else:
                    self._waiting.setdefault(unmet, []).append(waiter)
        return rejected

    def _deliver(self, event: Event, receipt: Receipt) -> None:
        origin = event.origin
        self._events.setdefault(origin, []).append(event)
        self._clock[origin] = event.seq
        self._by_id[event.id] = event
        self._lamport = max(self._lamport, event.lamport)
        self._stats["events_delivered"] += 1
        if event.lamport <= self._final_seen:
            self._stats["late_after_final"] += 1
        if origin not in self._heartbeats:
            # A member first heard of through its events holds finality back at what we
            # hold of it until it heartbeats or stays silent past the liveness timeout.
            self._heartbeats[origin] = _Heartbeat({}, 0, self._now_ms)
        receipt.delivered.append(event)
        key = event.key
        keys = self._keys
        position = bisect_left(keys, key)
        undone = self._undo_to(position)
        if undone:
            self._stats["rollbacks"] += 1
            self._stats["events_reapplied"] += len(undone)
            receipt.rolled_back += len(undone)
        receipt.trades.extend(self._apply(event))
        for entry in reversed(undone):
            self._apply(entry.event)

    def _undo_to(self, position: int) -> list[_Applied]:
        """Undo applied events from the end down to `position`; newest first."""
        undone = []
        applied = self._applied
        while len(applied) > position:
            entry = applied.pop()
            self._keys.pop()
            del self._index[entry.event.id]
            entry.book.rollback(entry.mark)
            self._trade_count -= len(entry.trades)
            undone.append(entry)
        return undone

    def _apply(self, event: Event) -> list[Trade]:
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
        self._trade_count += len(trades)
        h = hashlib.sha256(self.digest)
        h.update(event_id)
        for t in trades:
            h.update(t.maker_order)
            h.update(t.taker_order)
            h.update(t.price.to_bytes(8, "big"))
            h.update(t.qty.to_bytes(8, "big"))
        entry.digest = h.digest()
        self._applied.append(entry)
        self._keys.append(entry.key)
        self._index[event_id] = entry
        return trades


def replay(markets: Mapping[str, Market], raws: Iterable[bytes],
           origin: bytes | None = None) -> Replica:
    """A replica fed `raws` in the given order (rejections are counted, not raised)."""
    replica = Replica(markets, origin)
    for raw in raws:
        replica.receive(raw)
    return replica
