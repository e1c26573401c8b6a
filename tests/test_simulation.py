"""A seeded simulation of many replicas under faults (in the spirit of TigerBeetle's VOPR).

Safety phase: replicas create events and gossip them over a simulated network that
loses, duplicates, delays and reorders messages, and partitions the nodes for a
while; heartbeats are lossy too, and replicas pull what they lack from random peers
with the sync primitives (`clock`, `events_for`). Liveness phase: the network heals,
nobody trades, and every replica must reach the same digest within a budget of sync
rounds. Throughout, anything a replica ever reported as final must never change.
The seed is in the test id; rerun one with `pytest -k 'seed_17'`.
"""

from __future__ import annotations

import random

import pytest

from p2pexchange.events import Place
from p2pexchange.market import DEFAULT_MARKETS
from p2pexchange.replica import Replica
from p2pexchange.workload import OrderFlow, peer_id_bytes, seeded_key_pair

TICK_MS = 100
LIVENESS_TIMEOUT_MS = 60_000  # longer than any partition here: finality stalls, never lies
SYNC_CHUNK = 16


class SimNode:
    def __init__(self, seed: int, index: int, rng: random.Random) -> None:
        self.key = seeded_key_pair(f"sim-{seed}-{index}")
        self.origin = peer_id_bytes(self.key)
        self.replica = Replica(DEFAULT_MARKETS, self.origin)
        self.flow = OrderFlow(random.Random(rng.random()))
        self.final_prefix: list[bytes] = []  # applied ids once reported final

    def record_finality(self, now_ms: int) -> None:
        frontier = self.replica.final_frontier(now_ms, LIVENESS_TIMEOUT_MS)
        final = [e.id for e in (self.replica.event(i) for i in self.replica.applied_ids())
                 if e.lamport <= frontier]
        assert final[:len(self.final_prefix)] == self.final_prefix, "a final event moved"
        self.final_prefix = final


def run(seed: int, nodes_n: int, ticks: int, loss: float) -> None:
    rng = random.Random(seed)
    nodes = [SimNode(seed, i, rng) for i in range(nodes_n)]
    in_flight: list[tuple[int, int, bytes]] = []  # (due tick, destination, raw)
    partition_at = rng.randrange(ticks // 4, ticks // 2)
    partition_end = partition_at + rng.randrange(10, ticks // 3)
    group = {i: rng.random() < 0.5 for i in range(nodes_n)}

    def reachable(a: int, b: int, tick: int) -> bool:
        return not (partition_at <= tick < partition_end and group[a] != group[b])

    def sync(a: int, b: int) -> None:
        for raw in nodes[b].replica.events_for(nodes[a].replica.clock, SYNC_CHUNK):
            nodes[a].replica.receive(raw)

    # Warm-up: members hear of each other before anyone trades, as a node listens
    # for one liveness timeout before it reports anything final.
    for a in range(nodes_n):
        for b in range(nodes_n):
            if a != b:
                nodes[a].replica.on_heartbeat(nodes[b].origin, {}, 0, 0)
    for tick in range(ticks):
        now_ms = tick * TICK_MS
        # Trading: one node batches a few actions into one event and gossips it.
        node_index = rng.randrange(nodes_n)
        node = nodes[node_index]
        actions = [node.flow.next_action() for _ in range(rng.randint(1, 6))]
        event, _ = node.replica.create_event(node.key.private_key, rng.choice(sorted(
            DEFAULT_MARKETS)), actions)
        node.flow.placed([event.order_id(i) for i, a in enumerate(actions)
                          if isinstance(a, Place)])
        for dest in range(nodes_n):
            if dest != node_index and rng.random() > loss:
                for _ in range(1 + (rng.random() < 0.1)):  # sometimes duplicated
                    in_flight.append((tick + rng.randint(0, 5), dest, event.raw))
        # Deliver what is due, in random order, unless partitioned away.
        rng.shuffle(in_flight)
        due = [m for m in in_flight if m[0] <= tick]
        in_flight = [m for m in in_flight if m[0] > tick]
        for _, dest, raw in due:
            nodes[dest].replica.receive(raw)
        # Lossy heartbeats and occasional pulls from a random reachable peer.
        for a in range(nodes_n):
            for b in range(nodes_n):
                if a != b and reachable(a, b, tick) and rng.random() > loss:
                    src = nodes[b].replica
                    nodes[a].replica.on_heartbeat(nodes[b].origin, src.clock, src.lamport, now_ms)
            if rng.random() < 0.2:
                b = rng.randrange(nodes_n)
                if b != a and reachable(a, b, tick):
                    sync(a, b)
            nodes[a].record_finality(now_ms)
    # Liveness: heal, stop trading, and sync until everyone agrees, within a budget.
    settled = False
    for round_ in range(200):
        now_ms = (ticks + round_) * TICK_MS
        for a in range(nodes_n):
            sync(a, rng.randrange(nodes_n))
            for b in range(nodes_n):
                src = nodes[b].replica
                nodes[a].replica.on_heartbeat(nodes[b].origin, src.clock, src.lamport, now_ms)
            nodes[a].record_finality(now_ms)
        if settled:
            break  # one more round of heartbeats has gone out since everyone agreed
        settled = len({n.replica.digest for n in nodes}) == 1 and not any(
            n.replica.missing() for n in nodes)
    digests = {n.replica.digest_hex for n in nodes}
    assert len(digests) == 1, f"seed={seed}: no convergence after healing: {digests}"
    total = nodes[0].replica.stats()["events_delivered"]
    assert total == ticks, f"seed={seed}: {total} of {ticks} events delivered"
    # With everyone heard from and nothing missing, everything is final everywhere.
    for n in nodes:
        assert len(n.final_prefix) == ticks, f"seed={seed}: finality stalled"
    assert nodes[0].replica.stats()["trades"] > 0


@pytest.mark.parametrize("seed", range(6), ids=lambda s: f"seed_{s}")
def test_replicas_under_loss_and_partition_converge_after_healing(seed):
    run(seed, nodes_n=4, ticks=150, loss=0.3)


@pytest.mark.soak
@pytest.mark.parametrize("seed", range(100, 103), ids=lambda s: f"seed_{s}")
def test_soak_many_replicas_heavy_loss(seed):
    run(seed, nodes_n=7, ticks=500, loss=0.6)
