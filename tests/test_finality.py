"""Finality that never lies (core/finality.py): the attacks and failures of issue 10
reproduced at the replica API, and the two-round all-member commit rule.

Every test builds a few replicas over one genesis, hands events to chosen replicas
(`Net.deliver`) and drives acknowledgement rounds explicitly (`Net.ack_round`): every
named replica that `wants_ack()` signs an empty event, then the acknowledgements go
to the chosen replicas. Nothing reads a clock; the order of every step is the test's.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Iterable, Mapping

import pytest

from p2pexchange.core.clock import OrderKey
from p2pexchange.core.events import (
    MEMBERSHIP_MARKET,
    SEQ_MAX,
    Action,
    Cancel,
    Event,
    Join,
    OrderType,
    Place,
    Side,
    decode_event,
    sign_event,
)
from p2pexchange.core.finality import MEMBERS_MAX, Membership, covers
from p2pexchange.core.market import DEFAULT_MARKETS
from p2pexchange.core.orders import Trade
from p2pexchange.core.replica import Receipt, Replica
from p2pexchange.sim.workload import peer_id_bytes, seeded_key_pair

MARKET = "BTC-USD"
ROUNDS_TO_QUIET_MAX = 8  # acknowledgement rounds a healthy network needs, with margin


def sell(price: int, qty: int = 5, kind: OrderType = OrderType.LIMIT) -> Place:
    return Place(Side.SELL, kind, price, qty)


def buy(price: int, qty: int = 5, kind: OrderType = OrderType.IOC) -> Place:
    return Place(Side.BUY, kind, price, qty)


class Net:
    """Named peers (a key each) and named replicas over one genesis. A replica is named
    after the peer whose key it signs with, or given another name in `shadows` (a
    dishonest peer running two replicas to equivocate)."""

    def __init__(self, members: str, *, newcomers: str = "", without_replica: str = "",
                 shadows: Mapping[str, str] | None = None) -> None:
        self.keys = {n: seeded_key_pair(f"finality-{n}") for n in members + newcomers}
        self.ids = {n: peer_id_bytes(k) for n, k in self.keys.items()}
        self.genesis = [self.ids[n] for n in members]
        self.owner = {n: n for n in members + newcomers if n not in without_replica}
        self.owner.update(shadows or {})
        self.replicas = {name: Replica(DEFAULT_MARKETS, self.ids[peer], genesis=self.genesis)
                         for name, peer in self.owner.items()}

    def __getitem__(self, name: str) -> Replica:
        return self.replicas[name]

    def act(self, name: str, actions: list[Action], market: str = MARKET,
            to: Iterable[str] | None = None) -> Event:
        """`name` creates an event on its replica; it goes to `to` (default: everyone)."""
        event, _ = self[name].create_event(self.keys[self.owner[name]].private_key, market,
                                           actions)
        self.deliver(event, self.replicas if to is None else to)
        return event

    def sign(self, peer: str, seq: int, causes: Iterable[Event], market: str,
             actions: list[Action], lamport: int | None = None) -> Event:
        """An event signed by hand: its clock names exactly `causes` (the latest event of
        each origin), its Lamport time the consistent one unless given."""
        causes = list(causes)
        clock = {c.origin: (c.seq, c.id) for c in causes}
        if lamport is None:
            lamport = 1 + max((c.lamport for c in causes), default=0)
        return sign_event(self.keys[peer].private_key, self.ids[peer], seq, clock, lamport,
                          market, actions)

    def deliver(self, event: Event, to: Iterable[str]) -> dict[str, Receipt]:
        """Hand `event`'s raw bytes to each named replica; their receipts."""
        return {name: self[name].receive(event.raw) for name in to}

    def ack_round(self, signers: Iterable[str] | None = None,
                  to: Iterable[str] | None = None, *, everyone: bool = False) -> list[Event]:
        """Every named signer that wants_ack() (with `everyone`: every named signer) signs
        an acknowledgement, all before any is delivered (one synchronous round); each
        goes to `to` (default: everyone)."""
        signers = list(self.replicas if signers is None else signers)
        to = list(self.replicas if to is None else to)
        acks = []
        for name in signers:
            if everyone or self[name].wants_ack():
                ack, _ = self[name].create_event(self.keys[self.owner[name]].private_key,
                                                 MEMBERSHIP_MARKET, [])
                acks.append((name, ack))
        for name, ack in acks:
            for receipt in self.deliver(ack, [n for n in to if n != name]).values():
                assert receipt.status != "rejected", receipt
        return [ack for _, ack in acks]

    def acks_until_quiet(self, names: Iterable[str] | None = None) -> int:
        """Acknowledgement rounds among `names` until nobody wants to ack; how many."""
        names = list(self.replicas if names is None else names)
        for rounds in range(ROUNDS_TO_QUIET_MAX + 1):
            if not self.ack_round(names, names):
                return rounds
        raise AssertionError(f"not quiet after {ROUNDS_TO_QUIET_MAX} rounds")

    def sync(self, names: Iterable[str] | None = None) -> None:
        """Every named replica hands every other what it lacks (the sync protocol)."""
        names = list(self.replicas if names is None else names)
        for src in names:
            for dst in names:
                if src != dst:
                    raws = self[src].events_for(self[dst].clock, 100_000)
                    for receipt in self[dst].receive_many(raws):
                        assert receipt.status in ("delivered", "duplicate"), receipt


def final_history(replica: Replica) -> list[tuple[bytes, tuple[Trade, ...]]]:
    """The final prefix of the applied order: each event id with the trades it made."""
    frontier = replica.final_key()
    if frontier is None:
        return []
    history = []
    for event_id in replica.applied_ids():
        if replica.event(event_id).key > frontier:
            break
        history.append((event_id, tuple(replica.trades_of(event_id))))
    return history


def assert_final_histories_consistent(replicas: Iterable[Replica]) -> None:
    """No two replicas report final histories that disagree: one is a prefix of the other."""
    histories = [final_history(r) for r in replicas]
    for one in histories:
        for other in histories:
            shorter, longer = sorted((one, other), key=len)
            assert longer[:len(shorter)] == shorter


def pending_with_actions(replica: Replica) -> list[bytes]:
    return [i for i in replica.applied_ids()
            if replica.event(i).actions and not replica.is_final(i)]


def delivered_raws(replica: Replica) -> list[bytes]:
    return [e.raw for origin in replica.clock for e in replica.events_of(origin)]


def membership_of(replica: Replica) -> tuple:
    """Everything the replica says about membership, once finality is computed: the
    effective members in order, whom the rule waits for, and who was refused."""
    replica.final_key()
    membership = replica.membership
    return (tuple(sorted(replica.members())), tuple(sorted(membership.members)),
            tuple(sorted(membership.effective)), tuple(sorted(membership.refused)))


def one_round_final_key(replica: Replica) -> OrderKey | None:
    """What a ONE-round rule would call final here: the highest event every member's
    head covers (round one alone), and everything that sorts before it."""
    heads = {}
    for member in replica.members():
        chain = replica.events_of(member)
        if not chain:
            return None
        heads[member] = chain[-1]
    best = None
    for p in heads:
        w = min(h.seq if h.origin == p else h.clock.get(p, 0) for h in heads.values())
        if w > 0:
            key = replica.events_of(p)[w - 1].key
            best = key if best is None or key > best else best
    return best


# ---------------------------------------------------------------------------
# 1. The basic rule: two rounds from all members, then quiet


def test_a_trade_is_final_everywhere_only_after_two_ack_rounds_from_all_members():
    """The rule: after one round in which every member acknowledges a trade it is final
    nowhere, and `waiting_for` names every member (none covers all the others'
    acknowledgements); after a second round it is final everywhere, nothing with actions
    is pending and nobody wants to acknowledge any more (quiescence)."""
    net = Net("abc")
    c = net.ids["c"]
    maker = net.act("a", [sell(100)])
    taker = net.act("b", [buy(100)])
    for r in net.replicas.values():
        assert len(r.trades()) == 1 and not r.is_final(taker.id) and r.final_key() is None
        assert r.finality().waiting_for == [c]  # a and b cover the trade; c never spoke
    assert len(net.ack_round(everyone=True)) == 3
    for r in net.replicas.values():
        assert not r.is_final(maker.id) and not r.is_final(taker.id)
        report = r.finality()
        assert report.pending_trades == 1 and report.final_trades == 0
        assert sorted(report.waiting_for) == sorted(net.genesis)
    assert len(net.ack_round(everyone=True)) == 3
    for r in net.replicas.values():
        assert r.is_final(maker.id) and r.is_final(taker.id)
        report = r.finality()
        assert report.pending_trades == 0 and report.final_trades == 1
        assert report.waiting_for == [] and pending_with_actions(r) == []
        assert not r.wants_ack()
    assert net.ack_round() == []  # quiescence: no acknowledgements of acknowledgements
    assert len({r.digest for r in net.replicas.values()}) == 1
    assert_final_histories_consistent(net.replicas.values())


def acknowledged_twice(replica: Replica, event: Event) -> bool:
    """Whether every member has an event covering `event` (its acknowledgement, or the
    event itself) and every member's latest event covers all those acknowledgements."""
    firsts = []
    for member in replica.members():
        chain = replica.events_of(member)
        first = next((e for e in chain if covers(e, event.origin, event.seq)), None)
        if first is None:
            return False
        firsts.append(first)
    heads = [replica.events_of(member)[-1] for member in replica.members()]
    return all(covers(h, f.origin, f.seq) for h in heads for f in firsts)


def test_acks_signed_when_wanted_make_a_trade_final_exactly_when_acknowledged_twice():
    """Driven by wants_ack() alone, a trade is final on a replica exactly when that
    replica holds two rounds of acknowledgements of it from all members (checked against
    the events, after every round), within a few rounds; then the network goes quiet."""
    net = Net("abc")
    net.act("a", [sell(100)])
    taker = net.act("b", [buy(100)])
    rounds = 0
    while net.ack_round():
        rounds += 1
        assert rounds <= ROUNDS_TO_QUIET_MAX
        for r in net.replicas.values():
            assert r.is_final(taker.id) == acknowledged_twice(r, taker)
            if rounds == 1:
                assert not r.is_final(taker.id)
                assert r.finality().waiting_for
    assert 2 <= rounds <= 3
    for r in net.replicas.values():
        assert r.is_final(taker.id) and not r.wants_ack()
        assert pending_with_actions(r) == [] and r.finality().waiting_for == []


def test_every_trade_of_a_busy_exchange_ends_final_and_the_network_goes_quiet():
    """Several traders, several rounds of trading interleaved with acknowledgements:
    the final prefixes never disagree, and once trading stops everything becomes final
    within a bounded number of rounds and the acknowledgements stop."""
    net = Net("abcd")
    rng = random.Random(10)
    for step in range(12):
        name = "abcd"[step % 4]
        side = rng.choice((Side.BUY, Side.SELL))
        net.act(name, [Place(side, OrderType.LIMIT, rng.randint(98, 102), rng.randint(1, 4))])
        if step % 3 == 2:
            net.ack_round()
        assert_final_histories_consistent(net.replicas.values())
    assert net.acks_until_quiet() <= 3
    for r in net.replicas.values():
        assert pending_with_actions(r) == [] and r.finality().pending_trades == 0
        assert r.stats()["late_after_final"] == 0
    assert len({r.digest for r in net.replicas.values()}) == 1
    assert len({tuple(final_history(r)) for r in net.replicas.values()}) == 1


# ---------------------------------------------------------------------------
# 2. Silence and partitions stall finality; they never change it


def test_a_silent_member_stalls_finality_forever_and_is_named():
    """A member that never acknowledges (it receives everything, heartbeats claim it is
    alive) holds finality back on every replica through many rounds of trading and
    acknowledgements; `waiting_for` names it."""
    net = Net("abc")
    c = net.ids["c"]
    net.act("a", [sell(100)])
    net.act("b", [buy(100)])
    for step in range(20):
        if step % 5 == 0:
            net.act("ab"[step % 2], [sell(101 + step, 1, OrderType.LIMIT)])
        net.ack_round(signers="ab")
        for name, r in net.replicas.items():
            if name != "c":  # c claims events of its own that nobody has
                assert r.on_heartbeat(c, {**r.clock, c: 5}) is None
            assert r.final_key() is None, name
            assert c in r.finality().waiting_for
            assert pending_with_actions(r) == [i for i in r.applied_ids()
                                               if r.event(i).actions]
    assert net["a"].events_of(c) == []


def test_waiting_for_names_a_silent_member_rather_than_a_candidate_it_keeps_out():
    """c is silent while a admits n: finality (and so n's join) waits for c. The status
    names c, the member that could move it, not n, which may not speak before its join
    is decided."""
    net = Net("abc", newcomers="n")
    net.act("a", [sell(100)], to="ab")
    net.act("a", [Join(net.ids["n"])], market=MEMBERSHIP_MARKET, to="ab")
    net.act("b", [buy(100)], to="ab")
    for _ in range(4):
        net.ack_round(signers="ab", to="ab")
        for name in "ab":
            assert net[name].finality().waiting_for == [net.ids["c"]], name
            assert net[name].final_key() is None


def test_a_partitioned_member_changes_nothing_final_and_all_converges_after_the_heal():
    """d is cut off for many rounds while both sides trade and acknowledge among
    themselves: no replica's final history changes. After the heal (sync both ways)
    every replica converges to one history and all of it becomes final."""
    net = Net("abcd")
    net.act("a", [sell(100)])
    net.act("b", [buy(100, 2)])
    net.acks_until_quiet()
    before = {n: (r.final_key(), final_history(r)) for n, r in net.replicas.items()}
    assert all(history for _, history in before.values())
    majority, minority = "abc", "d"
    for step in range(15):
        if step % 3 == 0:
            net.act("abc"[step % 3], [buy(100, 1)], to=majority)  # takes a's remaining lots
            net.act("d", [sell(99 - step, 1, OrderType.LIMIT)], to=minority)
        net.ack_round(majority, majority)
        net.ack_round(minority, minority)
        for name, r in net.replicas.items():
            assert (r.final_key(), final_history(r)) == before[name], (name, step)
            assert r.finality().waiting_for
    net.sync()
    net.acks_until_quiet()
    assert len({r.digest for r in net.replicas.values()}) == 1
    histories = {tuple(final_history(r)) for r in net.replicas.values()}
    assert len(histories) == 1
    (history,) = histories
    for name, r in net.replicas.items():
        assert pending_with_actions(r) == [] and r.finality().waiting_for == []
        assert list(history[:len(before[name][1])]) == before[name][1]
        assert r.stats()["late_after_final"] == 0


# ---------------------------------------------------------------------------
# 3. Backdating


def test_a_member_that_acknowledged_a_trade_cannot_backdate_an_event_below_it():
    """Issue 10's backdating: honest a rests a sell at 100, b's IOC buy takes it, m's
    acknowledgement covers both. m's next event with a clock naming only its own previous
    event is refused (`clock_regression`; with a Lamport time below the trade,
    `bad_lamport`); its next legal event sorts after the trade and changes nothing."""
    net = Net("abm")
    net.act("a", [sell(100)])
    taker = net.act("b", [buy(100)])
    (m_ack,) = net.ack_round(signers="m")
    assert (m_ack.seq, m_ack.clock) == (1, {net.ids["a"]: 1, net.ids["b"]: 1})

    def attempt_backdating() -> None:
        m_last = net["m"].events_of(net.ids["m"])[-1]
        backdated = net.sign("m", m_last.seq + 1, [m_last], MARKET, [sell(99)])
        assert backdated.clock == {net.ids["m"]: m_last.seq}
        low = net.sign("m", m_last.seq + 1, [m_last], MARKET, [sell(98)],
                       lamport=taker.lamport - 1)
        for name in "ab":
            before = (net[name].applied_ids(), net[name].stats()["events_reapplied"])
            assert net[name].precheck(backdated) == "clock_regression"
            assert net[name].receive(backdated.raw).code == "clock_regression"
            assert net[name].receive(low.raw).code == "bad_lamport"
            assert (net[name].applied_ids(), net[name].stats()["events_reapplied"]) == before

    attempt_backdating()  # right after m's acknowledgement: seq 2 naming only seq 1
    net.acks_until_quiet()
    assert all(r.is_final(taker.id) for r in net.replicas.values())
    attempt_backdating()  # and once the trade is final
    before = {n: (final_history(r), r.stats()["events_reapplied"])
              for n, r in net.replicas.items()}
    legal = net.act("m", [sell(99)])
    assert legal.key > taker.key
    for name, r in net.replicas.items():
        assert final_history(r)[:len(before[name][0])] == before[name][0]
        assert r.stats()["events_reapplied"] == before[name][1]
        assert r.trades_of(taker.id)[0].price == 100


def test_without_the_members_ack_the_trade_was_never_final_and_backdating_undoes_nothing_final():
    """The variant where m had not acknowledged the trade: it was final on no replica,
    however many rounds a and b ran. m's backdated sell is legal (its clock is what m had
    last seen), sorts below the trade and changes it, but every final history stays a
    prefix of the new one and nothing final is reapplied differently."""
    net = Net("abm")
    net.act("a", [Place(Side.BUY, OrderType.LIMIT, 50, 1)])
    net.acks_until_quiet()  # m took part: an early prefix is final everywhere
    m_last = net["m"].events_of(net.ids["m"])[-1]
    maker = net.act("a", [sell(100)])
    taker = net.act("b", [buy(100)])
    for _ in range(6):
        net.ack_round(signers="ab")  # m stays quiet
    before = {}
    for name, r in net.replicas.items():
        assert not r.is_final(maker.id) and not r.is_final(taker.id), name
        assert net.ids["m"] in r.finality().waiting_for
        assert r.trades_of(taker.id)[0].maker_origin == net.ids["a"]
        before[name] = final_history(r)
        assert before[name]
    causes = [net["m"].event(i) for i in m_last.heads.values()] + [m_last]
    backdated = net.sign("m", m_last.seq + 1, causes, MARKET, [sell(99)])
    assert backdated.key < taker.key  # legal, and it sorts below the trade
    for name, receipt in net.deliver(backdated, "abm").items():
        assert receipt.status == "delivered" and receipt.rolled_back > 0, name
    for name, r in net.replicas.items():
        (trade,) = r.trades_of(taker.id)
        assert (trade.maker_origin, trade.price) == (net.ids["m"], 99)  # not final: changed
        assert final_history(r)[:len(before[name])] == before[name]
        assert r.stats()["late_after_final"] == 0
    net.acks_until_quiet()
    assert len({tuple(final_history(r)) for r in net.replicas.values()}) == 1
    assert all(r.is_final(taker.id) for r in net.replicas.values())


# ---------------------------------------------------------------------------
# 4. Newcomers


def test_a_stranger_cannot_rewrite_history_with_an_early_first_event():
    """A fresh key's first event with an empty clock and Lamport time 1 would sort before
    everything; a replica that applied many events refuses it (`not_member`) and rolls
    nothing back."""
    net = Net("abc", newcomers="x")
    for price in (100, 101, 102):
        net.act("a", [sell(price, 2, OrderType.LIMIT)], to="abc")
        net.act("b", [buy(price, 2)], to="abc")
    net.acks_until_quiet("abc")
    replica = net["a"]
    before = (replica.applied_ids(), replica.digest, replica.final_key(),
              replica.stats()["events_reapplied"], replica.stats()["rollbacks"])
    early = net.sign("x", 1, [], MARKET, [sell(1, 100)])
    assert early.lamport == 1
    assert replica.precheck(early) == "not_member"
    receipt = replica.receive(early.raw)
    assert (receipt.status, receipt.code, receipt.rolled_back) == ("rejected", "not_member", 0)
    assert (replica.applied_ids(), replica.digest, replica.final_key(),
            replica.stats()["events_reapplied"], replica.stats()["rollbacks"]) == before
    assert not replica.is_member(net.ids["x"])


def test_a_newcomer_is_admitted_only_by_a_first_event_that_covers_its_join():
    """After a joins n, n is a candidate: finality waits for it from the join on, but it
    is no member (`is_member` is False, `members()` lists the genesis only) until the
    join is final. Then it is effective. n's first event whose clock does not cover the
    join is refused (`not_member`); one that covers it is delivered and sorts after the
    join. What sorts after the join waits for n until n acknowledges (waiting_for names
    n once the join is final, and before that the members whose acknowledgements the
    join needs); what sorts up to the join does not (n's events all sort after it)."""
    net = Net("abc", newcomers="n")
    n = net.ids["n"]
    maker = net.act("a", [sell(100)])
    taker = net.act("b", [buy(100, 2)])
    join = net.act("a", [Join(n)], market=MEMBERSHIP_MARKET)
    after = net.act("b", [sell(102)])
    for r in net.replicas.values():
        assert not r.is_final(join.id)
        assert not r.is_member(n) and r.members() == sorted(net.genesis)  # candidate
        assert list(r.membership.members) == sorted(net.genesis) + [n]  # waited for
        assert r.outcomes_of(join.id) == ["joined"]
        # c has not spoken: it holds finality (and the join) back, not n, which cannot
        # speak before its join is decided.
        assert r.finality().waiting_for == [net.ids["c"]]
    for _ in range(5):
        net.ack_round(signers="abc")
        for name, r in net.replicas.items():
            # Until the join is final, what holds it (and n, which cannot speak before)
            # back is the acknowledgements of a, b and c; from then on n itself.
            waiting = r.finality().waiting_for
            assert (n in waiting) == r.is_final(join.id), (name, waiting)
            assert waiting, name
            assert not r.is_final(after.id)
            assert r.final_key() is None or r.final_key() <= join.key
            assert r.is_member(n) == r.is_final(join.id), name  # effective once final
    for r in net.replicas.values():
        assert r.is_final(taker.id) and r.is_final(join.id)  # both sort before n's events
        assert r.is_member(n) and r.members() == sorted(net.genesis) + [n]
        assert r.membership.refused == set()
    early = net.sign("n", 1, [maker, taker], MARKET, [sell(101)])  # misses the join
    for name, receipt in net.deliver(early, "abc").items():
        assert (receipt.status, receipt.code) == ("rejected", "not_member"), name
    first = net.act("n", [sell(101)])
    assert first.clock[net.ids["a"]] >= join.seq and first.key > join.key
    for name, r in net.replicas.items():
        assert r.event(first.id) is not None, name
    net.acks_until_quiet()
    for r in net.replicas.values():
        assert r.is_final(first.id) and r.is_final(taker.id)
        assert r.finality().waiting_for == [] and pending_with_actions(r) == []
    assert len({r.digest for r in net.replicas.values()}) == 1


def test_a_newcomers_early_first_event_is_parked_and_delivered_by_what_makes_its_join_final():
    """n's first event covers its join but arrives before the join is final: it is
    neither refused nor delivered but parked (status "buffered", no code, counted in
    `usage()["parked"]`), on every replica, however often it comes again. It is
    delivered exactly when the join becomes final, in the receipt of the event that
    made it final (the acknowledgement, delivered with it); then finality waits for n
    and moves on once n acknowledges."""
    net = Net("abc", newcomers="n")
    n = net.ids["n"]
    net.act("a", [sell(100)])
    join = net.act("a", [Join(n)], market=MEMBERSHIP_MARKET)
    first = net.sign("n", 1, [join], MARKET, [sell(101)])  # covers the join, and all a did
    assert first.clock == {net.ids["a"]: join.seq}
    for name in "abcn":
        r = net[name]
        assert r.precheck(first) is None  # waiting is no fault: gossip forwards it
        for _ in range(2):  # a repeat is parked again, never counted twice
            receipt = r.receive(first.raw)
            assert (receipt.status, receipt.code, receipt.delivered) == ("buffered", None, [])
        assert r.event(first.id) is None and r.events_of(n) == []
        assert r.usage()["parked"] == 1 and r.usage()["parked_max"] >= 1
        assert r.stats()["rejected"] == {} and r.stats()["parked_dropped"] == 0
        assert not r.is_member(n) and not r.is_final(join.id)
    released = {}
    for _ in range(ROUNDS_TO_QUIET_MAX):
        if len(released) == 4:
            break
        acks = []
        for name in "abc":
            if net[name].wants_ack():
                was_final = net[name].is_final(join.id)
                ack, receipt = net[name].create_event(net.keys[name].private_key,
                                                      MEMBERSHIP_MARKET, [])
                acks.append((name, ack))
                if first in receipt.delivered:
                    assert not was_final and net[name].is_final(join.id), name
                    assert receipt.delivered == [ack, first], name
                    released[name] = ack
        for name, ack in acks:
            for dst in [d for d in "abcn" if d != name]:
                r = net[dst]
                was_final = r.is_final(join.id)
                receipt = r.receive(ack.raw)
                assert receipt.status == "delivered", receipt
                now_final = r.is_final(join.id)
                # Delivered exactly by the event that made the join final here.
                assert (first in receipt.delivered) == (not was_final and now_final), dst
                if first in receipt.delivered:
                    assert receipt.delivered == [ack, first] and dst not in released
                    released[dst] = ack
                assert (r.event(first.id) is not None) == now_final == r.is_member(n), dst
    assert sorted(released) == list("abcn")
    for r in net.replicas.values():
        assert r.events_of(n) == [first] and r.usage()["parked"] == 0
        assert r.is_final(join.id) and not r.is_final(first.id)
        assert r.finality().waiting_for == sorted(net.genesis)  # n's head covers it
    net.acks_until_quiet()
    for r in net.replicas.values():
        assert r.is_final(first.id) and r.finality().waiting_for == []
        assert r.stats()["rejected"] == {} and r.stats()["late_after_final"] == 0
    assert len({r.digest for r in net.replicas.values()}) == 1


def test_a_joined_newcomer_that_stays_silent_stalls_finality():
    """Admission adds a member the rule must hear from: a newcomer that never speaks
    holds back everything that sorts after its join, on every replica."""
    net = Net("ab", newcomers="n")
    net.act("a", [sell(100)])
    net.acks_until_quiet("ab")
    frontier = {name: net[name].final_key() for name in "ab"}
    join = net.act("b", [Join(net.ids["n"])], market=MEMBERSHIP_MARKET, to="ab")
    taker = net.act("a", [buy(100)], to="ab")
    for _ in range(6):
        net.ack_round("ab", "ab")
    for name in "ab":
        r = net[name]
        assert frontier[name] <= r.final_key() <= join.key
        assert not r.is_final(taker.id)
        assert r.finality().waiting_for == [net.ids["n"]]


CROWD = 80  # newcomers joined by two concurrent events: more than MEMBERS_MAX allows
CROWD_ROUNDS_MAX = 12  # rounds until both joins are final, with margin


def sign_like(replica: Replica, key_pair, market: str, actions: list[Action]) -> Event:
    """The next event a peer in sync with `replica` would sign (as `create_event` does):
    its clock names all `replica` delivered, its Lamport time is one above."""
    origin = peer_id_bytes(key_pair)
    clock = {o: (s, replica.events_of(o)[s - 1].id) for o, s in replica.clock.items()}
    return sign_event(key_pair.private_key, origin, replica.clock.get(origin, 0) + 1, clock,
                      replica.lamport + 1, market, actions)


def crowded_network() -> tuple[Net, dict[str, Replica], list, list[bytes]]:
    """Genesis a and b join 45 and 45 of `CROWD` newcomers (10 joined by both) in two
    concurrent events. Observers x and y receive the joins in opposite orders, and every
    later event too (y: each round's in reverse). Each round, every effective newcomer
    and then a and b acknowledge, until both joins are final everywhere: the newcomers
    of the join that sorts first must acknowledge the other (it sorts after theirs).
    Returns the net, every replica by name, the newcomers' keys and their ids in
    decision order (the total order of their earliest join, then id)."""
    net = Net("ab")
    crowd = [seeded_key_pair(f"finality-crowd-{i}") for i in range(CROWD)]
    ids = [peer_id_bytes(k) for k in crowd]
    join_a = net.act("a", [Join(m) for m in ids[:45]], market=MEMBERSHIP_MARKET, to="a")
    join_b = net.act("b", [Join(m) for m in ids[35:]], market=MEMBERSHIP_MARKET, to="b")
    assert join_a.lamport == join_b.lamport  # concurrent: the origin bytes order them
    net.deliver(join_b, "a")
    net.deliver(join_a, "b")
    x = Replica(DEFAULT_MARKETS, genesis=net.genesis)
    y = Replica(DEFAULT_MARKETS, genesis=net.genesis)
    replicas = {"a": net["a"], "b": net["b"], "x": x, "y": y}

    def spread(events: list[Event], to: Iterable[str]) -> None:
        for name in to:
            for event in events:
                assert replicas[name].receive(event.raw).status in ("delivered", "buffered")
        for event in reversed(events):
            assert y.receive(event.raw).status in ("delivered", "buffered")

    spread([join_a, join_b], "x")
    for r in replicas.values():
        assert r.members() == sorted(net.genesis) and r.membership.refused == set()
        assert len(r.membership.members) == 2 + CROWD  # all candidates, all waited for
    for _ in range(CROWD_ROUNDS_MAX):
        if all(r.is_final(join_a.id) and r.is_final(join_b.id) for r in replicas.values()):
            break
        assert len({membership_of(r) for r in replicas.values()}) == 1
        spread([sign_like(net["a"], k, MEMBERSHIP_MARKET, []) for k in crowd
                if net["a"].is_member(peer_id_bytes(k))], "abx")
        spread(net.ack_round("ab", "ab", everyone=True), "x")
    else:
        raise AssertionError(f"joins not final after {CROWD_ROUNDS_MAX} rounds")
    earliest = {}
    for join in sorted((join_a, join_b), key=lambda e: e.key, reverse=True):
        earliest.update((action.member, join.key) for action in join.actions)
    order = [m for _, m in sorted((k, m) for m, k in earliest.items())]
    return net, replicas, crowd, order


def test_a_join_beyond_members_max_is_refused_alike_on_every_replica_whatever_the_order():
    """Once the joins are final they are decided in the total order: the first
    MEMBERS_MAX - 2 newcomers become effective, the 65th member and everyone after are
    refused, and finality stops waiting for them. Replicas that received the joins and
    acknowledgements in different orders agree on effective, refused and digest. A refused
    newcomer's first event is refused (`not_member`), parked or not; an effective one's
    is delivered, parked first where it came early."""
    net, replicas, crowd, order = crowded_network()
    x = replicas["x"]
    admitted, refused = order[:MEMBERS_MAX - 2], order[MEMBERS_MAX - 2:]
    assert len(refused) == CROWD + 2 - MEMBERS_MAX
    for name, r in replicas.items():
        assert sorted(r.members()) == sorted(net.genesis + admitted), name
        assert r.membership.effective == set(net.genesis + admitted), name
        assert r.membership.refused == set(refused), name
        assert sorted(r.membership.members) == sorted(r.members()), name  # no candidate
        assert not r.is_member(order[MEMBERS_MAX - 2]) and r.is_member(order[MEMBERS_MAX - 3])
        assert r.usage()["members"] == r.usage()["members_max"] == MEMBERS_MAX
        assert r.stats()["late_after_final"] == 0
    assert len({membership_of(r) for r in replicas.values()}) == 1
    assert len({(r.digest, r.final_key()) for r in replicas.values()}) == 1
    # The 64th and the 65th member speak: refused and admitted alike everywhere.
    key_of = {peer_id_bytes(k): k for k in crowd}
    last_in = sign_like(x, key_of[order[MEMBERS_MAX - 3]], MARKET, [sell(101)])
    first_out = sign_like(x, key_of[order[MEMBERS_MAX - 2]], MARKET, [sell(102)])
    for name, r in replicas.items():
        assert r.precheck(first_out) == "not_member", name
        receipt = r.receive(first_out.raw)
        assert (receipt.status, receipt.code) == ("rejected", "not_member"), name
        assert r.receive(last_in.raw).status == "delivered", name
    assert len({(r.digest, membership_of(r)) for r in replicas.values()}) == 1


def test_a_refused_newcomers_parked_first_event_is_refused_when_the_join_is_decided():
    """Early first events of the 64th and the 65th member (covering their joins, before
    the joins are final) are parked; the input that makes the joins final delivers the
    64th's and refuses the 65th's (`not_member`), and nothing stays parked."""
    net = Net("ab")
    crowd = [seeded_key_pair(f"finality-crowd-{i}") for i in range(CROWD)]
    ids = sorted(peer_id_bytes(k) for k in crowd)
    key_of = {peer_id_bytes(k): k for k in crowd}
    join = net.act("a", [Join(m) for m in ids], market=MEMBERSHIP_MARKET)
    last_in = sign_like(net["a"], key_of[ids[MEMBERS_MAX - 3]], MARKET, [sell(101)])
    first_out = sign_like(net["a"], key_of[ids[MEMBERS_MAX - 2]], MARKET, [sell(102)])
    for r in net.replicas.values():
        for parked, early in enumerate((last_in, first_out), 1):
            assert r.precheck(early) is None
            receipt = r.receive(early.raw)
            assert (receipt.status, receipt.code, r.usage()["parked"]) == ("buffered", None,
                                                                           parked)
    deciding = {}

    def check(name: str, receipt: Receipt, event: Event) -> None:
        r = net[name]
        if last_in in receipt.delivered:
            deciding[name] = receipt
            assert r.is_final(join.id) and r.usage()["parked"] == 0
            assert r.stats()["rejected"] == {"not_member": 1}
            assert receipt.delivered == [event, last_in] and receipt.status == "delivered"
        else:
            assert r.usage()["parked"] == 2 and not r.is_final(join.id)

    for _ in range(ROUNDS_TO_QUIET_MAX):
        if len(deciding) == 2:
            break
        acks = []
        for name in "ab":
            if net[name].wants_ack():
                ack, receipt = net[name].create_event(net.keys[name].private_key,
                                                      MEMBERSHIP_MARKET, [])
                check(name, receipt, ack)
                acks.append((name, ack))
        for name, ack in acks:
            other = "b" if name == "a" else "a"
            check(other, net[other].receive(ack.raw), ack)
    assert sorted(deciding) == ["a", "b"]
    for r in net.replicas.values():
        assert r.events_of(first_out.origin) == [] and r.events_of(last_in.origin) == [last_in]
        assert r.membership.refused == set(ids[MEMBERS_MAX - 2:])
        assert r.is_member(last_in.origin) and not r.is_member(first_out.origin)
    assert len({(r.digest, membership_of(r)) for r in net.replicas.values()}) == 1


def test_a_replica_rebuilt_from_its_events_reports_the_same_members_effective_and_refused():
    """Membership is a function of the delivered events: each replica of a crowded
    network, rebuilt from its delivered events in three shuffled orders (newcomers'
    first events included, parked where they come before what makes their join final),
    reports the same members, effective and refused, the same finality and digest."""
    net, replicas, crowd, order = crowded_network()
    key_of = {peer_id_bytes(k): k for k in crowd}
    speakers = [sign_like(replicas["x"], key_of[m], MEMBERSHIP_MARKET, [])
                for m in order[:5]]
    for r in replicas.values():
        for raw in [e.raw for e in speakers]:
            assert r.receive(raw).status == "delivered"
    rng = random.Random(65)
    for name, r in replicas.items():
        raws = delivered_raws(r)
        assert len(raws) == r.stats()["events_delivered"]
        for _ in range(3):
            rng.shuffle(raws)
            rebuilt = Replica(DEFAULT_MARKETS, genesis=net.genesis)
            for raw in raws:
                assert rebuilt.receive(raw).status in ("delivered", "buffered"), name
            assert rebuilt.usage()["parked"] == 0 and rebuilt.stats()["rejected"] == {}
            assert membership_of(rebuilt) == membership_of(r), name
            assert rebuilt.finality() == r.finality(), name
            assert rebuilt.digest == r.digest, name
            assert rebuilt.membership.refused == set(order[MEMBERS_MAX - 2:])


def test_a_newcomer_whose_join_is_final_is_a_member_without_anyone_asking_what_is_final():
    """Membership is a function of the delivered events: once n's replica holds the
    acknowledgements that make n's join final, `is_member(n)` is True and n wants to
    acknowledge what waits for it, whether or not anything asked it what is final
    first (a twin fed the same events and asked says so). Otherwise nothing that waits
    for n becomes final while the network acknowledges on `wants_ack` alone."""
    net = Net("abc", newcomers="n")
    n = net.ids["n"]
    net.act("a", [Join(n)], market=MEMBERSHIP_MARKET)
    after = net.act("b", [sell(102)])
    net.acks_until_quiet()  # asks every replica wants_ack(), nothing else
    assert net["n"].is_member(n) and net["n"].events_of(n), "n acknowledged on its own"
    assert all(r.is_final(after.id) for r in net.replicas.values())
    twin = Replica(DEFAULT_MARKETS, n, genesis=net.genesis)
    for raw in delivered_raws(net["n"]):
        twin.receive(raw)
    assert twin.is_member(n) and twin.members() == net["n"].members()


def test_a_parked_first_event_is_delivered_by_the_release_that_makes_its_join_final():
    """p joined by j1, q by j2 (sorting after j1, so j2 needs p's acknowledgement). An
    observer gets j1, j2, q's first event and a's acknowledgement of p's, then p's first
    event: that one input delivers p's event (j1 decided), a's acknowledgement, which
    makes j2 final, and so q's first event too, in its receipt; nothing stays parked."""
    net = Net("a", newcomers="pq")
    p, q = net.ids["p"], net.ids["q"]
    j1 = net.act("a", [Join(p)], market=MEMBERSHIP_MARKET)
    j2 = net.act("a", [Join(q)], market=MEMBERSHIP_MARKET)
    assert net["p"].is_final(j1.id) and j1.key < j2.key
    p1 = net.act("p", [], market=MEMBERSHIP_MARKET, to="aq")
    a_ack = net.act("a", [], market=MEMBERSHIP_MARKET, to="q")
    assert net["q"].is_final(j2.id)
    q1 = net.act("q", [sell(101)], to="")
    observer = Replica(DEFAULT_MARKETS, genesis=net.genesis)
    for event in (j1, j2, q1, a_ack):
        observer.receive(event.raw)
    receipt = observer.receive(p1.raw)
    assert observer.is_final(j2.id) and observer.is_member(q)
    assert sorted(e.id for e in receipt.delivered) == sorted(e.id for e in (p1, a_ack, q1))
    assert observer.usage()["parked"] == 0 and observer.event(q1.id) is not None


# ---------------------------------------------------------------------------
# 5. Heartbeats


def test_heartbeats_cannot_move_finality():
    """However much a heartbeat claims, it moves no frontier and no acknowledgement: it
    is a hint for sync. One that claims more of our own history than we signed is
    refused (`impossible_clock`)."""
    net = Net("abc")
    net.act("a", [sell(100)])
    taker = net.act("b", [buy(100)])
    net.ack_round()
    huge = {peer: SEQ_MAX for peer in net.genesis}
    for r in net.replicas.values():
        before = (r.final_key(), r.finality(), r.wants_ack(), r.is_final(taker.id))
        for peer in net.genesis:
            others = {p: s for p, s in huge.items() if p != r.origin}
            assert r.on_heartbeat(peer, others) is None
            assert r.on_heartbeat(peer, huge) == "impossible_clock"
        assert (r.final_key(), r.finality(), r.wants_ack(), r.is_final(taker.id)) == before
    # A silent member's heartbeats never stand in for its acknowledgements.
    net.ack_round(signers="ab")
    for r in net.replicas.values():
        r.on_heartbeat(net.ids["c"], {net.ids["a"]: 10**9, net.ids["b"]: 10**9})
    net.ack_round(signers="ab")
    assert all(not r.is_final(taker.id) for r in net.replicas.values())
    net.acks_until_quiet()
    assert all(r.is_final(taker.id) for r in net.replicas.values())


# ---------------------------------------------------------------------------
# 6. Equivocation


def test_an_equivocating_member_splits_nobody_final_history():
    """m signs two versions of one seq (other content, clock and Lamport time) and gives
    one to each half of the network; each half trades on its version, m acknowledges in
    both, the halves acknowledge among themselves. No two honest replicas ever report
    final histories that disagree; the other version is refused as `equivocation` with
    the proof kept; events built on it are refused (`fork`) or stay buffered; finality
    stalls, and says whom it waits for, instead of lying."""
    net = Net("abcdm", shadows={"m'": "m"})
    honest = [net[n] for n in "abcd"]
    left, right = ["a", "b", "m"], ["c", "d", "m'"]
    m = net.ids["m"]
    net.act("a", [sell(100)], to=[n for n in net.replicas if n != "m'"])
    net.sync()  # m' learns everything m signed, and holds m's history
    net.acks_until_quiet([n for n in net.replicas if n != "m'"])
    net.sync()
    pre_fork = {n: final_history(net[n]) for n in "abcd"}
    assert all(pre_fork.values())
    # The two versions of m's next seq: m' first sees an order of c, so its version has
    # another clock and Lamport time.
    net.act("c", [Place(Side.BUY, OrderType.LIMIT, 90, 1)], to=right)
    version = net.act("m", [sell(99)], to=left)
    other = net.act("m'", [sell(98, 2)], to=right)
    assert (version.origin, version.seq) == (other.origin, other.seq) and version.id != other.id
    assert version.clock != other.clock and version.lamport != other.lamport
    taker_left = net.act("b", [buy(100)], to=left)
    taker_right = net.act("d", [buy(100)], to=right)
    assert net["b"].trades_of(taker_left.id)[0].maker_origin == m
    assert {t.price for t in net["d"].trades_of(taker_right.id)} == {98, 100}
    crossing = {"rejected": 0, "buffered": 0}
    for _ in range(8):
        acks = net.ack_round(left, left) + net.ack_round(right, right)
        for event in acks + [taker_left, taker_right]:
            targets = right if net["a"].event(event.id) is not None else left
            for receipt in net.deliver(event, [t for t in targets if t in "abcd"]).values():
                assert receipt.status in ("rejected", "buffered", "duplicate"), receipt
                if receipt.status == "rejected":  # m's own acks are equivocations too
                    assert receipt.code == ("equivocation" if event.origin == m
                                            else "fork"), receipt
                crossing[receipt.status] = crossing.get(receipt.status, 0) + 1
        assert_final_histories_consistent(honest)
        for name in "abcd":
            r = net[name]
            assert final_history(r) == pre_fork[name], name  # nothing new is final
            assert r.finality().waiting_for, name
            assert not r.is_final(version.id) and not r.is_final(other.id)
    assert crossing["rejected"] and crossing["buffered"]
    assert net["c"].receive(taker_left.raw).code == "fork"  # built on the other version
    # The other version itself reaches each half: refused, and the proof is kept.
    for name in "ab":
        assert net[name].receive(other.raw).code == "equivocation"
        assert net[name].equivocations[(m, version.seq)] == (version.raw, other.raw)
    for name in "cd":
        assert net[name].receive(version.raw).code == "equivocation"
        assert net[name].equivocations[(m, version.seq)] == (other.raw, version.raw)
    for _ in range(4):
        net.ack_round(left, left)
        net.ack_round(right, right)
    assert_final_histories_consistent(honest)
    assert all(r.finality().waiting_for and not r.is_final(taker_left.id)
               and not r.is_final(taker_right.id) for r in honest)


def test_equivocation_defeats_a_one_round_rule_but_not_the_two_round_rule():
    """The reasoning in core/finality.py: c acknowledges b's trade before any version of
    m's seq 1 reaches it; m gives one version (a sell at 99, sorting below the trade) to
    a and another (a sell at 101) to c. On a every member's head then covers the trade,
    so a one-round rule calls it final there, traded against m at 99, while honest c
    holds the same trade against a at 100, with another event below it, and can never
    take a's version. The two-round rule calls nothing final on a, ever."""
    net = Net("abcm", without_replica="m")
    a, b, c, m = (net.ids[n] for n in "abcm")
    maker = net.act("a", [sell(100)])
    taker = net.act("b", [buy(100)])
    (c_ack,) = net.ack_round(signers="c")
    version = net.sign("m", 1, [], MARKET, [sell(99)])
    other = net.sign("m", 1, [], MARKET, [sell(101)])
    assert version.key < taker.key and other.key < taker.key
    assert net["a"].receive(version.raw).status == "delivered"
    assert net["c"].receive(other.raw).status == "delivered"
    m_ack = net.sign("m", 2, [maker, taker, c_ack, version], MEMBERSHIP_MARKET, [])
    assert net["a"].receive(m_ack.raw).status == "delivered"
    (a_ack,) = net.ack_round(signers="a", to="a")
    ra, rc = net["a"], net["c"]
    assert {h.origin for h in (a_ack, taker, c_ack, m_ack)} == set(net.genesis)
    # On a, every member's head covers the trade: one round would make it final.
    one_round = one_round_final_key(ra)
    assert one_round is not None and taker.key <= one_round
    (trade_a,) = ra.trades_of(taker.id)
    (trade_c,) = rc.trades_of(taker.id)
    assert (trade_a.maker_origin, trade_a.price) == (m, 99)
    assert (trade_c.maker_origin, trade_c.price) == (a, 100)
    below_a = [i for i in ra.applied_ids() if ra.event(i).key < taker.key]
    below_c = [i for i in rc.applied_ids() if rc.event(i).key < taker.key]
    assert version.id in below_a and other.id in below_c and below_a != below_c
    assert rc.receive(version.raw).code == "equivocation"  # c can never adopt a's version
    # The real rule: nothing final on a, and it stays so whatever a, b and m do.
    assert ra.final_key() is None and not ra.is_final(taker.id)
    assert c in ra.finality().waiting_for
    net.deliver(version, "b")
    net.deliver(m_ack, "b")
    net.deliver(a_ack, "b")
    for seq in range(3, 8):
        net.ack_round("ab", "ab")
        m_head = ra.events_of(m)[-1]
        causes = [ra.events_of(p)[-1] for p in (a, b, c)] + [m_head]
        m_more = net.sign("m", seq, causes, MEMBERSHIP_MARKET, [])
        net.deliver(m_more, "ab")
        assert one_round_final_key(ra) is not None
        for r in (ra, net["b"]):
            assert r.final_key() is None and not r.is_final(taker.id)
            assert r.finality().waiting_for == [c]
    # c's next acknowledgement names the other version: a refuses it.
    (c_next,) = net.ack_round(signers="c", to="c")
    assert ra.receive(c_next.raw).code == "fork"
    assert ra.final_key() is None


# ---------------------------------------------------------------------------
# 7. Fair order


@pytest.mark.parametrize("maker_name, taker_name", [("a", "b"), ("b", "a")])
def test_at_equal_lamport_a_cancel_still_beats_a_taker_and_that_becomes_final(
        maker_name, taker_name):
    """The fair order (cancels-only before places at equal Lamport time) survives the
    new rule: the maker's concurrent cancel wins on every replica, whatever the arrival
    order and origin bytes, and that outcome is what becomes final."""
    net = Net("abc")
    rest = net.act(maker_name, [sell(100, kind=OrderType.LIMIT)])
    pull = net.act(maker_name, [Cancel(rest.order_id(0))], to=[maker_name])
    take = net.act(taker_name, [buy(100)], to=[taker_name])
    assert pull.lamport == take.lamport
    net.deliver(pull, [taker_name, "c"])
    net.deliver(take, [maker_name])
    net.deliver(take, ["c"])
    net.acks_until_quiet()
    for r in net.replicas.values():
        assert r.trades() == [] and r.outcomes_of(pull.id) == ["cancelled"]
        assert r.is_final(pull.id) and r.is_final(take.id)
    assert len({tuple(final_history(r)) for r in net.replicas.values()}) == 1


# ---------------------------------------------------------------------------
# 8. Restart


def test_a_replica_rebuilt_from_its_events_in_another_order_reports_the_same_finality():
    """Finality is a function of the delivered events alone: a replica rebuilt from them,
    replayed in another order (its own events newest first, then the rest shuffled),
    reports the same frontier, the same finality report, the same wants_ack and the same
    members (effective, candidates, refused), at every stage of the rounds, before and
    after a newcomer's join is final."""
    net = Net("abc", newcomers="n")
    rng = random.Random(8)

    def check() -> None:
        for name, r in net.replicas.items():
            # Own events first (a store replays in delivery order, so others' events
            # that cite ours never come before them), everything else shuffled.
            own = [e.raw for e in r.events_of(r.origin)]
            raws = [raw for raw in delivered_raws(r) if raw not in own]
            rng.shuffle(raws)
            raws = own[::-1] + raws
            rebuilt = Replica(DEFAULT_MARKETS, r.origin, genesis=net.genesis)
            for raw in raws:
                assert rebuilt.receive(raw).status in ("delivered", "buffered"), name
            assert rebuilt.final_key() == r.final_key(), name
            assert rebuilt.finality() == r.finality(), name
            assert rebuilt.wants_ack() == r.wants_ack(), name
            assert rebuilt.digest == r.digest, name
            assert membership_of(rebuilt) == membership_of(r), name
            assert rebuilt.usage()["parked"] == r.usage()["parked"] == 0, name

    net.act("a", [sell(100)])
    net.act("b", [buy(100, 2)])
    check()
    assert [net[n].wants_ack() for n in "abc"] == [True, False, True]
    net.ack_round()
    check()
    net.ack_round()
    check()
    net.act("c", [buy(100, 3)])
    net.ack_round()
    check()
    net.acks_until_quiet()
    check()
    n = net.ids["n"]
    join = net.act("a", [Join(n)], market=MEMBERSHIP_MARKET)
    check()  # n is a candidate: waited for, no member yet
    assert all(not r.is_member(n) and n in r.membership.members for r in net.replicas.values())
    net.ack_round()
    check()
    net.acks_until_quiet()
    check()
    assert all(r.is_final(join.id) and r.is_member(n) for r in net.replicas.values())
    net.act("n", [sell(101, 1)])  # its first event may now be replayed before its join
    net.ack_round()
    check()
    net.acks_until_quiet()
    check()
    assert all(r.finality().waiting_for == [] for r in net.replicas.values())


# ---------------------------------------------------------------------------
# The rule itself (core/finality.py)


def test_covers_is_an_origins_own_chain_or_its_clock():
    """`covers(head, origin, seq)`: an origin's own earlier seqs, or what its clock names."""
    net = Net("ab", without_replica="ab")
    a1 = net.sign("a", 1, [], MARKET, [sell(100)])
    b1 = net.sign("b", 1, [a1], MEMBERSHIP_MARKET, [])
    a2 = net.sign("a", 2, [a1, b1], MEMBERSHIP_MARKET, [])
    assert covers(a2, a1.origin, 1) and covers(a2, a1.origin, 2)
    assert not covers(a2, a1.origin, 3)
    assert covers(b1, a1.origin, 1) and not covers(b1, a1.origin, 2)
    assert covers(a2, b1.origin, 1) and not covers(a1, b1.origin, 1)


def test_admission_is_judged_from_the_events_causal_past():
    """Genesis members always; anyone's seq > 1 (its chain began with an admitted event);
    a newcomer's first event only if its clock covers a join of it, and only once that
    join is decided (`undecided` until then: it waits, it is no fault)."""
    net = Net("ab", newcomers="nx", without_replica="abnx")
    a, n = net.ids["a"], net.ids["n"]
    membership = Membership(net.genesis)
    a1 = net.sign("a", 1, [], MARKET, [sell(100)])
    join = net.sign("a", 2, [a1], MEMBERSHIP_MARKET, [Join(n)])
    assert membership.admissible(a1) is None
    assert membership.admissible(net.sign("x", 1, [], MARKET, [sell(1)])) == "not_member"
    assert membership.admissible(net.sign("n", 1, [a1], MARKET, [sell(1)])) == "not_member"
    membership.on_delivered(a1)
    membership.on_delivered(join)
    # A candidate: waited for, not a member; its first event waits for the decision.
    assert not membership.is_member(n) and not membership.is_member(net.ids["x"])
    assert list(membership.members) == sorted(net.genesis) + [n]
    assert membership.admissible(net.sign("n", 1, [a1], MARKET, [sell(1)])) == "not_member"
    assert membership.admissible(net.sign("n", 1, [join], MARKET, [sell(1)])) == "undecided"
    assert membership.decide(None) == ([], []) and membership.decide(a1.key) == ([], [])
    assert not membership.is_member(n)  # its join is not final yet
    assert membership.decide(join.key) == ([n], [])  # the join is final: effective
    assert membership.decide(join.key) == ([], [])  # decided once
    assert membership.is_member(n) and not membership.is_member(net.ids["x"])
    assert membership.admissible(net.sign("n", 1, [a1], MARKET, [sell(1)])) == "not_member"
    assert membership.admissible(net.sign("n", 1, [join], MARKET, [sell(1)])) is None
    assert list(membership.members) == sorted(net.genesis) + [n]
    assert a in membership.members and membership.refused == set()


def test_frontier_waits_for_every_member_and_only_moves_forward():
    """The rule over hand-built chains of two members: nothing while a member never
    spoke or a witness is missing; an event is committed once both witnesses cover it;
    a view with less in it never moves the frontier back."""
    net = Net("ab", without_replica="ab")
    a1 = net.sign("a", 1, [], MARKET, [sell(100)])
    b1 = net.sign("b", 1, [a1], MARKET, [buy(100)])
    a2 = net.sign("a", 2, [a1, b1], MEMBERSHIP_MARKET, [])
    b2 = net.sign("b", 2, [a2, b1], MEMBERSHIP_MARKET, [])
    a3 = net.sign("a", 3, [a2, b2], MEMBERSHIP_MARKET, [])
    a, b = a1.origin, b1.origin
    membership = Membership(net.genesis)
    assert membership.frontier({a: [a1]}) is None
    assert membership.waiting_for({a: [a1]}, a1) == [b]
    assert membership.frontier({a: [a1], b: [b1]}) is None  # w(a)=a1, w(b)=0
    # Heads a2, b1: witnesses w(a) = a1, w(b) = b1; both cover a1, only b1 covers b1.
    assert membership.frontier({a: [a1, a2], b: [b1]}) == a1.key
    assert membership.waiting_for({a: [a1, a2], b: [b1]}, b1) == [b]
    # Heads a2, b2: witnesses a2 and b1, both cover b1 (the trade).
    assert membership.frontier({a: [a1, a2], b: [b1, b2]}) == b1.key
    # Heads a3, b2: witnesses a2 and b2, both cover a2.
    assert membership.frontier({a: [a1, a2, a3], b: [b1, b2]}) == a2.key
    # A function of what is delivered: less delivered, less final. (A replica's
    # delivered set only grows; its frontier never moves back: test_replica_stateful.)
    assert membership.frontier({a: [a1], b: [b1]}) is None
    assert membership.waiting_for({a: [a1, a2, a3], b: [b1, b2]}, None) == []


def test_delivery_refuses_a_lamport_time_that_is_not_one_above_its_causes():
    """`bad_lamport` both ways: a time above the causes' would let an event jump ahead of
    concurrent ones; one at or below them would let it sort before its own causes."""
    net = Net("ab")
    maker = net.act("a", [sell(100)])
    for lamport in (maker.lamport, maker.lamport + 2):
        late = net.sign("b", 1, [maker], MARKET, [buy(100)], lamport=lamport)
        assert net["b"].receive(late.raw).code == "bad_lamport"
    assert net["b"].receive(net.sign("b", 1, [maker], MARKET, [buy(100)]).raw).code is None


def test_membership_events_touch_no_book_and_a_repeated_join_is_recorded():
    """Joins and acknowledgements change no book; a join repeated in one event is
    recorded as `duplicate`; the joined peer is a candidate on every replica, and a
    member (once, not twice) when the join is final."""
    net = Net("ab", newcomers="n")
    n = net.ids["n"]
    join = net.act("a", [Join(n), Join(n)], market=MEMBERSHIP_MARKET)
    ack = net.act("b", [], market=MEMBERSHIP_MARKET)
    for r in net.replicas.values():
        assert r.outcomes_of(join.id) == ["joined", "duplicate"]
        assert r.outcomes_of(ack.id) == [] and r.trades() == []
        assert r.stats()["resting"] == {name: 0 for name in DEFAULT_MARKETS}
        assert r.members() == sorted(net.genesis) and not r.is_final(join.id)
        assert list(r.membership.members) == sorted(net.genesis) + [n]  # a candidate
    net.acks_until_quiet()
    for r in net.replicas.values():
        assert r.is_final(join.id) and r.stats()["resting"] == {m: 0 for m in DEFAULT_MARKETS}
        assert sorted(r.members()) == sorted(net.genesis + [n])  # joined once, effective
        assert r.membership.refused == set() and r.usage()["members"] == 3


# ---------------------------------------------------------------------------
# 9. What a snapshot may rely on (docs/snapshot_design.md)


def final_seqs(replica: Replica) -> dict[bytes, int]:
    """Per origin, how many of its events are final here (they lead its chain)."""
    frontier = replica.final_key()
    if frontier is None:
        return {}
    return {o: sum(1 for e in replica.events_of(o) if e.key <= frontier)
            for o in replica.clock}


def names_below_final(replica: Replica, event: Event) -> list[tuple[bytes, int, int]]:
    """The origins of which `event` names less than what is final on `replica` (it would
    name an older cause than the latest final event of that origin): (origin, named,
    final) each."""
    named = dict(event.clock)
    named[event.origin] = event.seq - 1
    return [(o, named.get(o, 0), s) for o, s in final_seqs(replica).items()
            if named.get(o, 0) < s]


class PrefixStates:
    """Checks `Replica.prefix_state` (membership and each origin's latest event as the
    final prefix up to a key decides them): for every key final on some replica, each
    replica that holds it final reports the same state, when it first does and at
    random later steps (a few keys a step, to stay fast)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.seen: dict[OrderKey, tuple] = {}
        self.checked: dict[int, set[OrderKey]] = {}
        self.count = 0  # comparisons with another replica's or an earlier report

    def check(self, replicas: Iterable[Replica]) -> None:
        replicas = list(replicas)
        for r in replicas:
            frontier = r.final_key()
            if frontier is not None and frontier not in self.seen:
                self.seen[frontier] = r.prefix_state(frontier)
                self.checked.setdefault(id(r), set()).add(frontier)
        keys = sorted(self.seen)
        for r in replicas:
            frontier = r.final_key()
            if frontier is None:
                continue
            done = self.checked.setdefault(id(r), set())
            held = keys[:bisect_right(keys, frontier)]
            due = [k for k in held if k not in done]
            due += self.rng.sample(held, min(3, len(held)))
            for key in due:
                assert r.prefix_state(key) == self.seen[key], key
                done.add(key)
                self.count += 1


@pytest.mark.parametrize("seed", range(6))
def test_a_members_event_not_yet_delivered_names_no_cause_older_than_what_is_final(seed):
    """Among a fixed set of members, every event a replica has not delivered yet, however
    late it comes (partial deliveries, rounds among some members, then sync), names at
    least the latest final event of every origin. Why: a final event f of origin o is
    covered by o's witness, which every member's head covers, and a later event of a
    member covers its previous one's clock (`clock_regression`). So a snapshot of the
    final prefix only needs each origin's latest final (seq, id, Lamport time) to judge
    what members sign after it; a newcomer's first event is the exception (next test).
    Checked on every replica before each delivery: thousands of (event, replica) pairs.
    After each step, the replicas' prefix states agree (`PrefixStates`)."""
    rng = random.Random(seed)
    net = Net("abcd")
    names = list(net.replicas)
    prefixes = PrefixStates(rng)
    checked = 0  # checks against another origin's final events (the others are trivial)

    def deliver(event: Event, to: Iterable[str]) -> None:
        nonlocal checked
        for name in to:
            r = net[name]
            if r.event(event.id) is None:
                assert names_below_final(r, event) == [], (name, event)
                checked += any(s for o, s in final_seqs(r).items() if o != event.origin)
            assert r.receive(event.raw).status != "rejected"

    for _ in range(200):
        roll = rng.random()
        if roll < 0.4:
            name = rng.choice(names)
            side = rng.choice((sell, buy))
            event, _ = net[name].create_event(net.keys[name].private_key, MARKET,
                                              [side(rng.randrange(95, 106), rng.randrange(1, 6))])
            deliver(event, rng.sample(names, rng.randrange(0, len(names))))
        elif roll < 0.75:
            signers = rng.sample(names, rng.randrange(1, len(names) + 1))
            acks = []
            for name in signers:
                ack, _ = net[name].create_event(net.keys[name].private_key,
                                                MEMBERSHIP_MARKET, [])
                acks.append(ack)
            everyone = rng.random() < 0.5  # else a partial round: some miss its acks
            for ack in acks:
                deliver(ack, names if everyone else rng.sample(names, rng.randrange(len(names))))
        else:
            src, dst = rng.sample(names, 2)
            raws = net[src].events_for(net[dst].clock, 100_000)
            events = [decode_event(raw, DEFAULT_MARKETS) for raw in raws]
            for event in events:  # causes first: each is delivered as it comes
                deliver(event, [dst])
        prefixes.check(net.replicas.values())
    net.sync()
    net.acks_until_quiet()
    for r in net.replicas.values():
        assert r.finality().waiting_for == [] and pending_with_actions(r) == []
    assert len({r.digest for r in net.replicas.values()}) == 1
    prefixes.check(net.replicas.values())
    assert checked > 200  # the check ran against final events, not on a few deliveries
    assert prefixes.count > 200 and len(prefixes.seen) >= 5


def test_a_newcomers_first_event_names_no_cause_older_than_its_join_names():
    """The exception F1 leaves: a newcomer's first event has no previous event of its
    own to cover. Covering its join alone, it could name another origin's first event
    although that origin's later events are final, and a replica that no longer holds
    that event (a checkpoint's segments, a member that forgot: docs/snapshot_design.md)
    could not judge it. So the protocol (event.md, "Joins") asks it to cover its join's
    clock too: naming b at 1 where the join names b at 3 is `not_member` everywhere;
    covering the join's clock, it is delivered, sorting after everything final."""
    net = Net("abc", newcomers="n")
    n, b = net.ids["n"], net.ids["b"]
    b1 = net.act("b", [sell(100)])
    net.act("b", [sell(101)])
    net.act("b", [sell(102)])
    join = net.act("a", [Join(n)], market=MEMBERSHIP_MARKET)
    net.acks_until_quiet()
    for r in net.replicas.values():
        assert r.is_final(join.id) and r.is_member(n) and final_seqs(r)[b] >= 3
    first = net.sign("n", 1, [join, b1], MARKET, [sell(103)])
    assert first.clock[b] == 1 and first.key > join.key
    for name in "abc":
        older = {o: (named, final) for o, named, final in names_below_final(net[name], first)}
        assert older[b][0] == 1 and older[b][1] >= 3, name
    for name, receipt in net.deliver(first, "abc").items():
        assert (receipt.status, receipt.code) == ("rejected", "not_member"), name
    assert join.clock[b] >= 3
    causes = [net["a"].events_of(o, s - 1)[0] for o, s in join.clock.items() if s]
    first = net.sign("n", 1, [join, *causes], MARKET, [sell(103)])
    for name, receipt in net.deliver(first, "abc").items():
        assert (receipt.status, receipt.code) == ("delivered", None), name
    for name in "abc":
        assert net[name].event(first.id) is not None and net[name].final_key() < first.key
