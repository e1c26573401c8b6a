"""Regenerates protocols/vectors/events.json from the encoder.

Run only when the wire format changes on purpose (and bump PROTOCOL_VERSION):
tests/test_vectors.py checks the committed bytes, so an accidental change to
the encoding fails the tests instead of silently forking the network.
"""

from __future__ import annotations

import json
import pathlib

from p2pexchange.core.events import STP, Cancel, OrderType, Place, Side, sign_event
from p2pexchange.sim.workload import peer_id_bytes, seeded_key_pair

OUT = pathlib.Path(__file__).resolve().parent.parent / "protocols" / "vectors" / "events.json"


def action_json(action) -> dict:
    if isinstance(action, Place):
        return {"place": {"side": action.side.name.lower(), "type": action.type.name.lower(),
                          "price": action.price, "qty": action.qty,
                          "stp": action.stp.name.lower()}}
    return {"cancel": {"order_id": action.order_id.hex()}}


def main() -> None:
    a_key, b_key = seeded_key_pair("vector-a"), seeded_key_pair("vector-b")
    a, b = peer_id_bytes(a_key), peer_id_bytes(b_key)
    first = sign_event(a_key.private_key, a, 1, {}, 1, "BTC-USD",
                       [Place(Side.SELL, OrderType.LIMIT, 6_500_000, 25)])
    cases = [
        ("single_limit_sell", a_key, "vector-a", a, 1, {}, 1, "BTC-USD",
         [Place(Side.SELL, OrderType.LIMIT, 6_500_000, 25)]),
        ("batch_every_order_type", b_key, "vector-b", b, 1, {a: 1}, 2, "BTC-USD",
         [Place(Side.BUY, OrderType.LIMIT, 6_499_999, 3, STP.EXPIRE_MAKER),
          Place(Side.BUY, OrderType.IOC, 6_500_000, 10),
          Place(Side.BUY, OrderType.FOK, 6_500_000, 1, STP.EXPIRE_BOTH),
          Place(Side.SELL, OrderType.POST_ONLY, 6_600_000, 2**40),
          Place(Side.SELL, OrderType.MARKET, 0, 1)]),
        ("cancel_after_place", a_key, "vector-a", a, 2, {a: 1, b: 1}, 3, "BTC-USD",
         [Cancel(first.order_id(0))]),
        ("eth_market", b_key, "vector-b", b, 2, {a: 2, b: 1}, 4, "ETH-USD",
         [Place(Side.BUY, OrderType.LIMIT, 350_000, 1000)]),
    ]
    vectors = []
    for name, key, seed, origin, seq, clock, lamport, market, actions in cases:
        event = sign_event(key.private_key, origin, seq, clock, lamport, market, actions)
        vectors.append({
            "name": name,
            "key_seed": seed,
            "origin": origin.hex(),
            "seq": seq,
            "clock": {o.hex(): s for o, s in sorted(clock.items())},
            "lamport": lamport,
            "market": market,
            "actions": [action_json(x) for x in actions],
            "cbor_hex": event.raw.hex(),
            "event_id": event.id.hex(),
        })
    OUT.write_text(json.dumps({"version": 1, "events": vectors}, indent=2) + "\n")
    print(f"wrote {len(vectors)} vectors to {OUT}")


if __name__ == "__main__":
    main()
