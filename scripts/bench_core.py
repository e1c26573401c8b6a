"""Benchmarks of the deterministic core; prints one JSON line.

1. Engine: `OrderBook` (undo log on, as the replica runs it) against a minimal
   price-time reference book written here (SortedDict of price levels holding
   deques; no statuses, order types, STP, fill budget or undo), on the same seeded
   workload of --actions actions (about 70% limits near the mid, 20% cancels of resting
   orders, 10% marketable limits; the book is kept bounded), in the same run; the
   engine's places share one fill budget per 100 actions, as an event's do (the
   workload never exhausts it: both books must make the same trades). Best of two.
2. Replica: actions/s through `Replica.receive` (decode, signature check, causal
   delivery, ordering, matching, digest) with signed events of 100 actions from 4
   origins whose clocks interleave.
3. Rollback: the same events delivered on time, and with 1% of them held back by K
   positions so that they sort before already-applied events; cost per late event
   and events re-applied per late event, for two K.
Both books run under the node's GC thresholds (p2pexchange/runtime.py).
Generation is not timed. Usage: python scripts/bench_core.py [--actions N] [--seed S]
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import random
import sys
import time
from collections import deque

from sortedcontainers import SortedDict

from p2pexchange.core.book import OrderBook
from p2pexchange.core.events import OrderType, Place, Side
from p2pexchange.core.market import DEFAULT_MARKETS
from p2pexchange.core.orders import OPEN_STATUSES
from p2pexchange.core.replica import Replica
from p2pexchange.runtime import tune_gc
from p2pexchange.sim.workload import OrderFlow, peer_id_bytes, seeded_key_pair

RESTING_MAX = 5_000  # past this, new limits become cancels: the book stays bounded
EVENT_ACTIONS = 100  # the engine's actions share a fill budget per this many, as events do


class ReferenceBook:
    """Minimal price-time priority book: the baseline the engine is compared with."""

    def __init__(self) -> None:
        self.bids = SortedDict()  # key -price
        self.asks = SortedDict()  # key price
        self.orders: dict[bytes, list] = {}
        self.trades = 0

    def place(self, oid: bytes, side: int, price: int, qty: int) -> None:
        if side == 0:
            opposite, own, limit_key, own_key = self.asks, self.bids, price, -price
        else:
            opposite, own, limit_key, own_key = self.bids, self.asks, -price, price
        keys = opposite.keys()
        while qty and opposite:
            key = keys[0]
            if key > limit_key:
                break
            level = opposite[key]
            while qty and level:
                maker = level[0]
                fill = min(qty, maker[3])
                self.trades += 1
                qty -= fill
                maker[3] -= fill
                if maker[3] == 0:
                    level.popleft()
                    del self.orders[maker[0]]
            if not level:
                del opposite[key]
        if qty:
            entry = [oid, side, own_key, qty]
            self.orders[oid] = entry
            level = own.get(own_key)
            if level is None:
                own[own_key] = deque((entry,))
            else:
                level.append(entry)

    def cancel(self, oid: bytes) -> None:
        entry = self.orders.pop(oid, None)
        if entry is None:
            return
        tree = self.bids if entry[1] == 0 else self.asks
        level = tree[entry[2]]
        level.remove(entry)
        if not level:
            del tree[entry[2]]


def make_workload(n: int, seed: int) -> tuple[list[tuple], dict]:
    """Actions ("p", oid, Place) / ("c", oid); tracks resting ids with a scratch engine."""
    rng = random.Random(seed)
    book = OrderBook("BENCH")
    book.log = _NullLog()
    event_id = bytes(32)
    live: list[bytes] = []
    where: dict[bytes, int] = {}
    mid = 100_000
    actions: list[tuple] = []
    mix = {"limit": 0, "cancel": 0, "marketable": 0}

    def drop(oid: bytes) -> None:
        i = where.pop(oid)
        last = live.pop()
        if last != oid:
            live[i] = last
            where[last] = i

    resting_samples = []
    for i in range(n):
        if i % 1000 == 0:
            resting_samples.append(len(live))
        if rng.random() < 0.02:
            mid += rng.choice((-1, 1)) * rng.randint(1, 5)
        r = rng.random()
        oid = event_id[:28] + i.to_bytes(6, "big")
        if (r < 0.2 or (r >= 0.3 and len(live) > RESTING_MAX)) and live:
            target = live[rng.randrange(len(live))]
            drop(target)
            book.cancel(target, target)
            actions.append(("c", target))
            mix["cancel"] += 1
            continue
        side = Side.BUY if rng.random() < 0.5 else Side.SELL
        if r < 0.3:
            price = mid + 60 if side is Side.BUY else mid - 60
            qty = rng.randint(1, 50)  # sized so takers consume about what limits add
            mix["marketable"] += 1
        else:
            offset = rng.randint(1, 50)
            price = mid - offset if side is Side.BUY else mid + offset
            qty = rng.randint(1, 10)
            mix["limit"] += 1
        place = Place(side, OrderType.LIMIT, price, qty)
        trades_before = len(book.trades)
        order = book.place(oid, oid, place, event_id)  # own origin: no self-trades
        for t in book.trades[trades_before:]:
            maker = book.orders[t.maker_order]
            if maker.status not in OPEN_STATUSES and t.maker_order in where:
                drop(t.maker_order)
        del book.trades[:]
        if order.status in OPEN_STATUSES:
            where[oid] = len(live)
            live.append(oid)
        actions.append(("p", oid, place, oid))
    mix = {k: round(v / n, 3) for k, v in mix.items()}
    mix["resting_at_end"] = len(live)
    mix["resting_mean"] = round(sum(resting_samples) / max(1, len(resting_samples)))
    return actions, mix


class _NullLog(list):
    """Generation needs no undo records."""

    def append(self, item: object) -> None:
        pass

    def extend(self, items: object) -> None:
        pass


def time_engine(actions: list[tuple]) -> tuple[float, int]:
    book = OrderBook("BENCH")
    place, cancel, event_budget = book.place, book.cancel, book.event_budget
    event_id = bytes(32)
    budget = event_budget()
    gc.collect()
    gc.freeze()  # the harness's own data (workload, history) is not the code under test
    start = time.perf_counter()
    for i, a in enumerate(actions):
        if i % EVENT_ACTIONS == 0:
            budget = event_budget()
        if a[0] == "p":
            place(a[1], a[3], a[2], event_id, budget)
        else:
            cancel(a[1], a[1])
    elapsed = time.perf_counter() - start
    return elapsed, len(book.trades)


def time_reference(actions: list[tuple]) -> tuple[float, int]:
    book = ReferenceBook()
    place, cancel = book.place, book.cancel
    gc.collect()
    gc.freeze()  # the harness's own data (workload, history) is not the code under test
    start = time.perf_counter()
    for a in actions:
        if a[0] == "p":
            p = a[2]
            place(a[1], p.side, p.price, p.qty)
        else:
            cancel(a[1])
    elapsed = time.perf_counter() - start
    return elapsed, book.trades


def make_events(events_n: int, actions_per_event: int, seed: int, lag: int = 6) -> list:
    """Signed events of 4 origins that see each other's events `lag` steps late."""
    rng = random.Random(seed)
    nodes = []
    for i in range(4):
        key = seeded_key_pair(f"bench-{seed}-{i}")
        nodes.append((key, Replica(DEFAULT_MARKETS, peer_id_bytes(key)),
                      OrderFlow(random.Random(rng.random()), mid=100_000, spread=40,
                                mix={"limit": 0.7, "cancel": 0.2, "ioc": 0.1})))
    history = []
    for step in range(events_n):
        key, replica, flow = nodes[step % 4]
        for event in history[max(0, step - 4 * lag):max(0, step - lag)]:
            replica.admit(event)
        actions = [flow.next_action() for _ in range(actions_per_event)]
        event, _ = replica.create_event(key.private_key, "BTC-USD", actions)
        flow.placed([event.order_id(i) for i, a in enumerate(actions) if isinstance(a, Place)])
        if len(flow.open_orders) > 2000:
            del flow.open_orders[:1000]
        history.append(event)
    return history


def time_replica(raws: list[bytes]) -> tuple[float, Replica]:
    replica = Replica(DEFAULT_MARKETS)
    gc.collect()
    gc.freeze()  # the harness's own data (workload, history) is not the code under test
    start = time.perf_counter()
    for raw in raws:
        replica.receive(raw)
    return time.perf_counter() - start, replica


def late_order(raws: list[bytes], depth: int, seed: int) -> tuple[list[bytes], set[bytes]]:
    """The same events with 1% of them moved `depth` positions later."""
    rng = random.Random(seed)
    order = list(raws)
    late = sorted(rng.sample(range(len(order) - depth), max(1, len(order) // 100)),
                  reverse=True)
    moved = set()
    for i in late:
        raw = order.pop(i)
        order.insert(i + depth, raw)
        moved.add(raw)
    return order, moved


def time_late(order: list[bytes], moved: set[bytes]) -> tuple[list[float], list[int], Replica]:
    """Per late event: seconds its receive took and events it made the replica re-apply."""
    replica = Replica(DEFAULT_MARKETS)
    seconds, reapplied = [], []
    clock = time.perf_counter
    for raw in order:
        start = clock()
        receipt = replica.receive(raw)
        if raw in moved:
            seconds.append(clock() - start)
            reapplied.append(receipt.rolled_back)
    return seconds, reapplied, replica


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--actions", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--events", type=int, default=1_000,
                        help="events of 100 actions for the replica figures")
    args = parser.parse_args()
    gc_thresholds = tune_gc()  # as node processes run (p2pexchange/runtime.py)

    actions, mix = make_workload(args.actions, args.seed)
    engine_s, engine_trades = min(time_engine(actions) for _ in range(2))
    reference_s, reference_trades = min(time_reference(actions) for _ in range(2))
    assert engine_trades == reference_trades, (engine_trades, reference_trades)
    del actions

    history = make_events(args.events, 100, args.seed)
    raws = [e.raw for e in history]
    replica_s, replica = time_replica(raws)
    replica_actions = sum(len(e.actions) for e in history)
    baseline_digest = replica.digest

    small = make_events(3_000, 10, args.seed + 1)
    small_raws = [e.raw for e in small]
    on_time_s, on_time = time_replica(small_raws)
    rollback = {"events": len(small_raws), "actions_per_event": 10,
                "on_time_s": round(on_time_s, 3),
                "on_time_events_reapplied": on_time.stats()["events_reapplied"]}
    per_event_s = on_time_s / len(small_raws)
    for depth in (10, 100):
        order, moved = late_order(small_raws, depth, args.seed)
        seconds, reapplied, late = time_late(order, moved)
        assert late.digest == on_time.digest, "late delivery changed the result"
        mean_s = sum(seconds) / len(seconds)
        rollback[f"depth_{depth}"] = {
            "late_events": len(moved),
            "reapplied_per_late_event": round(sum(reapplied) / len(reapplied), 1),
            "ms_per_late_event": round(mean_s * 1000, 3),
            "ms_per_on_time_event": round(per_event_s * 1000, 3),
            "us_per_reapplied_event": round((mean_s - per_event_s) * 1e6
                                            / max(1, sum(reapplied) / len(reapplied)), 1),
        }

    engine_rate = args.actions / engine_s
    reference_rate = args.actions / reference_s
    replica_rate = replica_actions / replica_s
    ratio = engine_rate / reference_rate
    print(json.dumps({
        "seed": args.seed,
        "gc_thresholds": gc_thresholds,
        "python": platform.python_version(),
        "workload_actions": args.actions,
        "workload_mix": mix,
        "trades": engine_trades,
        "engine_orders_per_s": round(engine_rate),
        "reference_orders_per_s": round(reference_rate),
        "engine_vs_reference": round(ratio, 3),
        "replica_actions_per_s": round(replica_rate),
        "replica_events": len(raws),
        "replica_actions_per_event": 100,
        "replica_digest": baseline_digest.hex()[:16],
        "rollback": rollback,
        "targets_met": {
            "engine_ge_0.75x_reference": ratio >= 0.75,
            "engine_ge_200k_per_s": engine_rate >= 200_000,
            "replica_ge_50k_actions_per_s": replica_rate >= 50_000,
        },
    }))


if __name__ == "__main__":
    sys.exit(main())
