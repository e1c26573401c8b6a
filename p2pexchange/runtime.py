"""Process-wide settings shared by node processes and benchmarks: the cyclic garbage
collector's.

The matching engine and its undo log allocate many small, long-lived objects (orders,
levels, undo records, trades); with CPython's default thresholds (700, 10, 10) the
collector rescans them so often that it doubles the engine's cost (measured: 237k vs
492k orders/s with the collector off, scripts/bench_core.py workload). The core
creates almost no reference cycles, so collecting young objects only every 20,000
allocations loses nothing.

The price is the length of one pass: the event loop waits while the collector runs,
at about a microsecond per object scanned on this machine, more in wall-clock time when
the cores are shared (five nodes and the load on two cores: about 2.5 times the CPU
time). A young pass scans what was allocated since the last one and still lives, and
on a busy node nearly all of it lives on (orders, trades, undo records). With (50_000,
100, 100) young passes took 27 to 33 ms of CPU and 60 to 117 ms wall-clock on five nodes
under 10,000 orders/s; with `GC_THRESHOLDS` (20_000, 250, 100) 16 to 23 ms of CPU at
most, 39 to 49 ms wall-clock in a fast phase of the machine (alternating runs,
`gc.callbacks` hooked through `sitecustomize`; README, "Sixth session"). Not less:
a young pass then scans some 35,000 objects with 350,000 references, since old objects
freed meanwhile (compaction frees closed orders) count against the threshold; more in
slow phases and longer runs. The middle count rises as the first falls, so the older
generations are collected as often as before (every 5,000,000 allocations).
In-process, bench_core gave 450,069 and 463,272 engine orders/s against 413,922 and
412,000 (alternating runs; a single earlier run of (25_000, 200, 100) had shown 7%
fewer: noise, it seems). (10_000, 500, 100) in one 60 s pair: longest young pass 24 ms
of CPU against 32, within what the machine's phases do; not kept.
Smaller middle counts were measured and dropped: (10_000, 10, 10) gave 80 to 110 ms
middle-generation passes in the cluster for 15% more CPU per order. What shortens the
passes for good is fewer long-lived objects per order (docs/snapshot_design.md).

Before the node starts, everything imported so far (modules, classes, functions: some
126,000 objects that live as long as the process; a full pass over them took 65 ms) is
collected once and frozen (`gc.freeze`), so no full pass scans it again.
"""

from __future__ import annotations

import gc

GC_THRESHOLDS = (20_000, 250, 100)


def tune_gc() -> tuple[int, int, int]:
    gc.set_threshold(*GC_THRESHOLDS)
    gc.collect()
    gc.freeze()
    return GC_THRESHOLDS
