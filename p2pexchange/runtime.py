"""Process-wide settings shared by node processes and benchmarks: the cyclic garbage
collector's.

The matching engine and its undo log allocate many small, long-lived objects (orders,
levels, undo records, trades); with CPython's default thresholds (700, 10, 10) the
collector rescans them so often that it doubles the engine's cost (measured: 237k vs
492k orders/s with the collector off, scripts/bench_core.py workload). The core
creates almost no reference cycles, so collecting young objects only every 50,000
allocations loses nothing.

The price is the length of one pass: the event loop waits while the collector runs,
at about a microsecond per object scanned on this machine, more in wall-clock time when
the cores are shared. On five nodes under 10,000 orders/s a young pass took 90 to 170
ms wall-clock with (100_000, 50, 100) (`loop_slow_steps` in the status names them).
`GC_THRESHOLDS` halves the young generation and doubles the middle one's count, so the
older generations are collected as often as before (every 5,000,000 allocations) and
each young pass scans half as much. In-process (3,000 events of 150 orders, `/tmp`
script with `gc.callbacks`): the longest young pass 27.8 -> 16.1 ms; bench_core 405,652
-> 409,632 engine orders/s and 143,873 -> 143,703 replica actions/s (one run each).
Smaller thresholds overall were measured and dropped: (10_000, 10, 10) gave 80 to 110 ms
middle-generation passes in the cluster (nearly every young object of a busy node lives
on: orders, trades, undo records) for 15% more CPU per order; (25_000, 200, 100) 7.7 ms
young passes but 7% fewer engine orders/s. What shortens the passes for good is fewer
long-lived objects per order (docs/snapshot_design.md).

Before the node starts, everything imported so far (modules, classes, functions: some
126,000 objects that live as long as the process; a full pass over them took 65 ms) is
collected once and frozen (`gc.freeze`), so no full pass scans it again.
"""

from __future__ import annotations

import gc

GC_THRESHOLDS = (50_000, 100, 100)


def tune_gc() -> tuple[int, int, int]:
    gc.set_threshold(*GC_THRESHOLDS)
    gc.collect()
    gc.freeze()
    return GC_THRESHOLDS
