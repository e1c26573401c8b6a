"""Start real py-libp2p nodes on 127.0.0.1 inside one trio test and wait for agreement."""

from __future__ import annotations

import pathlib
from contextlib import asynccontextmanager

import trio

from p2pexchange.node import Node, NodeConfig

CONVERGE_TIMEOUT_S = 45.0


class Network:
    def __init__(self, nursery: trio.Nursery, root: pathlib.Path) -> None:
        self.nursery = nursery
        self.root = root
        self.nodes: list[Node] = []

    async def start(self, name: str, bootstrap: Node | None = None, services=(),
                    **options) -> Node:
        config = NodeConfig(data_dir=str(self.root / name),
                            bootstrap=[bootstrap.listen_addr] if bootstrap else [],
                            status_interval_s=3600, **options)
        node = Node(config, services=services)
        with trio.fail_after(20):
            await self.nursery.start(node.run)
        self.nodes.append(node)
        return node

    async def stop(self, node: Node) -> None:
        node.stop()
        with trio.fail_after(20):
            await node.finished.wait()
        self.nodes.remove(node)

    async def converged(self, nodes: list[Node] | None = None, events: int | None = None,
                        timeout_s: float = CONVERGE_TIMEOUT_S) -> str:
        """Wait until the nodes hold the same digest (and `events` events); fail loudly."""
        nodes = nodes or self.nodes
        try:
            with trio.fail_after(timeout_s):
                while True:
                    digests = {n.replica.digest for n in nodes}
                    counts = {n.replica.stats()["events_delivered"] for n in nodes}
                    if len(digests) == 1 and (events is None or counts == {events}):
                        return digests.pop().hex()
                    await trio.sleep(0.2)
        except trio.TooSlowError:
            detail = [(str(n.peer_id)[-8:], n.replica.stats()["events_delivered"],
                       n.replica.digest_hex[:12]) for n in nodes]
            raise AssertionError(f"no convergence within {timeout_s}s: {detail}") from None

    async def discovered(self, timeout_s: float = 30.0) -> None:
        want = len(self.nodes) - 1
        try:
            with trio.fail_after(timeout_s):
                while any(len(n.peers) < want for n in self.nodes):
                    await trio.sleep(0.1)
        except trio.TooSlowError:
            raise AssertionError(f"discovery incomplete: {[len(n.peers) for n in self.nodes]}"
                                 ) from None


@asynccontextmanager
async def network(root: pathlib.Path):
    async with trio.open_nursery() as nursery:
        net = Network(nursery, root)
        try:
            yield net
        finally:
            for node in list(net.nodes):
                node.stop()
            with trio.move_on_after(20):
                for node in list(net.nodes):
                    await node.finished.wait()
            nursery.cancel_scope.cancel()
