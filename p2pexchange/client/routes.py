"""The API's routes (see client/api.py for the list). Each reads the shared `Api`
from the app's state; errors are raised as `ApiError` and rendered by api.py."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import trio
from fastapi import APIRouter, Query, Request, Response, WebSocket, WebSocketDisconnect
from libp2p.peer.id import ID

from ..core.events import ORDER_ID_BYTES
from ..core.market import DEFAULT_MARKETS
from ..core.orders import OPEN_STATUSES
from .metrics import CONTENT_TYPE
from .orders import ApiError, market_of, placer_of
from .schemas import (
    BatchCancelled,
    BatchPlaced,
    BatchRequest,
    Book,
    CancelBatchRequest,
    Cancelled,
    CancelledAll,
    Equivocation,
    Error,
    Flushed,
    Leaving,
    Misbehaviour,
    OrderRequest,
    Orders,
    Placed,
    Status,
    Trades,
    Trading,
    TradingRequest,
    book_out,
    fill_of,
    order_out,
    trade_out,
)
from .stream import parse_types, status_message

if TYPE_CHECKING:
    from .api import Api

TRADES_SCAN_MAX = 100_000  # recent trades searched for a market's trades or an order's fills
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": Error} for code in (400, 403, 404, 409, 422, 503)}


router = APIRouter()


def api_of(request: Request | WebSocket) -> Api:
    return request.app.state.api

@router.post("/orders", response_model=Placed, status_code=201, responses={
    **ERRORS, 200: {"model": Placed, "description": "client order id seen before"}})
async def place_order(order: OrderRequest, request: Request, response: Response) -> Placed:
    """Place one order. 201 with the new order; 200 with the first order when this
    `client_order_id` was used before (nothing new is placed)."""
    placed = (await api_of(request).place([order]))[0]
    if placed.duplicate:
        response.status_code = 200
    return placed


@router.post("/orders/batch", response_model=BatchPlaced, responses=ERRORS)
async def place_orders(batch: BatchRequest, request: Request) -> Response:
    """Up to 1,000 orders, all checked before any is placed."""
    placed = BatchPlaced(results=await api_of(request).place(batch.orders))
    # Written as it is: FastAPI would validate the returned model against `BatchPlaced`
    # again before writing it (6% of the order API's time under load, py-spy).
    return Response(placed.model_dump_json(), media_type="application/json")


@router.delete("/orders/{order_id}", response_model=Cancelled, responses=ERRORS)
async def cancel_order(order_id: str, request: Request) -> Cancelled:
    api = api_of(request)
    oid = _order_id(order_id, "order_id")
    refusal = _cancel_refusal(api, oid)
    if refusal is not None:
        status, reason, message = refusal
        raise ApiError(status, reason, message, "order_id")
    return (await api.cancel([oid]))[0]


@router.post("/orders/cancel", response_model=BatchCancelled, responses=ERRORS)
async def cancel_orders(batch: CancelBatchRequest, request: Request) -> BatchCancelled:
    """Up to 1,000 of this node's orders cancelled in one call (one or a few events).
    A malformed id refuses the whole call; every other id gets its own outcome:
    "cancelled", or why not ("unknown_order", "not_my_order", "not_open", as the
    single cancel's error reasons). An id given twice is cancelled once."""
    api = api_of(request)
    oids = [_order_id(text, f"order_ids.{i}") for i, text in enumerate(batch.order_ids)]
    outcomes: dict[bytes, str] = {}
    for oid in oids:
        refusal = _cancel_refusal(api, oid)
        if refusal is not None:
            outcomes[oid] = refusal[1]
    wanted = list(dict.fromkeys(oid for oid in oids if oid not in outcomes))
    for oid, done in zip(wanted, await api.cancel(wanted), strict=True):
        outcomes[oid] = done.outcome
    return BatchCancelled(results=[Cancelled(order_id=oid.hex(), outcome=outcomes[oid])
                                   for oid in oids])


def _order_id(text: str, field: str) -> bytes:
    try:
        oid = bytes.fromhex(text)
    except ValueError:
        oid = b""
    if len(oid) != ORDER_ID_BYTES:
        raise ApiError(422, "bad_order_id", "order id must be 68 hex characters", field)
    return oid


def _cancel_refusal(api: Api, oid: bytes) -> tuple[int, str, str] | None:
    """Why this node cannot cancel `oid` (HTTP status, reason, message), or None."""
    order = api.node.order(oid)
    # The books forget orders that closed in a final step: who placed one is still known.
    placer = order.origin if order is not None else placer_of(api.node, oid)
    if placer is None:
        return 404, "unknown_order", "no such order on this node"
    if placer != api.node.origin:
        return 403, "not_my_order", "only the node that placed an order can cancel it"
    if order is None or order.status not in OPEN_STATUSES:
        status = order.status.name.lower() if order is not None else "closed (final)"
        return 409, "not_open", f"the order is {status}"
    return None


@router.delete("/orders", response_model=CancelledAll, responses=ERRORS)
async def cancel_all(request: Request, market: str | None = None) -> CancelledAll:
    """Cancel every open order of this node (in `market`, or in every market)."""
    api = api_of(request)
    markets = [market_of(api.node, market).name] if market else sorted(api.node.markets)
    ids = [o.order_id for m in markets for o in api.node.open_orders(m)]
    return CancelledAll(cancelled=await api.cancel(ids))


@router.get("/orders", response_model=Orders, responses=ERRORS)
async def my_orders(request: Request, status: Literal["open", "all"] = "open",
                    market: str | None = None) -> Orders:
    """This node's open orders (all its origin's, auto-trading included); `all` adds
    the last 10,000 orders placed through this API during this run, whatever their
    status (a closed one while it is among the node's last 10,000 closed orders: older
    ones are forgotten once final)."""
    node = api_of(request).node
    markets = [market_of(node, market).name] if market else sorted(node.markets)
    orders = {o.order_id: o for m in markets for o in node.open_orders(m)}
    if status == "all":
        for oid in reversed(api_of(request).orders.recent):
            order = node.order(oid)
            if order is not None and order.market in markets:
                orders.setdefault(oid, order)
    fills: dict[bytes, list] = {}
    for t in node.recent_trades(TRADES_SCAN_MAX):
        for oid in (t.maker_order, t.taker_order):
            if oid in orders:
                fills.setdefault(oid, []).append(fill_of(t, oid, node.markets[t.market]))
    return Orders(orders=[order_out(o, node.markets[o.market], fills.get(oid))
                          for oid, o in orders.items()])


@router.get("/book/{market}", response_model=Book, responses=ERRORS)
async def book(market: str, request: Request,
               depth: int = Query(10, ge=1, le=1000)) -> Book:
    node = api_of(request).node
    m = market_of(node, market, field=None)
    return book_out(m, node.book(m.name, depth))


@router.get("/trades", response_model=Trades, responses=ERRORS)
async def trades(request: Request, market: str | None = None,
                 limit: int = Query(50, ge=1, le=10_000)) -> Trades:
    """The most recent trades, oldest first; each pending or final."""
    node = api_of(request).node
    if market is not None:
        market_of(node, market)
    found = [t for t in node.recent_trades(TRADES_SCAN_MAX)
             if market is None or t.market == market][-limit:]
    event_ids = sorted({t.event_id for t in found})
    final = dict(zip(event_ids, node.is_final(event_ids), strict=True))
    return Trades(trades=[trade_out(t, DEFAULT_MARKETS[t.market], final[t.event_id])
                          for t in found])


@router.get("/status", response_model=Status, responses=ERRORS)
async def status(request: Request) -> Status:
    api = api_of(request)
    s = api.node.status()
    trading = api.trader.enabled if api.trader is not None else None
    return Status(**{k: v for k, v in s.items() if k in Status.model_fields},
                  multiaddrs=s["addrs"], trading=trading)


@router.get("/misbehaviour", response_model=Misbehaviour, responses=ERRORS)
async def misbehaviour(request: Request) -> Misbehaviour:
    """Proofs of equivocation this node holds: two events signed by one origin with the
    same seq and different content (protocols/finality.md). Anyone can check them with
    the origin's public key; the origin is not excluded (yet): finality stalls instead."""
    node = api_of(request).node
    return Misbehaviour(equivocations=[
        Equivocation(origin=str(ID(origin)), seq=seq, first=first.hex(), second=second.hex())
        for (origin, seq), (first, second) in sorted(node.replica.equivocations.items())])


@router.get("/metrics", response_class=Response,
         responses={200: {"content": {CONTENT_TYPE: {}}}})
async def metrics(request: Request) -> Response:
    """Prometheus text format."""
    return Response(api_of(request).metrics.render(), media_type=CONTENT_TYPE)


@router.post("/trading", response_model=Trading, responses=ERRORS)
async def trading(switch: TradingRequest, request: Request) -> Trading:
    """Switch this node's auto-trading on or off."""
    trader = api_of(request).trader
    if trader is None:
        raise ApiError(409, "no_auto_trader", "this node runs no auto-trading")
    trader.enabled = switch.on
    return Trading(trading=trader.enabled)


@router.post("/leave", response_model=Leaving, status_code=202, responses=ERRORS)
async def leave(request: Request) -> Leaving:
    """Leave the network for good: cancel this node's open orders, then sign its leave.
    Finality stops waiting for this node once the leave is final; then /status says
    `left` and the node may be stopped. Its identity cannot join again."""
    node = api_of(request).node
    try:
        cancelled = await node.leave()
    except ValueError as exc:
        raise ApiError(409, "cannot_leave", str(exc)) from None
    return Leaving(membership=node.admission.state, cancelled=cancelled)


@router.post("/flush", response_model=Flushed, responses=ERRORS)
async def flush(request: Request) -> Flushed:
    """Sign and publish every queued action now."""
    node = api_of(request).node
    ids = await node.flush()
    actions = [Cancelled(order_id=oid.hex(), outcome=outcome)
               for event_id in ids for oid, outcome in node.outcomes(event_id)]
    return Flushed(events=[i.hex() for i in ids], actions=actions)


@router.websocket("/stream")
async def stream(websocket: WebSocket, market: str | None = None,
                 types: str | None = None) -> None:
    """Live updates: trades (pending, then final), books, this node's orders, status;
    `types=applied,...` picks kinds, "applied" (every applied batch) only on request."""
    api = api_of(websocket)
    if market is not None and market not in api.node.markets:
        await websocket.close(code=1008, reason=f"unknown market {market[:40]!r}")
        return
    try:
        kinds = parse_types(types)
    except ValueError as exc:
        await websocket.close(code=1008, reason=str(exc))
        return
    try:
        client = api.broadcaster.connect(market, kinds)
    except OverflowError:
        await websocket.close(code=1013, reason="too many stream clients")
        return
    try:
        await websocket.accept()
        if "status" in kinds:
            await websocket.send_json(status_message(api.node.status()))
        for name in ([market] if market else sorted(api.node.markets)) if "book" in kinds else ():
            snapshot = book_out(api.node.markets[name], api.node.book(name, 20))
            await websocket.send_json({"type": "book", **snapshot.model_dump()})
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_until_closed, websocket, nursery.cancel_scope)
            async for message in client.receive:
                await websocket.send_json(message)
            nursery.cancel_scope.cancel()
        if client.overflowed:
            await websocket.close(code=1013, reason="client too slow: messages dropped")
    except WebSocketDisconnect:
        pass
    finally:
        api.broadcaster.disconnect(client)


async def _until_closed(websocket: WebSocket, scope: trio.CancelScope) -> None:
    try:
        while True:
            await websocket.receive_text()
    except WebSocketDisconnect:
        scope.cancel()
