"""Batching of own actions: they are not published one by one. `Batcher` queues them
and, once per batch interval (`BATCH_INTERVAL_S` unless the node is told otherwise), has
the node sign each market's queue as one event (at most `BATCH_ACTIONS_MAX` actions, or
the node's own cap), which it then publishes on the market's topic (net/gossip.py); then
the membership event due, if any. A longer interval means fewer, larger events: less
work per order for every node (py-libp2p's cost is per message), a longer wait before an
order is signed.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable

import trio

from ..core.events import EVENT_ACTIONS_MAX, MEMBERSHIP_MARKET, Action, Cancel, Event, short_id
from ..core.params import BATCH_ACTIONS_MAX, BATCH_INTERVAL_S, PENDING_ACTIONS_MAX
from .gossip import Gossip, market_topic

log = logging.getLogger("p2pexchange.node")

Seal = Callable[[str, list[Action]], Event | None]  # sign + store; None: not now


class Batcher:
    """Own actions queued between ticks, then signed (by `seal`) and published."""

    def __init__(self, gossip: Gossip, seal: Seal, published: Callable[[Event], None],
                 actions_max: int = BATCH_ACTIONS_MAX,
                 membership: Callable[[bool], list[Action] | None] = lambda signed: None,
                 interval_s: float = BATCH_INTERVAL_S) -> None:
        assert 1 <= actions_max <= EVENT_ACTIONS_MAX, actions_max
        assert interval_s > 0, interval_s
        self.interval_s = interval_s
        self.gossip = gossip
        # After each tick's flush: the membership event to sign now (joins, or [] for an
        # acknowledgement), or None; told whether the tick signed any event already.
        self._membership = membership
        self.actions_max = actions_max  # per signed event; 1 makes one event per action
        self.pending: deque[tuple[str, Action]] = deque()
        self._seal = seal
        self._published = published

    def submit(self, market: str, action: Action) -> None:
        if len(self.pending) >= PENDING_ACTIONS_MAX:
            raise OverflowError("too many actions pending")
        self.pending.append((market, action))

    async def flush(self) -> list[bytes]:
        """Sign and publish everything queued; returns the new events' ids."""
        by_market: dict[str, list[Action]] = {}
        while self.pending:
            market, action = self.pending.popleft()
            by_market.setdefault(market, []).append(action)
        # Cancels go in events of their own, signed first: a cancels-only event sorts
        # before concurrent places (Event.key). A cancel never names an order of the
        # same tick (order ids exist once signed), so moving it first changes nothing else.
        chunks: list[tuple[str, list[Action]]] = []
        for market, actions in sorted(by_market.items()):
            cancels = [a for a in actions if a.__class__ is Cancel]
            places = [a for a in actions if a.__class__ is not Cancel]
            for group in (cancels, places):
                for i in range(0, len(group), self.actions_max):
                    chunks.append((market, group[i:i + self.actions_max]))
        ids = []
        for k, (market, chunk) in enumerate(chunks):
            event = self._seal(market, chunk)
            if event is None:  # cannot sign now: keep the rest, in order
                self.pending.extendleft(reversed([(m, a) for m, c in chunks[k:] for a in c]))
                return ids
            await self._publish(event, len(chunk))
            ids.append(event.id)
        return ids

    async def _publish(self, event: Event, actions: int) -> None:
        topic = market_topic(event.market)
        await self.gossip.publish(topic, event.raw)
        if event.actions:
            log.info("%s %s distributed: %d actions, seq %d, to %d peers",
                     "order batch" if event.market else "membership event", short_id(event.id),
                     actions, event.seq, self.gossip.mesh_size(topic))
        self._published(event)

    async def tick(self) -> None:
        """Sign and publish what is queued, then the membership event due, if any."""
        signed = bool(await self.flush()) if self.pending else False
        actions = self._membership(signed)
        if actions is not None:
            event = self._seal(MEMBERSHIP_MARKET, actions)
            if event is not None:
                await self._publish(event, len(actions))

    async def run(self) -> None:
        while True:
            await trio.sleep(self.interval_s)
            try:
                await self.tick()
            except Exception:  # publishing failed: the event is stored, sync spreads it
                log.exception("publishing a batch failed")
