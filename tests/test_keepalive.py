"""Keepalive (net/discovery.py): a peer that answers no ping is dropped, unless its
connection keeps carrying traffic from it (`Discovery.heard`): a node busy catching
up answers pings late, and dropping the peer that is sending it its history would only
make the history start again. Two real py-libp2p hosts on 127.0.0.1; the pinged host's
ping handler never answers. Timeouts are shortened (a liveness rule, not safety)."""

from __future__ import annotations

import multiaddr
import pytest
import trio
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.host.ping import ID as PING_PROTOCOL
from libp2p.peer.peerinfo import PeerInfo

from p2pexchange.net import discovery as discovery_module
from p2pexchange.net.discovery import Discovery
from p2pexchange.net.host import create_host

LISTEN = "/ip4/127.0.0.1/tcp/0"


@pytest.fixture
def short_keepalive(monkeypatch):
    monkeypatch.setattr(discovery_module, "KEEPALIVE_INTERVAL_S", 0.2)
    monkeypatch.setattr(discovery_module, "KEEPALIVE_TIMEOUT_S", 0.2)
    monkeypatch.setattr(discovery_module, "KEEPALIVE_FAILURES_MAX", 3)  # silent 0.6 s: drop


async def _never_answer(stream) -> None:
    await trio.sleep_forever()


@pytest.mark.trio
@pytest.mark.parametrize("heard", [False, True], ids=["silent", "heard"])
async def test_a_peer_that_answers_no_ping_is_dropped_unless_it_is_heard_from(
        short_keepalive, heard):
    a = create_host(create_new_key_pair(), LISTEN)
    b = create_host(create_new_key_pair(), LISTEN)
    async with a.run(listen_addrs=[multiaddr.Multiaddr(LISTEN)]), \
            b.run(listen_addrs=[multiaddr.Multiaddr(LISTEN)]):
        b.set_stream_handler(PING_PROTOCOL, _never_answer)
        await a.connect(PeerInfo(b.get_id(), b.get_addrs()))
        keeper = Discovery(a, on_found=lambda peer: None)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(keeper.keepalive)
            for _ in range(20):  # 2 s: more than three times the drop threshold
                await trio.sleep(0.1)
                if heard:
                    keeper.heard(b.get_id())
            still_connected = b.get_id() in a.get_connected_peers()
            nursery.cancel_scope.cancel()
        assert still_connected is heard


def test_heard_refreshes_only_peers_keepalive_already_tracks():
    keeper = Discovery(create_host(create_new_key_pair(), LISTEN), on_found=lambda peer: None)
    stranger = create_host(create_new_key_pair(), LISTEN).get_id()
    keeper.heard(stranger)  # never connected: nothing is kept for it
    assert stranger not in keeper._answered_at
    keeper._answered_at[stranger] = 0.0  # connected once, silent since
    keeper.heard(stranger)
    assert keeper._answered_at[stranger] > 0.0
