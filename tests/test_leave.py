"""A member leaves for good (core/finality.py, `Leave`): once its leave is final the rule
no longer waits for it, it may sign nothing with actions again, and nothing final changes.

Built on test_finality's `Net`: replicas over one genesis, events handed to chosen
replicas, acknowledgement rounds driven by hand.
"""

from __future__ import annotations

import random

from test_finality import (
    MARKET,
    Net,
    assert_final_histories_consistent,
    buy,
    delivered_raws,
    final_history,
    membership_of,
    pending_with_actions,
    sell,
)

from p2pexchange.core import replica as replica_module
from p2pexchange.core.events import MEMBERSHIP_MARKET, Event, Join, Leave, OrderType
from p2pexchange.core.market import DEFAULT_MARKETS
from p2pexchange.core.replica import Replica


def final_trading(replica: Replica) -> list:
    """The final history less the events without actions (acknowledgements): what a
    late acknowledgement of a left member may not change."""
    return [(i, t) for i, t in final_history(replica) if replica.event(i).actions]


def leave(net: Net, name: str, to=None) -> Event:
    return net.act(name, [Leave()], market=MEMBERSHIP_MARKET, to=to)


def test_once_a_leave_is_final_finality_goes_on_without_the_leaver():
    """c trades, leaves, acknowledges until its leave is final, then falls silent for
    good. a and b keep trading: every trade becomes final without c, `waiting_for` never
    names c again, c is no member any more (its own replica agrees and stops wanting to
    acknowledge), and the network goes quiet."""
    net = Net("abc")
    c = net.ids["c"]
    net.act("c", [sell(100)])
    net.act("a", [buy(100)])
    gone = leave(net, "c")
    for r in net.replicas.values():
        assert r.outcomes_of(gone.id) == ["left"]
        assert r.is_member(c) and not r.is_final(gone.id)  # not final yet
    net.acks_until_quiet()
    for r in net.replicas.values():
        assert r.is_final(gone.id) and not r.is_member(c) and c not in r.members()
        assert pending_with_actions(r) == []
    assert not net["c"].wants_ack()
    for step in range(6):  # c hears everything and says nothing
        net.act("ab"[step % 2], [sell(101 + step, 1, OrderType.LIMIT)])
        net.act("ba"[step % 2], [buy(101 + step, 1)])
        assert all(c not in r.finality().waiting_for for r in net.replicas.values())
        net.ack_round(signers="ab")
    rounds = 0
    while net.ack_round(signers="ab"):  # c still receives everything
        rounds += 1
        assert rounds <= 3
    for r in net.replicas.values():
        assert pending_with_actions(r) == [] and r.finality().pending_trades == 0
        assert r.finality().waiting_for == [] and r.stats()["late_after_final"] == 0
    assert len({r.digest for r in net.replicas.values()}) == 1
    assert len({tuple(final_history(r)) for r in net.replicas.values()}) == 1


def test_a_leaver_that_falls_silent_before_its_leave_is_final_still_stalls_finality():
    """The rule stops waiting for a leaver only once its leave is final, which takes the
    leaver's own acknowledgements: a member that signs its leave and is never heard from
    again stalls finality like any silent member, and is named."""
    net = Net("abc")
    c = net.ids["c"]
    gone = leave(net, "c")
    taker = None
    for step in range(8):
        net.act("a", [sell(100 + step, 1, OrderType.LIMIT)])
        taker = net.act("b", [buy(100 + step, 1)])
        net.ack_round(signers="ab")
        for r in net.replicas.values():
            assert not r.is_final(gone.id) and not r.is_final(taker.id)
            assert c in r.finality().waiting_for and r.is_member(c)


def late_order_after_leave(check_left: bool) -> tuple[list, list]:
    """c leaves and its leave becomes final; a rests a sell at 100, b's taker buys it
    and that trade is final on a and b. Then c, having missed a's sell, signs an event
    with a sell at 99 below b's taker (its clock is its own last one: no regression,
    Lamport time below the taker's). With `check_left` False the replica's `left` check
    is switched off (the rule deliberately broken). Returns b's final history before and
    after c's late event, and the receipts."""
    net = Net("abc")
    leave(net, "c")
    net.acks_until_quiet()
    assert not net["a"].is_member(net.ids["c"])
    last_of_c = net["a"].events_of(net.ids["c"])[-1]
    for _ in range(3):  # lift a's and b's Lamport times above c's
        net.act("a", [sell(120, 1, OrderType.LIMIT)], to="ab")
        net.ack_round("ab", "ab")
    net.act("a", [sell(100)], to="ab")
    taker = net.act("b", [buy(100)], to="ab")
    net.acks_until_quiet("ab")
    assert net["b"].is_final(taker.id)
    before = final_history(net["b"])
    causes = [last_of_c] + [net["a"].events_of(net.ids[n])[last_of_c.clock[net.ids[n]] - 1]
                            for n in "ab"]  # exactly what c last acknowledged
    late = net.sign("c", last_of_c.seq + 1, causes, MARKET, [sell(99)])
    assert late.key < taker.key
    original = replica_module.Replica._delivery_verdict
    if not check_left:
        def broken(self, event):
            verdict = original(self, event)
            return None if verdict is not None and verdict[0] == "left" else verdict
        replica_module.Replica._delivery_verdict = broken
    try:
        receipt = net["b"].receive(late.raw)
    finally:
        replica_module.Replica._delivery_verdict = original
    return before, final_history(net["b"]), receipt


def test_a_left_member_can_sign_no_more_actions_and_the_check_is_what_keeps_finality():
    """A left member's later event with actions is refused (`left`) and nothing final
    changes. With the check switched off, the same event is delivered, sorts before a
    final taker and takes its trade: the safety check can fail when the rule is broken."""
    before, after, receipt = late_order_after_leave(check_left=True)
    assert (receipt.status, receipt.code) == ("rejected", "left")
    assert after == before
    before, after, receipt = late_order_after_leave(check_left=False)
    assert receipt.status == "delivered"
    assert after[:len(before)] != before  # the broken rule changed a final trade


def test_a_left_members_late_acknowledgements_change_nothing_final():
    """c's leave becomes final on a and b while c has not seen their last
    acknowledgements; c keeps acknowledging what it has (its leave is not final on c
    yet). Those acknowledgements sort before events a and b already hold final: they
    are delivered (they carry no actions), the final histories stay as they were, the
    tripwire stays at zero, and all three converge."""
    net = Net("abc")
    leave(net, "c")
    net.ack_round()
    net.ack_round(signers="c")
    net.ack_round(signers="ab", to="ab")  # c misses the rest
    for name in "ab":
        assert not net[name].is_member(net.ids["c"]), name
    net.act("a", [sell(100)], to="ab")
    taker = net.act("b", [buy(100)], to="ab")
    net.acks_until_quiet("ab")
    finals = {n: final_trading(net[n]) for n in "ab"}
    assert all(net[n].is_final(taker.id) for n in "ab")
    assert not net["c"].is_final(net["c"].events_of(net.ids["c"])[-2].id)
    late, _ = net["c"].create_event(net.keys["c"].private_key, MEMBERSHIP_MARKET, [])
    assert late.key < taker.key
    for name in "ab":
        receipt = net[name].receive(late.raw)
        assert receipt.status == "delivered", receipt
        assert final_trading(net[name]) == finals[name]
        assert net[name].stats()["late_after_final"] == 0
    net.sync()
    net.acks_until_quiet("ab")
    assert len({r.digest for r in net.replicas.values()}) == 1
    assert_final_histories_consistent(net.replicas.values())


def test_a_leaver_that_equivocates_its_leave_splits_nobody_final_history():
    """m signs a leave for one half and a sell for the other at the same seq, then keeps
    acknowledging in both halves. No two honest replicas ever report final histories
    that disagree, and neither version becomes final."""
    net = Net("abcdm", shadows={"m'": "m"})
    honest = [net[n] for n in "abcd"]
    left, right = ["a", "b", "m"], ["c", "d", "m'"]
    net.act("a", [sell(100)], to=[n for n in net.replicas if n != "m'"])
    net.sync()
    net.acks_until_quiet([n for n in net.replicas if n != "m'"])
    net.sync()
    version = leave(net, "m", to=left)
    other = net.act("m'", [sell(98, 2)], to=right)
    assert (version.seq, version.origin) == (other.seq, other.origin)
    net.act("b", [buy(100)], to=left)
    net.act("d", [buy(100)], to=right)
    for _ in range(8):
        acks = net.ack_round(left, left) + net.ack_round(right, right)
        for event in acks:
            targets = right if net["a"].event(event.id) is not None else left
            net.deliver(event, [t for t in targets if t in "abcd"])
        assert_final_histories_consistent(honest)
        for r in honest:
            assert not r.is_final(version.id) and not r.is_final(other.id)


def test_a_newcomer_is_admitted_after_a_member_left_for_good():
    """With c gone for good (its leave final, then silence), a admits n: the join
    becomes final without c, n trades, and its trades become final."""
    net = Net("abc", newcomers="n")
    n = net.ids["n"]
    leave(net, "c")
    net.acks_until_quiet()
    join = net.act("a", [Join(n)], market=MEMBERSHIP_MARKET)
    net.acks_until_quiet("ab")
    for name in "ab":
        assert net[name].is_final(join.id) and net[name].is_member(n), name
    net.sync()
    first = net.act("n", [sell(100)], to="abn")
    taker = net.act("b", [buy(100)], to="abn")
    net.acks_until_quiet("abn")
    for name in "abn":
        r = net[name]
        assert r.is_final(first.id) and r.is_final(taker.id), name
        assert sorted(r.members()) == sorted([net.ids["a"], net.ids["b"], n]), name


def test_a_replica_rebuilt_from_its_events_reports_the_same_leaves_and_finality():
    """Who has left is a function of the delivered events: a replica rebuilt from them
    in another order reports the same frontier, members and finality."""
    net = Net("abc")
    rng = random.Random(3)
    net.act("c", [sell(100)])
    leave(net, "c")
    net.acks_until_quiet()
    net.act("a", [buy(100)])
    net.acks_until_quiet("ab")
    for name, r in net.replicas.items():
        own = [e.raw for e in r.events_of(r.origin)]
        raws = [raw for raw in delivered_raws(r) if raw not in own]
        rng.shuffle(raws)
        rebuilt = Replica(DEFAULT_MARKETS, r.origin, genesis=net.genesis)
        for raw in own[::-1] + raws:
            assert rebuilt.receive(raw).status in ("delivered", "buffered"), name
        assert rebuilt.final_key() == r.final_key(), name
        assert rebuilt.finality() == r.finality(), name
        assert membership_of(rebuilt) == membership_of(r), name
        assert rebuilt.membership.gone == r.membership.gone == {net.ids["c"]}, name
