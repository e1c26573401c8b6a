"""Process-wide settings shared by node processes and benchmarks: the cyclic garbage
collector's.

The matching engine and its undo log allocate many small, long-lived objects (orders,
levels, undo records, trades); with CPython's default thresholds (700, 10, 10) the
collector rescans them so often that it doubles the engine's cost (measured: 237k vs
492k orders/s with the collector off, scripts/bench_core.py workload). The core
creates almost no reference cycles, so collecting young objects every 100,000
allocations loses nothing.

The price is the length of one pass: the event loop waits while the collector runs,
at about a microsecond per object scanned on this machine. On five nodes under 10,000
orders/s a young pass took 90 to 170 ms (`loop_slow_steps` in the status names them).
Smaller thresholds were measured and dropped: (10_000, 10, 10) still gave 80 to 110 ms
middle-generation passes (nearly every young object of a busy node lives on: orders,
trades, undo records), for 15% more CPU per order. What shortens the passes is fewer
long-lived objects per order, not other thresholds.

Before the node starts, everything imported so far (modules, classes, functions:
several hundred thousand objects that live as long as the process) is collected once
and frozen (`gc.freeze`), so no full pass scans it again.
"""

from __future__ import annotations

import gc

GC_THRESHOLDS = (100_000, 50, 100)


def tune_gc() -> tuple[int, int, int]:
    gc.set_threshold(*GC_THRESHOLDS)
    gc.collect()
    gc.freeze()
    return GC_THRESHOLDS
