"""Run the seeded finality simulation (p2pexchange/sim/simulation.py) over many seeds,
or replay one seed with its log.

Usage: python scripts/simulate.py [--seeds N] [--start S] [--ticks T] [--kind K]
       python scripts/simulate.py --seed N      (one seed, with its log)
Exits 1 on the first FinalityViolation or LivenessFailure, printing the seed and step
to replay. No clocks reach the simulation: the same seed always does the same thing.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter

from p2pexchange.core.events import short_id
from p2pexchange.sim.faults import DISHONEST_KINDS
from p2pexchange.sim.simulation import TICKS, SimResult, Simulation, run_simulation


def show(result: SimResult) -> None:
    print("\n".join(result.log))
    print(f"{'node':<10}{'origin':<14}{'events':>8}{'trades':>8}{'final':>7}  digest")
    for node in result.nodes:
        stats = node.replica.stats()
        role = "" if node.honest else " (dishonest)"
        print(f"{node.index:<10}{short_id(node.origin[-6:]):<14}{stats['events_delivered']:>8}"
              f"{stats['trades']:>8}{len(node.final_prefix):>7}  "
              f"{node.replica.digest_hex[:16]}{role}")
    print(f"converged={result.converged} stalled={result.stalled} heal_rounds="
          f"{result.heal_rounds} final_events={result.final_events} "
          f"messages lost {result.messages_lost}/{result.messages_sent} "
          f"rejected={result.rejected}")


def sweep(start: int, seeds: int, ticks: int, kinds: tuple[str, ...] | None) -> int:
    began = time.perf_counter()
    counts: Counter[str] = Counter()
    for seed in range(start, start + seeds):
        try:
            result = run_simulation(seed, ticks=ticks, kinds=kinds)
        except AssertionError as exc:
            print(f"FAILED {type(exc).__name__}: {exc}\nreplay: python scripts/simulate.py "
                  f"--seed {seed} --ticks {ticks}", file=sys.stderr)
            return 1
        counts[result.schedule.kind or "honest"] += 1
        counts["stalled (equivocation)"] += result.stalled
    elapsed = time.perf_counter() - began
    print(f"{seeds} seeds from {start} in {elapsed:.1f} s ({1000 * elapsed / seeds:.0f} ms "
          f"per seed): {dict(sorted(counts.items()))}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1000)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--seed", type=int, help="replay this one seed with its log")
    parser.add_argument("--ticks", type=int, default=TICKS, help="trading ticks per seed")
    parser.add_argument("--kind", choices=DISHONEST_KINDS,
                        help="force a dishonest member of this kind on every seed")
    args = parser.parse_args(argv)
    if args.ticks < 8:
        parser.error("--ticks must be at least 8")
    kinds = (args.kind,) if args.kind else None
    if args.seed is None:
        return sweep(args.start, args.seeds, args.ticks, kinds)
    sim = Simulation(args.seed, ticks=args.ticks, verbose=True, kinds=kinds)
    try:
        sim.run()
    except AssertionError as exc:
        print("\n".join(sim.result.log))
        print(f"FAILED {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    show(sim.result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
