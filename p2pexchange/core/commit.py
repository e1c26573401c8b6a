"""A replica's side of the commit rule (core/finality.py): its membership as the rule
decides it, the frontier below which everything is final, the figures of what is final
and pending, and when its member should acknowledge so that the rule can progress.

`Commit` is a part of `Replica` (core/replica.py), kept apart because it is one concern:
it reads the replica's delivered chains (`_events`, `_by_id`), its ledger and its
membership; the only state it changes is what the rule itself decides (joins made
effective, removals whose events the ledger then counts as void) and the memo of the
last frontier (`_final_at`, `_final_seen`). `wants_ack` reads the removal votes' side
(core/voting.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .checkpoint import Checkpoint, make_checkpoint
from .clock import OrderKey, last_within
from .finality import Membership, PrefixMembership, covers
from .settled import BeforeSnapshot

if TYPE_CHECKING:
    from .events import Event
    from .ledger import Ledger
    from .settled import Settled


@dataclass(frozen=True)
class Finality:
    frontier: OrderKey | None  # events whose key is at most this are final
    final_events: int
    pending_events: int
    final_trades: int
    pending_trades: int
    waiting_for: list[bytes]  # members whose next event would move finality

    @property
    def frontier_lamport(self) -> int | None:
        return None if self.frontier is None else self.frontier[0]


class Commit:
    """The commit rule, as seen from one replica; see the module docstring."""

    origin: bytes | None
    membership: Membership | None
    ledger: Ledger
    _events: dict[bytes, list[Event]]
    _by_id: dict[bytes, Any]
    _stats: dict[str, int]
    _final_at: tuple[int, OrderKey | None]
    _final_seen: OrderKey | None
    _final_floor: OrderKey | None  # started from a checkpoint (`Replica.install`): its key
    checkpoint: Checkpoint | None  # the latest taken, in full
    checkpoints: dict[int, bytes]  # n -> H_N of the latest `checkpoints_kept` taken
    checkpoints_kept: int

    if TYPE_CHECKING:  # the replica's own (core/replica.py, core/voting.py)
        def _next_past(self) -> tuple[dict[bytes, int], Any]: ...
        def event(self, event_id: bytes) -> Event | Settled | None: ...
        def _first_covering(self, member: bytes, event: Event) -> int | None: ...
        def _first_covering_all(self, member: bytes, targets: Sequence[Event]
                                ) -> int | None: ...

    def adopt_genesis(self, genesis: Iterable[bytes]) -> None:
        """Fix the network's founding members, once, before any event is delivered (a
        newcomer learns them from its peers before it takes any event in)."""
        assert self.membership is None and not self._stats["events_delivered"]
        self.membership = Membership(genesis)
        self.ledger.captures = True  # checkpoints from the first event on

    def members(self) -> list[bytes]:
        """The effective members (genesis first), whose events are delivered."""
        membership = self.membership
        if membership is None:
            return []
        self.final_key()  # joins are decided as they become final
        return [m for m in membership.waited_for() if m in membership.effective]

    def is_member(self, peer: bytes) -> bool:
        """An effective member (its join decided, if it joined) whose leave, if it
        left, is not final yet."""
        if self.membership is None:
            return False
        self.final_key()  # joins are decided as they become final
        return self.membership.is_member(peer)

    def final_key(self) -> OrderKey | None:
        """Events whose key is at most the returned one are final; None: nothing is."""
        if self.membership is None:
            return None
        delivered = self._stats["events_delivered"]
        if self._final_at[0] != delivered:
            try:
                frontier = self._settle_joins()
            except BeforeSnapshot:  # a witness below our checkpoint's segments: the
                frontier = None     # rule cannot run here until sync fills it (alarm)
                self._stats["before_snapshot"] = self._stats.get("before_snapshot", 0) + 1
            floor = self._final_floor
            if floor is not None and (frontier is None or frontier < floor):
                frontier = floor  # started from a checkpoint: everything up to it is final
            seen = self._final_seen
            if seen is not None and (frontier is None or frontier < seen):
                # The rule is monotone in the delivered set (protocols/finality.md); a
                # tripwire for tests and the status, and what was final stays final.
                self._stats["frontier_regressions"] += 1
                frontier = seen
            self._final_at = (delivered, frontier)
            self._final_seen = frontier
        return self._final_at[1]

    def _settle_joins(self) -> OrderKey | None:
        """The rule's frontier, once every join it makes final is decided (a refused
        candidate no longer holds the rule back, so the frontier may move again)."""
        membership = self.membership
        assert membership is not None
        while True:
            frontier = membership.frontier(self._events)
            for removal in membership.take_removed():
                # Its events beyond the cut now count as empty (none is final: R1).
                undone = self.ledger.void(removal.member, removal.cut)
                if undone:
                    self._stats["rollbacks"] += 1
                    self._stats["events_reapplied"] += undone
            if not membership.decide(frontier)[1]:
                return frontier

    def prefix_state(self, key: OrderKey) -> tuple[PrefixMembership,
                                                   tuple[tuple[bytes, int, bytes], ...]]:
        """What the final prefix up to `key` (at most the frontier) decides besides the
        books: its membership, and each origin's latest event in it (origin, seq, id),
        origins ascending. A function of that prefix alone: every replica holding `key`
        final reports the same, whatever it delivered beyond (a snapshot's part:
        docs/snapshot_design.md). A removed member's events beyond its cut, and a member's
        after its leave, change nothing and may still arrive and sort anywhere after the
        cut or the leave, final stretch included: its latest is counted up to them."""
        frontier = self.final_key()
        membership = self.membership
        assert membership is not None and frontier is not None and key <= frontier
        latest = []
        for origin in sorted(self._events):
            chain = self._events[origin]
            seq = last_within(chain, chain.base, len(chain), key)
            removal, leave = membership.removed(origin), membership.left(origin)
            if removal is not None:
                seq = min(seq, removal.cut)
            if leave is not None and leave.key <= key:
                seq = min(seq, leave.seq)
            if seq:
                latest.append((origin, seq, chain[seq - 1].id))
        return membership.at(key), tuple(latest)

    def take_checkpoints(self) -> None:
        """Take every checkpoint now final and not taken yet (core/checkpoint.py): the
        ledger captured the books at each checkpoint's entry as it applied it, so this
        only builds and hashes S_N. Called between batches (the node: at each
        heartbeat) and by `compact` before it settles anything past one."""
        ledger = self.ledger
        for n, key, digest, books in ledger.take_captures(ledger.count_upto(self.final_key())):
            membership, latest = self.prefix_state(key)
            self.checkpoint = make_checkpoint(n, key, digest, books, membership, latest)
            self.checkpoints[n] = self.checkpoint.hash
            while len(self.checkpoints) > self.checkpoints_kept:
                del self.checkpoints[next(iter(self.checkpoints))]

    def finality(self) -> Finality:
        """Final versus pending events and trades, and whom finality waits for. Costs
        O(log n) plus the acknowledgements between the frontier and the first pending
        event with actions, however long finality has stalled."""
        ledger = self.ledger
        final = ledger.count_upto(self.final_key())
        final_trades = ledger.trades_in_first(final)
        first_pending = ledger.with_actions(final)
        waiting = (self.membership.waiting_for(self._events, first_pending)
                   if self.membership is not None else [])
        return Finality(self.final_key(), ledger.forgotten + final, len(ledger) - final,
                        final_trades,
                        ledger.trade_count - final_trades, waiting)

    def is_final(self, event_id: bytes) -> bool:
        event = self.event(event_id)
        frontier = self.final_key()
        return event is not None and frontier is not None and event.key <= frontier

    def wants_ack(self) -> bool:
        """Whether this member should sign an acknowledgement (an empty event) now: its
        latest event does not yet cover an event with actions that is not final, or
        does not cover some member's first acknowledgement of the earliest or the latest
        such event (the rule's second round). Each pending event asks at most two rounds of every
        member, so a stalled frontier (a silent member) does not make members
        acknowledge each other's acknowledgements for ever."""
        me = self.origin
        if me is None or not self.is_member(me):
            return False
        own = self._events.get(me)
        head = own[-1] if own else None
        frontier = self.final_key()
        events = self._events
        # Round one: delivered since our head (what it does not cover), a pending
        # event with actions. Costs what arrived since our last event, not the history.
        # (While our removal vote stands, only what our next event may name.)
        named = self._next_past()[0]
        is_void = self.ledger.is_void
        for o, s in named.items():
            covered = 0 if head is None else head.seq if o == me else head.clock.get(o, 0)
            for event in events[o][max(covered, events[o].base):s]:  # (below: final)
                if ((frontier is None or event.key > frontier) and event.actions
                        and not is_void(event)):  # (what is final may be settled)
                    return True
        if head is None:
            return False
        # A full set of removal votes among us, not decided yet: the rule's second round
        # over the voters (each voter's first event that covers every vote).
        for _, voters, votes in self.membership.removals.undecided_sets():  # type: ignore[union-attr]
            if me in voters:
                for voter in voters:
                    first = self._first_covering_all(voter, votes)
                    if (first is not None and not covers(head, voter, first)
                            and named.get(voter, 0) >= first):
                        return True
        final = self.ledger.count_upto(frontier)
        earliest = self.ledger.with_actions(final)
        if earliest is None:
            return False
        latest = self.ledger.with_actions(final, backwards=True)
        for member in self.membership.waited_for():  # type: ignore[union-attr]
            for pending in (earliest, latest):
                first = self._first_covering(member, pending)  # type: ignore[arg-type]
                if (first is not None and not covers(head, member, first)
                        and named.get(member, 0) >= first):
                    return True
        return False
