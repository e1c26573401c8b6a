"""Stateful property test: several replicas, events created and delivered in any
interleaving hypothesis picks; replicas that delivered the same set agree exactly, and
what any replica reports final is a prefix of what every other one applies."""

from __future__ import annotations

import random

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from p2pexchange.core.events import MEMBERSHIP_MARKET, Place
from p2pexchange.core.market import DEFAULT_MARKETS
from p2pexchange.core.replica import Replica
from p2pexchange.sim.workload import OrderFlow, peer_id_bytes, seeded_key_pair

ORIGINS = 3
OBSERVERS = 2
TINY_BUFFER_BYTES = 8_000  # two or three small events, one or two per origin
KEYS = [seeded_key_pair(f"stateful-{i}") for i in range(ORIGINS)]
GENESIS = [peer_id_bytes(k) for k in KEYS]


def final_prefix(replica: Replica) -> list[bytes]:
    """The ids of the applied events the replica reports final, in the total order."""
    frontier = replica.final_key()
    if frontier is None:
        return []
    return [i for i in replica.applied_ids() if replica.event(i).key <= frontier]


class ReplicasAgree(RuleBasedStateMachine):
    @initialize(seed=st.integers(0, 2**16))
    def start(self, seed):
        self.creators = [Replica(DEFAULT_MARKETS, peer_id_bytes(k), genesis=GENESIS)
                         for k in KEYS]
        self.flows = [OrderFlow(random.Random(seed + i)) for i in range(ORIGINS)]
        self.observers = [Replica(DEFAULT_MARKETS, genesis=GENESIS) for _ in range(OBSERVERS)]
        # One more observer whose causal buffer holds a few small events: it evicts and
        # refuses all the time, and must still agree once everything comes round again.
        self.observers.append(Replica(DEFAULT_MARKETS, genesis=GENESIS,
                                      buffer_bytes_max=TINY_BUFFER_BYTES,
                                      buffer_origin_bytes_max=TINY_BUFFER_BYTES // 2))
        # A replica without a genesis: admits every origin, reports nothing final.
        self.observers.append(Replica(DEFAULT_MARKETS))
        self.events = []
        self.final_seen: dict[int, list[bytes]] = {}  # replica index -> longest final prefix

    def everyone(self):
        return self.creators + self.observers

    @rule(creator=st.integers(0, ORIGINS - 1), count=st.integers(1, 5),
          market=st.sampled_from(sorted(DEFAULT_MARKETS)))
    def create(self, creator, count, market):
        flow = self.flows[creator]
        actions = [flow.next_action() for _ in range(count)]
        event, receipt = self.creators[creator].create_event(KEYS[creator].private_key, market,
                                                             actions)
        assert receipt.status == "delivered"
        flow.placed([event.order_id(i) for i, a in enumerate(actions) if isinstance(a, Place)])
        self.events.append(event)

    @rule(creator=st.integers(0, ORIGINS - 1))
    def acknowledge(self, creator):
        """What a member's node does on its tick: an empty event when `wants_ack`."""
        replica = self.creators[creator]
        if replica.wants_ack():
            event, receipt = replica.create_event(KEYS[creator].private_key, MEMBERSHIP_MARKET,
                                                  [])
            assert receipt.status == "delivered" and event.actions == ()
            self.events.append(event)

    @precondition(lambda self: self.events)
    @rule(data=st.data())
    def deliver(self, data):
        replica = data.draw(st.sampled_from(self.everyone()))
        event = data.draw(st.sampled_from(self.events))
        before = replica.digest
        receipt = replica.receive(event.raw)
        if receipt.status == "rejected":  # only the tiny buffer refuses
            assert receipt.code == "buffer_full" and replica is self.observers[-2], receipt
        assert receipt.status in ("delivered", "buffered", "duplicate", "rejected"), receipt
        if receipt.status != "delivered":
            assert replica.digest == before

    @rule(data=st.data(), junk=st.binary(max_size=64))
    def deliver_garbage(self, data, junk):
        replica = data.draw(st.sampled_from(self.everyone()))
        before = replica.digest
        assert replica.receive(junk).status == "rejected"
        assert replica.digest == before

    @invariant()
    def buffers_claims_and_members_are_sound(self):
        for replica in self.everyone():
            replica.check_invariants()

    @invariant()
    def books_are_sound(self):
        for replica in self.everyone():
            for book in replica.books.values():
                book.check_invariants()

    @invariant()
    def finality_never_lies(self):
        """Every replica's final prefix is a prefix of every other's applied order and of
        its own later final prefixes (the frontier only moves forward)."""
        everyone = self.everyone()
        prefixes = [final_prefix(r) for r in everyone]
        for index, (replica, prefix) in enumerate(zip(everyone, prefixes, strict=True)):
            seen = self.final_seen.get(index, [])
            assert prefix[:len(seen)] == seen, "a final event was undone or reordered"
            self.final_seen[index] = max(seen, prefix, key=len)
            assert replica.stats()["late_after_final"] == 0
        for prefix in prefixes:
            for other in prefixes:
                shorter = min(prefix, other, key=len)
                assert prefix[:len(shorter)] == other[:len(shorter)], "final prefixes differ"
        assert prefixes[-1] == []  # no genesis: nothing is final

    @invariant()
    def same_delivered_set_means_same_state(self):
        seen = {}
        for replica in self.everyone():
            key = tuple(sorted(replica.clock.items()))
            state = (replica.digest, tuple(b.snapshot() for b in replica.books.values()))
            assert seen.setdefault(key, state) == state

    def teardown(self):
        if not hasattr(self, "events"):
            return
        for replica in self.everyone():
            for _ in range(2):  # the tiny buffer may need a second, causes-first, pass
                for event in reversed(self.events):
                    replica.receive(event.raw)
                for event in self.events:
                    replica.receive(event.raw)
            replica.check_invariants()
        assert len({r.digest for r in self.everyone()}) == 1
        applied = self.creators[0].applied_ids()
        for prefix in self.final_seen.values():  # what was final is where it was
            assert applied[:len(prefix)] == prefix
        # Liveness once every member speaks: acknowledgements until nobody wants one,
        # then everything with actions is final everywhere a genesis is known.
        for _ in range(4):
            acks = []
            for i, creator in enumerate(self.creators):
                if creator.wants_ack():
                    acks.append(creator.create_event(KEYS[i].private_key, MEMBERSHIP_MARKET,
                                                     [])[0])
            if not acks:
                break
            self.events += acks
            for replica in self.everyone():
                for _ in range(2):  # the tiny buffer again
                    replica.receive_many([e.raw for e in self.events])
            self.finality_never_lies()
        assert not any(creator.wants_ack() for creator in self.creators)
        for replica in self.everyone()[:-1]:
            assert all(replica.is_final(e.id) for e in self.events if e.actions)
            assert replica.finality().pending_trades == 0


ReplicasAgree.TestCase.settings = settings(max_examples=40, stateful_step_count=40,
                                           deadline=None)
test_replicas_agree_under_any_interleaving = ReplicasAgree.TestCase
