"""The in-process fault layer (net/faults.py): four real nodes trade while one loses,
delays, duplicates and reorders what it receives and another only delays it; once the
faults end and traffic drains, every node holds the same state, every acknowledged
event, and every trade any node ever called final, unchanged and at the same place."""

from __future__ import annotations

import random

import pytest
import trio
from harness import network

from p2pexchange.core.events import OrderType, Place, Side
from p2pexchange.core.orders import Trade
from p2pexchange.net.faults import FaultPlan
from p2pexchange.node import Node

BTC = "BTC-USD"
SEED = 1313
TRADING_S = 5.0
DRAIN_TIMEOUT_S = 45.0
SAMPLE_S = 0.1


def final_trades(node: Node) -> list[Trade]:
    """The node's trades up to its final frontier (final events are a prefix)."""
    replica = node.replica
    trades = replica.trades()
    count = 0
    for trade in trades:
        if not replica.is_final(trade.event_id):
            break
        count += 1
    return trades[:count]


def record_final(reported: dict[int, set[Trade]], finals: list[Trade]) -> None:
    for position, trade in enumerate(finals):
        reported.setdefault(position, set()).add(trade)


def changed_final_trades(reported: dict[int, set[Trade]],
                         finals: dict[str, list[Trade]]) -> list[str]:
    """Every way a trade once reported final differs from the nodes' final trades now."""
    problems = []
    for position, trades in sorted(reported.items()):
        if len(trades) > 1:
            problems.append(f"position {position}: {len(trades)} different final trades")
        for name, final in finals.items():
            if position >= len(final):
                problems.append(f"{name}: final trade {position} is gone or not final")
            elif final[position] not in trades:
                problems.append(f"{name}: final trade {position} changed")
    return problems


def test_a_seeded_fault_plan_replays_the_same_decisions():
    def decisions(plan: FaultPlan) -> list:
        return ([plan.decide() for _ in range(500)]
                + [plan.answer(list(range(20))) for _ in range(20)])
    options = dict(loss=0.2, delay_ms=100, jitter_ms=50, duplicate=0.1, reorder=0.2,
                   sync_loss=0.2, sync_reorder=True)
    first = decisions(FaultPlan(seed=7, **options))
    assert first == decisions(FaultPlan(seed=7, **options))
    assert first != decisions(FaultPlan(seed=8, **options))
    fates = [len(d) for d in first[:500]]
    assert fates.count(0) > 50 and fates.count(2) > 10  # losses and duplicates happen
    assert FaultPlan().decide() == [0.0] and FaultPlan(enabled=False, loss=1).decide() == [0.0]


def test_the_final_trade_comparison_flags_a_changed_or_missing_trade():
    trade = Trade(BTC, b"e" * 32, b"m" * 32, b"t" * 32, b"a", b"b", 10_000, 2, Side.BUY)
    reported: dict[int, set[Trade]] = {}
    record_final(reported, [trade])
    assert changed_final_trades(reported, {"a": [trade], "b": [trade]}) == []
    assert changed_final_trades(reported, {"a": [trade], "b": [trade._replace(qty=1)]})
    assert changed_final_trades(reported, {"a": [trade], "b": []})
    record_final(reported, [trade._replace(price=10_001)])
    assert changed_final_trades(reported, {"a": [trade]})


async def trade(node: Node, rng: random.Random, flushed: list[bytes],
                until: float) -> None:
    """Crossing limit orders around 10 000 ticks, a few per batch, until `until`."""
    while trio.current_time() < until:
        for _ in range(rng.randint(1, 3)):
            side = rng.choice((Side.BUY, Side.SELL))
            price = 10_000 + rng.randint(-3, 3)
            node.submit(BTC, Place(side, OrderType.LIMIT, price, rng.randint(1, 4)))
        flushed += await node.flush()
        await trio.sleep(rng.uniform(0.05, 0.25))


async def record(nodes: list[Node], reported: dict[int, set[Trade]]) -> None:
    while True:
        for node in nodes:
            record_final(reported, final_trades(node))
        await trio.sleep(SAMPLE_S)


def drained(nodes: list[Node], flushed: list[bytes]) -> bool:
    """Same digest everywhere, and every flushed event delivered and final everywhere."""
    if len({n.replica.digest for n in nodes}) != 1:
        return False
    return all(n.pending_actions == 0 and n.replica.stats()["events_buffered"] == 0
               and n.replica.finality().pending_trades == 0 and all(n.is_final(flushed))
               for n in nodes)


@pytest.mark.network
async def test_nodes_converge_and_keep_final_trades_after_loss_delay_duplication(tmp_path):
    lossy = FaultPlan(seed=SEED, loss=0.2, delay_ms=100, jitter_ms=50, duplicate=0.1,
                      reorder=0.2, reorder_ms=300, sync_loss=0.2, sync_reorder=True,
                      enabled=False)
    slow = FaultPlan(seed=SEED + 1, delay_ms=100, jitter_ms=50, enabled=False)
    print(f"fault seed {SEED}")
    async with network(tmp_path) as net:
        first = await net.start("n0")
        await net.start("lossy", bootstrap=first, faults=lossy)
        await net.start("slow", bootstrap=first, faults=slow)
        await net.start("n3", bootstrap=first)
        await net.discovered()
        nodes = list(net.nodes)
        flushed: list[bytes] = []
        reported: dict[int, set[Trade]] = {}
        lossy.enabled = slow.enabled = True
        async with trio.open_nursery() as recording:
            recording.start_soon(record, nodes, reported)
            until = trio.current_time() + TRADING_S
            async with trio.open_nursery() as traders:
                for i, node in enumerate(nodes):
                    traders.start_soon(trade, node, random.Random(SEED + 10 + i), flushed,
                                       until)
            lossy.enabled = slow.enabled = False
            faults_ended = trio.current_time()
            with trio.move_on_after(DRAIN_TIMEOUT_S):
                while not drained(nodes, flushed):
                    await trio.sleep(0.1)
            converge_s = trio.current_time() - faults_ended
            for node in nodes:
                record_final(reported, final_trades(node))
            recording.cancel_scope.cancel()
        detail = [(n.replica.digest_hex[:12], n.replica.finality().pending_trades,
                   n.replica.stats()["events_buffered"]) for n in nodes]
        print(f"faults: lossy {dict(lossy.counts)}, slow {dict(slow.counts)}; "
              f"{len(flushed)} events flushed, {len(reported)} final trades; converged "
              f"{converge_s:.2f} s after the faults ended: {detail}")
        assert drained(nodes, flushed), f"no convergence within {DRAIN_TIMEOUT_S} s: {detail}"
        assert lossy.counts["lost"] > 0 and lossy.counts["duplicated"] > 0
        assert lossy.counts["held_back"] > 0 and slow.counts["delayed"] > 0
        assert len(set(flushed)) == len(flushed) > 0
        for node in nodes:
            present = sum(node.replica.event(i) is not None for i in flushed)
            assert present == len(flushed), f"{node.peer_id}: {present}/{len(flushed)}"
            assert all(node.is_final(flushed))
        finals = {str(n.peer_id)[-8:]: final_trades(n) for n in nodes}
        assert len(reported) > 0, "no trade became final: the test proves nothing"
        assert changed_final_trades(reported, finals) == []
        assert len({tuple(f) for f in finals.values()}) == 1
