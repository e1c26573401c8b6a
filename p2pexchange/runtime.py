"""Process-wide settings shared by node processes and benchmarks.

The matching engine and its undo log allocate many small, long-lived objects; with
CPython's default thresholds (700, 10, 10) the cyclic garbage collector rescans them so
often that it doubles the engine's cost (measured: 237k vs 492k orders/s with the
collector off, scripts/bench_core.py workload). The core creates almost no reference
cycles, so collecting young objects every 100,000 allocations loses nothing.
"""

from __future__ import annotations

import gc

GC_THRESHOLDS = (100_000, 50, 100)


def tune_gc() -> tuple[int, int, int]:
    gc.set_threshold(*GC_THRESHOLDS)
    return GC_THRESHOLDS
