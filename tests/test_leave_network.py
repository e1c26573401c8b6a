"""A member leaves on real py-libp2p hosts (Node.leave, POST /leave): its orders are
cancelled, its leave becomes final, it may then stop for good, and finality and
admission go on without it."""

from __future__ import annotations

import pytest
import trio
from api_client import api_node, eventually
from harness import network

from p2pexchange.core.events import OrderType, Place, Side

pytestmark = pytest.mark.network
BTC = "BTC-USD"
LEAVE_TIMEOUT_S = 30.0


async def wait_state(node, state: str, timeout_s: float = LEAVE_TIMEOUT_S) -> None:
    try:
        with trio.fail_after(timeout_s):
            while node.admission.state != state:
                await trio.sleep(0.1)
    except trio.TooSlowError:
        raise AssertionError(f"{node.peer_id} still {node.admission.state}, not {state}, "
                             f"after {timeout_s}s; waiting for "
                             f"{node.replica.finality().waiting_for}") from None


async def wait_final(node, event_ids, timeout_s: float = LEAVE_TIMEOUT_S) -> None:
    try:
        with trio.fail_after(timeout_s):
            while not all(node.is_final(event_ids)):
                await trio.sleep(0.1)
    except trio.TooSlowError:
        raise AssertionError(f"not final after {timeout_s}s; waiting for "
                             f"{node.replica.finality().waiting_for}") from None


async def test_a_member_leaves_for_good_and_the_network_goes_on_without_it(tmp_path):
    async with network(tmp_path) as net:
        first = await net.start("n0")
        for i in range(1, 4):
            await net.start(f"n{i}", bootstrap=first)
        await net.discovered()
        leaver = net.nodes[3]
        for k in range(3):  # resting orders of the leaver
            leaver.submit(BTC, Place(Side.SELL, OrderType.LIMIT, 12_000 + k, 1))
        await leaver.flush()
        await net.converged(events=1)
        assert len(leaver.open_orders(BTC)) == 3
        # Nobody can leave who is not a member, and the last member cannot leave; those
        # are refused with a reason before anything is signed.
        cancelled = await leaver.leave()
        assert cancelled == 3 and leaver.open_orders(BTC) == []
        assert leaver.busy() is not None  # no orders any more
        with pytest.raises(ValueError, match="already leaving"):
            await leaver.leave()
        await wait_state(leaver, "left")
        gone = leaver.origin
        await net.converged()
        for node in net.nodes:
            assert gone not in node.replica.members()
            assert node.replica.is_final(node.replica.membership.left(gone).id)
        await net.stop(leaver)  # gone for good
        # The survivors trade, and their trades become final without the leaver.
        survivors = list(net.nodes)
        maker = survivors[0]
        maker.submit(BTC, Place(Side.SELL, OrderType.LIMIT, 11_000, 2))
        (sell,) = await maker.flush()
        taker = survivors[1]
        taker.submit(BTC, Place(Side.BUY, OrderType.IOC, 11_000, 2))
        (buy,) = await taker.flush()
        for node in survivors:
            await wait_final(node, [sell, buy])
            assert gone not in node.replica.finality().waiting_for
        # A newcomer joins through a survivor: its join becomes final without the leaver.
        late = await net.start("late", bootstrap=survivors[2])
        late.submit(BTC, Place(Side.BUY, OrderType.LIMIT, 12_000, 1))
        (order,) = await late.flush()
        for node in net.nodes:
            await wait_final(node, [order])
        await net.converged()
        assert len(survivors[0].replica.trades()) == 1  # the leaver's sells were cancelled


async def test_leave_through_the_api_and_what_it_refuses(tmp_path):
    """POST /leave: the last member is refused (409 with the reason) and keeps trading;
    with two members, one leaves (202), its open order is cancelled, its status goes
    leaving -> left, orders are refused with the reason, and a second leave is 409."""
    async with network(tmp_path) as net, api_node(net, "a") as a:
        refused = await a.call("POST", "/leave")
        assert refused.status_code == 409
        assert refused.json()["error"]["reason"] == "cannot_leave"
        assert "last member" in refused.json()["error"]["message"]
        # (the node's own reasons to wait, not the machine's: loop lag is load)
        assert a.node.admission.state == "member" and a.node.admission.busy() is None
        async with api_node(net, "b", bootstrap=a.node) as b:
            order = {"market": BTC, "side": "sell", "type": "limit", "price": "120.00",
                     "quantity": "0.0010"}
            assert (await b.call("POST", "/orders", json=order)).status_code == 201
            reply = await b.call("POST", "/leave")
            assert reply.status_code == 202
            assert reply.json() == {"membership": "leaving", "cancelled": 1}
            assert b.node.open_orders(BTC) == []

            async def left() -> bool:
                return (await b.call("GET", "/status")).json()["membership"] == "left"
            await eventually(left, "b left")
            again = await b.call("POST", "/leave")
            assert again.status_code == 409 and "already left" in again.text
            busy = await b.call("POST", "/orders", json=order)
            assert busy.status_code == 503 and "left the network" in busy.text
            assert (await a.call("GET", "/status")).json()["members"] == [str(a.node.peer_id)]
