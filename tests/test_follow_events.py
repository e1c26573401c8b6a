"""When a node starts reading the event topics (Admission.follow_events): a founder at
once; a node started with `--bootstrap` only once one of its syncs has completed, since
while it catches up sync alone brings the history faster than sync plus the members'
live gossip; and after `FOLLOW_EVENTS_AFTER_S` even if no sync ever completes (here
shortened: a liveness rule). Real py-libp2p nodes on 127.0.0.1."""

from __future__ import annotations

from types import SimpleNamespace

import multiaddr
import pytest
import trio
from harness import network
from libp2p.crypto.ed25519 import create_new_key_pair

from p2pexchange import admission as admission_module
from p2pexchange.core.events import MEMBERSHIP_MARKET, OrderType, Place, Side
from p2pexchange.net.gossip import CONTROL_TOPIC, market_topic
from p2pexchange.net.host import create_host

pytestmark = pytest.mark.network
BTC = "BTC-USD"
LISTEN = "/ip4/127.0.0.1/tcp/0"
EVENT_TOPICS = {market_topic(BTC), market_topic(MEMBERSHIP_MARKET)}


def follows(node) -> set[str]:
    return set(node.pubsub.topic_ids)


async def first_following(node, started: float | None = None) -> tuple[int, float]:
    """(syncs completed, seconds since `started` or since called) when `node` first
    follows an event topic."""
    started = trio.current_time() if started is None else started
    with trio.fail_after(20):
        while not EVENT_TOPICS & follows(node):
            await trio.sleep(0.01)
    return node.sync.completed, trio.current_time() - started


async def test_a_newcomer_reads_event_gossip_only_once_a_sync_has_completed(tmp_path):
    async with network(tmp_path) as net:
        founder = await net.start("founder")
        assert EVENT_TOPICS <= follows(founder)
        for k in range(20):
            founder.submit(BTC, Place(Side.SELL, OrderType.LIMIT, 10_000 + k, 1))
        await founder.flush()
        newcomer = await net.start("newcomer", bootstrap=founder, member=False)
        assert CONTROL_TOPIC in follows(newcomer)  # heartbeats from the start
        completed, _ = await first_following(newcomer)
        assert completed >= 1
        await net.member(newcomer)
        assert EVENT_TOPICS <= follows(newcomer)
        # Once following, live gossip reaches it (no sync needed for this one).
        founder.submit(BTC, Place(Side.BUY, OrderType.IOC, 10_000, 1))
        await founder.flush()
        await net.converged(events=2)


async def test_a_node_whose_syncs_never_complete_reads_event_gossip_after_a_while(
        tmp_path, monkeypatch):
    monkeypatch.setattr(admission_module, "FOLLOW_EVENTS_AFTER_S", 1.0)
    # Its only bootstrap peer is a bare libp2p host: reachable, but it speaks no sync.
    bare = create_host(create_new_key_pair(), LISTEN)
    async with bare.run(listen_addrs=[multiaddr.Multiaddr(LISTEN)]), network(tmp_path) as net:
        addr = SimpleNamespace(listen_addr=f"{bare.get_addrs()[0]}")
        before = trio.current_time()
        stray = await net.start("stray", bootstrap=addr, member=False)
        completed, waited = await first_following(stray, before)
        assert completed == 0 and 1.0 <= waited < 5
        assert stray.admission.state == "learning"  # no genesis: it takes nothing in
