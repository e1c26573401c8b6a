"""Vector clocks and the total order.

Theory of operation: a vector clock maps an origin (peer id bytes) to the
highest seq of that origin delivered so far; absent means 0. Event `e`
causally precedes `f` when `f`'s clock covers `(e.origin, e.seq)`. Causal
order is partial, so replicas also need one total order that they compute
alone: `(lamport, rank, origin, seq)` (`rank` 0 for a cancels-only event, 1 with
places, 2 for a membership event: concurrent cancels come before concurrent
places). Because an event's Lamport time is one more than the largest Lamport
time among the events its clock names, the total order extends the causal one:
a cause always sorts before its effects.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .events import Event

VectorClock = dict[bytes, int]
OrderKey = tuple[int, int, bytes, int]  # (lamport, rank, origin, seq): see Event.key


def covers(head: Event, origin: bytes, seq: int) -> bool:
    """Whether (origin, seq) is `head` or in its causal past."""
    if head.origin == origin:
        return head.seq >= seq
    return head.clock.get(origin, 0) >= seq


def covered_seq(head: Event | None, origin: bytes) -> int:
    """The highest seq of `origin` that `head` is or has in its causal past (0: none)."""
    if head is None:
        return 0
    if head.origin == origin:
        return head.seq
    return head.clock.get(origin, 0)


def witnesses(members: Sequence[bytes], heads: Sequence[Event],
              event_at: Callable[[bytes, int], Event]) -> list[Event] | None:
    """Round one of the commit rule (core/finality.py): for each member p, `w(p)`, p's
    highest event that every head covers (`event_at(p, seq)`), or None when some
    member has none."""
    found = []
    for p in members:
        w = min(covered_seq(h, p) for h in heads)
        if w == 0:
            return None
        found.append(event_at(p, w))
    return found


def last_within(chain: Sequence[Event], lo: int, hi: int, bound: OrderKey) -> int:
    """The index after the last event of `chain[lo:hi]` whose key is at most `bound`
    (`lo` if none): keys grow along an origin's chain, so a binary search."""
    while lo < hi:
        mid = (lo + hi) // 2
        if chain[mid].key <= bound:
            lo = mid + 1
        else:
            hi = mid
    return lo
