"""Local client API: JSON lines over TCP, bound to 127.0.0.1 only.

One request per line, one JSON reply per line. Requests (all fields strings or
integers; prices and quantities as decimal strings, converted to ticks and lots at
this edge):
  {"cmd": "status"}
  {"cmd": "place", "market": "BTC-USD", "side": "buy", "type": "limit",
   "price": "65000.01", "qty": "0.25", "stp": "expire_taker"}
  {"cmd": "cancel", "market": "BTC-USD", "order_id": "<68 hex chars>"}
  {"cmd": "book", "market": "BTC-USD", "levels": 10}
  {"cmd": "trades", "limit": 50}
  {"cmd": "order", "order_id": "<hex>"}
  {"cmd": "trading", "on": false}        (auto-trading on/off)
  {"cmd": "flush"}                       (sign and publish queued actions now)
Replies: {"ok": true, ...} or {"ok": false, "error": "..."}; a bad request never
closes the server.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import trio

from ..core.events import STP, Cancel, OrderType, Place, Side
from ..core.market import GridError
from .autotrade import AutoTrader

if TYPE_CHECKING:
    from ..node import Node

log = logging.getLogger("p2pexchange.api")
REQUEST_BYTES_MAX = 64 * 1024
CLIENTS_MAX = 32


class BadRequest(Exception):
    pass


def _field(req: dict, name: str, kind: type = str) -> Any:
    value = req.get(name)
    if type(value) is not kind:
        raise BadRequest(f"field {name!r} must be a {kind.__name__}")
    return value


def _enum(enum: Any, text: str, name: str) -> Any:
    try:
        return enum[text.upper()]
    except KeyError:
        choices = ", ".join(m.name.lower() for m in enum)
        raise BadRequest(f"{name} must be one of {choices}") from None


def _market(node: Node, req: dict) -> Any:
    name = _field(req, "market")
    market = node.markets.get(name)
    if market is None:
        raise BadRequest(f"unknown market {name!r}; known: {sorted(node.markets)}")
    return market


def _bounded_int(req: dict, name: str, default: int, hi: int) -> int:
    value = req.get(name, default)
    if type(value) is not int or not 1 <= value <= hi:
        raise BadRequest(f"{name} must be an integer 1..{hi}")
    return value


def _order_id(req: dict) -> bytes:
    try:
        return bytes.fromhex(_field(req, "order_id"))
    except ValueError:
        raise BadRequest("order_id must be hex") from None


async def _status(node: Node, req: dict, trader: AutoTrader | None) -> dict:
    return {**node.status(), "trading": trader is not None and trader.enabled}


async def _place(node: Node, req: dict, trader: AutoTrader | None) -> dict:
    market = _market(node, req)
    otype = _enum(OrderType, req.get("type", "limit"), "type")
    side = _enum(Side, _field(req, "side"), "side")
    stp = _enum(STP, req.get("stp", "expire_taker"), "stp")
    try:
        price = 0 if otype is OrderType.MARKET else market.price_to_ticks(_field(req, "price"))
        qty = market.qty_to_lots(_field(req, "qty"))
    except GridError as exc:
        raise BadRequest(str(exc)) from None
    node.submit(market.name, Place(side, otype, price, qty, stp))
    return {"queued": True}


async def _cancel(node: Node, req: dict, trader: AutoTrader | None) -> dict:
    market = _market(node, req)
    oid = _order_id(req)
    if len(oid) != 34:
        raise BadRequest("order_id must be 34 bytes (68 hex characters)")
    node.submit(market.name, Cancel(oid))
    return {"queued": True}


async def _flush(node: Node, req: dict, trader: AutoTrader | None) -> dict:
    ids = await node.flush()
    orders = [{"order_id": oid.hex(), "outcome": outcome}
              for event_id in ids for oid, outcome in node.outcomes(event_id)]
    return {"events": [i.hex() for i in ids], "actions": orders}


async def _book(node: Node, req: dict, trader: AutoTrader | None) -> dict:
    market = _market(node, req)
    depth = node.book(market.name, _bounded_int(req, "levels", 10, 1000))
    return {side: [[market.ticks_to_price(p), market.lots_to_qty(q)] for p, q in rows]
            for side, rows in depth.items()}


async def _trades(node: Node, req: dict, trader: AutoTrader | None) -> dict:
    limit = _bounded_int(req, "limit", 50, 10_000)
    return {"trades": [t.as_dict() for t in node.recent_trades(limit)]}


async def _order(node: Node, req: dict, trader: AutoTrader | None) -> dict:
    order = node.order(_order_id(req))
    if order is None:
        raise BadRequest("unknown order")
    return order.as_dict()


async def _trading(node: Node, req: dict, trader: AutoTrader | None) -> dict:
    if trader is None:
        raise BadRequest("this node runs no auto-trading")
    trader.enabled = bool(_field(req, "on", bool))
    return {"trading": trader.enabled}


COMMANDS = {"status": _status, "place": _place, "cancel": _cancel, "flush": _flush,
            "book": _book, "trades": _trades, "order": _order, "trading": _trading}


async def handle(node: Node, req: Any, trader: AutoTrader | None = None) -> dict:
    if type(req) is not dict:
        raise BadRequest("request must be a JSON object")
    cmd = req.get("cmd")
    command = COMMANDS.get(cmd) if isinstance(cmd, str) else None
    if command is None:
        raise BadRequest(f"unknown cmd {repr(cmd)[:40]}")
    return await command(node, req, trader)


class ApiServer:
    """The JSON-lines API as a node service; `port` is the bound port once started."""

    def __init__(self, port: int, trader: AutoTrader | None = None) -> None:
        self.port = port
        self.trader = trader

    async def run(self, node: Node, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        log.info("client API on 127.0.0.1:%d", self.port)
        task_status.started(self.port)
        limiter = trio.CapacityLimiter(CLIENTS_MAX)

        async def limited(stream: trio.SocketStream) -> None:
            async with limiter:
                await self._client(node, stream)

        await trio.serve_listeners(limited, listeners)

    async def _client(self, node: Node, stream: trio.SocketStream) -> None:
        buffer = b""
        async with stream:
            while True:
                try:
                    chunk = await stream.receive_some(4096)
                except trio.BrokenResourceError:
                    return
                if not chunk:
                    return
                buffer += chunk
                if len(buffer) > REQUEST_BYTES_MAX:
                    await stream.send_all(b'{"ok": false, "error": "request too large"}\n')
                    return
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    try:
                        reply = {"ok": True, **await handle(node, json.loads(line), self.trader)}
                    except (BadRequest, ValueError, OverflowError) as exc:
                        reply = {"ok": False, "error": str(exc)}
                    try:
                        await stream.send_all(json.dumps(reply).encode() + b"\n")
                    except trio.BrokenResourceError:
                        return
