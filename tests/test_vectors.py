"""The committed CBOR test vectors, checked byte for byte in both directions."""

from __future__ import annotations

import json
import pathlib

import pytest

from p2pexchange.core.events import (
    MEMBERSHIP_MARKET,
    PROTOCOL_VERSION,
    STP,
    Cancel,
    Join,
    OrderType,
    Place,
    Side,
    decode_event,
    sign_event,
)
from p2pexchange.core.market import DEFAULT_MARKETS
from p2pexchange.core.replica import Replica
from p2pexchange.sim.workload import peer_id_bytes, seeded_key_pair

FILE = json.loads((pathlib.Path(__file__).parent.parent / "protocols" / "vectors"
                   / "events.json").read_text())
VECTORS = FILE["events"]


def action_from_json(spec: dict):
    if "place" in spec:
        p = spec["place"]
        return Place(Side[p["side"].upper()], OrderType[p["type"].upper()], p["price"], p["qty"],
                     STP[p["stp"].upper()])
    if "join" in spec:
        return Join(bytes.fromhex(spec["join"]["member"]))
    return Cancel(bytes.fromhex(spec["cancel"]["order_id"]))


def clock_from_json(vector: dict) -> dict[bytes, tuple[int, bytes]]:
    assert vector["clock"].keys() == vector["clock_ids"].keys()
    return {bytes.fromhex(o): (s, bytes.fromhex(vector["clock_ids"][o]))
            for o, s in vector["clock"].items()}


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_encoder_produces_the_committed_bytes(vector):
    key = seeded_key_pair(vector["key_seed"])
    origin = peer_id_bytes(key)
    assert origin.hex() == vector["origin"]
    event = sign_event(key.private_key, origin, vector["seq"], clock_from_json(vector),
                       vector["lamport"], vector["market"],
                       [action_from_json(a) for a in vector["actions"]])
    assert event.raw.hex() == vector["cbor_hex"]
    assert event.id.hex() == vector["event_id"]


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_decoder_reads_the_committed_bytes(vector):
    event = decode_event(bytes.fromhex(vector["cbor_hex"]), DEFAULT_MARKETS)
    assert event.origin.hex() == vector["origin"]
    assert event.seq == vector["seq"] and event.lamport == vector["lamport"]
    assert {o.hex(): s for o, s in event.clock.items()} == vector["clock"]
    assert {o.hex(): i.hex() for o, i in event.heads.items()} == vector["clock_ids"]
    assert event.market == vector["market"]
    assert list(event.actions) == [action_from_json(a) for a in vector["actions"]]
    assert event.id.hex() == vector["event_id"]


def test_the_vectors_cover_the_v2_format():
    """An acknowledgement, a join, and clock entries naming events by id."""
    assert FILE["version"] == PROTOCOL_VERSION
    by_name = {v["name"]: v for v in VECTORS}
    ack = by_name["acknowledgement"]
    assert ack["market"] == MEMBERSHIP_MARKET and ack["actions"] == []
    assert [list(a) for a in by_name["join"]["actions"]] == [["join"]]
    assert by_name["clock_entry_with_id"]["clock_ids"]
    assert any(v["actions"] and "cancel" in v["actions"][0] for v in VECTORS)


def test_the_vectors_are_one_history_every_replica_delivers():
    """Each clock id names an earlier vector's event: replayed in order into a replica whose
    genesis is the file's, every vector is delivered and the join admits the newcomer, whose
    first event comes only after its join is final (so it is never parked)."""
    genesis = [bytes.fromhex(g) for g in FILE["genesis"]]
    replica = Replica(DEFAULT_MARKETS, genesis=genesis)
    ids = set()
    for vector in VECTORS:
        assert set(vector["clock_ids"].values()) <= ids
        if bytes.fromhex(vector["origin"]) not in genesis and vector["seq"] == 1:
            replica.final_key()  # decides the joins that are final
            assert replica.is_member(bytes.fromhex(vector["origin"])), vector["name"]
        receipt = replica.receive(bytes.fromhex(vector["cbor_hex"]))
        assert receipt.status == "delivered", (vector["name"], receipt.code, receipt.detail)
        ids.add(vector["event_id"])
    newcomer = next(bytes.fromhex(v["origin"]) for v in VECTORS
                    if v["name"] == "clock_entry_with_id")
    assert newcomer not in genesis and replica.is_member(newcomer)
