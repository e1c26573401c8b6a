"""Discovery: bootstrap into the Kademlia DHT, then keep dialing what it knows.

The DHT runs in server mode. py-libp2p needs help (LIBP2P_NOTES): an outbound peer
is not added to the routing table by itself (`add_peer` after each dial), and the
table refreshes only every 600 s unless asked (`refresh_routing_table` here every
`DHT_REFRESH_INTERVAL_S`, once `explore` allows: a newcomer first catches up through
its bootstrap peer, since a refresh's queries cost it about 9% of its time). Every peer
in the routing table is dialed, all at once
(an unreachable one costs `DIAL_TIMEOUT_S` without holding up the others); the set
of connected peers is what the other protocols work with, and each change is logged
and reported to the node (`on_found`), which then syncs with the newcomer.

Keepalive: a connection whose peer vanished without a TCP reset (a partition, a
paused process) looks open for ever, and writes to it block once the peer stops
reading. Every `KEEPALIVE_INTERVAL_S` each connected peer not heard from in that time
is pinged (`/ipfs/ping/1.0.0`); a peer that answered no ping (and sent nothing) for
`KEEPALIVE_FAILURES_MAX` times
`KEEPALIVE_TIMEOUT_S` is dropped, which ends what was blocked on it, and the dial loop
reconnects as soon as the peer answers again (within about `DISCOVERY_INTERVAL_S` of
a heal).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

import trio
from libp2p.host.ping import ID as PING_PROTOCOL
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.peer.id import ID
from libp2p.tools.anyio_service.context import background_trio_service

from ..core.params import (
    DHT_REFRESH_INTERVAL_MAX_S,
    DHT_REFRESH_INTERVAL_S,
    DIAL_TIMEOUT_S,
    DISCOVERY_INTERVAL_S,
    KEEPALIVE_FAILURES_MAX,
    KEEPALIVE_INTERVAL_S,
    KEEPALIVE_TIMEOUT_S,
)
from .host import abort_connections, dial, peer_info, short_peer

log = logging.getLogger("p2pexchange.node")


class Discovery:
    """The DHT and the set of connected peers; `run` is its loop."""

    def __init__(self, host: Any, on_found: Callable[[ID], None],
                 explore: Callable[[], bool] = lambda: True) -> None:
        self.host = host
        self._explore = explore  # False: no DHT refresh yet (a newcomer catching up)
        self.dht = KadDHT(host, DHTMode.SERVER)
        self.peers: set[ID] = set()
        self._on_found = on_found
        self._answered_at: dict[ID, float] = {}  # peer -> last ping answered (or connected)
        self._pinging: set[ID] = set()  # a ping in flight (possibly stuck in a write)
        self._dropping: set[ID] = set()

    async def start(self, stack: AsyncExitStack) -> None:
        """Start the DHT as a service that `stack` stops."""
        await stack.enter_async_context(background_trio_service(self.dht))

    async def bootstrap(self, addrs: list[str]) -> None:
        """Dial every bootstrap peer; an unreachable one is a ConnectionError."""
        for addr in addrs:
            info = peer_info(addr)
            try:
                connected = await dial(self.host, info, DIAL_TIMEOUT_S)
            except Exception as exc:  # py-libp2p raises several dial errors
                raise ConnectionError(f"cannot reach bootstrap peer {addr}: {exc}") from None
            if not connected:
                raise ConnectionError(f"cannot reach bootstrap peer {addr} (timed out)")
            await self.dht.add_peer(info.peer_id)
            log.info("bootstrapped from %s", short_peer(info.peer_id))
            self._on_found(info.peer_id)
        # The routing table's first refresh is `run`'s first step: waiting for it here
        # (up to DIAL_TIMEOUT_S) would hold back sync and the API of a starting node.

    async def run(self) -> None:
        """Refresh the routing table, add connected peers to it, dial the rest. The
        refresh (a round of DHT queries) backs off, doubling up to
        `DHT_REFRESH_INTERVAL_MAX_S`, while the connected peers stay the same, and comes
        back to `DHT_REFRESH_INTERVAL_S` when they change: a quiet network costs little."""
        last_refresh, interval, peers = 0.0, DHT_REFRESH_INTERVAL_S, frozenset()
        while True:
            connected = frozenset(self.host.get_connected_peers())
            if connected != peers:
                peers, interval = connected, DHT_REFRESH_INTERVAL_S
            if time.monotonic() - last_refresh > interval and self._explore():
                last_refresh = time.monotonic()
                interval = min(2 * interval, DHT_REFRESH_INTERVAL_MAX_S)
                await self._refresh()
            await self._add_connected_to_table()
            await self._dial_table()
            self._note_changes()
            await trio.sleep(DISCOVERY_INTERVAL_S)

    async def _refresh(self) -> None:
        with trio.move_on_after(DIAL_TIMEOUT_S):
            try:
                await self.dht.refresh_routing_table()
            except Exception as exc:  # a peer misbehaving in a DHT query
                log.debug("routing table refresh failed: %s", exc)

    async def _add_connected_to_table(self) -> None:
        known = set(self.dht.routing_table.get_peer_ids())
        for peer in self.host.get_connected_peers():
            if peer in known:
                continue
            with trio.move_on_after(DIAL_TIMEOUT_S):
                try:
                    await self.dht.add_peer(peer)
                except Exception as exc:
                    log.debug("add_peer %s failed: %s", short_peer(peer), exc)

    async def _dial_table(self) -> None:
        connected = set(self.host.get_connected_peers())
        me = self.host.get_id()
        async with trio.open_nursery() as nursery:
            for peer in self.dht.routing_table.get_peer_ids():
                if (peer == me or peer in connected
                        or not self.host.get_peerstore().addrs(peer)):
                    continue
                nursery.start_soon(self._dial, peer)

    async def _dial(self, peer: ID) -> None:
        try:
            await dial(self.host, self.host.get_peerstore().peer_info(peer), DIAL_TIMEOUT_S)
        except Exception as exc:  # py-libp2p raises several dial errors
            log.debug("dial %s failed: %s", short_peer(peer), exc)

    def heard(self, peer: ID) -> None:
        """Traffic from `peer` on its own connection (a gossip message it forwarded, a
        sync answer) proves that connection alive as an answered ping does: a node busy
        catching up may answer pings late, and dropping a peer in the middle of sending
        us its history would only start it again."""
        if peer in self._answered_at:
            self._answered_at[peer] = time.monotonic()

    async def keepalive(self) -> None:
        """Ping every connected peer not heard from lately (`heard`: in a network that
        gossips, heartbeats alone keep every peer heard, and a ping costs a new stream);
        drop those that stopped answering and sent nothing.
        Pings and drops run as tasks of their own and are judged by the time since the
        last answer: a write to a peer that stopped reading can block in py-libp2p
        beyond any timeout, and must not hold up this loop or the other peers."""
        async with trio.open_nursery() as nursery:
            while True:
                await trio.sleep(KEEPALIVE_INTERVAL_S)
                now = time.monotonic()
                connected = self.host.get_connected_peers()
                for peer in connected:
                    answered = self._answered_at.setdefault(peer, now)
                    silent_s = now - answered
                    if silent_s > KEEPALIVE_TIMEOUT_S * KEEPALIVE_FAILURES_MAX:
                        if peer not in self._dropping:
                            log.info("peer %s answered no ping for %.0f s: dropping the "
                                     "connection", short_peer(peer), silent_s)
                            self._dropping.add(peer)
                            nursery.start_soon(self._drop, peer)
                    elif peer not in self._pinging and silent_s >= KEEPALIVE_INTERVAL_S:
                        self._pinging.add(peer)  # (a peer heard from lately needs no ping)
                        nursery.start_soon(self._ping, peer)
                for peer in set(self._answered_at) - set(connected):
                    del self._answered_at[peer]  # gone: a new connection starts afresh

    async def _drop(self, peer: ID) -> None:
        try:
            await abort_connections(self.host, peer)
            with trio.move_on_after(DIAL_TIMEOUT_S):
                await self.host.disconnect(peer)
        except Exception as exc:  # already gone
            log.debug("disconnect %s: %s", short_peer(peer), exc)
        finally:
            self._dropping.discard(peer)
            self._answered_at.pop(peer, None)

    async def _ping(self, peer: ID) -> None:
        payload = secrets.token_bytes(32)
        try:
            with trio.move_on_after(KEEPALIVE_TIMEOUT_S):
                stream = await self.host.new_stream(peer, [PING_PROTOCOL])
                try:
                    await stream.write(payload)
                    got = b""
                    while len(got) < len(payload):
                        chunk = await stream.read(len(payload) - len(got))
                        if not chunk:
                            break
                        got += chunk
                    if got == payload:
                        self._answered_at[peer] = time.monotonic()
                finally:
                    with trio.move_on_after(1):
                        await stream.close()
        except Exception as exc:  # no stream, a reset: unanswered
            log.debug("ping %s failed: %s", short_peer(peer), exc)
        finally:
            self._pinging.discard(peer)

    def _note_changes(self) -> None:
        connected = set(self.host.get_connected_peers())
        for peer in sorted(connected - self.peers, key=str):
            log.info("peer discovered: %s (%d connected)", short_peer(peer), len(connected))
            self._on_found(peer)
        for peer in sorted(self.peers - connected, key=str):
            log.info("peer lost: %s (%d connected)", short_peer(peer), len(connected))
        self.peers = connected


def bootstrap_peers(addrs: list[str]) -> set[bytes]:
    """The peer ids named by bootstrap multiaddrs (`/p2p/...`); unparsable ones are
    skipped here (dialing them reports the error)."""
    peers = set()
    for addr in addrs:
        try:
            peers.add(peer_info(addr).peer_id.to_bytes())
        except Exception:  # bad input is refused where the address is dialed
            continue
    return peers
