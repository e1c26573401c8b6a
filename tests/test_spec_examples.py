"""protocols/state_machine.md's worked example, recomputed from the page alone.

A small reference of the page's rules (order ids, matching, self-trade prevention, the
fill budget, the FOK rule, cancels and the digest fold), written from the page and
sharing no code with `core/`, replays `protocols/vectors/events.json` in total order.
Its outcomes, trades and digests must equal the replica's, and the digests the page
prints must be the ones computed. A change to matching or to the digest that the page
does not describe makes this fail.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import re

import cbor2

from p2pexchange.core.market import DEFAULT_MARKETS
from p2pexchange.core.replica import Replica

ROOT = pathlib.Path(__file__).resolve().parent.parent
VECTORS = ROOT / "protocols" / "vectors" / "events.json"
PAGE = ROOT / "protocols" / "state_machine.md"

# The page's constants (§5.3, §6, §7).
EVENT_FILLS_MAX = 5_000
FOK_LEVELS_MAX = 64
D0 = hashlib.sha256(b"p2pexchange/digest/v2").digest()
BUY, SELL = 0, 1
LIMIT, IOC, FOK, POST_ONLY, MARKET = range(5)
EXPIRE_TAKER, EXPIRE_MAKER, EXPIRE_BOTH = range(3)
OPEN = ("resting", "partially_filled")


class RefOrder:
    def __init__(self, oid, origin, side, otype, price, qty, stp):
        self.oid, self.origin, self.side, self.type = oid, origin, side, otype
        self.price, self.qty, self.stp = price, qty, stp
        self.filled, self.status, self.reason = 0, "resting", ""

    @property
    def remaining(self):
        return self.qty - self.filled


class RefBook:
    """Levels as sorted lists of orders; slow and plain on purpose."""

    def __init__(self):
        self.orders = {}
        self.resting = []  # open orders in arrival order (time priority)

    def levels(self, side):
        """The open orders of `side` grouped by price, best level first."""
        prices = sorted({o.price for o in self.resting if o.side == side},
                        reverse=side == BUY)
        return [[o for o in self.resting if o.side == side and o.price == p] for p in prices]

    @staticmethod
    def crosses(taker, maker):
        if taker.type == MARKET:
            return True
        return maker.price <= taker.price if taker.side == BUY else maker.price >= taker.price

    def place(self, t, budget, trades):
        if t.oid in self.orders:
            t.status, t.reason = "rejected", "duplicate_order_id"
            return
        self.orders[t.oid] = t
        other = 1 - t.side
        levels = self.levels(other)
        if levels and self.crosses(t, levels[0][0]):
            if t.type == POST_ONLY:
                t.status, t.reason = "rejected", "post_only_would_take"
                return
            if t.type == FOK:
                refusal = self.fok_refusal(t, levels, budget[0])
                if refusal:
                    t.status, t.reason = "cancelled", refusal
                    return
            self.take(t, budget, trades)
            if t.status == "cancelled":
                return
        if t.remaining == 0:
            t.status = "filled"
        elif t.type in (LIMIT, POST_ONLY):
            t.status = "partially_filled" if t.filled else "resting"
            self.resting.append(t)
        else:
            t.status = "cancelled"
            t.reason = {MARKET: "market_no_liquidity", FOK: "fok_unfillable"}.get(
                t.type, "ioc_remainder")

    def fok_refusal(self, t, levels, left):
        need, makers = t.qty, 0
        for k, level in enumerate(levels):
            if not self.crosses(t, level[0]):
                return "fok_unfillable"
            if k == FOK_LEVELS_MAX:
                return "fok_too_deep"
            own = sum(o.remaining for o in level if o.origin == t.origin)
            if own and t.stp != EXPIRE_MAKER:
                return "fok_unfillable"
            available = sum(o.remaining for o in level) - own
            if available >= need:
                makers += min(len(level), need + own)
                return None if makers <= left else "match_budget"
            need -= available
            makers += len(level)
        return "fok_unfillable"

    def take(self, t, budget, trades):
        while t.remaining:
            levels = self.levels(1 - t.side)
            if not levels or not self.crosses(t, levels[0][0]):
                return
            m = levels[0][0]
            if budget[0] == 0:
                t.status, t.reason = "cancelled", "match_budget"
                return
            if m.origin == t.origin:
                if t.stp != EXPIRE_TAKER:
                    budget[0] -= 1
                    self.resting.remove(m)
                    m.status, m.reason = "cancelled", "stp_expired_maker"
                if t.stp != EXPIRE_MAKER:
                    t.status, t.reason = "cancelled", "stp_expired_taker"
                    return
                continue
            budget[0] -= 1
            q = min(m.remaining, t.remaining)
            trades.append((m.oid, t.oid, m.price, q))
            m.filled += q
            t.filled += q
            if m.remaining == 0:
                m.status = "filled"
                self.resting.remove(m)
            else:
                m.status = "partially_filled"

    def cancel(self, oid, origin):
        o = self.orders.get(oid)
        if o is None or o.status not in OPEN:
            return "not_open"
        if o.origin != origin:
            return "not_owner"
        self.resting.remove(o)
        o.status, o.reason = "cancelled", "cancelled_by_origin"
        return "cancelled"


def reference_replay(raws):
    """(outcomes, trades, digest) per event, applying `raws` in total order."""
    events = []
    for raw in raws:
        m = cbor2.loads(raw)
        places = any(a[0] == 0 for a in m["a"])
        rank = 2 if m["m"] == "" else (1 if places else 0)
        events.append(((m["l"], rank, m["o"], m["s"]), hashlib.sha256(raw).digest(), m))
    books = {name: RefBook() for name in DEFAULT_MARKETS}
    digest = D0
    results = []
    for _, event_id, m in sorted(events, key=lambda item: item[0]):
        outcomes, trades = [], []
        if m["m"] == "":
            seen = set()
            for _, member in m["a"]:
                outcomes.append("duplicate" if member in seen else "joined")
                seen.add(member)
        else:
            book, budget = books[m["m"]], [EVENT_FILLS_MAX]
            for index, action in enumerate(m["a"]):
                if action[0] == 0:
                    _, side, otype, price, qty, stp = action
                    order = RefOrder(event_id + index.to_bytes(2, "big"), m["o"], side, otype,
                                     price, qty, stp)
                    book.place(order, budget, trades)
                    outcomes.append(order.status)
                else:
                    outcomes.append(book.cancel(action[1], m["o"]))
        if m["a"]:  # an event without actions leaves the digest as it was (§7)
            h = hashlib.sha256(digest + event_id)
            for maker, taker, price, qty in trades:
                h.update(maker + taker + price.to_bytes(8, "big") + qty.to_bytes(8, "big"))
            digest = h.digest()
        results.append((event_id, outcomes, trades, digest))
    return results


def vectors():
    data = json.loads(VECTORS.read_text())
    return data, [bytes.fromhex(e["cbor_hex"]) for e in data["events"]]


def test_reference_of_the_page_matches_the_replica_event_by_event():
    data, raws = vectors()
    replica = Replica(DEFAULT_MARKETS, genesis=[bytes.fromhex(g) for g in data["genesis"]])
    expected = reference_replay(raws)
    for raw, (event_id, outcomes, trades, digest) in zip(raws, expected, strict=True):
        receipt = replica.receive(raw)  # the vectors are already in total order
        assert receipt.status == "delivered", receipt
        assert receipt.event.id == event_id
        assert replica.outcomes_of(event_id) == outcomes
        assert [(t.maker_order, t.taker_order, t.price, t.qty) for t in receipt.trades] == trades
        assert replica.digest == digest


def test_reference_replay_in_reverse_arrival_gives_the_same_digest():
    """Total order, not arrival order: the replica fed the vectors backwards (they wait
    for their causes) ends at the digest the page's fold gives."""
    data, raws = vectors()
    replica = Replica(DEFAULT_MARKETS, genesis=[bytes.fromhex(g) for g in data["genesis"]])
    for raw in reversed(raws):
        replica.receive(raw)
    assert replica.digest == reference_replay(raws)[-1][3]


def test_the_digests_printed_on_the_page_are_the_computed_ones():
    _, raws = vectors()
    page = PAGE.read_text()
    computed = [d.hex() for _, _, _, d in reference_replay(raws)]
    printed = re.findall(r"\b[0-9a-f]{64}\b", page)
    assert D0.hex() in printed
    for digest in computed:
        assert digest in printed, digest
    # The worked example's two trades, as the page describes them.
    _, _, trades, _ = reference_replay(raws)[1]
    e1 = hashlib.sha256(raws[0]).digest()
    e2 = hashlib.sha256(raws[1]).digest()
    assert trades == [(e1 + b"\x00\x00", e2 + b"\x00\x01", 6_500_000, 10),
                      (e1 + b"\x00\x00", e2 + b"\x00\x02", 6_500_000, 1)]


def test_reference_of_the_page_matches_the_replica_on_a_seeded_history():
    """Every order type and self-trade prevention mode, cancels of own, foreign,
    finished and unknown orders, on a narrow price range so that most orders cross."""
    import random

    from p2pexchange.core.events import STP, Cancel, OrderType, Place, Side, sign_event
    from p2pexchange.sim.workload import peer_id_bytes, seeded_key_pair

    seed = 14
    rng = random.Random(seed)
    keys = [seeded_key_pair(f"spec-{i}") for i in range(3)]
    origins = [peer_id_bytes(k) for k in keys]
    heads: dict[bytes, tuple[int, bytes]] = {}
    order_ids: list[bytes] = []
    raws = []
    for lamport in range(1, 81):
        i = rng.randrange(3)
        actions = []
        for _ in range(rng.randint(1, 12)):
            if order_ids and rng.random() < 0.25:
                oid = rng.choice(order_ids) if rng.random() < 0.9 else bytes(34)
                actions.append(Cancel(oid))
                continue
            otype = OrderType(rng.randrange(5))
            price = 0 if otype is OrderType.MARKET else rng.randint(98, 102)
            actions.append(Place(Side(rng.randrange(2)), otype, price, rng.randint(1, 6),
                                 STP(rng.randrange(3))))
        event = sign_event(keys[i].private_key, origins[i], heads.get(origins[i], (0,))[0] + 1,
                           dict(heads), lamport, rng.choice(sorted(DEFAULT_MARKETS)), actions)
        heads[origins[i]] = (event.seq, event.id)
        order_ids += [event.order_id(k) for k, a in enumerate(actions) if type(a) is Place]
        raws.append(event.raw)
    replica = Replica(DEFAULT_MARKETS)
    for raw in raws:
        replica.receive(raw)
    expected = reference_replay(raws)
    assert replica.applied_ids() == [event_id for event_id, _, _, _ in expected], seed
    for event_id, outcomes, trades, _ in expected:
        assert replica.outcomes_of(event_id) == outcomes, seed
        got = [(t.maker_order, t.taker_order, t.price, t.qty) for t in replica.trades_of(event_id)]
        assert got == trades, seed
    assert replica.digest == expected[-1][3], seed
    kinds = {o for _, outcomes, _, _ in expected for o in outcomes}
    assert {"cancelled", "not_owner", "not_open", "filled"} <= kinds, kinds
