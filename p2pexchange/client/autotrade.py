"""Auto-trading: a driver that places random orders through the node's public interface.

Orders follow `sim.workload.OrderFlow` around a mid that drifts (one flow per market,
arrival times exponential at `rate` per second). Cancels name real orders: the
trader learns its order ids from its node's own events among those applied
(`Node.subscribe_applied`), keeping the newest `OPEN_ORDERS_MAX` per market. It
pauses while the node has more than `PENDING_MAX` actions waiting to be signed, while
the node says it is busy (not a member yet, or backpressure: `Node.busy`), and
whenever `enabled` is off.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

import trio

from ..core.events import Place
from ..sim.workload import OrderFlow

if TYPE_CHECKING:
    from ..node import Node

MID_TICKS = {"BTC-USD": 6_500_000, "ETH-USD": 350_000}
MID_TICKS_DEFAULT = 10_000
MIX = {"limit": 0.7, "cancel": 0.18, "ioc": 0.06, "market": 0.02, "fok": 0.02,
       "post_only": 0.02}
OPEN_ORDERS_MAX = 1000
PENDING_MAX = 100


class AutoTrader:
    def __init__(self, rate: float = 4.0, enabled: bool = True, seed: int | None = None) -> None:
        assert rate > 0, rate
        self.rate = rate
        self.enabled = enabled
        self._rng = random.Random(seed)

    async def run(self, node: Node, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        flows = {m: OrderFlow(random.Random(self._rng.random()),
                              mid=MID_TICKS.get(m, MID_TICKS_DEFAULT), spread=20, mix=MIX)
                 for m in node.markets}
        applied = node.subscribe_applied()
        task_status.started()
        while True:
            await trio.sleep(self._rng.expovariate(self.rate))
            self._learn(applied, node.origin, flows)
            if (not self.enabled or node.pending_actions > PENDING_MAX
                    or node.busy() is not None):
                continue
            market = self._rng.choice(sorted(node.markets))
            node.submit(market, flows[market].next_action())

    @staticmethod
    def _learn(applied: trio.MemoryReceiveChannel, origin: bytes,
               flows: dict[str, OrderFlow]) -> None:
        """Order ids exist once a batch is signed: learn them from our new events."""
        while True:
            try:
                batch = applied.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                return
            for event in batch.events:
                flow = flows.get(event.market) if event.origin == origin else None
                if flow is not None:
                    flow.placed([event.order_id(i) for i, a in enumerate(event.actions)
                                 if isinstance(a, Place)])
                    del flow.open_orders[:-OPEN_ORDERS_MAX]  # bounded: old ones mostly done
