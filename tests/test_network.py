"""Multi-node tests on real py-libp2p hosts (TCP + noise + yamux) on 127.0.0.1."""

from __future__ import annotations

import dataclasses
import functools

import cbor2
import pytest
import trio
from harness import network

from p2pexchange.client.verify import verify
from p2pexchange.core.events import OrderType, Place, Side, canonical
from p2pexchange.net import wire
from p2pexchange.net.gossip import market_topic

pytestmark = pytest.mark.network
BTC = "BTC-USD"
CLOCKS_AGREE_TIMEOUT_S = 10.0  # acknowledgements still on their way after convergence


def limit(side: Side, price: int, qty: int, otype: OrderType = OrderType.LIMIT) -> Place:
    return Place(side, otype, price, qty)


async def test_every_node_discovers_every_other_from_one_bootstrap(tmp_path):
    async with network(tmp_path) as net:
        first = await net.start("n0")
        for i in range(1, 5):
            await net.start(f"n{i}", bootstrap=first)
        started = trio.current_time()
        await net.discovered()
        assert trio.current_time() - started < 30
        # Nobody is special after start-up: a newcomer can bootstrap from any node (it is
        # admitted once its join is final, so while every member is up: finality waits
        # for every member, protocols/finality.md) ...
        late = await net.start("late", bootstrap=net.nodes[2])
        await net.stop(first)  # ... and the bootstrap node may then go for good:
        await net.discovered()
        assert {n.peer_id for n in net.nodes if n is not late} <= late.peers
        # ... the survivors keep trading with the newcomer and converge.
        for i, node in enumerate(net.nodes):
            node.submit(BTC, limit(Side.BUY if i % 2 else Side.SELL, 10_000, 1))
            await node.flush()
        await net.converged(events=len(net.nodes))
        assert net.nodes[0].replica.stats()["trades"] >= 1


async def test_orders_from_every_node_reach_every_node_and_books_converge(tmp_path):
    async with network(tmp_path) as net:
        first = await net.start("n0")
        for i in range(1, 4):
            await net.start(f"n{i}", bootstrap=first)
        await net.discovered()
        for i, node in enumerate(net.nodes):
            for k in range(5):
                node.submit(BTC, limit(Side.BUY if k % 2 else Side.SELL,
                                       10_000 + (50 if k % 2 else 60) + i, 1 + k))
            await node.flush()
        await net.converged(events=4)
        books = {repr(n.replica.book(BTC).snapshot()) for n in net.nodes}
        assert len(books) == 1
        assert net.nodes[0].replica.book(BTC).resting_count() == 20


async def test_concurrent_crossing_orders_produce_the_same_trades_everywhere(tmp_path):
    async with network(tmp_path) as net:
        first = await net.start("n0")
        a = await net.start("a", bootstrap=first)
        b = await net.start("b", bootstrap=first)
        await net.discovered()
        first.submit(BTC, limit(Side.SELL, 10_000, 5))
        await first.flush()
        await net.converged(events=1)
        # a and b both try to take the whole resting order at the same moment.
        a.submit(BTC, limit(Side.BUY, 10_000, 5, OrderType.IOC))
        b.submit(BTC, limit(Side.BUY, 10_000, 5, OrderType.IOC))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(a.flush)
            nursery.start_soon(b.flush)
        await net.converged(events=3)
        trades = {tuple(n.replica.trades()) for n in net.nodes}
        assert len(trades) == 1
        (only,) = trades.pop()
        assert only.qty == 5 and only.taker_origin in (a.origin, b.origin)
        # Once final, the taker reports the trade (its heartbeat reads its own latest
        # events) and the others find the report matches what they computed.
        others = [n for n in net.nodes if n.origin != only.taker_origin]
        with trio.fail_after(30):
            while not all(n.control.reports.matched >= 1 for n in others):
                await trio.sleep(0.2)
        assert all(n.control.divergences == 0 for n in net.nodes)


async def test_members_attest_the_same_checkpoints_and_a_different_hash_is_a_divergence(
        tmp_path):
    """Each node takes a checkpoint every 2 final events that act (4,096 in production,
    set from the start: the count runs from the previous checkpoint) and its heartbeats
    attest the latest: every node finds every other member attesting its own latest
    checkpoint, and the hashes it compared match. A member's heartbeat attesting another
    hash for a checkpoint we took counts as a divergence."""
    async with network(tmp_path) as net:
        first = await net.start("n0", checkpoint_every=2)
        for name in ("a", "b"):
            await net.start(name, bootstrap=first, checkpoint_every=2)
        await net.discovered()
        for i, node in enumerate(net.nodes):
            for k in range(2):
                node.submit(BTC, limit(Side.SELL if (i + k) % 2 else Side.BUY, 10_000, 1))
                await node.flush()
        await net.converged(events=6)
        # 8 events act: the 6 orders and the joins of a and b (finality.md, Membership).
        with trio.fail_after(30):
            while not all(n.status()["checkpoint"] is not None
                          and n.status()["checkpoint"]["n"] == 8
                          and n.status()["checkpoint"]["attested_by"] == 2
                          for n in net.nodes):
                await trio.sleep(0.2)
        assert len({n.status()["checkpoint"]["hash"] for n in net.nodes}) == 1
        assert all(n.control.checkpoints_matched >= 2 and n.control.divergences == 0
                   for n in net.nodes)
        # A member attesting a different hash for checkpoint 8 (as its heartbeat would):
        victim, liar = net.nodes[0], net.nodes[1]
        lie = wire.Heartbeat(liar.replica.clock, liar.replica.lamport, liar.replica.digest,
                             liar.replica.stats()["events_delivered"],
                             tuple(sorted(liar.replica.membership.genesis)), (8, b"x" * 32))
        victim.control.on_heartbeat(liar.peer_id, lie)
        assert victim.control.divergences == 1
        assert victim.status()["checkpoint"]["attested_by"] == 1


async def test_a_late_joiner_catches_up_through_sync(tmp_path):
    async with network(tmp_path) as net:
        first = await net.start("n0")
        other = await net.start("n1", bootstrap=first)
        for k in range(30):
            (first if k % 2 else other).submit(BTC, limit(Side.BUY, 9_000 + k, 1))
            await (first if k % 2 else other).flush()
        before = first.replica.applied_ids()
        await net.converged(events=30)
        late = await net.start("late", bootstrap=other)  # waits until it is a member
        await net.converged(events=30)
        assert late.replica.stats()["events_buffered"] == 0
        assert set(before) <= set(late.replica.applied_ids())
        # It was admitted by a join, and its first event came after it.
        (join,) = [e for e in map(late.replica.event, late.replica.applied_ids())
                   if any(getattr(a, "member", None) == late.origin for a in e.actions)]
        own = late.replica.events_of(late.origin)
        assert not own or own[0].clock.get(join.origin, 0) >= join.seq


async def test_a_restarted_node_keeps_its_identity_and_loses_nothing(tmp_path):
    async with network(tmp_path) as net:
        first = await net.start("n0")
        node = await net.start("n1", bootstrap=first)
        for k in range(5):
            node.submit(BTC, limit(Side.SELL, 11_000 + k, 2))
            await node.flush()
        await net.converged(events=5)
        peer_id, digest = node.peer_id, node.replica.digest
        await net.stop(node)
        first.submit(BTC, limit(Side.BUY, 11_000, 1))  # happens while n1 is down
        await first.flush()
        again = await net.start("n1", bootstrap=first)
        assert again.peer_id == peer_id
        assert again.replica.stats()["events_delivered"] >= 5
        again.submit(BTC, limit(Side.SELL, 11_500, 1))
        await again.flush()
        await net.converged(events=7)
        own = again.replica.events_of(again.origin)
        assert [e.seq for e in own] == list(range(1, len(own) + 1))  # continued, no reuse
        assert sum(1 for e in own if e.market) == 6
        assert digest != again.replica.digest


async def test_invalid_messages_are_rejected_and_not_forwarded(tmp_path):
    async with network(tmp_path) as net:
        first = await net.start("n0")
        for i in range(1, 4):
            await net.start(f"n{i}", bootstrap=first)
        await net.discovered()
        await trio.sleep(2)  # let the gossip mesh form
        evil = net.nodes[1]
        evil.submit(BTC, limit(Side.SELL, 10_000, 1))
        (event_id,) = await evil.flush()
        await net.converged(events=1)
        good = evil.replica.event(event_id)
        forged = cbor2.loads(good.raw)
        forged["s"], forged["c"] = 2, {evil.origin: [1, good.id]}  # signature now wrong
        # py-libp2p validates our own publications too: the attacker skips that.
        evil.pubsub.remove_topic_validator(market_topic(BTC))
        for payload in (b"\xff\x00garbage", canonical(forged)):
            await evil.pubsub.publish(market_topic(BTC), payload)
        others = [n for n in net.nodes if n is not evil]
        with trio.fail_after(20):
            while not any(len(n.rejection_log) >= 2 for n in others):
                await trio.sleep(0.1)
        await trio.sleep(3)  # time enough for any forwarding to happen
        receivers = [n for n in others if n.rejection_log]
        assert receivers
        for node in receivers:
            codes = sorted(code for _, code, _ in node.rejection_log)
            assert codes == ["bad_cbor", "bad_signature"]
            # Every rejection names the publisher: no honest node forwarded the messages,
            # so nodes outside the publisher's mesh never saw them at all.
            assert {peer for _, _, peer in node.rejection_log} == {str(evil.peer_id)}
        await net.converged(events=1)


async def test_a_node_following_one_market_still_delivers_every_event(tmp_path):
    async with network(tmp_path) as net:
        first = await net.start("n0")
        eth_only = await net.start("eth", bootstrap=first, markets=["ETH-USD"])
        for k in range(3):  # BTC events, then an ETH one that causally follows them
            first.submit(BTC, limit(Side.SELL, 10_000 + k, 1))
            await first.flush()
        first.submit("ETH-USD", limit(Side.BUY, 3_000, 1))
        await first.flush()
        await net.converged(events=4)
        assert eth_only.replica.book("ETH-USD").resting_count() == 1


def remote_ips(node) -> dict[str, set[str]]:
    """For each connected peer: the remote IPs of our connections to it."""
    out: dict[str, set[str]] = {}
    for peer, conns in node.host.get_network().connections.items():
        for conn in conns if isinstance(conns, list) else [conns]:
            address = conn.muxed_conn.get_remote_address()
            if address is not None:
                out.setdefault(str(peer), set()).add(address[0])
    return out


async def test_nodes_on_their_own_addresses_dial_from_them(tmp_path):
    async with network(tmp_path) as net:
        first = await net.start("n0", listen="/ip4/127.0.0.2/tcp/0")
        second = await net.start("n1", bootstrap=first, listen="/ip4/127.0.0.3/tcp/0")
        third = await net.start("n2", bootstrap=first, listen="/ip4/127.0.0.4/tcp/0")
        await net.discovered()
        own_ip = {str(n.peer_id): n.listen_addr.split("/")[2] for n in net.nodes}
        assert sorted(own_ip.values()) == ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
        for node in (first, second, third):
            seen = remote_ips(node)
            assert set(seen) == set(own_ip) - {str(node.peer_id)}
            for peer, ips in seen.items():
                assert ips == {own_ip[peer]}, (peer, ips)  # never 127.0.0.1
        second.submit(BTC, limit(Side.SELL, 10_000, 1))
        await second.flush()
        await net.converged(events=1)


async def test_only_noise_and_yamux_are_accepted(tmp_path):
    """A peer offering only plaintext (or only mplex) cannot connect; noise + yamux can."""
    from libp2p import new_host
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.custom_types import TProtocol
    from libp2p.peer.peerinfo import info_from_p2p_addr
    from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport
    from libp2p.stream_muxer.mplex.mplex import MPLEX_PROTOCOL_ID as MPLEX_ID
    from libp2p.stream_muxer.mplex.mplex import Mplex
    from multiaddr import Multiaddr

    async with network(tmp_path) as net:
        node = await net.start("n0")
        key = create_new_key_pair()
        stacks = {
            "plaintext": dict(sec_opt={PLAINTEXT_PROTOCOL_ID: InsecureTransport(key)}),
            "mplex": dict(muxer_opt={TProtocol(MPLEX_ID): Mplex}),
            "noise+yamux": dict(muxer_preference="YAMUX"),
        }
        connected = {}
        for name, options in stacks.items():
            client = new_host(key_pair=key, **options)
            async with client.run(listen_addrs=[Multiaddr("/ip4/127.0.0.1/tcp/0")]):
                try:
                    with trio.fail_after(10):
                        await client.connect(info_from_p2p_addr(Multiaddr(node.listen_addr)))
                except Exception:
                    pass
                connected[name] = node.peer_id in client.get_connected_peers()
        assert connected == {"plaintext": False, "mplex": False, "noise+yamux": True}


async def two_attesting_members(net, orders: int, at_least: int | None = None):
    """The genesis member and a second member, both taking a checkpoint every 2 final
    events that act, after `orders` orders: once each attests its latest checkpoint (of n
    at least `at_least`, default `orders`) to the other."""
    first = await net.start("n0", checkpoint_every=2)
    other = await net.start("a", bootstrap=first, checkpoint_every=2)
    for k in range(orders):
        node = first if k % 2 else other
        node.submit(BTC, limit(Side.SELL if k % 3 else Side.BUY, 10_000 + k % 4, 1))
        await node.flush()
    await net.converged(events=orders)
    at_least = orders if at_least is None else at_least
    with trio.fail_after(30):
        while not all(n.status()["checkpoint"] is not None
                      and n.status()["checkpoint"]["n"] >= at_least
                      and n.status()["checkpoint"]["attested_by"] == 1 for n in net.nodes):
            await trio.sleep(0.2)
    return first, other


async def test_a_newcomer_starts_from_the_checkpoint_the_members_attest(tmp_path):
    """Two members take a checkpoint every 2 final events that act and attest it. A
    newcomer starts from the latest one its genesis member attests, with the chain
    segments it needs and not the history before them (net/snapshot.py, start.py); it
    then syncs what follows, joins, trades, and holds the members' digest. Restarted, it
    installs the same checkpoint again from its own store and catches up."""
    async with network(tmp_path) as net:
        first, other = await two_attesting_members(net, 16)
        late = await net.start("late", bootstrap=other, checkpoint_every=2)
        started = late.status()["started_from"]
        assert started.startswith("checkpoint "), started
        n = int(started.split()[1])
        assert n >= 16
        _, _, segments = late.store.start()
        assert segments < first.replica.events_delivered  # not the history
        assert late.replica.ledger.floor is not None
        assert other.start.snapshots.served + first.start.snapshots.served == 1
        late.submit(BTC, limit(Side.BUY, 10_003, 2))
        await late.flush()
        await net.converged()
        assert late.replica.final_key() is not None
        await net.stop(late)
        again = await net.start("late", bootstrap=other, checkpoint_every=2)
        assert again.status()["started_from"] == started
        assert again.replica.stats()["rejected"] == {}
        await net.converged()
        await net.stop(again)  # its store verifies: the checkpoint, then every event
        assert verify(str(tmp_path / "late")).startswith(
            f"verified: started from {started} (")
        for node in net.nodes:  # nothing refused on the way, "before_snapshot" least
            assert not any("snapshot" in what for what, _, _ in node.rejections.recent)
            assert "before_snapshot" not in node.rejections.by_code, node.rejections.by_code


async def test_members_that_forgot_their_history_serve_it_from_their_store(
        tmp_path, monkeypatch):
    """Members forget what their checkpoints cover (core/replica.py `_forget`): ledger
    entries, and each chain below the segment a newcomer would be sent with it. A
    newcomer that replays the whole history (here: it hears no quorum of attestations)
    gets the forgotten part from a member's store, in delivery order (intake.py `serve`),
    converges, joins and trades; the members then forget again and still agree."""
    monkeypatch.setattr("p2pexchange.net.control.Control.attested_checkpoint",
                        lambda self: None)
    async with network(tmp_path) as net:
        first, other = await two_attesting_members(net, 16)
        for node in net.nodes:
            node.replica.compact()  # (forgets up to the checkpoint of the one before)
            node.replica.compact()
            assert node.replica.ledger.forgotten >= 16
            assert sum(c.base for c in node.replica._events.values()) > 0
            assert node.status()["events_final"] >= 16
        late = await net.start("late", bootstrap=other, checkpoint_every=2)
        assert late.status()["started_from"] == "history"
        assert late.replica.ledger.floor is None and late.store.start() is None
        late.submit(BTC, limit(Side.BUY, 10_003, 2))
        await late.flush()
        await net.converged()
        for node in net.nodes:
            node.replica.compact()
        await net.converged()
        assert len({n.replica.checkpoint.hash for n in net.nodes}) == 1
        for node in net.nodes:
            assert "before_snapshot" not in node.rejections.by_code, node.rejections.by_code
            assert node.replica.stats()["rejected"] == {}, node.replica.stats()["rejected"]
        # The same digest everywhere does not mean the same events: an acknowledgement
        # changes no digest and may still be on its way. Once the clocks agree (the
        # network is quiet once everything is final), the stores hold the same events.
        with trio.fail_after(CLOCKS_AGREE_TIMEOUT_S):
            while len({tuple(sorted(n.replica.clock.items())) for n in net.nodes}) > 1:
                await trio.sleep(0.1)
        assert late.store.count() == first.store.count()


async def test_a_newcomer_refuses_a_forged_checkpoint_or_segments_and_falls_back(tmp_path):
    """Both members serve a checkpoint whose bytes are not the attested hash, then (to
    the next newcomer) segments that stop short of the event the checkpoint names. Each
    newcomer refuses what it got from each, counts it against that peer
    (`wrong_checkpoint`, `bad_segments`), and replays the whole history instead. So does
    a newcomer that hears no attester at all (the genesis member stopped)."""
    async with network(tmp_path) as net:
        first, other = await two_attesting_members(net, 8, at_least=0)
        honest = {}

        def forged_bytes(node):  # a well-formed S_N with another digest
            checkpoint, segments = honest[node]()
            state = cbor2.loads(checkpoint.encoded)
            state["d"] = bytes(32)
            return dataclasses.replace(checkpoint, encoded=canonical(state)), segments

        def short_segments(node):
            checkpoint, segments = honest[node]()
            o, (lo, hi) = max(segments.items(), key=lambda item: item[1][1] - item[1][0])
            return checkpoint, {**segments, o: (lo, hi - 1)}

        for lie, code in ((forged_bytes, "wrong_checkpoint"), (short_segments, "bad_segments")):
            for node in net.nodes:  # every member lies, the earlier newcomer too
                honest.setdefault(node, node.replica.snapshot_segments)
                node.replica.snapshot_segments = functools.partial(lie, node)
            liars = {str(node.peer_id) for node in net.nodes}
            late = await net.start(f"late-{code}", bootstrap=other, checkpoint_every=2)
            assert late.status()["started_from"] == "history"
            assert set(late.rejections.by_code) == {code}
            assert {p for _, c, p in late.rejections.recent if c == code} <= liars
            await net.converged()
        for node, serve in honest.items():
            node.replica.snapshot_segments = serve
        await net.stop(first)
        alone = await net.start("late-alone", bootstrap=other, member=False,
                                checkpoint_every=2)
        with trio.fail_after(20):
            while alone.status()["started_from"] == "":
                await trio.sleep(0.2)
        assert alone.status()["started_from"] == "history"
        assert alone.store.start() is None
        await net.converged(nodes=[other, alone])
