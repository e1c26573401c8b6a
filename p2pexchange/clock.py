"""Vector clocks and the total order.

Theory of operation: a vector clock maps an origin (peer id bytes) to the
highest seq of that origin delivered so far; absent means 0. Event `e`
causally precedes `f` when `f`'s clock covers `(e.origin, e.seq)`. Causal
order is partial, so replicas also need one total order that they compute
alone: `(lamport, origin, seq)`. Because an event's Lamport time is one more
than the largest Lamport time among the events its clock names, the total
order extends the causal one: a cause always sorts before its effects.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

VectorClock = dict[bytes, int]
OrderKey = tuple[int, bytes, int]


def covers(clock: Mapping[bytes, int], origin: bytes, seq: int) -> bool:
    return clock.get(origin, 0) >= seq


def dominates(a: Mapping[bytes, int], b: Mapping[bytes, int]) -> bool:
    """True when `a` has delivered everything `b` has (a >= b entry-wise)."""
    return all(a.get(o, 0) >= s for o, s in b.items())


def merge(a: Mapping[bytes, int], b: Mapping[bytes, int]) -> VectorClock:
    out = dict(a)
    for o, s in b.items():
        if s > out.get(o, 0):
            out[o] = s
    return out


def missing(have: Mapping[bytes, int], want: Mapping[bytes, int]) -> dict[bytes, tuple[int, int]]:
    """For each origin where `want` is ahead of `have`: the seq range (first, last) lacking."""
    return {o: (have.get(o, 0) + 1, s) for o, s in sorted(want.items()) if s > have.get(o, 0)}


def canonical_clock(clock: Mapping[bytes, int]) -> VectorClock:
    """Sorted, without zero entries: the form that is encoded and hashed."""
    return {o: s for o, s in sorted(clock.items()) if s > 0}


def order_key(lamport: int, origin: bytes, seq: int) -> OrderKey:
    return (lamport, origin, seq)


def max_key(keys: Iterable[OrderKey]) -> OrderKey | None:
    return max(keys, default=None)
