"""Compaction (core/settled.py): a replica that keeps what is final in compact form
answers exactly as one that keeps everything whole, whatever the arrival order and
whenever it compacts; what compaction cannot keep (an event's bytes) it names for the
store to supply."""

from __future__ import annotations

import gc
import random

import pytest
import trio

from p2pexchange.core.book import OrderBook
from p2pexchange.core.events import Cancel, Event, OrderType, Place, Side, sign_event
from p2pexchange.core.ledger import Ledger
from p2pexchange.core.market import DEFAULT_MARKETS
from p2pexchange.core.orders import CANCEL_NOT_OPEN, OrderStatus
from p2pexchange.core.replica import Replica
from p2pexchange.core.settled import Chain, Settled, pack
from p2pexchange.sim.workload import OrderFlow, peer_id_bytes, seeded_key_pair

MEMBERS = 4


def history(n: int, seed: int, empty_every: int = 5) -> tuple[list[bytes], list[Event]]:
    """`n` events of `MEMBERS` genesis members, with order flow and an empty event (an
    acknowledgement) every `empty_every`. Each member has seen a random, growing prefix
    of the history when it signs, so many events are concurrent and name causes that
    are no longer their origins' latest events."""
    keys = [seeded_key_pair(f"compaction-{seed}-{i}") for i in range(MEMBERS)]
    origins = [peer_id_bytes(k) for k in keys]
    rng = random.Random(seed)
    flows = [OrderFlow(random.Random(rng.random())) for _ in range(MEMBERS)]
    prefix_heads: list[dict[bytes, Event]] = [{}]  # after k events: each origin's latest
    seen = [0] * MEMBERS  # how much of the history each member has seen
    own: list[Event | None] = [None] * MEMBERS
    events: list[Event] = []
    for k in range(n):
        i = k % MEMBERS if k < MEMBERS else rng.randrange(MEMBERS)
        seen[i] = rng.randint(seen[i], k)
        view = dict(prefix_heads[seen[i]])
        if own[i] is not None:
            view[origins[i]] = own[i]
        empty = k % empty_every == empty_every - 1
        actions = [] if empty else [flows[i].next_action() for _ in range(rng.randint(1, 3))]
        event = sign_event(keys[i].private_key, origins[i], own[i].seq + 1 if own[i] else 1,
                           {o: (e.seq, e.id) for o, e in view.items()},
                           1 + max((e.lamport for e in view.values()), default=0),
                           "" if empty else "BTC-USD", actions)
        own[i] = event
        flows[i].placed([event.order_id(j) for j in range(len(actions))])
        events.append(event)
        prefix_heads.append({**prefix_heads[-1], origins[i]: event})
    return origins, events


def picture(replica: Replica) -> tuple:
    f = replica.finality()
    return (replica.digest, replica.trades(), f.frontier, f.final_events, f.final_trades,
            f.pending_events, f.waiting_for, replica.applied_ids(),
            {m: b.snapshot() for m, b in replica.books.items()}, replica.clock,
            [replica.outcomes_of(i) for i in replica.applied_ids()])


def orders(replica: Replica) -> dict[bytes, dict]:
    return {i: o.as_dict() for b in replica.books.values() for i, o in b.orders.items()}


def assert_same_orders(whole: Replica, compact: Replica) -> None:
    """The compacting replica's books know each order as the whole one's do, except the
    orders that left in a final step, which they forget (a cancel of one has the same
    outcome all the same: `picture` compares every outcome)."""
    known, every = orders(compact), orders(whole)
    assert known == {i: every[i] for i in known}
    final = {i for i in compact.applied_ids()[:compact.ledger.settled]}
    for i in every.keys() - known.keys():
        assert every[i]["status"] in ("filled", "cancelled", "rejected"), every[i]
        assert i[:32] in final, every[i]


def assert_same_receipts(first: Replica, second: Replica, batch: list[Event]) -> None:
    """Both replicas take in `batch` and give the same receipts."""
    got = [(r.status, r.code, len(r.delivered), r.rolled_back)
           for r in first.receive_many([e.raw for e in batch])]
    assert got == [(r.status, r.code, len(r.delivered), r.rolled_back)
                   for r in second.receive_many([e.raw for e in batch])]


@pytest.mark.parametrize("seed", range(6))
def test_a_compacting_replica_answers_as_a_whole_one_in_any_order(seed):
    genesis, events = history(400, seed)
    rng = random.Random(seed)
    order = events[:]
    rng.shuffle(order)  # causes arrive late: buffering, rollbacks, late acknowledgements
    whole = Replica(DEFAULT_MARKETS, genesis=genesis)
    compact = Replica(DEFAULT_MARKETS, genesis=genesis)
    by_id = {e.id: e for e in events}
    k = 0
    while k < len(order):
        batch = order[k:k + rng.randint(1, 40)]
        k += len(batch)
        assert_same_receipts(whole, compact, batch)
        if rng.random() < 0.5:
            compact.compact()
        assert picture(whole) == picture(compact)
        assert_same_orders(whole, compact)
        # Sync answers: the same events, settled ones named for the store to supply.
        theirs = {o: s // 2 for o, s in whole.clock.items()}
        served = compact.events_for(theirs, 10_000)
        assert [i if type(i) is bytes else by_id[compact.events_of(i[0], i[1] - 1)[0].id].raw
                for i in served] == whole.events_for(theirs, 10_000)
    settled = compact.compact()
    assert settled > 200, settled  # most of it was final, and so settled
    assert sum(type(e) is Settled for o in compact.clock for e in compact.events_of(o)) \
        == settled
    assert picture(whole) == picture(compact)
    assert_same_orders(whole, compact)
    assert len(orders(compact)) < len(orders(whole)) // 2  # most orders were final
    ids = whole.applied_ids()
    assert [(compact.event(i).key, compact.is_final(i), compact.trades_of(i)) for i in ids] \
        == [(whole.event(i).key, whole.is_final(i), whole.trades_of(i)) for i in ids]
    assert compact.recent_trades(25) == whole.recent_trades(25)
    for o in whole.clock:
        for count in (1, 5, 10_000):
            assert [e.id for e in compact.last_events(o, count)] \
                == [e.id for e in whole.events_of(o)[-count:]]
    compact.check_invariants()


def test_what_compaction_keeps_is_not_scanned_by_the_collector():
    """Settled events and settled trades are kept as plain tuples of strings, bytes
    and integers, which the collector stops tracking after one pass: its full passes
    then cost what is open (books, the non-final tail), not the history."""
    genesis, events = history(400, 11)
    replica = Replica(DEFAULT_MARKETS, genesis=genesis)
    replica.receive_many([e.raw for e in events])
    settled = replica.compact()
    assert settled > 200, settled
    gc.collect()
    kept = [e for chain in replica._events.values() for e in list.__iter__(chain)
            if type(e) is tuple]
    assert len(kept) >= settled - len(genesis), len(kept)  # (membership events stay whole)
    trades = replica.ledger._settled_trades
    assert len(trades) > 20, len(trades)
    tracked = [x for x in [*kept, *trades, *replica._by_id.values()]
               if type(x) is tuple and gc.is_tracked(x)]
    assert tracked == []
    assert replica.trades() == whole_of(genesis, events).trades()  # read back as Trades


def test_a_chain_reads_a_packed_event_as_settled_however_it_is_read():
    """By index (also from the end), by slice, forwards and backwards, a chain gives
    whole events as they are and packed ones as `Settled` with the event's fields."""
    _, events = history(12, 3)
    origin = events[0].origin
    own = [e for e in events if e.origin == origin]
    assert len(own) >= 3
    chain = Chain(own)
    list.__setitem__(chain, 0, pack(own[0]))
    list.__setitem__(chain, 1, pack(own[1]))
    reads = [chain[0], chain[-len(own)], chain[:2][0], next(iter(chain)), list(reversed(chain))[-1]]
    for read in reads:
        assert type(read) is Settled
        assert (read.id, read.key, read.lamport, read.origin, read.seq, read.market,
                dict(read.clock), read.order_id(3)) == \
            (own[0].id, own[0].key, own[0].lamport, own[0].origin, own[0].seq, own[0].market,
             dict(own[0].clock), own[0].order_id(3))
    assert own[1].clock and dict(chain[1].clock) == dict(own[1].clock)
    assert chain[1].key == own[1].key and chain[2] is own[2] and chain[-1] is own[-1]
    assert [e.id for e in chain] == [e.id for e in own] == [e.id for e in chain[:]]
    assert [type(e) for e in chain[1:3]] == [Settled, Event]


def whole_of(genesis: list[bytes], events: list[Event]) -> Replica:
    replica = Replica(DEFAULT_MARKETS, genesis=genesis)
    replica.receive_many([e.raw for e in events])
    return replica


def test_an_empty_event_among_settled_entries_goes_in_and_changes_no_digest():
    """An acknowledgement that sorts among final entries (a member that left may still
    sign one) goes in without rolling a book back, and the digest after it, and after
    every entry, is the one a ledger that settled nothing computes by undoing and
    applying again: an event without actions does not extend the digest (state_machine.md
    section 7), so nothing is chained again."""
    _, events = history(200, 7, empty_every=4)
    late = next(e for e in events[100:] if not e.actions)
    rest = sorted((e for e in events if e is not late), key=lambda e: e.key)
    whole, settled = Ledger(DEFAULT_MARKETS), Ledger(DEFAULT_MARKETS)
    whole.apply(rest)
    settled.apply(rest)
    settled.settle(len(settled))
    before = settled.digest
    assert whole.digest == before
    # Neither undoes anything: the settled one puts it in among settled records, the
    # whole one among its entries (Ledger._insert_empty); both are what a ledger that
    # was handed every event in order holds.
    assert whole.apply([late]) == (0, [[]])
    assert settled.apply([late]) == (0, [[]])
    in_order = Ledger(DEFAULT_MARKETS)
    in_order.apply(sorted(events, key=lambda e: e.key))
    assert whole.digest == settled.digest == in_order.digest == before
    assert whole.event_ids() == settled.event_ids() == in_order.event_ids()
    digests = [e.digest for e in whole._applied]
    assert digests == [e.digest for e in in_order._applied]
    assert [(e.acts_upto, e.trades_upto) for e in whole._applied] == \
        [(e.acts_upto, e.trades_upto) for e in in_order._applied]
    at = whole.event_ids().index(late.id)
    assert at > 0 and digests[at] == digests[at - 1]  # the late one left it as it was
    # A settled ledger keeps no entry whole and, of the digests, only the one after its
    # last settled entry: the one that later entries chain on.
    assert settled._applied == [] and settled._settled_digest == digests[-1]
    assert [whole.trades_in_first(n) for n in range(len(whole))] == \
        [settled.trades_in_first(n) for n in range(len(settled))]


def test_an_event_with_actions_among_settled_entries_is_an_alarm_and_changes_nothing_final():
    """The commit rule says it cannot happen (only more dishonest members than it
    tolerates could make it). A settled ledger cannot undo final entries: it takes the
    event as empty, keeps what was final, and counts and describes the breach for the
    node's status (the simulation reports it as a finality violation, and so caught the
    mutations of tests/test_simulation.py)."""
    _, events = history(200, 8)
    late = next(e for e in events[100:] if e.actions)
    rest = sorted((e for e in events if e is not late), key=lambda e: e.key)
    ledger = Ledger(DEFAULT_MARKETS)
    ledger.apply(rest)
    ledger.settle(len(ledger))
    trades, books = ledger.trades(), {m: b.snapshot() for m, b in ledger.books.items()}
    assert ledger.apply([late]) == (0, [[]])
    assert ledger.broken == 1 and "sorts before final events" in ledger.broken_detail
    assert ledger.trades() == trades
    assert {m: b.snapshot() for m, b in ledger.books.items()} == books
    assert ledger.outcomes_of(late.id) == ["void"] * len(late.actions)


def test_settled_books_keep_no_undo_records_for_what_is_final():
    genesis, events = history(600, 9)
    replica = Replica(DEFAULT_MARKETS, genesis=genesis)
    replica.receive_many([e.raw for e in events])
    book = replica.books["BTC-USD"]
    log_before = len(book.log)
    replica.compact()
    assert len(book.log) < log_before // 10, (len(book.log), log_before)
    # Rolling back what is not final still works: a late event that is not final yet.
    replica.check_invariants()
    book.check_invariants()


def test_a_book_forgets_the_orders_that_left_it_before_the_settled_mark():
    """An order that left the book in a settled step (it never rested, or it left its
    level) is forgotten, its links to where it stood cleared, and handed back to the
    caller as it was. One that rested in a settled step and was filled in a step that
    may still be rolled back is kept: undoing the fill puts it back, and it stays
    cancellable."""
    alice, bob = b"a" * 38, b"b" * 38
    book = OrderBook("BTC-USD")
    gone = book.place(b"g" * 34, alice, Place(Side.BUY, OrderType.LIMIT, 100, 5), b"e1")
    assert book.cancel(gone.order_id, alice) is None
    ioc = book.place(b"i" * 34, bob, Place(Side.SELL, OrderType.IOC, 120, 5), b"e2")
    maker = book.place(b"m" * 34, alice, Place(Side.BUY, OrderType.LIMIT, 110, 5), b"e3")
    shown = {o.order_id: o.as_dict() for o in (gone, ioc, maker)}
    mark = book.mark()
    book.place(b"t" * 34, bob, Place(Side.SELL, OrderType.LIMIT, 110, 5), b"e4")
    assert maker.status is OrderStatus.FILLED
    assert gone.prev is not None
    closed = book.settle(mark)
    assert sorted(o.order_id for o in closed) == [gone.order_id, ioc.order_id]
    assert gone.prev is gone.next is None
    assert {o.order_id: o.as_dict() for o in closed} == \
        {i: shown[i] for i in (gone.order_id, ioc.order_id)}
    assert gone.order_id not in book.orders and ioc.order_id not in book.orders
    assert book.cancel(gone.order_id, alice) == CANCEL_NOT_OPEN  # as before it was forgotten
    assert maker.prev is not None and maker.next is not None  # the fill after the mark
    book.rollback(mark)
    assert maker.status is OrderStatus.RESTING and maker.as_dict() == shown[maker.order_id]
    assert book.cancel(maker.order_id, alice) is None
    book.check_invariants()


def test_a_cancel_of_a_forgotten_order_has_the_outcome_it_had_before():
    """Once its book forgot an order (it left in a final step), a cancel naming it has
    the outcome it has on a ledger that settled nothing: `not_open`, for its origin and
    for another alike, as for an id that no place made (another market, the index of a
    cancel, an index past the event's actions): state_machine.md §4. The ledger still
    knows who placed a forgotten order (for the API), and only for a place."""
    keys = [seeded_key_pair(f"forgotten-{i}") for i in range(2)]
    alice, bob = (peer_id_bytes(k) for k in keys)
    limit = Place(Side.BUY, OrderType.LIMIT, 10_000, 1)
    placed = sign_event(keys[0].private_key, alice, 1, {}, 1, "BTC-USD",
                        [limit, Cancel(b"x" * 34), limit])
    eth = sign_event(keys[0].private_key, alice, 2, {alice: (1, placed.id)}, 2, "ETH-USD",
                     [limit])
    names = [placed.order_id(0), placed.order_id(1), placed.order_id(2), placed.order_id(3),
             eth.order_id(0), b"z" * 34]
    closing = sign_event(keys[0].private_key, alice, 3, {alice: (2, eth.id)}, 3, "BTC-USD",
                         [Cancel(placed.order_id(0)), Cancel(placed.order_id(2))])
    later = [sign_event(keys[k].private_key, (alice, bob)[k], (4, 1)[k],
                        {alice: (3, closing.id)}, 4, "BTC-USD", [Cancel(i) for i in names])
             for k in (0, 1)]
    whole, settled = Ledger(DEFAULT_MARKETS), Ledger(DEFAULT_MARKETS)
    for ledger in (whole, settled):
        ledger.apply([placed, eth, closing])
    assert whole.outcomes_of(closing.id) == ["cancelled", "cancelled"]
    forgotten = settled.settle(len(settled))
    assert {o.order_id for o in forgotten} == {placed.order_id(0), placed.order_id(2)}
    book = settled.books["BTC-USD"]
    assert placed.order_id(0) not in book.orders and placed.order_id(2) not in book.orders
    for ledger in (whole, settled):
        ledger.apply(sorted(later, key=lambda e: e.key))
    expected = [CANCEL_NOT_OPEN] * len(names)
    assert settled.outcomes_of(later[0].id) == whole.outcomes_of(later[0].id) == expected
    assert settled.outcomes_of(later[1].id) == whole.outcomes_of(later[1].id) == expected
    assert settled.digest == whole.digest
    assert settled.settled_placer(placed.order_id(2)) == alice
    assert settled.settled_placer(placed.order_id(1)) is None  # a cancel's index
    assert settled.settled_placer(eth.order_id(0)) == alice
    assert settled.settled_placer(eth.order_id(0), "BTC-USD") is None


@pytest.mark.network
async def test_nodes_that_compact_serve_a_late_joiner_and_a_restart_from_their_store(
        tmp_path, monkeypatch):
    """Real hosts: two nodes compact every few stored events; a late joiner's sync is
    answered with settled events read from the store, and a restarted node replays its
    store compacting as it goes; all hold one digest."""
    from harness import network

    import p2pexchange.intake
    from p2pexchange.core.events import OrderType, Place, Side

    monkeypatch.setattr(p2pexchange.intake, "COMPACT_EVERY_EVENTS", 4)
    async with network(tmp_path) as net:
        first = await net.start("n0")
        other = await net.start("n1", bootstrap=first)
        for k in range(40):
            node = first if k % 2 else other
            node.submit("BTC-USD", Place(Side.BUY if k % 3 else Side.SELL, OrderType.LIMIT,
                                         9_990 + k % 7, 1))
            await node.flush()
        await net.converged(events=40)
        with trio.fail_after(30):  # acknowledgements make nearly everything final
            while first.replica.finality().final_events < 40:
                await trio.sleep(0.1)
        first.replica.compact()
        settled = sum(type(e) is Settled for o in first.replica.clock
                      for e in first.replica.events_of(o))
        assert settled >= 30, settled
        late = await net.start("late", bootstrap=first)
        await net.converged(events=40)
        assert late.replica.digest == first.replica.digest
        await net.stop(other)
        again = await net.start("n1", bootstrap=first)
        assert sum(type(e) is Settled for o in again.replica.clock
                   for e in again.replica.events_of(o)) > 0
        await net.converged(events=40)
        assert again.replica.digest == first.replica.digest == late.replica.digest


def test_a_second_version_of_a_settled_event_still_makes_a_proof(tmp_path):
    """The replica keeps no bytes of a settled event; the node's intake takes the first
    version from its store, so the proof of equivocation is kept all the same."""
    from p2pexchange.feed import Feed
    from p2pexchange.intake import Intake
    from p2pexchange.net.rejections import Rejections
    from p2pexchange.store import EventStore

    genesis, events = history(200, 11)
    keys = {peer_id_bytes(k): k for k in
            (seeded_key_pair(f"compaction-11-{i}") for i in range(MEMBERS))}
    replica = Replica(DEFAULT_MARKETS, genesis=genesis)
    store = EventStore(str(tmp_path / "events.sqlite3"))
    intake = Intake(replica, store, Feed(), Rejections(), want_sync=lambda peer: None)
    intake.receive([(e.raw, "sync", None) for e in events])
    replica.compact()
    first = next(e for e in events if type(replica.events_of(e.origin, e.seq - 1)[0])
                 is Settled and e.seq > 1)
    clock = {o: (s, replica.events_of(o, s - 1)[0].id) for o, s in first.clock.items()}
    second = sign_event(keys[first.origin].private_key, first.origin, first.seq, clock,
                        first.lamport, "BTC-USD", [OrderFlow(random.Random(1)).next_action()])
    assert second.id != first.id
    (receipt,) = intake.receive([(second.raw, "sync", None)])
    assert receipt.code == "equivocation"
    assert replica.equivocations[(first.origin, first.seq)] == (first.raw, second.raw)
    store.close()


def test_recent_trades_are_the_tail_of_all_trades_settled_or_not():
    """`recent_trades(n)` reads from the newest entries back (the API's trade list costs
    what it returns) and equals the last n of every trade, before and after settling."""
    _, events = history(300, 9)
    ledger = Ledger(DEFAULT_MARKETS)
    ledger.apply(sorted(events, key=lambda e: e.key))
    every = ledger.trades()
    assert len(every) > 20
    for settle in (0, len(ledger) // 2):
        ledger.settle(settle)
        for n in (0, 1, 7, len(every) // 2, len(every), len(every) + 10):
            assert ledger.recent_trades(n) == (every[-n:] if n else []), n


def test_a_replica_still_shows_its_own_last_forgotten_orders(monkeypatch):
    """The books forget closed orders; a replica keeps its own origin's last
    OWN_CLOSED_MAX of them for queries (the API's list of the orders it placed), and
    none of another origin's."""
    import p2pexchange.core.replica as replica_module

    monkeypatch.setattr(replica_module, "OWN_CLOSED_MAX", 5)
    genesis, events = history(400, 12)
    me = genesis[0]
    whole = Replica(DEFAULT_MARKETS, genesis=genesis)
    compact = Replica(DEFAULT_MARKETS, origin=me, genesis=genesis)
    for replica in (whole, compact):
        replica.receive_many([e.raw for e in events])
    compact.compact()
    forgotten = orders(whole).keys() - orders(compact).keys()
    mine = [i for i in forgotten if whole.order(i).origin == me]
    assert len(mine) > 5 and len(forgotten) > len(mine)
    shown = [i for i in forgotten if compact.order(i) is not None]
    assert len(shown) == 5 and all(compact.order(i).origin == me for i in shown)
    assert all(compact.order(i).as_dict() == whole.order(i).as_dict() for i in shown)


def test_the_intake_compacts_after_so_many_actions_as_well_as_events(tmp_path, monkeypatch):
    """Under load an event carries hundreds of orders: the intake compacts every
    COMPACT_EVERY_ACTIONS stored actions too, so one compaction never frees the orders
    of a thousand such events at once."""
    import p2pexchange.intake
    from p2pexchange.feed import Feed
    from p2pexchange.intake import Intake
    from p2pexchange.net.rejections import Rejections
    from p2pexchange.store import EventStore

    genesis, events = history(200, 13)
    actions = sum(len(e.actions) for e in events)
    monkeypatch.setattr(p2pexchange.intake, "COMPACT_EVERY_EVENTS", 10_000)
    settled = []
    for every in (actions * 10, 40):
        monkeypatch.setattr(p2pexchange.intake, "COMPACT_EVERY_ACTIONS", every)
        replica = Replica(DEFAULT_MARKETS, genesis=genesis)
        store = EventStore(str(tmp_path / f"events-{every}.sqlite3"))
        intake = Intake(replica, store, Feed(), Rejections(), want_sync=lambda peer: None)
        for k in range(0, len(events), 10):
            intake.receive([(e.raw, "sync", None) for e in events[k:k + 10]])
            while intake.compaction_due:  # as `Intake.run` does, in steps of their own
                intake.compact()
        settled.append(sum(type(e) is Settled for o in replica.clock
                           for e in replica.events_of(o)))
        store.close()
    assert settled[0] == 0 and settled[1] > 100, settled


async def test_the_intake_s_task_compacts_what_is_due_in_steps_even_when_nothing_arrives(
        tmp_path, monkeypatch, autojump_clock):
    """Compaction made due by stored events (ours too: the node's `_seal` stores them)
    runs in `Intake.run`'s own steps, bounded, until all that is final is settled, also
    while no event arrives (it waits `COMPACT_IDLE_S` at most for one)."""
    import p2pexchange.intake
    from p2pexchange.feed import Feed
    from p2pexchange.intake import COMPACT_IDLE_S, Intake
    from p2pexchange.net.rejections import Rejections
    from p2pexchange.store import EventStore

    monkeypatch.setattr(p2pexchange.intake, "COMPACT_EVERY_ACTIONS", 40)
    monkeypatch.setattr(p2pexchange.intake, "COMPACT_STEP_ACTIONS", 5)
    genesis, events = history(200, 17)
    replica = Replica(DEFAULT_MARKETS, genesis=genesis)
    store = EventStore(str(tmp_path / "events.sqlite3"))
    intake = Intake(replica, store, Feed(), Rejections(), want_sync=lambda peer: None)
    intake.receive([(e.raw, "sync", None) for e in events])  # as the node's own would be
    assert intake.compaction_due and replica.ledger.settled == 0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(intake.run)
        await trio.sleep(COMPACT_IDLE_S / 2)
        assert 0 < replica.ledger.settled  # (the first step ran at once)
        await trio.sleep(2 * COMPACT_IDLE_S)
        nursery.cancel_scope.cancel()
    assert not intake.compaction_due and replica.compacted
    whole = Replica(DEFAULT_MARKETS, genesis=genesis)
    whole.receive_many([e.raw for e in events])
    assert replica.ledger.settled == whole.compact() > 100 and replica.digest == whole.digest
    store.close()


@pytest.mark.parametrize("seed", range(4))
def test_compaction_in_bounded_steps_settles_so_much_per_step_and_ends_as_one_whole(seed):
    """`compact(actions_max)` (the node's compaction steps, intake.py) settles entries
    carrying at most `actions_max` actions per call, or a single entry, in the applied
    order; called until `compacted`, it leaves what one unbounded call leaves: digest,
    books, checkpoints, what is settled and what is forgotten, sync answers."""
    genesis, events = history(500, seed)
    rng = random.Random(seed)
    order = []
    for i in range(0, len(events), 40):
        order += rng.sample(events[i:i + 40], len(events[i:i + 40]))
    whole = Replica(DEFAULT_MARKETS, genesis=genesis, checkpoint_every=8, forgets=True)
    steps = Replica(DEFAULT_MARKETS, genesis=genesis, checkpoint_every=8, forgets=True)
    plain = Replica(DEFAULT_MARKETS, genesis=genesis)  # never compacts: every id in order
    by_id = {e.id: e for e in events}
    bounded = 0
    for k in range(0, len(order), 25):
        batch = order[k:k + 25]
        assert_same_receipts(whole, steps, batch)
        plain.receive_many([e.raw for e in batch])
        whole.compact()
        left_behind = rng.random() < 0.3  # then a few steps only, the rest later
        for _ in range(rng.randint(1, 3) if left_behind else 10_000):
            bound = rng.randint(1, 6)
            before = steps.ledger.forgotten + steps.ledger.settled
            steps.compact(bound)
            after = steps.ledger.forgotten + steps.ledger.settled
            actions = sum(len(by_id[i].actions) for i in plain.applied_ids()[before:after])
            assert actions <= bound or after - before == 1, (before, after, actions, bound)
            bounded += not steps.compacted
            if steps.compacted:
                break
    while not steps.compacted:
        steps.compact(rng.randint(1, 6))
    assert bounded > 10, bounded  # the bound was reached, often
    assert steps.ledger.settled + steps.ledger.forgotten == \
        whole.ledger.settled + whole.ledger.forgotten > 300
    assert (steps.digest, steps.checkpoints) == (whole.digest, whole.checkpoints)
    assert {m: b.snapshot() for m, b in steps.books.items()} == \
        {m: b.snapshot() for m, b in whole.books.items()}
    # Each forgets up to the checkpoint before its last complete compaction: the same
    # history, forgotten as far in both or further in one.
    held = sorted((steps.applied_ids(), whole.applied_ids()), key=len)
    assert steps.ledger.forgotten > 0 and held[0] == held[1][len(held[1]) - len(held[0]):]
    theirs = {o: max(c.base, steps._events[o].base) for o, c in whole._events.items()}
    assert steps.events_for(theirs, 10_000) == whole.events_for(theirs, 10_000)
    steps.check_invariants()


@pytest.mark.parametrize("seed", range(6))
def test_a_replica_that_forgets_what_its_checkpoints_cover_decides_as_a_whole_one(seed):
    """A replica that drops from memory what each of its checkpoints covers (the node
    does: `forgets`) gives every receipt, the digest, the books, the frontier, the final
    counts, the checkpoints and, for every event it still holds, the outcomes and trades
    a replica that keeps everything gives, in any order of arrival: later events name
    causes far below the checkpoints (each member signs having seen a random old prefix)."""
    genesis, events = history(600, seed)
    rng = random.Random(seed)
    order = []  # shuffled within windows of 40: late arrivals, and finality moves on
    for i in range(0, len(events), 40):
        order += rng.sample(events[i:i + 40], len(events[i:i + 40]))
    whole = Replica(DEFAULT_MARKETS, genesis=genesis, checkpoint_every=8)
    forgets = Replica(DEFAULT_MARKETS, genesis=genesis, checkpoint_every=8, forgets=True)
    by_id = {(e.origin, e.seq): e for e in events}
    k = forgot = 0
    while k < len(order) or not forgot:
        batch = order[k:k + rng.randint(1, 40)]
        k += len(batch)
        assert_same_receipts(whole, forgets, batch)
        if rng.random() < 0.5 or k == len(order):
            whole.compact()
            forgets.compact()
        forgot = forgets.ledger.forgotten
        f, g = whole.finality(), forgets.finality()
        assert (f.frontier, f.final_events, f.final_trades, f.pending_events,
                f.waiting_for) == (g.frontier, g.final_events, g.final_trades,
                                   g.pending_events, g.waiting_for)
        assert whole.digest == forgets.digest and whole.clock == forgets.clock
        assert {m: b.snapshot() for m, b in whole.books.items()} == \
            {m: b.snapshot() for m, b in forgets.books.items()}
        assert whole.checkpoints == forgets.checkpoints
        held = forgets.applied_ids()
        assert whole.applied_ids()[forgot:] == held
        assert [(forgets.outcomes_of(i), forgets.trades_of(i)) for i in held] == \
            [(whole.outcomes_of(i), whole.trades_of(i)) for i in held]
        assert whole.trades()[forgets.ledger.trades_forgotten:] == forgets.trades()
        # Sync: a peer at or above every chain's base gets the same answer; one below
        # some base is sent to the store (`behind`).
        bases = {o: c.base for o, c in forgets._events.items()}
        theirs = {o: max(bases[o], s - rng.randint(0, 20)) for o, s in whole.clock.items()}
        assert not forgets.behind(theirs)
        served = [[i if type(i) is bytes else by_id[i].raw
                   for i in r.events_for(theirs, 10_000)] for r in (whole, forgets)]
        assert served[0] == served[1]
        assert forgets.behind({o: b - 1 for o, b in bases.items()}) == any(bases.values())
    assert forgot > 200, forgot  # most of the history was dropped
    assert len(forgets._by_id) < len(whole._by_id) // 2
    assert sum(bases.values()) > len(events) // 2  # and most of the chains
    forgets.check_invariants()
