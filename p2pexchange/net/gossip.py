"""Gossip: the pubsub topics, their validators and readers, and publishing.

Topics (protocols/topics.md): one per market for events, one for membership events
(joins and acknowledgements, market ""), one control topic for heartbeats, one for
join requests, one for trade reports. A topic validator decodes every message before
gossipsub forwards it, so garbage travels one hop at most; the reader then hands the
decoded value to the node. Gossipsub: as LIBP2P_NOTES advises (1 s heartbeat, no rate
limit), without adaptive gossip (on peer loss it stretches the heartbeat to 30-60 s: the
mesh stays broken, the unshifted message cache is replayed whole to each reconnecting
peer); best-effort (sync repairs what it drops). Mesh degree 4 (3 to 6, core/params.py):
up to 7 peers nobody is pruned, as before; in larger networks a node no longer takes
every message from every peer (ten nodes with degree 8: a full mesh, each message
received up to nine times; degree 4 accepted ~50% more orders, scripts/bench_cluster.py),
a pruned peer may graft again after 5 s, not py-libp2p's 60, and the ids a node
offers to peers outside its mesh (IHAVE) are those of the last gossipsub heartbeat only
(a node of ten received ~1,500 offered ids and ~140 requests a second with three). A
message a peer forwards is a sign of life of its connection (`heard`).

Every message is charged to fair per-peer budgets before it is accepted (net/budget.py):
its forwarding peer's and its publisher's, in messages and bytes, before decoding;
an event's origin's, in actions, once decoded. What exceeds a budget is refused as
`rate_limited` (not forwarded) and counted against the peer whose budget it exceeded;
sync brings a refused event later, within the same kind of budget. A verified event
that the replica's state speaks against for its signer's fault alone (`ORIGINS_FAULT`)
is counted against its origin, not against the honest peer that forwarded it.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from contextlib import AsyncExitStack
from typing import Any

import trio
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID as GOSSIPSUB_PROTOCOL_ID
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.tools.anyio_service.context import background_trio_service

from ..core.events import MEMBERSHIP_MARKET, Event, EventRejected, decode_event
from ..core.market import DEFAULT_MARKETS
from ..core.params import (
    GOSSIP_DEGREE,
    GOSSIP_DEGREE_HIGH,
    GOSSIP_DEGREE_LOW,
    GOSSIP_PRUNE_BACKOFF_S,
    GOSSIP_WINDOW,
    PUBLISH_TIMEOUT_S,
)
from . import wire
from .budget import RATE_LIMITED, CountedAgainst, GossipBudgets, OverBudget
from .host import short_peer

log = logging.getLogger("p2pexchange.node")

TOPIC_PREFIX = "p2pexchange/v2"
DECODED_KEPT_MAX = 4096  # validated events waiting for their topic reader
CONTROL_TOPIC = f"{TOPIC_PREFIX}/control"
JOIN_TOPIC = f"{TOPIC_PREFIX}/join"
TRADES_TOPIC = f"{TOPIC_PREFIX}/trades"
PROOFS_TOPIC = f"{TOPIC_PREFIX}/proofs"
MEMBERSHIP_TOPIC = f"{TOPIC_PREFIX}/membership"

Reject = Callable[[str, str, ID | None], None]  # (what, code, peer)
# What `Replica.precheck` may say that only the event's signer can be at fault for: an
# honest forwarder cannot know it (protocols/rejections.md, section 4).
ORIGINS_FAULT = frozenset({"equivocation", "impossible_clock", "bad_lamport",
                           "clock_regression", "not_member", "left"})


def market_topic(market: str) -> str:
    """The topic of a market's events; membership events (market "") have their own."""
    if market == MEMBERSHIP_MARKET:
        return MEMBERSHIP_TOPIC
    return f"{TOPIC_PREFIX}/market/{market}"


class Gossip:
    """Gossipsub on the node's host: topics, validators, readers and publishing."""

    def __init__(self, host: Any, origin: bytes, reject: Reject,
                 precheck: Callable[[Event], str | None] = lambda event: None,
                 heard: Callable[[ID], None] = lambda peer: None,
                 prove: Callable[[Event], None] = lambda event: None) -> None:
        self.origin, self.precheck, self._heard, self._prove = origin, precheck, heard, prove
        self._decoded: OrderedDict[bytes, Event] = OrderedDict()  # validated, for the reader
        self.router = GossipSub(
            protocols=[GOSSIPSUB_PROTOCOL_ID], degree=GOSSIP_DEGREE,
            degree_low=GOSSIP_DEGREE_LOW, degree_high=GOSSIP_DEGREE_HIGH,
            heartbeat_interval=1, heartbeat_initial_delay=0.1,
            prune_back_off=GOSSIP_PRUNE_BACKOFF_S, gossip_window=GOSSIP_WINDOW,
            spam_protection_enabled=False, eclipse_protection_enabled=False,
            adaptive_gossip_enabled=False, time_to_live=30)
        self.pubsub = Pubsub(host, self.router, strict_signing=True)
        self._reject = reject
        self.budgets = GossipBudgets()

    async def start(self, stack: AsyncExitStack) -> None:
        """Start pubsub and the router as services that `stack` stops."""
        await stack.enter_async_context(background_trio_service(self.pubsub))
        await stack.enter_async_context(background_trio_service(self.router))
        await self.pubsub.wait_until_ready()

    async def follow_control(self, nursery: trio.Nursery,
                             on_heartbeat: Callable[[ID, wire.Heartbeat], None],
                             on_join_request: Callable[[ID, bytes], None],
                             on_trade_report: Callable[[ID, wire.TradeReport], None],
                             on_proof: Callable[[ID, tuple[Event, Event]], None]) -> None:
        """Validate and follow the control (heartbeats), join, trades and proofs topics."""
        for topic, what, decode_wire, handle in (
                (CONTROL_TOPIC, "heartbeat", wire.decode_heartbeat, on_heartbeat),
                (JOIN_TOPIC, "join request", wire.decode_join_request, on_join_request),
                (TRADES_TOPIC, "trade report", wire.decode_trade_report, on_trade_report),
                (PROOFS_TOPIC, "proof", wire.decode_proof, on_proof)):
            self.validate(topic, what, _data_check(decode_wire), wire.WireError)
            await self.follow(nursery, topic, what, decode_wire, wire.WireError, handle)

    async def follow_events(self, nursery: trio.Nursery, markets: Iterable[str],
                            on_event: Callable[[ID, bytes], None]) -> None:
        """Validate and follow the event topics: `markets`' and membership's."""
        for market in [*markets, MEMBERSHIP_MARKET]:
            self.validate(market_topic(market), "event", self._event_check(market),
                          EventRejected)
            await self.follow(nursery, market_topic(market), "event", self._verified,
                              wire.WireError, on_event)

    def _event_check(self, market: str) -> Callable[[Any], Event]:
        """What a market topic's validator checks: `decode_event` (any configured market:
        sync may bring any); the event is of this topic's market; the gossip message was
        published by the event's origin (protocols/topics.md); and nothing the replica
        already holds speaks against it (`Replica.precheck`: equivocation, impossible
        clock, and once its causes are here fork, wrong Lamport time, clock regression,
        not a member), so such events are not forwarded either (a second version of a
        seq still makes a proof of equivocation, `prove`). The decoded,
        verified event is kept for the reader, so it is decoded and verified once."""
        def check(msg: Any) -> Event:
            event = decode_event(msg.data, DEFAULT_MARKETS)
            if event.market != market:
                raise EventRejected("wrong_topic", f"a {event.market} event on {market}'s "
                                    "topic")
            if event.origin != msg.from_id:
                raise EventRejected("not_origin", "published by another peer than its origin")
            code = self.precheck(event)
            if code == "equivocation":  # a second signed version: keep (and gossip) the proof
                self._prove(event)
            if code in ORIGINS_FAULT:  # its verified signer's fault, whoever forwarded it
                raise CountedAgainst(ID(event.origin), code)
            if code is not None:
                raise EventRejected(code, "refused before forwarding")
            if (msg.from_id != self.origin and not self.budgets.origin_actions.charge(
                    event.origin, (len(event.actions),), time.monotonic())):
                raise OverBudget(ID(event.origin))
            self._decoded[msg.data] = event
            while len(self._decoded) > DECODED_KEPT_MAX:
                self._decoded.popitem(last=False)
            return event
        return check

    def _verified(self, data: bytes) -> Event | bytes:
        """The event the validator decoded from `data`, or `data` itself if it is gone."""
        return self._decoded.pop(data, None) or data

    def validate(self, topic: str, what: str, check: Callable[[Any], Any],
                 error: type[Exception]) -> None:
        """A topic validator: a message beyond a budget (`GossipBudgets.admit`) or that
        fails `check` is rejected, not forwarded, and counted against the peer that
        passed it to us (or, beyond a budget, the peer whose budget it was).
        py-libp2p validates our own publications too (the forwarder is then ourselves,
        which no remote peer can be: noise authenticates it): what we signed and encoded
        is not decoded and verified again (2% of a loaded node's time, py-spy), nor kept
        for a reader that skips it."""
        def validator(peer: ID, msg: Any) -> bool:
            if peer.to_bytes() == self.origin:
                return True  # our own publication (`publish`): nothing to check
            self._heard(peer)
            over = self.budgets.admit(what, peer, msg.from_id, len(msg.data), time.monotonic())
            if over is not None:
                self._reject(what, RATE_LIMITED, over)
                return False
            try:
                check(msg)
            except CountedAgainst as exc:
                self._reject(what, str(exc), exc.peer)
                return False
            except Exception as exc:
                self._reject(what, _code(exc, error), peer)
                return False
            return True
        self.pubsub.set_topic_validator(topic, validator, False)

    async def follow(self, nursery: trio.Nursery, topic: str, what: str,
                     decode: Callable[[bytes], Any], error: type[Exception],
                     handle: Callable[[ID, Any], None]) -> None:
        """Subscribe to `topic` and hand each decoded message from a peer to `handle`."""
        sub = await self.pubsub.subscribe(topic)
        nursery.start_soon(self._read, sub, what, decode, error, handle)

    async def _read(self, sub: Any, what: str, decode: Callable[[bytes], Any],
                    error: type[Exception], handle: Callable[[ID, Any], None]) -> None:
        """One subscription's reader: a bad message or a failing handler is a counted,
        logged rejection attributed to the sender; it never stops the reader."""
        while True:
            msg = await sub.get()
            if msg.from_id == self.origin:
                continue  # our own publication, echoed back
            sender = ID(msg.from_id)
            try:
                value = decode(msg.data)
            except Exception as exc:
                self._reject(what, _code(exc, error), sender)
                continue
            try:
                handle(sender, value)
            except Exception:
                # A bug, or input the handler did not foresee: either way the peer's
                # message is refused, counted and logged, and the reader goes on.
                log.exception("handling a %s from %s failed", what, short_peer(sender))
                self._reject(what, "handler_failed", sender)

    async def publish(self, topic: str, data: bytes) -> None:
        """Publish; a publish stuck on a peer that stopped reading ends after
        `PUBLISH_TIMEOUT_S` (gossip is best-effort: sync brings what did not go out),
        and keepalive (discovery.py) drops that peer's connection."""
        with trio.move_on_after(PUBLISH_TIMEOUT_S) as scope:
            await self.pubsub.publish(topic, data)
        if scope.cancelled_caught:
            log.warning("publishing on %s took over %.0f s: left to sync", topic,
                        PUBLISH_TIMEOUT_S)

    def mesh_size(self, topic: str) -> int:
        return len(self.router.mesh.get(topic, set()))


def _data_check(decode: Callable[[bytes], Any]) -> Callable[[Any], Any]:
    def check(msg: Any) -> Any:
        return decode(msg.data)
    return check


def _code(exc: Exception, expected: type[Exception]) -> str:
    """The reject code of a decoder's failure. A decoder raises only its typed error;
    anything else is a decoder bug met on hostile input, refused all the same."""
    if isinstance(exc, expected):
        return str(getattr(exc, "code", "malformed"))
    log.error("decoder raised %s on a peer's message (refused)", type(exc).__name__)
    return "malformed"
