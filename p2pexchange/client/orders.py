"""Placing orders for the API: requests to actions, client order ids, "my orders".

A request becomes a `Place` here (decimal strings to ticks and lots; a value off the
grid is refused with the field and the reason, never rounded). `OwnOrders` places
through `Node.submit_many`, which answers once the batch is signed, so every answer
carries the order id the whole network uses. It remembers the newest
`CLIENT_ORDER_IDS_MAX` client order ids of this node's run: the same id again, also
while the first request is still in flight, answers with the first order and places
nothing. The map lives in memory: it does not survive a restart.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING

import trio

from ..core.events import STP, EventRejected, OrderType, Place, Side, decode_event
from ..core.market import GridError, Market
from .schemas import OrderRequest, Placed, fill_of, order_out

if TYPE_CHECKING:
    from ..core.orders import Trade
    from ..node import Node

CLIENT_ORDER_IDS_MAX = 100_000
RECENT_ORDERS_MAX = 10_000  # orders placed through the API, for `GET /orders?status=all`
PLACE_TIMEOUT_S = 30.0  # signing waits for the batch tick; longer means the node cannot sign


class ApiError(Exception):
    """A request the API refuses: HTTP status, the field at fault, a stable reason."""

    def __init__(self, status: int, reason: str, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.field = field
        self.headers = headers


def market_of(node: Node, name: str, field: str | None = "market") -> Market:
    market = node.markets.get(name)
    if market is None:
        raise ApiError(404 if field is None else 422, "unknown_market",
                       f"unknown market {name[:40]!r}; known: {', '.join(sorted(node.markets))}",
                       field)
    return market


def _units(market: Market, text: str, field: str) -> int:
    convert = market.price_to_ticks if field == "price" else market.qty_to_lots
    try:
        return convert(text)
    except GridError as exc:
        unit = Decimal(market.tick_size if field == "price" else market.lot_size)
        try:
            off_grid = Decimal(text.strip()) % unit != 0
        except (InvalidOperation, AttributeError):
            off_grid = False
        reason = ("off_tick" if field == "price" else "off_lot") if off_grid else "bad_decimal"
        raise ApiError(422, reason, str(exc), field) from None


def to_place(node: Node, req: OrderRequest) -> tuple[Market, Place]:
    market = market_of(node, req.market)
    otype = OrderType[req.type.upper()]
    if otype is OrderType.MARKET:
        if req.price is not None:
            raise ApiError(422, "price_not_allowed", "a market order takes no price", "price")
        price = 0
    elif req.price is None:
        raise ApiError(422, "price_required", f"a {req.type} order needs a price", "price")
    else:
        price = _units(market, req.price, "price")
    qty = _units(market, req.quantity, "quantity")
    return market, Place(Side[req.side.upper()], otype, price, qty, STP[req.stp.upper()])


def placer_of(node: Node, order_id: bytes) -> bytes | None:
    """Who placed `order_id` (an order the books no longer hold): the replica's record
    of a final event, or, once the replica forgot that event (core/replica.py
    `_forget`), the event in the store. None if no stored event placed it."""
    placer = node.replica.placed_by(order_id)
    if placer is not None or (raw := node.store.raw_of(order_id[:32])) is None:
        return placer
    try:
        event = decode_event(raw, node.replica.markets)
    except EventRejected:
        return None
    index = int.from_bytes(order_id[32:], "big")
    if index < len(event.actions) and event.actions[index].__class__ is Place \
            and not node.replica.ledger.is_void(event):  # (a void event placed nothing)
        return event.origin
    return None


def busy(exc: Exception) -> ApiError:
    return ApiError(503, "node_busy", f"node busy: {exc}; retry shortly", None,
                    {"Retry-After": "1"})


class OwnOrders:
    def __init__(self) -> None:
        # client order id -> the first answer, or an Event while it is in flight
        self._by_client_id: OrderedDict[str, Placed | trio.Event | str] = OrderedDict()
        self.recent: OrderedDict[bytes, None] = OrderedDict()  # newest last

    async def place(self, node: Node, requests: Sequence[OrderRequest]) -> list[Placed]:
        """Place `requests` (all checked first: one bad field refuses the whole call)."""
        actions = [to_place(node, r) for r in requests]
        results: list[Placed | None] = [None] * len(requests)
        ours: list[int] = []  # indices this call places
        later: list[int] = []  # duplicates of a client order id placed before or in flight
        claimed: dict[str, trio.Event] = {}
        for i, req in enumerate(requests):
            coid = req.client_order_id
            if coid is not None and (coid in self._by_client_id or coid in claimed):
                later.append(i)
                continue
            if coid is not None:
                claimed[coid] = self._by_client_id[coid] = trio.Event()
            ours.append(i)
        try:
            placed = await self._submit(node, [actions[i] for i in ours])
        except BaseException as exc:
            queued = isinstance(exc, ApiError) and exc.reason == "node_not_ready"
            for coid, event in claimed.items():
                if queued:  # still queued: a retry with this id must not place it twice
                    self._by_client_id[coid] = "queued"
                else:
                    del self._by_client_id[coid]  # the next try with this id places it
                event.set()
            raise
        taken = self._taken(node, [order_id for order_id, _ in placed])
        for i, (order_id, outcome) in zip(ours, placed, strict=True):
            coid = requests[i].client_order_id
            results[i] = self._answer(node, order_id, outcome, coid, actions[i][0],
                                      taken.get(order_id, []))
            self.recent[order_id] = None
            if coid is not None:
                self._by_client_id[coid] = results[i]
                claimed[coid].set()
        self._bound()
        for i in later:
            results[i] = await self._first(node, requests[i].client_order_id)
        return [r for r in results if r is not None]

    async def _submit(self, node: Node, actions: list[tuple[Market, Place]]
                      ) -> list[tuple[bytes, str]]:
        if not actions:
            return []
        try:
            with trio.fail_after(PLACE_TIMEOUT_S):
                return await node.submit_many([(m.name, a) for m, a in actions])
        except OverflowError as exc:
            raise busy(exc) from None
        except trio.TooSlowError:
            raise ApiError(503, "node_not_ready", "the node could not sign the batch in "
                           f"{PLACE_TIMEOUT_S:.0f}s (still syncing its own history?); the "
                           "orders stay queued", None, {"Retry-After": "5"}) from None

    async def _first(self, node: Node, coid: str) -> Placed:
        first = self._by_client_id.get(coid)
        if isinstance(first, trio.Event):
            await first.wait()
            first = self._by_client_id.get(coid)
        if not isinstance(first, Placed):
            raise ApiError(409, "client_order_id_failed", "the first request with this "
                           "client order id failed or is still queued unsigned (see its "
                           "answer)", "client_order_id")
        order = node.order(bytes.fromhex(first.order_id))
        market = node.markets.get(order.market) if order is not None else None
        return first.model_copy(update={
            "duplicate": True,
            "order": order_out(order, market) if order and market else first.order})

    @staticmethod
    def _taken(node: Node, order_ids: list[bytes]) -> dict[bytes, list[Trade]]:
        """What each order took on arrival: its own event's trades with it as the taker
        (an order id starts with the 32-byte id of the event that placed it). Each
        event's trades are read once, not once per order of the call."""
        taken: dict[bytes, list[Trade]] = {}
        for event_id in dict.fromkeys(order_id[:32] for order_id in order_ids):
            for trade in node.trades_of(event_id):
                taken.setdefault(trade.taker_order, []).append(trade)
        return taken

    @staticmethod
    def _answer(node: Node, order_id: bytes, outcome: str, coid: str | None,
                market: Market, taken: list[Trade]) -> Placed:
        order = node.order(order_id)
        fills = [fill_of(t, order_id, market) for t in taken]
        return Placed(order_id=order_id.hex(), outcome=outcome, client_order_id=coid,
                      order=order_out(order, market, fills) if order is not None else None)

    def _bound(self) -> None:
        while len(self.recent) > RECENT_ORDERS_MAX:
            self.recent.popitem(last=False)
        while len(self._by_client_id) > CLIENT_ORDER_IDS_MAX:
            coid, first = next(iter(self._by_client_id.items()))
            if isinstance(first, trio.Event):
                break  # never forget one in flight
            del self._by_client_id[coid]
