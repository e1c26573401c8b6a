"""`WS /stream`: what changes on the node, pushed to WebSocket clients as JSON messages.

One `Broadcaster` per API reads `Node.subscribe_applied()` (every batch the node
applies) and, every `TICK_S`, sends each client:
  {"type": "trade", "status": "pending", ...}  a trade as soon as it is derived here
  {"type": "trade", "status": "final", ...}    the same trade once its event is final
  {"type": "book", "market", "bids", "asks"}   top `BOOK_LEVELS` of each changed book
  {"type": "order", "market", "order": {...}}  one of this node's orders that changed
  {"type": "status", "peers", "digest", ...}   when the digest or the peer count moved
and, only to clients that ask for it (`?types=applied,...`), as soon as it happens:
  {"type": "applied", "market", "at", "events": [{"id", "origin", "seq", "lamport",
   "actions"}]}                                a batch of events applied here (own or a
                                               peer's); order ids are the event id + index
`types` (comma-separated) picks the kinds a client gets, default all but "applied";
kinds no client wants are not even built.
A rollback can change the trades of re-applied events: the final message of an
event carries its trades as they finally are. Each client has a bounded queue
(`CLIENT_QUEUE_MAX`); one that falls behind is disconnected, never waited for.
Events whose trades await finality are tracked up to `PENDING_EVENTS_MAX`.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import trio

from ..core.events import Cancel
from ..core.market import DEFAULT_MARKETS
from ..core.orders import OPEN_STATUSES, Trade
from .schemas import book_out, order_out, peer, trade_out

if TYPE_CHECKING:
    from ..node import Node

log = logging.getLogger("p2pexchange.api")
TICK_S = 0.2
BOOK_LEVELS = 20
CLIENT_QUEUE_MAX = 1024
CLIENTS_MAX = 64
PENDING_EVENTS_MAX = 10_000
OPEN_TRACKED_MAX = 1_000  # own open orders re-checked each tick for silent changes
STREAM_TYPES = ("trade", "book", "order", "status", "applied")
DEFAULT_TYPES = frozenset(STREAM_TYPES) - {"applied"}


def parse_types(text: str | None) -> frozenset[str]:
    """The message kinds named in `?types=a,b`; ValueError for an unknown kind."""
    if text is None:
        return DEFAULT_TYPES
    types = frozenset(t.strip() for t in text.split(",") if t.strip())
    unknown = sorted(types - set(STREAM_TYPES))
    if unknown or not types:
        raise ValueError(f"types must be among {','.join(STREAM_TYPES)}")
    return types


class StreamClient:
    def __init__(self, market: str | None, types: frozenset[str] = DEFAULT_TYPES) -> None:
        self.market = market
        self.types = types
        self.send, self.receive = trio.open_memory_channel(CLIENT_QUEUE_MAX)
        self.overflowed = False

    def offer(self, message: dict) -> None:
        if message["type"] not in self.types:
            return
        if self.market is not None and message.get("market", self.market) != self.market:
            return
        try:
            self.send.send_nowait(message)
        except trio.WouldBlock:
            self.overflowed = True
            self.send.close()
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass


class Broadcaster:
    def __init__(self) -> None:
        self.clients: set[StreamClient] = set()
        self._pending: OrderedDict[bytes, None] = OrderedDict()  # events with pending trades
        self._books: set[str] = set()
        self._orders: set[bytes] = set()
        self._open: OrderedDict[bytes, str] = OrderedDict()  # shown open: id -> status
        self._last_status: tuple = ()

        self._wanted: frozenset[str] = frozenset()  # the kinds some client wants

    def connect(self, market: str | None,
                types: frozenset[str] = DEFAULT_TYPES) -> StreamClient:
        if len(self.clients) >= CLIENTS_MAX:
            raise OverflowError("too many stream clients")
        client = StreamClient(market, types)
        self.clients.add(client)
        self._wanted = self._wanted | types
        return client

    def disconnect(self, client: StreamClient) -> None:
        self.clients.discard(client)
        client.send.close()
        self._wanted = frozenset().union(*(c.types for c in self.clients))

    async def run(self, node: Node) -> None:
        applied = node.subscribe_applied()
        while True:
            with trio.move_on_after(TICK_S):
                async for batch in applied:
                    self._note(node, batch.events)
                return  # the channel closed: the node is stopping
            self._tick(node)

    def _note(self, node: Node, events: list[Any]) -> None:
        if not self.clients:
            return  # nobody listens: nothing to track
        wanted = self._wanted
        if "applied" in wanted:
            self._send_applied(events)
        for event in events:
            self._books.add(event.market)
            if event.origin == node.origin and "order" in wanted:
                self._orders.update(event.order_id(i) for i in range(len(event.actions)))
                self._orders.update(a.order_id for a in event.actions if type(a) is Cancel)
            if not wanted & {"trade", "order"}:
                continue
            trades = node.trades_of(event.id)
            for t in trades:
                if "trade" in wanted:
                    self._send(trade_message(node, t, final=False))
                for order, origin in ((t.maker_order, t.maker_origin),
                                      (t.taker_order, t.taker_origin)):
                    if origin == node.origin and "order" in wanted:
                        self._orders.add(order)
            if trades and "trade" in wanted:
                self._pending[event.id] = None
        while len(self._pending) > PENDING_EVENTS_MAX:
            self._pending.popitem(last=False)

    def _send_applied(self, events: list[Any]) -> None:
        at = time.time()
        by_market: dict[str, list[dict]] = {}
        for e in events:
            by_market.setdefault(e.market, []).append(
                {"id": e.id.hex(), "origin": peer(e.origin), "seq": e.seq,
                 "lamport": e.lamport, "actions": len(e.actions)})
        for market, applied in sorted(by_market.items()):
            self._send({"type": "applied", "market": market, "at": at, "events": applied})

    def _tick(self, node: Node) -> None:
        if not self.clients:
            self._pending.clear()
            self._last_status = ()
            return
        if self._pending:
            ids = list(self._pending)
            for event_id, final in zip(ids, node.is_final(ids), strict=True):
                if final:
                    del self._pending[event_id]
                    for t in node.trades_of(event_id):
                        self._send(trade_message(node, t, final=True))
        for market in sorted(self._books) if "book" in self._wanted else ():
            if market in node.markets:
                book = book_out(node.markets[market], node.book(market, BOOK_LEVELS))
                self._send({"type": "book", **book.model_dump()})
        self._books.clear()
        # An open order of ours can also end without an event naming it (expired by
        # self-trade prevention when another of ours takes): re-check those we showed open.
        for order_id, status in list(self._open.items()):
            order = node.order(order_id)
            if order is None or order.status.name.lower() != status:
                self._orders.add(order_id)
        for order_id in sorted(self._orders):
            order = node.order(order_id)
            self._open.pop(order_id, None)
            if order is not None and order.market in node.markets:
                out = order_out(order, node.markets[order.market])
                self._send({"type": "order", "market": out.market,
                            "order": out.model_dump(exclude={"fills"})})
                if order.status in OPEN_STATUSES:
                    self._open[order_id] = order.status.name.lower()
        while len(self._open) > OPEN_TRACKED_MAX:
            self._open.popitem(last=False)
        self._orders.clear()
        s = node.status()
        status = (s["peers"], s["digest"], s["trades_final"], s["final_frontier"],
                  s["membership"], tuple(s["waiting_for"]))
        if status != self._last_status:
            self._last_status = status
            self._send({**status_message(s), "at": time.time()})

    def _send(self, message: dict) -> None:
        for client in list(self.clients):
            client.offer(message)


def trade_message(node: Node, trade: Trade, final: bool) -> dict:
    market = node.markets.get(trade.market) or DEFAULT_MARKETS[trade.market]
    return {"type": "trade", **trade_out(trade, market, final).model_dump()}


def status_message(s: dict) -> dict:
    return {"type": "status", "peer_id": s["peer_id"], "peers": s["peers"],
            "members": len(s["members"]), "digest": s["digest"], "events": s["events"],
            "trades_final": s["trades_final"], "trades_pending": s["trades_pending"],
            "final_frontier": s["final_frontier"], "membership": s["membership"],
            "waiting_for": s["waiting_for"]}
