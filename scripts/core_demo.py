"""The deterministic core on its own: replicas trading over a simulated faulty network.

Prints each event as its origin creates it (actions, trades), the partition and the
healing, then one line per replica and a JSON summary. No sockets, no clocks: the
same --seed prints the same run. Usage: python scripts/core_demo.py [--seed N]
[--nodes N] [--ticks N] [--loss P] [--quiet]
"""

from __future__ import annotations

import argparse
import json
import sys

from p2pexchange.core.events import short_id
from p2pexchange.core.market import DEFAULT_MARKETS
from p2pexchange.sim.simulation import run_simulation


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--nodes", type=int, default=4, choices=range(2, 33), metavar="2..32")
    parser.add_argument("--ticks", type=int, default=200, help="events created (default 200)")
    parser.add_argument("--loss", type=float, default=0.3, help="gossip loss rate, 0..0.95")
    parser.add_argument("--quiet", action="store_true", help="only the summary")
    args = parser.parse_args(argv)
    if not 0 <= args.loss <= 0.95 or args.ticks < 8:
        parser.error("--loss must be within 0..0.95 and --ticks at least 8")

    def show(tick, node, event, receipt) -> None:
        if args.quiet:
            return
        market = DEFAULT_MARKETS[event.market]
        kinds = ", ".join(sorted({type(a).__name__.lower() for a in event.actions}))
        print(f"t={tick:4d} node {short_id(node.origin[-6:])} event seq={event.seq} "
              f"lamport={event.lamport} {event.market}: {len(event.actions)} actions ({kinds})")
        for t in receipt.trades:
            print(f"         trade {market.lots_to_qty(t.qty)} {market.base} @ "
                  f"{market.ticks_to_price(t.price)} {market.quote} "
                  f"taker {t.taker_side.name.lower()} (pending)")

    result = run_simulation(args.seed, nodes_n=args.nodes, ticks=args.ticks, loss=args.loss,
                            on_event=show)
    lo, hi = result.partition
    print(f"\npartition from t={lo} to t={hi}; {result.messages_lost} of "
          f"{result.messages_sent} gossip messages lost; healed in {result.heal_rounds} rounds")
    print(f"{'node':<14}{'events':>8}{'trades':>8}{'rollbacks':>11}{'final':>7}  digest")
    for node in result.nodes:
        stats = node.replica.stats()
        print(f"{short_id(node.origin[-6:]):<14}{stats['events_delivered']:>8}"
              f"{stats['trades']:>8}{stats['rollbacks']:>11}{len(node.final_prefix):>7}  "
              f"{node.replica.digest_hex[:16]}")
    stats = result.nodes[0].replica.stats()
    print(json.dumps({"converged": result.converged, "nodes": args.nodes,
                      "events": stats["events_delivered"], "trades": stats["trades"],
                      "digests": [n.replica.digest_hex for n in result.nodes]}))
    return 0 if result.converged else 1


if __name__ == "__main__":
    sys.exit(main())
