"""Regenerates protocols/vectors/events.json from the encoder.

Run only when the wire format changes on purpose (and bump PROTOCOL_VERSION):
tests/test_vectors.py checks the committed bytes, so an accidental change to
the encoding fails the tests instead of silently forking the network.

The vectors form one history, in order: each clock entry names an earlier
vector's event by seq ("clock") and by id ("clock_ids"), so the whole file can
also be replayed into a replica whose genesis is the two founders a and b.
"""

from __future__ import annotations

import json
import pathlib

from p2pexchange.core.events import (
    MEMBERSHIP_MARKET,
    PROTOCOL_VERSION,
    STP,
    Cancel,
    Event,
    Join,
    OrderType,
    Place,
    Side,
    sign_event,
)
from p2pexchange.core.market import DEFAULT_MARKETS
from p2pexchange.core.replica import Replica
from p2pexchange.sim.workload import peer_id_bytes, seeded_key_pair

OUT = pathlib.Path(__file__).resolve().parent.parent / "protocols" / "vectors" / "events.json"
SEEDS = ("vector-a", "vector-b", "vector-c")  # a and b found the network; b admits c


def action_json(action) -> dict:
    if isinstance(action, Place):
        return {"place": {"side": action.side.name.lower(), "type": action.type.name.lower(),
                          "price": action.price, "qty": action.qty,
                          "stp": action.stp.name.lower()}}
    if isinstance(action, Join):
        return {"join": {"member": action.member.hex()}}
    return {"cancel": {"order_id": action.order_id.hex()}}


def check_history(genesis: list[bytes], newcomer: bytes, events: list[Event]) -> None:
    """Replayed in order, every vector is delivered, and the newcomer is a member (its
    join final and decided) before its first event."""
    replica = Replica(DEFAULT_MARKETS, genesis=genesis)
    for event in events:
        if event.origin == newcomer:
            replica.final_key()  # decides the joins that are final (is_member reads that)
            assert replica.is_member(newcomer), "the newcomer signs before its join is final"
        receipt = replica.receive(event.raw)
        assert receipt.status == "delivered", (receipt.status, receipt.code, receipt.detail)


def main() -> None:
    keys = {seed: seeded_key_pair(seed) for seed in SEEDS}
    a, b, c = (peer_id_bytes(keys[seed]) for seed in SEEDS)
    by_name: dict[str, Event] = {}

    def named(*names: str) -> dict[bytes, tuple[int, bytes]]:
        """The clock naming these earlier vectors' events (seq and id)."""
        return {by_name[n].origin: (by_name[n].seq, by_name[n].id) for n in names}

    # (name, key seed, seq, clock, lamport, market, actions), in history order.
    cases = [
        ("single_limit_sell", "vector-a", 1, lambda: {}, 1, "BTC-USD",
         lambda: [Place(Side.SELL, OrderType.LIMIT, 6_500_000, 25)]),
        ("batch_every_order_type", "vector-b", 1, lambda: named("single_limit_sell"), 2,
         "BTC-USD",
         lambda: [Place(Side.BUY, OrderType.LIMIT, 6_499_999, 3, STP.EXPIRE_MAKER),
                  Place(Side.BUY, OrderType.IOC, 6_500_000, 10),
                  Place(Side.BUY, OrderType.FOK, 6_500_000, 1, STP.EXPIRE_BOTH),
                  Place(Side.SELL, OrderType.POST_ONLY, 6_600_000, 2**40),
                  Place(Side.SELL, OrderType.MARKET, 0, 1)]),
        ("cancel_after_place", "vector-a", 2,
         lambda: named("single_limit_sell", "batch_every_order_type"), 3, "BTC-USD",
         lambda: [Cancel(by_name["single_limit_sell"].order_id(0))]),
        ("eth_market", "vector-b", 2,
         lambda: named("cancel_after_place", "batch_every_order_type"), 4, "ETH-USD",
         lambda: [Place(Side.BUY, OrderType.LIMIT, 350_000, 1000)]),
        # An acknowledgement: the membership market "", no actions, only the clock.
        ("acknowledgement", "vector-a", 3, lambda: named("cancel_after_place", "eth_market"),
         5, MEMBERSHIP_MARKET, lambda: []),
        ("join", "vector-b", 3, lambda: named("acknowledgement", "eth_market"), 6,
         MEMBERSHIP_MARKET, lambda: [Join(c)]),
        # The join is final once both members' heads pin it twice (protocols/finality.md):
        # a acknowledges the join (round one), b acknowledges a's acknowledgement (round
        # two). Only then is c a member at its own replica, and may it sign.
        ("join_acknowledged", "vector-a", 4, lambda: named("acknowledgement", "join"), 7,
         MEMBERSHIP_MARKET, lambda: []),
        ("join_final", "vector-b", 4, lambda: named("join_acknowledged", "join"), 8,
         MEMBERSHIP_MARKET, lambda: []),
        # The newcomer's first event: its clock covers the join that admitted it, and names
        # every event by id.
        ("clock_entry_with_id", "vector-c", 1, lambda: named("join_acknowledged", "join_final"),
         9, "BTC-USD",
         lambda: [Place(Side.BUY, OrderType.IOC, 6_600_000, 1)]),
    ]
    vectors = []
    for name, seed, seq, make_clock, lamport, market, make_actions in cases:
        key = keys[seed]
        origin = peer_id_bytes(key)
        clock = dict(sorted(make_clock().items()))
        actions = make_actions()
        event = sign_event(key.private_key, origin, seq, clock, lamport, market, actions)
        by_name[name] = event
        vectors.append({
            "name": name,
            "key_seed": seed,
            "origin": origin.hex(),
            "seq": seq,
            "clock": {o.hex(): s for o, (s, _) in clock.items()},
            "clock_ids": {o.hex(): i.hex() for o, (_, i) in clock.items()},
            "lamport": lamport,
            "market": market,
            "actions": [action_json(x) for x in actions],
            "cbor_hex": event.raw.hex(),
            "event_id": event.id.hex(),
        })
    assert {a, b, c} == {bytes.fromhex(v["origin"]) for v in vectors}
    check_history([a, b], c, [by_name[name] for name, *_ in cases])
    OUT.write_text(json.dumps({"version": PROTOCOL_VERSION, "genesis": sorted([a.hex(), b.hex()]),
                               "events": vectors}, indent=2) + "\n")
    print(f"wrote {len(vectors)} vectors to {OUT}")


if __name__ == "__main__":
    main()
