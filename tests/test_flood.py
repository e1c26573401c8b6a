"""A member flooding valid events far above a fair rate (issue 13, "Hostile peers").

The budgets (net/budget.py) are checked alone first, with time as an argument. Then on
real py-libp2p hosts: three honest nodes (this process) trade at a steady offered
rate; their throughput (actions of honest origins applied on *every* honest node, per
second) is measured without a flood, then while a member floods. The attacker is a
node built on the project's own code in a process of its own (its CPU is not the
victims'), driven over stdin/stdout: a member like any other until told to prepare,
it then signs `CHAIN_EVENTS` valid 1,000-action events at once (past its own batching
and limits; it then stops taking events in, so that its replica does not roll that
chain back and forth), which its sync server serves at once, and on `flood` publishes
them (a burst, then a steady rate), replays of them, and well-formed heartbeats, join
requests and trade reports, each several times its budget's burst, then above its
rate. Pulling from it is the way around gossip's budget that sync must close.

Asserted: honest throughput during the flood is at least half the same measurement
without it (without the budgets it fell to 40%); what honest nodes delivered of the
chain stayed within the origin's budgets (gossip's plus sync's: rate x duration +
burst), far below what was offered; the excess was refused as `rate_limited` on the
event topics, and on the heartbeat and join topics each node took at most its budget of
what reached it (refusing the rest; a node failed once the excess reached it with the
heartbeat budget switched off), every rejection naming the attacker
(no honest peer is ever refused); the honest nodes stay up and converge once the
attacker left.
Marked `soak`: about 40 s. Numbers depend on the machine's load (printed).
"""

from __future__ import annotations

import json
import logging
import math
import os
import pathlib
import random
import subprocess
import sys
from collections import Counter

import pytest
import trio
from harness import network
from libp2p.peer.id import ID
from libp2p.pubsub import rpc_queue

from p2pexchange.core.events import Cancel, OrderType, Place, Side, sign_event
from p2pexchange.net import wire
from p2pexchange.net.budget import (
    EVENT,
    HEARTBEAT,
    JOIN_REQUEST,
    ORIGIN_ACTIONS,
    PUBLISHER_RATES,
    SYNC_ORIGIN_RATES,
    TRADE_REPORT,
    Budget,
    Rate,
)
from p2pexchange.net.gossip import CONTROL_TOPIC, JOIN_TOPIC, TRADES_TOPIC, market_topic
from p2pexchange.node import Node, NodeConfig
from p2pexchange.sim.workload import OrderFlow

BTC = "BTC-USD"
HONEST_ORDERS_PER_S = 50  # offered by each honest node, steady
SUBMIT_INTERVAL_S = 0.05
WARMUP_S = 2.0
MEASURE_S = 7.0  # each of: without the flood, during the flood
CHAIN_ACTIONS = 1_000  # per flood event (EVENT_ACTIONS_MAX)
CHAIN_EVENTS = 480  # signed before the flood, served by sync at once
# What the attacker publishes: (messages at once, then per second). Each is several
# times the burst of its budget, then above its rate (net/budget.py).
FLOOD = {EVENT: (30, 5), "replay": (0, 5), HEARTBEAT: (40, 15), JOIN_REQUEST: (20, 3),
         TRADE_REPORT: (100, 10)}
FLOOD_TICK_S = 0.05


# -- the budgets alone ------------------------------------------------------------------

def test_a_budget_pays_its_burst_then_its_rate_in_every_unit():
    budget = Budget([Rate(10, 20), Rate(1_000, 1_000)])
    paid = sum(budget.charge("p", (1, 10), now=0.0) for _ in range(100))
    assert paid == 20  # the burst of the first unit
    assert not budget.charge("p", (1, 10), now=0.05)  # half a token refilled
    assert budget.charge("p", (1, 10), now=0.1)
    assert budget.charge("q", (1, 10), now=0.1)  # another key has its own buckets
    assert not budget.charge("q", (1, 1_001), now=0.1)  # beyond a unit's burst: never
    assert budget.refused == 82


def test_a_budget_paces_debt_and_forgets_the_oldest_key():
    budget = Budget([Rate(100, 100)], keys_max=2)
    assert budget.debit("a", (50,), now=0.0) == 0.0
    assert budget.debit("a", (100,), now=0.0) == pytest.approx(0.5)  # 50 owed at 100/s
    budget.charge("b", (100,), now=0.0)
    budget.charge("c", (100,), now=0.0)  # "a" is forgotten: a fresh, full bucket
    assert budget.debit("a", (100,), now=0.0) == 0.0


def test_a_sync_answer_s_events_held_here_are_not_decoded_again(monkeypatch):
    """Bytes whose SHA-256 (the event id) names an event the replica holds are that event:
    `SyncBudget.within` hands back the held one without decoding or charging anything;
    an event new here is decoded (and verified) and charged to its origin."""
    from p2pexchange.core.market import DEFAULT_MARKETS
    from p2pexchange.core.replica import Replica
    from p2pexchange.net import budget as budget_module
    from p2pexchange.net.budget import SyncBudget
    from p2pexchange.sim.workload import peer_id_bytes, seeded_key_pair

    key = seeded_key_pair("sync-answer")
    origin = peer_id_bytes(key)
    replica = Replica(DEFAULT_MARKETS, origin, genesis=[origin])
    held, _ = replica.create_event(key.private_key, BTC, [Place(Side.SELL, OrderType.LIMIT,
                                                                100, 1)])
    new = sign_event(key.private_key, origin, 2, {origin: (1, held.id)}, 2, BTC,
                     [Place(Side.BUY, OrderType.LIMIT, 90, 1)])
    decoded = []
    real_decode = budget_module.decode_event
    monkeypatch.setattr(budget_module, "decode_event",
                        lambda raw, markets: decoded.append(raw) or real_decode(raw, markets))
    sync_budget = SyncBudget(replica, lambda *args: None)
    kept, refused = sync_budget.within([held.raw, new.raw], now=0.0)
    assert refused == 0 and kept[0] is replica.event(held.id) and kept[1] == new
    assert decoded == [new.raw]  # the held one was not decoded
    assert sync_budget.origins.paid == 1  # charged for the new event only


# -- a flood on real hosts ----------------------------------------------------------------

def honest_actions(node: Node, origins: list[bytes]) -> int:
    """Actions of the honest origins that `node` has applied (an event compacted once final
    keeps no actions, but its ledger record keeps an outcome per action)."""
    replica = node.replica
    return sum(len(replica.outcomes_of(e.id)) for o in origins for e in replica.events_of(o))


def applied_everywhere(nodes: list[Node], origins: list[bytes]) -> int:
    return min(honest_actions(n, origins) for n in nodes)


async def trade_steadily(node: Node, seed: int, refused: list[int]) -> None:
    """Submit `HONEST_ORDERS_PER_S` orders a second, evenly, until cancelled."""
    flow = OrderFlow(random.Random(seed))
    per_tick = round(HONEST_ORDERS_PER_S * SUBMIT_INTERVAL_S)
    next_at = trio.current_time()
    while True:
        for _ in range(per_tick):
            try:
                node.submit(BTC, flow.next_action())
            except OverflowError:
                refused[0] += 1
        next_at += SUBMIT_INTERVAL_S
        await trio.sleep(max(0.0, next_at - trio.current_time()))


async def measure(nodes: list[Node], origins: list[bytes], seed: int,
                  refused: list[int]) -> float:
    """Honest orders applied on every honest node per second, while they trade."""
    async with trio.open_nursery() as nursery:
        for i, node in enumerate(nodes):
            nursery.start_soon(trade_steadily, node, seed + i, refused)
        await trio.sleep(WARMUP_S)
        start, started = applied_everywhere(nodes, origins), trio.current_time()
        await trio.sleep(MEASURE_S)
        per_s = (applied_everywhere(nodes, origins) - start) / (trio.current_time() - started)
        nursery.cancel_scope.cancel()
    return per_s


def count_reaching_budgets(nodes: list[Node], publisher: bytes) -> list[Counter]:
    """From now on, count per node and topic class the messages of `publisher` that
    reach the node's gossip budgets (after py-libp2p, before any decoding)."""
    counts: list[Counter] = []
    for node in nodes:
        admit, count = node.gossip.budgets.admit, Counter()

        def counting(what, forwarder, origin, size, now, _admit=admit, _count=count):
            if origin == publisher:
                _count[what] += 1
            return _admit(what, forwarder, origin, size, now)

        node.gossip.budgets.admit = counting  # type: ignore[method-assign]
        counts.append(count)
    return counts


def refusals(node: Node) -> dict[str, int]:
    """Messages a node's gossip budgets refused so far, by topic class."""
    budgets = node.gossip.budgets
    return {what: budgets.publishers[what].refused + budgets.forwarders[what].refused
            for what in (HEARTBEAT, JOIN_REQUEST)}


class Attacker:
    """The attacker node in a process of its own (its CPU is not the honest nodes'),
    driven by lines: it prints `member <peer id>`, floods on `flood`, prints what it
    sent as JSON, and leaves on `stop`."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self._buffer = b""

    @classmethod
    async def start(cls, data_dir: pathlib.Path, bootstrap: str) -> Attacker:
        root = pathlib.Path(__file__).resolve().parent.parent
        env = dict(os.environ, PYTHONPATH=str(root))
        process = await trio.lowlevel.open_process(
            [sys.executable, __file__, str(data_dir), bootstrap], env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        return cls(process)

    async def line(self, timeout_s: float = 60.0) -> str:
        with trio.fail_after(timeout_s):
            while b"\n" not in self._buffer:
                chunk = await self.process.stdout.receive_some(4096)
                if not chunk:
                    raise AssertionError(f"the attacker exited: {self.process.returncode}")
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    async def say(self, word: str) -> None:
        await self.process.stdin.send_all(word.encode() + b"\n")

    def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()


@pytest.mark.network
@pytest.mark.soak
async def test_a_member_flooding_valid_events_is_rate_limited_and_honest_nodes_keep_trading(
        tmp_path):
    async with network(tmp_path) as net:
        first = await net.start("n0")
        honest = [first, await net.start("n1", bootstrap=first),
                  await net.start("n2", bootstrap=first)]
        attacker = await Attacker.start(tmp_path / "attacker", first.listen_addr)
        try:
            word, attacker_id = (await attacker.line()).split()
            assert word == "member", word
            with trio.fail_after(30):
                while any(len(n.peers) < 3 for n in honest):
                    await trio.sleep(0.1)
            await trio.sleep(2)  # let the gossip mesh form
            origins = [n.origin for n in honest]
            refused = [0]
            calm_per_s = await measure(honest, origins, 100, refused)
            attacker_origin = ID.from_base58(attacker_id).to_bytes()
            own_before = max(len(n.replica.events_of(attacker_origin)) for n in honest)
            await attacker.say("prepare")
            assert await attacker.line() == "ready"
            reaching = count_reaching_budgets(honest, attacker_origin)
            refusals_before = [refusals(n) for n in honest]
            counting_started = trio.current_time()
            await attacker.say("flood")
            flood_started = trio.current_time()
            flood_per_s = await measure(honest, origins, 200, refused)
            flood_s = trio.current_time() - flood_started
            counted_s = trio.current_time() - counting_started
            reached = [dict(counts) for counts in reaching]  # during the flood
            refused_during = [{what: after[what] - before[what] for what in after}
                              for before, after in zip(refusals_before,
                                                       [refusals(n) for n in honest],
                                                       strict=True)]
            delivered = [len(n.replica.events_of(attacker_origin)) - own_before
                         for n in honest]
            sent = json.loads(await attacker.line())
            await attacker.say("stop")
            with trio.fail_after(20):
                await attacker.process.wait()
        finally:
            attacker.kill()

        # The attacker has left; honest nodes trade once more and agree.
        for node in honest:
            assert not node.finished.is_set()
        first.submit(BTC, Place(Side.SELL, OrderType.LIMIT, 9_000, 1))
        await first.flush()
        await net.converged(honest, timeout_s=45)

        report = (f"honest orders applied everywhere: {calm_per_s:.0f}/s calm, "
                  f"{flood_per_s:.0f}/s flooded; attacker sent {sent}; of its flood, "
                  f"delivered {delivered} events; refused submits {refused[0]}; "
                  f"load {os.getloadavg()[0]:.1f}")
        print(report)
        for node in honest:
            budgets = node.gossip.budgets
            print(node.rejections.by_code, dict(node.received),
                  {w: (b.paid, b.refused, budgets.forwarders[w].refused)
                   for w, b in budgets.publishers.items()},
                  "origin actions", budgets.origin_actions.paid,
                  budgets.origin_actions.refused,
                  "sync", node.sync.budget.origins.paid, node.sync.budget.origins.refused)
        # Honest nodes keep at least half their throughput while the flood lasts.
        assert calm_per_s > 0.3 * HONEST_ORDERS_PER_S * len(honest), report
        assert flood_per_s >= 0.5 * calm_per_s, report
        # What they took of the flood stayed within the origin's budgets (gossip's and
        # sync's, each its rate over the flood plus its burst), far below what was sent.
        allowed_actions = sum(rate.per_s * flood_s + rate.burst
                              for rate in (ORIGIN_ACTIONS, SYNC_ORIGIN_RATES[1]))
        allowed_events = allowed_actions / CHAIN_ACTIONS
        assert CHAIN_EVENTS > 2 * allowed_events, report  # all of it offered by sync
        for count in delivered:
            assert count <= allowed_events, report
        # The excess was refused as rate_limited, on every topic, and counted against
        # the attacker alone; no honest peer was ever refused anything. (How much of
        # the flood reaches each node depends on the machine's load: py-libp2p drops
        # what a peer's outbound queue cannot hold, so not every node need refuse.)
        for node in honest:
            assert set(node.rejections.by_peer) <= {attacker_id}, (node.rejections.by_peer,
                                                                   report)
        assert sum(n.rejections.by_code.get("rate_limited", 0) for n in honest) > 0, report
        assert any(n.status()["rejected"].get("rate_limited") for n in honest)  # shown
        refused_by = {what: sum(n.gossip.budgets.publishers[what].refused
                                + n.gossip.budgets.forwarders[what].refused for n in honest)
                      for what in (EVENT, HEARTBEAT, JOIN_REQUEST, TRADE_REPORT)}
        refused_by[EVENT] += sum(n.gossip.budgets.origin_actions.refused
                                 + n.sync.budget.origins.refused for n in honest)
        assert refused_by[EVENT] > 0, (refused_by, report)
        # Heartbeats and join requests: of the attacker's that reached a node's budget
        # during the flood, the node took at most its publisher budget (burst, then
        # rate), refusing the rest. Under load py-libp2p's queues may shed the excess
        # before it reaches the budget (CI once saw none refused at load 5.3); what
        # reached is then within the budget, and the check still holds.
        for what in (HEARTBEAT, JOIN_REQUEST):  # trade reports' burst is 512
            rate = PUBLISHER_RATES[what][0]
            allowed = rate.burst + rate.per_s * counted_s
            for came, refused_now in zip(reached, refused_during, strict=True):
                took = came.get(what, 0) - refused_now[what]
                assert 0 < came.get(what, 0) and took <= allowed, \
                    (what, came, refused_now, allowed, report)


@pytest.mark.network
async def test_a_non_member_flooding_signed_events_is_refused_cheaply(tmp_path):
    """A peer that is no member (it never asks to join) publishes hundreds of validly
    signed events: each is `not_member` (or, beyond its publisher budget, refused as
    `rate_limited` before it is even decoded), none is delivered or forwarded, every
    rejection names it, and the members go on trading."""
    flood_events = 1_000
    async with network(tmp_path) as net:
        first = await net.start("n0")
        second = await net.start("n1", bootstrap=first)
        outsider = await net.start("outsider", bootstrap=first, member=False)
        outsider.admission._asked_at = math.inf  # it never asks to be admitted
        await net.discovered()
        await trio.sleep(2)  # let the gossip mesh form
        topic = market_topic(BTC)
        outsider.pubsub.remove_topic_validator(topic)
        for queue in outsider.pubsub.peer_queues.values():
            queue._queue.max_size = 4096  # a hostile client queues all of its flood
        key = outsider.key_pair.private_key
        for k in range(flood_events):
            event = sign_event(key, outsider.origin, 1, {}, 1, BTC,
                               [Place(Side.SELL, OrderType.LIMIT, 20_000 + k, 1)])
            await outsider.pubsub.publish(topic, event.raw)
            await trio.sleep(0)
        first.submit(BTC, Place(Side.SELL, OrderType.LIMIT, 10_000, 1))
        await first.flush()
        await net.converged([first, second], events=1)
        with trio.fail_after(20):
            while sum(n.rejections.by_peer.get(str(outsider.peer_id), 0)
                      for n in (first, second)) < 100:
                await trio.sleep(0.2)
        assert outsider.admission.state != "member"
        codes = set()
        for node in (first, second):
            assert not node.replica.events_of(outsider.origin)
            assert set(node.rejections.by_peer) <= {str(outsider.peer_id)}
            codes |= {code for _, code, _ in node.rejection_log}
        assert "not_member" in codes or "rate_limited" in codes, codes
        print({str(n.peer_id)[-6:]: n.rejections.by_code for n in (first, second)})


# -- the attacker's process ---------------------------------------------------------------

def flood_actions(k: int) -> list:
    """`CHAIN_ACTIONS` valid actions: resting sells far above the honest market, and
    cancels of orders that do not exist."""
    places = CHAIN_ACTIONS * 4 // 5
    actions = [Place(Side.SELL, OrderType.LIMIT, 50_000 + k % 1000, 1) for _ in range(places)]
    return actions + [Cancel(bytes([k % 256, i % 256]) * 17)
                      for i in range(CHAIN_ACTIONS - places)]


async def sign_flood(node: Node) -> list[bytes]:
    """The flood's events, signed (and stored, and served by sync) before the flood,
    past the node's own batching and limits: their clocks are those of its start."""
    chain = []
    for k in range(CHAIN_EVENTS):
        event = node._seal(BTC, flood_actions(k))
        assert event is not None
        chain.append(event.raw)
        await trio.sleep(0)  # keep answering peers meanwhile
    return chain


async def flood(node: Node, chain: list[bytes], stop: trio.Event) -> dict[str, int]:
    """Publish `chain`, replays of it, and well-formed heartbeats, join requests and
    trade reports as `FLOOD` says, until `stop`."""
    pubsub = node.pubsub
    topics = {EVENT: market_topic(BTC), "replay": market_topic(BTC), HEARTBEAT: CONTROL_TOPIC,
              JOIN_REQUEST: JOIN_TOPIC, TRADE_REPORT: TRADES_TOPIC}
    sent = dict.fromkeys(FLOOD, 0)
    rng = random.Random(7)
    # A hostile client need not drop what py-libp2p's outbound queue (32 RPCs a
    # peer) cannot hold: the attacker queues all of its flood.
    # Nor need it wait for gossipsub's mesh: it sends to every peer that follows a topic.
    for queue in pubsub.peer_queues.values():
        queue._queue.max_size = 4096
    rpc_queue.RpcQueue.__init__.__defaults__ = (4096, rpc_queue.DefaultMaxMessageSize)
    for topic in set(topics.values()):
        node.gossip.router.mesh.setdefault(topic, set()).update(
            pubsub.peer_topics.get(topic, ()))
    started = next_at = trio.current_time()
    while not stop.is_set():
        elapsed = trio.current_time() - started
        replica = node.replica
        heartbeat = wire.encode_heartbeat(wire.Heartbeat(
            replica.clock, replica.lamport, replica.digest,
            replica.stats()["events_delivered"], tuple(sorted(replica.membership.genesis))))
        sponsor = sorted(p.to_bytes() for p in node.peers)[:1] or [node.origin]
        for what, (at_once, per_s) in FLOOD.items():
            due = at_once + elapsed * per_s
            while sent[what] < (min(due, len(chain)) if what == EVENT else due):
                if what == EVENT:
                    data = chain[sent[EVENT]]
                elif what == "replay":
                    data = chain[rng.randrange(sent[EVENT])]
                elif what == TRADE_REPORT:
                    data = wire.encode_trade_report(
                        wire.TradeReport(rng.randbytes(32), 1, rng.randbytes(32)))
                elif what == HEARTBEAT:
                    data = heartbeat
                else:
                    data = wire.encode_join_request(sponsor[0])
                await pubsub.publish(topics[what], data)
                sent[what] += 1
                await trio.sleep(0)
        next_at += FLOOD_TICK_S
        await trio.sleep(max(0.0, next_at - trio.current_time()))
    return sent


async def attacker_main(data_dir: str, bootstrap: str) -> None:
    node = Node(NodeConfig(data_dir=data_dir, bootstrap=[bootstrap], status_interval_s=3600))
    stdin = trio.lowlevel.FdStream(os.dup(0))
    buffer = b""

    async def word() -> str:
        nonlocal buffer
        while b"\n" not in buffer:
            chunk = await stdin.receive_some(256)
            if not chunk:
                return "stop"
            buffer += chunk
        line, buffer = buffer.split(b"\n", 1)
        return line.decode().strip()

    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        while node.admission.state != "member":
            await trio.sleep(0.1)
        print("member", node.peer_id, flush=True)
        if await word() == "prepare":
            chain = await sign_flood(node)
            # From now on it takes no event in: honest events that sort before its long
            # chain would make its own replica roll the whole chain back and forth.
            node.intake.receive = lambda arrivals: []
            node.sync._receive = lambda arrivals: []
            # Its sync server answers with at most 48 events a round (and "more"): smaller
            # answers arrive in time even through its own congested connection.
            decode_request = wire.decode_sync_request
            wire.decode_sync_request = lambda data: (
                lambda clock, limit: (clock, min(limit, 48)))(*decode_request(data))
            print("ready", flush=True)
        if await word() == "flood":
            stop = trio.Event()

            async def until_stop() -> None:
                await trio.sleep(WARMUP_S + MEASURE_S)
                stop.set()
            nursery.start_soon(until_stop)
            sent = await flood(node, chain, stop)
            print(json.dumps(sent), flush=True)
            await word()
        node.stop()
        with trio.move_on_after(10):
            await node.finished.wait()
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR)
    trio.run(attacker_main, sys.argv[1], sys.argv[2])
