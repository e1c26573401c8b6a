"""`python -m p2pexchange watch BTC-USD`: a live terminal view fed by the API's
WebSocket stream: the depth ladder, recent trades (pending, then final), this node's
order updates, peers and the digest. Ctrl-C quits. `--updates N` stops after N stream
messages (for scripts and tests); off a terminal it prints one frame per update.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import deque
from typing import Any, TextIO

import trio
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

from .commands import CommandError, add_connection_options, api_url, short_order_id

TRADES_SHOWN = 15
ORDERS_SHOWN = 8


class View:
    """What the screen shows, updated message by message."""

    def __init__(self, market: str) -> None:
        self.market = market
        self.book: dict[str, Any] = {"bids": [], "asks": []}
        self.trades: deque[dict] = deque(maxlen=TRADES_SHOWN)
        self.orders: dict[str, dict] = {}
        self.status: dict[str, Any] = {}

    def update(self, message: dict) -> None:
        kind = message.get("type")
        if kind == "book" and message.get("market") == self.market:
            self.book = message
        elif kind == "trade" and message.get("market") == self.market:
            key = (message["event_id"], message["maker_order"], message["taker_order"])
            for i, old in enumerate(self.trades):
                if (old["event_id"], old["maker_order"], old["taker_order"]) == key:
                    self.trades[i] = message
                    return
            self.trades.appendleft(message)
        elif kind == "order" and message.get("market") == self.market:
            self.orders[message["order"]["order_id"]] = message["order"]
            while len(self.orders) > ORDERS_SHOWN:
                del self.orders[next(iter(self.orders))]
        elif kind == "status":
            self.status = message

    def render(self) -> Group:
        s = self.status
        head = (f"[b]{self.market}[/b]  peer {str(s.get('peer_id', '?'))[-12:]}  "
                f"peers {s.get('peers', '?')}  members {s.get('members', '?')}  "
                f"events {s.get('events', '?')}  trades final {s.get('trades_final', '?')} "
                f"pending {s.get('trades_pending', '?')}  digest {str(s.get('digest', ''))[:16]}")
        ladder = Table("price", "quantity", title="book", box=None)
        for level in reversed(self.book["asks"][:10]):
            ladder.add_row(level["price"], level["quantity"], style="red")
        for level in self.book["bids"][:10]:
            ladder.add_row(level["price"], level["quantity"], style="green")
        trades = Table("price", "qty", "taker", "status", title="trades", box=None)
        for t in self.trades:
            trades.add_row(t["price"], t["quantity"], t["taker_side"], t["status"],
                           style="bold" if t["status"] == "final" else "dim")
        orders = Table("my order", "side", "price", "filled/qty", "status",
                       title="my orders", box=None)
        for o in reversed(self.orders.values()):
            orders.add_row(short_order_id(o["order_id"]), o["side"], o["price"] or "market",
                           f"{o['filled']}/{o['quantity']}", o["status"])
        row = Table.grid(padding=(0, 4))
        row.add_row(ladder, trades, orders)
        return Group(Panel(head), row)


async def watch(url: str, market: str, updates: int | None, console: Console) -> int:
    view = View(market)
    ws_url = url.replace("http://", "ws://", 1) + f"/stream?market={market}"
    seen = 0
    try:
        async with open_websocket_url(ws_url) as ws:
            with Live(view.render(), console=console, auto_refresh=False,
                      transient=False) as live:
                while updates is None or seen < updates:
                    view.update(json.loads(await ws.get_message()))
                    seen += 1
                    live.update(view.render(), refresh=True)
    except (OSError, HandshakeError):
        raise CommandError(f"no node running: cannot open the stream at {ws_url}") from None
    except ConnectionClosed as exc:
        raise CommandError(f"the node closed the stream: {exc.reason}") from None
    return 0


def main(argv: list[str], file: TextIO | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m p2pexchange watch", description=__doc__)
    p.add_argument("market", metavar="MARKET")
    p.add_argument("--updates", type=int, default=None, metavar="N",
                   help="stop after N stream messages (default: until Ctrl-C)")
    add_connection_options(p)
    args = p.parse_args(argv)
    console = Console(file=file or sys.stdout)
    try:
        return trio.run(watch, api_url(args), args.market, args.updates, console)
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr if file is None else file)
        return 1
    except KeyboardInterrupt:
        return 0
