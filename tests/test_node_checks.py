"""The node's checks that need no network: trade reports and identity persistence."""

from __future__ import annotations

import cbor2
from libp2p.crypto.keys import KeyPair
from libp2p.peer.id import ID

from p2pexchange.core.events import OrderType, Place, Side, sign_event
from p2pexchange.core.market import DEFAULT_MARKETS
from p2pexchange.core.params import TRADE_REPORTS_PEER_MAX
from p2pexchange.core.replica import Replica
from p2pexchange.net import wire
from p2pexchange.node import Node, NodeConfig
from p2pexchange.sim.workload import peer_id_bytes, seeded_key_pair
from p2pexchange.store import EventStore


def two_member_node(tmp_path) -> tuple[Node, Replica, KeyPair]:
    """A node whose network has a second member (a bare replica here) that has not
    acknowledged anything yet: nothing of the node's is final until it does."""
    key = seeded_key_pair("node")
    other_key = seeded_key_pair("other")
    node_id, other_id = peer_id_bytes(key), peer_id_bytes(other_key)
    data_dir = tmp_path / "n"
    data_dir.mkdir()
    (data_dir / "identity.key").write_bytes(key.private_key.to_bytes())
    EventStore(str(data_dir / "events.sqlite3")).set_genesis(sorted([node_id, other_id]))
    node = Node(NodeConfig(data_dir=str(data_dir)))
    assert node.origin == node_id
    other = Replica(DEFAULT_MARKETS, other_id, genesis=[node_id, other_id])
    return node, other, other_key


def acknowledge(node: Node, other: Replica, other_key: KeyPair) -> None:
    """Two rounds of acknowledgements between the node and the other member."""
    for _ in range(2):
        for raw in node.replica.events_for(other.clock, 10_000):
            other.receive(raw)
        other_ack, _ = other.create_event(other_key.private_key, "", [])
        node.replica.receive(other_ack.raw)
        node.replica.create_event(node.key_pair.private_key, "", [])


def test_a_trade_report_that_disagrees_raises_a_divergence_alarm(tmp_path, caplog):
    node, other, other_key = two_member_node(tmp_path)
    key = node.key_pair.private_key
    node.replica.create_event(key, "BTC-USD", [Place(Side.SELL, OrderType.LIMIT, 100, 3)])
    taker, receipt = node.replica.create_event(
        key, "BTC-USD", [Place(Side.BUY, OrderType.LIMIT, 100, 3)])
    trades = node.replica.trades_of(taker.id)
    assert trades == []  # same origin: self-trade prevention expired the taker
    honest = wire.TradeReport(taker.id, 0, wire.trades_hash([]))
    lying = wire.TradeReport(taker.id, 1, b"\x01" * 32)
    node.control.reports.on_report(node.peer_id, honest)
    node.control.reports.on_report(node.peer_id, lying)  # a second report on the same event
    node.control.reports.check()  # not final yet: both kept, nothing compared
    assert not node.replica.is_final(taker.id)
    assert node.control.divergences == 0 and len(node.control.reports.pending) == 1
    acknowledge(node, other, other_key)
    assert node.replica.is_final(taker.id)
    node.control.reports.check()
    assert node.control.divergences == 0 and not node.control.reports.pending
    assert node.control.reports.matched == 1
    node.control.reports.on_report(node.peer_id, lying)  # on an event already final
    node.control.reports.check()
    assert node.control.divergences == 1
    assert "DIVERGENCE" in caplog.text


def test_trade_reports_come_only_from_the_taker_origin_and_are_bounded_per_peer(
        tmp_path, monkeypatch):
    node = Node(NodeConfig(data_dir=str(tmp_path / "n")))
    key = node.key_pair.private_key
    event, _ = node.replica.create_event(key, "BTC-USD",
                                         [Place(Side.SELL, OrderType.LIMIT, 100, 3)])
    stranger = ID.from_pubkey(seeded_key_pair("stranger").public_key)
    # Someone else's report on our event: refused, never compared.
    node.control.reports.on_report(stranger, wire.TradeReport(event.id, 9, b"\x01" * 32))
    assert node.control.reports.pending == {}
    assert node.rejections.by_code == {"not_reporters_event": 1}
    # Reports on events we do not hold yet wait, but one peer's backlog is bounded.
    for i in range(TRADE_REPORTS_PEER_MAX + 5):
        node.control.reports.on_report(stranger, wire.TradeReport(i.to_bytes(32, "big"), 1,
                                                                b"\x02" * 32))
    assert len(node.control.reports.pending) == TRADE_REPORTS_PEER_MAX
    assert node.rejections.by_code["too_many_reports"] == 5
    node.control.reports.check()
    assert node.control.divergences == 0
    assert len(node.control.reports.pending) == TRADE_REPORTS_PEER_MAX  # still waiting
    # Reports whose event stays unknown (never sent, or one the replica forgot) expire,
    # so they do not block that peer's later reports.
    monkeypatch.setattr("p2pexchange.net.reports.TRADE_REPORT_WAIT_S", 0.0)
    node.control.reports.check()
    assert node.control.reports.pending == {} and node.control.divergences == 0
    node.control.reports.on_report(stranger, wire.TradeReport(b"\x03" * 32, 1, b"\x02" * 32))
    assert len(node.control.reports.pending) == 1


def test_own_trade_reports_travel_in_the_next_heartbeat_and_are_compared(tmp_path):
    node, other, other_key = two_member_node(tmp_path)
    maker, _ = other.create_event(other_key.private_key, "BTC-USD",
                                  [Place(Side.SELL, OrderType.LIMIT, 100, 3)])
    node.replica.receive(maker.raw)
    taker, _ = node.replica.create_event(node.key_pair.private_key, "BTC-USD",
                                         [Place(Side.BUY, OrderType.LIMIT, 100, 3)])
    trades = node.replica.trades_of(taker.id)
    assert len(trades) == 1
    assert node.control.reports.own() == ()  # not final yet: nothing to report
    acknowledge(node, other, other_key)
    assert node.replica.is_final(taker.id)
    reports = node.control.reports.own()
    assert reports == (wire.TradeReport(taker.id, 1, wire.trades_hash(trades)),)
    assert node.control.reports.own() == ()  # each reported once
    # A heartbeat carrying the report (here one that lies about it) is checked like a
    # report on the trades topic.
    hb = wire.Heartbeat(dict(node.replica.clock), node.replica.lamport, node.replica.digest,
                        3, (), None, (wire.TradeReport(taker.id, 2, b"\x01" * 32),))
    node.control.on_heartbeat(node.peer_id, wire.decode_heartbeat(wire.encode_heartbeat(hb)))
    assert len(node.control.reports.pending) == 1
    node.control.reports.check()
    assert node.control.divergences == 1 and node.control.reports.matched == 0


def test_identity_survives_a_restart(tmp_path):
    first = Node(NodeConfig(data_dir=str(tmp_path / "n")))
    first.store.close()
    again = Node(NodeConfig(data_dir=str(tmp_path / "n")))
    assert again.peer_id == first.peer_id


def test_wire_messages_round_trip_and_reject_garbage():
    hb = wire.Heartbeat({b"\x00\x24" + b"a" * 36: 3}, 7, b"d" * 32, 12, (b"g1", b"g2"))
    assert wire.decode_heartbeat(wire.encode_heartbeat(hb)) == hb
    attested = wire.Heartbeat({}, 7, b"d" * 32, 12, (), (4096, b"h" * 32))  # a checkpoint
    assert wire.decode_heartbeat(wire.encode_heartbeat(attested)) == attested
    reporting = wire.Heartbeat({}, 7, b"d" * 32, 12, (), None, tuple(
        wire.TradeReport(bytes([i]) * 32, i, b"h" * 32) for i in range(wire.HEARTBEAT_REPORTS_MAX)))
    assert wire.decode_heartbeat(wire.encode_heartbeat(reporting)) == reporting
    assert wire.decode_join_request(wire.encode_join_request(b"sponsor")) == b"sponsor"
    bad_fields = [("g", g) for g in ([b"g2", b"g1"], [b"g1", b"g1"], [1], b"g")] + \
        [("k", k) for k in ([4096], [0, b"h" * 32], [4096, b"h" * 31], [-1, b"h" * 32],
                            [4096, "h" * 32], [4096, b"h" * 32, 1])] + \
        [("r", r) for r in ([], [[b"e" * 32, 1, b"h" * 32]] * 2, [[b"e" * 32, 1]],
                            [[b"e" * 31, 1, b"h" * 32]], [[b"e" * 32, -1, b"h" * 32]],
                            [[b"e" * 32, 1, "h" * 32]], [(b"e" * 32, 1.0, b"h" * 32)],
                            [[bytes([i]) * 32, 1, b"h" * 32]
                             for i in range(wire.HEARTBEAT_REPORTS_MAX + 1)], b"r")]
    for field, value in bad_fields:
        bad = wire.canonical({"v": wire.VERSION, "c": {}, "l": 1, "d": b"d" * 32, "n": 1,
                              "g": [], field: value})
        try:
            wire.decode_heartbeat(bad)
        except wire.WireError as exc:
            assert exc.code in ("bad_schema", "bad_type"), exc
        else:
            raise AssertionError(f"accepted {field} = {value!r}")
    report = wire.TradeReport(b"e" * 32, 2, b"h" * 32)
    assert wire.decode_trade_report(wire.encode_trade_report(report)) == report
    assert wire.decode_sync_request(wire.encode_sync_request({}, 10_000)) == ({}, 256)
    assert wire.decode_sync_response(wire.encode_sync_response([b"x"], True)) == ([b"x"], True)
    for bad in (b"", b"\xff", wire.canonical({"v": 1}), wire.canonical([1]),
                wire.canonical({"v": 1, "c": {}, "l": 1.5, "d": b"d" * 32, "n": 1})):
        for decode in (wire.decode_heartbeat, wire.decode_trade_report,
                       wire.decode_sync_request, wire.decode_sync_response):
            try:
                decode(bad)
            except wire.WireError:
                continue
            raise AssertionError(f"{decode.__name__} accepted {bad!r}")


def test_wire_messages_must_be_canonical():
    hb = wire.encode_heartbeat(wire.Heartbeat({}, 7, b"d" * 32, 12))
    unsorted = cbor2.dumps({"v": wire.VERSION, "n": 12, "l": 7, "g": [], "d": b"d" * 32,
                            "c": {}})
    long_int = hb.replace(b"\x61\x6c\x07", b"\x61\x6c\x18\x07")  # "l": 7 in two bytes
    assert wire.decode_heartbeat(hb).lamport == 7
    for bad in (unsorted, long_int):
        try:
            wire.decode_heartbeat(bad)
        except wire.WireError as exc:
            assert exc.code == "non_canonical", exc
        else:
            raise AssertionError(f"accepted {bad.hex()}")


def test_a_market_topic_validator_checks_topic_origin_and_state_and_verifies_once():
    from types import SimpleNamespace

    from p2pexchange.core.events import EventRejected, sign_event
    from p2pexchange.net.gossip import Gossip
    from p2pexchange.net.host import create_host

    key = seeded_key_pair("validator")
    origin = ID.from_pubkey(key.public_key).to_bytes()
    event = sign_event(key.private_key, origin, 1, {}, 1, "BTC-USD",
                       [Place(Side.SELL, OrderType.LIMIT, 100, 1)])
    verdict: dict[str, str | None] = {"code": None}
    rejected = []
    gossip = Gossip(create_host(key), b"me", lambda *args: rejected.append(args),
                    precheck=lambda e: verdict["code"])
    check = gossip._event_check("BTC-USD")
    assert check(SimpleNamespace(data=event.raw, from_id=origin)) == event
    assert gossip._verified(event.raw) == event  # the reader gets the verified event ...
    assert gossip._verified(event.raw) == event.raw  # ... once
    verdict["code"] = "equivocation"
    try:
        check(SimpleNamespace(data=event.raw, from_id=b"someone"))
    except EventRejected as exc:
        assert exc.code == "not_origin"
    else:
        raise AssertionError("not_origin")
    # A state check failed by a verified event is its signer's fault, not the forwarder's
    # (an honest forwarder cannot know our own history): counted against the origin.
    forwarder = ID.from_pubkey(seeded_key_pair("forwarder").public_key)
    gossip.validate("p2pexchange/v2/market/BTC-USD", "event", check, EventRejected)
    validator = gossip.pubsub.topic_validators["p2pexchange/v2/market/BTC-USD"].validator
    for code, blamed in (("impossible_clock", ID(origin)), ("equivocation", ID(origin)),
                         ("fork", forwarder)):  # fork: someone in its past equivocated
        verdict["code"] = code
        rejected.clear()
        assert validator(forwarder, SimpleNamespace(data=event.raw, from_id=origin)) is False
        assert rejected == [("event", code, blamed)], (code, rejected)
    # Our own publication (the forwarder is ourselves) is accepted unchecked, and not kept
    # for the reader (which skips our own): checked, it would fail (not_origin, fork).
    rejected.clear()
    assert validator(ID(b"me"), SimpleNamespace(data=event.raw, from_id=b"me")) is True
    assert rejected == [] and gossip._verified(event.raw) == event.raw
    try:
        gossip._event_check("ETH-USD")(SimpleNamespace(data=event.raw, from_id=origin))
    except EventRejected as exc:
        assert exc.code == "wrong_topic"
    else:
        raise AssertionError("wrong_topic")


async def test_a_node_that_lags_behind_refuses_new_orders(tmp_path):
    """Backpressure: with more than one batch of events waiting to be applied (or a
    late event loop), `submit_many` refuses (the API answers 503 node_busy)."""
    from p2pexchange.core.params import INBOX_BUSY_EVENTS

    node = Node(NodeConfig(data_dir=str(tmp_path / "n")))
    order = [("BTC-USD", Place(Side.BUY, OrderType.LIMIT, 100, 1))]
    assert node.busy() is None
    stranger = ID.from_pubkey(seeded_key_pair("stranger").public_key)
    for _ in range(INBOX_BUSY_EVENTS + 1):
        node.intake.offer(stranger, b"an event nobody has applied yet")
    assert "waiting to be applied" in node.busy()
    try:
        await node.submit_many(order)
    except OverflowError as exc:
        assert "waiting to be applied" in str(exc)
    else:
        raise AssertionError("accepted an order while lagging")
    assert node.pending_actions == 0  # nothing was queued
    node.loop_lag.samples_ms.append(1_000.0)
    while node.intake.backlog:
        node.intake._inbox.receive_nowait()
    assert "behind" in node.busy()


def test_a_node_whose_peers_lag_behind_its_events_refuses_new_orders(tmp_path):
    """Backpressure from the network: a live peer's last heartbeat lacks an event this
    node signed more than `PEERS_BEHIND_BUSY_S` ago."""
    import time

    from p2pexchange.core.params import PEERS_BEHIND_BUSY_S

    node, other, _ = two_member_node(tmp_path)
    peer = ID(other.origin)  # a member
    stranger = ID.from_pubkey(seeded_key_pair("peer").public_key)  # not a member
    node.replica.create_event(node.key_pair.private_key, "BTC-USD",
                              [Place(Side.SELL, OrderType.LIMIT, 100, 1)])
    node.control._sealed_at.append((1, time.monotonic() - PEERS_BEHIND_BUSY_S - 5))
    # A newcomer still catching up (no member yet) is no sign of a lagging network.
    node.control.on_heartbeat(stranger, wire.Heartbeat({}, 0, b"d" * 32, 0))
    assert node.busy() is None
    node.control.on_heartbeat(peer, wire.Heartbeat({}, 0, b"d" * 32, 0))  # has none of ours
    assert "behind our events" in node.busy()
    node.control.on_heartbeat(peer, wire.Heartbeat({node.origin: 1}, 1, b"d" * 32, 1))
    assert node.busy() is None  # it caught up


def test_what_has_arrived_is_applied_before_our_next_event_is_signed(tmp_path):
    """An event queued in the intake when the node signs its own is handed to the replica
    first, so ours covers it (its clock names it) and it does not roll ours back; a
    batch's limits hold (the rest stays queued, in order)."""
    from p2pexchange.intake import INBOX_BATCH_BYTES_MAX, INBOX_BATCH_MAX

    node, other, other_key = two_member_node(tmp_path)
    sender = ID(other.origin)
    theirs = [other.create_event(other_key.private_key, "BTC-USD",
                                 [Place(Side.SELL, OrderType.LIMIT, 100 + i, 1)])[0]
              for i in range(INBOX_BATCH_MAX + 2)]
    node.intake.offer(sender, theirs[0].raw)
    assert node.intake.backlog == 1
    node.submit("BTC-USD", Place(Side.BUY, OrderType.LIMIT, 100, 1))
    ours = node._seal("BTC-USD", [action for _, action in node.batcher.pending])
    assert ours is not None and ours.clock.get(other.origin) == 1  # covers theirs
    assert node.intake.backlog == 0 and node.replica.stats()["rollbacks"] == 0
    assert node.replica.trades_of(ours.id)  # it took their sell at 100
    for event in theirs[1:]:
        node.intake.offer(sender, event.raw)
    sizes = [len(e.raw) for e in theirs[1:]]
    fit = next(n for n in range(1, len(sizes) + 1)  # what one batch may take
               if n == INBOX_BATCH_MAX or sum(sizes[:n + 1]) > INBOX_BATCH_BYTES_MAX)
    assert fit < len(sizes)
    node.intake.drain()  # one batch at most
    assert node.intake.backlog == len(sizes) - fit
    assert node.replica.clock[other.origin] == 1 + fit
    while node.intake.backlog:
        node.intake.drain()
    assert node.replica.clock[other.origin] == len(theirs)


async def test_the_loop_lag_monitor_names_the_task_that_held_the_loop():
    """A task step that blocks the loop (here a 60 ms sleep without an await) shows up
    in `slow_steps` with its task's name and at least its duration, and is counted over
    the 50 ms bound; short steps do not show up."""
    import time

    import trio

    from p2pexchange.looplag import SLOW_STEP_MS, LoopLag

    lag = LoopLag()

    async def hog() -> None:
        await trio.sleep(0.15)
        time.sleep(0.06)

    async def polite() -> None:
        for _ in range(20):
            await trio.sleep(0.01)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(lag.run)
        nursery.start_soon(polite)
        nursery.start_soon(hog)
        await trio.sleep(0.4)
        nursery.cancel_scope.cancel()
    steps = lag.slow_steps()
    assert steps and steps[0]["ms"] >= 60 and steps[0]["task"].endswith("hog"), steps
    assert all(s["ms"] >= SLOW_STEP_MS for s in steps)
    assert not any(s["task"].endswith("polite") for s in steps), steps
    assert lag.steps >= 20 and 1 <= lag.steps_over_bound < lag.steps  # (the hog's counted)


async def test_the_inbox_hands_over_batches_bounded_in_events_and_bytes(tmp_path):
    """What queued up goes to the replica in arrival order, nothing lost, in batches of
    at most INBOX_BATCH_MAX events and, past their first, INBOX_BATCH_BYTES_MAX bytes
    (a backlog of large events is not applied in one step of the event loop)."""
    import trio

    from p2pexchange.intake import INBOX_BATCH_BYTES_MAX, INBOX_BATCH_MAX

    node = Node(NodeConfig(data_dir=str(tmp_path / "n")))
    batches: list[list[bytes]] = []
    node.intake.receive = lambda arrivals: batches.append([a[0] for a in arrivals]) or []
    stranger = ID.from_pubkey(seeded_key_pair("stranger").public_key)
    sizes = [100] * 300 + [20_000] * 10 + [INBOX_BATCH_BYTES_MAX + 1] + [10] * 5
    raws = [bytes([i % 256]) * n for i, n in enumerate(sizes)]
    for raw in raws:
        node.intake.offer(stranger, raw)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(node.intake.run)
        with trio.fail_after(5):
            while sum(map(len, batches)) < len(raws):
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert [r for b in batches for r in b] == raws
    assert all(len(b) <= INBOX_BATCH_MAX for b in batches)
    assert all(sum(map(len, b[1:])) + len(b[0]) <= INBOX_BATCH_BYTES_MAX or len(b) == 1
               for b in batches), [sum(map(len, b)) for b in batches]
    assert len(batches[0]) == INBOX_BATCH_MAX  # small events: the count bounds the batch
    assert any(len(b) == 1 and len(b[0]) > INBOX_BATCH_BYTES_MAX for b in batches)


def test_a_second_version_refused_by_gossips_validator_still_makes_a_proof(tmp_path):
    """The validator refuses a second signed version of a seq the node holds (it is not
    forwarded), and the node keeps the proof of equivocation all the same, whether it
    holds the first version whole or only settled (then from its store), so the proof
    is published (Control) and the equivocator excluded everywhere."""
    from types import SimpleNamespace

    from p2pexchange.core.events import sign_event

    node, other, other_key = two_member_node(tmp_path)
    validator_check = node.gossip._event_check("BTC-USD")
    o = other.origin
    first, _ = other.create_event(other_key.private_key, "BTC-USD",
                                  [Place(Side.SELL, OrderType.LIMIT, 100, 1)])
    node.intake.receive([(first.raw, "peer", None)])
    assert node.replica.event(first.id) is not None
    second = sign_event(other_key.private_key, o, 1, {}, 1, "BTC-USD",
                        [Place(Side.BUY, OrderType.LIMIT, 90, 1)])
    try:
        validator_check(SimpleNamespace(data=second.raw, from_id=o))
    except Exception as exc:  # counted against the origin, not forwarded
        assert str(exc) == "equivocation", exc
    else:
        raise AssertionError("a second version was accepted for forwarding")
    assert node.replica.equivocations[(o, 1)] == (first.raw, second.raw)

    # Settled: the first version's bytes are no longer in the replica, only in the store.
    (tmp_path / "b").mkdir()
    node2, other2, key2 = two_member_node(tmp_path / "b")
    o2 = other2.origin
    first2, _ = other2.create_event(key2.private_key, "BTC-USD",
                                    [Place(Side.SELL, OrderType.LIMIT, 100, 1)])
    node2.intake.receive([(first2.raw, "peer", None)])
    later, _ = other2.create_event(key2.private_key, "", [])  # first2 stops being its head
    node2.intake.receive([(later.raw, "peer", None)])
    acknowledge(node2, other2, key2)
    node2.replica.compact()
    assert type(node2.replica.events_of(o2)[0]).__name__ == "Settled"
    second2 = sign_event(key2.private_key, o2, 1, {}, 1, "BTC-USD",
                         [Place(Side.BUY, OrderType.LIMIT, 90, 1)])
    try:
        node2.gossip._event_check("BTC-USD")(SimpleNamespace(data=second2.raw, from_id=o2))
    except Exception as exc:
        assert str(exc) == "equivocation", exc
    else:
        raise AssertionError("a second version was accepted for forwarding")
    assert node2.replica.equivocations[(o2, 1)] == (first2.raw, second2.raw)


def test_a_newcomer_starts_only_from_a_checkpoint_a_majority_attests_and_none_contradicts(
        tmp_path):
    """`Control.attested_checkpoint` over a five-member genesis (the node and four
    others): three attest no checkpoint (a young network: n = 0); then two attest
    checkpoint 8 (no quorum), a third does (quorum, most recent attester first); a
    fourth attesting another hash for 8 vetoes it; a non-member's word counts for
    nothing."""
    key = seeded_key_pair("newcomer")
    others = [seeded_key_pair(f"member-{i}") for i in range(4)]
    ids = [peer_id_bytes(k) for k in others]
    data_dir = tmp_path / "n"
    data_dir.mkdir()
    (data_dir / "identity.key").write_bytes(key.private_key.to_bytes())
    genesis = sorted([peer_id_bytes(key), *ids])
    EventStore(str(data_dir / "events.sqlite3")).set_genesis(genesis)
    node = Node(NodeConfig(data_dir=str(data_dir)))

    def beat(member: bytes, checkpoint: tuple[int, bytes] | None) -> None:
        node.control.on_heartbeat(ID(member), wire.Heartbeat(
            {}, 0, bytes(32), 0, tuple(genesis), checkpoint))

    control = node.control
    assert control.attested_checkpoint() is None
    for member in ids[:3]:
        beat(member, None)
    assert control.attested_checkpoint() == (0, b"", [ID(m) for m in reversed(ids[:3])])
    beat(ids[0], (8, b"h" * 32))
    beat(ids[1], (8, b"h" * 32))
    stranger = peer_id_bytes(seeded_key_pair("stranger"))
    beat(stranger, (8, b"h" * 32))
    assert control.attested_checkpoint() is None  # 2 of 5, and a stranger
    beat(ids[2], (8, b"h" * 32))
    assert control.attested_checkpoint() == (8, b"h" * 32,
                                             [ID(ids[2]), ID(ids[1]), ID(ids[0])])
    beat(ids[3], (8, b"x" * 32))
    assert control.attested_checkpoint() is None  # contradicted: replay instead


def test_a_forgotten_seq_sent_again_is_a_duplicate_or_an_equivocation(tmp_path):
    """A member forgets its chains below a checkpoint's segments (core/replica.py
    `_forget`), so the replica refuses a seq from there as `before_snapshot`; the node
    reads it from its store and gives the verdict of a replica that kept it: the same
    event again is a duplicate (blamed on nobody), another version an equivocation, with
    the proof kept."""
    node, other, other_key = two_member_node(tmp_path)
    node.replica.checkpoint_every = 1
    sender = ID(other.origin)
    sent = []
    for k in range(4):
        event, _ = other.create_event(other_key.private_key, "BTC-USD",
                                      [Place(Side.SELL, OrderType.LIMIT, 100 + k, 1)])
        assert node.intake.receive([(event.raw, "gossip", sender)])[0].status == "delivered"
        sent.append(event)
    acknowledge(node, other, other_key)
    node.replica.compact()  # (forgets up to the checkpoint of the one before)
    node.replica.compact()
    assert node.replica.events_of(other.origin) and node.replica._events[other.origin].base >= 1
    again = node.intake.receive([(sent[0].raw, "sync", sender)])[0]
    assert (again.status, again.code) == ("duplicate", None)
    assert node.rejections.by_code == {}
    forged = sign_event(other_key.private_key, other.origin, 1, {}, 1, "BTC-USD",
                        [Place(Side.BUY, OrderType.LIMIT, 99, 1)])
    second = node.intake.receive([(forged.raw, "gossip", sender)])[0]
    assert (second.status, second.code) == ("rejected", "equivocation")
    assert node.replica.equivocators() == {other.origin}
    assert node.rejections.by_code == {"equivocation": 1}
