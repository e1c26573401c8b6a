"""The peer node: the thin trio + py-libp2p shell around the pure replica.

One nursery tree per node: the libp2p host (TCP + noise + yamux), the Kademlia DHT
(server mode) for discovery, gossipsub for events / heartbeats / trade reports, the
sync protocol server and client, the batching loop that turns submitted actions into
signed events, heartbeats, status lines, optional auto-trading and the local client
API. Replica calls are synchronous and never awaited in the middle, so trio's task
order cannot reach the replica's state: only the set of delivered events does.

Gossip is best-effort (py-libp2p drops messages under load, see LIBP2P_NOTES); the
sync protocol repairs every gap: a node pulls from a peer whenever a heartbeat or a
buffered event shows it lacks something, and from a random peer now and then.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import multiaddr
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import Ed25519PrivateKey, create_new_key_pair
from libp2p.crypto.keys import KeyPair
from libp2p.custom_types import TProtocol
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.pubsub.gossipsub import PROTOCOL_ID as GOSSIPSUB_PROTOCOL_ID
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.tools.anyio_service.context import background_trio_service
from libp2p.utils.varint import encode_varint_prefixed, read_varint_prefixed_bytes_limited

from . import wire
from .events import Action, EventRejected, Place, decode_event, short_id
from .market import DEFAULT_MARKETS, Market
from .replica import OwnHistoryBehind, Receipt, Replica
from .store import EventStore
from .workload import OrderFlow

log = logging.getLogger("p2pexchange.node")

SYNC_PROTOCOL = TProtocol("/p2pexchange/sync/1.0.0")
TOPIC_PREFIX = "p2pexchange/v1"
CONTROL_TOPIC = f"{TOPIC_PREFIX}/control"
TRADES_TOPIC = f"{TOPIC_PREFIX}/trades"

BATCH_INTERVAL_S = 0.15
HEARTBEAT_INTERVAL_S = 1.0
LIVENESS_TIMEOUT_MS = 10_000
DISCOVERY_INTERVAL_S = 1.0
DHT_REFRESH_INTERVAL_S = 5.0
ANTI_ENTROPY_INTERVAL_S = 3.0
SYNC_TIMEOUT_S = 10.0
SYNC_ROUNDS_MAX = 64
DIAL_TIMEOUT_S = 5.0
PENDING_ACTIONS_MAX = 10_000
TRADE_REPORTS_PENDING_MAX = 10_000
INBOX_MAX = 1024


def market_topic(market: str) -> str:
    return f"{TOPIC_PREFIX}/market/{market}"


def now_ms() -> int:
    return int(time.time() * 1000)


def load_or_create_key(data_dir: str) -> KeyPair:
    """The node's Ed25519 identity, created once and kept in the data dir."""
    path = os.path.join(data_dir, "identity.key")
    if os.path.exists(path):
        with open(path, "rb") as f:
            private = Ed25519PrivateKey.from_bytes(f.read())
        return KeyPair(private, private.get_public_key())
    key_pair = create_new_key_pair()
    os.makedirs(data_dir, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(key_pair.private_key.to_bytes())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return key_pair


@dataclass
class NodeConfig:
    data_dir: str
    listen: str = "/ip4/127.0.0.1/tcp/0"
    bootstrap: list[str] = field(default_factory=list)
    markets: list[str] = field(default_factory=lambda: sorted(DEFAULT_MARKETS))
    auto_trade: bool = False
    auto_trade_rate: float = 4.0  # orders per second
    seed: int | None = None
    api_port: int | None = None  # None: no API; 0: any free port
    status_interval_s: float = 30.0


class Node:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.markets: dict[str, Market] = {m: DEFAULT_MARKETS[m] for m in config.markets}
        self.key_pair = load_or_create_key(config.data_dir)
        self.peer_id = ID.from_pubkey(self.key_pair.public_key)
        self.origin = self.peer_id.to_bytes()
        # The replica knows every configured market even when this node follows only
        # some: one seq chain per origin spans all markets, and causal delivery needs
        # every link of it (sync brings the events of markets we do not follow).
        self.replica = Replica(DEFAULT_MARKETS, self.origin)
        self.store = EventStore(os.path.join(config.data_dir, "events.sqlite3"))
        self.pending: deque[tuple[str, Action]] = deque()
        self.trading = config.auto_trade
        self.started_ms = now_ms()
        self.host: Any = None
        self.pubsub: Any = None
        self.dht: Any = None
        self.listen_addr = ""
        self.api_port = 0
        self.peers: set[ID] = set()
        self.rejections: dict[str, int] = {}
        self.divergences = 0
        self.trade_reports_matched = 0
        self.reported: set[bytes] = set()  # own taker events whose trades we reported
        self.trade_reports: dict[bytes, tuple[ID, wire.TradeReport]] = {}
        self.final_logged = 0
        self.rejection_log: deque[tuple[str, str, str]] = deque(maxlen=256)
        self.ready = trio.Event()
        self.stopping = trio.Event()
        self.finished = trio.Event()
        self._sync_wanted: dict[ID, None] = {}
        self._sync_wakeup = trio.Event()
        self._rng = random.Random(config.seed)
        self._replay_store()

    # -- persistence -------------------------------------------------------------

    def _replay_store(self) -> None:
        count = 0
        for raw in self.store.replay():
            receipt = self.replica.receive(raw)
            count += receipt.status == "delivered"
        if count:
            log.info("replayed %d events from the store: own seq %d, digest %s", count,
                     self.replica.clock.get(self.origin, 0), self.replica.digest_hex[:16])

    def _persist(self, receipt: Receipt) -> None:
        self.store.add([(e.origin, e.seq, e.id, e.raw) for e in receipt.delivered])

    # -- entry point -------------------------------------------------------------

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await self._run(task_status)
        except BaseExceptionGroup as group:
            if not self.stopping.is_set():
                raise
            # py-libp2p's pubsub may refuse a message that arrives while it shuts down
            # (LIBP2P_NOTES). Everything accepted is already in the store: not an error.
            _, rest = group.split(lambda e: isinstance(e, RuntimeError)
                                  and "closed to new arrivals" in str(e))
            if rest is not None:
                raise rest from None
        finally:
            self.store.close()
            self.finished.set()

    async def _run(self, task_status: Any) -> None:
        listen = multiaddr.Multiaddr(self.config.listen)
        self.host = new_host(key_pair=self.key_pair, muxer_preference="YAMUX")
        gossipsub = GossipSub(
            protocols=[GOSSIPSUB_PROTOCOL_ID], degree=8, degree_low=4, degree_high=64,
            heartbeat_interval=1, heartbeat_initial_delay=0.1, prune_back_off=5,
            spam_protection_enabled=False, eclipse_protection_enabled=False,
            time_to_live=30)
        self.pubsub = Pubsub(self.host, gossipsub, strict_signing=True)
        self.dht = KadDHT(self.host, DHTMode.SERVER)
        self.host.set_stream_handler(SYNC_PROTOCOL, self._serve_sync)
        async with self.host.run(listen_addrs=[listen]), \
                background_trio_service(self.pubsub), \
                background_trio_service(gossipsub), \
                background_trio_service(self.dht):
            await self.pubsub.wait_until_ready()
            self.listen_addr = str(self.host.get_addrs()[0])
            validate_event = self._validator(
                "event", lambda data: decode_event(data, DEFAULT_MARKETS), EventRejected)
            for market in self.markets:
                self.pubsub.set_topic_validator(market_topic(market), validate_event, False)
            self.pubsub.set_topic_validator(CONTROL_TOPIC, self._validator(
                "heartbeat", wire.decode_heartbeat, wire.WireError), False)
            self.pubsub.set_topic_validator(TRADES_TOPIC, self._validator(
                "trade report", wire.decode_trade_report, wire.WireError), False)
            async with trio.open_nursery() as nursery:
                for market in self.markets:
                    sub = await self.pubsub.subscribe(market_topic(market))
                    nursery.start_soon(self._read_topic, sub, "event", bytes, self._on_event)
                nursery.start_soon(self._read_topic, await self.pubsub.subscribe(CONTROL_TOPIC),
                                   "heartbeat", wire.decode_heartbeat, self._on_heartbeat)
                nursery.start_soon(self._read_topic, await self.pubsub.subscribe(TRADES_TOPIC),
                                   "trade report", wire.decode_trade_report,
                                   self._on_trade_report)
                await self._bootstrap()
                if self.config.api_port is not None:
                    from .api import serve_api
                    self.api_port = await nursery.start(serve_api, self, self.config.api_port)
                nursery.start_soon(self._discovery_loop)
                nursery.start_soon(self._sync_loop)
                nursery.start_soon(self._batch_loop)
                nursery.start_soon(self._heartbeat_loop)
                nursery.start_soon(self._status_loop)
                nursery.start_soon(self._auto_trade_loop)
                self.ready.set()
                task_status.started(self)
                await self.stopping.wait()
                self.trading = False
                await self._flush_pending()
                log.info("leaving the network: %s", self.status_line())
                nursery.cancel_scope.cancel()

    def stop(self) -> None:
        self.stopping.set()

    # -- discovery -----------------------------------------------------------------

    async def _bootstrap(self) -> None:
        for addr in self.config.bootstrap:
            info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
            try:
                with trio.move_on_after(DIAL_TIMEOUT_S):
                    await self.host.connect(info)
            except Exception as exc:  # py-libp2p raises several dial errors
                raise ConnectionError(f"cannot reach bootstrap peer {addr}: {exc}") from None
            if info.peer_id not in self.host.get_connected_peers():
                raise ConnectionError(f"cannot reach bootstrap peer {addr} (timed out)")
            await self.dht.add_peer(info.peer_id)
            log.info("bootstrapped from %s", short_peer(info.peer_id))
            self._want_sync(info.peer_id)
        if self.config.bootstrap:
            with trio.move_on_after(DIAL_TIMEOUT_S):
                await self.dht.refresh_routing_table()

    async def _discovery_loop(self) -> None:
        last_refresh = 0.0
        while True:
            if time.monotonic() - last_refresh > DHT_REFRESH_INTERVAL_S:
                last_refresh = time.monotonic()
                with trio.move_on_after(DIAL_TIMEOUT_S):
                    try:
                        await self.dht.refresh_routing_table()
                    except Exception as exc:  # a peer misbehaving in a DHT query
                        log.debug("routing table refresh failed: %s", exc)
            connected = set(self.host.get_connected_peers())
            for peer in connected:
                if peer not in self.dht.routing_table.get_peer_ids():
                    with trio.move_on_after(DIAL_TIMEOUT_S):
                        try:
                            await self.dht.add_peer(peer)
                        except Exception as exc:
                            log.debug("add_peer %s failed: %s", short_peer(peer), exc)
            for peer in self.dht.routing_table.get_peer_ids():
                if peer != self.peer_id and peer not in connected:
                    addrs = self.host.get_peerstore().addrs(peer)
                    if not addrs:
                        continue
                    with trio.move_on_after(DIAL_TIMEOUT_S):
                        try:
                            await self.host.connect(self.host.get_peerstore().peer_info(peer))
                        except Exception as exc:
                            log.debug("dial %s failed: %s", short_peer(peer), exc)
            connected = set(self.host.get_connected_peers())
            for peer in sorted(connected - self.peers, key=str):
                log.info("peer discovered: %s (%d connected)", short_peer(peer), len(connected))
                self._want_sync(peer)
            for peer in sorted(self.peers - connected, key=str):
                log.info("peer lost: %s (%d connected)", short_peer(peer), len(connected))
            self.peers = connected
            await trio.sleep(DISCOVERY_INTERVAL_S)

    # -- gossip in ---------------------------------------------------------------

    def _reject(self, source: str, code: str, peer: ID | None) -> bool:
        self.rejections[code] = self.rejections.get(code, 0) + 1
        self.rejection_log.append((source, code, str(peer) if peer else ""))
        log.warning("rejected %s from %s: %s", source, short_peer(peer) if peer else "?", code)
        return False

    def _validator(self, what: str, decode: Callable[[bytes], Any],
                   error: type[Exception]) -> Callable[[ID, Any], bool]:
        """A gossipsub topic validator: a message that does not decode is not forwarded."""
        def validate(peer: ID, msg: Any) -> bool:
            try:
                decode(msg.data)
            except error as exc:
                return self._reject(what, exc.code, peer)  # type: ignore[attr-defined]
            return True
        return validate

    async def _read_topic(self, sub: Any, what: str, decode: Callable[[bytes], Any],
                          handle: Callable[[ID, Any], None]) -> None:
        """One subscription's reader: decode, then hand over; a bad message or a failing
        handler is logged with its reason and never stops the reader."""
        while True:
            msg = await sub.get()
            if msg.from_id == self.origin:
                continue  # our own publication, echoed back
            sender = ID(msg.from_id)
            try:
                value = decode(msg.data)
            except wire.WireError as exc:
                self._reject(what, exc.code, sender)
                continue
            try:
                handle(sender, value)
            except Exception:
                log.exception("handling a %s from %s failed", what, short_peer(sender))

    def _on_event(self, sender: ID, raw: bytes) -> None:
        self.receive_event(raw, f"peer {short_peer(sender)}", sender)

    def receive_event(self, raw: bytes, source: str, sender: ID | None = None) -> Receipt:
        receipt = self.replica.receive(raw)
        if receipt.status == "rejected":
            self._reject(f"event via {source}", receipt.code or "?", sender)
        elif receipt.status == "buffered":
            if sender is not None:
                self._want_sync(sender)
        elif receipt.status == "delivered":
            self._persist(receipt)
            for event in receipt.delivered:
                log.info("order batch %s from %s applied: %d actions, seq %d%s",
                         short_id(event.id), short_peer(ID(event.origin)), len(event.actions),
                         event.seq, f" (via {source})" if event is receipt.event else
                         " (unblocked)")
            self._log_trades(receipt)
        return receipt

    def _log_trades(self, receipt: Receipt) -> None:
        if receipt.rolled_back:
            log.info("re-ordered %d later events behind a late one", receipt.rolled_back)
        for t in receipt.trades:
            market = DEFAULT_MARKETS[t.market]
            log.info("trade executed (pending) %s %s %s @ %s, maker %s taker %s", t.market,
                     market.lots_to_qty(t.qty), market.base, market.ticks_to_price(t.price),
                     short_peer(ID(t.maker_origin)), short_peer(ID(t.taker_origin)))

    def _on_heartbeat(self, sender: ID, hb: wire.Heartbeat) -> None:
        code = self.replica.on_heartbeat(sender.to_bytes(), hb.clock, hb.lamport, now_ms())
        if code is not None and code != "stale_heartbeat":
            self._reject("heartbeat", code, sender)
            return
        mine = self.replica.clock
        if any(s > mine.get(o, 0) for o, s in hb.clock.items()):
            self._want_sync(sender)

    def _on_trade_report(self, sender: ID, report: wire.TradeReport) -> None:
        if len(self.trade_reports) < TRADE_REPORTS_PENDING_MAX:
            self.trade_reports[report.event_id] = (sender, report)

    def _check_trade_reports(self, frontier: int) -> None:
        for event_id, (sender, report) in list(self.trade_reports.items()):
            event = self.replica.event(event_id)
            if event is None or event.lamport > frontier:
                continue
            del self.trade_reports[event_id]
            mine = self.replica.trades_of(event_id)
            if len(mine) == report.trades and wire.trades_hash(mine) == report.hash:
                self.trade_reports_matched += 1
            else:
                self.divergences += 1
                log.error("DIVERGENCE: peer %s reports %d trades for event %s, we computed %d",
                          short_peer(sender), report.trades, short_id(event_id), len(mine))

    # -- sync ------------------------------------------------------------------------

    def _want_sync(self, peer: ID) -> None:
        self._sync_wanted[peer] = None
        self._sync_wakeup.set()

    async def _serve_sync(self, stream: Any) -> None:
        peer = stream.muxed_conn.peer_id
        try:
            with trio.fail_after(SYNC_TIMEOUT_S):
                while True:
                    try:
                        request = await read_varint_prefixed_bytes_limited(
                            stream, wire.SYNC_REQUEST_BYTES_MAX)
                    except Exception:
                        break  # the requester closed the stream
                    clock, limit = wire.decode_sync_request(request)
                    events = self.replica.events_for(clock, limit + 1)
                    more = len(events) > limit
                    await stream.write(encode_varint_prefixed(
                        wire.encode_sync_response(events[:limit], more)))
        except wire.WireError as exc:
            self._reject("sync request", exc.code, peer)
        except Exception as exc:  # a peer that vanished mid-stream
            log.debug("sync with %s ended: %s", short_peer(peer), exc)
        finally:
            with trio.move_on_after(1):
                await stream.close()

    async def sync_with(self, peer: ID) -> int:
        """Pull what we lack from `peer`; returns the number of events delivered."""
        delivered = 0
        stream = await self.host.new_stream(peer, [SYNC_PROTOCOL])
        try:
            with trio.fail_after(SYNC_TIMEOUT_S):
                for _ in range(SYNC_ROUNDS_MAX):
                    await stream.write(encode_varint_prefixed(
                        wire.encode_sync_request(self.replica.clock, 128)))
                    data = await read_varint_prefixed_bytes_limited(
                        stream, wire.SYNC_RESPONSE_BYTES_MAX)
                    events, more = wire.decode_sync_response(data)
                    for raw in events:
                        receipt = self.receive_event(raw, f"sync from {short_peer(peer)}")
                        delivered += len(receipt.delivered)
                    if not more or not events:
                        break
        finally:
            with trio.move_on_after(1):
                await stream.close()
        if delivered:
            log.info("synced %d events from %s", delivered, short_peer(peer))
        return delivered

    async def _sync_loop(self) -> None:
        last_random = time.monotonic()
        while True:
            with trio.move_on_after(0.5):
                await self._sync_wakeup.wait()
            self._sync_wakeup = trio.Event()
            targets = list(self._sync_wanted)
            self._sync_wanted.clear()
            if self.replica.missing() and not targets and self.peers:
                targets = [self._rng.choice(sorted(self.peers, key=str))]
            if time.monotonic() - last_random > ANTI_ENTROPY_INTERVAL_S and self.peers:
                last_random = time.monotonic()
                targets.append(self._rng.choice(sorted(self.peers, key=str)))
            for peer in dict.fromkeys(targets):
                if peer == self.peer_id:
                    continue
                try:
                    await self.sync_with(peer)
                except Exception as exc:  # unreachable peer, timeout, bad response
                    # A connection that cannot carry a stream is stale (the peer restarted
                    # or vanished): drop it, so discovery dials afresh.
                    log.info("sync from %s failed (%s): dropping the connection",
                             short_peer(peer), str(exc)[:80] or type(exc).__name__)
                    with trio.move_on_after(DIAL_TIMEOUT_S):
                        try:
                            await self.host.disconnect(peer)
                        except Exception as drop_exc:
                            log.debug("disconnect %s: %s", short_peer(peer), drop_exc)

    # -- gossip out ------------------------------------------------------------------

    def submit(self, market: str, action: Action) -> None:
        """Queue one action; the batch loop signs and publishes it within a tick."""
        if market not in self.markets:
            raise ValueError(f"unknown market {market!r}")
        if len(self.pending) >= PENDING_ACTIONS_MAX:
            raise OverflowError("too many actions pending")
        self.pending.append((market, action))

    async def _flush_pending(self) -> list[bytes]:
        by_market: dict[str, list[Action]] = {}
        while self.pending:
            market, action = self.pending.popleft()
            by_market.setdefault(market, []).append(action)
        ids = []
        for market, actions in sorted(by_market.items()):
            for i in range(0, len(actions), 500):
                chunk = actions[i:i + 500]
                try:
                    event, receipt = self.replica.create_event(
                        self.key_pair.private_key, market, chunk)
                except OwnHistoryBehind as exc:
                    log.warning("not trading yet: %s", exc)
                    self.pending.extendleft((market, a) for a in reversed(chunk))
                    return ids
                self._persist(receipt)  # stored before it is published
                await self.pubsub.publish(market_topic(market), event.raw)
                mesh = self.pubsub.router.mesh.get(market_topic(market), set())
                log.info("order batch %s distributed: %d actions, seq %d, to %d peers",
                         short_id(event.id), len(chunk), event.seq, len(mesh))
                self._log_trades(receipt)
                ids.append(event.id)
        return ids

    async def _batch_loop(self) -> None:
        while True:
            await trio.sleep(BATCH_INTERVAL_S)
            if self.pending:
                try:
                    await self._flush_pending()
                except Exception:  # publishing failed: the event is stored, sync spreads it
                    log.exception("publishing a batch failed")

    async def _heartbeat_loop(self) -> None:
        while True:
            try:
                await self._heartbeat()
            except Exception:  # a failed publish must not stop heartbeats for good
                log.exception("heartbeat failed")
            await trio.sleep(HEARTBEAT_INTERVAL_S)

    async def _heartbeat(self) -> None:
        """Publish our clock and digest; then act on what has become final."""
        now = now_ms()
        hb = wire.Heartbeat(self.replica.clock, self.replica.lamport, self.replica.digest,
                            self.replica.stats()["events_delivered"])
        await self.pubsub.publish(CONTROL_TOPIC, wire.encode_heartbeat(hb))
        if now - self.started_ms >= LIVENESS_TIMEOUT_MS:  # heard everyone once
            finality = self.replica.finality(now, LIVENESS_TIMEOUT_MS)
            self._check_trade_reports(finality.frontier)
            await self._report_own_trades(finality.frontier)
            if finality.final_trades > self.final_logged:
                log.info("trades final: %d (+%d), pending: %d", finality.final_trades,
                         finality.final_trades - self.final_logged,
                         finality.pending_trades)
                self.final_logged = finality.final_trades

    async def _report_own_trades(self, frontier: int) -> None:
        for event in self.replica.events_of(self.origin)[-256:]:
            if event.lamport > frontier or event.id in self.reported:
                continue
            self.reported.add(event.id)
            trades = self.replica.trades_of(event.id)
            if trades:
                report = wire.TradeReport(event.id, len(trades), wire.trades_hash(trades))
                await self.pubsub.publish(TRADES_TOPIC, wire.encode_trade_report(report))

    # -- status and auto-trading -----------------------------------------------------

    def status(self) -> dict:
        stats = self.replica.stats()
        now = now_ms()
        finality = self.replica.finality(now, LIVENESS_TIMEOUT_MS)
        # Nothing is reported final before the node has listened for one liveness timeout.
        trades_final = finality.final_trades if now - self.started_ms >= LIVENESS_TIMEOUT_MS else 0
        return {
            "peer_id": str(self.peer_id),
            "addr": self.listen_addr,
            "peers": len(self.peers),
            "events": stats["events_delivered"],
            "buffered": stats["events_buffered"],
            "own_seq": self.replica.clock.get(self.origin, 0),
            "trades": stats["trades"],
            "trades_final": trades_final,
            "trades_pending": stats["trades"] - trades_final,
            "resting": stats["resting"],
            "rollbacks": stats["rollbacks"],
            "rejected": {**stats["rejected"], **self.rejections},
            "divergences": self.divergences,
            "trade_reports_matched": self.trade_reports_matched,
            "digest": self.replica.digest_hex,
            "trading": self.trading,
            "pending_actions": len(self.pending),
        }

    def status_line(self) -> str:
        s = self.status()
        resting = " ".join(f"{m}={n}" for m, n in s["resting"].items())
        return (f"status: peers={s['peers']} events={s['events']} resting[{resting}] "
                f"trades final={s['trades_final']} pending={s['trades_pending']} "
                f"digest={s['digest'][:16]}")

    async def _status_loop(self) -> None:
        while True:
            await trio.sleep(self.config.status_interval_s)
            log.info(self.status_line())

    async def _auto_trade_loop(self) -> None:
        flows = {m: OrderFlow(random.Random(self._rng.random()),
                              mid=AUTO_TRADE_MID_TICKS.get(m, 10_000), spread=20,
                              mix={"limit": 0.7, "cancel": 0.18, "ioc": 0.06,
                                   "market": 0.02, "fok": 0.02, "post_only": 0.02})
                 for m in self.markets}
        learned_seq = self.replica.clock.get(self.origin, 0)
        while True:
            await trio.sleep(self._rng.expovariate(self.config.auto_trade_rate))
            # Order ids exist once a batch is signed: learn them, once, from our events,
            # so that the flow's cancels name real orders.
            for event in self.replica.events_of(self.origin, learned_seq):
                flow = flows.get(event.market)
                if flow is not None:
                    flow.placed([event.order_id(i) for i, a in enumerate(event.actions)
                                 if isinstance(a, Place)])
                    del flow.open_orders[:-1000]  # bounded: old ones are mostly done
                learned_seq = event.seq
            if not self.trading or len(self.pending) > 100:
                continue
            market = self._rng.choice(sorted(self.markets))
            self.submit(market, flows[market].next_action())


AUTO_TRADE_MID_TICKS = {"BTC-USD": 6_500_000, "ETH-USD": 350_000}


def short_peer(peer: ID) -> str:
    text = str(peer)
    return text[-8:]

