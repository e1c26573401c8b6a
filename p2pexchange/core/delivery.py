"""A replica's admission and causal delivery: the stateful checks of an event (points 1
and 2 of core/replica.py's theory of operation), the causal buffer's side of it,
newcomers' first events parked until their joins are decided, and handing what was
delivered to the ledger in the total order (point 3).

`Delivery` is a part of `Replica` (core/replica.py), kept apart because it is one
concern: the path of one event from "decoded and verified" to "applied". It reads and
extends the delivered chains (`_events`, `_by_id`, `_clock`), the causal buffer and the
claims, and hands delivered events to the ledger. The replica's public inputs (`admit`,
`receive_many`, `create_event`, `precheck`) call into it; every verdict it gives is a
`Receipt`, never an exception (the replica's module docstring, "Limits").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import islice
from typing import TYPE_CHECKING

from .events import Event, short_id
from .settled import BeforeSnapshot, Chain, Settled

if TYPE_CHECKING:
    from .buffer import CausalBuffer, Claims
    from .clock import OrderKey
    from .finality import Membership
    from .ledger import Ledger
    from .orders import Trade

MISSING_RANGES_MAX = 64  # ranges one missing() call or one receipt reports
PARKED_MAX = 256  # newcomers' first events waiting for their join to be decided
EQUIVOCATIONS_MAX = 256  # proofs of equivocation kept (the first ones)


@dataclass
class Receipt:
    status: str  # "delivered" | "buffered" | "duplicate" | "rejected"
    code: str | None = None
    detail: str = ""
    event: Event | None = None
    delivered: list[Event] = field(default_factory=list)
    rolled_back: int = 0
    trades: list[Trade] = field(default_factory=list)
    # For a buffered event: the seq ranges it still waits for (at most MISSING_RANGES_MAX).
    missing: dict[bytes, tuple[int, int]] = field(default_factory=dict)
    # Buffered events this input released that then failed a check at delivery, with
    # the code: their origin signed them, so the shell holds it to account.
    dropped: list[tuple[Event, str]] = field(default_factory=list)


class Delivery:
    """Admission checks and causal delivery, as one replica does them; see the module
    docstring."""

    origin: bytes | None
    membership: Membership | None
    ledger: Ledger
    _events: dict[bytes, list[Event]]
    _by_id: dict[bytes, Event | tuple]
    _clock: dict[bytes, int]
    _lamport: int
    _buffer: CausalBuffer
    _claims: Claims
    _own_signed: int
    _deferred: list[tuple[Event, Receipt]] | None
    _final_seen: OrderKey | None
    _parked: dict[bytes, Event]
    _stats: dict[str, int]

    if TYPE_CHECKING:  # the replica's own (core/replica.py, core/commit.py)
        def _reject(self, code: str, detail: str, event: Event | None = None) -> Receipt: ...
        def note_equivocation(self, first: Event, second: Event) -> bool: ...
        def final_key(self) -> OrderKey | None: ...

    def _check(self, event: Event) -> Receipt | None:
        """Every stateful check before the event may change anything: a verdict, or None."""
        if type(event) is not Event:
            return self._reject("malformed", "not a decoded event")
        origin, seq = event.origin, event.seq
        chain = self._events.get(origin)
        if chain is not None and seq <= chain.base:
            return self._reject("before_snapshot", f"seq {seq} of {short_id(origin)} is below "
                                f"the checkpoint this replica started from", event)
        previous = self._delivered_or_buffered(origin, seq)
        if previous is not None:
            if previous.id == event.id:
                self._stats["duplicates"] += 1
                return Receipt("duplicate", event=event)
            if type(previous) is not Settled:  # (a settled version's bytes: the store's)
                self.note_equivocation(previous, event)
            if not self._displaces(previous, event):
                return self._reject("equivocation", f"seq {seq} of {short_id(origin)} seen "
                                    f"with other content", event)
            self._buffer.remove(origin, seq)  # the proof is kept; the version that can
            self._stats["displaced"] += 1     # be delivered now takes its place
        me = self.origin
        if me is not None:
            if origin == me:
                self._own_signed = max(self._own_signed, seq)  # signed by our own key
            elif event.clock.get(me, 0) > self._own_history():
                return self._reject("impossible_clock", f"{short_id(origin)} claims our seq "
                                    f"{event.clock[me]}, we signed {self._own_history()}",
                                    event)
        return None

    def _displaces(self, previous: Event, event: Event) -> bool:
        """Whether `event`, another version of a seq whose first version only waits in
        the buffer, takes that version's place: it does when all its causes are here
        and the buffered one's are not. Otherwise an equivocator could sign a version
        naming a cause that never exists, let it reach a node first, and so keep that
        node from ever delivering the version everyone else holds."""
        seq = previous.seq
        if seq <= self._clock.get(previous.origin, 0):
            return False  # delivered: never displaced
        return (self._buffer.first_unmet(event) is None
                and self._buffer.first_unmet(previous) is not None)

    def _own_history(self) -> int:
        """The highest seq our own key is known to have signed."""
        assert self.origin is not None
        return max(self._clock.get(self.origin, 0), self._own_signed)

    def _delivered_or_buffered(self, origin: bytes, seq: int) -> Event | None:
        if seq <= self._clock.get(origin, 0):
            return self._events[origin][seq - 1]
        return self._buffer.get(origin, seq)

    def _buffer_event(self, event: Event, pos: int, dep: tuple[bytes, int]) -> Receipt:
        if not self._buffer.add(event, pos, dep):
            return self._reject("buffer_full", f"no room for {short_id(event.origin)} seq "
                                f"{event.seq}; it comes back through sync", event)
        claims = self._claims
        for o, s in event.clock.items():
            claims.note(o, s)
        missing = {}
        for o, s in islice(event.clock.items(), pos, None):
            have = self._clock.get(o, 0)
            if have < s:
                missing[o] = (have + 1, s)
                if len(missing) >= MISSING_RANGES_MAX:
                    break
        return Receipt("buffered", event=event, missing=missing)

    def _deliver_chain(self, first: Event, receipt: Receipt) -> Receipt | None:
        """Deliver `first` and every buffered event that becomes ready, then apply them
        together (or leave them to `receive_many`, which applies its whole batch)."""
        ready = [first]
        rejected = None
        start = len(receipt.delivered)
        while ready:
            event = ready.pop()
            verdict = self._delivery_verdict(event)
            if verdict is not None and verdict[0] == "undecided":
                self._park(event)
                continue
            if verdict is not None:
                rejected = self._reject(*verdict, event)
                if event is not first:
                    receipt.dropped.append((event, verdict[0]))
                continue
            self._deliver(event, receipt)
            ready.extend(reversed(self._buffer.release(event.origin, event.seq)))
        delivered = [(event, receipt) for event in receipt.delivered[start:]]
        if self._deferred is not None:
            self._deferred.extend(delivered)
        else:
            self._apply_delivered(delivered)
        return rejected

    def _park(self, event: Event) -> None:
        """Keep a newcomer's first event until its join is decided; at most
        `PARKED_MAX` (the rest come back through sync once their joins are decided)."""
        if event.origin in self._parked or len(self._parked) < PARKED_MAX:
            self._parked[event.origin] = event
        else:
            self._stats["parked_dropped"] += 1

    def _release_parked(self, receipt: Receipt) -> None:
        """Deliver the parked first events of newcomers whose join is now decided
        effective; refuse those whose join was refused."""
        membership = self.membership
        while self._parked:
            self.final_key()  # decides the joins that are final
            assert membership is not None
            ready = [o for o in self._parked if o in membership.effective]
            for origin in [o for o in self._parked if o in membership.refused]:
                self._reject("not_member", "its join was refused: the network is full",
                             self._parked.pop(origin))
            if not ready:
                return
            for origin in ready:  # delivering them may make further joins final
                self._deliver_chain(self._parked.pop(origin), receipt)

    def _delivery_verdict(self, event: Event) -> tuple[str, str] | None:
        """Why an event whose causes are all delivered may not be delivered, or None:
        a cause it names by id is another version than the one delivered here (`fork`:
        someone equivocated), its Lamport time is not 1 + the largest among its causes
        (`bad_lamport`), its clock is behind its origin's previous event's
        (`clock_regression`), or its origin was admitted by no join in its causal past
        (`not_member`). Each is judged from the event's causal past alone."""
        events = self._events
        heads = event.heads
        top = 0
        try:
            for o, s in event.clock.items():
                cause = events[o][s - 1]
                if cause.id != heads[o]:
                    return "fork", (f"names seq {s} of {short_id(o)} as {short_id(heads[o])}"
                                    f"; delivered here: {short_id(cause.id)}")
                if cause.lamport > top:
                    top = cause.lamport
        except BeforeSnapshot:  # (a replica started from a checkpoint lacks it)
            return "before_snapshot", ("names a cause below the checkpoint this replica "
                                       "started from")
        if event.lamport != top + 1:
            return "bad_lamport", f"lamport {event.lamport} but its clock implies {top + 1}"
        if event.seq > 1:
            clock = event.clock
            for o, s in events[event.origin][event.seq - 2].clock.items():
                if clock.get(o, 0) < s:
                    return "clock_regression", (f"names seq {clock.get(o, 0)} of {short_id(o)}"
                                                f"; its previous event named {s}")
        if self.membership is not None:
            leave = self.membership.left(event.origin)
            if leave is not None and event.actions:
                return "left", (f"{short_id(event.origin)} left the network at seq "
                                f"{leave.seq}: its later events may carry no actions")
            code = self.membership.admissible(event)
            if code == "undecided":
                return code, "its join is not final yet"
            if code is not None:
                return code, f"{short_id(event.origin)} was admitted by no join it saw"
            return self.membership.verdict(event, self._events)
        return None

    def _deliver(self, event: Event, receipt: Receipt) -> None:
        origin = event.origin
        events = self._events
        heads = event.heads
        for o, s in event.clock.items():  # name each cause by the id object it holds
            heads[o] = events[o][s - 1].id  # (equal bytes: some 65 bytes saved a name)
        chain = events.get(origin)
        if chain is None:
            chain = events[origin] = Chain()
        chain.append(event)
        self._clock[origin] = event.seq
        if origin in self._claims.highest:
            self._claims.settle(origin, event.seq)
        self._by_id[event.id] = event
        self._lamport = max(self._lamport, event.lamport)
        self._stats["events_delivered"] += 1
        if (self._final_seen is not None and event.key <= self._final_seen
                and event.actions and not self.ledger.is_void(event)):
            # The rule says this cannot happen. (An event without actions can: a member
            # whose leave is final acknowledges no more, but whatever it still signs
            # changes nothing, wherever it sorts.)
            self._stats["late_after_final"] += 1
        if self.membership is not None:
            self.membership.on_delivered(event)
        receipt.delivered.append(event)

    def _apply_delivered(self, delivered: list[tuple[Event, Receipt]]) -> None:
        """Apply newly delivered events in the total order (ledger.py): one rollback,
        down to the earliest of them. Each event's trades go to the receipt it was
        delivered under; the rollback to the receipt of the earliest."""
        if not delivered:
            return
        delivered.sort(key=lambda item: item[0].key)
        undone, trades = self.ledger.apply([event for event, _ in delivered])
        if undone:
            self._stats["rollbacks"] += 1
            self._stats["events_reapplied"] += undone
            delivered[0][1].rolled_back += undone
        for (_, receipt), made in zip(delivered, trades, strict=True):
            receipt.trades.extend(made)
        if self.membership is not None and self.membership.removals.undecided():
            self.final_key()  # a removal voids events: decided as soon as it can be
