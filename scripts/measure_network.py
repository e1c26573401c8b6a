"""Measures a local network of node processes: discovery time, event rate, trades, RSS.

Starts --nodes separate node processes (node0 the bootstrap, the others bootstrapping
from it; nodes 2.. auto-trade as in the demo), records the time from the first start
until every node is connected to every other, lets them trade for --duration seconds,
and prints one JSON line. Usage: python scripts/measure_network.py --nodes 8
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import signal
import tempfile
import time

from p2pexchange.demo import NodeProcess


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--duration", type=float, default=30.0)
    p.add_argument("--rate", type=float, default=4.0)
    args = p.parse_args()
    nodes: list[NodeProcess] = []
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        try:
            t0 = time.monotonic()
            nodes.append(NodeProcess(0, os.path.join(tmp, "n0"), []))
            nodes[0].ready.wait(60)
            for i in range(1, args.nodes):
                extra = ["--bootstrap", nodes[0].addr]
                if i >= 2:
                    extra += ["--auto-trade", "--rate", str(args.rate)]
                nodes.append(NodeProcess(i, os.path.join(tmp, f"n{i}"), extra))
            for n in nodes:
                n.ready.wait(60)
            while True:
                peers = [n.request("GET", "/status")["peers"] for n in nodes]
                if min(peers) >= args.nodes - 1 or time.monotonic() - t0 > 120:
                    break
                time.sleep(0.1)
            discovery_s = time.monotonic() - t0
            start = [n.request("GET", "/status")["events"] for n in nodes]
            t1 = time.monotonic()
            time.sleep(args.duration)
            end = [n.request("GET", "/status") for n in nodes]
            elapsed = time.monotonic() - t1
            rss = [round(rss_mib(n.proc.pid), 1) for n in nodes]
        finally:
            for n in nodes:
                n.signal(signal.SIGTERM)
            for n in nodes:
                n.proc.wait(20)
    print(json.dumps({
        "nodes": args.nodes,
        "discovery_s_from_first_start": round(discovery_s, 2),
        "peers_min": min(peers),
        "events_per_s": round((end[0]["events"] - start[0]) / elapsed, 1),
        "trades": end[0]["trades"],
        "events": end[0]["events"],
        "rss_mib_per_node": rss,
        "rate_per_trading_node": args.rate,
        "duration_s": args.duration,
    }))


if __name__ == "__main__":
    main()
