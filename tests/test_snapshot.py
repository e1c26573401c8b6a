"""Starting from a checkpoint instead of the history (`Replica.install`, the serving side
`Replica.snapshot_segments`; docs/snapshot_design.md, step 4).

The property: a replica that installs a member's latest checkpoint and the segments it
names, then takes in the rest of the history in any order and keeps following the
network (and joins it), holds what a replica that replayed the whole history holds: the
digest, every book, the frontier, the membership, the same later checkpoints, and the
same outcome for every event past the checkpoint."""

from __future__ import annotations

import random

import pytest
from test_finality import Net, buy, sell

from p2pexchange.core.checkpoint import CheckpointRejected, decode_checkpoint
from p2pexchange.core.events import MEMBERSHIP_MARKET, Cancel, Event, Join, OrderType, decode_event
from p2pexchange.core.market import DEFAULT_MARKETS
from p2pexchange.core.replica import Replica

EVERY = 3  # a checkpoint every 3 events that act


class Recorded(Net):
    """A `Net` whose every created event is kept (the store every node has of its own
    delivered events), and whose replicas take a checkpoint every `EVERY` acting events."""

    def __init__(self, members: str, **kw) -> None:
        super().__init__(members, **kw)
        self.store: dict[tuple[bytes, int], bytes] = {}
        for replica in self.replicas.values():
            self.watch(replica)

    def watch(self, replica: Replica) -> None:
        replica.checkpoint_every = EVERY
        create = replica.create_event

        def recorded(*args, **kw):
            event, receipt = create(*args, **kw)
            self.store[(event.origin, event.seq)] = event.raw
            return event, receipt
        replica.create_event = recorded  # type: ignore[method-assign]

    def raws_for(self, source: Replica, target: Replica) -> list[bytes]:
        """What `source` sends `target` through sync, settled events read from the store."""
        return [self.store[x] if type(x) is tuple else x
                for x in source.events_for(target.clock, 100_000)]

    def sync(self, names=None) -> None:
        """`Net.sync`, with settled events read from the store."""
        names = list(self.replicas if names is None else names)
        for src in names:
            for dst in names:
                if src != dst:
                    for receipt in self[dst].receive_many(self.raws_for(self[src], self[dst])):
                        assert receipt.status in ("delivered", "duplicate"), receipt

    def segments(self, server: Replica) -> tuple[bytes, list[Event]]:
        """What `server` serves a newcomer: S_N, and the events of its segments."""
        offer = server.snapshot_segments()
        assert type(offer) is tuple, offer
        checkpoint, segments = offer
        events = [decode_event(self.store[(o, s)], DEFAULT_MARKETS)
                  for o, (first, last) in segments.items() for s in range(first, last + 1)]
        return checkpoint.encoded, events


def trade(net: Net, rng: random.Random, names: list[str], steps: int) -> None:
    """Random trading by `names`: rests, crosses, cancels of random known orders (open or
    not), each event to a random subset (the others get it by sync later), partial
    acknowledgement rounds, compaction at random points."""
    placed: list[bytes] = []
    everyone = list(net.replicas)
    for _ in range(steps):
        name = rng.choice([n for n in names if net[n].is_member(net.ids[n])])
        to = [n for n in everyone if n == name or rng.random() < 0.7]
        roll = rng.random()
        if roll < 0.15 and placed:
            actions = [Cancel(rng.choice(placed))]
        elif roll < 0.55:
            actions = [sell(rng.randrange(98, 103), rng.randrange(1, 9))]
        else:
            actions = [buy(rng.randrange(98, 103), rng.randrange(1, 9),
                           rng.choice((OrderType.LIMIT, OrderType.IOC)))]
        event = net.act(name, actions, to=to)
        placed += [event.order_id(i) for i, a in enumerate(actions) if type(a) is not Cancel]
        if rng.random() < 0.3:
            net.ack_round(to=[n for n in everyone if rng.random() < 0.8])
        if rng.random() < 0.2:
            net.sync()
        if rng.random() < 0.2:
            net[rng.choice(everyone)].compact()


def history(net: Recorded) -> Replica:
    """A replica fed every event created so far (whole history, in one batch)."""
    full = Replica(DEFAULT_MARKETS, None, genesis=net.genesis)
    full.checkpoint_every = EVERY
    full.receive_many(list(net.store.values()))
    return full


def assert_same_state(replica: Replica, full: Replica, since: int) -> None:
    """`replica` (started from checkpoint `since`) holds what `full` holds, and takes the
    same checkpoints (as a node does at each heartbeat)."""
    replica.take_checkpoints()
    full.take_checkpoints()
    assert replica.digest == full.digest
    assert {m: b.state() for m, b in replica.books.items()} == \
        {m: b.state() for m, b in full.books.items()}
    assert replica.final_key() == full.final_key()
    assert replica.members() == full.members()
    key = replica.final_key()
    assert replica.prefix_state(key) == full.prefix_state(key)
    later = {n: h for n, h in full.checkpoints.items() if n >= since}
    assert {n: h for n, h in replica.checkpoints.items() if n in later} == later
    assert replica.checkpoint == full.checkpoint
    assert replica.clock == full.clock
    floor = replica.ledger.floor
    for event_id in full.applied_ids():
        event = full.event(event_id)
        if floor is None or event.key > floor:
            assert replica.outcomes_of(event_id) == full.outcomes_of(event_id), event_id
            assert replica.trades_of(event_id) == full.trades_of(event_id)


SEEDS = range(int(__import__("os").environ.get("SNAP_SEEDS", 8)))


@pytest.mark.parametrize("seed", SEEDS)
def test_a_replica_started_from_a_checkpoint_holds_what_the_history_gives(seed):
    """Members a, b, c trade (partial deliveries, partial rounds, syncs, compaction);
    a admits m, which speaks or stays silent. A newcomer n installs a's latest
    checkpoint with its segments, takes in the rest through sync in random batches,
    then is admitted and trades with the others. At every stage it holds what a replica
    of the whole history holds, and it serves a checkpoint of its own to another
    newcomer, which converges too."""
    run_newcomers(seed, forgets=False)


@pytest.mark.parametrize("seed", SEEDS)
def test_members_that_forget_what_their_checkpoints_cover_hold_what_the_history_gives(seed):
    """The same runs with members a, b, c forgetting at each compaction what their
    checkpoints cover (`Replica(forgets=True)`, as the node does: the ledger's entries
    and the chains below the segments). At every stage each of them, and each newcomer
    served by them, holds what a replica of the whole history holds."""
    run_newcomers(seed, forgets=True)


def run_newcomers(seed: int, forgets: bool) -> None:
    rng = random.Random(seed)
    net = Recorded("abc", newcomers="mnq")
    for peer in "nq":  # they start later, from a checkpoint
        del net.replicas[peer]
    for name in "abc":
        net[name].forgets = forgets
    trade(net, rng, list("abc"), 25)
    net.act("a", [Join(net.ids["m"])], market=MEMBERSHIP_MARKET)
    net.acks_until_quiet()
    if seed % 2:
        trade(net, rng, list("abcm"), 15)  # m speaks; otherwise it stays silent
    trade(net, rng, list("abc"), 20)
    net.sync()
    server = net[rng.choice("abc")]
    server.compact()
    encoded, events = net.segments(server)
    snapshot = decode_checkpoint(encoded, DEFAULT_MARKETS)
    n = Replica(DEFAULT_MARKETS, net.ids["n"], genesis=net.genesis)
    n.install(snapshot, events)
    net.replicas["n"] = n
    net.watch(n)
    assert n.digest == snapshot.digest and n.final_key() == snapshot.key
    assert n.prefix_state(snapshot.key) == server.prefix_state(snapshot.key)
    tail = net.raws_for(server, n)
    rng.shuffle(tail)
    for i in range(0, len(tail), 7):
        for receipt in n.receive_many(tail[i:i + 7]):
            assert receipt.status in ("delivered", "buffered", "duplicate"), receipt
    net.sync()
    assert_same_state(n, history(net), snapshot.n)
    members_hold_the_history(net, forgets)
    # n joins and trades; another newcomer q starts from n's own later checkpoint.
    net.act("b", [Join(net.ids["n"])], market=MEMBERSHIP_MARKET)
    net.acks_until_quiet()
    assert n.is_member(net.ids["n"])
    trade(net, rng, ["a", "b", "c", "n"] + (["m"] if seed % 2 else []), 30)
    net.sync()
    net.acks_until_quiet()
    assert_same_state(n, history(net), snapshot.n)
    assert n.checkpoint.n > snapshot.n  # it took checkpoints of its own
    n.compact()
    encoded, events = net.segments(n)
    q = Replica(DEFAULT_MARKETS, net.ids["q"], genesis=net.genesis)
    q.install(decode_checkpoint(encoded, DEFAULT_MARKETS), events)
    net.replicas["q"] = q
    net.watch(q)
    net.sync()
    assert q.stats()["rejected"] == {}
    assert_same_state(q, history(net), q.checkpoint.n)
    members_hold_the_history(net, forgets)
    for r in net.replicas.values():
        assert r.stats()["finality_broken"] == 0
        assert r.stats()["frontier_regressions"] == 0
        assert "before_snapshot" not in r.stats()["rejected"]


def members_hold_the_history(net: Recorded, forgets: bool) -> None:
    """Each of a, b, c holds what the whole history gives; forgetting ones forgot."""
    full = history(net)
    for name in "abc":
        net[name].compact()
        net[name].compact()  # (forgetting lags one compaction)
        assert_same_state(net[name], full, 0)
        if forgets:
            assert net[name].ledger.forgotten and \
                any(c.base for c in net[name]._events.values()), name


def test_the_segments_reach_down_to_what_an_event_past_the_checkpoint_names():
    """c hears a's first ten events and nothing of b, then b's first event only, and
    signs an event naming it: that event sorts after the checkpoint (its Lamport time
    comes from a's events), while b's latest event in the prefix is its third, and c's
    own latest in the prefix named nothing of b. So b's segment must start at its first
    event, or the newcomer cannot check what c's event names (`before_snapshot`)."""
    net = Recorded("abc")
    for r in net.replicas.values():
        r.checkpoint_every = 12  # one checkpoint: after a's 9th event
    for _ in range(10):
        net.act("a", [sell(101, 1)], to="ac")
    b1 = net.act("b", [buy(99, 1, OrderType.LIMIT)], to="b")
    for _ in range(2):
        net.act("b", [buy(99, 1, OrderType.LIMIT)], to="b")
    net.act("c", [sell(102, 1)], to="c")
    net.deliver(b1, "c")
    c2 = net.act("c", [sell(102, 1)], to="c")
    net.sync()
    net.acks_until_quiet()
    server = net["a"]
    server.compact()
    checkpoint, segments = server.snapshot_segments()
    assert checkpoint.n == 12 and c2.key > checkpoint.key >= net["a"].events_of(b1.origin)[2].key
    assert segments[b1.origin] == (1, 3)
    encoded, events = net.segments(server)
    n = Replica(DEFAULT_MARKETS, None, genesis=net.genesis)
    n.checkpoint_every = EVERY  # from here on, as the replica of the history below
    n.install(decode_checkpoint(encoded, DEFAULT_MARKETS), events)
    for receipt in n.receive_many(net.raws_for(server, n)):
        assert receipt.status in ("delivered", "duplicate"), receipt
    assert_same_state(n, history(net), 12)


def test_a_checkpoint_and_segments_that_do_not_fit_are_refused_and_change_nothing():
    """Each broken offer is refused with its reason (`CheckpointRejected`), and the
    replica can still install the right one afterwards. (A member without an event in
    the prefix whose join is not sent: the first test fails without them.)"""
    rng = random.Random(7)
    net = Recorded("abc")
    trade(net, rng, list("abc"), 40)
    net.sync()
    net.acks_until_quiet()
    net["a"].compact()
    encoded, events = net.segments(net["a"])
    snapshot = decode_checkpoint(encoded, DEFAULT_MARKETS)
    by_origin: dict[bytes, list[Event]] = {}
    for e in events:
        by_origin.setdefault(e.origin, []).append(e)
    longest = max(by_origin, key=lambda o: len(by_origin[o]))
    assert len(by_origin[longest]) >= 3
    a, b = net.ids["a"], net.ids["b"]
    offers = {
        "not the latest event named": [e for e in events if e is not by_origin[a][-1]],
        "a broken segment": [e for e in events if e is not by_origin[longest][1]],
        "the segments are not the checkpoint's origins": [e for e in events
                                                          if e.origin != b],
        "not in the prefix": events + [net["a"].events_of(a)[-1]],
        "does not reach": [got[-1] for got in by_origin.values()],  # cut at the bottom
    }
    replica = Replica(DEFAULT_MARKETS, None, genesis=net.genesis)
    for why, offer in offers.items():
        with pytest.raises(CheckpointRejected, match=why):
            replica.install(snapshot, offer)
        assert replica.digest != snapshot.digest and not replica.clock
    other = Replica(DEFAULT_MARKETS, None, genesis=net.genesis[:2])
    with pytest.raises(CheckpointRejected, match="another network"):
        other.install(snapshot, events)
    for bad in (encoded[:-1], encoded + b"\0", b"\xa0", encoded.replace(b"BTC-USD", b"BTC-USX")):
        with pytest.raises(CheckpointRejected):
            decode_checkpoint(bad, DEFAULT_MARKETS)
    replica.install(snapshot, events)
    assert replica.digest == snapshot.digest
    with pytest.raises(CheckpointRejected, match="only an empty replica"):
        replica.install(snapshot, events)
