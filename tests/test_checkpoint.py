"""Checkpoints (core/checkpoint.py): the state after every K-th final event that acts
(or sooner, once their actions reach A), encoded and hashed alike by every replica that
holds it final, whatever order its events came in and whenever it compacted. The
simulation checks the same on every step of its runs (p2pexchange/sim/checks.py
`agree_checkpoints`)."""

from __future__ import annotations

import hashlib
import random

import cbor2
from test_finality import Net, buy, sell

from p2pexchange.core.events import OrderType, Side, decode_event
from p2pexchange.core.market import DEFAULT_MARKETS
from p2pexchange.core.replica import Replica
from p2pexchange.sim.workload import simulate_history

MARKET = "BTC-USD"
EVERY = 3


def trading(seed: int) -> tuple[Net, list[bytes]]:
    """Three members trading (rests, crosses and partial fills) in partial rounds, then
    everything final; every replica takes a checkpoint every `EVERY` events that act. a
    and c compact at random points, b only at the end. Returns the net and every event's
    bytes (b's, before it compacts)."""
    rng = random.Random(seed)
    net = Net("abc")
    for r in net.replicas.values():
        r.checkpoint_every = EVERY
    names = list(net.replicas)
    for _ in range(40):
        name = rng.choice(names)
        if rng.random() < 0.5:
            net.act(name, [sell(rng.randrange(98, 103), rng.randrange(1, 9))])
        else:
            net.act(name, [buy(rng.randrange(98, 103), rng.randrange(1, 9),
                               rng.choice((OrderType.LIMIT, OrderType.IOC)))])
        if rng.random() < 0.3:
            net.ack_round()
        if rng.random() < 0.2:
            net[rng.choice("ac")].compact()
    net.acks_until_quiet()
    b = net["b"]
    raws = [e.raw for o in b.clock for e in b.events_of(o)]
    for r in net.replicas.values():
        r.compact()
    return net, raws


def up_to(net: Net, every: list[bytes], key: tuple) -> tuple[Replica, list[bytes]]:
    """A replica given only the events that sort at or before `key`, and those events."""
    raws = [raw for raw in every if decode_event(raw, DEFAULT_MARKETS).key <= key]
    prefix = Replica(DEFAULT_MARKETS, None, genesis=net.genesis)
    prefix.receive_many(raws)
    return prefix, raws


def test_a_checkpoint_is_the_state_after_its_event():
    """S_N holds what a replica that received only the events up to the N-th that acts
    holds: the digest, every resting order in priority order, each origin's latest
    event; and taking it changed nothing (the ledger captured the books as it applied
    that event): the replica's state equals a twin's that never compacted."""
    net, every = trading(3)
    a = net["a"]
    assert a.checkpoint is not None and a.checkpoint.n >= 3 * EVERY
    state = cbor2.loads(a.checkpoint.encoded)
    key = tuple(state["k"])
    prefix, raws = up_to(net, every, key)
    assert len(raws) < len(every)  # some events sort after it
    assert sum(prefix.clock.values()) == len(raws)  # all delivered: causes sort before
    assert state["n"] == a.checkpoint.n == sum(1 for i in prefix.applied_ids()
                                                if prefix.ledger.acts(i))
    assert state["d"] == prefix.digest
    assert state["b"] == {m: b.state() for m, b in prefix.books.items()}
    assert any(level for book in state["b"].values() for side in book for level in side)
    assert state["o"] == [[o, len(prefix.events_of(o)), prefix.events_of(o)[-1].id]
                          for o in sorted(prefix.clock)]
    assert state["m"] == [sorted(net.genesis), [], [], []]
    twin = Replica(DEFAULT_MARKETS, None, genesis=net.genesis)
    twin.receive_many(every)
    assert twin.digest == a.digest and twin.trades() == a.trades()
    assert twin.ledger.trade_count == a.ledger.trade_count
    assert [(i, twin.outcomes_of(i)) for i in twin.applied_ids()] == \
        [(i, a.outcomes_of(i)) for i in a.applied_ids()]
    assert {m: b.snapshot() for m, b in twin.books.items()} == \
        {m: b.snapshot() for m, b in a.books.items()}
    assert {m: b.state() for m, b in twin.books.items()} == \
        {m: b.state() for m, b in a.books.items()}


def test_every_replica_takes_the_same_checkpoints_whatever_the_order_and_compaction():
    """Replicas given the same events in different orders, compacting at different
    points (each time taking the checkpoints final by then), hold the same hashes."""
    net, raws = trading(5)
    expected = dict(net["a"].checkpoints)
    assert len(expected) >= 3
    rng = random.Random(11)
    for _ in range(4):
        order = raws[:]
        rng.shuffle(order)
        r = Replica(DEFAULT_MARKETS, None, genesis=net.genesis)
        r.checkpoint_every = EVERY
        for i in range(0, len(order), 7):
            r.receive_many(order[i:i + 7])
            if rng.random() < 0.5:
                r.compact()
        r.compact()
        assert r.digest == net["a"].digest
        assert r.checkpoints == expected  # every one taken, none skipped, the same hashes


def expected_ns(replica: Replica, every: int, actions: int) -> list[int]:
    """The checkpoints' n by protocols/heartbeat.md's rule, from the replica's applied
    order alone: the `every`-th event that acts since the previous checkpoint, or the
    first that brings their actions to `actions`."""
    ns, n, since = [], 0, (0, 0)
    for event_id in replica.applied_ids():
        if replica.ledger.acts(event_id):
            n += 1
            since = (since[0] + 1, since[1] + len(replica.event(event_id).actions))
            if since[0] == every or since[1] >= actions:
                ns.append(n)
                since = (0, 0)
    return ns


def test_checkpoints_come_every_k_events_that_act_or_sooner_at_a_actions():
    """Events of one to four actions: the checkpoints are those the rule names, from the
    applied order alone (counted here without the ledger's `since`), both bounds make
    some, and replicas given the events in other orders, compacting at other points
    (so rolling back across checkpoints' entries), take the same ones with the same
    hashes."""
    rng = random.Random(5)
    net = Net("abc")
    for r in net.replicas.values():
        r.checkpoint_every, r.checkpoint_actions = 4, 7
    for _ in range(60):
        name = rng.choice(list(net.replicas))
        net.act(name, [sell(rng.randrange(98, 103), rng.randrange(1, 9)) if rng.random() < 0.5
                       else buy(rng.randrange(98, 103), rng.randrange(1, 9))
                       for _ in range(rng.choice((1, 1, 1, 2, 4)))])
        if rng.random() < 0.3:
            net.ack_round()
        if rng.random() < 0.2:
            net[rng.choice("ac")].compact()
        if rng.random() < 0.1:  # everything final: a compacts it all, counts on from there
            net.acks_until_quiet()
            net["a"].compact()
    net.acks_until_quiet()
    b = net["b"]
    raws = [e.raw for o in b.clock for e in b.events_of(o)]
    expected = expected_ns(b, 4, 7)
    for r in net.replicas.values():
        r.compact()
        assert list(r.checkpoints) == expected[-len(r.checkpoints):]
    gaps = [y - x for x, y in zip([0] + expected, expected, strict=False)]
    assert 4 in gaps and any(g < 4 for g in gaps)  # both bounds made checkpoints
    for seed in range(4):
        order = raws[:]
        random.Random(seed).shuffle(order)
        r = Replica(DEFAULT_MARKETS, None, genesis=net.genesis)
        r.checkpoint_every, r.checkpoint_actions = 4, 7
        r.checkpoints_kept = 1000
        for i in range(0, len(order), 5):
            r.receive_many(order[i:i + 5])
            if seed % 2:
                r.compact()
        r.compact()
        assert r.digest == b.digest
        assert list(r.checkpoints) == expected
        assert {n: h for n, h in r.checkpoints.items() if n in b.checkpoints} == b.checkpoints


def test_the_count_goes_on_across_settling_everything_applied():
    """A replica that settles every entry as soon as it is applied (events arriving in
    their final order) counts on from the last settled one: the same checkpoints as a
    replica that settled nothing, and each captured as it stood."""
    events = sorted(simulate_history(3, DEFAULT_MARKETS, origins=3, steps=60, actions_max=4),
                    key=lambda e: e.key)
    whole, steps = Replica(DEFAULT_MARKETS), Replica(DEFAULT_MARKETS)
    for r in (whole, steps):
        r.ledger.captures, r.checkpoint_every, r.checkpoint_actions = True, 3, 5
    whole.receive_many(events)
    taken = []
    for event in events:
        steps.receive_many([event])
        taken += steps.ledger.take_captures(len(steps.ledger))
        steps.ledger.settle(len(steps.ledger))
    expected = expected_ns(whole, 3, 5)
    assert len(expected) > 10 and [n for n, *_ in taken] == expected
    assert [t for t in whole.ledger.take_captures(len(whole.ledger))] == taken


def test_the_checkpoint_bytes_are_those_heartbeat_md_describes():
    """S_N rebuilt from protocols/heartbeat.md's description alone, with the replica's
    public queries and cbor2 (not core/checkpoint.py nor `OrderBook.state`), is the
    checkpoint's encoding byte for byte, and H_N its SHA-256."""
    net, every = trading(7)
    a = net["a"]
    taken = a.checkpoint
    assert taken is not None
    key = taken.key
    prefix, _ = up_to(net, every, key)
    books = {}
    for market in DEFAULT_MARKETS:  # every market of the protocol, empty ones too
        sides: list[list] = [[], []]  # bids best first, then asks best first
        for order in prefix.books[market].resting():
            levels = sides[0 if order.side == Side.BUY else 1]
            if not levels or levels[-1][0] != order.price:
                levels.append([order.price, []])
            levels[-1][1].append([order.order_id, order.origin, int(order.side),
                                  int(order.type), order.qty, order.remaining,
                                  int(order.stp)])
        books[market] = sides
    page = {"v": 1, "n": taken.n, "k": list(key), "d": prefix.digest, "b": books,
            "m": [sorted(net.genesis), [], [], []],
            "o": [[o, len(prefix.events_of(o)), prefix.events_of(o)[-1].id]
                  for o in sorted(prefix.clock)]}
    encoded = cbor2.dumps(page, canonical=True)
    assert encoded == taken.encoded
    assert hashlib.sha256(encoded).digest() == taken.hash == a.checkpoints[taken.n]
