"""Removal on real py-libp2p hosts (admission.py, core/removal.py): a member stops for
good, finality stalls and names it, the others vote it out after `remove_after_s`, and
finality and trading go on without it; a member that is only slow is not removed; a
member proven to equivocate is removed once the proof has gone round."""

from __future__ import annotations

import pytest
import trio
from harness import network
from test_leave_network import wait_final

from p2pexchange.core.events import OrderType, Place, Side, sign_event

pytestmark = pytest.mark.network
BTC = "BTC-USD"
REMOVE_AFTER_S = 4.0  # the liveness timeout, short for a test (no safety rule reads it)


async def trade(maker, taker, price: int) -> list[bytes]:
    maker.submit(BTC, Place(Side.SELL, OrderType.LIMIT, price, 2))
    [sell] = await maker.flush()
    taker.submit(BTC, Place(Side.BUY, OrderType.IOC, price, 2))
    [buy] = await taker.flush()
    return [sell, buy]


async def four_members(net, **options) -> list:
    """Four members of one network, each started with `options` (NodeConfig fields)."""
    first = await net.start("n0", **options)
    for i in range(1, 4):
        await net.start(f"n{i}", bootstrap=first, **options)
    await net.discovered()
    return list(net.nodes)


async def test_a_member_that_stops_for_good_is_removed_and_finality_resumes(tmp_path):
    async with network(tmp_path) as net:
        a, b, c, gone = await four_members(net, remove_after_s=REMOVE_AFTER_S)
        await wait_final(a, await trade(a, b, 10_000))
        await net.converged()
        await net.stop(gone)  # for good: its data directory is never used again
        ids = await trade(b, c, 10_100)
        with trio.move_on_after(REMOVE_AFTER_S / 2):  # before the timeout: it stalls
            await wait_final(a, ids)
        status = a.status()
        assert not all(a.is_final(ids)) and str(gone.peer_id) in status["waiting_for"]
        assert status["removed"] == []
        for node in (a, b, c):  # then the others vote it out, and all of it is final
            await wait_final(node, ids, timeout_s=30)
        await net.converged([a, b, c])
        for node in (a, b, c):
            [removed] = node.status()["removed"]
            assert removed["member"] == str(gone.peer_id)
            assert removed["cut"] == node.replica.clock[gone.origin]  # all it signed counts
            assert not node.replica.is_member(gone.origin)
            assert node.status()["waiting_for"] == [] and node.status()["membership"] == "member"
        assert b.replica.removals() == a.replica.removals() == c.replica.removals()
        await wait_final(c, await trade(c, a, 10_200), timeout_s=30)  # and goes on


async def test_a_member_heard_from_is_not_removed(tmp_path):
    """Finality waits for a member that stays alive (heartbeats) but signs nothing for
    longer than the timeout: nobody votes, because everybody hears from it."""
    async with network(tmp_path) as net:
        a, b, _, slow = await four_members(net, remove_after_s=REMOVE_AFTER_S)
        acknowledge = slow.batcher._membership
        slow.batcher._membership = lambda signed: None  # it acknowledges nothing
        ids = await trade(a, b, 10_000)
        await trio.sleep(REMOVE_AFTER_S * 2.5)
        for node in net.nodes:
            assert node.status()["removed"] == [] and node.replica.frozen() == []
            assert not any(node.is_final(ids))
        slow.batcher._membership = acknowledge  # it acknowledges again: all is final
        for node in net.nodes:
            await wait_final(node, ids, timeout_s=30)


async def test_a_member_proven_to_equivocate_is_removed_and_the_proof_shown(tmp_path):
    """A member signs a second version of one of its events (forged here with its own
    key) and one node receives it: that node keeps the proof and gossips it, every
    member then holds it and votes the equivocator out, at one cut everywhere; the
    status and GET /misbehaviour show the exclusion and the proof."""
    async with network(tmp_path) as net:
        a, b, c, liar = await four_members(net)
        await wait_final(a, await trade(liar, b, 10_000))
        await net.converged()
        signed = liar.replica.events_of(liar.origin)[-1]
        other = sign_event(liar.key_pair.private_key, liar.origin, signed.seq,
                           {o: (s, signed.heads[o]) for o, s in signed.clock.items()},
                           signed.lamport, BTC, [Place(Side.BUY, OrderType.IOC, 1, 1)])
        assert a.replica.receive(other.raw).code == "equivocation"
        for node in (a, b, c):
            with trio.fail_after(60):
                while not node.status()["removed"]:
                    await trio.sleep(0.2)
            [removed] = node.status()["removed"]
            assert removed["member"] == str(liar.peer_id) and removed["equivocated"]
            assert (liar.origin, signed.seq) in node.replica.equivocations
        assert b.replica.removals() == a.replica.removals() == c.replica.removals()
        await wait_final(a, await trade(b, c, 10_100), timeout_s=30)  # it goes on
