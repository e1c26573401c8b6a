"""Membership and the commit rule: what is final, and whom finality waits for.

Theory of operation (the rule and its safety argument: protocols/finality.md).

Membership is explicit. A network starts from its genesis, a set of peer ids fixed
when it is founded. A member admits a newcomer with a `Join` action in one of its
events; the newcomer's first event must have that join in its causal past (its
clock covers the joining event), so every event of a member sorts after the event
that admitted it. An event of anyone else is refused (`not_member`). Admission is
judged from the event's causal past alone, so every replica judges it the same.

Acknowledgement is implicit. Every event's clock names, for each origin, the latest
event its author had delivered, by seq *and id*, so a clock entry pins the whole
history behind it (each event names its own predecessor by id). A member that has
delivered events with actions it has not covered yet signs an empty event (no
actions, membership market "") on its next tick: its acknowledgement.

The rule. With `head(m)` the latest event of member m delivered here, and
`covers(h, e)` meaning that e is h or in h's causal past:
- round one: `w(p)` is the highest event of p covered by every member's head;
- round two: an event e is *committed* once every `w(p)` covers it.
Everything that sorts at or before the highest committed event is final. A member
admitted by a join counts only for what sorts after its join (all its events sort
after it); a member that left (`Leave`) counts only up to its leave, once that leave
is final (its later events may carry no actions, so they change nothing wherever they
sort). No timeout, no clock and no count of peers enters the rule; it is a function
of the delivered events, and the frontier only moves forward.

Why it never lies, in short: every later event of member m extends m's chain past
head(m), so its Lamport time, and hence its sort key, is above everything head(m)
covers; a newcomer's events sort after its join, which sorts after its sponsor's
head. So nothing that can still be delivered here sorts before a committed event.
Round two makes every member's head pin the same version of every `w(p)`: a member
that signs two versions of one seq (equivocation) can make honest members deliver
different histories only while neither version is committed anywhere. What it does
not give: progress while any member is silent, partitioned away or dishonest. A
stalled frontier is visible (`waiting_for` names the members it waits for); a member
may leave, and the others remove one that no longer speaks (removal.py): once decided,
the rule stops waiting for it after its cut, and its events beyond the cut are void.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .clock import OrderKey, covered_seq, covers, last_within, witnesses
from .events import VOTE_MEMBERS_MAX, Event, Join, Leave
from .removal import Members, Past, Removal, Removals, statement

MEMBERS_MAX = 64  # a protocol constant: joins beyond it are refused in the final order
assert MEMBERS_MAX == VOTE_MEMBERS_MAX


@dataclass(frozen=True)
class PrefixMembership:
    """Membership as the final prefix up to a key decides it, whatever was delivered
    beyond: what a snapshot of that prefix records (docs/snapshot_design.md)."""

    effective: tuple[bytes, ...]  # the genesis (ascending), then decided joins in key order
    refused: tuple[bytes, ...]  # in the order of their joins
    left: tuple[tuple[bytes, int], ...]  # (member, seq of its leave), ascending
    removed: tuple[tuple[bytes, int], ...]  # (member, cut) of removals voted in the prefix


class Membership:
    """Who may originate events, and the commit rule over their latest events.

    A join makes its member a *candidate* at once: the rule waits for it from the
    join on. Once the join is final, joins are decided in the total order: the member
    becomes *effective* while fewer than `MEMBERS_MAX` are, else it is *refused* and
    the rule stops waiting for it. Only an effective member's events are delivered
    (a newcomer's first event waits, parked by the replica, until its join is
    decided), so no honest clock ever names more than `MEMBERS_MAX` origins."""

    def __init__(self, genesis: Iterable[bytes]) -> None:
        self.genesis = frozenset(genesis)
        assert self.genesis, "a network has at least one founding member"
        assert len(self.genesis) <= MEMBERS_MAX
        # Whom the rule waits for: genesis, effective and candidate members.
        self.members: dict[bytes, None] = dict.fromkeys(sorted(self.genesis))
        self.effective: set[bytes] = set(self.genesis)
        self.refused: set[bytes] = set()
        # member -> its joins: (sponsor, seq, key) of each event that admitted it
        self._joins: dict[bytes, list[tuple[bytes, int, OrderKey]]] = {}
        # (sponsor, seq) of each event with joins -> its clock: a newcomer's first event
        # must cover one of its joins and that join's clock (protocols/event.md)
        self._join_clocks: dict[tuple[bytes, int], Mapping[bytes, int]] = {}
        self._joined_at: dict[bytes, OrderKey] = {}  # member -> key of its earliest join
        self._refused_at: dict[bytes, OrderKey] = {}  # refused member -> that key
        self._left_at: dict[bytes, Event] = {}  # member -> its (delivered) leave event
        # Members whose leave is final: the rule no longer waits for them (a leave, like
        # everything final, is never undone).
        self.gone: set[bytes] = set()
        # Removals of members that no longer speak (removal.py); the replica takes the
        # new ones (`take_removed`) to void their events beyond the cut.
        self.removals = Removals()
        self.removals.left_in = self._left_in
        self._removed_new: list[Removal] = []

    # -- admission -------------------------------------------------------------------

    def admissible(self, event: Event) -> str | None:
        """None, `undecided` (its join is not final yet: wait), or why `event` may not
        be delivered (its causes are all delivered)."""
        origin = event.origin
        if origin in self.genesis or event.seq > 1:
            return None  # a later event extends a chain whose first event was admitted
        clock, causes = event.clock, self._join_clocks
        if not any(clock.get(sponsor, 0) >= seq and all(
                clock.get(o, 0) >= s for o, s in causes[(sponsor, seq)].items())
                for sponsor, seq, _ in self._joins.get(origin, ())):
            return "not_member"  # it covers no join of its origin with that join's past
        if origin in self.effective:
            return None
        return "not_member" if origin in self.refused else "undecided"

    def left(self, origin: bytes) -> Event | None:
        """`origin`'s delivered leave: its later events may carry no actions."""
        return self._left_at.get(origin)

    def verdict(self, event: Event, events: Mapping[bytes, Sequence[Event]]
                ) -> tuple[str, str] | None:
        """Why `event` breaks a rule of removal statements (removal.py), or None."""
        removals = self.removals
        vote = statement(event)
        if vote is None and event.origin not in removals.votes:
            return None  # the common case: no statement, and no vote of its origin
        past = Past(events, event)
        known = self.known_members(past) if vote is not None else ()
        return removals.verdict(event, known, past)

    def known_members(self, past: Past) -> Members:
        """The effective members of a causal past, ascending: founders and members
        whose first event lies in it, less those whose leave or full set of removal votes
        lies in it. What a statement in that causal past must name as its members."""
        removals = self.removals
        known = []
        for m in self.members:
            if m not in self.genesis and not past.has(m, 1):
                continue
            if self._left_in(m, past) or removals.removed_in(m, past):
                continue
            known.append(m)
        return tuple(sorted(known))

    def _left_in(self, member: bytes, past: Past) -> bool:
        leave = self._left_at.get(member)
        return leave is not None and past.has(member, leave.seq)

    def joins_of(self, member: bytes) -> list[tuple[bytes, int, OrderKey]]:
        """The joins delivered that admit `member`: (sponsor, seq, key) of each event."""
        return list(self._joins.get(member, ()))

    def removed(self, member: bytes) -> Removal | None:
        return self.removals.decided.get(member)

    def is_void(self, event: Event) -> bool:
        """An event of a removed member beyond its cut: it counts as empty."""
        removal = self.removals.decided.get(event.origin)
        return removal is not None and event.seq > removal.cut

    def take_removed(self) -> list[Removal]:
        """Removals decided since the last call (the replica voids their events)."""
        new, self._removed_new = self._removed_new, []
        return new

    def _decide_removals(self, events: Mapping[bytes, Sequence[Event]]) -> None:
        """Decide the removals the delivered statements commit; a join in a void event
        no longer counts (none was final anywhere, so none was decided)."""
        for removal in self.removals.decide(events):
            self._removed_new.append(removal)
            for member, joins in list(self._joins.items()):
                kept = [j for j in joins if not (j[0] == removal.member and j[1] > removal.cut)]
                if len(kept) == len(joins):
                    continue
                assert member not in self.effective or kept, "a decided join was void"
                if kept:
                    self._joins[member] = kept
                    self._joined_at[member] = min(k for _, _, k in kept)
                else:
                    del self._joins[member], self._joined_at[member]
                    self.members.pop(member, None)

    def on_delivered(self, event: Event) -> None:
        """Record the joins, the leave or the removal statement of a newly delivered
        event. A void event's joins admit nobody; its leave or statement is recorded
        all the same (they are judged from causal pasts, whoever decided what)."""
        self.removals.on_delivered(event)
        if event.actions and event.actions[0].__class__ is Leave:
            self._left_at.setdefault(event.origin, event)
        elif event.actions and event.actions[0].__class__ is Join and not self.is_void(event):
            for action in event.actions:
                member = action.member  # type: ignore[union-attr]
                if member in self.genesis or member in self.refused:
                    continue
                self._joins.setdefault(member, []).append((event.origin, event.seq, event.key))
                self._join_clocks[(event.origin, event.seq)] = event.clock
                if member not in self.effective:
                    self.members.setdefault(member, None)
                if member not in self._joined_at or event.key < self._joined_at[member]:
                    self._joined_at[member] = event.key

    def is_member(self, peer: bytes) -> bool:
        """An effective member that has not left for good nor been removed: the rule
        waits for it."""
        return (peer in self.effective and peer not in self.gone
                and peer not in self.removals.decided)

    def waited_for(self) -> list[bytes]:
        """Whom the rule waits for: genesis, effective and candidate members, in order of
        admission, less those whose leave is final and those removed."""
        removed = self.removals.decided
        return [m for m in self.members if m not in self.gone and m not in removed]

    def decide(self, frontier: OrderKey | None) -> tuple[list[bytes], list[bytes]]:
        """Decide the candidates whose earliest join is final, in the total order:
        (made effective, refused)."""
        admitted: list[bytes] = []
        refused: list[bytes] = []
        if frontier is None:
            return admitted, refused
        due = sorted((key, m) for m, key in self._joined_at.items()
                     if key <= frontier and m not in self.effective)
        for _, member in due:
            if len(self.effective) < MEMBERS_MAX:
                self.effective.add(member)
                admitted.append(member)
            else:
                self.refused.add(member)
                self._refused_at[member] = self._joined_at.pop(member)
                del self.members[member]
                refused.append(member)
        return admitted, refused

    def at(self, key: OrderKey) -> PrefixMembership:
        """Membership as decided by the events up to `key`, which must be final (at most
        the frontier, and `decide` called with it): joins there are all decided (in key
        order), leaves there are final (one beyond its member's cut is void: it changes
        nothing, and may arrive late anywhere after the cut), and a removal counts if all
        its votes lie there
        (every replica holding them final decided it, with the same cut:
        tests/test_removal.py). A function of that prefix alone, so every replica that
        holds `key` final reports the same, now and later."""
        joined = sorted((k, m) for m, k in self._joined_at.items()
                        if k <= key and m in self.effective)
        return PrefixMembership(
            tuple(sorted(self.genesis)) + tuple(m for _, m in joined),
            tuple(m for _, m in sorted((k, m) for m, k in self._refused_at.items() if k <= key)),
            tuple(sorted((m, e.seq) for m, e in self._left_at.items()
                         if e.key <= key and not self.is_void(e))),
            tuple(sorted((m, r.cut) for m, r in self.removals.decided.items()
                         if all(v.key <= key for v in r.votes))))

    def restore(self, prefix: PrefixMembership, events: Iterable[Event]) -> None:
        """Start from a checkpoint's membership (`Replica.install`), with the prefix events
        the replica was given (verified along their chains): their joins of effective
        members (a silent member's first event must cover one) and the leaves the
        membership names. Joins and refusals take placeholder keys below every real key,
        in the prefix's order: they are decided, and everything up to the checkpoint is
        final, so no boundary of the rule below it matters, only their order."""
        assert len(self.members) == len(self.genesis) and not self._joins, "restore once"
        assert prefix.effective[:len(self.genesis)] == tuple(sorted(self.genesis))
        assert not prefix.removed, "a checkpoint with removals is not installed"
        for i, member in enumerate(prefix.effective[len(self.genesis):]):
            self._joined_at[member] = (0, 0, b"", i + 1)
        for i, member in enumerate(prefix.refused):
            self._refused_at[member] = (0, 0, b"", i + 1)
        self.members = dict.fromkeys(prefix.effective)
        self.effective = set(prefix.effective)
        self.refused = set(prefix.refused)
        leaves = dict(prefix.left)
        for event in sorted(events, key=lambda e: e.key):
            first = event.actions[0] if event.actions else None
            if first.__class__ is Join:
                for action in event.actions:
                    if action.member in self.effective and action.member not in self.genesis:
                        self._joins.setdefault(action.member, []).append(
                            (event.origin, event.seq, event.key))
                        self._join_clocks[(event.origin, event.seq)] = event.clock
            elif first.__class__ is Leave and leaves.get(event.origin) == event.seq:
                self._left_at[event.origin] = event
        assert set(self._left_at) == set(leaves), "every leave comes with its event"
        self.gone = set(leaves)

    def frontier(self, events: Mapping[bytes, Sequence[Event]]) -> OrderKey | None:
        """The key of the highest committed event (everything up to it is final), or
        None while nothing is. `events` holds each origin's delivered events by seq.

        A member admitted by a join needs to acknowledge only what sorts after its
        earliest join: all its events sort after that join. A member that left needs to
        acknowledge only what sorts up to its leave, once that leave is final: its later
        events carry no actions, so wherever they sort they change nothing. So the rule
        runs once per stretch of the total order between two such boundaries (joins,
        and leaves already final), each time over the members that count there; the
        frontier is the highest result. A leave found final makes the rule run again.
        It depends on the delivered events alone, so a replica rebuilt from them
        reports the same."""
        self._decide_removals(events)
        # A removed member is waited for nowhere: every event of it that counts (up to
        # its cut) is delivered here (the votes name them), the rest are void.
        removed = self.removals.decided
        while True:
            boundaries = sorted(
                [(key, 0, m) for m, key in self._joined_at.items() if m not in removed]
                + [(e.key, 1, m) for m, e in self._left_at.items()
                   if m in self.gone and m not in removed])
            required = sorted(m for m in self.genesis if m not in removed)
            best = None
            for k in range(len(boundaries) + 1):
                bound = boundaries[k][0] if k < len(boundaries) else None
                found = _committed(required, events, bound, removed)
                if found is not None and (best is None or found > best):
                    best = found
                if k < len(boundaries):
                    _, leaving, member = boundaries[k]
                    if leaving:
                        required.remove(member)
                    else:
                        required.append(member)
            newly_gone = [m for m, e in self._left_at.items()
                          if m not in self.gone and best is not None and e.key <= best]
            if not newly_gone:
                return best
            self.gone.update(newly_gone)

    def waiting_for(self, events: Mapping[bytes, Sequence[Event]],
                    pending: Event | None) -> list[bytes]:
        """The members whose next event would move finality past `pending` (the first
        event not final): those whose head does not cover it, or else those whose head
        does not cover every member's acknowledgement of it. A candidate cannot speak
        before its join is decided, which waits for the effective members: while one of
        them lags in either round, that one is named, not the candidate."""
        if pending is None:
            return []
        heads = {m: (events.get(m) or [None])[-1] for m in self.waited_for()}
        first = [m for m, h in heads.items()
                 if h is None or not covers(h, pending.origin, pending.seq)]
        if first:
            lagging = [m for m in first if m in self.effective]
            if lagging:
                return lagging
            heads = {m: h for m, h in heads.items() if m in self.effective}
        acks = [h for h in heads.values() if h is not None]
        second = [m for m, h in heads.items()
                  if h is None or not all(covers(h, a.origin, a.seq) for a in acks)]
        return second or first


def _committed(members: Sequence[bytes], events: Mapping[bytes, Sequence[Event]],
               bound: OrderKey | None, others: Iterable[bytes] = ()) -> OrderKey | None:
    """The two-round rule over `members`: the key of the highest event committed by
    them and sorting at or before `bound` (None: no bound), or None. Events of
    `others` (removed members) count too when every witness covers them."""
    if not members:
        return None  # a stretch waited on by nobody (its members all removed)
    heads = []
    for member in members:
        chain = events.get(member)
        if not chain:
            return None  # a member that never spoke covers nothing
        heads.append(chain[-1])
    # Round one: for each member p, the highest event of p every member's head covers.
    found = witnesses(members, heads, lambda p, w: events[p][w - 1])
    if found is None:
        return None
    # Round two: per origin, the highest seq every witness covers (within the bound).
    best = None
    for origin in [*members, *(o for o in others if events.get(o))]:
        c = min(covered_seq(w, origin) for w in found)
        chain = events[origin]
        base = getattr(chain, "base", 0)  # (started from a checkpoint: final below)
        if bound is not None:  # the last one within the bound
            c = last_within(chain, base, max(c, base), bound)
        if c > base and (best is None or chain[c - 1].key > best):
            best = chain[c - 1].key
    return best
