"""Command line: `python -m p2pexchange [options]` runs a node with its chosen services."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from typing import Any

import multiaddr

from ..core.market import DEFAULT_MARKETS
from ..core.params import BATCH_ACTIONS_MAX, BATCH_INTERVAL_S, REMOVE_AFTER_S

EVENT_ACTIONS_MAX = 1000  # core.events.EVENT_ACTIONS_MAX (imported late: it loads libp2p)

DESCRIPTION = """\
Run a p2pexchange node: a peer of a serverless exchange. It keeps its own order books,
finds peers through a Kademlia DHT, gossips signed batches of orders, and applies every
event in one deterministic order, so all nodes converge on the same books and trades.
Without --bootstrap it starts a new network; it prints its full multiaddr, which other
nodes pass to --bootstrap. `python -m p2pexchange demo --help` runs a local network.

Commands for a running node (each has --help): order, cancel, orders, book, trades,
status, watch; `verify --data-dir DIR` checks a stored log from scratch."""


def node_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m p2pexchange", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bootstrap", action="append", default=[], metavar="MULTIADDR",
                   help="multiaddr of a running node, ending in /p2p/<peer id> (repeatable)")
    p.add_argument("--listen", default="/ip4/127.0.0.1/tcp/0", metavar="MULTIADDR",
                   help="address to listen on (default /ip4/127.0.0.1/tcp/0: a free port)")
    p.add_argument("--data-dir", default="./p2pexchange-data", metavar="DIR",
                   help="identity key and event store; a restarted node keeps its peer id "
                        "and everything it accepted (default ./p2pexchange-data)")
    p.add_argument("--market", action="append", default=[], choices=sorted(DEFAULT_MARKETS),
                   help="market to follow (repeatable; default: all)")
    p.add_argument("--auto-trade", action="store_true",
                   help="place random buy and sell orders around a moving mid")
    p.add_argument("--rate", type=float, default=4.0,
                   help="auto-trade orders per second (default 4)")
    p.add_argument("--api-port", type=int, default=0, metavar="PORT",
                   help="serve the HTTP/WebSocket client API on 127.0.0.1:PORT (default 0: "
                        "any free port, printed at start and written to DIR/api.json)")
    p.add_argument("--no-api", action="store_true", help="serve no client API")
    p.add_argument("--status-interval", type=float, default=30.0, metavar="SECONDS",
                   help="seconds between status lines (default 30)")
    p.add_argument("--seed", type=int, default=None, help="seed for --auto-trade")
    p.add_argument("--batch-actions-max", type=int, default=BATCH_ACTIONS_MAX, metavar="N",
                   help=f"actions per signed event, 1..{EVENT_ACTIONS_MAX} (default "
                        f"{BATCH_ACTIONS_MAX}; 1 is the one-order-per-event baseline)")
    p.add_argument("--batch-interval", type=float, default=BATCH_INTERVAL_S, metavar="SECONDS",
                   help=f"sign own actions as one event this often (default "
                        f"{BATCH_INTERVAL_S}); longer: fewer, larger events, less work per "
                        f"order on every node, orders wait longer to be signed")
    p.add_argument("--remove-after", type=float, default=REMOVE_AFTER_S, metavar="SECONDS",
                   help="vote to remove a member finality has waited for this long without "
                        f"a word from it (default {REMOVE_AFTER_S:.0f}; liveness only)")
    p.add_argument("--log-level", default="info",
                   choices=["debug", "info", "warning", "error"])
    return p


def check_multiaddr(p: argparse.ArgumentParser, text: str, need_peer: bool) -> None:
    try:
        addr = multiaddr.Multiaddr(text)
    except Exception as exc:  # multiaddr raises several types
        p.error(f"malformed multiaddr {text!r}: {exc}")
    protocols = [proto.name for proto in addr.protocols()]
    if "tcp" not in protocols:
        p.error(f"multiaddr {text!r} names no tcp port")
    if need_peer and "p2p" not in protocols:
        p.error(f"bootstrap multiaddr {text!r} must end in /p2p/<peer id>")


def setup_logging(level: str, prefix: str = "") -> None:
    logging.basicConfig(level=getattr(logging, level.upper()), stream=sys.stdout,
                        format=f"%(asctime)s {prefix}%(levelname)-5s %(message)s",
                        datefmt="%H:%M:%S")
    # py-libp2p is chatty at info and warns on every incoming DHT query.
    noisy = ("libp2p", "multiaddr", "async_service")
    for name in [n for n in logging.root.manager.loggerDict if n.startswith(noisy)] + list(noisy):
        logger = logging.getLogger(name)
        logger.setLevel(logging.CRITICAL if level != "debug" else logging.DEBUG)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True


def parse_node_args(argv: list[str]) -> argparse.Namespace:
    p = node_parser()
    args = p.parse_args(argv)
    check_multiaddr(p, args.listen, need_peer=False)
    for b in args.bootstrap:
        check_multiaddr(p, b, need_peer=True)
    if args.rate <= 0 or args.rate > 1000:
        p.error("--rate must be within (0, 1000]")
    if args.status_interval <= 0:
        p.error("--status-interval must be positive")
    if not 1 <= args.remove_after <= 86_400:
        p.error("--remove-after must be within 1..86400 seconds")
    if not 0.01 <= args.batch_interval <= 5:
        p.error("--batch-interval must be within 0.01..5 seconds")
    if not 1 <= args.batch_actions_max <= EVENT_ACTIONS_MAX:
        p.error(f"--batch-actions-max must be within 1..{EVENT_ACTIONS_MAX}")
    if not 0 <= args.api_port <= 65535:
        p.error("--api-port must be within 0..65535")
    return args


def run_node(argv: list[str]) -> int:
    args = parse_node_args(argv)
    from ..node import Node, NodeConfig  # imports libp2p, which sets up its own logging
    from ..runtime import tune_gc
    from .api import ApiServer
    from .autotrade import AutoTrader
    setup_logging(args.log_level)
    tune_gc()
    # Auto-trading always runs, off unless asked for: the API can switch it on and off.
    trader = AutoTrader(rate=args.rate, enabled=args.auto_trade, seed=args.seed)
    api = ApiServer(args.api_port, trader) if not args.no_api else None
    try:
        os.makedirs(args.data_dir, exist_ok=True)
        node = Node(NodeConfig(
            data_dir=args.data_dir, listen=args.listen, bootstrap=args.bootstrap,
            markets=sorted(set(args.market)) or sorted(DEFAULT_MARKETS), seed=args.seed,
            status_interval_s=args.status_interval, batch_actions_max=args.batch_actions_max,
            batch_interval_s=args.batch_interval, remove_after_s=args.remove_after),
            services=[s for s in (api, trader) if s is not None])
    except OSError as exc:
        print(f"error: cannot use data dir {args.data_dir!r}: {exc}", file=sys.stderr)
        return 2
    return _run_until_stopped(node, api)


def _run_until_stopped(node: Any, api: Any) -> int:
    """Run `node` until SIGINT or SIGTERM; a dial failure at start is a one-line error."""
    import trio

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_stop_on_signal, node)
            await nursery.start(node.run)
            print(f"node {node.peer_id} listening on {node.listen_addr}", flush=True)
            if api is not None:
                print(f"client API on 127.0.0.1:{api.port}", flush=True)
            await node.stopping.wait()
            nursery.cancel_scope.deadline = trio.current_time() + 10

    try:
        trio.run(main)
    except ConnectionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except BaseExceptionGroup as group:
        conn = group.subgroup(ConnectionError)
        if conn is None:
            raise
        while isinstance(conn, BaseExceptionGroup):
            conn = conn.exceptions[0]
        print(f"error: {conn}", file=sys.stderr)
        return 1
    return 0


async def _stop_on_signal(node) -> None:
    import trio
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for sig in signals:
            logging.getLogger("p2pexchange.node").info("%s: shutting down",
                                                       signal.Signals(sig).name)
            node.stop()
            return


def main(argv: list[str] | None = None) -> int:
    return run_node(sys.argv[1:] if argv is None else argv)
