"""Regenerates protocols/vectors/conformance/: the replica's conformance vectors (issue 14).

Each vector is one scenario: a sequence of raw events fed, in that order, to a fresh
replica `Replica(DEFAULT_MARKETS, origin=None, genesis=<the scenario's genesis>)`, with
what the replica must report after each one. `tests/test_conformance.py` replays every
step byte for byte and compares every field below, and rebuilds the vectors in-process
to check that the committed files are exactly what the code produces. Another
implementation uses them the same way: feed each step's bytes in order to a fresh
replica and compare (protocols/vectors/README.md).

Layout: one JSON file per scenario, `protocols/vectors/conformance/<name>.json`,
pretty-printed with sorted keys. Byte strings are lowercase hex. A file holds:

- `name`, `description` (one line: the rule the scenario shows), `protocol_version`;
- `authors`: role name -> {"seed": key seed for `seeded_key_pair`, "peer_id": hex}.
  Roles are named in the order of their peer ids (a < b < c), which is the order of
  concurrent events at equal Lamport time and rank;
- `genesis`: the founding members' peer ids, sorted;
- `replica_markets`: every market the replica is configured with (name -> base, quote,
  tick_size, lot_size); an event for any other market is `unknown_market`;
- `markets`: the markets whose books each step records;
- `same_final_state_as` (optional): another scenario whose last step must end in the
  same digest, books and orders (the same events in another arrival order);
- `steps`, each with:
  - `note`: what the step shows; `event_hex`: the bytes fed to `Replica.receive`;
  - `status`: "delivered" | "buffered" | "duplicate" | "rejected"; `code`: the reject
    code, or null;
  - `delivered`: ids of the events this step delivered, in delivery order (the event
    itself and the buffered events it released);
  - `missing`: for a buffered event, origin -> [first, last] seq it still waits for;
  - `rolled_back`: how many applied events this step undid and re-applied (an
    acknowledgement undoes nothing: Ledger._insert_empty);
  - `trades`: the trades in the receipt (those of the events delivered in this step;
    trades that re-applied events produce are not in any receipt, but they are in the
    digest, the books and the orders);
  - `applied`: every applied event in the total order, each {"event_id", "outcomes"}
    (per action: the order's status after its own step, "cancelled" or the cancel's
    reject code, "joined" for a join, "left" for a leave, "voted" or "refused" for a
    vote; "void" for every action of a removed member's event beyond its cut);
  - `orders`: every order ever placed in `markets`, sorted by order id, with its
    status, filled lots and reason after the step;
  - `books`: per market in `markets`: `bids` and `asks` as [price ticks, lots] levels,
    best first, and `resting` as [order id, remaining lots] in priority order (bids
    best first, then asks best first; within a level, oldest first);
  - `digest`: the replica's running digest after the step;
  - `final_key`: the finality frontier [lamport, rank, origin, seq], or null.

The generator also asserts, for each step, the facts the scenario is meant to show
(a killed FOK trades nothing, a late event rolls back, ...), so a vector never silently
records a bug. Run it after a deliberate change to the replica's behaviour:
    python scripts/make_conformance_vectors.py
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import cbor2

from p2pexchange.core.events import (
    EVENT_BYTES_MAX,
    MEMBERSHIP_MARKET,
    PROTOCOL_VERSION,
    SIGNATURE_DOMAIN,
    STP,
    Action,
    Cancel,
    Event,
    Join,
    Leave,
    OrderType,
    Place,
    Side,
    Vote,
    canonical,
)
from p2pexchange.core.finality import MEMBERS_MAX
from p2pexchange.core.market import DEFAULT_MARKETS
from p2pexchange.core.removal import Past, _all_committed
from p2pexchange.core.replica import Receipt, Replica
from p2pexchange.sim.workload import peer_id_bytes, seeded_key_pair

OUT_DIR = pathlib.Path(__file__).resolve().parent.parent / "protocols" / "vectors" / "conformance"
SEEDS = ("conformance-1", "conformance-2", "conformance-3")
BTC, ETH = "BTC-USD", "ETH-USD"
BUY, SELL = Side.BUY, Side.SELL
LIMIT, IOC, FOK, POST_ONLY, MARKET = (OrderType.LIMIT, OrderType.IOC, OrderType.FOK,
                                      OrderType.POST_ONLY, OrderType.MARKET)
FOK_TOO_DEEP_LEVELS = 65  # one more than book.FOK_LEVELS_MAX


# -- authors: honest events through a private replica, broken ones by hand ------------------


class Author:
    """One origin. Its honest events come from its own replica (`create_event`), so their
    clocks and Lamport times are what a correct node signs; `see` decides what it has
    delivered before it signs. `forge` signs an arbitrary body for the broken events."""

    def __init__(self, role: str, seed: str) -> None:
        self.role = role
        self.seed = seed
        self.key = seeded_key_pair(seed)
        self.origin = peer_id_bytes(self.key)
        self.replica = Replica(DEFAULT_MARKETS, self.origin)  # no genesis: admits anyone

    def see(self, *events: Event) -> Author:
        for event in events:
            receipt = self.replica.admit(event)
            assert receipt.status in ("delivered", "duplicate"), (self.role, receipt)
        return self

    def sign(self, market: str, actions: Sequence[Action]) -> Event:
        event, _ = self.replica.create_event(self.key.private_key, market, actions)
        return event

    def forge(self, seq: int, causes: Sequence[Event], lamport: int, market: str,
              actions: list, **fields: object) -> bytes:
        """A body signed by this author's key, with `fields` overriding (or, given
        `DROP`, removing) wire fields before it is signed (the signature `g` after):
        the canonical bytes."""
        body = {"v": PROTOCOL_VERSION, "o": self.origin, "s": seq,
                "c": {e.origin: [e.seq, e.id] for e in causes}, "l": lamport, "m": market,
                "a": actions}
        signature = fields.pop("g", None)
        for name, value in fields.items():
            if value is DROP:
                del body[name]
            else:
                body[name] = value
        body["g"] = self.key.private_key.sign(SIGNATURE_DOMAIN + canonical(body))
        if signature is DROP:
            del body["g"]
        elif signature is not None:
            body["g"] = signature
        return canonical(body)


DROP = object()


def cast() -> dict[str, Author]:
    """Fresh authors a, b, c, named in the order of their peer ids."""
    keyed = sorted((peer_id_bytes(seeded_key_pair(seed)), seed) for seed in SEEDS)
    return {role: Author(role, seed) for role, (_, seed) in zip("abc", keyed, strict=True)}


def place_wire(side: Side, otype: OrderType, price: int, qty: int, stp: STP = STP.EXPIRE_TAKER
               ) -> list:
    return [0, int(side), int(otype), price, qty, int(stp)]


# -- scenarios -----------------------------------------------------------------------------


@dataclass
class Step:
    raw: bytes
    note: str
    expect: dict  # the facts the step is meant to show, asserted by `check_intent`


def step(item: Event | bytes, note: str, **expect: object) -> Step:
    """`expect` keys: status, code, trades (count), outcomes and reasons (of this
    event's own actions), rolled_back, delivered (count), check (a predicate over the
    recorded step)."""
    raw = item.raw if isinstance(item, Event) else item
    return Step(raw, note, expect)


@dataclass
class Scenario:
    name: str
    description: str
    authors: dict[str, Author]
    genesis: Sequence[str]  # roles
    markets: Sequence[str]
    steps: list[Step]
    same_final_state_as: str | None = None
    extra: dict = field(default_factory=dict)


def limit_gtc_partial_fills() -> Scenario:
    x = cast()
    a, b = x["a"], x["b"]
    a1 = a.sign(BTC, [Place(SELL, LIMIT, 101, 3), Place(SELL, LIMIT, 102, 4),
                      Place(SELL, LIMIT, 103, 5)])
    b1 = b.see(a1).sign(BTC, [Place(BUY, LIMIT, 102, 10)])
    a2 = a.see(b1).sign(BTC, [Place(SELL, LIMIT, 102, 1)])
    return Scenario(
        "limit_gtc_partial_fills", "A good-till-cancelled limit order takes every level "
        "within its price, best first at the maker's price, and rests its remainder; a "
        "later taker partially fills it.", x, "ab", [BTC], [
            step(a1, "a rests three asks: 3@101, 4@102, 5@103", status="delivered",
                 trades=0, outcomes=["resting"] * 3),
            step(b1, "b buys 10@102: 3@101 and 4@102 trade, 3 rest as a bid at 102",
                 status="delivered", trades=2, outcomes=["partially_filled"]),
            step(a2, "a sells 1@102: it takes 1 of b's resting bid, which stays partially "
                 "filled", status="delivered", trades=1, outcomes=["filled"]),
        ])


def ioc() -> Scenario:
    x = cast()
    a, b = x["a"], x["b"]
    a1 = a.sign(BTC, [Place(SELL, LIMIT, 101, 3), Place(SELL, LIMIT, 102, 4)])
    b1 = b.see(a1).sign(BTC, [Place(BUY, IOC, 101, 5)])
    b2 = b.sign(BTC, [Place(BUY, IOC, 102, 2)])
    return Scenario(
        "immediate_or_cancel", "An IOC order takes what crosses and never rests: its "
        "remainder is cancelled (ioc_remainder); fully taken, it is filled.", x, "ab", [BTC], [
            step(a1, "a rests 3@101 and 4@102", status="delivered", outcomes=["resting"] * 2),
            step(b1, "b IOC buys 5@101: 3 trade at 101, the other 2 are cancelled",
                 status="delivered", trades=1, outcomes=["cancelled"],
                 reasons=["ioc_remainder"]),
            step(b2, "b IOC buys 2@102: filled at 102", status="delivered", trades=1,
                 outcomes=["filled"], reasons=[""]),
        ])


def fill_or_kill() -> Scenario:
    x = cast()
    a, b = x["a"], x["b"]
    a1 = a.sign(BTC, [Place(SELL, LIMIT, 101, 3), Place(SELL, LIMIT, 102, 4)])
    b1 = b.see(a1).sign(BTC, [Place(BUY, FOK, 102, 8)])
    b2 = b.sign(BTC, [Place(BUY, FOK, 102, 5)])
    return Scenario(
        "fill_or_kill", "A FOK order fills completely or not at all: killed when the lots "
        "within its price do not suffice (fok_unfillable), leaving the book untouched.",
        x, "ab", [BTC], [
            step(a1, "a rests 3@101 and 4@102", status="delivered"),
            step(b1, "b FOK buys 8@102: only 7 lots within 102, killed, no trade",
                 status="delivered", trades=0, outcomes=["cancelled"],
                 reasons=["fok_unfillable"]),
            step(b2, "b FOK buys 5@102: 3@101 and 2@102, filled", status="delivered",
                 trades=2, outcomes=["filled"]),
        ])


def fill_or_kill_too_deep() -> Scenario:
    x = cast()
    a, b = x["a"], x["b"]
    a1 = a.sign(BTC, [Place(SELL, LIMIT, 100 + i, 1) for i in range(FOK_TOO_DEEP_LEVELS)])
    top = 100 + FOK_TOO_DEEP_LEVELS - 1
    b1 = b.see(a1).sign(BTC, [Place(BUY, FOK, top, FOK_TOO_DEEP_LEVELS)])
    return Scenario(
        "fill_or_kill_too_deep", "A FOK order may count on at most 64 price levels: one "
        "that needs a 65th is killed (fok_too_deep) even though the lots exist.",
        x, "ab", [BTC], [
            step(a1, "a rests 65 asks of 1 lot at 100..164", status="delivered",
                 outcomes=["resting"] * FOK_TOO_DEEP_LEVELS),
            step(b1, "b FOK buys 65@164: it would need the 65th level, killed",
                 status="delivered", trades=0, outcomes=["cancelled"],
                 reasons=["fok_too_deep"]),
        ])


def post_only() -> Scenario:
    x = cast()
    a, b = x["a"], x["b"]
    a1 = a.sign(BTC, [Place(SELL, LIMIT, 101, 5)])
    b1 = b.see(a1).sign(BTC, [Place(BUY, POST_ONLY, 100, 2)])
    b2 = b.sign(BTC, [Place(BUY, POST_ONLY, 101, 2)])
    return Scenario(
        "post_only", "A post-only order rests when it does not cross and is rejected "
        "(post_only_would_take), trading nothing, when it would take.", x, "ab", [BTC], [
            step(a1, "a rests 5@101", status="delivered"),
            step(b1, "b post-only buys 2@100: rests", status="delivered", trades=0,
                 outcomes=["resting"]),
            step(b2, "b post-only buys 2@101: it would take, rejected", status="delivered",
                 trades=0, outcomes=["rejected"], reasons=["post_only_would_take"]),
        ])


def market_orders() -> Scenario:
    x = cast()
    a, b = x["a"], x["b"]
    b1 = b.sign(BTC, [Place(BUY, MARKET, 0, 1)])
    a1 = a.see(b1).sign(BTC, [Place(SELL, LIMIT, 101, 3), Place(SELL, LIMIT, 102, 4)])
    b2 = b.see(a1).sign(BTC, [Place(BUY, MARKET, 0, 2)])
    b3 = b.sign(BTC, [Place(BUY, MARKET, 0, 10)])
    return Scenario(
        "market_orders", "A market order takes the book at any price up to its size; what "
        "the book cannot give is cancelled (market_no_liquidity).", x, "ab", [BTC], [
            step(b1, "b market buys 1 on an empty book: cancelled, no trade",
                 status="delivered", trades=0, outcomes=["cancelled"],
                 reasons=["market_no_liquidity"]),
            step(a1, "a rests 3@101 and 4@102", status="delivered"),
            step(b2, "b market buys 2: filled at 101", status="delivered", trades=1,
                 outcomes=["filled"]),
            step(b3, "b market buys 10: takes 1@101 and 4@102, the book is empty, 5 are "
                 "cancelled", status="delivered", trades=2, outcomes=["cancelled"],
                 reasons=["market_no_liquidity"]),
        ])


def price_time_priority() -> Scenario:
    x = cast()
    a, b, c = x["a"], x["b"], x["c"]
    a1 = a.sign(BTC, [Place(SELL, LIMIT, 101, 2)])
    b1 = b.sign(BTC, [Place(SELL, LIMIT, 101, 2), Place(SELL, LIMIT, 100, 1)])
    c1 = c.see(b1, a1).sign(BTC, [Place(BUY, IOC, 101, 4)])
    b2 = b.see(a1, c1).sign(BTC, [Place(SELL, LIMIT, 101, 1)])
    c2 = c.see(b2).sign(BTC, [Place(BUY, LIMIT, 101, 2)])
    return Scenario(
        "price_time_priority", "Better prices fill first; within a price, orders fill in "
        "the total order (lamport, rank, origin, seq), not in arrival order.", x, "abc",
        [BTC], [
            step(b1, "b (lamport 1) rests 2@101 and 1@100", status="delivered"),
            step(a1, "a's concurrent 2@101 (lamport 1) arrives later but sorts first: "
                 "rollback", status="delivered", rolled_back=1),
            step(c1, "c IOC buys 4@101: b's 1@100 first, then a's 2@101 ahead of b's",
                 status="delivered", trades=3, outcomes=["filled"],
                 check=lambda s: [t["maker_origin"] for t in s["trades"]]
                 == [b.origin.hex(), a.origin.hex(), b.origin.hex()]),
            step(b2, "b rests 1 more at 101 (lamport 3), behind its older order",
                 status="delivered"),
            step(c2, "c buys 2@101: b's older order, then the newer one", status="delivered",
                 trades=2, outcomes=["filled"]),
        ])


def cancels() -> Scenario:
    x = cast()
    a, b = x["a"], x["b"]
    a1 = a.sign(BTC, [Place(SELL, LIMIT, 101, 2), Place(SELL, LIMIT, 102, 3)])
    first, second = a1.order_id(0), a1.order_id(1)
    b1 = b.see(a1).sign(BTC, [Cancel(first)])
    a2 = a.see(b1).sign(BTC, [Cancel(first)])
    unknown = hashlib.sha256(b"no such event").digest() + b"\x00\x00"
    a3 = a.sign(BTC, [Cancel(first), Cancel(unknown)])
    b2 = b.see(a2, a3).sign(BTC, [Place(BUY, IOC, 102, 3)])
    a4 = a.see(b2).sign(BTC, [Cancel(second)])
    a5 = a.sign(ETH, [Cancel(second)])
    b3 = b.see(a4, a5).sign(BTC, [Cancel(second)])
    return Scenario(
        "cancels", "A cancel takes its origin's open order off the book; another origin's "
        "open order is not_owner; an id not open in the event's market (closed, unknown, "
        "another market's) is not_open; a refused cancel changes nothing.", x, "ab",
        [BTC, ETH], [
            step(a1, "a rests 2@101 and 3@102", status="delivered"),
            step(b1, "b cancels a's order: not_owner", status="delivered",
                 outcomes=["not_owner"]),
            step(a2, "a cancels its own order: cancelled", status="delivered",
                 outcomes=["cancelled"]),
            step(a3, "a cancels it again (not_open) and an order nobody placed "
                 "(not_open both)", status="delivered", outcomes=["not_open", "not_open"]),
            step(b2, "b IOC buys 3@102: a's second order is filled", status="delivered",
                 trades=1),
            step(a4, "a cancels its filled order: not_open", status="delivered",
                 outcomes=["not_open"]),
            step(a5, "a cancels that order from an ETH-USD event: not_open (a cancel "
                 "acts on its own market's book)", status="delivered",
                 outcomes=["not_open"]),
            step(b3, "b cancels a's filled order: not_open, not not_owner (a closed "
                 "order is judged like an unknown one)", status="delivered",
                 outcomes=["not_open"]),
        ])


def stp_expire_taker() -> Scenario:
    x = cast()
    a, b = x["a"], x["b"]
    a1 = a.sign(BTC, [Place(SELL, LIMIT, 101, 5)])
    b1 = b.see(a1).sign(BTC, [Place(SELL, LIMIT, 100, 2)])
    a2 = a.see(b1).sign(BTC, [Place(BUY, LIMIT, 101, 5, STP.EXPIRE_TAKER)])
    return Scenario(
        "stp_expire_taker", "Self-trade prevention expire_taker: a taker that meets a maker "
        "of its own origin is cancelled there (stp_expired_taker); the maker stays.",
        x, "ab", [BTC], [
            step(a1, "a rests 5@101", status="delivered"),
            step(b1, "b rests 2@100", status="delivered"),
            step(a2, "a buys 5@101 (expire_taker): 2 trade with b at 100, then it meets its "
                 "own ask and is cancelled; a's ask stays", status="delivered", trades=1,
                 outcomes=["cancelled"], reasons=["stp_expired_taker"],
                 check=lambda s: s["books"][BTC]["asks"] == [[101, 5]]),
        ])


def stp_expire_maker() -> Scenario:
    x = cast()
    a, b = x["a"], x["b"]
    a1 = a.sign(BTC, [Place(SELL, LIMIT, 101, 3)])
    b1 = b.see(a1).sign(BTC, [Place(SELL, LIMIT, 101, 4)])
    a2 = a.see(b1).sign(BTC, [Place(BUY, LIMIT, 101, 5, STP.EXPIRE_MAKER)])
    maker = a1.order_id(0).hex()
    return Scenario(
        "stp_expire_maker", "Self-trade prevention expire_maker: the taker's own makers it "
        "meets are cancelled (stp_expired_maker) and it goes on matching.", x, "ab", [BTC], [
            step(a1, "a rests 3@101", status="delivered"),
            step(b1, "b rests 4@101 behind it", status="delivered"),
            step(a2, "a buys 5@101 (expire_maker): its own ask expires, 4 trade with b, "
                 "1 rests as a bid", status="delivered", trades=1,
                 outcomes=["partially_filled"],
                 check=lambda s: any(o["order_id"] == maker and o["status"] == "cancelled"
                                     and o["reason"] == "stp_expired_maker"
                                     for o in s["orders"])),
        ])


def stp_expire_both() -> Scenario:
    x = cast()
    a = x["a"]
    a1 = a.sign(BTC, [Place(SELL, LIMIT, 101, 5)])
    a2 = a.sign(BTC, [Place(BUY, LIMIT, 101, 3, STP.EXPIRE_BOTH)])
    maker = a1.order_id(0).hex()
    return Scenario(
        "stp_expire_both", "Self-trade prevention expire_both: taker and maker of one origin "
        "are both cancelled, nothing trades.", x, "ab", [BTC], [
            step(a1, "a rests 5@101", status="delivered"),
            step(a2, "a buys 3@101 (expire_both): both cancelled", status="delivered",
                 trades=0, outcomes=["cancelled"], reasons=["stp_expired_taker"],
                 check=lambda s: s["books"][BTC]["asks"] == [] and any(
                     o["order_id"] == maker and o["reason"] == "stp_expired_maker"
                     for o in s["orders"])),
        ])


def fair_order_cancels_first() -> Scenario:
    x = cast()
    a, b = x["a"], x["b"]
    b1 = b.sign(BTC, [Place(SELL, LIMIT, 101, 5)])
    a1 = a.see(b1).sign(BTC, [Place(BUY, IOC, 101, 5)])
    b2 = b.sign(BTC, [Cancel(b1.order_id(0))])
    assert a1.lamport == b2.lamport and a1.origin < b2.origin
    return Scenario(
        "fair_order_cancels_first", "At equal Lamport time a cancels-only event sorts before "
        "an event with places, whatever the origins: the maker pulling its order wins the "
        "race against a taker.", x, "ab", [BTC], [
            step(b1, "b rests 5@101", status="delivered"),
            step(a1, "a IOC buys 5@101 (lamport 2): trades, for now", status="delivered",
                 trades=1, outcomes=["filled"]),
            step(b2, "b's concurrent cancel (lamport 2) sorts before a's place although a < b:"
                 " rollback, the cancel succeeds and a's IOC finds nothing",
                 status="delivered", rolled_back=1, outcomes=["cancelled"],
                 check=lambda s: s["applied"][-1]["outcomes"] == ["cancelled"]
                 and s["books"][BTC]["asks"] == []),
        ])


def _rollback_events() -> tuple[dict[str, Author], list[Event]]:
    x = cast()
    a, b = x["a"], x["b"]
    a1 = a.sign(BTC, [Place(SELL, LIMIT, 101, 3)])
    b1 = b.sign(BTC, [Place(BUY, LIMIT, 101, 2)])
    b2 = b.see(a1).sign(BTC, [Place(BUY, LIMIT, 101, 2)])
    return x, [a1, b1, b2]


def rollback_late_event() -> Scenario:
    x, (a1, b1, b2) = _rollback_events()
    return Scenario(
        "rollback_late_event", "An event delivered after events that sort later undoes "
        "them, applies, and re-applies them: the state is that of in-order delivery.",
        x, "ab", [BTC], [
            step(b1, "b's bid 2@101 (lamport 1) arrives first and rests", status="delivered",
                 outcomes=["resting"]),
            step(a1, "a's ask 3@101 (lamport 1, sorts first) arrives late: b's event is "
                 "rolled back and re-applied, and now trades as a taker (its trade is in the "
                 "digest, not in this receipt)", status="delivered", rolled_back=1, trades=0,
                 check=lambda s: s["applied"][1]["outcomes"] == ["filled"]),
            step(b2, "b buys 2@101 more: 1 trades, 1 rests", status="delivered", trades=1),
        ], same_final_state_as="rollback_reference_in_order")


def rollback_reference() -> Scenario:
    x, (a1, b1, b2) = _rollback_events()
    return Scenario(
        "rollback_reference_in_order", "The events of rollback_late_event delivered in the "
        "total order: no rollback, the same final state.", x, "ab", [BTC], [
            step(a1, "a's ask 3@101 rests", status="delivered", rolled_back=0),
            step(b1, "b's bid 2@101 takes 2", status="delivered", rolled_back=0, trades=1),
            step(b2, "b buys 2@101 more: 1 trades, 1 rests", status="delivered", trades=1),
        ])


def causal_buffering() -> Scenario:
    x = cast()
    a, b = x["a"], x["b"]
    a1 = a.sign(BTC, [Place(SELL, LIMIT, 101, 2)])
    a2 = a.sign(BTC, [Place(SELL, LIMIT, 102, 1)])
    b1 = b.see(a1, a2).sign(BTC, [Place(BUY, IOC, 102, 3)])
    return Scenario(
        "causal_buffering", "An event whose causes are missing waits in the buffer and is "
        "delivered, with every waiter it releases, when they arrive.", x, "ab", [BTC], [
            step(b1, "b's IOC names a's seq 2: buffered, waiting for a 1..2",
                 status="buffered", trades=0,
                 check=lambda s: s["missing"] == {a.origin.hex(): [1, 2]}),
            step(a2, "a's seq 2 names a's seq 1: buffered too", status="buffered",
                 check=lambda s: s["missing"] == {a.origin.hex(): [1, 1]}),
            step(a1, "a's seq 1 arrives: delivers itself, a's seq 2 and b's IOC, whose "
                 "trades are in this receipt", status="delivered", delivered=3, trades=2),
        ])


def duplicates() -> Scenario:
    x = cast()
    a = x["a"]
    a1 = a.sign(BTC, [Place(SELL, LIMIT, 101, 2)])
    a2 = a.sign(BTC, [Place(SELL, LIMIT, 102, 1)])
    a3 = a.sign(BTC, [Place(SELL, LIMIT, 103, 1)])
    return Scenario(
        "duplicates", "The same bytes again, delivered or still buffered, are a duplicate and "
        "change nothing.", x, "ab", [BTC], [
            step(a1, "a's seq 1", status="delivered"),
            step(a1, "a's seq 1 again: duplicate", status="duplicate", trades=0),
            step(a3, "a's seq 3 before seq 2: buffered", status="buffered"),
            step(a3, "a's seq 3 again while buffered: duplicate", status="duplicate"),
            step(a2, "a's seq 2 delivers seq 2 and 3", status="delivered", delivered=2),
        ])


def acknowledge_until_final(members: Sequence[Author], genesis: Sequence[Author],
                            history: Sequence[Event], target: Event) -> list[Event]:
    """Acknowledgements, each member in turn covering all the others have signed, until
    `target` is final at a replica that delivered `history` and them (a bounded loop)."""
    witness = Replica(DEFAULT_MARKETS, genesis=[m.origin for m in genesis])
    for event in history:
        assert witness.admit(event).status in ("delivered", "buffered")
    assert len(witness.applied_ids()) == len(history), "an event of the history waits"
    acks: list[Event] = []
    for turn in range(4 * len(members)):
        final = witness.final_key()
        if final is not None and final >= target.key:
            return acks
        author = members[turn % len(members)]
        ack = author.see(*acks).sign(MEMBERSHIP_MARKET, [])
        assert witness.admit(ack).status == "delivered"
        acks.append(ack)
    raise AssertionError("the acknowledgements did not make the target final")


def membership() -> Scenario:
    x = cast()
    a, b, c = x["a"], x["b"], x["c"]
    a1 = a.sign(BTC, [Place(SELL, LIMIT, 101, 2)])
    b1 = b.see(a1).sign(MEMBERSHIP_MARKET, [])
    a2 = a.see(b1).sign(MEMBERSHIP_MARKET, [])
    b2 = b.see(a2).sign(MEMBERSHIP_MARKET, [])
    early = c.forge(1, [a1], 2, BTC, [place_wire(BUY, IOC, 101, 1)])
    b3 = b.sign(MEMBERSHIP_MARKET, [Join(c.origin)])
    # c signs as soon as it sees its join, before the join is final: an honest newcomer
    # waits until it is a member at its own replica, but the wire must still handle it.
    c1 = c.see(a1, b1, a2, b2, b3).sign(BTC, [Place(BUY, IOC, 101, 1)])
    a3 = a.see(b2, b3).sign(MEMBERSHIP_MARKET, [])
    b4 = b.see(a3).sign(MEMBERSHIP_MARKET, [])
    # A second join fills the network: genesis a and b, c, then 62 newcomers in one event;
    # joins decided in the total order (within one event: by peer id) make 64 members,
    # so the last of them is refused.
    newcomers = sorted((Author(f"n{i}", f"conformance-newcomer-{i}")
                        for i in range(MEMBERS_MAX - 2)), key=lambda n: n.origin)
    admitted, refused = newcomers[-2], newcomers[-1]
    admitted.role, refused.role = "admitted_64th", "refused_65th"
    history = [a1, b1, a2, b2, b3, c1, a3, b4]
    big = a.see(b4, c1).sign(MEMBERSHIP_MARKET, [Join(n.origin) for n in newcomers])
    b.see(c1, big)
    c.see(a3, b4, big)
    acks = acknowledge_until_final([b, c, a], [a, b], history + [big], big)
    everything = history + [big, *acks]
    first_admitted = admitted.see(*everything).sign(BTC, [Place(SELL, LIMIT, 102, 1)])
    first_refused = refused.see(*everything).sign(BTC, [Place(SELL, LIMIT, 103, 1)])
    roles = {**x, admitted.role: admitted, refused.role: refused}
    return Scenario(
        "membership", "Members acknowledge with empty events (market \"\") and finality "
        "follows the two-round rule; a newcomer may speak only after a join it has seen, "
        "its first event waits until the join is final and decided, and a join beyond "
        f"{MEMBERS_MAX} members is refused.",
        roles, "ab", [BTC], [
            step(a1, "a rests 2@101; nothing is final", status="delivered",
                 check=lambda s: s["final_key"] is None),
            step(b1, "b acknowledges a's event", status="delivered", outcomes=[]),
            step(a2, "a acknowledges b's acknowledgement: a's first event is final",
                 status="delivered", outcomes=[],
                 check=lambda s: s["final_key"] == [a1.lamport, 1, a.origin.hex(), 1]),
            step(b2, "b acknowledges again: b's acknowledgement is final too",
                 status="delivered", outcomes=[],
                 check=lambda s: s["final_key"] == [b1.lamport, 2, b.origin.hex(), 1]),
            step(early, "c, not a member, speaks before any join: not_member",
                 status="rejected", code="not_member"),
            step(b3, "b admits c with a join: c is a candidate (finality waits for it), "
                 "not yet a member", status="delivered", outcomes=["joined"],
                 check=lambda s: s["final_key"][2:] == [b.origin.hex(), 1]),
            step(c1, "c's first event covers the join, which is not final: parked, "
                 "buffered with nothing missing", status="buffered", delivered=0,
                 check=lambda s: s["missing"] == {} and len(s["applied"]) == 5),
            step(a3, "a acknowledges the join (round one): still not final, c's event "
                 "waits", status="delivered", delivered=1, outcomes=[], trades=0),
            step(b4, "b acknowledges a's acknowledgement (round two): the join is final and "
                 "decided, c is a member, and its parked event is delivered in this receipt "
                 "and trades", status="delivered", delivered=2, trades=1,
                 check=lambda s: s["delivered"][1] == c1.id.hex()
                 and s["final_key"][2:] == [b.origin.hex(), 3]),
            step(big, f"a joins {len(newcomers)} newcomers in one event: candidates",
                 status="delivered", outcomes=["joined"] * len(newcomers)),
            *[step(ack, f"{author_of(x, ack)} acknowledges"
                   + (": the second join is final; decided by peer id, the first "
                      f"{len(newcomers) - 1} newcomers make {MEMBERS_MAX} members and the "
                      "last is refused" if ack is acks[-1] else ""),
                   status="delivered", outcomes=[],
                   **({"check": lambda s: s["final_key"][2:] == [big.origin.hex(), big.seq]}
                      if ack is acks[-1] else {}))
              for ack in acks],
            step(first_admitted, f"the {MEMBERS_MAX}th member's first event: delivered",
                 status="delivered", outcomes=["resting"]),
            step(first_refused, f"the refused {MEMBERS_MAX + 1}th's first event: not_member",
                 status="rejected", code="not_member"),
        ])


def leave() -> Scenario:
    x = cast()
    a, b, c = x["a"], x["b"], x["c"]
    a1 = a.sign(BTC, [Place(SELL, LIMIT, 101, 2)])
    c1 = c.see(a1).sign(BTC, [Place(BUY, LIMIT, 101, 2)])
    c2 = c.sign(MEMBERSHIP_MARKET, [Leave()])
    # An order c signs after its leave, before the leave is final (forged: c's honest
    # replica would not sign it; it is refused, so its seq stays free for c's ack below).
    c_late = c.forge(c2.seq + 1, [a1, c2], c2.lamport + 1, BTC,
                     [place_wire(SELL, LIMIT, 101, 1)])
    a2 = a.see(c1, c2).sign(MEMBERSHIP_MARKET, [])
    b1 = b.see(a1, c1, c2, a2).sign(MEMBERSHIP_MARKET, [])
    # a and b trade and acknowledge each other while c has not yet acknowledged.
    b2 = b.sign(BTC, [Place(SELL, LIMIT, 102, 1)])
    a3 = a.see(b1, b2).sign(BTC, [Place(BUY, IOC, 102, 1)])
    b3 = b.see(a3).sign(MEMBERSHIP_MARKET, [])
    a4 = a.see(b3).sign(MEMBERSHIP_MARKET, [])
    b4 = b.see(a4).sign(MEMBERSHIP_MARKET, [])
    # c acknowledges a's and b's acknowledgements of its leave, then falls silent.
    c3 = c.see(a2, b1).sign(MEMBERSHIP_MARKET, [])
    assert c3.seq == c2.seq + 1 and c3.key < a3.key  # it sorts among a's and b's events
    a5 = a.see(b4, c3).sign(BTC, [Place(SELL, LIMIT, 103, 2)])
    b5 = b.see(c3, a5).sign(BTC, [Place(BUY, LIMIT, 103, 2)])
    a6 = a.see(b5).sign(MEMBERSHIP_MARKET, [])
    b6 = b.see(a6).sign(MEMBERSHIP_MARKET, [])
    c4 = c.see(b2, a3, b3, a4, b4, a5, b5, a6, b6).sign(BTC, [Place(SELL, LIMIT, 104, 1)])

    def key(e: Event) -> list:
        return [e.lamport, e.key[1], e.origin.hex(), e.seq]

    return Scenario(
        "leave", "A member leaves with a leave action ([3], alone, market \"\"): its later "
        "events may carry no actions (left), and once its leave is final the commit rule "
        "stops waiting for it, so the others' trades become final without it.", x, "abc",
        [BTC], [
            step(a1, "a rests 2@101", status="delivered"),
            step(c1, "c buys 2@101: trades, a's ask is filled", status="delivered", trades=1),
            step(c2, "c leaves: outcome left; nothing is final (nobody acknowledged)",
                 status="delivered", outcomes=["left"],
                 check=lambda s: s["final_key"] is None),
            step(c_late, "c places an order after its leave, which is not final yet: left",
                 status="rejected", code="left"),
            step(a2, "a acknowledges c's leave", status="delivered", outcomes=[]),
            step(b1, "b acknowledges c's leave and a's acknowledgement; still nothing final "
                 "(c's head covers no event of b)", status="delivered", outcomes=[],
                 check=lambda s: s["final_key"] is None),
            step(b2, "b rests 1@102", status="delivered"),
            step(a3, "a IOC buys 1@102: trades", status="delivered", trades=1),
            step(b3, "b acknowledges", status="delivered", outcomes=[]),
            step(a4, "a acknowledges", status="delivered", outcomes=[]),
            step(b4, "b acknowledges: a's and b's heads cover each other's trade twice over, "
                 "but c's leave is not final and the rule waits for c: nothing is final",
                 status="delivered", outcomes=[], check=lambda s: s["final_key"] is None),
            step(c3, "c's acknowledgement (no actions: allowed after its leave) covers a's "
                 "and b's acknowledgements of its leave: the leave is final, the rule runs "
                 "again without c after it, and a's and b's trade becomes final in the same "
                 "step; c's event sorts before a's trade, but as it has no actions it goes "
                 "in at its place without a rollback",
                 status="delivered", outcomes=[], rolled_back=0,
                 check=lambda s: s["final_key"] == key(b3)),
            step(a5, "c is silent from now on; a rests 2@103", status="delivered"),
            step(b5, "b buys 2@103: trades", status="delivered", trades=1),
            step(a6, "a acknowledges", status="delivered", outcomes=[]),
            step(b6, "b acknowledges: the trade is final without c",
                 status="delivered", outcomes=[], check=lambda s: s["final_key"] == key(b5)),
            step(c4, "c, gone, places an order: left", status="rejected", code="left",
                 check=lambda s: s["final_key"] == key(b5)),
        ])


def reject_bad_leave() -> Scenario:
    x = cast()
    a, b, c = x["a"], x["b"], x["c"]
    a1 = a.sign(BTC, [Place(SELL, LIMIT, 101, 2)])
    b1 = b.see(a1).sign(MEMBERSHIP_MARKET, [Leave()])
    buy = place_wire(BUY, LIMIT, 100, 1)
    return Scenario(
        "reject_bad_leave", "A leave is [3] and nothing more, alone in an event on the "
        "membership market \"\": anything else is refused (bad_action, bad_actions).",
        x, "ab", [BTC], [
            step(a1, "a rests 2@101", status="delivered"),
            step(b.forge(1, [a1], 2, MEMBERSHIP_MARKET, [[3, 0]]), "a leave with a second "
                 "field [3, 0]: bad_action", status="rejected", code="bad_action"),
            step(b.forge(1, [a1], 2, MEMBERSHIP_MARKET, [[3], [3]]), "two leaves in one "
                 "event: bad_actions", status="rejected", code="bad_actions"),
            step(b.forge(1, [a1], 2, MEMBERSHIP_MARKET, [[3], [2, c.origin]]), "a leave "
                 "with a join: bad_actions", status="rejected", code="bad_actions"),
            step(b.forge(1, [a1], 2, MEMBERSHIP_MARKET, [[2, c.origin], [3]]), "a join with "
                 "a leave after it: bad_actions", status="rejected", code="bad_actions"),
            step(b.forge(1, [a1], 2, BTC, [[3]]), "a leave on a market (BTC-USD): "
                 "bad_actions", status="rejected", code="bad_actions"),
            step(b.forge(1, [a1], 2, BTC, [buy, [3]]), "a place with a leave on a market: "
                 "bad_actions", status="rejected", code="bad_actions"),
            step(b1, "b's well-formed leave: delivered, outcome left", status="delivered",
                 outcomes=["left"]),
        ])


def remove_member() -> Scenario:
    x = cast()
    a, b, c = x["a"], x["b"], x["c"]
    members = tuple(sorted(m.origin for m in (a, b, c)))
    a1 = a.sign(BTC, [Place(SELL, LIMIT, 101, 2)])
    c1 = c.see(a1).sign(BTC, [Place(BUY, LIMIT, 100, 1)])
    # c crashes after c1: it never acknowledges b's trade, so nothing becomes final.
    b1 = b.see(a1, c1).sign(BTC, [Place(BUY, IOC, 101, 1)])
    a2 = a.see(c1, b1).sign(MEMBERSHIP_MARKET, [])
    b2 = b.see(a2).sign(MEMBERSHIP_MARKET, [])
    # a and b vote c out in round 0 of {a, b, c}; each vote covers c's seq 1.
    a3 = a.see(b2).sign(MEMBERSHIP_MARKET, [Vote(c.origin, 0, members)])
    b3 = b.see(a3).sign(MEMBERSHIP_MARKET, [Vote(c.origin, 0, members)])
    a4 = a.see(b3).sign(MEMBERSHIP_MARKET, [])
    b4 = b.see(a4).sign(MEMBERSHIP_MARKET, [])
    # Trading and finality go on between a and b alone.
    a5 = a.see(b4).sign(BTC, [Place(SELL, LIMIT, 102, 1)])
    b5 = b.see(a5).sign(BTC, [Place(BUY, IOC, 102, 1)])
    a6 = a.see(b5).sign(MEMBERSHIP_MARKET, [])
    b6 = b.see(a6).sign(MEMBERSHIP_MARKET, [])
    # c's second event (it saw b's trade before it went silent) arrives only now: beyond
    # the cut, so void. Applied, its IOC would take a's last lot at 101 before b5 does.
    c2 = c.see(b1).sign(BTC, [Place(BUY, IOC, 101, 1)])
    assert c2.key < a2.key  # it sorts among final events

    def key(e: Event) -> list:
        return [e.lamport, e.key[1], e.origin.hex(), e.seq]

    return Scenario(
        "remove_member", "Members remove a member that no longer speaks: every other "
        "member votes it out ([4, target, round, members]) and, once the votes are committed "
        "by the rule over the voters, it is removed with the cut at the highest seq of it "
        "the votes cover; finality stops waiting for it, and its events beyond the cut are "
        "void (delivered, applied as empty).", x, "abc", [BTC], [
            step(a1, "a rests 2@101", status="delivered"),
            step(c1, "c rests a bid 1@100, then crashes", status="delivered"),
            step(b1, "b IOC buys 1@101: trades", status="delivered", trades=1),
            step(a2, "a acknowledges", status="delivered", outcomes=[]),
            step(b2, "b acknowledges: nothing is final, the rule waits for c (its head "
                 "covers no event of b)", status="delivered", outcomes=[],
                 check=lambda s: s["final_key"] is None),
            step(a3, "a votes to remove c in round 0 of {a, b, c} (its vote covers c's seq 1)",
                 status="delivered", outcomes=["voted"],
                 check=lambda s: s["final_key"] is None),
            step(b3, "b votes the same: the vote set is full, but not yet committed by the "
                 "rule over a and b", status="delivered", outcomes=["voted"],
                 check=lambda s: s["final_key"] is None),
            step(a4, "a acknowledges both votes (round one)", status="delivered",
                 outcomes=[], check=lambda s: s["final_key"] is None),
            step(b4, "b acknowledges (round two): the votes are committed, c is removed "
                 "with cut 1 (c1 counts), the rule stops waiting for c after c1 and b's "
                 "trade is final", status="delivered", outcomes=[],
                 check=lambda s: s["final_key"] == key(b3)),
            step(a5, "a rests 1@102", status="delivered"),
            step(b5, "b IOC buys 1@102: trades", status="delivered", trades=1),
            step(a6, "a acknowledges", status="delivered", outcomes=[]),
            step(b6, "b acknowledges: the trade is final without c", status="delivered",
                 outcomes=[], check=lambda s: s["final_key"] == key(b5)),
            step(c2, "c's seq 2, an IOC buy 1@101 beyond the cut, arrives late: delivered "
                 "and void; it sorts among final events and changes nothing (no trade: b's "
                 "later IOC still takes a's lot at 101, a's ask at 102 stays); the events "
                 "after it are re-applied, the digest stays as it was (a void event does "
                 "not extend it)",
                 status="delivered", trades=0, outcomes=["void"],
                 check=lambda s: s["final_key"] == key(b5) and s["rolled_back"] > 0
                 and s["books"][BTC]["asks"] == [[102, 1]]
                 and [a["outcomes"] for a in s["applied"]].count(["filled"]) == 2),
        ])


def reject_bad_vote() -> Scenario:
    x = cast()
    a, b, c = x["a"], x["b"], x["c"]
    stranger = Author("stranger", "conformance-stranger")
    members = tuple(sorted(m.origin for m in (a, b, c)))
    wrong = sorted([a.origin, b.origin, stranger.origin])

    def vote(target: bytes, rnd: int, listed: Sequence[bytes] = members) -> list:
        return [4, target, rnd, list(listed)]

    a1 = a.sign(BTC, [Place(SELL, LIMIT, 101, 2)])
    b1 = b.see(a1).sign(MEMBERSHIP_MARKET, [])
    c1 = c.see(a1, b1).sign(MEMBERSHIP_MARKET, [])
    top = c1.lamport + 1

    def by_b(actions: list, market: str = MEMBERSHIP_MARKET) -> bytes:
        return b.forge(2, [a1, b1, c1], top, market, actions)

    a2 = a.see(b1, c1).sign(MEMBERSHIP_MARKET, [Vote(c.origin, 0, members)])
    c2 = c.see(a2).sign(MEMBERSHIP_MARKET, [])
    b2 = b.see(c1, a2, c2).sign(MEMBERSHIP_MARKET, [Vote(b"", 0, members)])
    a3 = a.see(c2, b2).sign(MEMBERSHIP_MARKET, [])
    a4 = a.sign(MEMBERSHIP_MARKET, [Vote(c.origin, 1, members)])
    return Scenario(
        "reject_bad_vote", "A vote is [4, target, round, members], alone in a membership "
        "event (bad_action, bad_type, out_of_range, bad_actions otherwise), judged from its "
        "causal past: its members must be the effective members there and its target "
        "another of them (bad_vote), one statement per member and round (double_vote), a "
        "new one only once the previous round is dead (vote_open), and while a vote "
        "stands its voter names no more of the target than the round's votes (unfrozen).",
        x, "abc", [BTC], [
            step(a1, "a rests 2@101", status="delivered"),
            step(b1, "b acknowledges", status="delivered"),
            step(c1, "c acknowledges", status="delivered"),
            step(by_b([[4, c.origin, 0]]), "a vote of 3 fields: bad_action",
                 status="rejected", code="bad_action"),
            step(by_b([[4, 7, 0, list(members)]]), "a vote whose target is an integer: "
                 "bad_action", status="rejected", code="bad_action"),
            step(by_b([vote(c.origin, 0, members[:2])]), "a vote listing two members: "
                 "bad_action", status="rejected", code="bad_action"),
            step(by_b([vote(c.origin, 0, members[::-1])]), "a vote whose members descend: "
                 "bad_action", status="rejected", code="bad_action"),
            step(by_b([vote(c.origin, "0")]), "a vote whose round is text: bad_type",
                 status="rejected", code="bad_type"),
            step(by_b([vote(c.origin, 2**32)]), "a vote in round 2^32: out_of_range",
                 status="rejected", code="out_of_range"),
            step(by_b([vote(c.origin, 0)], BTC), "a vote on a market (BTC-USD): bad_actions",
                 status="rejected", code="bad_actions"),
            step(by_b([vote(c.origin, 0), vote(a.origin, 0)]), "two votes in one event: "
                 "bad_actions", status="rejected", code="bad_actions"),
            step(by_b([vote(c.origin, 0, wrong)]), "b votes c out among a, b and a stranger, "
                 "not the effective members {a, b, c}: bad_vote", status="rejected",
                 code="bad_vote"),
            step(by_b([vote(b.origin, 0)]), "b votes itself out: bad_vote",
                 status="rejected", code="bad_vote"),
            step(by_b([vote(stranger.origin, 0)]), "b votes out a peer that is no member: "
                 "bad_vote", status="rejected", code="bad_vote"),
            step(a2, "a votes c out in round 0: delivered, outcome voted",
                 status="delivered", outcomes=["voted"]),
            step(a.forge(3, [a2, b1, c1], a2.lamport + 1, MEMBERSHIP_MARKET,
                         [vote(c.origin, 1)]),
                 "a votes again, in round 1, while its round-0 vote stands (nobody else "
                 "spoke in round 0): vote_open", status="rejected", code="vote_open"),
            step(c2, "c, heard again, acknowledges a's vote", status="delivered"),
            step(a.forge(3, [a2, b1, c2], c2.lamport + 1, MEMBERSHIP_MARKET, []),
                 "a acknowledges c's new event while its vote for c stands: its event names "
                 "more of c than the round's votes did: unfrozen", status="rejected",
                 code="unfrozen"),
            step(b2, "b hears from c and refuses in round 0: outcome refused; no target can "
                 "gather the votes of all the others any more, the round is dead",
                 status="delivered", outcomes=["refused"]),
            step(a3, "a acknowledges c's event: allowed once round 0 is dead in its causal "
                 "past", status="delivered", outcomes=[]),
            step(a.forge(4, [a3, b2, c2], a3.lamport + 1, MEMBERSHIP_MARKET,
                         [vote(b"", 0)]),
                 "a makes a second statement in round 0 (a refusal): double_vote",
                 status="rejected", code="double_vote"),
            step(a4, "a votes c out in round 1: a new round, delivered", status="delivered",
                 outcomes=["voted"]),
        ])


def cast_of(count: int, prefix: str) -> dict[str, Author]:
    """`count` fresh authors with seeds `<prefix>-<i>`, named a, b, c, ... in the order of
    their peer ids."""
    seeds = [f"{prefix}-{i}" for i in range(count)]
    keyed = sorted((peer_id_bytes(seeded_key_pair(seed)), seed) for seed in seeds)
    roles = "abcdefgh"[:count]
    return {role: Author(role, seed) for role, (_, seed) in zip(roles, keyed, strict=True)}


def vote_wire(target: bytes, rnd: int, members: Sequence[bytes]) -> list:
    return [4, target, rnd, list(members)]


def next_to(*causes: Event) -> int:
    """The Lamport time of an event whose clock names exactly `causes`."""
    return 1 + max(e.lamport for e in causes)


def removal_rounds() -> Scenario:
    x = cast_of(5, "conformance-rounds")
    a, b, c, d, e = (x[r] for r in "abcde")
    old = tuple(sorted(m.origin for m in x.values()))  # E: all five
    new = tuple(sorted(m.origin for m in (a, b, d, e)))  # once c's leave is in the past
    a1 = a.sign(BTC, [Place(SELL, LIMIT, 101, 1)])
    b1 = b.see(a1).sign(MEMBERSHIP_MARKET, [])
    c1 = c.see(a1, b1).sign(MEMBERSHIP_MARKET, [])
    d1 = d.see(a1, b1, c1).sign(MEMBERSHIP_MARKET, [])
    e1 = e.see(a1, b1, c1, d1).sign(MEMBERSHIP_MARKET, [])
    # d and e fall silent at a. a votes both out, in rounds 0 and 1 of E: two votes stand
    # at once (the node's policy would not, the rule allows it), a is frozen on both at
    # their seq 1.
    a2 = a.see(b1, c1, d1, e1).sign(MEMBERSHIP_MARKET, [Vote(d.origin, 0, old)])
    a3 = a.sign(MEMBERSHIP_MARKET, [Vote(e.origin, 1, old)])
    c2 = c.see(d1, e1, a2, a3).sign(MEMBERSHIP_MARKET, [Vote(d.origin, 0, old)])
    e2 = e.see(a2, a3, c2).sign(MEMBERSHIP_MARKET, [])  # e is heard again
    a_names_e2 = a.forge(4, [a3, b1, c2, d1, e2], next_to(a3, c2, e2), MEMBERSHIP_MARKET, [])
    a_votes_d_again = a.forge(4, [a3, b1, c1, d1, e1], next_to(a3), MEMBERSHIP_MARKET,
                              [vote_wire(d.origin, 2, old)])
    a_votes_e_again = a.forge(4, [a3, b1, c1, d1, e1], next_to(a3), MEMBERSHIP_MARKET,
                              [vote_wire(e.origin, 2, old)])
    # c leaves; it stated nothing in round 1, so wherever its leave lies it counts as
    # refusing there: round 1 is dead. In round 0 it voted d: that vote still counts.
    c3 = c.sign(MEMBERSHIP_MARKET, [Leave()])
    a4 = a.see(c2, e2, c3).sign(MEMBERSHIP_MARKET, [])
    assert a4.clock[e.origin] == e2.seq and a4.clock[d.origin] == d1.seq
    d2 = d.see(e1, a2, a3, c2, e2, c3, a4).sign(MEMBERSHIP_MARKET, [])  # d is heard again
    a_names_d2 = a.forge(5, [a4, b1, c3, d2, e2], next_to(a4, d2), MEMBERSHIP_MARKET, [])
    b.see(c1, d1, e1, a2, a3, c2, e2, c3, a4, d2)
    b_heads = [a4, b1, c3, d2, e2]
    b_votes_among_old = b.forge(2, b_heads, next_to(*b_heads), MEMBERSHIP_MARKET,
                                [vote_wire(d.origin, 0, old)])
    b_refuses_unopened = b.forge(2, b_heads, next_to(*b_heads), MEMBERSHIP_MARKET,
                                 [vote_wire(b"", 7, old)])
    b2 = b.sign(MEMBERSHIP_MARKET, [Vote(b"", 0, old)])
    a5 = a.see(d2, b2).sign(MEMBERSHIP_MARKET, [])
    assert a5.clock[d.origin] == d2.seq
    a6 = a.sign(MEMBERSHIP_MARKET, [Vote(d.origin, 0, new)])
    return Scenario(
        "removal_rounds", "Removal rounds judged in a causal past: votes of one member for "
        "different targets stand at once and each freezes its target (unfrozen), a new vote "
        "for the same target while the earlier one stands is vote_open, a member whose leave "
        "lies in the past and that stated nothing in a round counts as refusing there (the "
        "round dies), one that stated counts with its statement, and a refusal may join a "
        "round among former members that its causal past holds.",
        x, "abcde", [BTC], [
            step(a1, "a rests 1@101", status="delivered"),
            step(b1, "b acknowledges", status="delivered"),
            step(c1, "c acknowledges", status="delivered"),
            step(d1, "d acknowledges, then falls silent", status="delivered"),
            step(e1, "e acknowledges, then falls silent", status="delivered"),
            step(a2, "a votes d out in round 0 of {a, b, c, d, e}", status="delivered",
                 outcomes=["voted"]),
            step(a3, "a votes e out in round 1 while its vote for d stands: votes for "
                 "different targets may stand at once", status="delivered",
                 outcomes=["voted"]),
            step(c2, "c votes d out in round 0 too", status="delivered", outcomes=["voted"]),
            step(e2, "e is heard again: it acknowledges", status="delivered", outcomes=[]),
            step(a_names_e2, "a acknowledges e's new event while its vote for e stands (round "
                 "1 is neither dead nor decided): it names more of e than the round's votes "
                 "did: unfrozen", status="rejected", code="unfrozen"),
            step(a_votes_d_again, "a votes d out again, in round 2, while its round-0 vote "
                 "for d stands: vote_open", status="rejected", code="vote_open"),
            step(a_votes_e_again, "a votes e out again, in round 2, while its round-1 vote "
                 "for e stands (its vote for d, standing too, does not object): vote_open",
                 status="rejected", code="vote_open"),
            step(c3, "c leaves: it stated nothing in round 1, so where its leave lies it "
                 "counts as refusing there", status="delivered", outcomes=["left"]),
            step(a4, "a acknowledges e's new event and c's leave: round 1 is dead in its "
                 "causal past (c, gone, counts as refusing), so a's vote for e binds no more; "
                 "its vote for d still stands (c's vote for d counts)", status="delivered",
                 outcomes=[]),
            step(d2, "d is heard again: it acknowledges", status="delivered", outcomes=[]),
            step(a_names_d2, "a names d's new event: round 0 is not dead (a and c voted d, "
                 "c's leave does not take its vote back): unfrozen", status="rejected",
                 code="unfrozen"),
            step(b_votes_among_old, "b votes d out in round 0 of {a, b, c, d, e}: c's leave is "
                 "in its causal past, so its effective members are {a, b, d, e}, and only a "
                 "refusal may name other members: bad_vote", status="rejected",
                 code="bad_vote"),
            step(b_refuses_unopened, "b refuses in round 7 of {a, b, c, d, e}, which no "
                 "statement in its causal past opened: bad_vote", status="rejected",
                 code="bad_vote"),
            step(b2, "b refuses in round 0 of {a, b, c, d, e}, a round among former members "
                 "that its causal past holds: delivered, outcome refused; the round is dead",
                 status="delivered", outcomes=["refused"]),
            step(a5, "a names d's new event once b's refusal is in its causal past: delivered",
                 status="delivered", outcomes=[]),
            step(a6, "a votes d out in round 0 of {a, b, d, e}: its earlier vote for d is "
                 "closed, so a new vote for d is allowed", status="delivered",
                 outcomes=["voted"]),
        ])


def removal_decided() -> Scenario:
    x = cast_of(4, "conformance-decided")
    a, b, c, d = (x[r] for r in "abcd")
    old = tuple(sorted(m.origin for m in x.values()))
    a1 = a.sign(BTC, [Place(SELL, LIMIT, 101, 2)])
    b1 = b.see(a1).sign(MEMBERSHIP_MARKET, [])
    c1 = c.see(a1, b1).sign(MEMBERSHIP_MARKET, [])
    d1 = d.see(a1, b1, c1).sign(MEMBERSHIP_MARKET, [])
    # d crashes after d1 (for a, b, c). They vote it out in round 0 of {a, b, c, d}.
    a2 = a.see(b1, c1, d1).sign(MEMBERSHIP_MARKET, [Vote(d.origin, 0, old)])
    b2 = b.see(c1, d1, a2).sign(MEMBERSHIP_MARKET, [Vote(d.origin, 0, old)])
    c2 = c.see(d1, a2, b2).sign(MEMBERSHIP_MARKET, [Vote(d.origin, 0, old)])
    a3 = a.see(b2, c2).sign(MEMBERSHIP_MARKET, [])
    b3 = b.see(c2, a3).sign(MEMBERSHIP_MARKET, [])
    # c votes a out in round 1 of {a, b, c, d}: the full set for d lies in its causal past
    # but is not committed there, so d is still an effective member.
    c3 = c.see(a3, b3).sign(MEMBERSHIP_MARKET, [Vote(a.origin, 1, old)])
    # d, back, votes c out in round 1 from its own old causal past (seq 2: beyond the cut).
    d2 = d.sign(MEMBERSHIP_MARKET, [Vote(c.origin, 1, old)])
    a_names_d2 = a.forge(4, [a3, b2, c2, d2], next_to(a3, d2), MEMBERSHIP_MARKET, [])
    a4 = a.see(b3, c3).sign(MEMBERSHIP_MARKET, [])
    c4 = c.see(a4, d2).sign(MEMBERSHIP_MARKET, [])
    assert c4.clock[a.origin] == a4.seq > c3.clock[a.origin]
    b.see(c3, a4, d2, c4)
    b_heads = [a4, b3, c4, d2]
    b_votes_among_old = b.forge(4, b_heads, next_to(*b_heads), MEMBERSHIP_MARKET,
                                [vote_wire(a.origin, 1, old)])
    b4 = b.sign(MEMBERSHIP_MARKET, [Vote(b"", 1, old)])
    a5 = a.see(d2, c4, b4).sign(BTC, [Place(SELL, LIMIT, 102, 1)])
    assert a5.clock[d.origin] == d2.seq

    def key(e: Event) -> list:
        return [e.lamport, e.key[1], e.origin.hex(), e.seq]

    return Scenario(
        "removal_decided", "A removal is decided in a causal past once its full vote set is "
        "committed there by the rule over the voters: until then the removed-to-be member is "
        "still an effective member and the votes freeze their voters; from then on its round "
        "is closed, it is no member, and it counts in other rounds only with what it stated "
        "up to its cut (else as refusing), so its void vote beyond the cut does not keep a "
        "round alive.", x, "abcd", [BTC], [
            step(a1, "a rests 2@101", status="delivered"),
            step(b1, "b acknowledges", status="delivered"),
            step(c1, "c acknowledges", status="delivered"),
            step(d1, "d acknowledges, then crashes", status="delivered"),
            step(a2, "a votes d out in round 0 of {a, b, c, d}", status="delivered",
                 outcomes=["voted"]),
            step(b2, "b votes d out", status="delivered", outcomes=["voted"]),
            step(c2, "c votes d out: the vote set is full, not committed",
                 status="delivered", outcomes=["voted"]),
            step(a3, "a acknowledges the votes", status="delivered", outcomes=[]),
            step(b3, "b acknowledges", status="delivered", outcomes=[]),
            step(c3, "c votes a out in round 1 of {a, b, c, d}: the full set for d lies in its "
                 "causal past but is not committed there, so d is still one of its effective "
                 "members; c's vote for d stands as well", status="delivered",
                 outcomes=["voted"]),
            step(d2, "d, back, votes c out in round 1 (from its old causal past; d is not "
                 "removed yet here)", status="delivered", outcomes=["voted"]),
            step(a_names_d2, "a names d's new event where the set for d is not committed: "
                 "a's vote for d stands, unfrozen", status="rejected", code="unfrozen"),
            step(a4, "a acknowledges c's vote: the set for d is committed by the rule over a, "
                 "b and c; d is removed with cut 1, its vote d2 now counts as void (undone and "
                 "applied again as empty), and the rule no longer waits for d",
                 status="delivered", outcomes=[],
                 check=lambda s: s["final_key"] is not None
                 and ["void"] in [e["outcomes"] for e in s["applied"]]),
            step(c4, "c names a's new event (beyond its round-1 vote's coverage of a) and d's "
                 "void vote: in its causal past d is removed, its vote beyond the cut does "
                 "not count and d counts as refusing, so round 1 is dead and c's vote for a "
                 "binds no more; its vote for d is closed by the decision",
                 status="delivered", outcomes=[]),
            step(b_votes_among_old, "b votes a out in round 1 of {a, b, c, d}: d's removal is "
                 "decided in its causal past, its effective members are {a, b, c}: bad_vote",
                 status="rejected", code="bad_vote"),
            step(b4, "b refuses in round 1 of {a, b, c, d}, a round among former members its "
                 "causal past holds: delivered, outcome refused", status="delivered",
                 outcomes=["refused"]),
            step(a5, "a rests 1@102, naming d's void event: its vote for d is closed by the "
                 "decision", status="delivered", outcomes=["resting"],
                 check=lambda s: s["final_key"] is not None),
        ])


def removal_void_vote() -> Scenario:
    x = cast_of(5, "conformance-void-vote")
    a, b, c, d, e = (x[r] for r in "abcde")
    old = tuple(sorted(m.origin for m in x.values()))
    a1 = a.sign(BTC, [Place(SELL, LIMIT, 101, 1)])
    b1 = b.see(a1).sign(MEMBERSHIP_MARKET, [])
    c1 = c.see(a1, b1).sign(MEMBERSHIP_MARKET, [])
    d1 = d.see(a1, b1, c1).sign(MEMBERSHIP_MARKET, [])
    e1 = e.see(a1, b1, c1, d1).sign(MEMBERSHIP_MARKET, [])
    # e, cut off from the others, votes d out in round 0, and c in round 5.
    e2 = e.sign(MEMBERSHIP_MARKET, [Vote(d.origin, 0, old)])
    e3 = e.sign(MEMBERSHIP_MARKET, [Vote(c.origin, 5, old)])
    # The others, who hear nothing more from e, vote it out in round 1 (their votes cover
    # e1 only: e's cut will be 1, its votes beyond it void).
    a2 = a.see(b1, c1, d1, e1).sign(MEMBERSHIP_MARKET, [Vote(e.origin, 1, old)])
    b2 = b.see(c1, d1, e1, a2).sign(MEMBERSHIP_MARKET, [Vote(e.origin, 1, old)])
    c2 = c.see(d1, e1, a2, b2).sign(MEMBERSHIP_MARKET, [Vote(e.origin, 1, old)])
    d2 = d.see(e1, a2, b2, c2).sign(MEMBERSHIP_MARKET, [Vote(e.origin, 1, old)])
    # a, b and c also vote d out in round 0, before e's removal is decided in their causal
    # past (after it, E no longer holds e): with e's vote the set for d is full.
    a3 = a.see(b2, c2, d2).sign(MEMBERSHIP_MARKET, [Vote(d.origin, 0, old)])
    b3 = b.see(c2, d2, a3).sign(MEMBERSHIP_MARKET, [Vote(d.origin, 0, old)])
    d3 = d.see(a3, b3).sign(MEMBERSHIP_MARKET, [])
    c3 = c.see(d2, a3, b3, d3).sign(MEMBERSHIP_MARKET, [Vote(d.origin, 0, old)])
    a4 = a.see(b3, d3, c3).sign(MEMBERSHIP_MARKET, [])
    b4 = b.see(d3, c3, a4).sign(MEMBERSHIP_MARKET, [])
    d4 = d.see(c3, a4, b4).sign(MEMBERSHIP_MARKET, [])
    a5 = a.see(b4, d4).sign(MEMBERSHIP_MARKET, [])
    assert a5.clock[d.origin] == d4.seq > c3.clock[d.origin]
    # e hears everything: its events name more of d and c than its votes did, but in their
    # causal past e is removed and its votes beyond the cut bind nothing.
    e4 = e.see(a2, b2, c2, d2, a3, b3, d3, c3, a4, b4, d4, a5).sign(MEMBERSHIP_MARKET, [])
    history = [a1, b1, c1, d1, e1, e2, e3, a2, b2, c2, d2, a3, b3, d3, c3, a4, b4, d4, a5, e4]
    voters, set_for_d = [a, b, c, e], [a3, b3, c3, e2]
    acks: list[Event] = []
    witness = Replica(DEFAULT_MARKETS, genesis=old)
    for event in history:
        assert witness.admit(event).status == "delivered"
    for turn in range(4 * len(voters)):
        delivered = {m.origin: witness.events_of(m.origin) for m in x.values()}
        if _all_committed([v.origin for v in voters], Past(delivered), set_for_d):
            break
        author = voters[turn % len(voters)]
        ack = author.see(*history, *acks).sign(MEMBERSHIP_MARKET, [])
        assert witness.admit(ack).status == "delivered"
        acks.append(ack)
    else:
        raise AssertionError("the set for d was never committed")
    assert [r.member for r in witness.removals()] == [e.origin]
    d5 = d.see(a5, e2, e3, e4, *acks).sign(BTC, [Place(BUY, IOC, 101, 1)])
    # e, removed, acknowledges everything (void); each member acknowledges e's event
    # without seeing the others do, then each acknowledges those: every witness covers
    # e's event, and none covers another member's event after it.
    everything = [*history, *acks, d5]
    e5 = e.see(*everything).sign(MEMBERSHIP_MARKET, [])
    members = [a, b, c, d]
    first = [m.see(*everything, e5).sign(MEMBERSHIP_MARKET, []) for m in members]
    second = [m.see(*first).sign(MEMBERSHIP_MARKET, []) for m in members]

    def key(event: Event) -> list:
        return [event.lamport, event.key[1], event.origin.hex(), event.seq]

    return Scenario(
        "removal_void_vote", "A removed member's votes beyond its cut are void: they bind "
        "nothing (its later events may name more of their targets) and a full vote set that "
        "counts one decides nothing even once the rule over its voters commits it; a round "
        "dies through a removed member that stated nothing in it up to its cut.",
        x, "abcde", [BTC], [
            step(a1, "a rests 1@101", status="delivered"),
            step(b1, "b acknowledges", status="delivered"),
            step(c1, "c acknowledges", status="delivered"),
            step(d1, "d acknowledges", status="delivered"),
            step(e1, "e acknowledges", status="delivered"),
            step(e2, "e votes d out in round 0 of {a, b, c, d, e}", status="delivered",
                 outcomes=["voted"]),
            step(e3, "e votes c out in round 5: a second vote of e stands", status="delivered",
                 outcomes=["voted"]),
            step(a2, "a votes e out in round 1 (its vote covers e1 only)", status="delivered",
                 outcomes=["voted"]),
            step(b2, "b votes e out", status="delivered", outcomes=["voted"]),
            step(c2, "c votes e out", status="delivered", outcomes=["voted"]),
            step(d2, "d votes e out: the set for e is full", status="delivered",
                 outcomes=["voted"]),
            step(a3, "a votes d out in round 0, its vote for e standing too",
                 status="delivered", outcomes=["voted"]),
            step(b3, "b votes d out in round 0", status="delivered", outcomes=["voted"]),
            step(d3, "d acknowledges", status="delivered", outcomes=[]),
            step(c3, "c votes d out in round 0: with e's vote the set for d is full",
                 status="delivered", outcomes=["voted"]),
            step(a4, "a acknowledges", status="delivered", outcomes=[]),
            step(b4, "b acknowledges", status="delivered", outcomes=[]),
            step(d4, "d acknowledges: the set for e is committed by the rule over a, b, c and "
                 "d; e is removed with cut 1, its two votes are void",
                 status="delivered", outcomes=[],
                 check=lambda s: [o for o in (entry["outcomes"] for entry in s["applied"])
                                  if o == ["void"]] == [["void"], ["void"]]),
            step(a5, "a names d's new event, beyond what the round-0 votes for d cover: in its "
                 "causal past e is removed without a round-0 statement (e2 is not in it), "
                 "counts as refusing, and round 0 is dead", status="delivered", outcomes=[]),
            step(e4, "e, removed, names more of d and c than its votes did: votes beyond its "
                 "cut bind nothing; delivered, void", status="delivered", outcomes=[]),
            *[step(ack, f"{author_of(x, ack)} acknowledges"
                   + (": the set for d (a, b, c and e's vote) is now committed by the rule over "
                      "its voters, but e's vote lies beyond e's cut: it decides nothing, d "
                      "stays a member" if ack is acks[-1] else ""),
                   status="delivered", outcomes=[]) for ack in acks],
            step(d5, "d, still a member, IOC buys 1@101: it trades", status="delivered",
                 trades=1),
            step(e5, "e, removed, acknowledges everything: delivered, void", status="delivered",
                 outcomes=[]),
            *[step(ack, f"{author_of(x, ack)} acknowledges e's event", status="delivered",
                   outcomes=[]) for ack in first],
            *[step(ack, f"{author_of(x, ack)} acknowledges the others' acknowledgements"
                   + (": the highest committed event is e's: the rule waits for e nowhere, "
                      "but an event of it that every witness covers counts toward the "
                      "frontier" if ack is second[-1] else ""),
                   status="delivered", outcomes=[],
                   **({"check": lambda s: s["final_key"] == key(e5)}
                      if ack is second[-1] else {}))
              for ack in second],
        ])


def author_of(authors: dict[str, Author], event: Event) -> str:
    return next(role for role, author in authors.items() if author.origin == event.origin)


def reject_malformed() -> Scenario:
    x = cast()
    a, b = x["a"], x["b"]
    a1 = a.sign(BTC, [Place(SELL, LIMIT, 101, 2)])
    b1 = b.see(a1).sign(BTC, [Place(BUY, LIMIT, 100, 1)])
    buy = [place_wire(BUY, LIMIT, 100, 1)]
    good = cbor2.loads(b1.raw)
    reordered = dict(sorted(good.items(), reverse=True))  # keys out of canonical order
    tagged = {**good, "s": cbor2.CBORTag(2, b"\x01")}  # a bignum where the seq goes
    no_key = b"\x12\x20" + hashlib.sha256(b"an rsa key").digest()  # sha256 peer id
    bad_sig = {**good, "g": bytes([good["g"][0] ^ 1]) + good["g"][1:]}
    return Scenario(
        "reject_malformed", "Every check that needs no state refuses a broken event with a "
        "stable code and changes nothing; the intact event is then delivered.", x, "ab",
        [BTC], [
            step(a1, "a rests 2@101", status="delivered"),
            step(b1.raw[:-1], "b's event cut short by one byte: bad_cbor",
                 status="rejected", code="bad_cbor"),
            step(canonical(tagged), "a CBOR tag (bignum) where the seq goes: bad_cbor",
                 status="rejected", code="bad_cbor"),
            step(cbor2.dumps(reordered), "b's signed event with its map keys out of canonical "
                 "order: non_canonical", status="rejected", code="non_canonical"),
            step(b.forge(1, [a1], 2, BTC, buy, g=DROP), "no signature field: bad_schema",
                 status="rejected", code="bad_schema"),
            step(b.forge(1, [a1], 2, BTC, buy, v=1), "protocol version 1: bad_version",
                 status="rejected", code="bad_version"),
            step(canonical([b1.raw]), "an array, not a map: bad_type", status="rejected",
                 code="bad_type"),
            step(b.forge(1, [a1], 2, BTC, buy, s="1"), "the seq as text: bad_type",
                 status="rejected", code="bad_type"),
            step(b.forge(1, [a1], 2, BTC, [place_wire(BUY, LIMIT, 100, 0)]),
                 "a place of 0 lots: out_of_range", status="rejected", code="out_of_range"),
            step(b.forge(1, [a1], 2, BTC, [place_wire(BUY, MARKET, 100, 1)]),
                 "a market order with a price: out_of_range", status="rejected",
                 code="out_of_range"),
            step(b.forge(1, [a1], 2, "DOGE-USD", buy), "a market the replica does not have: "
                 "unknown_market", status="rejected", code="unknown_market"),
            step(b.forge(2, [a1], 2, BTC, buy), "seq 2 whose clock does not name seq 1: "
                 "bad_clock", status="rejected", code="bad_clock"),
            step(b.forge(1, [a1], 2, BTC, []), "a market event without actions: bad_actions",
                 status="rejected", code="bad_actions"),
            step(b.forge(1, [a1], 2, MEMBERSHIP_MARKET, buy), "a place on the membership "
                 "market \"\": bad_actions", status="rejected", code="bad_actions"),
            step(b.forge(1, [a1], 2, BTC, [[7, 1]]), "an action of unknown kind 7: bad_action",
                 status="rejected", code="bad_action"),
            step(b.forge(1, [a1], 2, BTC, [[1, b"\x00" * 33]]), "a cancel whose order id is "
                 "33 bytes: bad_action", status="rejected", code="bad_action"),
            step(canonical(bad_sig), "b's event with one signature bit flipped: bad_signature",
                 status="rejected", code="bad_signature"),
            step(b.forge(1, [], 1, BTC, buy, o=no_key), "an origin that is a sha256 peer id "
                 "(no key inside): bad_origin", status="rejected", code="bad_origin"),
            step(b1, "the intact event: delivered", status="delivered", outcomes=["resting"]),
        ])


def reject_oversize() -> Scenario:
    x = cast()
    a = x["a"]
    good = cbor2.loads(a.sign(BTC, [Place(SELL, LIMIT, 101, 2)]).raw)
    padded = canonical({**good, "g": b""})
    # The signature field grown until the whole event is one byte over the limit.
    raw = canonical({**good, "g": bytes(EVENT_BYTES_MAX + 1 - len(padded) - 2)})
    assert len(raw) == EVENT_BYTES_MAX + 1, len(raw)
    return Scenario(
        "reject_oversize", "An event over 64 KiB is refused before it is decoded.", x, "ab",
        [BTC], [step(raw, "a's event padded to 65537 bytes: oversize", status="rejected",
                     code="oversize")])


def reject_equivocation() -> Scenario:
    x = cast()
    a = x["a"]
    a1 = a.sign(BTC, [Place(SELL, LIMIT, 101, 2)])
    a1_other = a.forge(1, [], 1, BTC, [place_wire(SELL, LIMIT, 101, 9)])
    a2 = a.sign(BTC, [Place(SELL, LIMIT, 102, 1)])
    a3 = a.sign(BTC, [Place(SELL, LIMIT, 103, 1)])
    a3_other = a.forge(3, [a2], a3.lamport, BTC, [place_wire(SELL, LIMIT, 103, 9)])
    return Scenario(
        "reject_equivocation", "A second version of an (origin, seq) already delivered or "
        "buffered is equivocation; the first version stands.", x, "ab", [BTC], [
            step(a1, "a's seq 1", status="delivered"),
            step(a1_other, "another a seq 1: equivocation", status="rejected",
                 code="equivocation"),
            step(a3, "a's seq 3 before seq 2: buffered", status="buffered"),
            step(a3_other, "another a seq 3 while the first waits: equivocation",
                 status="rejected", code="equivocation"),
            step(a2, "a's seq 2 delivers the first seq 3 with it", status="delivered",
                 delivered=2),
        ])


def reject_fork() -> Scenario:
    x = cast()
    a, b = x["a"], x["b"]
    a1 = a.sign(BTC, [Place(SELL, LIMIT, 101, 2)])
    other = a.forge(1, [], 1, BTC, [place_wire(SELL, LIMIT, 101, 9)])
    other_event = Event(a.origin, 1, {}, {}, 1, BTC, (), b"", hashlib.sha256(other).digest(),
                        other)
    forked = b.forge(1, [other_event], 2, BTC, [place_wire(BUY, LIMIT, 101, 1)])
    b1 = b.see(a1).sign(BTC, [Place(BUY, LIMIT, 101, 1)])
    return Scenario(
        "reject_fork", "An event whose clock names a cause by an id other than the version "
        "delivered here builds on an equivocation: fork.", x, "ab", [BTC], [
            step(a1, "a's seq 1", status="delivered"),
            step(forked, "b names a's seq 1 by the id of another version: fork",
                 status="rejected", code="fork"),
            step(b1, "b's event naming the delivered version: delivered", status="delivered",
                 trades=1),
        ])


def reject_bad_lamport() -> Scenario:
    x = cast()
    a, b = x["a"], x["b"]
    a1 = a.sign(BTC, [Place(SELL, LIMIT, 101, 2)])
    b1 = b.see(a1).sign(BTC, [Place(SELL, LIMIT, 102, 1)])
    b2 = b.sign(BTC, [Place(SELL, LIMIT, 103, 1)])
    b3_bad = b.forge(3, [a1, b2], b2.lamport + 2, BTC, [place_wire(SELL, LIMIT, 104, 1)])
    return Scenario(
        "reject_bad_lamport", "An event's Lamport time must be 1 + the largest among its "
        "causes: bad_lamport, also when it was waiting in the buffer.", x, "ab", [BTC], [
            step(a1, "a's seq 1, lamport 1", status="delivered"),
            step(b.forge(1, [a1], 5, BTC, [place_wire(SELL, LIMIT, 102, 1)]),
                 "b's seq 1 naming a's seq 1 with lamport 5 (must be 2): bad_lamport",
                 status="rejected", code="bad_lamport"),
            step(b.forge(1, [a1], 1, BTC, [place_wire(SELL, LIMIT, 102, 1)]),
                 "the same with lamport 1: bad_lamport", status="rejected", code="bad_lamport"),
            step(b1, "b's seq 1 with lamport 2: delivered", status="delivered"),
            step(b3_bad, "b's seq 3 with a wrong lamport before seq 2: buffered (the check "
                 "needs its causes)", status="buffered"),
            step(b2, "b's seq 2 is delivered; the waiter it releases fails the check and is "
                 "dropped, and the receipt says only delivered", status="delivered",
                 delivered=1, code=None),
            step(b3_bad, "the bad seq 3 again: bad_lamport", status="rejected",
                 code="bad_lamport"),
        ])


def reject_clock_regression() -> Scenario:
    x = cast()
    a, b = x["a"], x["b"]
    a1 = a.sign(BTC, [Place(SELL, LIMIT, 101, 2)])
    b1 = b.see(a1).sign(BTC, [Place(SELL, LIMIT, 102, 1)])
    regressed = b.forge(2, [b1], b1.lamport + 1, BTC, [place_wire(SELL, LIMIT, 103, 1)])
    b2 = b.sign(BTC, [Place(SELL, LIMIT, 103, 1)])
    return Scenario(
        "reject_clock_regression", "An origin's clock may not fall behind its previous "
        "event's: clock_regression.", x, "ab", [BTC], [
            step(a1, "a's seq 1", status="delivered"),
            step(b1, "b's seq 1 names a's seq 1", status="delivered"),
            step(regressed, "b's seq 2 drops a from its clock: clock_regression",
                 status="rejected", code="clock_regression"),
            step(b2, "b's seq 2 that keeps a: delivered", status="delivered"),
        ])


def reject_not_member() -> Scenario:
    x = cast()
    a, b, c = x["a"], x["b"], x["c"]
    a1 = a.sign(BTC, [Place(SELL, LIMIT, 101, 2)])
    c1 = c.see(a1).sign(BTC, [Place(BUY, LIMIT, 101, 1)])
    b1 = b.see(a1).sign(BTC, [Place(SELL, LIMIT, 102, 1)])
    join = a.see(b1).sign(MEMBERSHIP_MARKET, [Join(c.origin)])
    short = c.forge(1, [join], join.lamport + 1, BTC, [place_wire(BUY, IOC, 101, 1)])
    return Scenario(
        "reject_not_member", "With a genesis, an origin admitted neither by it nor by a join "
        "in the event's causal past is refused: not_member. So is a newcomer's first event "
        "that covers its join but not the join's clock.", x, "ab", [BTC], [
            step(a1, "a's seq 1", status="delivered"),
            step(c1, "c, in no genesis and no join, trades: not_member", status="rejected",
                 code="not_member"),
            step(b1, "b's seq 1, which a sees", status="delivered"),
            step(join, "a admits c: its join names b's seq 1", status="delivered",
                 outcomes=["joined"]),
            step(short, "c's first event names the join but not b's seq 1, which the join "
                 "names: not_member", status="rejected", code="not_member"),
        ])


SCENARIOS: tuple[Callable[[], Scenario], ...] = (
    limit_gtc_partial_fills, ioc, fill_or_kill, fill_or_kill_too_deep, post_only,
    market_orders, price_time_priority, cancels, stp_expire_taker, stp_expire_maker,
    stp_expire_both, fair_order_cancels_first, rollback_late_event, rollback_reference,
    causal_buffering, duplicates, membership, leave, reject_malformed, reject_oversize,
    reject_equivocation, reject_fork, reject_bad_lamport, reject_clock_regression,
    reject_not_member, reject_bad_leave, remove_member, reject_bad_vote, removal_rounds,
    removal_decided, removal_void_vote,
)


# -- recording -----------------------------------------------------------------------------


def record_step(replica: Replica, receipt: Receipt, item: Step, markets: Sequence[str]) -> dict:
    """What the replica reports after one step, in the vectors' JSON form."""
    final_key = replica.final_key()
    orders = sorted((o for m in markets for o in replica.book(m).orders.values()),
                    key=lambda o: o.order_id)
    books = {}
    for market in markets:
        book = replica.book(market)
        depth = book.depth(levels=len(book.bids) + len(book.asks))
        books[market] = {"bids": [list(level) for level in depth["bids"]],
                         "asks": [list(level) for level in depth["asks"]],
                         "resting": [[o.order_id.hex(), o.remaining] for o in book.resting()]}
    return {
        "note": item.note,
        "event_hex": item.raw.hex(),
        "status": receipt.status,
        "code": receipt.code,
        "delivered": [e.id.hex() for e in receipt.delivered],
        "missing": {o.hex(): [lo, hi] for o, (lo, hi) in sorted(receipt.missing.items())},
        "rolled_back": receipt.rolled_back,
        "trades": [t.as_dict() for t in receipt.trades],
        "applied": [{"event_id": i.hex(), "outcomes": replica.outcomes_of(i)}
                    for i in replica.applied_ids()],
        "orders": [{"order_id": o.order_id.hex(), "status": o.status.name.lower(),
                    "filled": o.filled, "reason": o.reason} for o in orders],
        "books": books,
        "digest": replica.digest_hex,
        "final_key": None if final_key is None else [final_key[0], final_key[1],
                                                     final_key[2].hex(), final_key[3]],
    }


def check_intent(scenario: str, index: int, raw: bytes, recorded: dict, expect: dict) -> None:
    """Assert the facts the step was written to show."""
    where = f"{scenario} step {index} ({recorded['note']})"
    event_id = hashlib.sha256(raw).hexdigest()
    own = [entry["outcomes"] for entry in recorded["applied"] if entry["event_id"] == event_id]
    for name, wanted in expect.items():
        if name == "status":
            got = recorded["status"]
        elif name == "code":
            got = recorded["code"]
        elif name == "trades":
            got = len(recorded["trades"])
        elif name == "rolled_back":
            got = recorded["rolled_back"]
        elif name == "delivered":
            got = len(recorded["delivered"])
        elif name == "outcomes":
            got = own[0] if own else None
        elif name == "reasons":
            prefix = [f"{event_id}{i:04x}" for i in range(len(wanted))]  # type: ignore[arg-type]
            by_id = {o["order_id"]: o["reason"] for o in recorded["orders"]}
            got = [by_id.get(oid) for oid in prefix]
        elif name == "check":
            assert wanted(recorded), f"{where}: its check fails"  # type: ignore[operator]
            continue
        else:
            raise AssertionError(f"{where}: unknown expectation {name}")
        assert got == wanted, f"{where}: {name} is {got!r}, meant {wanted!r}"
    if recorded["status"] != "rejected":
        assert recorded["code"] is None, where


def run(scenario: Scenario) -> dict:
    """Feed the scenario's steps to a fresh replica and record what it reports."""
    authors = scenario.authors
    genesis = sorted(authors[role].origin for role in scenario.genesis)
    replica = Replica(DEFAULT_MARKETS, origin=None, genesis=genesis)
    steps = []
    for index, item in enumerate(scenario.steps):
        digest_before = replica.digest_hex
        receipt = replica.receive(item.raw)
        recorded = record_step(replica, receipt, item, scenario.markets)
        check_intent(scenario.name, index, item.raw, recorded, item.expect)
        if receipt.status in ("rejected", "duplicate", "buffered"):
            assert recorded["digest"] == digest_before, (scenario.name, index)
        replica.check_invariants()
        for market in scenario.markets:
            replica.book(market).check_invariants()
        steps.append(recorded)
    return {
        "name": scenario.name,
        "description": scenario.description,
        "protocol_version": PROTOCOL_VERSION,
        "authors": {role: {"seed": author.seed, "peer_id": author.origin.hex()}
                    for role, author in authors.items()},
        "genesis": [g.hex() for g in genesis],
        "replica_markets": {name: {"base": m.base, "quote": m.quote, "tick_size": m.tick_size,
                                   "lot_size": m.lot_size}
                            for name, m in sorted(DEFAULT_MARKETS.items())},
        "markets": list(scenario.markets),
        **({"same_final_state_as": scenario.same_final_state_as}
           if scenario.same_final_state_as else {}),
        "steps": steps,
    }


def final_state(vector: dict) -> dict:
    """The part of a scenario's last step that another arrival order must reproduce."""
    last = vector["steps"][-1]
    return {k: last[k] for k in ("digest", "books", "orders", "applied")}


def build() -> dict[str, dict]:
    """Every scenario's vector, by file name."""
    vectors = {}
    for make in SCENARIOS:
        vector = run(make())
        name = f"{vector['name']}.json"
        assert name not in vectors, name
        vectors[name] = vector
    by_name = {v["name"]: v for v in vectors.values()}
    for vector in vectors.values():
        other = vector.get("same_final_state_as")
        if other:
            assert final_state(vector) == final_state(by_name[other]), vector["name"]
    return vectors


def render(vector: dict) -> str:
    return json.dumps(vector, indent=2, sort_keys=True) + "\n"


def main() -> None:
    vectors = build()
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for stale in OUT_DIR.glob("*.json"):
        if stale.name not in vectors:
            stale.unlink()
    for name, vector in vectors.items():
        (OUT_DIR / name).write_text(render(vector))
    size = sum(len(render(v)) for v in vectors.values())
    print(f"wrote {len(vectors)} scenarios ({size} bytes) to {OUT_DIR}")


if __name__ == "__main__":
    main()
