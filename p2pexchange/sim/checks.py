"""What the simulation checks after every step: nothing reported final ever changes.

Theory of operation. A `FinalView` remembers, for one honest replica, everything it
has reported final so far: the applied event ids with actions (an acknowledgement
changes nothing) up to and including its final key,
and the trades of those events, in applied order. After every step it compares the
replica's applied sequence and trades with that record: the record must still be a
prefix of them (it may only grow), and the final key may never go down. The
`Ledger` holds the longest final history any honest replica has reported; every
view must be a prefix of it or extend it, so two honest replicas never hold
different final histories. Both compare lists of ids and trade tuples (C-speed
list equality), so a check costs O(history) per replica and step. The `Ledger` also
keeps the prefix state first reported for each key final somewhere (membership and each
origin's latest event as that final prefix decides them, `Replica.prefix_state`: what a
snapshot of it would record); every honest replica holding the key final must report
the same.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Sequence

from ..core.clock import OrderKey
from ..core.orders import Trade
from ..core.replica import Replica


class FinalityViolation(AssertionError):
    """Something a replica had reported as final changed afterwards, or two honest
    replicas reported different final histories."""


class LivenessFailure(AssertionError):
    """After healing, without equivocation, the replicas did not converge, or events
    with actions did not become final, within the budget of rounds."""


def with_actions(replica: Replica) -> list[bytes]:
    """The applied event ids less those without effect: acknowledgements, and void
    events (a removed member's beyond its cut). Those change no book and no trade, and
    may sort anywhere after the leave or the cut, final stretch included: one a member
    signs after its leave is final elsewhere, or one a removed member signed in a
    partition that arrives after its removal (core/finality.py)."""
    return replica.ledger.event_ids(acting=True)


class FinalView:
    """What one honest replica has reported final so far."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.ids: list[bytes] = []  # final events with actions, in applied order
        self.trades: list[Trade] = []
        self.frontier: OrderKey | None = None
        self._stretch: list[bytes] = []  # every final event id, acknowledgements included
        self.prefixes_upto: OrderKey | None = None  # prefix states compared up to here

    def observe(self, replica: Replica) -> int:
        """Check `replica` against the record, extend the record; returns how many
        events became final (the record's old length is where they start)."""
        applied = replica.applied_ids()
        n = len(self.ids)
        start = len(self._stretch)
        if applied[:start] != self._stretch:  # the fast path failed: compare what counts
            ids = with_actions(replica)
            if ids[:n] != self.ids:
                at = next(i for i in range(n) if i >= len(ids) or ids[i] != self.ids[i])
                raise FinalityViolation(f"{self.name}: final event #{at} of {n} changed "
                                        "or moved")
            start = 0  # an acknowledgement sorted into the final stretch: re-anchor
        if replica.trades()[:len(self.trades)] != self.trades:
            raise FinalityViolation(f"{self.name}: a trade of a final event changed")
        frontier = replica.final_key()
        # Also across a restart: the frontier is a function of the delivered events, and
        # a replica counts any regression of the rule it had to hide (a tripwire).
        if self.frontier is not None and (frontier is None or frontier < self.frontier):
            raise FinalityViolation(f"{self.name}: final key went back from "
                                    f"{self.frontier} to {frontier}")
        if replica.stats()["frontier_regressions"]:
            raise FinalityViolation(f"{self.name}: the rule's frontier went back")
        if replica.ledger.broken:  # a compacted replica met what the rule rules out
            raise FinalityViolation(f"{self.name}: {replica.ledger.broken_detail}")
        if frontier is None:
            return 0
        self.frontier = frontier
        event = replica.event
        k = start
        while k < len(applied) and event(applied[k]).key <= frontier:
            k += 1
        acts = replica.ledger.acts
        if start == 0:
            self.ids = [i for i in applied[:k] if acts(i)]
        else:
            self.ids.extend(i for i in applied[start:k] if acts(i))
        self._stretch = applied[:k]
        for i in self.ids[n:]:
            self.trades.extend(replica.trades_of(i))
        return len(self.ids) - n


class Ledger:
    """The longest final history any honest replica has reported, and the prefix
    state (`Replica.prefix_state`: membership, each origin's latest event) first
    reported for each key final somewhere."""

    def __init__(self) -> None:
        self.ids: list[bytes] = []
        self.trades: dict[bytes, tuple[Trade, ...]] = {}
        self.prefixes: dict[OrderKey, tuple] = {}
        self._prefix_keys: list[OrderKey] = []  # sorted
        self.prefix_checks = 0
        self.checkpoints: dict[int, bytes] = {}  # n -> H_N first taken
        self._checkpoint_ns: list[int] = []  # its keys, ascending
        self.checkpoint_checks = 0

    def agree_checkpoints(self, name: str, replica: Replica) -> None:
        """Each checkpoint the replica took (core/checkpoint.py) has the hash the first
        honest replica to take it computed, and between its first and its latest the
        replica took every checkpoint any honest replica took, and no other: the same
        sequence of n (protocols/heartbeat.md, "Checkpoints")."""
        for n, digest in replica.checkpoints.items():
            first = self.checkpoints.get(n)
            if first is None:
                self.checkpoints[n] = digest
                insort(self._checkpoint_ns, n)
            elif first != digest:
                raise FinalityViolation(f"{name}: checkpoint {n} differs from another "
                                        "honest replica's")
            self.checkpoint_checks += 1
        taken = list(replica.checkpoints)
        if taken:
            ns = self._checkpoint_ns
            others = ns[bisect_left(ns, taken[0]):bisect_right(ns, taken[-1])]
            if others != taken:
                raise FinalityViolation(f"{name}: checkpoints {sorted(set(others) ^ set(taken))}"
                                        " taken by one honest replica and not another")

    def agree_prefixes(self, honest: Sequence[tuple[FinalView, Replica]]) -> None:
        """Every honest replica that holds a key final (one final somewhere) reports the
        prefix state first reported for it: compared once per key and replica, when the
        key is first seen or when the replica's frontier passes it."""
        new = []
        for view, replica in honest:
            if view.frontier is not None and view.frontier not in self.prefixes:
                self.prefixes[view.frontier] = replica.prefix_state(view.frontier)
                insort(self._prefix_keys, view.frontier)
                new.append(view.frontier)
        keys = self._prefix_keys
        for view, replica in honest:
            frontier, upto = view.frontier, view.prefixes_upto
            if frontier is None:
                continue
            due = keys[bisect_right(keys, upto):bisect_right(keys, frontier)] \
                if upto is not None else keys[:bisect_right(keys, frontier)]
            due += [k for k in new if upto is not None and k <= upto]
            for key in due:
                if replica.prefix_state(key) != self.prefixes[key]:
                    raise FinalityViolation(f"{view.name}: the membership or the latest "
                                            f"events of the final prefix up to {key} "
                                            "differ from another honest replica's")
                self.prefix_checks += 1
            view.prefixes_upto = frontier

    def agree(self, view: FinalView, replica: Replica, new: int) -> None:
        """`view` just grew by `new` events; they must match the ledger where it has
        them, and extend it where it does not."""
        start = len(view.ids) - new
        for i in range(start, len(view.ids)):
            event_id = view.ids[i]
            trades = tuple(replica.trades_of(event_id))
            if i < len(self.ids):
                if self.ids[i] != event_id or self.trades[event_id] != trades:
                    raise FinalityViolation(f"{view.name}: final event #{i} differs from "
                                            f"another honest replica's final history")
            else:
                self.ids.append(event_id)
                self.trades[event_id] = trades
