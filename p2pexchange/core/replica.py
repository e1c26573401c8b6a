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
   Admission's stateful checks, the buffering and the delivery are core/delivery.py,
   a part of `Replica` like core/commit.py and core/voting.py;
   starting from a checkpoint instead of the history is core/install.py.
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

from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence

from libp2p.crypto.keys import PrivateKey

from .buffer import KNOWN_ORIGINS_MAX, CausalBuffer, Claims
from .clock import OrderKey
from .commit import Commit
from .delivery import EQUIVOCATIONS_MAX, MISSING_RANGES_MAX, Delivery, Receipt
from .events import (
    CLOCK_ORIGINS_MAX,
    MEMBERSHIP_MARKET,
    ORIGIN_BYTES_MAX,
    SEQ_MAX,
    Action,
    Event,
    EventRejected,
    decode_event,
    sign_event,
)
from .finality import Membership
from .install import Install
from .ledger import Ledger
from .market import Market
from .orders import Order
from .params import (
    BUFFER_BYTES_MAX,
    BUFFER_ORIGIN_BYTES_MAX,
    CHECKPOINT_ACTIONS,
    CHECKPOINT_EVERY,
    CHECKPOINTS_KEPT,
)
from .queries import Queries
from .settled import Chain, Settled, settle_chain
from .voting import CannotSign, Voting

OWN_CLOSED_MAX = 10_000  # our own closed orders kept for queries once the books forget them

assert MISSING_RANGES_MAX <= KNOWN_ORIGINS_MAX


class OwnHistoryBehind(Exception):
    """An event signed by this replica's own key has a seq the replica does not hold:
    its store lost history, and a new event would reuse a seq. Sync first."""


class Replica(Queries, Delivery, Voting, Commit, Install):
    """Deterministic replicated state for a set of markets; see the module docstring."""

    def __init__(self, markets: Mapping[str, Market], origin: bytes | None = None, *,
                 genesis: Iterable[bytes] | None = None,
                 buffer_bytes_max: int = BUFFER_BYTES_MAX,
                 buffer_origin_bytes_max: int = BUFFER_ORIGIN_BYTES_MAX,
                 checkpoint_every: int = CHECKPOINT_EVERY,
                 checkpoint_actions: int = CHECKPOINT_ACTIONS, forgets: bool = False) -> None:
        self.markets = dict(markets)
        # Without a genesis the replica admits every origin and reports nothing final:
        # for replaying and comparing histories (verify, benchmarks, tests of order).
        self.membership = Membership(genesis) if genesis is not None else None
        self.origin = origin
        self.ledger = Ledger(self.markets)
        self.ledger.captures = self.membership is not None  # (or at `adopt_genesis`)
        self.books = self.ledger.books
        self._clock: dict[bytes, int] = {}
        self._events: dict[bytes, Chain] = {}  # origin -> delivered events by seq-1
        self._settled: dict[bytes, int] = {}  # origin -> its events settled (compact)
        # Whether `compact` also drops what its latest checkpoint covers (the node), and
        # per origin how many of its events that has reached.
        self.forgets = forgets
        self._forgot: dict[bytes, int] = {}
        self._forget_at: OrderKey | None = None  # where the next compaction forgets up to
        # Our own orders the books forgot at `compact` (closed in a final step), newest
        # last, at most OWN_CLOSED_MAX: what the node's API still shows of them.
        self._own_closed: OrderedDict[bytes, Order] = OrderedDict()
        self._by_id: dict[bytes, Event | tuple] = {}  # a settled one packed (settled.py)
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
        self.checkpoint_every = checkpoint_every  # both smaller in tests and the simulation
        self.checkpoint_actions = checkpoint_actions
        self.compacted = True  # the last `compact` settled everything final
        self.checkpoints_kept = CHECKPOINTS_KEPT
        self.checkpoint = None
        self.checkpoints = {}
        self._final_floor: OrderKey | None = None  # started from a checkpoint: its key

    # -- upkeep ------------------------------------------------------------------

    def compact(self, actions_max: int | None = None) -> int:
        """Keep what is final in a compact form (core/settled.py): final events as
        `Settled`, the ledger's final entries without their events and undo records, the
        books without the orders that left them in final steps (a cancel of one is
        answered from the ledger's records). Changes no outcome, digest or verdict; of
        the queries, `events_for` names settled events instead of giving their bytes,
        `event` gives a `Settled`, and `order` knows only our own last OWN_CLOSED_MAX of
        the forgotten orders. With `actions_max`, settles the final entries carrying
        that many actions at most (one at least), so that one call stays short;
        `compacted` then says whether it settled everything final.
        Returns how many events are settled in all."""
        frontier = self.final_key()
        if frontier is None:
            self.compacted = True
            return sum(self._settled.values())
        if self.membership is not None:
            self.take_checkpoints()
        final = frontier
        if actions_max is not None:
            frontier = self.ledger.frontier_within(frontier, actions_max)
        self.compacted = frontier == final
        for origin, chain in self._events.items():
            self._settled[origin] = settle_chain(chain, self._settled.get(origin, 0),
                                                 frontier, self._by_id)
        own, me = self._own_closed, self.origin
        for order in self.ledger.settle(self.ledger.count_upto(frontier)):
            if order.origin == me:
                own[order.order_id] = order
        while len(own) > OWN_CLOSED_MAX:
            own.popitem(last=False)
        if self.forgets and self.checkpoint is not None and self.compacted:
            # Up to the checkpoint that was the latest at the previous compaction: what
            # became final since stays known for a while (the node's final notices,
            # trade reports, API queries read it by id). (Bounded steps count as one
            # compaction once they have settled everything final.)
            if self._forget_at is not None:
                self._forget(self._forget_at)
            self._forget_at = self.checkpoint.key
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
        chain = self._events.get(event.origin)
        if chain is not None and event.seq <= chain.base:
            return None  # below our checkpoint: not ours to judge
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
        chain = self._events.get(event.origin)
        if chain is not None and event.seq <= chain.base:
            return False
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

    # -- internals: admission ------------------------------------------------------

    def _reject(self, code: str, detail: str, event: Event | None = None) -> Receipt:
        self._rejected[code] = self._rejected.get(code, 0) + 1
        return Receipt("rejected", code=code, detail=detail, event=event)

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


def replay(markets: Mapping[str, Market], raws: Iterable[bytes],
           origin: bytes | None = None, genesis: Iterable[bytes] | None = None) -> Replica:
    """A replica fed `raws` in the given order (rejections are counted, not raised)."""
    replica = Replica(markets, origin, genesis=genesis)
    for raw in raws:
        replica.receive(raw)
    return replica
