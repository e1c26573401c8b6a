"""Removing a member that no longer speaks (core/removal.py, protocols/finality.md):
votes and refusals in the log, rounds that die, frozen coverage, the decision and the
cut, judged alike on every replica. Built on test_finality's `Net`: every step is the
test's, nothing reads a clock.
"""

from __future__ import annotations

import random

import pytest
from test_finality import (
    Net,
    PrefixStates,
    assert_final_histories_consistent,
    buy,
    delivered_raws,
    final_history,
    pending_with_actions,
    sell,
)

from p2pexchange.core.events import MEMBERSHIP_MARKET, Event, Join, Vote, sign_event
from p2pexchange.core.replica import Replica


def state(net: Net, name: str, suspects: set[str], to=None) -> Event | None:
    """`name` signs the removal statement its replica says it should, given whom it
    suspects, and sends it (default: to everyone); None if it should say nothing."""
    vote = net[name].removal_statement({net.ids[s] for s in suspects})
    if vote is None:
        return None
    return net.act(name, [vote], MEMBERSHIP_MARKET, to)


def crashed_network() -> tuple[Net, list[str]]:
    """Five members; e signed an order and then crashed for good; a trade since then
    is pending everywhere, waiting for e."""
    net = Net("abcde")
    net.act("e", [sell(99, 1)])
    net.acks_until_quiet()
    net.act("a", [sell(100)])
    net.act("b", [buy(100)], to="abcd")
    live = list("abcd")
    net.ack_round(live, live)
    net.ack_round(live, live)
    for name in live:
        assert pending_with_actions(net[name]), name
        assert net.ids["e"] in net[name].finality().waiting_for
    return net, live


def test_members_remove_a_crashed_member_and_finality_resumes():
    net, live = crashed_network()
    e = net.ids["e"]
    first = state(net, "a", {"e"}, to=live)
    assert first is not None
    vote = first.actions[0]
    assert vote.target == e and vote.round == 0
    assert vote.members == tuple(sorted(net.ids[n] for n in "abcde"))
    # Nobody is removed by one vote, nor by all votes before they are committed.
    for name in "bcd":
        assert state(net, name, {"e"}, to=live) is not None
    assert all(not net[n].removals() for n in live)
    net.acks_until_quiet(live)
    for name in live:
        r = net[name]
        [removal] = r.removals()
        # e's order and its acknowledgement, seen by all, count
        assert removal.member == e and removal.cut == r.clock[e] == 2
        assert not r.is_member(e) and e not in r.finality().waiting_for
        assert not pending_with_actions(r), name
        assert r.stats()["frontier_regressions"] == 0
        assert len(r.trades()) == 2  # e's sell at 99 and a's at 100 both traded
    assert len({net[n].digest for n in live}) == 1
    assert_final_histories_consistent(net[n] for n in live)
    # Trading and finality go on without e.
    net.act("c", [sell(105)], to=live)
    net.act("d", [buy(105)], to=live)
    net.acks_until_quiet(live)
    assert all(not pending_with_actions(net[n]) for n in live)


def test_the_cut_is_the_highest_coverage_among_the_votes():
    """e's last order reached only a before a voted: a's vote covers it, so it counts
    on every replica (the others deliver it as a cause of a's vote)."""
    net, live = crashed_network()
    e = net.ids["e"]
    late = net.act("e", [buy(200, 20)], to="a")
    for name in "bcd":
        vote = state(net, name, {"e"}, to=live)
        assert vote.clock[e] == late.seq - 1
    net.deliver(late, "bcd")  # sync brings it: a's vote names it
    vote = state(net, "a", {"e"}, to=live)
    assert vote.clock[e] == late.seq
    net.acks_until_quiet(live)
    for name in live:
        [removal] = net[name].removals()
        assert removal.cut == late.seq, name
        assert net[name].outcomes_of(late.id) != ["void"]
        assert not pending_with_actions(net[name])
    assert len({net[n].digest for n in live}) == 1
    assert_final_histories_consistent(net[n] for n in live)


def test_events_beyond_the_cut_count_as_empty_wherever_they_were_applied():
    net, live = crashed_network()
    for name in live:
        state(net, name, {"e"}, to=live)
    net.acks_until_quiet(live)
    assert [r.cut for r in net["a"].removals()] == [2]
    # e, back from the dead, signs an order on top of its own chain and a cross.
    late = net.act("e", [buy(200, 20)], to=[])
    assert late.seq == 3
    trades_before = {n: len(net[n].trades()) for n in live}
    for name in live:
        receipt = net[name].receive(late.raw)
        assert receipt.status == "delivered", (name, receipt)
        assert receipt.trades == []
        assert net[name].outcomes_of(late.id) == ["void"]
        assert len(net[name].trades()) == trades_before[name]
    # A replica that delivered the late event before it knew of the removal undoes it.
    fresh = Replica(net["a"].markets, None, genesis=net.genesis)
    raws = [late.raw] + [r for r in delivered_raws(net["b"]) if r != late.raw]
    for raw in sorted(raws, key=lambda r: r != late.raw):
        fresh.receive(raw)
    assert fresh.digest == net["b"].digest
    assert fresh.outcomes_of(late.id) == ["void"]
    assert final_history(fresh) == final_history(net["b"])


def test_a_member_heard_again_is_not_removed_the_round_dies_and_votes_unfreeze():
    """a suspects e (paused); the others hear from e and refuse: the round dies, a's
    vote no longer freezes it, and finality resumes with e."""
    net, live = crashed_network()
    e = net.ids["e"]
    vote = state(net, "a", {"e"})
    assert net["a"].frozen() == [e]
    # e is back: it acknowledges everything; a delivers it but names none of it.
    for raw in delivered_raws(net["a"]):
        net["e"].receive(raw)
    ack = net.act("e", [], MEMBERSHIP_MARKET)
    own = net.act("a", [sell(120, 1)])
    assert own.clock.get(e, 0) == vote.clock[e] < ack.seq  # frozen coverage
    # b hears from e: it refuses in round 0 (it suspects nobody). Then no member can
    # gather the votes of all others in round 0: the round is dead.
    refusal = state(net, "b", set())
    assert refusal is not None and refusal.actions[0].target == b""
    assert net["a"].frozen() == []
    assert all(net[n].removal_statement(set()) is None for n in "abcd")
    net.acks_until_quiet()
    for name in "abcde":
        r = net[name]
        assert r.removals() == [] and r.is_member(e)
        assert not pending_with_actions(r), name
    assert len({net[n].digest for n in "abcde"}) == 1


def test_statements_are_judged_from_their_causal_past():
    net, live = crashed_network()
    ids = net.ids
    members = tuple(sorted(ids[n] for n in "abcde"))
    b_head = net["b"].events_of(ids["b"])[-1]
    heads = [net["b"].events_of(ids[n])[-1] for n in "abcde"]

    def verdict(vote: Vote, seq: int | None = None, causes=heads) -> str | None:
        event = net.sign("b", seq or b_head.seq + 1, causes, MEMBERSHIP_MARKET, [vote])
        receipt = net["c"].receive(event.raw)
        return receipt.code if receipt.status == "rejected" else receipt.status

    assert verdict(Vote(ids["e"], 0, members[:4])) == "bad_vote"  # not the members
    assert verdict(Vote(ids["b"], 0, members)) == "bad_vote"  # itself
    assert verdict(Vote(ids["a"] + b"x", 0, members)) == "bad_vote"  # a stranger
    first = net.act("b", [Vote(ids["e"], 0, members)], MEMBERSHIP_MARKET, to="bc")
    again = net.sign("b", first.seq + 1, [first] + heads[:1] + heads[2:],
                     MEMBERSHIP_MARKET, [Vote(b"", 0, members)])
    assert net["c"].receive(again.raw).code == "double_vote"  # one statement per round
    other = net.sign("b", first.seq + 1, [first] + heads[:1] + heads[2:],
                     MEMBERSHIP_MARKET, [Vote(ids["e"], 1, members)])
    assert net["c"].receive(other.raw).code == "vote_open"
    # b's events may not name more of e than its vote did while the vote stands.
    late = net.act("e", [], MEMBERSHIP_MARKET, to=[])
    assert net["c"].receive(late.raw).status in ("buffered", "delivered")
    net["b"].receive(late.raw)
    unfrozen = net.sign("b", first.seq + 1, [first, late] + [
        net["b"].events_of(ids[n])[-1] for n in "acd"], MEMBERSHIP_MARKET, [])
    assert net["c"].receive(unfrozen.raw).code == "unfrozen"
    # Once the round is dead in its causal past, all of that is allowed again.
    refusals = [net.act(n, [Vote(b"", 0, members)], MEMBERSHIP_MARKET, to="bc")
                for n in "c"]
    assert net["b"].frozen() == []
    fine = net.act("b", [], MEMBERSHIP_MARKET, to="c")
    assert fine.clock[ids["e"]] == late.seq
    assert refusals and net["c"].event(fine.id) is not None


def test_a_second_statement_in_one_round_is_refused():
    net, live = crashed_network()
    ids = net.ids
    members = tuple(sorted(ids[n] for n in "abcde"))
    for n in "cd":  # the round dies at b only through its own earlier statement...
        net.act(n, [Vote(b"", 0, members)], MEMBERSHIP_MARKET, to="bcd")
    first = net.act("b", [Vote(ids["e"], 0, members)], MEMBERSHIP_MARKET, to="bcd")
    double = net.sign("b", first.seq + 1, [net["b"].events_of(ids[n])[-1] for n in "abcde"],
                      MEMBERSHIP_MARKET, [Vote(ids["a"], 0, members)])
    assert net["c"].receive(double.raw).code == "double_vote"


def test_a_replica_rebuilt_from_its_events_reports_the_same_removal_in_any_order():
    net, live = crashed_network()
    for name in live:
        state(net, name, {"e"}, to=live)
    net.acks_until_quiet(live)
    raws = delivered_raws(net["c"])
    for order in (raws, raws[::-1], sorted(raws)):
        rebuilt = Replica(net["c"].markets, None, genesis=net.genesis)
        rebuilt.receive_many(order)
        assert rebuilt.digest == net["c"].digest
        assert rebuilt.removals() == net["c"].removals()
        assert final_history(rebuilt) == final_history(net["c"])


def test_the_founder_of_a_network_can_be_removed_by_those_it_admitted():
    """A network founded by one member, the others admitted by joins: when the founder
    is removed, the stretch before the first join is waited on by nobody, and finality
    goes on with the members it admitted."""
    net = Net("f", newcomers="abc")
    founder = net.ids["f"]
    for name in "abc":
        net.act("f", [Join(net.ids[name])], MEMBERSHIP_MARKET)
        net.acks_until_quiet()
        assert net[name].is_member(net.ids[name]), name
    net.acks_until_quiet()
    live = "abc"
    net.act("a", [sell(100)], to=live)
    net.act("b", [buy(100)], to=live)
    for name in live:
        state(net, name, {"f"}, to=live)
    net.acks_until_quiet(live)
    for name in live:
        assert [r.member for r in net[name].removals()] == [founder]
        assert not pending_with_actions(net[name]) and net[name].final_key() is not None
    assert len({net[n].digest for n in live}) == 1


def test_a_proof_of_equivocation_is_checked_before_it_is_kept():
    """The proofs topic's decoder (net/wire.py) verifies both events and that they are
    two versions of one (origin, seq); the replica keeps a proof once."""
    from p2pexchange.net import wire

    net = Net("abc")
    one = net.act("a", [sell(100)])
    clock = {o: (s, one.heads[o]) for o, s in one.clock.items()}
    two = sign_event(net.keys["a"].private_key, net.ids["a"], one.seq, clock, one.lamport,
                     "BTC-USD", [sell(101)])
    first, second = wire.decode_proof(wire.encode_proof(one.raw, two.raw))
    assert (first.id, second.id) == (one.id, two.id)
    later = net.act("a", [sell(102)])
    for bad in (wire.encode_proof(one.raw, one.raw), wire.encode_proof(one.raw, later.raw),
                wire.encode_proof(one.raw, two.raw[:-1] + bytes([two.raw[-1] ^ 1])),
                wire.encode_proof(one.raw, b"\x00" * (64 * 1024 + 1))):
        with pytest.raises(wire.WireError) as refused:
            wire.decode_proof(bad)
        assert refused.value.code in ("bad_proof", "bad_type"), refused.value.code
    replica = net["b"]
    assert replica.note_equivocation(first, second) and not replica.note_equivocation(
        first, second)
    assert replica.equivocators() == {net.ids["a"]}
    assert replica.digest == net["c"].digest  # a proof changes nothing else


@pytest.mark.parametrize("seed", range(12))
def test_a_removal_whose_votes_are_final_is_decided_alike_wherever_they_are_final(seed):
    """What a snapshot of the final prefix needs (docs/snapshot_design.md, "What a
    newcomer must judge"): removals are decided over everything a replica delivered, so
    a snapshot can record a removal only if every replica holding its votes final has
    decided it, with the same cut. Random runs: the live members state (mostly against
    e, sometimes refusing) to random subsets, acknowledge in partial rounds, sync
    pairwise; e sometimes comes back to some of them, with an order or an
    acknowledgement (its rounds may die, or its events be void). After every step, for
    every removal decided anywhere, every replica on which all of its votes are
    delivered and final has decided it with that cut. (With the cut taken as what a
    replica delivered of e, instead of what the votes cover, 5 of the 12 seeds fail.)
    And the live replicas' prefix states agree (`PrefixStates`), removals included."""
    rng = random.Random(seed)
    net, live = crashed_network()
    prefixes = PrefixStates(rng)
    decided: dict[tuple[bytes, int], list[bytes]] = {}  # (member, cut) -> vote ids
    checked = 0

    def check() -> None:
        nonlocal checked
        for name in live:
            for removal in net[name].removals():
                decided[(removal.member, removal.cut)] = [v.id for v in removal.votes]
        for name in live:
            r = net[name]
            frontier = r.final_key()
            mine = {x.member: x.cut for x in r.removals()}
            for (member, cut), votes in decided.items():
                held = [r.event(v) for v in votes]
                if frontier is not None and all(e is not None and e.key <= frontier
                                                for e in held):
                    assert mine.get(member) == cut, (name, cut, mine)
                    checked += 1
        prefixes.check(net[n] for n in live)

    def some(names: list[str]) -> list[str]:
        return rng.sample(names, rng.randrange(len(names) + 1))

    for _ in range(150):
        roll = rng.random()
        if roll < 0.35:
            name = rng.choice(live)
            state(net, name, {"e"} if rng.random() < 0.8 else set(), to=some(live))
        elif roll < 0.7:  # a round that some miss, or one that reaches every live member
            net.ack_round(some(live), live if rng.random() < 0.5 else some(live))
        elif roll < 0.96:
            src, dst = rng.sample(live, 2)
            net[dst].receive_many(net[src].events_for(net[dst].clock, 100_000))
        else:  # e is heard again by some (its rounds may die, or its events be void)
            src = rng.choice(live)
            net["e"].receive_many(net[src].events_for(net["e"].clock, 100_000))
            if rng.random() < 0.5:
                net.act("e", [sell(98, 1)], to=some(live))
            else:
                net.act("e", [], MEMBERSHIP_MARKET, to=some(live))
        check()
    net.sync(live)
    net.acks_until_quiet(live)
    check()
    for name in live:
        assert net[name].stats()["frontier_regressions"] == 0
    assert len({net[n].digest for n in live}) == 1
    assert_final_histories_consistent(net[n] for n in live)
    assert checked > 0 and decided  # some removal was decided and checked
    assert any(state[0].removed for state in prefixes.seen.values())
