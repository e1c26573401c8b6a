"""The committed CBOR test vectors, checked byte for byte in both directions."""

from __future__ import annotations

import json
import pathlib

import pytest

from p2pexchange.core.events import STP, Cancel, OrderType, Place, Side, decode_event, sign_event
from p2pexchange.core.market import DEFAULT_MARKETS
from p2pexchange.sim.workload import peer_id_bytes, seeded_key_pair

VECTORS = json.loads((pathlib.Path(__file__).parent.parent / "protocols" / "vectors"
                      / "events.json").read_text())["events"]


def action_from_json(spec: dict):
    if "place" in spec:
        p = spec["place"]
        return Place(Side[p["side"].upper()], OrderType[p["type"].upper()], p["price"], p["qty"],
                     STP[p["stp"].upper()])
    return Cancel(bytes.fromhex(spec["cancel"]["order_id"]))


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_encoder_produces_the_committed_bytes(vector):
    key = seeded_key_pair(vector["key_seed"])
    origin = peer_id_bytes(key)
    assert origin.hex() == vector["origin"]
    clock = {bytes.fromhex(o): s for o, s in vector["clock"].items()}
    event = sign_event(key.private_key, origin, vector["seq"], clock, vector["lamport"],
                       vector["market"], [action_from_json(a) for a in vector["actions"]])
    assert event.raw.hex() == vector["cbor_hex"]
    assert event.id.hex() == vector["event_id"]


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_decoder_reads_the_committed_bytes(vector):
    event = decode_event(bytes.fromhex(vector["cbor_hex"]), DEFAULT_MARKETS)
    assert event.origin.hex() == vector["origin"]
    assert event.seq == vector["seq"] and event.lamport == vector["lamport"]
    assert {o.hex(): s for o, s in event.clock.items()} == vector["clock"]
    assert event.market == vector["market"]
    assert list(event.actions) == [action_from_json(a) for a in vector["actions"]]
    assert event.id.hex() == vector["event_id"]
