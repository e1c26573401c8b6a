"""The replica: convergence whatever the arrival order, rollback, finality, rejections."""

from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2pexchange.core.book import OrderBook
from p2pexchange.core.buffer import buffered_size
from p2pexchange.core.events import (
    MEMBERSHIP_MARKET,
    Cancel,
    Join,
    OrderType,
    Place,
    Side,
    sign_event,
)
from p2pexchange.core.ledger import GENESIS_DIGEST
from p2pexchange.core.market import DEFAULT_MARKETS
from p2pexchange.core.replica import OwnHistoryBehind, Replica
from p2pexchange.sim.workload import peer_id_bytes, seeded_key_pair, simulate_history

MARKETS = DEFAULT_MARKETS
NO_SUCH_EVENT = bytes(32)  # the id a hostile clock entry gives an event nobody signed


def clock_of(*events) -> dict:
    """The clock naming these events (seq and id), as sign_event takes it."""
    return {e.origin: (e.seq, e.id) for e in events}


def fingerprint(replica: Replica) -> tuple:
    """Everything a user can observe: digest, books, trades in order, every order's status."""
    return (
        replica.digest,
        tuple(book.snapshot() for book in replica.books.values()),
        tuple(replica.trades()),
        tuple(sorted((oid, o.status, o.filled, o.reason)
                     for book in replica.books.values() for oid, o in book.orders.items())),
        tuple(replica.applied_ids()),
    )


def feed(raws, origin=None) -> Replica:
    replica = Replica(MARKETS, origin)
    for raw in raws:
        receipt = replica.receive(raw)
        assert receipt.status != "rejected", receipt
    return replica


def shuffled_with_duplicates(raws: list[bytes], rng: random.Random) -> list[bytes]:
    order = raws + rng.sample(raws, len(raws) // 3)
    rng.shuffle(order)
    return order


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32), origins=st.integers(2, 5), steps=st.integers(5, 60),
       orders=st.lists(st.randoms(use_true_random=False), min_size=2, max_size=4))
def test_replicas_converge_in_any_arrival_order(seed, origins, steps, orders):
    history = simulate_history(seed, MARKETS, origins=origins, steps=steps)
    raws = [e.raw for e in history]
    reference = fingerprint(feed(raws))
    for rng in orders:
        replica = feed(shuffled_with_duplicates(raws, rng))
        for book in replica.books.values():
            book.check_invariants()
        assert fingerprint(replica) == reference, f"seed={seed}"
        assert replica.stats()["events_delivered"] == len(raws)
        assert replica.stats()["events_buffered"] == 0


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32), steps=st.integers(5, 60), rng=st.randoms(use_true_random=False))
def test_receiving_in_batches_ends_as_receiving_one_by_one(seed, steps, rng):
    """`receive_many` applies a batch with one rollback; the state is the same, and every
    input still gets its own receipt (status, and the trades of what it delivered)."""
    history = simulate_history(seed, MARKETS, origins=3, steps=steps)
    arrivals = shuffled_with_duplicates([e.raw for e in history], rng) + [b"\xff garbage"]
    one_by_one = Replica(MARKETS)
    singles = [one_by_one.receive(raw) for raw in arrivals]
    batched = Replica(MARKETS)
    receipts = []
    start = 0
    while start < len(arrivals):
        size = rng.randint(1, 12)
        receipts += batched.receive_many(arrivals[start:start + size])
        start += size
    assert fingerprint(batched) == fingerprint(one_by_one), f"seed={seed}"
    assert [r.status for r in receipts] == [r.status for r in singles]
    assert ([e.id for r in receipts for e in r.delivered]
            == [e.id for r in singles for e in r.delivered])
    for receipt in receipts:  # each reports the trades of what it delivered
        assert {t.event_id for t in receipt.trades} <= {e.id for e in receipt.delivered}
    whole = Replica(MARKETS)
    receipts = whole.receive_many(arrivals)  # one pass: nothing is re-applied after it
    assert fingerprint(whole) == fingerprint(one_by_one)
    assert sorted(t for r in receipts for t in r.trades) == sorted(whole.trades())
    assert whole.stats()["rollbacks"] == 0


def naive_arrival_order_digest(raws: list[bytes]) -> bytes:
    """What the Grenache-style designs do: match each event when it arrives (after
    its causes), with no total order. Used to show that the convergence test bites."""
    ordering = Replica(MARKETS)  # only for causal delivery and decoding
    books = {m: OrderBook(m) for m in MARKETS}
    h = hashlib.sha256()
    for raw in raws:
        for event in ordering.receive(raw).delivered:
            book = books[event.market]
            for i, action in enumerate(event.actions):
                if isinstance(action, Place):
                    book.place(event.order_id(i), event.origin, action, event.id)
                else:
                    book.cancel(action.order_id, event.origin)
    for book in books.values():
        h.update(repr(book.snapshot()).encode())
        h.update(repr(book.trades).encode())
    return h.digest()


def test_naive_arrival_order_engine_diverges_where_replica_converges():
    history = simulate_history(7, MARKETS, origins=4, steps=60)
    raws = [e.raw for e in history]
    naive, ours = set(), set()
    for k in range(8):
        order = shuffled_with_duplicates(raws, random.Random(k))
        naive.add(naive_arrival_order_digest(order))
        ours.add(fingerprint(feed(order)))
    assert len(ours) == 1
    assert len(naive) > 1, "the naive engine should fork on concurrent orders"


def two_origins():
    a, b = seeded_key_pair("a"), seeded_key_pair("b")
    return (a, peer_id_bytes(a)), (b, peer_id_bytes(b))


def test_concurrent_crossing_orders_pick_one_winner_everywhere():
    (ka, a), (kb, b) = two_origins()
    (kc, c) = (seeded_key_pair("c"), None)
    c = peer_id_bytes(kc)
    maker = sign_event(kc.private_key, c, 1, {}, 1, "BTC-USD",
                       [Place(Side.SELL, OrderType.LIMIT, 100, 5)])
    # a and b both saw the maker and both try to take all of it, concurrently.
    take_a = sign_event(ka.private_key, a, 1, clock_of(maker), 2, "BTC-USD",
                        [Place(Side.BUY, OrderType.IOC, 100, 5)])
    take_b = sign_event(kb.private_key, b, 1, clock_of(maker), 2, "BTC-USD",
                        [Place(Side.BUY, OrderType.IOC, 100, 5)])
    first = feed([maker.raw, take_a.raw, take_b.raw])
    second = feed([take_b.raw, maker.raw, take_a.raw])
    assert fingerprint(first) == fingerprint(second)
    (trade,) = first.trades()
    winner = min((a, take_a), (b, take_b))  # same lamport: lower origin sorts first
    assert trade.taker_origin == winner[0] and trade.qty == 5
    loser = take_b if winner[1] is take_a else take_a
    assert first.order(loser.order_id(0)).reason == "ioc_remainder"


def test_at_equal_lamport_a_makers_cancel_beats_a_concurrent_taker_on_every_node():
    """Fair order: a cancels-only event sorts before a concurrent event with places, so
    a maker racing a taker is protected whatever the origins' bytes and arrival order."""
    (ka, a), (kb, b) = two_origins()
    for maker_key, maker, taker_key, taker in ((ka, a, kb, b), (kb, b, ka, a)):
        rest = sign_event(maker_key.private_key, maker, 1, {}, 1, "BTC-USD",
                          [Place(Side.SELL, OrderType.LIMIT, 100, 5)])
        pull = sign_event(maker_key.private_key, maker, 2, clock_of(rest), 2, "BTC-USD",
                          [Cancel(rest.order_id(0))])
        take = sign_event(taker_key.private_key, taker, 1, clock_of(rest), 2, "BTC-USD",
                          [Place(Side.BUY, OrderType.IOC, 100, 5)])
        assert pull.lamport == take.lamport  # concurrent: neither saw the other
        replicas = [feed(order) for order in ([rest.raw, pull.raw, take.raw],
                                              [rest.raw, take.raw, pull.raw])]
        assert fingerprint(replicas[0]) == fingerprint(replicas[1])
        assert replicas[0].trades() == []  # the cancel came first, for either origin order
        assert replicas[0].outcomes_of(pull.id) == ["cancelled"]


def test_late_event_rolls_back_only_what_sorts_after_it():
    (ka, a), (kb, b) = two_origins()
    ra = Replica(MARKETS, a)
    own = [ra.create_event(ka.private_key, "BTC-USD",
                           [Place(Side.SELL, OrderType.LIMIT, 100 + i, 1)])[0] for i in range(50)]
    late = sign_event(kb.private_key, b, 1, {}, 1, "BTC-USD",
                      [Place(Side.BUY, OrderType.LIMIT, 120, 3)])
    observer = feed([e.raw for e in own])
    receipt = observer.receive(late.raw)
    assert receipt.status == "delivered"
    assert receipt.rolled_back == 50  # everything with lamport > 1 is undone and re-applied
    assert fingerprint(observer) == fingerprint(feed([late.raw] + [e.raw for e in own]))
    # A late event in the middle undoes only the later half.
    mid = sign_event(kb.private_key, b, 2, clock_of(late, own[24]), 26, "BTC-USD",
                     [Place(Side.BUY, OrderType.LIMIT, 90, 1)])
    assert observer.receive(mid.raw).rolled_back == 25


def test_event_waits_for_its_causes_and_reports_what_is_missing():
    history = simulate_history(3, MARKETS, origins=2, steps=6)
    last = history[-1]
    replica = Replica(MARKETS)
    receipt = replica.receive(last.raw)
    assert receipt.status == "buffered"
    assert receipt.missing and all(first == 1 for first, _ in receipt.missing.values())
    assert replica.digest == GENESIS_DIGEST
    for event in history[:-1]:
        replica.receive(event.raw)
    assert replica.stats()["events_buffered"] == 0 and replica.missing() == {}
    assert replica.stats()["events_delivered"] == len(history)


def test_equivocation_is_rejected_and_changes_nothing():
    (ka, a), _ = two_origins()
    one = sign_event(ka.private_key, a, 1, {}, 1, "BTC-USD",
                     [Place(Side.SELL, OrderType.LIMIT, 100, 1)])
    forked = sign_event(ka.private_key, a, 1, {}, 1, "BTC-USD",
                        [Place(Side.SELL, OrderType.LIMIT, 101, 1)])
    replica = feed([one.raw])
    before = fingerprint(replica)
    receipt = replica.receive(forked.raw)
    assert (receipt.status, receipt.code) == ("rejected", "equivocation")
    assert replica.receive(one.raw).status == "duplicate"
    assert fingerprint(replica) == before
    assert replica.stats()["rejected"] == {"equivocation": 1}


def test_precheck_tells_what_admit_would_refuse_without_changing_anything():
    (ka, a), (kb, b) = two_origins()
    place = [Place(Side.SELL, OrderType.LIMIT, 100, 1)]
    one = sign_event(ka.private_key, a, 1, {}, 1, "BTC-USD", place)
    forked = sign_event(ka.private_key, a, 1, {}, 1, "BTC-USD",
                        [Place(Side.SELL, OrderType.LIMIT, 101, 1)])
    wrong_lamport = sign_event(kb.private_key, b, 1, clock_of(one), 5, "BTC-USD", place)
    # lacks a's seq 2 (which nobody signed: any id will do while it waits)
    waiting = sign_event(kb.private_key, b, 1, {a: (2, NO_SUCH_EVENT)}, 7, "BTC-USD", place)
    honest = sign_event(kb.private_key, b, 1, clock_of(one), 2, "BTC-USD", place)
    # b saw the other version of a's seq 1: its clock names it by the other id.
    on_fork = sign_event(kb.private_key, b, 1, clock_of(forked), 2, "BTC-USD", place)
    replica = Replica(MARKETS, origin=b"\x00\x24me")
    lie = sign_event(ka.private_key, a, 2, {**clock_of(one), b"\x00\x24me": (9, NO_SUCH_EVENT)},
                     2, "BTC-USD", place)
    replica.receive(one.raw)
    before = (fingerprint(replica), replica.stats())
    verdicts = {name: replica.precheck(event) for name, event in (
        ("duplicate", one), ("forked", forked), ("wrong_lamport", wrong_lamport),
        ("waiting", waiting), ("honest", honest), ("lie", lie), ("on_fork", on_fork))}
    assert verdicts == {"duplicate": None, "forked": "equivocation",
                        "wrong_lamport": "bad_lamport", "waiting": None, "honest": None,
                        "lie": "impossible_clock", "on_fork": "fork"}
    assert (fingerprint(replica), replica.stats()) == before
    for name, event in (("forked", forked), ("wrong_lamport", wrong_lamport), ("lie", lie),
                        ("on_fork", on_fork)):
        assert replica.admit(event).code == verdicts[name]  # the same verdict as admit's


def test_lamport_inconsistent_with_clock_is_rejected():
    (ka, a), (kb, b) = two_origins()
    first = sign_event(ka.private_key, a, 1, {}, 1, "BTC-USD",
                       [Place(Side.SELL, OrderType.LIMIT, 100, 1)])
    cheat = sign_event(kb.private_key, b, 1, clock_of(first), 1, "BTC-USD",  # should be 2
                       [Place(Side.BUY, OrderType.LIMIT, 100, 1)])
    replica = feed([first.raw])
    before = fingerprint(replica)
    receipt = replica.receive(cheat.raw)
    assert (receipt.status, receipt.code) == ("rejected", "bad_lamport")
    assert fingerprint(replica) == before


def test_garbage_never_changes_state():
    history = simulate_history(11, MARKETS, origins=3, steps=20)
    replica = feed([e.raw for e in history])
    before = fingerprint(replica)
    for raw in (b"", b"\xa0", b"\xff" * 50, history[0].raw[:-1], history[3].raw + b"\x00"):
        assert replica.receive(raw).status == "rejected"
    assert fingerprint(replica) == before


def test_cancel_only_by_origin_is_a_recorded_business_outcome():
    (ka, a), (kb, b) = two_origins()
    place = sign_event(ka.private_key, a, 1, {}, 1, "BTC-USD",
                       [Place(Side.SELL, OrderType.LIMIT, 100, 1)])
    steal = sign_event(kb.private_key, b, 1, clock_of(place), 2, "BTC-USD",
                       [Cancel(place.order_id(0))])
    replica = feed([place.raw, steal.raw])
    assert replica.outcomes_of(steal.id) == ["not_owner"]
    assert replica.order(place.order_id(0)).status.name == "RESTING"


def test_sync_hands_over_exactly_what_the_other_lacks():
    history = simulate_history(5, MARKETS, origins=3, steps=40)
    full = feed([e.raw for e in history])
    partial = feed([e.raw for e in history[:15]])
    while True:
        chunk = full.events_for(partial.clock, limit=7)
        if not chunk:
            break
        assert len(chunk) <= 7
        for raw in chunk:
            assert partial.receive(raw).status == "delivered"  # causes come first
    assert fingerprint(partial) == fingerprint(full)


def test_finality_waits_for_every_member_to_cover_every_members_acknowledgement():
    """The two-round rule (core/finality.py): e1 is final once every member's latest event
    covers it (round one) and every member's latest event covers those (round two). No
    heartbeat, no clock and no timeout enters the rule."""
    (ka, a), (kb, b) = two_origins()
    ra, rb = Replica(MARKETS, a, genesis=[a, b]), Replica(MARKETS, b, genesis=[a, b])
    e1, _ = ra.create_event(ka.private_key, "BTC-USD", [Place(Side.SELL, OrderType.LIMIT, 100, 1)])
    # b has said nothing: e1 might still be preceded by an event of b's.
    assert not ra.is_final(e1.id) and ra.final_key() is None
    assert ra.finality().waiting_for == [b]
    assert not ra.wants_ack()  # our latest event covers everything we delivered
    # A heartbeat is a sync hint, never evidence for finality.
    assert ra.on_heartbeat(b, {a: 1}) is None
    assert not ra.is_final(e1.id)
    # b delivers e1 and acknowledges it (an empty event on the membership market).
    assert rb.receive(e1.raw).status == "delivered"
    assert rb.wants_ack()
    ack_b, _ = rb.create_event(kb.private_key, MEMBERSHIP_MARKET, [])
    assert ack_b.actions == () and ack_b.clock == {a: 1}
    assert ra.receive(ack_b.raw).status == "delivered"
    # Round one holds (every member's head covers e1), round two does not yet: a's head
    # does not cover b's acknowledgement.
    assert not ra.is_final(e1.id) and ra.finality().waiting_for == [a]
    assert ra.wants_ack()
    ack_a, _ = ra.create_event(ka.private_key, MEMBERSHIP_MARKET, [])
    assert ra.is_final(e1.id) and ra.final_key() == e1.key
    assert not ra.wants_ack()  # everything with actions is final: quiet
    report = ra.finality()
    assert (report.frontier, report.final_events, report.pending_events) == (e1.key, 1, 2)
    assert report.waiting_for == []
    assert rb.receive(ack_a.raw).status == "delivered" and rb.is_final(e1.id)
    # A new event is pending until b covers it; b's claims (heartbeat) only feed sync.
    e2, _ = ra.create_event(ka.private_key, "BTC-USD", [Place(Side.SELL, OrderType.LIMIT, 101, 1)])
    assert ra.on_heartbeat(b, {a: 3, b: 2}) is None
    assert ra.missing() == {b: (2, 2)}
    assert not ra.is_final(e2.id) and ra.final_key() == e1.key
    report = ra.finality()
    assert (report.final_events, report.pending_events) == (1, 3)
    assert report.waiting_for == [b]


def test_a_silent_member_stalls_finality_forever_rather_than_let_it_lie():
    """No liveness timeout: a member that never speaks holds finality back for ever, and
    `waiting_for` names it."""
    (ka, a), (_, b) = two_origins()
    ra = Replica(MARKETS, a, genesis=[a, b])
    events = [ra.create_event(ka.private_key, "BTC-USD",
                              [Place(Side.SELL, OrderType.LIMIT, 100 + i, 1)])[0]
              for i in range(20)]
    assert ra.final_key() is None and not any(ra.is_final(e.id) for e in events)
    report = ra.finality()
    assert (report.final_events, report.pending_events, report.waiting_for) == (0, 20, [b])
    alone = Replica(MARKETS, a, genesis=[a])  # a network of one: its own event is final
    e1, _ = alone.create_event(ka.private_key, "BTC-USD", [Place(Side.SELL, OrderType.LIMIT, 1, 1)])
    assert alone.is_final(e1.id) and alone.finality().pending_events == 0


def test_nothing_that_sorts_before_a_final_event_can_still_be_delivered():
    """What the old liveness timeout let happen (a late event sorting before final ones)
    cannot: a member's concurrent event is delivered before anything of its that covers
    ours, and a stranger's is refused. Late events are still applied in the total order."""
    (ka, a), (kb, b) = two_origins()
    kc = seeded_key_pair("c")
    c = peer_id_bytes(kc)
    ra, rb = Replica(MARKETS, a, genesis=[a, b]), Replica(MARKETS, b, genesis=[a, b])
    e1, _ = ra.create_event(ka.private_key, "BTC-USD", [Place(Side.SELL, OrderType.LIMIT, 100, 1)])
    concurrent, _ = rb.create_event(kb.private_key, "BTC-USD",
                                    [Place(Side.BUY, OrderType.LIMIT, 100, 1)])
    assert concurrent.key < e1.key  # same Lamport time, and it sorts first
    rb.receive(e1.raw)
    ack_b, _ = rb.create_event(kb.private_key, MEMBERSHIP_MARKET, [])
    assert ra.receive(ack_b.raw).status == "buffered"  # its cause `concurrent` is missing
    ra.create_event(ka.private_key, MEMBERSHIP_MARKET, [])
    assert not ra.is_final(e1.id)  # b's head here covers nothing of e1 yet
    receipt = ra.receive(concurrent.raw)
    assert receipt.delivered == [concurrent, ack_b] and receipt.rolled_back >= 1
    ra.create_event(ka.private_key, MEMBERSHIP_MARKET, [])
    assert ra.is_final(e1.id) and ra.is_final(concurrent.id)
    stranger = sign_event(kc.private_key, c, 1, {}, 1, "BTC-USD",
                          [Place(Side.BUY, OrderType.LIMIT, 100, 1)])
    assert stranger.key < e1.key
    before = fingerprint(ra)
    assert ra.receive(stranger.raw).code == "not_member"
    assert fingerprint(ra) == before
    assert ra.stats()["late_after_final"] == 0
    assert fingerprint(ra)[0] == feed([concurrent.raw, e1.raw, ack_b.raw]
                                      + [e.raw for e in ra.events_of(a)[1:]]).digest


def test_without_a_genesis_every_origin_is_admitted_and_nothing_is_final():
    (ka, a), (kb, b) = two_origins()
    ra = Replica(MARKETS, a)
    e1, _ = ra.create_event(ka.private_key, "BTC-USD", [Place(Side.SELL, OrderType.LIMIT, 100, 1)])
    other = sign_event(kb.private_key, b, 1, clock_of(e1), 2, "BTC-USD",
                       [Place(Side.BUY, OrderType.LIMIT, 90, 1)])
    assert ra.receive(other.raw).status == "delivered"
    assert ra.final_key() is None and not ra.is_final(e1.id) and not ra.wants_ack()
    assert ra.members() == [] and not ra.is_member(a)
    assert ra.finality().pending_events == 2


def test_a_newcomer_is_admitted_only_by_a_join_in_its_causal_past():
    (ka, a), (kb, b) = two_origins()
    ra = Replica(MARKETS, a, genesis=[a])
    place = [Place(Side.BUY, OrderType.LIMIT, 90, 1)]
    early = sign_event(kb.private_key, b, 1, {}, 1, "BTC-USD", place)
    assert ra.precheck(early) == "not_member" and ra.receive(early.raw).code == "not_member"
    assert not ra.is_member(b)
    join, _ = ra.create_event(ka.private_key, MEMBERSHIP_MARKET, [Join(b)])
    assert b in ra.membership.members  # a candidate from the join on
    assert ra.final_key() == join.key  # a alone acknowledges: its join is final at once
    assert ra.is_member(b) and ra.members() == [a, b]  # decided: effective
    assert ra.outcomes_of(join.id) == ["joined"]
    # Its seq-1 event must cover the join: one that does not is still refused.
    blind = sign_event(kb.private_key, b, 1, {}, 1, "BTC-USD",
                       [Place(Side.BUY, OrderType.LIMIT, 91, 1)])
    assert ra.receive(blind.raw).code == "not_member"
    first = sign_event(kb.private_key, b, 1, clock_of(join), 2, "BTC-USD", place)
    observer = Replica(MARKETS, genesis=[a])
    assert observer.receive(first.raw).status == "buffered"  # waits for the join
    # The join releases it; the join is final (a alone) so it is decided and delivered.
    assert observer.receive(join.raw).delivered == [join, first]
    assert observer.is_member(b) and observer.usage()["parked"] == 0
    assert ra.receive(first.raw).status == "delivered"
    assert observer.digest == ra.digest
    # With a second founder the join is not final on its own: b's first event waits,
    # parked, until c's acknowledgement makes the join final, and is delivered with it.
    kc = seeded_key_pair("newcomer-c")
    c = peer_id_bytes(kc)
    ra2 = Replica(MARKETS, a, genesis=[a, c])
    join2, _ = ra2.create_event(ka.private_key, MEMBERSHIP_MARKET, [Join(b)])
    first2 = sign_event(kb.private_key, b, 1, clock_of(join2), 2, "BTC-USD", place)
    receipt = ra2.receive(first2.raw)
    assert (receipt.status, receipt.code, receipt.delivered) == ("buffered", None, [])
    assert not ra2.is_member(b) and ra2.usage()["parked"] == 1
    ack = sign_event(kc.private_key, c, 1, clock_of(join2), 2, MEMBERSHIP_MARKET, [])
    assert ra2.receive(ack.raw).delivered == [ack]  # c covers the join; a's head not c's
    assert not ra2.is_member(b) and ra2.usage()["parked"] == 1
    a_ack, receipt = ra2.create_event(ka.private_key, MEMBERSHIP_MARKET, [])
    assert receipt.delivered == [a_ack, first2]  # a covers c's ack: the join is final
    assert ra2.is_member(b) and ra2.usage()["parked"] == 0


def test_an_event_on_a_forked_history_or_with_a_regressing_clock_is_rejected():
    """`fork`: a clock entry names a seq by another id than the event delivered here (its
    author saw the other version of an equivocation). `clock_regression`: an origin's
    event claims less of someone's history than its previous event did."""
    (ka, a), (kb, b) = two_origins()
    a1 = sign_event(ka.private_key, a, 1, {}, 1, "BTC-USD",
                    [Place(Side.SELL, OrderType.LIMIT, 1, 1)])
    a1_other = sign_event(ka.private_key, a, 1, {}, 1, "BTC-USD",
                          [Place(Side.SELL, OrderType.LIMIT, 2, 1)])
    b1 = sign_event(kb.private_key, b, 1, clock_of(a1_other), 2, "BTC-USD",
                    [Place(Side.BUY, OrderType.LIMIT, 1, 1)])
    replica = feed([a1.raw])
    before = fingerprint(replica)
    receipt = replica.receive(b1.raw)
    assert (receipt.status, receipt.code) == ("rejected", "fork")
    # Buffered first, refused when its causes arrive: the same verdict.
    later = Replica(MARKETS)
    assert later.receive(b1.raw).status == "buffered"
    assert later.receive(a1.raw).status == "delivered"
    assert later.stats()["rejected"] == {"fork": 1} and later.event(b1.id) is None
    assert fingerprint(replica) == before == fingerprint(later)
    b1 = sign_event(kb.private_key, b, 1, clock_of(a1), 2, "BTC-USD",
                    [Place(Side.BUY, OrderType.LIMIT, 1, 1)])
    b2 = sign_event(kb.private_key, b, 2, clock_of(b1), 3, "BTC-USD",  # forgets a's seq 1
                    [Place(Side.BUY, OrderType.LIMIT, 2, 1)])
    replica = feed([a1.raw, b1.raw])
    before = fingerprint(replica)
    receipt = replica.receive(b2.raw)
    assert (receipt.status, receipt.code) == ("rejected", "clock_regression")
    assert fingerprint(replica) == before


def test_heartbeats_are_sync_hints_and_bad_ones_are_refused():
    replica = Replica(MARKETS)
    assert replica.on_heartbeat(b"x", {b"y": 1.5}) == "bad_heartbeat"
    assert replica.on_heartbeat(b"x", {b"y": -1}) == "bad_heartbeat"
    assert replica.on_heartbeat(b"x", "1") == "bad_heartbeat"  # type: ignore[arg-type]
    assert replica.on_heartbeat("x", {}) == "bad_heartbeat"  # type: ignore[arg-type]
    assert replica.missing() == {}  # a refused heartbeat leaves nothing behind
    assert replica.on_heartbeat(b"x", {b"y": 5}) is None
    assert replica.missing() == {b"y": (1, 5)}
    # Heartbeats carry no Lamport time any more, so none is stale: an older one is
    # accepted and the claim it makes never lowers what we know exists.
    assert replica.on_heartbeat(b"x", {b"y": 4}) is None
    assert replica.missing() == {b"y": (1, 5)}


def test_buffer_is_bounded_in_bytes_and_keeps_the_events_nearest_delivery():
    history = simulate_history(9, MARKETS, origins=1, steps=10)
    room = sum(buffered_size(e) for e in history[1:4])  # seqs 2, 3, 4 fit exactly
    forward = Replica(MARKETS, buffer_bytes_max=room, buffer_origin_bytes_max=room)
    codes = [forward.receive(e.raw).code for e in history[1:]]
    assert codes.count("buffer_full") == len(history) - 1 - 3  # each newcomer is furthest
    assert forward.stats()["events_buffered"] == 3 and forward.stats()["buffer_bytes"] == room
    backward = Replica(MARKETS, buffer_bytes_max=room, buffer_origin_bytes_max=room)
    for e in reversed(history[1:]):  # each newcomer is nearer: the furthest makes room
        assert backward.receive(e.raw).status == "buffered"
    assert backward.stats()["buffer_evicted"] == len(history) - 1 - 3
    assert backward.receive(history[0].raw).delivered == history[:4]
    for replica in (forward, backward):
        for e in history:  # what was refused comes back later, as sync would send it
            replica.receive(e.raw)
        assert replica.stats()["events_delivered"] == len(history)
        assert replica.usage()["buffer_bytes"] == 0 and replica.missing() == {}


def test_own_seq_continues_after_replaying_the_store():
    (ka, a), _ = two_origins()
    ra = Replica(MARKETS, a)
    events = [ra.create_event(ka.private_key, "ETH-USD",
                              [Place(Side.BUY, OrderType.LIMIT, 50, 1)])[0] for _ in range(3)]
    restarted = feed([e.raw for e in events], origin=a)
    nxt, _ = restarted.create_event(ka.private_key, "ETH-USD", [Cancel(events[0].order_id(0))])
    assert nxt.seq == 4 and nxt.lamport == 4


def test_pure_core_imports_no_io():
    import ast
    import pathlib
    forbidden = {"trio", "sqlite3", "time", "random", "socket", "asyncio", "datetime", "os"}
    root = pathlib.Path(__file__).parent.parent / "p2pexchange"
    for name in ("book", "clock", "events", "replica", "market"):
        tree = ast.parse((root / "core" / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                mods = [node.module or ""]
            else:
                continue
            for mod in mods:
                top = mod.split(".")[0]
                assert top not in forbidden, f"{name}.py imports {mod}"
                if top == "libp2p":
                    assert mod.split(".")[1] in ("crypto", "peer"), f"{name}.py imports {mod}"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_creators_and_observers_agree_once_all_is_delivered(seed):
    history = simulate_history(seed, MARKETS, origins=3, steps=30, deliver_prob=0.3)
    rng = random.Random(seed)
    replicas = [feed(shuffled_with_duplicates([e.raw for e in history], rng)) for _ in range(3)]
    assert len({fingerprint(r) for r in replicas}) == 1


def test_a_node_that_lost_its_history_refuses_to_reuse_a_seq():
    """Our own signature on a seq we lack proves our store lost history: creating an event
    would reuse a seq (equivocation). Only our key can make that proof, so nobody else can
    freeze us with it; a peer's claim alone (heartbeat, clock) is rejected instead."""
    (ka, a), (kb, b) = two_origins()
    ra = Replica(MARKETS, a)
    old = [ra.create_event(ka.private_key, "BTC-USD",
                           [Place(Side.BUY, OrderType.LIMIT, 10, 1)])[0] for _ in range(2)]
    amnesiac = Replica(MARKETS, a)  # same key, its store lost (an old backup restored)
    assert amnesiac.on_heartbeat(b, {a: 2}) == "impossible_clock"
    assert amnesiac.receive(old[1].raw).status == "buffered"  # our own seq 2 comes back
    with pytest.raises(OwnHistoryBehind):
        amnesiac.create_event(ka.private_key, "BTC-USD", [Place(Side.BUY, OrderType.LIMIT, 10, 1)])
    assert amnesiac.missing() == {a: (1, 1)}
    assert amnesiac.receive(old[0].raw).delivered == old  # sync brings our history back
    nxt, _ = amnesiac.create_event(ka.private_key, "BTC-USD",
                                   [Place(Side.BUY, OrderType.LIMIT, 10, 1)])
    assert nxt.seq == 3


def test_a_buffered_event_that_fails_at_delivery_is_named_in_the_releasing_receipt():
    """An event that waited for its cause and then fails a delivery check (here a wrong
    Lamport time) is reported with its code in the receipt of the input that released
    it, so the shell can hold its signer to account; the releasing event is delivered."""
    ka, kb = seeded_key_pair("drop-a"), seeded_key_pair("drop-b")
    a, b = peer_id_bytes(ka), peer_id_bytes(kb)
    place = [Place(Side.SELL, OrderType.LIMIT, 100, 1)]
    cause = sign_event(ka.private_key, a, 1, {}, 1, "BTC-USD", place)
    waiter = sign_event(kb.private_key, b, 1, clock_of(cause), 7, "BTC-USD", place)  # not 2
    replica = Replica(MARKETS)
    assert replica.receive(waiter.raw).status == "buffered"
    receipt = replica.receive(cause.raw)
    assert receipt.status == "delivered" and receipt.delivered == [cause]
    assert [(e.id, code) for e, code in receipt.dropped] == [(waiter.id, "bad_lamport")]
    assert replica.stats()["rejected"] == {"bad_lamport": 1}


def test_a_version_that_can_be_delivered_displaces_a_buffered_one_that_never_can():
    """An equivocator signs a seq twice: one version names a cause that never exists
    and reaches this replica first (it waits in the buffer), the other can be delivered
    now. The deliverable one takes its place (the proof is kept), so the liar cannot
    keep this replica from the version everyone else holds; a delivered version is
    never displaced."""
    ka, kb = seeded_key_pair("displace-a"), seeded_key_pair("displace-b")
    a, b = peer_id_bytes(ka), peer_id_bytes(kb)
    place = [Place(Side.SELL, OrderType.LIMIT, 100, 1)]
    lie = sign_event(ka.private_key, a, 1, {b: (2**40, NO_SUCH_EVENT)}, 2**40 + 1, "BTC-USD",
                     place)
    real = sign_event(ka.private_key, a, 1, {}, 1, "BTC-USD", place)
    replica = Replica(MARKETS)
    assert replica.receive(lie.raw).status == "buffered"
    assert replica.precheck(real) is None  # gossip forwards it
    receipt = replica.receive(real.raw)
    assert receipt.status == "delivered" and receipt.delivered == [real]
    assert set(replica.equivocations[(a, 1)]) == {lie.raw, real.raw}
    assert replica.stats()["events_buffered"] == 0 and replica.stats()["displaced"] == 1
    assert replica.receive(lie.raw).code == "equivocation"  # delivered: never displaced
    assert replica.precheck(lie) == "equivocation"
