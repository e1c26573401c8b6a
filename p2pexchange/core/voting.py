"""A replica's side of removal votes (core/removal.py): the statement its member should
sign, the bounds its standing votes put on what its next event may name (frozen
coverage), and where a member's chain first covers an event.

`Voting` is a part of `Replica` (core/replica.py), kept apart because it is one concern:
it reads the replica's delivered chains (`_events`), its clock (`_clock`), its origin and
its membership (core/finality.py), and changes nothing. The replica's `create_event`
names the clock `_next_past` gives, and `wants_ack` uses `_first_covering`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple

from .clock import covered_seq
from .events import Event, Vote
from .removal import Past, Removal

if TYPE_CHECKING:
    from .finality import Membership

NARROW_MAX = 8  # narrowing steps of a frozen voter's next clock (Voting._next_past)


class _Draft(NamedTuple):
    """The event a replica is about to sign, as far as judging its causal past needs."""

    origin: bytes
    seq: int
    clock: Mapping[bytes, int]


class CannotSign(Exception):
    """No event of ours could pass the removal rules now (core/removal.py: our standing
    votes' bounds); try again once a round closes. Nothing was signed."""


class Voting:
    """Removal votes, as seen from one replica; see the module docstring."""

    origin: bytes | None
    membership: Membership | None
    _events: dict[bytes, list[Event]]
    _clock: dict[bytes, int]

    if TYPE_CHECKING:  # the replica's own (core/replica.py)
        def is_member(self, peer: bytes) -> bool: ...
        def final_key(self) -> object: ...

    def removal_statement(self, suspects: Iterable[bytes],
                          may_open: Iterable[bytes] | None = None) -> Vote | None:
        """The removal statement (core/removal.py) this member should sign now, given the
        members it has not heard from for a while although finality waited for them (the
        shell's timeout, liveness only), or None."""
        me = self.origin
        if (me is None or self.membership is None or not self.is_member(me)
                or self.membership.left(me) is not None):
            return None  # a member that left signs no actions
        past = self._next_past()[1]
        return self.membership.removals.next_statement(
            me, self.membership.known_members(past), past, suspects, may_open)

    def opens_round(self, vote: Vote) -> bool:
        """Whether `vote` would open a round nobody has stated in yet (here)."""
        assert self.membership is not None
        return (vote.members, vote.round) not in self.membership.removals.rounds

    def removals(self) -> list[Removal]:
        """Members removed so far, in order of decision."""
        if self.membership is None:
            return []
        self.final_key()  # removals are decided with the frontier
        return list(self.membership.removals.decided.values())

    def frozen(self) -> list[bytes]:
        """The members this replica's origin voted to remove while those votes stand
        (its events then name no more of each than the votes of its round did)."""
        return sorted(self._open_votes())

    def _open_votes(self) -> dict[bytes, int]:
        """target -> how much of it our events may name, while our vote for it stands."""
        membership = self.membership
        if membership is None or self.origin is None:
            return {}
        return membership.removals.open_votes(self.origin, Past(self._events))

    def _next_past(self) -> tuple[dict[bytes, int], Past]:
        """The clock our next event names, and its causal past (the event included, as
        a draft): everything delivered, unless votes of ours to remove stand and we
        delivered more of a target than its bound allows. Then the largest causal past
        that respects every bound judged in that past itself: per origin the last
        delivered event within every bound (clocks only grow along a chain), narrowed
        again until the bounds it implies hold (they only shrink, so this ends; after
        `NARROW_MAX` steps, our previous event's clock, which held them already)."""
        me = self.origin
        assert me is not None
        clock = self._clock
        if self.membership is None or me not in self.membership.removals.votes:
            return clock, Past(self._events, _Draft(me, clock.get(me, 0) + 1, clock))
        removals = self.membership.removals
        for _ in range(NARROW_MAX):
            draft = _Draft(me, clock.get(me, 0) + 1, clock)
            past = Past(self._events, draft)
            bounds = {t: b for t, b in removals.open_votes(me, past).items()
                      if clock.get(t, 0) > b}
            if not bounds:
                return clock, past
            narrowed = self._narrowed(clock, bounds)
            if narrowed.get(me, 0) < clock.get(me, 0):
                break  # our own chain would go back: our previous event's clock held
            clock = narrowed
        own = self._events[me]
        clock = {**own[-1].clock, me: len(own)} if own else {}
        return clock, Past(self._events, _Draft(me, len(own) + 1, clock))

    def _narrowed(self, clock: Mapping[bytes, int], bounds: Mapping[bytes, int]
                  ) -> dict[bytes, int]:
        capped = {}
        for o, s in clock.items():
            chain = self._events[o]
            lo, hi = chain.base, s
            while lo < hi:
                mid = (lo + hi) // 2
                if all(covered_seq(chain[mid], t) <= b for t, b in bounds.items()):
                    lo = mid + 1
                else:
                    hi = mid
            if lo:
                capped[o] = lo
        return capped

    def _first_covering_all(self, member: bytes, targets: Sequence[Event]) -> int | None:
        """The seq of `member`'s first delivered event that covers all of `targets`."""
        firsts = [self._first_covering(member, t) for t in targets]
        return None if None in firsts else max(firsts)  # type: ignore[type-var]

    def _first_covering(self, member: bytes, event: Event) -> int | None:
        """The seq of `member`'s first delivered event that covers `event`, or None."""
        chain = self._events.get(member)
        if chain is None:
            return None
        if member == event.origin:
            return event.seq if len(chain) >= event.seq else None
        origin, seq = event.origin, event.seq
        lo, hi = chain.base, len(chain)  # clocks only grow along a chain: binary search
        while lo < hi:
            mid = (lo + hi) // 2
            if chain[mid].clock.get(origin, 0) >= seq:
                hi = mid
            else:
                lo = mid + 1
        return lo + 1 if lo < len(chain) else None
