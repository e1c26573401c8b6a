"""`python -m p2pexchange order|cancel|orders|book|trades|status|leave`: the local node's API
from the command line. Tables by default, `--json` for scripts (the API's bodies as
they are). The API's address comes from `--api URL` or from `api.json` in the node's
`--data-dir` (written by the running node); no node there is one clear line, exit 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, TextIO

import httpx
from rich.console import Console
from rich.table import Table

TIMEOUT_S = 40.0  # placing waits for the batch tick; the API gives up after 30 s
COMMANDS = ("order", "cancel", "orders", "book", "trades", "status", "leave")
LEAVE_POLL_S = 0.5
BUSY_RETRY_S = 5.0  # how long a command asks again a node that answers 503 node_busy
BUSY_RETRY_PAUSE_S = 0.25


class CommandError(Exception):
    """A one-line message for the user; exit code 1."""


def add_connection_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--api", metavar="URL", help="the node's API, e.g. http://127.0.0.1:7001 "
                   "(default: read from DATA_DIR/api.json)")
    p.add_argument("--data-dir", default="./p2pexchange-data", metavar="DIR",
                   help="the running node's data dir (default ./p2pexchange-data)")
    p.add_argument("--json", action="store_true", help="print the API's JSON as is")


def api_url(args: argparse.Namespace) -> str:
    if args.api:
        return args.api.rstrip("/")
    path = os.path.join(args.data_dir, "api.json")
    try:
        with open(path) as f:
            return json.load(f)["url"]
    except (OSError, ValueError, KeyError):
        raise CommandError(f"no node running: no API address in {path} (start a node with "
                           f"`python -m p2pexchange --data-dir {args.data_dir}`, or pass "
                           "--api URL)") from None


def call(args: argparse.Namespace, method: str, path: str, **kwargs: Any) -> Any:
    """One API request; a node that answers 503 `node_busy` (backpressure: it refused
    the request before doing anything) is asked again for up to `BUSY_RETRY_S`."""
    url = api_url(args)
    deadline = time.monotonic() + BUSY_RETRY_S
    while True:
        try:
            reply = httpx.request(method, url + path, timeout=TIMEOUT_S, **kwargs)
        except httpx.TransportError:
            raise CommandError(f"no node running: nothing answers at {url}") from None
        body = reply.json() if reply.headers.get("content-type", "").startswith(
            "application/json") else {}
        busy = (reply.status_code == 503 and isinstance(body, dict)
                and body.get("error", {}).get("reason") == "node_busy")
        if not busy or time.monotonic() >= deadline:
            break
        time.sleep(BUSY_RETRY_PAUSE_S)
    if reply.status_code >= 400:
        err = body.get("error", {}) if isinstance(body, dict) else {}
        field = f" ({err['field']})" if err.get("field") else ""
        raise CommandError(f"refused: {err.get('reason', reply.status_code)}{field}: "
                           f"{err.get('message', reply.text[:200])}")
    return body


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m p2pexchange",
                                description="Talk to the local node's API.")
    sub = p.add_subparsers(dest="command", required=True)
    o = sub.add_parser("order", help="place an order: order buy BTC-USD 0.5 @ 65000")
    o.add_argument("words", nargs="+", metavar="SIDE MARKET QTY [@ PRICE]")
    kind = o.add_mutually_exclusive_group()
    for flag in ("--market", "--ioc", "--fok", "--post-only"):
        kind.add_argument(flag, dest="type", action="store_const",
                          const=flag[2:].replace("-", "_"), help=f"a {flag[2:]} order")
    o.add_argument("--stp", default="expire_taker",
                   choices=["expire_taker", "expire_maker", "expire_both"])
    o.add_argument("--client-id", help="client order id: the same one twice places once")
    c = sub.add_parser("cancel", help="cancel ID (or a prefix of it), or --all [MARKET]")
    c.add_argument("order_id", nargs="?")
    c.add_argument("--all", action="store_true", help="cancel all of this node's orders")
    c.add_argument("market_name", nargs="?", metavar="MARKET")
    s = sub.add_parser("orders", help="this node's orders")
    s.add_argument("--all", action="store_true", help="also the closed ones placed here")
    b = sub.add_parser("book", help="depth ladder of a market")
    b.add_argument("market_name", metavar="MARKET")
    b.add_argument("--depth", type=int, default=10)
    t = sub.add_parser("trades", help="recent trades (pending/final)")
    t.add_argument("market_name", nargs="?", metavar="MARKET")
    t.add_argument("--limit", type=int, default=20)
    sub.add_parser("status", help="peers, members, digest, finality, rejections")
    lv = sub.add_parser("leave", help="leave the network for good (cancels this node's "
                        "orders); waits until the node may be stopped")
    lv.add_argument("--wait", type=float, default=60.0, metavar="SECONDS",
                    help="how long to wait for the leave to be final (default 60; 0: "
                    "do not wait)")
    for sp in (o, c, s, b, t, sub.choices["status"], lv):
        add_connection_options(sp)
    return p


def order_body(args: argparse.Namespace, p: argparse.ArgumentParser) -> dict:
    words = " ".join(args.words).replace("@", " @ ").split()
    if len(words) < 3 or words[0] not in ("buy", "sell"):
        p.error("usage: order buy|sell MARKET QTY [@ PRICE]")
    body: dict[str, Any] = {"side": words[0], "market": words[1], "quantity": words[2],
                            "type": args.type or "limit", "stp": args.stp}
    rest = words[3:]
    if body["type"] == "market":
        if rest:
            p.error("a market order takes no price")
    elif rest[:1] != ["@"] or len(rest) != 2:
        p.error("a limit, ioc, fok or post-only order needs '@ PRICE'")
    else:
        body["price"] = rest[1]
    if args.client_id:
        body["client_order_id"] = args.client_id
    return body


def resolve_order_id(args: argparse.Namespace, prefix: str) -> str:
    if len(prefix) == 68:
        return prefix
    mine = [o["order_id"] for o in call(args, "GET", "/orders")["orders"]
            if o["order_id"].startswith(prefix.lower())]
    if len(mine) != 1:
        raise CommandError(f"{len(mine)} open orders of this node start with {prefix!r}")
    return mine[0]


def run(args: argparse.Namespace, p: argparse.ArgumentParser) -> Any:
    """Call the API for one command; returns the body (printed by `show`)."""
    if args.command == "order":
        return call(args, "POST", "/orders", json=order_body(args, p))
    if args.command == "cancel":
        if args.all:
            market = args.market_name or args.order_id  # `cancel --all BTC-USD`
            return call(args, "DELETE", "/orders", params={"market": market} if market else {})
        if not args.order_id:
            p.error("cancel needs an order id or --all")
        return call(args, "DELETE", f"/orders/{resolve_order_id(args, args.order_id)}")
    if args.command == "orders":
        return call(args, "GET", "/orders", params={"status": "all" if args.all else "open"})
    if args.command == "book":
        return call(args, "GET", f"/book/{args.market_name}", params={"depth": args.depth})
    if args.command == "trades":
        params = {"limit": args.limit, **({"market": args.market_name}
                                          if args.market_name else {})}
        return call(args, "GET", "/trades", params=params)
    if args.command == "leave":
        return leave(args)
    return call(args, "GET", "/status")


def leave(args: argparse.Namespace) -> dict:
    """POST /leave, then poll the status until this node has left (or `--wait` ends)."""
    if args.wait < 0:
        raise CommandError("--wait must be 0 or more seconds")
    body = call(args, "POST", "/leave")
    deadline = time.monotonic() + args.wait
    while body["membership"] != "left" and time.monotonic() < deadline:
        time.sleep(LEAVE_POLL_S)
        body["membership"] = call(args, "GET", "/status")["membership"]
    if body["membership"] != "left" and args.wait > 0:
        raise CommandError(f"the leave is signed, not final yet after {args.wait:g} s (the "
                           "network waits for members that are silent?); keep the node "
                           "running and check `status`")
    return body


def main(argv: list[str], file: TextIO | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    out = Console(file=file or sys.stdout, width=160, highlight=False, soft_wrap=True)
    try:
        body = run(args, p)
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr if file is None else file)
        return 1
    if args.json:
        out.print(json.dumps(body, indent=2), markup=False)
    else:
        show(args.command, body, out)
    return 0


def show(command: str, body: Any, out: Console) -> None:
    if command == "order":
        o = body.get("order") or {}
        dup = " (client order id seen before: the first order)" if body["duplicate"] else ""
        out.print(f"order {body['order_id']} {body['outcome']}{dup}")
        if o:
            out.print(orders_table([o]))
    elif command == "cancel":
        for c in body.get("cancelled", [body] if "outcome" in body else []):
            out.print(f"{c['outcome']}: {c['order_id']}")
        if not body.get("cancelled", True):
            out.print("no open orders to cancel")
    elif command == "orders":
        out.print(orders_table(body["orders"]) if body["orders"] else "no orders")
    elif command == "book":
        out.print(book_table(body))
    elif command == "trades":
        out.print(trades_table(body["trades"]) if body["trades"] else "no trades")
    elif command == "leave":
        out.print(f"cancelled {body['cancelled']} open orders; membership: "
                  f"{body['membership']}"
                  + (" (this node may be stopped now)" if body["membership"] == "left" else ""))
    else:
        out.print(status_table(body))


def orders_table(orders: list[dict]) -> Table:
    t = Table("order id", "market", "side", "type", "price", "qty", "filled", "status",
              "fills", box=None)
    for o in orders:
        t.add_row(o["order_id"], o["market"], o["side"], o["type"], o["price"] or "market",
                  o["quantity"], o["filled"], o["status"], str(len(o.get("fills", []))))
    return t


def book_table(book: dict) -> Table:
    t = Table("side", "price", "quantity", title=book["market"], box=None)
    for level in reversed(book["asks"]):
        t.add_row("ask", level["price"], level["quantity"], style="red")
    for level in book["bids"]:
        t.add_row("bid", level["price"], level["quantity"], style="green")
    return t


def trades_table(trades: list[dict]) -> Table:
    t = Table("market", "price", "qty", "taker", "status", "maker order", "taker order",
              box=None)
    for tr in trades:
        t.add_row(tr["market"], tr["price"], tr["quantity"], tr["taker_side"], tr["status"],
                  short_order_id(tr["maker_order"]), short_order_id(tr["taker_order"]))
    return t


def status_table(s: dict) -> Table:
    t = Table("", "", box=None, show_header=False)
    for key in ("peer_id", "multiaddrs", "peers", "membership", "members", "waiting_for",
                "removed", "voting_to_remove", "digest", "final_frontier", "events",
                "trades", "trades_final", "trades_pending", "rejected", "trading"):
        value = s.get(key)
        if key == "members":
            value = f"{len(value)}"
        elif key == "waiting_for":
            value = ", ".join(value) or "nobody"
        elif key == "removed":
            value = ", ".join(f"{r['member']} (after seq {r['cut']})"
                              for r in value or []) or "nobody"
        elif isinstance(value, list):
            value = ", ".join(value)
        elif isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items()) or "none"
        t.add_row(key, str(value))
    return t


def short_order_id(order_id: str) -> str:
    """A short handle for an order id in tables: its event id's first 12 hex digits and
    its index in that event (orders of one event share the event id)."""
    return f"{order_id[:12]}:{int(order_id[64:] or '0', 16)}"
