"""The replica: causal delivery, one total order, rollback and replay, finality, digest.

Theory of operation. A replica is fed bytes (events from any peer, in any
order, with duplicates) and heartbeats, and returns what happened; it never
performs I/O, reads a clock or draws a random number, so two replicas fed the
same events end in the same state whatever the arrival order.

1. Admission. `decode_event` checks everything stateless (schema, signature,
   ...). The replica then rejects a seq already seen with other content
   (equivocation; the two signed versions are kept as proof in `equivocations`),
   ignores exact duplicates, and rejects an event whose clock claims more of this
   replica's own history than its origin ever signed (`impossible_clock`, see 6).
2. Causal delivery. An event is delivered once the replica has delivered
   everything its vector clock names (which includes its origin's previous
   seq). Until then it waits in the causal buffer (buffer.py), registered on
   the exact (origin, seq) it still lacks; delivering that one wakes only its waiters,
   and each waiter resumes scanning its clock where it stopped (a clock only
   grows), so releasing n buffered events costs O(n + their clock entries),
   whatever order they arrived in. On delivery, judged from its causal past
   alone: every cause it names must be the version delivered here, by id (else
   `fork`: someone equivocated); its Lamport time must be 1 + the largest among
   its causes (`bad_lamport`); its clock may not fall behind its origin's previous
   event's (`clock_regression`: an origin cannot take back what it acknowledged);
   and with a genesis, its origin must be a member (`not_member`, core/finality.py)
   that has not left (`left`: after its leave, an origin's events carry no actions).
3. Total order. Delivered events are applied in order of `Event.key`:
   `(lamport, rank, origin, seq)`, where `rank` puts cancels-only events
   before concurrent places, and membership events last. This order extends
   causality, so a cancel always comes after the place it names. Applying is
   the ledger's (core/ledger.py): an event that sorts before applied ones
   undoes them and applies them again after it, at a cost that grows with the
   events undone, never with the size of the book or of the history.
4. Digest. The ledger's running SHA-256 over each applied event id that acts and
   its trades; two replicas with the same delivered set have the same digest.
5. Finality. core/finality.py: explicit membership (a genesis, joins, leaves) and
   a commit rule over the members' latest delivered events, with no timeout and
   no clock: what it reports final never changes, and a silent member stalls it
   visibly (`Finality.waiting_for`). The replica's side of it (its frontier,
   membership queries, the figures) is core/commit.py, a part of `Replica` like the
   removal votes' side (core/voting.py). `wants_ack` tells the shell when to sign an
   empty event (an acknowledgement) so the rule can progress. Without a genesis
   (replaying tools, tests of order) every origin is admitted and nothing is final.
   Heartbeats are hints for sync only (`on_heartbeat`): nothing they say can
   make anything final.
6. Own history. The replica's own seq is what its own history says: its
   store, replayed into it. Claims about it by others (a clock entry in
   someone's event, a heartbeat) never stop it from creating events; a claim
   beyond anything this origin signed is evidence against the claimant and is
   rejected (`impossible_clock`). Only an event signed by our own key with a
   seq we do not hold (our store lost it: an operator restored an old data
   dir, or a power cut took the last write) makes `create_event` refuse with
   `OwnHistoryBehind` until sync brings our history back: a new event then
   would reuse a seq, which every peer rejects as equivocation. Nobody but us
   can sign such an event, so nobody can freeze us with it.

Limits. A misbehaving peer's input is a `Receipt` with status "rejected" and a
code (or a code returned by `on_heartbeat`), never an exception: the checks run
before any state changes, and a last `except Exception` around them turns what
they did not foresee into `malformed`. An AssertionError is our bug and is never
converted; neither is a failure while applying an event that passed every check
(the state would be half-changed, and a replica that silently diverges is worse
than one that stops). Everything that grows with peers' input is bounded:
- the causal buffer holds at most `BUFFER_BYTES_MAX` accounted bytes (raw bytes
  plus an estimate of the decoded event and its index entries), of which one
  origin's events at most `BUFFER_ORIGIN_BYTES_MAX`. Over an origin's quota its
  highest seqs go first (the ones furthest from delivery); when the whole
  buffer is full, the origin using the most (ties: the lowest origin bytes)
  loses its highest seq. The incoming event may be the one that goes
  (`buffer_full`). Evicted events come back through sync, which sends causes
  first and so never needs the buffer: the buffer only saves round trips.
- claims (seqs others say exist that we lack) are kept for at most
  `KNOWN_ORIGINS_MAX` origins; beyond that the oldest claim about an origin we
  never delivered from goes first. `missing()` returns at most
  `MISSING_RANGES_MAX` ranges, origins we have delivered from first, in O(that)
  time. It is a hint for sync, never an input to safety: a lie only makes the
  shell pull more.
- proofs of equivocation: at most `EQUIVOCATIONS_MAX`.
Business outcomes (a rejected cancel, a post-only that would take) are recorded
identically on every replica. The delivered history itself is the state and grows
with what the network trades; `compact` keeps what is final in a compact form
(core/settled.py: no actions, bytes or undo records), which changes no answer.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice

from libp2p.crypto.keys import PrivateKey

from .book import OrderBook
from .buffer import KNOWN_ORIGINS_MAX, CausalBuffer, Claims
from .clock import OrderKey, VectorClock
from .commit import Commit
from .events import (
    CLOCK_ORIGINS_MAX,
    MEMBERSHIP_MARKET,
    ORIGIN_BYTES_MAX,
    SEQ_MAX,
    Action,
    Event,
    EventRejected,
    decode_event,
    short_id,
    sign_event,
)
from .finality import MEMBERS_MAX, Membership
from .ledger import Ledger
from .market import Market
from .orders import Order, Trade
from .params import BUFFER_BYTES_MAX, BUFFER_ORIGIN_BYTES_MAX
from .settled import Settled, settle_chain
from .voting import CannotSign, Voting

MISSING_RANGES_MAX = 64  # ranges one missing() call or one receipt reports
EQUIVOCATIONS_MAX = 256  # proofs of equivocation kept (the first ones)
PARKED_MAX = 256  # newcomers' first events waiting for their join to be decided
OWN_CLOSED_MAX = 10_000  # our own closed orders kept for queries once the books forget them

assert MISSING_RANGES_MAX <= KNOWN_ORIGINS_MAX


class OwnHistoryBehind(Exception):
    """An event signed by this replica's own key has a seq the replica does not hold:
    its store lost history, and a new event would reuse a seq. Sync first."""


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


class Replica(Voting, Commit):
    """Deterministic replicated state for a set of markets; see the module docstring."""

    def __init__(self, markets: Mapping[str, Market], origin: bytes | None = None, *,
                 genesis: Iterable[bytes] | None = None,
                 buffer_bytes_max: int = BUFFER_BYTES_MAX,
                 buffer_origin_bytes_max: int = BUFFER_ORIGIN_BYTES_MAX) -> None:
        self.markets = dict(markets)
        # Without a genesis the replica admits every origin and reports nothing final:
        # for replaying and comparing histories (verify, benchmarks, tests of order).
        self.membership = Membership(genesis) if genesis is not None else None
        self.origin = origin
        self.ledger = Ledger(self.markets)
        self.books = self.ledger.books
        self._clock: dict[bytes, int] = {}
        self._events: dict[bytes, list[Event]] = {}  # origin -> delivered events by seq-1
        self._settled: dict[bytes, int] = {}  # origin -> its events settled (compact)
        # Our own orders the books forgot at `compact` (closed in a final step), newest
        # last, at most OWN_CLOSED_MAX: what the node's API still shows of them.
        self._own_closed: OrderedDict[bytes, Order] = OrderedDict()
        self._by_id: dict[bytes, Event] = {}
        self._lamport = 0
        self._buffer = CausalBuffer(self._clock, buffer_bytes_max, buffer_origin_bytes_max)
        self._claims = Claims(self._clock, KNOWN_ORIGINS_MAX)
        self._own_signed = 0  # highest seq seen signed by our own key (our history's end)
        # Delivered but not yet applied, while `receive_many` runs: (event, its receipt).
        self._deferred: list[tuple[Event, Receipt]] | None = None
        self._final_seen: OrderKey | None = None  # highest frontier ever reported
        self._final_at = (-1, None)  # (events delivered, frontier) of the last computation
        self._stats = {"events_delivered": 0, "rollbacks": 0, "events_reapplied": 0,
                       "duplicates": 0, "late_after_final": 0, "frontier_regressions": 0,
                       "parked_dropped": 0, "displaced": 0}
        self._parked: dict[bytes, Event] = {}  # newcomer -> its first event (see _park)
        # Evidence against origins: (origin, seq) -> the two signed versions (raw bytes).
        self.equivocations: dict[tuple[bytes, int], tuple[bytes, bytes]] = {}
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

    def event(self, event_id: bytes) -> Event | None:
        return self._by_id.get(event_id)

    def events_of(self, origin: bytes, after_seq: int = 0) -> list[Event]:
        """Delivered events of `origin` with seq > `after_seq`, in seq order."""
        return self._events.get(origin, [])[max(0, after_seq):]

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
                    streams.append(map(events.__getitem__, range(have, len(events))))
        except Exception:  # an odd mapping from a peer: nothing to send it
            return []
        merged = heapq.merge(*streams, key=lambda e: e.key)
        return [(e.origin, e.seq) if type(e) is Settled else e.raw
                for e in islice(merged, min(limit, self._stats["events_delivered"]))]

    def compact(self) -> int:
        """Keep what is final in a compact form (core/settled.py): final events as
        `Settled`, the ledger's final entries without their events and undo records, the
        books without the orders that left them in final steps (a cancel of one is
        answered from the ledger's records). Changes no outcome, digest or verdict; of
        the queries, `events_for` names settled events instead of giving their bytes,
        `event` gives a `Settled`, and `order` knows only our own last OWN_CLOSED_MAX of
        the forgotten orders.
        Returns how many events are settled in all."""
        frontier = self.final_key()
        if frontier is None:
            return sum(self._settled.values())
        by_id = self._by_id
        for origin, chain in self._events.items():
            start = self._settled.get(origin, 0)
            end = settle_chain(chain, start, frontier)
            for i in range(start, end):
                by_id[chain[i].id] = chain[i]
            self._settled[origin] = end
        own, me = self._own_closed, self.origin
        for order in self.ledger.settle(self.ledger.count_upto(frontier)):
            if order.origin == me:
                own[order.order_id] = order
        while len(own) > OWN_CLOSED_MAX:
            own.popitem(last=False)
        return sum(self._settled.values())

    # -- inputs ------------------------------------------------------------------

    def receive(self, raw: bytes) -> Receipt:
        """Admit one event from the wire. Never raises on bad input."""
        try:
            event = decode_event(raw, self.markets)
        except EventRejected as rejected:
            return self._reject(rejected.code, rejected.detail)
        return self.admit(event)

    def receive_many(self, items: Sequence[bytes | Event]) -> list[Receipt]:
        """Admit several events, raw from the wire or already decoded and verified (a
        receipt each), then apply everything they made deliverable in one pass: a batch
        that arrived out of order costs one rollback, down to its earliest event,
        instead of one per event. The resulting state is the same as receiving them one
        by one. Never raises on bad input."""
        assert self._deferred is None, "receive_many is not reentrant"
        self._deferred = []
        try:
            return [self.admit(item) if type(item) is Event else self.receive(item)
                    for item in items]
        finally:
            deferred, self._deferred = self._deferred, None
            self._apply_delivered(deferred)

    def create_event(self, private_key: PrivateKey, market: str,
                     actions: Sequence[Action]) -> tuple[Event, Receipt]:
        """Sign a new event of this replica's origin and deliver it locally: market
        actions, or (market "") joins, or nothing at all (an acknowledgement)."""
        assert self.origin is not None, "a replica without an origin cannot create events"
        assert market in self.markets or market == MEMBERSHIP_MARKET, market
        seq = self._clock.get(self.origin, 0) + 1
        if self._own_signed >= seq:
            # An event signed by our key has a seq we lack (the store lost it): a new
            # event now would reuse a seq, which every peer would reject as equivocation.
            raise OwnHistoryBehind(f"we signed seq {self._own_signed} but hold {seq - 1}: "
                                   f"sync before creating events")
        events = self._events
        named = self._next_past()[0]
        clock = {o: (s, events[o][s - 1].id) for o, s in named.items() if s}
        lamport = self._lamport if named is self._clock else \
            max((events[o][s - 1].lamport for o, s in named.items() if s), default=0)
        event = sign_event(private_key, self.origin, seq, clock, lamport + 1,
                           market, tuple(actions))
        if self.membership is not None and (
                verdict := self.membership.verdict(event, self._events)) is not None:
            # Our standing votes bound what we may cover, and no causal past we could
            # name keeps every bound (a corner of frozen coverage): sign nothing now.
            raise CannotSign(f"{verdict[0]}: {verdict[1]}")
        receipt = self.admit(event)
        assert receipt.status == "delivered", receipt
        return event, receipt

    def admit(self, event: Event) -> Receipt:
        """Admit an already decoded and verified event. Never raises on bad input."""
        try:
            verdict = self._check(event)
            unmet = self._buffer.first_unmet(event) if verdict is None else None
        except AssertionError:
            raise
        except Exception as exc:  # input the checks did not foresee: refused all the same
            return self._reject("malformed", f"unexpected {type(exc).__name__}")
        if verdict is not None:
            return verdict
        if unmet is not None:
            return self._buffer_event(event, *unmet)
        receipt = Receipt("delivered", event=event)
        rejected = self._deliver_chain(event, receipt)
        self._release_parked(receipt)
        if rejected is not None and not receipt.delivered:
            return rejected
        if not receipt.delivered:  # a newcomer's first event, waiting for its join
            receipt.status = "buffered"
        return receipt

    def precheck(self, event: Event) -> str | None:
        """What the current state already says against a decoded `event`, without
        changing anything, so that gossip can refuse it before forwarding it: the code
        `admit` would give (`equivocation`, `impossible_clock`, or `bad_lamport` once
        all its causes are here), or None (a duplicate is not wrong)."""
        previous = self._delivered_or_buffered(event.origin, event.seq)
        if previous is not None:
            if previous.id == event.id or self._displaces(previous, event):
                return None
            return "equivocation"
        me = self.origin
        if me is not None and event.origin != me and event.clock.get(me, 0) > self._own_history():
            return "impossible_clock"
        clock = self._clock
        if all(clock.get(o, 0) >= s for o, s in event.clock.items()):
            verdict = self._delivery_verdict(event)
            if verdict is not None and verdict[0] != "undecided":  # waiting is no fault
                return verdict[0]
        return None

    def prove_equivocation(self, event: Event) -> bool:
        """Keep the proof a decoded, verified `event` makes if this replica holds another
        version of its (origin, seq) whole, delivered or waiting. False if it holds none,
        the same one, or a settled one (whose bytes the node's store has: the node then
        builds the proof itself, `note_equivocation`). Changes nothing else."""
        previous = self._delivered_or_buffered(event.origin, event.seq)
        if previous is None or type(previous) is Settled:
            return False
        return self.note_equivocation(previous, event)

    def note_equivocation(self, first: Event, second: Event) -> bool:
        """Keep a proof of equivocation from a peer: two decoded, verified versions of one
        (origin, seq). Changes nothing else. True if it is new here and kept (at most
        `EQUIVOCATIONS_MAX`, the first ones)."""
        key = (first.origin, first.seq)
        if (key != (second.origin, second.seq) or first.id == second.id
                or key in self.equivocations or len(self.equivocations) >= EQUIVOCATIONS_MAX):
            return False
        self.equivocations[key] = (first.raw, second.raw)
        return True

    def equivocators(self) -> set[bytes]:
        """Members some kept proof shows signing two versions of one seq."""
        return {o for o, _ in self.equivocations if self.is_member(o)}

    def on_heartbeat(self, origin: bytes, clock: Mapping[bytes, int]) -> str | None:
        """Note what a peer's heartbeat says exists (a hint for sync; finality never
        reads heartbeats). Returns None, or why it was refused: `bad_heartbeat` (types,
        sizes), `impossible_clock` (claims more of our own history than we signed: the
        sender's fault) or `malformed` (what the checks did not foresee). Never raises
        on bad input."""
        try:
            return self._on_heartbeat(origin, clock)
        except AssertionError:
            raise
        except Exception:  # input the checks did not foresee: refused all the same
            return "malformed"

    # -- newcomers waiting for their join ------------------------------------------

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

    # -- internals: admission ------------------------------------------------------

    def _reject(self, code: str, detail: str, event: Event | None = None) -> Receipt:
        self._rejected[code] = self._rejected.get(code, 0) + 1
        return Receipt("rejected", code=code, detail=detail, event=event)

    def _check(self, event: Event) -> Receipt | None:
        """Every stateful check before the event may change anything: a verdict, or None."""
        if type(event) is not Event:
            return self._reject("malformed", "not a decoded event")
        origin, seq = event.origin, event.seq
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

    def _on_heartbeat(self, origin: bytes, clock: Mapping[bytes, int]) -> str | None:
        if (type(origin) is not bytes or not 0 < len(origin) <= ORIGIN_BYTES_MAX
                or not isinstance(clock, Mapping) or len(clock) > CLOCK_ORIGINS_MAX):
            return "bad_heartbeat"
        clean: dict[bytes, int] = {}
        for o, s in clock.items():
            if (type(o) is not bytes or not 0 < len(o) <= ORIGIN_BYTES_MAX
                    or type(s) is not int or not 0 <= s <= SEQ_MAX):
                return "bad_heartbeat"
            clean[o] = s
        if self.origin is not None and clean.get(self.origin, 0) > self._own_history():
            return "impossible_clock"
        for o, s in sorted(clean.items()):
            self._claims.note(o, s)
        return None

    # -- internals: delivery -----------------------------------------------------

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
        for o, s in event.clock.items():
            cause = events[o][s - 1]
            if cause.id != heads[o]:
                return "fork", (f"names seq {s} of {short_id(o)} as {short_id(heads[o])}; "
                                f"delivered here: {short_id(cause.id)}")
            if cause.lamport > top:
                top = cause.lamport
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
        events.setdefault(origin, []).append(event)
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


def replay(markets: Mapping[str, Market], raws: Iterable[bytes],
           origin: bytes | None = None, genesis: Iterable[bytes] | None = None) -> Replica:
    """A replica fed `raws` in the given order (rejections are counted, not raised)."""
    replica = Replica(markets, origin, genesis=genesis)
    for raw in raws:
        replica.receive(raw)
    return replica
