"""The local client API: HTTP + WebSocket on 127.0.0.1, a FastAPI app served by
Hypercorn's trio worker inside the node's nursery (`ApiServer` is a node service).

Routes (the OpenAPI document is served at /openapi.json, the docs at /docs):
  POST   /orders            place one order; answers once it is signed, with the
                            order id every node uses and its status after matching here
  POST   /orders/batch      up to 1,000 orders in one call (one or a few events)
  DELETE /orders/{id}       cancel one of this node's orders
  POST   /orders/cancel     cancel up to 1,000 of them in one call, an outcome each
  DELETE /orders?market=    cancel all of this node's open orders (in one market)
  GET    /orders?status=    this node's orders with their fills (open, or all)
  GET    /book/{market}     depth ladder; GET /trades?market=&limit= (pending/final)
  GET    /status, /metrics  node status; Prometheus text (client/metrics.py)
  GET    /misbehaviour     proofs of equivocation this node holds (two signed events)
  POST   /trading, /flush   auto-trading on/off; sign and publish queued actions now
  POST   /leave             leave the network for good (cancels this node's orders)
  WS     /stream?market=    live updates (client/stream.py)
Errors are `{"error": {"field", "reason", "message"}}` with a fitting status code;
a full queue is 503 "node_busy". The bound address is written to `api.json` in the
node's data dir (removed on exit) so the CLI finds it.
"""

from __future__ import annotations

import json
import logging
import os
from functools import partial
from typing import TYPE_CHECKING, Any

import trio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from hypercorn.config import Config
from hypercorn.trio import serve
from starlette.exceptions import HTTPException

from ..core.events import Cancel
from .autotrade import AutoTrader
from .metrics import Metrics
from .orders import ApiError, OwnOrders, busy
from .routes import router
from .schemas import Cancelled, OrderRequest, Placed
from .stream import Broadcaster

if TYPE_CHECKING:
    from ..node import Node

log = logging.getLogger("p2pexchange.api")
API_FILE = "api.json"


class Api:
    """What the routes share: the node, auto-trading, own orders, stream, metrics."""

    def __init__(self, node: Node, trader: AutoTrader | None) -> None:
        self.node = node
        self.trader = trader
        self.orders = OwnOrders()
        self.broadcaster = Broadcaster()
        self.metrics = Metrics(node)

    async def place(self, requests: list[OrderRequest]) -> list[Placed]:
        started = trio.current_time()
        placed = await self.orders.place(self.node, requests)
        self.metrics.place_latency.observe(trio.current_time() - started)
        return placed

    async def cancel(self, order_ids: list[bytes]) -> list[Cancelled]:
        node = self.node
        actions = [(node.order(oid).market, Cancel(oid)) for oid in order_ids]  # type: ignore
        try:
            done = await node.submit_many(actions) if actions else []
        except OverflowError as exc:
            raise busy(exc) from None
        return [Cancelled(order_id=oid.hex(), outcome=outcome)
                for oid, (_, outcome) in zip(order_ids, done, strict=True)]

def build_app(api: Api) -> FastAPI:
    app = FastAPI(title="p2pexchange node API", version="1",
                  description="Trade from your own p2pexchange node (bound to 127.0.0.1).")
    app.state.api = api
    app.include_router(router)
    app.add_exception_handler(ApiError, _api_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _invalid)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _http)  # type: ignore[arg-type]
    return app

def error(status: int, reason: str, message: str, field: str | None = None,
          headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"field": field, "reason": reason, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    return error(exc.status, exc.reason, str(exc), exc.field, exc.headers)


async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid", "type": ""}
    if first.get("type") == "json_invalid":
        return error(400, "malformed_json", f"malformed JSON: {first.get('msg')}")
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
    reason = "missing" if first.get("type") == "missing" else "invalid"
    return error(422, reason, str(first.get("msg")), ".".join(loc) or None)


async def _http(request: Request, exc: HTTPException) -> JSONResponse:
    reason = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return error(exc.status_code, reason, str(exc.detail))

class ApiServer:
    """The API as a node service; `port` is the bound port once started."""

    def __init__(self, port: int, trader: AutoTrader | None = None) -> None:
        self.port = port
        self.trader = trader

    async def run(self, node: Node, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        config = Config()
        config.bind = [f"127.0.0.1:{self.port}"]
        config.accesslog = None
        config.graceful_timeout = 2.0
        config.loglevel = "WARNING"
        api = Api(node, self.trader)
        app = build_app(api)
        path = os.path.join(node.config.data_dir, API_FILE)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(api.broadcaster.run, node)
            binds = await nursery.start(partial(serve, app, config,
                                                shutdown_trigger=node.stopping.wait))
            self.port = int(binds[0].rsplit(":", 1)[1])
            try:
                with open(path, "w") as f:
                    json.dump({"url": f"http://127.0.0.1:{self.port}", "pid": os.getpid()}, f)
                log.info("client API on 127.0.0.1:%d", self.port)
                task_status.started(self.port)
                await node.stopping.wait()
            finally:
                if os.path.exists(path):
                    os.remove(path)
