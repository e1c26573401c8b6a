"""Start real py-libp2p nodes on 127.0.0.1 inside one trio test and wait for agreement."""

from __future__ import annotations

import pathlib
from contextlib import asynccontextmanager

import trio

from p2pexchange.node import Node, NodeConfig

CONVERGE_TIMEOUT_S = 45.0
JOIN_TIMEOUT_S = 30.0


def market_events(node: Node) -> int:
    """Delivered events that carry market actions (not joins or acknowledgements)."""
    replica = node.replica
    return sum(1 for i in replica.applied_ids() if replica.event(i).market)


class Network:
    def __init__(self, nursery: trio.Nursery, root: pathlib.Path) -> None:
        self.nursery = nursery
        self.root = root
        self.nodes: list[Node] = []

    async def start(self, name: str, bootstrap: Node | None = None, services=(),
                    member: bool = True, **options) -> Node:
        """Start a node; with `member`, wait until it is a member that trades."""
        config = NodeConfig(data_dir=str(self.root / name),
                            bootstrap=[bootstrap.listen_addr] if bootstrap else [],
                            status_interval_s=3600, **options)
        node = Node(config, services=services)
        with trio.fail_after(20):
            await self.nursery.start(node.run)
        self.nodes.append(node)
        if member:
            await self.member(node)
        return node

    @staticmethod
    async def member(node: Node, timeout_s: float = JOIN_TIMEOUT_S) -> None:
        """Wait until `node` is a member that takes orders (admission.py)."""
        try:
            with trio.fail_after(timeout_s):
                while node.admission.state != "member":
                    await trio.sleep(0.1)
        except trio.TooSlowError:
            raise AssertionError(f"{node.peer_id} still {node.admission.state} after "
                                 f"{timeout_s}s") from None

    async def stop(self, node: Node) -> None:
        node.stop()
        with trio.fail_after(20):
            await node.finished.wait()
        self.nodes.remove(node)

    async def converged(self, nodes: list[Node] | None = None, events: int | None = None,
                        timeout_s: float = CONVERGE_TIMEOUT_S) -> str:
        """Wait until the nodes hold the same digest (and `events` events with market
        actions: joins and acknowledgements are not counted); fail loudly."""
        nodes = nodes or self.nodes
        try:
            with trio.fail_after(timeout_s):
                while True:
                    digests = {n.replica.digest for n in nodes}
                    counts = {market_events(n) for n in nodes}
                    if len(digests) == 1 and (events is None or counts == {events}):
                        return digests.pop().hex()
                    await trio.sleep(0.2)
        except trio.TooSlowError:
            detail = [(str(n.peer_id)[-8:], market_events(n), n.replica.digest_hex[:12],
                       {o.hex()[-6:]: s for o, s in n.replica.clock.items()},
                       n.replica.stats()["events_buffered"], n.admission.state,
                       len(n.peers)) for n in nodes]
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
