"""The peer node: wires the pure replica, the store and the network parts in one nursery.

    host (net/host)          identity key, TCP + noise + yamux
    discovery (net/discovery) Kademlia DHT, bootstrap, dialing; the set of peers
    gossip (net/gossip)      topics, validators, readers; batching of own actions
    sync (net/sync)          pull what we lack; serve what others lack
    control (net/control)    heartbeats, finality, trade reports
    admission (admission.py) genesis, joining, admitting newcomers, when to trade
    start (start.py)         a newcomer starts from an attested checkpoint (net/snapshot)
    rejections (net/rejections) every refused input, counted by code and by peer
    intake (intake.py)       events in: inbox, batches to the replica, store, feed, logs
    replica (core/replica)   the deterministic state; store (store.py) its log on disk

Every event from the network reaches the replica through the intake (intake.py: one bounded
inbox, handed over in batches) and every other input through the control handlers, and
whatever a peer sends ends as state or as a counted rejection attributed to it, never as an
exception in one of the node's tasks. Replica calls are synchronous and never awaited in the
middle, so trio's task order cannot reach the replica's state: only the set of delivered
events does. The node knows nothing of what drives it: the API, auto-trading or a test are
`services` handed to it (each started in its nursery once the node is up) or callers of its
public interface: `submit`, `submit_many` (answers with order ids once signed), `flush`, the
queries, `status`, `subscribe_applied` (feed.py).
"""

from __future__ import annotations

import functools
import logging
import os
import random
from collections import Counter, deque
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, Protocol

import multiaddr
import trio
from libp2p.peer.id import ID

from .admission import Admission
from .core.events import Action, Event, Place
from .core.market import DEFAULT_MARKETS, Market
from .core.orders import Order, Trade
from .core.params import (
    BATCH_ACTIONS_MAX,
    BATCH_INTERVAL_S,
    CHECKPOINT_EVERY,
    INBOX_BUSY_EVENTS,
    LOOP_LAG_BUSY_MS,
    PEERS_BEHIND_BUSY_S,
    PENDING_ACTIONS_MAX,
    REMOVE_AFTER_S,
    STATUS_INTERVAL_S,
)
from .core.replica import CannotSign, OwnHistoryBehind, Replica
from .feed import Feed
from .intake import Intake
from .looplag import LoopLag
from .net.batcher import Batcher
from .net.control import Control
from .net.discovery import Discovery, bootstrap_peers
from .net.faults import FaultPlan, gossip_handlers, sync_receive
from .net.gossip import Gossip
from .net.host import create_host, load_or_create_key
from .net.rejections import Rejections
from .net.sync import Sync
from .start import Start
from .status import log_status, node_status, status_line
from .store import EventStore

log = logging.getLogger("p2pexchange.node")


@dataclass
class NodeConfig:
    data_dir: str
    listen: str = "/ip4/127.0.0.1/tcp/0"
    bootstrap: list[str] = field(default_factory=list)
    markets: list[str] = field(default_factory=lambda: sorted(DEFAULT_MARKETS))
    seed: int | None = None  # for the node's own random choices (sync targets)
    status_interval_s: float = STATUS_INTERVAL_S
    batch_actions_max: int = BATCH_ACTIONS_MAX  # 1: the one-order-per-event baseline
    batch_interval_s: float = BATCH_INTERVAL_S  # own actions signed as one event this often
    remove_after_s: float = REMOVE_AFTER_S  # vote out a member silent this long (liveness)
    faults: FaultPlan | None = None  # tests only: loss, delay, duplication (net/faults.py)
    checkpoint_every: int = CHECKPOINT_EVERY  # final events that act per checkpoint (tests)


class Service(Protocol):
    """Something the node runs in its nursery once it is up (the API, auto-trading)."""

    async def run(self, node: Node, task_status: Any = trio.TASK_STATUS_IGNORED) -> None: ...


class Node:
    def __init__(self, config: NodeConfig, services: Sequence[Service] = ()) -> None:
        self.config = config
        self.services = list(services)
        self.markets: dict[str, Market] = {m: DEFAULT_MARKETS[m] for m in config.markets}
        self.key_pair = load_or_create_key(config.data_dir)
        self.peer_id = ID.from_pubkey(self.key_pair.public_key)
        self.origin = self.peer_id.to_bytes()
        # Every market, followed or not: one seq chain per origin spans them all.
        every = config.checkpoint_every
        self.replica = Replica(DEFAULT_MARKETS, self.origin, checkpoint_every=every, forgets=True)
        self.store = EventStore(os.path.join(config.data_dir, "events.sqlite3"))
        self.listen_addr = ""
        self.rejections = Rejections()
        self.ready, self.stopping, self.finished = trio.Event(), trio.Event(), trio.Event()
        self.feed = Feed()
        self._rng = random.Random(config.seed)
        self.host: Any = create_host(self.key_pair, config.listen)
        self.discovery = Discovery(  # a new connection: pull from it, tell it of us at once
            self.host, on_found=lambda p: (self.sync.found(p), self.control.announce_soon()),
            explore=lambda: self.admission.synced_once())
        self.gossip = Gossip(self.host, self.origin, self.rejections, self.replica.precheck,
                             self.discovery.heard, lambda event: self.intake.prove(event))
        self.intake = Intake(self.replica, self.store, self.feed, self.rejections,
                             want_sync=lambda peer: self.sync.want(peer))
        self.sync = Sync(self.host, self.replica,
                         sync_receive(config.faults, self.intake.receive), self.rejections,
                         lambda: self.discovery.peers, self._rng, self.discovery.heard,
                         self.intake.serve, hold=lambda: self.start.holding())
        self.admission = Admission(self.replica, self.store, self.origin, self.gossip,
                                   self.rejections, bootstrap_peers(config.bootstrap),
                                   peers=lambda: self.discovery.peers,
                                   syncs_completed=lambda: self.sync.completed,
                                   seen_by=lambda peer: self.control.view_of_mine(peer),
                                   deciding=lambda: self.start.holding(),
                                   remove_after_s=config.remove_after_s)
        self.control = Control(self.gossip, self.replica, self.origin, self.rejections,
                               want_sync=self.sync.want, on_genesis=self.admission.on_genesis,
                               heard=self.admission.heard)
        self.start = Start(self.host, self.replica, self.store, self.control, self.rejections,
                           wanted=bool(config.bootstrap) and self.store.count() == 0)
        self.batcher = Batcher(self.gossip, self._seal, self._published, config.batch_actions_max,
                               self.admission.membership_actions, config.batch_interval_s)
        self.loop_lag = LoopLag()  # event-loop scheduling lag, for status and metrics
        self.intake.replay_store()

    # -- public interface: actions ---------------------------------------------------

    def submit(self, market: str, action: Action) -> None:
        """Queue one action; it is signed and published with the next batch."""
        if market not in self.markets:
            raise ValueError(f"unknown market {market!r}")
        self.batcher.submit(market, action)

    async def flush(self) -> list[bytes]:
        """Sign and publish the queued actions now; returns the new events' ids."""
        return await self.batcher.flush()

    async def submit_many(self, actions: Sequence[tuple[str, Action]]) -> list[tuple[bytes, str]]:
        """Queue `actions` (all or none: ValueError; OverflowError when full or `busy`, which
        never refuses a cancel), wait for the tick that signs them: (order id, outcome) each."""
        places = any(type(action) is Place for _, action in actions)
        if (reason := self.busy() if places else self.admission.busy()) is not None:
            raise OverflowError(reason)
        room = PENDING_ACTIONS_MAX - self.pending_actions
        return await self.feed.submit(actions, self.markets, room, self.batcher.submit)

    async def leave(self) -> int:
        """Leave the network for good (Admission.leave); how many orders it cancelled."""
        return await self.admission.leave(self.batcher, lambda: [
            (m, o.order_id) for m in sorted(self.markets) for o in self.open_orders(m)])

    def busy(self) -> str | None:
        """Why new orders should wait, or None. Backpressure: a node that cannot keep up
        with what the network sends it takes no new orders rather than build a backlog."""
        if (joining := self.admission.busy()) is not None:
            return joining
        if self.intake.backlog > INBOX_BUSY_EVENTS:
            return f"{self.intake.backlog} events waiting to be applied"
        if self.loop_lag.last_ms > LOOP_LAG_BUSY_MS:
            return f"event loop {self.loop_lag.last_ms:.0f} ms behind"
        behind_s = self.control.peers_behind_s()
        if behind_s > PEERS_BEHIND_BUSY_S:
            return f"peers are {behind_s:.1f} s behind our events"
        return None

    def subscribe_applied(self) -> trio.MemoryReceiveChannel:
        """A channel of `feed.Applied`: every batch of events this node applies."""
        return self.feed.subscribe()

    def stop(self) -> None:
        self.stopping.set()

    # -- public interface: queries ---------------------------------------------------

    @property
    def peers(self) -> set[ID]:
        return self.discovery.peers

    @property
    def pubsub(self) -> Any:
        return self.gossip.pubsub

    @property
    def rejection_log(self) -> deque[tuple[str, str, str]]:
        """Recent rejections: (what, code, peer id)."""
        return self.rejections.recent

    @property
    def received(self) -> Counter[tuple[str, str]]:
        """Events received: (gossip|sync, receipt status) -> count."""
        return self.intake.received

    @property
    def pending_actions(self) -> int:
        return len(self.batcher.pending)

    def book(self, market: str, levels: int) -> dict[str, list[tuple[int, int]]]:
        return self.replica.book(market).depth(levels)

    def recent_trades(self, limit: int) -> list[Trade]:
        return self.replica.recent_trades(limit)

    def order(self, order_id: bytes) -> Order | None:
        return self.replica.order(order_id)

    def outcomes(self, event_id: bytes) -> list[tuple[bytes, str]]:
        """(order id, outcome) per action of a delivered event."""
        if (event := self.replica.event(event_id)) is None:
            return []
        return [(event.order_id(i), o) for i, o in enumerate(self.replica.outcomes_of(event_id))]

    def is_final(self, event_ids: Sequence[bytes]) -> list[bool]:
        """Per event id: is it final here (its trades can no longer change)?"""
        return [self.replica.is_final(i) for i in event_ids]

    def trades_of(self, event_id: bytes) -> list[Trade]:
        return self.replica.trades_of(event_id)

    def open_orders(self, market: str) -> list[Order]:
        return [o for o in self.replica.book(market).resting() if o.origin == self.origin]

    def status(self) -> dict:
        return node_status(self)

    def status_line(self) -> str:
        return status_line(self.status())

    # -- running -----------------------------------------------------------------------

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await self._run(task_status)
        except BaseExceptionGroup as group:
            if not self.stopping.is_set():
                raise
            # Pubsub refusing a message while it shuts down (LIBP2P_NOTES) is no error.
            _, rest = group.split(lambda e: isinstance(e, RuntimeError)
                                  and "closed to new arrivals" in str(e))
            if rest is not None:
                raise rest from None
        finally:
            self.store.close()
            self.feed.close()
            self.finished.set()

    async def _run(self, task_status: Any) -> None:
        listen = multiaddr.Multiaddr(self.config.listen)
        async with self.host.run(listen_addrs=[listen]), AsyncExitStack() as stack:
            await self.gossip.start(stack)
            await self.discovery.start(stack)
            self.listen_addr = str(self.host.get_addrs()[0])
            async with trio.open_nursery() as nursery:
                on_event, *control = gossip_handlers(self.config.faults, nursery, (
                    self.intake.offer, self.control.on_heartbeat,
                    self.admission.on_join_request, self.control.reports.on_report,
                    self.control.on_proof))
                await self.gossip.follow_control(nursery, *control)
                await nursery.start(self.admission.follow_events, functools.partial(
                    self.gossip.follow_events, nursery, self.markets, on_event))
                await self.discovery.bootstrap(self.config.bootstrap)
                for service in self.services:
                    await nursery.start(service.run, self)
                for loop in (self.intake.run, self.discovery.run, self.discovery.keepalive,
                             self.start.run, self.sync.run, self.batcher.run, self.control.run,
                             functools.partial(log_status, self), self.loop_lag.run,
                             self.admission.run):
                    nursery.start_soon(loop)
                self.ready.set()
                task_status.started(self)
                await self.stopping.wait()
                await self.flush()
                log.info("stopping: %s", self.status_line())
                nursery.cancel_scope.cancel()

    # -- own events ------------------------------------------------------------------------

    def _seal(self, market: str, actions: list[Action]) -> Event | None:
        """Sign `actions` as our next event (after `Intake.drain`), stored before publishing."""
        if not self.replica.is_member(self.origin):
            return None  # admission.py: a non-member's event would be refused everywhere
        self.intake.drain()
        try:
            event, receipt = self.replica.create_event(self.key_pair.private_key, market, actions)
        except (OwnHistoryBehind, CannotSign) as exc:
            log.warning("not signing now: %s", exc)
            return None
        self.intake.persist(receipt.delivered, 0)  # stored before it is published
        self.feed.sealed(event, self.replica.outcomes_of(event.id))
        self.control.sealed(event.seq)
        return event

    def _published(self, event: Event) -> None:
        # Our own event sorts after everything we hold: it never rolls anything back.
        self.intake.log_trades(self.replica.trades_of(event.id))
