"""Events a dishonest member signs outside `Replica.create_event`.

Theory of operation. Three behaviours, each an attempt to put an event before
something honest replicas may already report final:
- backdate: sign with the clock of one's own previous event, ignoring everything
  delivered since, so the event gets a Lamport time (and a sort key) far below the
  present. This is legal (a slow node does the same); the author delivers it itself.
- regression: sign with a clock that omits events one's previous event covered.
  Every replica must refuse it (`clock_regression`); its author never delivers it, so
  its next honest event reuses the seq (a second version nobody could deliver).
- equivocation: two versions of one seq, sent to two halves of the network (the
  simulation runs the second version as a second persona with the same key).
Each Lamport time is computed honestly from the clock used, so the only thing wrong
with an event is what the behaviour says.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from libp2p.crypto.keys import PrivateKey

from ..core.events import Action, Event, sign_event
from ..core.replica import Replica

Clock = dict[bytes, tuple[int, bytes]]


def _head(replica: Replica) -> Event | None:
    own = replica.events_of(replica.origin)
    return own[-1] if own else None


def backdated_clock(replica: Replica) -> Clock | None:
    """The clock of our own previous event, plus that event: nothing newer."""
    head = _head(replica)
    if head is None:
        return None
    clock = {o: (s, head.heads[o]) for o, s in head.clock.items()}
    clock[head.origin] = (head.seq, head.id)
    return clock


def regressed_clock(replica: Replica, rng: random.Random) -> Clock | None:
    """Our previous event's clock with one other origin's entry lowered or dropped."""
    clock = backdated_clock(replica)
    others = sorted(o for o in clock or () if o != replica.origin)
    if not others:
        return None
    victim = rng.choice(others)
    lower = rng.randrange(clock[victim][0])
    if lower == 0:
        del clock[victim]
    else:
        clock[victim] = (lower, replica.events_of(victim)[lower - 1].id)
    return clock


def sign_with_clock(replica: Replica, key: PrivateKey, clock: Clock, market: str,
                    actions: Sequence[Action]) -> Event:
    """An event of the replica's origin with the next seq and the given clock."""
    lamport = 1 + max(replica.event(i).lamport for _, i in clock.values())
    seq = replica.clock.get(replica.origin, 0) + 1
    return sign_event(key, replica.origin, seq, clock, lamport, market, tuple(actions))
