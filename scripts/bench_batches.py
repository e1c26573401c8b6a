"""Replica: events received one by one versus in batches (`Replica.receive_many`).

A seeded history of 5 origins (1,500 events of up to 60 actions, each origin seeing
90% of the others' events before creating its own) arrives with gossip-like jitter
(each event late by up to --jitter positions). The same arrivals are fed one by one
and in batches of 4 and 16, as the node's intake hands over what queued up; prints
time (best of 3), rollbacks, events re-applied and the digest (equal in every row) as
one JSON line. Usage: python scripts/bench_batches.py [--jitter 12] [--seed 7]
"""

from __future__ import annotations

import argparse
import json
import random
import time

from p2pexchange.core.market import DEFAULT_MARKETS
from p2pexchange.core.replica import Replica
from p2pexchange.runtime import tune_gc
from p2pexchange.sim.workload import simulate_history


def feed(arrivals: list[bytes], batch: int) -> tuple[float, Replica]:
    replica = Replica(DEFAULT_MARKETS)
    started = time.perf_counter()
    if batch == 1:
        for raw in arrivals:
            replica.receive(raw)
    else:
        for i in range(0, len(arrivals), batch):
            replica.receive_many(arrivals[i:i + batch])
    return time.perf_counter() - started, replica


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--jitter", type=float, default=12.0)
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args()
    tune_gc()
    history = simulate_history(args.seed, DEFAULT_MARKETS, origins=5, steps=1500,
                               actions_max=60, deliver_prob=0.9)
    rng = random.Random(args.seed)
    order = sorted(range(len(history)), key=lambda i: i + rng.uniform(0, args.jitter))
    arrivals = [history[i].raw for i in order]
    rows = {}
    for batch in (1, 4, 16):
        best, replica = min((feed(arrivals, batch) for _ in range(3)), key=lambda r: r[0])
        stats = replica.stats()
        rows[f"batch_{batch}"] = {"ms": round(best * 1000, 1), "rollbacks": stats["rollbacks"],
                                  "reapplied": stats["events_reapplied"],
                                  "digest": replica.digest_hex[:16]}
    one = rows["batch_1"]["ms"]
    print(json.dumps({"events": len(history), "jitter": args.jitter, **rows,
                      "speedup_16": round(one / rows["batch_16"]["ms"], 2)}))


if __name__ == "__main__":
    main()
