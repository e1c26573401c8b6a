"""Every bound on what a replica holds for the network, each tested at its bound.

The attacks of the "no message can crash, freeze or exhaust a node" audit, as
regression tests that assert structure and counts (never time): buffer bytes and
quota evictions, waiter wake-ups, claims and missing ranges, members, the public
key cache, and a victim that keeps creating events whatever others claim about it.
"""

from __future__ import annotations

import gc
import tracemalloc

import pytest

from p2pexchange.core import events as events_module
from p2pexchange.core.buffer import BUFFERED_EVENT_BYTES_MAX, KNOWN_ORIGINS_MAX, buffered_size
from p2pexchange.core.events import (
    CLOCK_ORIGINS_MAX,
    EVENT_ACTIONS_MAX,
    MEMBERSHIP_MARKET,
    PUBKEY_CACHE_MAX,
    SEQ_MAX,
    Cancel,
    Join,
    OrderType,
    Place,
    Side,
    pubkey_cache_size,
    public_key_of,
    sign_event,
)
from p2pexchange.core.finality import MEMBERS_MAX
from p2pexchange.core.market import DEFAULT_MARKETS
from p2pexchange.core.params import BUFFER_BYTES_MAX, BUFFER_ORIGIN_BYTES_MAX
from p2pexchange.core.replica import MISSING_RANGES_MAX, Replica
from p2pexchange.sim.workload import peer_id_bytes, seeded_key_pair

MARKETS = DEFAULT_MARKETS
ONE = (Place(Side.BUY, OrderType.LIMIT, 100, 1),)
NO_SUCH_EVENT = bytes(32)  # the id a claim gives an event nobody signed


def identity(name: str):
    key = seeded_key_pair(f"limits-{name}")
    return key, peer_id_bytes(key)


def chain(name: str, seqs, actions=ONE, extra_clock=None, lamport_base: int = 0):
    """Events of one origin at `seqs`, each naming its predecessor by seq and id (and the
    seqs of `extra_clock`, by an id nobody signed); Lamport times consistent when the
    predecessors are its own chain from seq 1. The chain is signed from seq 1, so a seq
    left out of `seqs` (withheld) is still the one its successor names."""
    key, origin = identity(name)
    wanted = set(seqs)
    out = []
    previous = None
    for seq in range(1, max(wanted) + 1):
        clock = {o: (s, NO_SUCH_EVENT) for o, s in (extra_clock or {}).items()}
        if previous is not None:
            clock[origin] = (previous.seq, previous.id)
        previous = sign_event(key.private_key, origin, seq, clock, lamport_base + seq,
                              "BTC-USD", actions)
        if seq in wanted:
            out.append(previous)
    return out


def invented(n: int, tag: str) -> list[bytes]:
    """Origins nobody can sign for: peer-id-sized byte strings."""
    return [f"{tag}-{i:08d}".encode().ljust(38, b".") for i in range(n)]


# -- memory: the causal buffer ----------------------------------------------------------


def test_one_origin_cannot_buffer_more_than_its_quota_and_honest_events_still_wait():
    attack = chain("quota-attacker", range(2, 4_600))  # seq 1 withheld: never deliverable
    sizes = [buffered_size(e) for e in attack]
    fits = next(k for k in range(len(sizes)) if sum(sizes[:k + 1]) > BUFFER_ORIGIN_BYTES_MAX)
    replica = Replica(MARKETS)
    codes = [replica.admit(e).code for e in attack]
    usage = replica.usage()
    assert usage["buffer_events"] == fits and codes.count(None) == fits
    assert codes.count("buffer_full") == usage["buffer_refused"] == len(attack) - fits
    assert usage["buffer_bytes"] == sum(sizes[:fits]) <= BUFFER_ORIGIN_BYTES_MAX
    assert usage["buffer_evicted"] == 0  # the refused were always the furthest
    # An honest origin's out-of-order events still wait, and are delivered in order.
    honest = chain("quota-honest", range(1, 4))
    assert [replica.admit(e).status for e in honest[:0:-1]] == ["buffered", "buffered"]
    assert replica.admit(honest[0]).delivered == honest
    assert replica.usage()["buffer_events"] == fits


def test_a_full_buffer_evicts_from_the_origin_using_the_most():
    """At the real bounds: nine origins each at their quota overflow the whole buffer; an
    honest out-of-order event then takes the place of the furthest event of the largest."""
    big = tuple(Place(Side.SELL, OrderType.LIMIT, 1_000 + i, 7) for i in range(EVENT_ACTIONS_MAX))
    per_origin = BUFFER_ORIGIN_BYTES_MAX // buffered_size(chain("full-probe", [2], big)[0])
    attackers = [chain(f"full-attacker-{i}", range(2, per_origin + 3), big[1:]) for i in range(9)]
    honest = chain("full-honest", [1, 2], big)  # larger than any room an eviction left

    def fill() -> Replica:
        replica = Replica(MARKETS)
        for events in attackers:
            for event in events:
                replica.admit(event)
        return replica

    replica = fill()
    usage = replica.usage()
    assert usage["buffer_bytes"] <= BUFFER_BYTES_MAX
    assert usage["buffer_bytes"] > BUFFER_BYTES_MAX - BUFFERED_EVENT_BYTES_MAX  # full
    assert usage["buffer_evicted"] > 0 and usage["buffer_refused"] >= 9
    buffer = replica._buffer
    assert all(buffer.origin_bytes(e[0].origin) <= BUFFER_ORIGIN_BYTES_MAX for e in attackers)
    # The largest origin (ties: the lowest origin bytes) and its furthest event.
    largest, loser = min((-buffer.origin_bytes(e[0].origin), e[0].origin) for e in attackers)
    largest = -largest
    furthest = max(seq for origin, seq in buffer.waiters if origin == loser)
    assert replica.admit(honest[1]).status == "buffered"
    assert replica.usage()["buffer_bytes"] <= BUFFER_BYTES_MAX
    assert replica.usage()["buffer_evicted"] == usage["buffer_evicted"] + 1
    assert buffer.get(loser, furthest) is None and buffer.origin_bytes(loser) < largest
    # Deterministic: the same input gives the same buffer.
    again = fill()
    again.admit(honest[1])
    assert list(again._buffer.waiters) == list(buffer.waiters)
    assert replica.admit(honest[0]).delivered == honest


@pytest.mark.parametrize("shape", ["one_place", "places_1000_clock_max", "cancels_1000",
                                   "clock_max", "five_and_five"])
def test_accounting_covers_the_real_memory_of_a_buffered_event(shape):
    most = CLOCK_ORIGINS_MAX - 1  # the chain's own entry makes the clock full
    actions, clock_n = {
        "one_place": (ONE, 0),
        "places_1000_clock_max": (tuple(Place(Side.BUY, OrderType.LIMIT, 10**12 + i, 10**12)
                                        for i in range(EVENT_ACTIONS_MAX)), most),
        "cancels_1000": (tuple(Cancel(bytes([i % 256]) * 34) for i in range(EVENT_ACTIONS_MAX)),
                         most),
        "clock_max": (ONE, most),
        "five_and_five": (ONE * 5, 5),
    }[shape]
    count = 40 if len(actions) > 1 or clock_n > 100 else 2_000
    extra = {o: 10**15 for o in invented(clock_n, "acct")}
    raws = [e.raw for e in chain(f"acct-{shape}", range(2, count + 2), actions, extra)]
    replica = Replica(MARKETS, buffer_bytes_max=2**40, buffer_origin_bytes_max=2**40)
    replica.receive(bytearray(raws[0]))  # the first one warms up caches and claims
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for raw in raws[1:]:  # a private copy of the bytes, as the network hands them over
            assert replica.receive(bytearray(raw)).status == "buffered"
        gc.collect()
        real = (tracemalloc.get_traced_memory()[0] - before) / (count - 1)
    finally:
        tracemalloc.stop()
    accounted = replica.usage()["buffer_bytes"] / count
    assert real <= accounted <= 1.5 * real, (real, accounted)
    assert accounted <= BUFFERED_EVENT_BYTES_MAX


# -- quadratic work: release and missing() --------------------------------------------------


def test_a_reverse_chain_is_released_with_one_wakeup_per_event():
    events = chain("reverse", range(1, 8_001))
    replica = Replica(MARKETS, buffer_origin_bytes_max=BUFFER_BYTES_MAX)
    for event in reversed(events[1:]):
        assert replica.admit(event).status == "buffered"
    assert replica.usage()["buffer_waiting_keys"] == 7_999  # each on its exact predecessor
    receipt = replica.admit(events[0])
    assert receipt.delivered == events
    usage = replica.usage()
    assert usage["buffer_wakeups"] == 7_999  # one per released event, none wasted
    assert usage["buffer_events"] == usage["buffer_bytes"] == usage["buffer_waiting_keys"] == 0


@pytest.mark.parametrize("order", ["forward", "reverse"])
def test_an_event_waiting_on_many_origins_is_examined_at_most_once_per_cause(order):
    causes = [chain(f"fan-{i}", [1])[0] for i in range(CLOCK_ORIGINS_MAX - 1)]
    key, origin = identity("fan-waiter")
    waiter = sign_event(key.private_key, origin, 1, {c.origin: (1, c.id) for c in causes}, 2,
                        "BTC-USD", ONE)
    replica = Replica(MARKETS)
    assert replica.admit(waiter).status == "buffered"
    by_origin = sorted(causes, key=lambda e: e.origin)
    for cause in by_origin if order == "forward" else reversed(by_origin):
        replica.admit(cause)
    assert replica.event(waiter.id) is not None
    assert replica.usage()["buffer_wakeups"] <= len(causes)
    if order == "reverse":
        assert replica.usage()["buffer_wakeups"] == 1


def test_invented_origins_cannot_grow_claims_or_slow_missing():
    """Clocks naming thousands of origins nobody signs for: the claims stay bounded, and
    missing() returns a bounded number of ranges, origins we delivered from first."""
    member = chain("claims-member", [1])[0]
    replica = Replica(MARKETS)
    replica.admit(member)
    per = CLOCK_ORIGINS_MAX - 1  # invented origins per event, besides its own entry
    rounds = 2 * KNOWN_ORIGINS_MAX // per  # twice as many origins as the table holds
    names = invented(rounds * per, "claims")
    key, origin = identity("claims-attacker")
    previous = sign_event(key.private_key, origin, 1, {}, 1, "BTC-USD", ONE)  # never sent
    for i in range(rounds):
        clock = {o: (5, NO_SUCH_EVENT) for o in names[i * per:(i + 1) * per]}
        if i == rounds // 2:
            clock[member.origin] = (3, NO_SUCH_EVENT)  # a claim about an origin we know
            del clock[names[i * per]]
        clock[origin] = (previous.seq, previous.id)
        event = sign_event(key.private_key, origin, i + 2, clock, 10, "BTC-USD", ONE)
        previous = event
        receipt = replica.admit(event)
        assert receipt.status == "buffered"
        assert len(receipt.missing) == MISSING_RANGES_MAX
    assert replica.usage()["known_origins"] == KNOWN_ORIGINS_MAX
    missing = replica.missing()
    assert len(missing) == MISSING_RANGES_MAX
    assert next(iter(missing)) == member.origin and missing[member.origin] == (2, 3)
    # Heartbeats naming strangers are bounded by the same table.
    for i in range(20):
        clock = dict.fromkeys(invented(CLOCK_ORIGINS_MAX, f"hb-{i}"), 9)
        assert replica.on_heartbeat(f"member-{i}".encode(), clock) is None
    assert replica.usage()["known_origins"] == KNOWN_ORIGINS_MAX
    assert next(iter(replica.missing())) == member.origin


def test_claims_are_dropped_once_delivered():
    events = chain("settle", range(1, 6))
    replica = Replica(MARKETS)
    assert replica.admit(events[4]).missing == {events[0].origin: (1, 4)}
    assert replica.missing() == {events[0].origin: (1, 4)}
    for event in events[:4]:
        replica.admit(event)
    assert replica.missing() == {} and replica.usage()["known_origins"] == 0


# -- freeze: claims about our own history --------------------------------------------------


def victim_with_history(name: str, n: int = 3):
    key, origin = identity(name)
    replica = Replica(MARKETS, origin)
    for _ in range(n):
        replica.create_event(key.private_key, "BTC-USD", ONE)
    return key, origin, replica


def test_a_lying_heartbeat_cannot_stop_a_node_from_creating_events():
    key, victim, replica = victim_with_history("hb-victim")
    _, liar = identity("hb-liar")
    assert replica.on_heartbeat(liar, {victim: SEQ_MAX}) == "impossible_clock"
    assert replica.on_heartbeat(liar, {victim: 4}) == "impossible_clock"
    assert replica.on_heartbeat(liar, {victim: 3}) is None  # true: accepted
    event, receipt = replica.create_event(key.private_key, "BTC-USD", ONE)
    assert (event.seq, receipt.status) == (4, "delivered")


def test_an_event_claiming_our_future_is_rejected_and_we_keep_trading():
    key, victim, replica = victim_with_history("clock-victim")
    lie = chain("clock-liar", [1], extra_clock={victim: SEQ_MAX})[0]
    receipt = replica.admit(lie)
    assert (receipt.status, receipt.code) == ("rejected", "impossible_clock")
    assert receipt.event.origin == lie.origin  # the claimant signed it: evidence against it
    assert replica.receive(lie.raw).code == "impossible_clock"
    assert replica.usage()["buffer_events"] == 0 and replica.missing() == {}
    event, _ = replica.create_event(key.private_key, "BTC-USD", ONE)
    assert event.seq == 4
    # Others cannot judge a claim about a third origin: an observer just lets it wait.
    observer = Replica(MARKETS)
    assert observer.admit(lie).status == "buffered"


def test_nobody_but_us_can_make_us_wait_for_our_own_history():
    key, victim, replica = victim_with_history("forge-victim")
    forger, _ = identity("forger")
    forged = sign_event(forger.private_key, victim, 9, {victim: (8, NO_SUCH_EVENT)}, 9,
                        "BTC-USD", ONE)
    assert replica.receive(forged.raw).code == "bad_signature"
    assert replica.create_event(key.private_key, "BTC-USD", ONE)[0].seq == 4


# -- members: joins, and finality that stalls rather than lies -------------------------------


def signed_in_sync_with(replica: Replica, key) -> object:
    """The acknowledgement a newcomer in sync with `replica` signs next (as create_event
    would): its clock names everything `replica` delivered."""
    origin = peer_id_bytes(key)
    clock = {o: (s, replica.events_of(o)[s - 1].id) for o, s in replica.clock.items()}
    return sign_event(key.private_key, origin, replica.clock.get(origin, 0) + 1, clock,
                      replica.lamport + 1, MEMBERSHIP_MARKET, [])


def test_joins_beyond_members_max_are_refused_and_honest_clocks_stay_within_bounds():
    """A member admits more newcomers than one clock can name (CLOCK_ORIGINS_MAX + 2) in
    one join event. They are candidates, waited for, until the join is final; then only
    MEMBERS_MAX minus the current members become effective and the rest are refused. All
    their first events came early and were parked: the refused ones' are rejected
    (`not_member`), the effective ones' delivered. The founders keep creating events
    (their clocks never name more than MEMBERS_MAX origins, within CLOCK_ORIGINS_MAX),
    and finality moves past the join once the effective newcomers acknowledge."""
    (ka, a), (kb, b) = identity("members-a"), identity("members-b")
    ra, rb = Replica(MARKETS, a, genesis=[a, b]), Replica(MARKETS, b, genesis=[a, b])
    e1, _ = ra.create_event(ka.private_key, "BTC-USD", ONE)
    rb.receive(e1.raw)
    ra.receive(rb.create_event(kb.private_key, MEMBERSHIP_MARKET, [])[0].raw)
    rb.receive(ra.create_event(ka.private_key, MEMBERSHIP_MARKET, [])[0].raw)
    assert ra.final_key() == rb.final_key() == e1.key
    keys = [identity(f"newcomer-{i}")[0] for i in range(CLOCK_ORIGINS_MAX + 2)]
    newcomers = sorted(peer_id_bytes(k) for k in keys)
    key_of = {peer_id_bytes(k): k for k in keys}
    join, _ = ra.create_event(ka.private_key, MEMBERSHIP_MARKET, [Join(m) for m in newcomers])
    e2, _ = ra.create_event(ka.private_key, "BTC-USD", ONE)
    rb.receive_many([e.raw for e in ra.events_of(a)])
    # Candidates: waited for, no members; their early first events are parked.
    firsts = [signed_in_sync_with(ra, key_of[m]) for m in newcomers]
    for replica in (ra, rb):
        assert replica.members() == sorted([a, b]) and not replica.is_final(join.id)
        assert len(replica.membership.members) == CLOCK_ORIGINS_MAX + 4
        assert set(newcomers) <= set(replica.membership.waited_for())
        # b has not acknowledged: it, not the candidates (who cannot speak yet), is
        # what finality waits for now.
        assert replica.finality().waiting_for == [b]
        receipts = replica.receive_many([e.raw for e in firsts])
        assert {(r.status, r.code) for r in receipts} == {("buffered", None)}
        assert replica.usage()["parked"] == len(newcomers)
    effective, refused = newcomers[:MEMBERS_MAX - 2], newcomers[MEMBERS_MAX - 2:]
    for _ in range(6):
        rb.receive_many([e.raw for e in ra.events_of(a)])
        ra.receive_many([e.raw for e in rb.events_of(b)])
        if all(r.is_final(join.id) for r in (ra, rb)):
            break
        for replica, key in ((ra, ka), (rb, kb)):
            if replica.wants_ack():
                replica.create_event(key.private_key, MEMBERSHIP_MARKET, [])
    for replica in (ra, rb):
        assert replica.is_final(join.id) and not replica.is_final(e2.id)
        assert sorted(replica.members()) == sorted([a, b, *effective])
        assert replica.membership.refused == set(refused)
        assert replica.usage()["members"] == replica.usage()["members_max"] == MEMBERS_MAX
        assert replica.usage()["parked"] == 0
        assert replica.stats()["rejected"] == {"not_member": len(refused)}
        assert all(replica.events_of(m) == [] for m in refused)
        assert all(len(replica.events_of(m)) == 1 for m in effective)
        # Finality waits for no refused newcomer: only for those who must acknowledge e2.
        assert not set(refused) & set(replica.finality().waiting_for)
        assert set(replica.finality().waiting_for) <= {a, b, *effective}
        late = replica.receive(signed_in_sync_with(replica, key_of[refused[0]]).raw)
        assert (late.status, late.code) == ("rejected", "not_member")
    # Honest replicas keep creating events; the effective newcomers acknowledge twice;
    # everything becomes final and nobody's clock names more than MEMBERS_MAX origins.
    for _ in range(6):
        if all(r.is_final(e2.id) and not r.wants_ack() for r in (ra, rb)):
            break
        acks = [signed_in_sync_with(ra, key_of[m]) for m in effective]
        for replica in (ra, rb):
            assert {r.status for r in replica.receive_many([e.raw for e in acks])} == {
                "delivered"}
        for replica, key in ((ra, ka), (rb, kb)):
            replica.create_event(key.private_key, "BTC-USD", ONE)
        rb.receive_many([e.raw for e in ra.events_of(a)])
        ra.receive_many([e.raw for e in rb.events_of(b)])
    for replica in (ra, rb):
        assert replica.is_final(e2.id) and replica.stats()["late_after_final"] == 0
        assert len(replica.clock) == MEMBERS_MAX <= CLOCK_ORIGINS_MAX
        assert all(len(e.clock) <= MEMBERS_MAX for o in replica.clock
                   for e in replica.events_of(o))
    assert ra.digest == rb.digest and ra.final_key() == rb.final_key()


# -- the public key cache ----------------------------------------------------------------


def test_the_public_key_cache_is_bounded_and_drops_the_oldest_first():
    origins = [peer_id_bytes(seeded_key_pair(f"cache-{i}")) for i in range(PUBKEY_CACHE_MAX + 5)]
    for origin in origins:
        public_key_of(origin)
    assert pubkey_cache_size() == PUBKEY_CACHE_MAX
    assert origins[0] not in events_module._pubkeys and origins[-1] in events_module._pubkeys


def test_the_buffer_index_does_not_grow_with_traffic():
    """Events buffered and released again and again (honest reordering): the eviction
    heaps stay proportional to what is buffered now, not to what ever was."""
    replica = Replica(MARKETS)
    for name in ("traffic-a", "traffic-b", "traffic-c"):
        events = chain(name, range(1, 301))
        for event in reversed(events[1:]):
            replica.admit(event)
        replica.admit(events[0])
    usage = replica.usage()
    assert usage["buffer_events"] == 0 and usage["buffer_heap_entries"] <= 16
    for event in chain("traffic-stay", range(2, 402)):
        replica.admit(event)
    assert replica.usage()["buffer_heap_entries"] <= (400 + 2 * 1 + 16) + 16


@pytest.mark.parametrize("seed", range(5))
def test_eviction_always_takes_the_furthest_event_of_the_largest_origin(seed):
    """Against a model: random traffic of several origins through a small buffer."""
    import random

    rng = random.Random(seed)
    chains = {i: chain(f"model-{i}", range(1, 40), ONE * rng.randint(1, 5)) for i in range(5)}
    size = {(e.origin, e.seq): buffered_size(e) for c in chains.values() for e in c}
    room = 25 * 2_200
    replica = Replica(MARKETS, buffer_bytes_max=room, buffer_origin_bytes_max=room // 2)
    model: set[tuple[bytes, int]] = set()
    for _ in range(400):
        event = rng.choice(chains[rng.randrange(5)][1:])  # seq 1 never comes: all wait
        key = (event.origin, event.seq)
        receipt = replica.admit(event)
        if key not in model:
            model.add(key)
            for limit, among in ((room // 2, {k for k in model if k[0] == key[0]}),
                                 (room, model)):
                while sum(size[k] for k in among) > limit:
                    used: dict[bytes, int] = {}
                    for o, s in among:
                        used[o] = used.get(o, 0) + size[(o, s)]
                    loser = min(used, key=lambda o: (-used[o], o))
                    furthest = max(k for k in among if k[0] == loser)
                    model.discard(furthest)
                    among.discard(furthest)
            assert (receipt.status == "buffered") == (key in model)
        assert set(replica._buffer.waiters) == model
