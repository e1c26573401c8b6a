"""What a peer with a valid key can make one event cost the engine; prints one JSON line.

Each case builds a book holding one price level of --depth one-lot asks (not timed),
then times what an attacker's event makes the engine do on it:

1. `cancel_back`: 1,000 cancels of the orders at the back of the level.
2. `fok_unfillable`: --foks FOK buys (a 12 KB-ish event) that the level cannot fill,
   each asking one lot more than the level holds.
3. `market_sweep`: one market buy for the whole level.

Every case runs against the engine as it is now (one per-event fill budget, as the
replica passes it) and against the engine as it was at commit 8c00d78, loaded from
`git show 8c00d78:p2pexchange/core/book.py` as a sibling module of the current
`p2pexchange.core.events`, so "before" and "after" are measured in the same run. Each
figure is the best of --repeat runs, in milliseconds; `ratio` is before / after.
Usage: python scripts/bench_engine_attacks.py [--depth N] [--foks N] [--repeat N]
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

from p2pexchange.core import book as current
from p2pexchange.core.events import OrderType, Place, Side
from p2pexchange.runtime import tune_gc

BEFORE_COMMIT = "8c00d78"
TARGET_MS = 50.0
EVENT_ID = bytes(32)
MAKER = b"maker-origin"
ATTACKER = b"attacker-origin"
REPO = pathlib.Path(__file__).resolve().parent.parent


def load_engine_at(commit: str, scratch: pathlib.Path):
    """The book module of `commit`, importing the current `p2pexchange.core.events`."""
    source = subprocess.run(["git", "show", f"{commit}:p2pexchange/core/book.py"], cwd=REPO,
                            check=True, capture_output=True, text=True).stdout
    path = scratch / f"book_{commit}.py"
    path.write_text(source)
    name = f"p2pexchange.core._book_{commit}"  # its relative imports resolve in core/
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def deep_level(engine, depth: int):
    """A book of one ask level at 100 holding `depth` one-lot orders, and their ids."""
    book = engine.OrderBook("BENCH")
    ids = [i.to_bytes(34, "big") for i in range(depth)]
    sell = Place(Side.SELL, OrderType.LIMIT, 100, 1)
    for oid in ids:
        book.place(oid, MAKER, sell, EVENT_ID)
    return book, ids


def place_with_event_budget(engine, book):
    """`place` as the replica calls it: one fill budget shared by the event's actions."""
    if hasattr(book, "event_budget"):
        budget = book.event_budget()
        return lambda oid, origin, action: book.place(oid, origin, action, EVENT_ID, budget)
    return lambda oid, origin, action: book.place(oid, origin, action, EVENT_ID)


def timed_ms(run) -> float:
    gc.collect()
    start = time.perf_counter()
    run()
    return (time.perf_counter() - start) * 1000


def case_cancel_back(engine, depth: int) -> tuple[float, dict]:
    book, ids = deep_level(engine, depth)
    back = ids[-1000:][::-1]  # each cancel names the order now at the back of the level

    def run() -> None:
        for oid in back:
            assert book.cancel(oid, MAKER) is None
    ms = timed_ms(run)
    return ms, {"resting_after": book.resting_count()}


def case_fok_unfillable(engine, depth: int, foks: int) -> tuple[float, dict]:
    book, _ = deep_level(engine, depth)
    place = place_with_event_budget(engine, book)
    fok = Place(Side.BUY, OrderType.FOK, 100, depth + 1)
    reasons: dict[str, int] = {}

    def run() -> None:
        for i in range(foks):
            order = place((depth + i).to_bytes(34, "big"), ATTACKER, fok)
            reasons[order.reason] = reasons.get(order.reason, 0) + 1
    ms = timed_ms(run)
    return ms, {"reasons": reasons}


def case_market_sweep(engine, depth: int) -> tuple[float, dict]:
    book, _ = deep_level(engine, depth)
    place = place_with_event_budget(engine, book)
    sweep = Place(Side.BUY, OrderType.MARKET, 0, depth)
    out = {}

    def run() -> None:
        order = place(depth.to_bytes(34, "big"), ATTACKER, sweep)
        out.update(filled=order.filled, reason=order.reason)
    ms = timed_ms(run)
    return ms, out


def best_of(repeat: int, case, *args) -> tuple[float, dict]:
    runs = [case(*args) for _ in range(repeat)]
    return min(ms for ms, _ in runs), runs[0][1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=50_000)
    parser.add_argument("--foks", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    tune_gc()  # as node processes run (p2pexchange/runtime.py)
    with tempfile.TemporaryDirectory() as scratch:
        before = load_engine_at(BEFORE_COMMIT, pathlib.Path(scratch))
    cases = {
        "cancel_back_1000": (case_cancel_back, (args.depth,)),
        f"fok_unfillable_{args.foks}": (case_fok_unfillable, (args.depth, args.foks)),
        "market_sweep": (case_market_sweep, (args.depth,)),
    }
    results = {}
    for name, (case, case_args) in cases.items():
        after_ms, after_detail = best_of(args.repeat, case, current, *case_args)
        before_ms, before_detail = best_of(args.repeat, case, before, *case_args)
        results[name] = {
            "before_ms": round(before_ms, 2), "after_ms": round(after_ms, 2),
            "ratio": round(before_ms / after_ms, 1) if after_ms else None,
            "before": before_detail, "after": after_detail,
            f"after_under_{TARGET_MS:g}_ms": after_ms < TARGET_MS,
        }
    print(json.dumps({
        "python": platform.python_version(),
        "before_commit": BEFORE_COMMIT,
        "level_depth": args.depth,
        "event_fills_max": getattr(current, "EVENT_FILLS_MAX", None),
        "cases": results,
    }))


if __name__ == "__main__":
    sys.exit(main())
