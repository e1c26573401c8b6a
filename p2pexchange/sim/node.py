"""One simulated node: its key, its replica, its order flow and what it reported final.

Theory of operation. A node's store is what its replica delivered (its own events
included), which is what the node's SQLite store holds; a restart builds a new
`Replica` from it, fed in a random order, and the node continues its seq chain from
there. A twin is the second persona of an equivocating member: the same key, a
replica rebuilt from the same store, then its own choices. Every event signed in a
run is remembered by its id (`known`), so a sync answer (raw bytes) is handed
to the replica as the decoded event the node's validator would have produced.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence

from ..core.events import Action, Event, Place, Vote
from ..core.market import DEFAULT_MARKETS
from ..core.removal import Suspicion
from ..core.replica import OwnHistoryBehind, Receipt, Replica
from ..core.settled import Settled
from .checks import FinalView
from .workload import OrderFlow, peer_id_bytes, seeded_key_pair

# Checkpoints at the 4th final event that acts since the previous one or, sooner, the
# first that brings their actions to 8 (events carry 1 to 4 actions, bursts up to 16):
# both rules make checkpoints (the node's: 4,096 and 65,536).
CHECKPOINT_EVERY = 4
CHECKPOINT_ACTIONS = 8
CHECKPOINTS_KEPT = 1_000_000  # every hash kept, so that every one is compared (checks.py)


class SimNode:
    def __init__(self, seed: int, index: int, members_n: int, rng: random.Random,
                 honest: bool = True, known: dict[bytes, Event] | None = None,
                 remove_after: int = 0) -> None:
        self.seed = seed
        self.index = index
        self.key = seeded_key_pair(f"sim-{seed}-{index}")
        self.origin = peer_id_bytes(self.key)
        self.genesis = [peer_id_bytes(seeded_key_pair(f"sim-{seed}-{i}"))
                        for i in range(members_n)]
        self.replica = Replica(DEFAULT_MARKETS, self.origin, genesis=self.genesis)
        self.replica.checkpoint_every = CHECKPOINT_EVERY
        self.replica.checkpoint_actions = CHECKPOINT_ACTIONS
        self.replica.checkpoints_kept = CHECKPOINTS_KEPT
        self.flow = OrderFlow(rng)
        self.honest = honest
        self.view = FinalView(f"node {index}")
        self.known = known if known is not None else {}
        self.last_receipt: Receipt | None = None
        self.left = False  # it signed its leave
        self.suspicion = Suspicion(remove_after)  # in ticks

    def removal_statement(self, tick: int) -> Vote | None:
        """The removal statement to sign this tick (the node's policy), or None."""
        replica, suspicion = self.replica, self.suspicion
        suspects = suspicion.suspects(tick, replica.finality().waiting_for)
        vote = replica.removal_statement(suspects, suspicion.may_open(tick, suspects))
        if vote is not None:
            suspicion.stated(vote, replica.opens_round(vote), tick)
        return vote

    @property
    def final_prefix(self) -> list[bytes]:
        return self.view.ids

    def is_member(self) -> bool:
        """Whether this node may sign: its join (if it is a newcomer) is final and
        decided effective at its own replica. The replica decides joins when it computes
        its frontier, so that is brought up to date first, as the node's tick does."""
        self.replica.final_key()
        return self.replica.is_member(self.origin)

    def create(self, market: str, actions: Sequence[Action]) -> Event | None:
        """Sign and deliver an event; None for an equivocator's persona that has seen
        its other persona's later events (`OwnHistoryBehind`: it cannot sign any more).
        Only a member signs: a newcomer's event before its join is decided would wait
        at every replica (parked), and one signed after a refusal would be refused."""
        assert self.is_member(), f"node {self.index} signs before it is a member"
        try:
            event, self.last_receipt = self.replica.create_event(self.key.private_key,
                                                                 market, actions)
        except OwnHistoryBehind:
            if self.honest:
                raise
            return None
        self.remember(event)
        return event

    def remember(self, event: Event) -> None:
        """Note an event this node signed: the sim's decoder, and the flow's orders."""
        self.known[event.id] = event
        self.flow.placed([event.order_id(i) for i, a in enumerate(event.actions)
                          if isinstance(a, Place)])

    def deliver_own(self, event: Event) -> bool:
        """Deliver an event signed outside `create_event`; an equivocator's persona may
        find its seq taken by its other persona's version (then it is not sent)."""
        receipt = self.replica.admit(event)
        assert receipt.status == "delivered" or not self.honest, (receipt.status, receipt.code)
        return receipt.status == "delivered"

    def store(self) -> list[Event]:
        replica = self.replica
        return [self.known[e.id] if type(e) is Settled else e
                for origin in sorted(replica.clock) for e in replica.events_of(origin)]

    def resolve(self, item: bytes | tuple[bytes, int]) -> Event:
        """The event for an item of `events_for`: raw bytes, or (origin, seq) of a
        settled event, read from the store as the node's sync server does."""
        if type(item) is bytes:
            return self.known[hashlib.sha256(item).digest()]  # an event's id
        origin, seq = item  # type: ignore[misc]
        return self.known[self.replica.events_of(origin, seq - 1)[0].id]

    def _rebuilt(self, rng: random.Random) -> Replica:
        # Own events first (each group in a random order): a peer's event that names
        # our seq k before our own seq k is replayed is refused as `impossible_clock`
        # (see the report of issue 10); the node replays in delivery order.
        events = self.store()
        own = [e for e in events if e.origin == self.origin]
        others = [e for e in events if e.origin != self.origin]
        rng.shuffle(own)
        rng.shuffle(others)
        events = own + others
        replica = Replica(DEFAULT_MARKETS, self.origin, genesis=self.genesis)
        replica.checkpoint_every = CHECKPOINT_EVERY
        replica.checkpoint_actions = CHECKPOINT_ACTIONS
        replica.checkpoints_kept = CHECKPOINTS_KEPT
        replica.receive_many(events)
        assert replica.digest == self.replica.digest, "a replay from the store differs"
        return replica

    def restart(self, rng: random.Random) -> None:
        self.replica = self._rebuilt(rng)
        self.view.prefixes_upto = None  # the rebuilt replica's prefix states: all again

    def twin(self, index: int, rng: random.Random) -> SimNode:
        """The second persona of this node: same key, same store, its own choices."""
        twin = SimNode.__new__(SimNode)
        twin.__dict__.update(self.__dict__)
        twin.index = index
        twin.replica = self._rebuilt(rng)
        twin.flow = OrderFlow(rng)
        twin.view = FinalView(f"node {self.index}'")
        return twin

    def pending_actions(self) -> bool:
        """Whether an applied event with actions (not void) is not final yet."""
        replica = self.replica
        frontier = replica.final_key()
        for event_id in reversed(replica.applied_ids()):
            event = replica.event(event_id)
            if frontier is not None and event.key <= frontier:
                return False
            if replica.ledger.acts(event_id):
                return True
        return False
