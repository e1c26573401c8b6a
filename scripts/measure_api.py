"""Measures the client API of one node process: POST /orders latency (sequential, each
answered once signed at the batch tick), and a POST /orders/batch of 1,000 orders.
Prints one JSON line. Usage: python scripts/measure_api.py [--orders 50]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import tempfile
import time

import httpx

from p2pexchange.demo import NodeProcess


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--orders", type=int, default=50)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        node = NodeProcess(0, tmp, ["--log-level", "warning"])
        try:
            node.ready.wait(60)
            url = f"http://127.0.0.1:{node.api_port}"
            order = {"market": "BTC-USD", "side": "buy", "price": "100.00", "quantity": "0.01"}
            with httpx.Client(base_url=url, timeout=30) as http:
                single = []
                for _ in range(args.orders):
                    t0 = time.perf_counter()
                    assert http.post("/orders", json=order).status_code == 201
                    single.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                reply = http.post("/orders/batch", json={"orders": [order] * 1000})
                batch_s = time.perf_counter() - t0
                assert len(reply.json()["results"]) == 1000
        finally:
            node.signal(15)
            node.proc.wait(20)
    print(json.dumps({"post_orders_p50_ms": round(statistics.median(single) * 1000, 1),
                      "post_orders_max_ms": round(max(single) * 1000, 1),
                      "batch_1000_s": round(batch_s, 3),
                      "batch_orders_per_s": round(1000 / batch_s)}))


if __name__ == "__main__":
    main()
