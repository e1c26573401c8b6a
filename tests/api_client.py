"""Helpers for tests of the client API on real nodes: start nodes with their API, call
it over HTTP on the served port, and check every answer against the OpenAPI document."""

from __future__ import annotations

from contextlib import asynccontextmanager

import httpx
import jsonschema
import trio
from harness import Network

from p2pexchange.client.api import ApiServer
from p2pexchange.node import Node

WAIT_S = 40.0


class Client:
    """An httpx client on one node's API that validates responses against OpenAPI."""

    def __init__(self, http: httpx.AsyncClient, node: Node, port: int) -> None:
        self.http = http
        self.node = node
        self.port = port
        self.openapi: dict | None = None

    async def call(self, method: str, path: str, route: str | None = None,
                   **kwargs) -> httpx.Response:
        reply = await self.http.request(method, path, **kwargs)
        await self.check(reply, method, route or path.split("?")[0])
        return reply

    async def check(self, reply: httpx.Response, method: str, route: str) -> None:
        if self.openapi is None:
            self.openapi = (await self.http.get("/openapi.json")).json()
        operation = self.openapi["paths"][route][method.lower()]
        documented = operation["responses"].get(str(reply.status_code))
        assert documented is not None, (method, route, reply.status_code, reply.text)
        schema = documented.get("content", {}).get("application/json", {}).get("schema")
        if schema is not None:
            jsonschema.validate(reply.json(), {**schema,
                                               "components": self.openapi["components"]})


@asynccontextmanager
async def api_node(net: Network, name: str, bootstrap: Node | None = None, **options):
    api = ApiServer(0)
    node = await net.start(name, bootstrap, services=[api], **options)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api.port}",
                                 timeout=WAIT_S) as http:
        yield Client(http, node, api.port)


async def eventually(predicate, what: str, timeout_s: float = WAIT_S) -> None:
    """Poll `predicate` (an async callable) until it is true; fail with `what`."""
    try:
        with trio.fail_after(timeout_s):
            while not await predicate():
                await trio.sleep(0.2)
    except trio.TooSlowError:
        raise AssertionError(f"not within {timeout_s}s: {what}") from None
