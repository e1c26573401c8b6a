"""What a replica answers about its state: its clock, digest, books, orders, events,
trades, figures and bounds (`usage`), the seq ranges it lacks (`missing`) and the events
a peer's clock lacks (`events_for`), and the invariant check of its bounded parts.

`Queries` is a part of `Replica` (core/replica.py), kept apart because it is one
concern: it reads and never changes the replica (the setters of the two checkpoint rules
forward to the ledger, which counts as it applies).
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Mapping
from itertools import islice
from typing import TYPE_CHECKING, Any

from .buffer import KNOWN_ORIGINS_MAX
from .delivery import EQUIVOCATIONS_MAX, MISSING_RANGES_MAX, PARKED_MAX
from .finality import MEMBERS_MAX
from .settled import Settled

if TYPE_CHECKING:
    from .book import OrderBook
    from .buffer import CausalBuffer, Claims
    from .clock import VectorClock
    from .events import Event
    from .ledger import Ledger
    from .orders import Order, Trade
    from .settled import Chain


class Queries:
    """A replica's answers; see the module docstring."""

    origin: bytes | None
    ledger: Ledger
    books: dict[str, OrderBook]
    equivocations: dict[tuple[bytes, int], tuple[bytes, bytes]]
    _clock: dict[bytes, int]
    _lamport: int
    _events: dict[bytes, Chain]
    _by_id: dict[bytes, Any]
    _own_closed: OrderedDict[bytes, Order]
    _buffer: CausalBuffer
    _claims: Claims
    _parked: dict[bytes, Event]
    _stats: dict[str, int]
    _rejected: dict[str, int]

    if TYPE_CHECKING:  # the replica's own (core/commit.py, core/delivery.py)
        def members(self) -> list[bytes]: ...
        def _own_history(self) -> int: ...

    @property
    def checkpoint_every(self) -> int:
        """Entries that act from one checkpoint to the next at most (the ledger's rule;
        set before the events it should count are applied)."""
        return self.ledger.checkpoint_events

    @checkpoint_every.setter
    def checkpoint_every(self, value: int) -> None:
        self.ledger.checkpoint_events = value

    @property
    def checkpoint_actions(self) -> int:
        """Actions from one checkpoint to the next that make one sooner (the ledger's)."""
        return self.ledger.checkpoint_actions

    @checkpoint_actions.setter
    def checkpoint_actions(self, value: int) -> None:
        self.ledger.checkpoint_actions = value

    @property
    def clock(self) -> VectorClock:
        return dict(self._clock)

    @property
    def lamport(self) -> int:
        return self._lamport

    @property
    def digest(self) -> bytes:
        return self.ledger.digest

    @property
    def digest_hex(self) -> str:
        return self.digest.hex()

    def book(self, market: str) -> OrderBook:
        return self.books[market]

    def order(self, order_id: bytes) -> Order | None:
        """An order known to a book, or one of our own recently forgotten (`compact`)."""
        for book in self.books.values():
            found = book.orders.get(order_id)
            if found is not None:
                return found
        return self._own_closed.get(order_id)

    def placed_by(self, order_id: bytes) -> bytes | None:
        """The origin that placed a known order, also one the books forgot."""
        order = self.order(order_id)
        return order.origin if order is not None else self.ledger.settled_placer(order_id)

    def event(self, event_id: bytes) -> Event | Settled | None:
        found = self._by_id.get(event_id)
        return Settled(found) if type(found) is tuple else found

    def events_of(self, origin: bytes, after_seq: int = 0) -> list[Event]:
        """Delivered events of `origin` with seq > `after_seq`, in seq order."""
        chain = self._events.get(origin)
        return chain[max(chain.base, after_seq):] if chain else []

    def last_events(self, origin: bytes, count: int) -> list[Event]:
        """The latest `count` delivered events of `origin` (fewer if it has fewer), in
        seq order: costs `count`, not the history (settled ones are made when read)."""
        chain = self._events.get(origin)
        return chain[max(chain.base, len(chain) - count):] if chain else []

    def trades(self) -> list[Trade]:
        return self.ledger.trades()

    def recent_trades(self, limit: int) -> list[Trade]:
        return self.ledger.recent_trades(limit)

    def trades_of(self, event_id: bytes) -> list[Trade]:
        return self.ledger.trades_of(event_id)

    def outcomes_of(self, event_id: bytes) -> list[str]:
        """Per action of a delivered event: the order's status after its step, or the
        cancel's result ("cancelled" or a reject code)."""
        return self.ledger.outcomes_of(event_id)

    def applied_ids(self) -> list[bytes]:
        """Event ids in the applied total order."""
        return self.ledger.event_ids()

    @property
    def events_delivered(self) -> int:
        return self._stats["events_delivered"]

    def stats(self) -> dict:
        return {
            **self._stats,
            "events_buffered": len(self._buffer),
            "buffer_bytes": self._buffer.bytes,
            "buffer_evicted": self._buffer.evicted,
            "rejected": dict(sorted(self._rejected.items())),
            "trades": self.ledger.trade_count,
            "finality_broken": self.ledger.broken,  # see Ledger.broken: an alarm
            "resting": {m: b.resting_count() for m, b in self.books.items()},
        }

    def usage(self) -> dict[str, int]:
        """The size of everything that grows with peers' input, next to its bound."""
        return {**self._buffer.usage(),
                "buffer_bytes_max": self._buffer.bytes_max,
                "buffer_origin_bytes_max": self._buffer.origin_bytes_max,
                "known_origins": len(self._claims), "known_origins_max": KNOWN_ORIGINS_MAX,
                "members": len(self.members()), "members_max": MEMBERS_MAX,
                "parked": len(self._parked), "parked_max": PARKED_MAX,
                "equivocations": len(self.equivocations)}

    def check_invariants(self) -> None:
        """For tests: the causal buffer, the claims and the members agree with the state."""
        self._buffer.check_invariants()
        for origin, seq in self._claims.highest.items():
            assert seq > self._clock.get(origin, 0), (origin, seq)
        assert len(self._claims) <= KNOWN_ORIGINS_MAX
        assert len(self.equivocations) <= EQUIVOCATIONS_MAX
        assert len(self._parked) <= PARKED_MAX
        if self.origin is not None:
            assert self._own_history() >= self._clock.get(self.origin, 0)

    def missing(self) -> dict[bytes, tuple[int, int]]:
        """Seq ranges others say exist (buffered events' clocks, heartbeats) that are not
        delivered: at most `MISSING_RANGES_MAX`, origins we delivered from first."""
        return self._claims.ranges(MISSING_RANGES_MAX)

    def events_for(self, their_clock: Mapping[bytes, int], limit: int
                   ) -> list[bytes | tuple[bytes, int]]:
        """Raw events delivered here that `their_clock` lacks, causes first, at most `limit`;
        a settled event (`compact`) as `(origin, seq)`, for the caller to read from its
        store. A peer's clock that is not a map of ints asks for nothing."""
        if type(limit) is not int or limit <= 0 or not isinstance(their_clock, Mapping):
            return []
        streams = []
        try:
            for o, events in self._events.items():
                have = their_clock.get(o, 0)
                if type(have) is int and 0 <= have < len(events):
                    # (below a chain's base: what we hold, the rest from other peers)
                    streams.append(map(events.__getitem__,
                                       range(max(have, events.base), len(events))))
        except Exception:  # an odd mapping from a peer: nothing to send it
            return []
        merged = heapq.merge(*streams, key=lambda e: e.key)
        return [(e.origin, e.seq) if type(e) is Settled else e.raw
                for e in islice(merged, min(limit, self._stats["events_delivered"]))]
