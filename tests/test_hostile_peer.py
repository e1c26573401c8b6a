"""A hostile peer on real py-libp2p hosts: nothing it sends can crash, freeze or stall a node.

The attacker is a node built on the project's own code that skips its own validators
and speaks the protocols directly: it publishes hostile messages on every topic
(events, among them signed ones on the wrong market's topic or of another origin;
heartbeats; trade reports), opens sync streams with garbage, oversize and
silent requests and too many at once, and answers the victim's sync pulls with
garbage. The victim must stay up, attribute every rejection to the attacker, keep
trading with its honest peers, and converge with them.
"""

from __future__ import annotations

import cbor2
import pytest
import trio
from harness import network
from libp2p.utils.varint import encode_uvarint, encode_varint_prefixed

from p2pexchange.core.events import SEQ_MAX, OrderType, Place, Side, canonical, sign_event
from p2pexchange.net import wire
from p2pexchange.net.gossip import CONTROL_TOPIC, TRADES_TOPIC, market_topic
from p2pexchange.net.host import peer_info
from p2pexchange.net.sync import SYNC_PROTOCOL
from p2pexchange.sim.workload import peer_id_bytes, seeded_key_pair

pytestmark = pytest.mark.network
BTC = "BTC-USD"


def hostile_events(attacker, victim) -> list[bytes]:
    """Events that reach the decoder: unsigned nonsense and validly signed lies."""
    place = [0, 0, 0, 100, 1, 0]
    base = {"v": 2, "o": attacker.origin, "s": 1, "c": {}, "l": 1, "m": BTC, "a": [place],
            "g": b"\x00" * 64}
    huge = 1 << 20_000  # about 6,000 decimal digits: cannot even be printed
    variants = [dict(base, s=huge), dict(base, l=huge), dict(base, c={victim.origin: huge}),
                dict(base, a=[[0, 0, 0, 100, huge, 0]]), dict(base, a=[[huge]]),
                dict(base, v=huge), {**base, huge: 1}, dict(base, m="XXX-YYY")]
    raws = [canonical(v) for v in variants] + [b"\xff\x00garbage", b""]
    # Validly signed: a clock that names the victim at a seq it never signed.
    key = attacker.key_pair.private_key
    lie = sign_event(key, attacker.origin, 1, {victim.origin: (SEQ_MAX, bytes(32))}, 2, BTC,
                     [Place(Side.SELL, OrderType.LIMIT, 100, 1)])
    # Validly signed but on the wrong topic, or published by someone else than its origin.
    eth = sign_event(key, attacker.origin, 1, {}, 1, "ETH-USD",
                     [Place(Side.SELL, OrderType.LIMIT, 100, 1)])
    other = seeded_key_pair("someone else")
    foreign = sign_event(other.private_key, peer_id_bytes(other), 1, {}, 1, BTC,
                         [Place(Side.SELL, OrderType.LIMIT, 100, 1)])
    return raws + [lie.raw, eth.raw, foreign.raw]


def hostile_control(victim) -> tuple[list[bytes], list[bytes]]:
    heartbeats = [
        b"\xa0", cbor2.dumps({"v": 1, "c": {}, "l": 1 << 20_000, "d": b"d" * 32, "n": 0}),
        # A lie that would freeze the victim if believed: its own seq at the maximum.
        wire.encode_heartbeat(wire.Heartbeat({victim.origin: SEQ_MAX}, SEQ_MAX, b"d" * 32, 1)),
    ]
    reports = [b"\x80", wire.encode_trade_report(wire.TradeReport(b"e" * 32, 5, b"h" * 32)),
               cbor2.dumps({"v": 1, "e": b"e" * 32, "t": 1 << 20_000, "h": b"h" * 32})]
    return heartbeats, reports


async def garbage_sync_server(stream) -> None:
    """What the attacker answers when the victim pulls from it."""
    try:
        await stream.read(1024)
        await stream.write(encode_varint_prefixed(b"\xff\xfe not cbor"))
        await stream.close()
    except Exception:
        pass


async def attack_sync_server(attacker, victim) -> None:
    """Requests to the victim's sync server: garbage, oversize, silent, too many."""
    async def open_stream():
        # The victim drops its connection to a peer whose sync answer was garbage (it
        # may have pulled from us already): a hostile peer simply dials again.
        for _ in range(4):
            try:
                return await attacker.host.new_stream(victim.peer_id, [SYNC_PROTOCOL])
            except Exception:
                await trio.sleep(0.3)
                with trio.move_on_after(5):
                    await attacker.host.connect(peer_info(victim.listen_addr))
        return await attacker.host.new_stream(victim.peer_id, [SYNC_PROTOCOL])
    stream = await open_stream()
    await stream.write(encode_varint_prefixed(b"\xff garbage request"))
    stream = await open_stream()
    await stream.write(encode_uvarint(1 << 40))  # claims a terabyte
    for _ in range(3):  # attempts: the connection may drop between two streams (above)
        silent = []
        for _ in range(3):  # never say anything; the third is one too many and is reset
            try:
                silent.append(await open_stream())
            except Exception:
                pass
        await trio.sleep(0.5)
        for s in silent:
            with trio.move_on_after(1):
                await s.close()
        if any(code == "too_many_streams" for _, code, _ in victim.rejection_log):
            return


async def test_a_hostile_peer_cannot_crash_freeze_or_stall_a_node(tmp_path):
    async with network(tmp_path) as net:
        first = await net.start("n0")
        victim = await net.start("victim", bootstrap=first)
        honest = await net.start("honest", bootstrap=first)
        attacker = await net.start("attacker", bootstrap=first)
        await net.discovered()
        await trio.sleep(2)  # let the gossip mesh form
        for topic in (market_topic(BTC), CONTROL_TOPIC, TRADES_TOPIC):
            attacker.pubsub.remove_topic_validator(topic)
        attacker.host.set_stream_handler(SYNC_PROTOCOL, garbage_sync_server)
        heartbeats, reports = hostile_control(victim)
        for raw in hostile_events(attacker, victim):
            await attacker.pubsub.publish(market_topic(BTC), raw)
        for raw in heartbeats:
            await attacker.pubsub.publish(CONTROL_TOPIC, raw)
        for raw in reports:
            await attacker.pubsub.publish(TRADES_TOPIC, raw)
        await attack_sync_server(attacker, victim)
        victim.sync.want(attacker.peer_id)  # the victim pulls from the attacker
        attacker_id = str(attacker.peer_id)
        with trio.fail_after(20):
            while not any(code in ("bad_cbor", "bad_schema") and what == "sync response"
                          for what, code, _ in victim.rejection_log):
                await trio.sleep(0.2)
        # Honest trading goes on, through the victim too, and everyone honest agrees.
        victim.submit(BTC, Place(Side.SELL, OrderType.LIMIT, 10_000, 3))
        await victim.flush()
        await net.converged([first, victim, honest], events=1)  # the buy comes after it
        honest.submit(BTC, Place(Side.BUY, OrderType.IOC, 10_000, 2))
        await honest.flush()
        await net.converged([first, victim, honest], events=2)
        assert victim.replica.stats()["trades"] == 1
        assert not victim.finished.is_set()
        assert sum(1 for e in victim.replica.events_of(victim.origin) if e.market) == 1
        # Every rejection the victim made names the attacker, none an honest peer.
        peers = {peer for _, _, peer in victim.rejection_log}
        assert peers == {attacker_id}, peers
        codes = {code for _, code, _ in victim.rejection_log}
        assert {"too_many_streams", "oversize", "wrong_topic", "not_origin"} <= codes, codes
        assert victim.rejections.by_peer[attacker_id] >= 10
