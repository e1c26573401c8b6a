"""The replica's conformance vectors (protocols/vectors/conformance/, issue 14): every
scenario's steps fed byte for byte into a fresh replica report exactly what the vectors
say, and the generator, run in-process, reproduces the committed files exactly."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import pathlib
import sys

import pytest

from p2pexchange.core.events import PROTOCOL_VERSION
from p2pexchange.core.market import DEFAULT_MARKETS
from p2pexchange.core.replica import Replica

ROOT = pathlib.Path(__file__).resolve().parent.parent
FOLDER = ROOT / "protocols" / "vectors" / "conformance"
VECTORS = {path.name: json.loads(path.read_text()) for path in sorted(FOLDER.glob("*.json"))}
BY_NAME = {v["name"]: v for v in VECTORS.values()}


def _generator():
    spec = importlib.util.spec_from_file_location(
        "make_conformance_vectors", ROOT / "scripts" / "make_conformance_vectors.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def observed(replica: Replica, receipt, markets: list[str]) -> dict:
    """What the replica reports after a step, in the vectors' form (written independently
    of the generator's `record_step`, so a change to either shows)."""
    books, orders = {}, []
    for market in markets:
        book = replica.book(market)
        books[market] = {
            "bids": [[-key, level.total] for key, level in book.bids.items()],
            "asks": [[key, level.total] for key, level in book.asks.items()],
            "resting": [[o.order_id.hex(), o.remaining] for o in book.resting()],
        }
        orders += [{"order_id": o.order_id.hex(), "status": o.status.name.lower(),
                    "filled": o.filled, "reason": o.reason} for o in book.orders.values()]
    final_key = replica.final_key()
    return {
        "status": receipt.status,
        "code": receipt.code,
        "delivered": [e.id.hex() for e in receipt.delivered],
        "missing": {o.hex(): [lo, hi] for o, (lo, hi) in receipt.missing.items()},
        "rolled_back": receipt.rolled_back,
        "trades": [{"market": t.market, "event_id": t.event_id.hex(),
                    "maker_order": t.maker_order.hex(), "taker_order": t.taker_order.hex(),
                    "maker_origin": t.maker_origin.hex(), "taker_origin": t.taker_origin.hex(),
                    "price": t.price, "qty": t.qty, "taker_side": t.taker_side.name.lower()}
                   for t in receipt.trades],
        "applied": [{"event_id": i.hex(), "outcomes": replica.outcomes_of(i)}
                    for i in replica.applied_ids()],
        "orders": sorted(orders, key=lambda o: o["order_id"]),
        "books": books,
        "digest": replica.digest_hex,
        "final_key": None if final_key is None else [final_key[0], final_key[1],
                                                     final_key[2].hex(), final_key[3]],
    }


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_every_step_of_the_scenario_reports_what_the_vector_says(name):
    vector = VECTORS[name]
    assert vector["protocol_version"] == PROTOCOL_VERSION
    assert {n: {"base": m.base, "quote": m.quote, "tick_size": m.tick_size,
                "lot_size": m.lot_size} for n, m in DEFAULT_MARKETS.items()} \
        == vector["replica_markets"]
    replica = Replica(DEFAULT_MARKETS, origin=None,
                      genesis=[bytes.fromhex(g) for g in vector["genesis"]])
    for index, step in enumerate(vector["steps"]):
        receipt = replica.receive(bytes.fromhex(step["event_hex"]))
        got = observed(replica, receipt, vector["markets"])
        for field, value in got.items():
            assert value == step[field], f"step {index} ({step['note']}): {field}"
        assert set(step) == set(got) | {"note", "event_hex"}, f"step {index}: fields"
        replica.check_invariants()


def test_the_committed_vectors_are_what_the_generator_builds():
    generator = _generator()
    built = generator.build()
    assert sorted(built) == sorted(VECTORS), "a scenario file is missing or stale"
    for name, vector in built.items():
        assert generator.render(vector) == (FOLDER / name).read_text(), (
            f"{name} differs: run scripts/make_conformance_vectors.py if the change is meant")


def test_a_late_event_ends_in_the_state_of_in_order_delivery():
    pairs = [(v["name"], v["same_final_state_as"]) for v in VECTORS.values()
             if "same_final_state_as" in v]
    assert pairs
    for name, other in pairs:
        late, ordered = BY_NAME[name]["steps"], BY_NAME[other]["steps"]
        assert any(step["rolled_back"] for step in late), name
        for field in ("digest", "books", "orders", "applied"):
            assert late[-1][field] == ordered[-1][field], (name, field)


REACHABLE_CODES = {
    "bad_cbor", "non_canonical", "bad_schema", "bad_version", "bad_type", "out_of_range",
    "unknown_market", "bad_clock", "bad_actions", "bad_action", "bad_signature", "bad_origin",
    "oversize", "equivocation", "fork", "bad_lamport", "clock_regression", "left",
    "not_member", "bad_vote", "double_vote", "vote_open", "unfrozen",
}


def test_the_vectors_cover_every_rule_the_issue_names():
    steps = [step for v in VECTORS.values() for step in v["steps"]]
    assert {s["code"] for s in steps if s["status"] == "rejected"} == REACHABLE_CODES
    assert {s["status"] for s in steps} == {"delivered", "buffered", "duplicate", "rejected"}
    outcomes = {o for s in steps for a in s["applied"] for o in a["outcomes"]}
    assert outcomes >= {"resting", "partially_filled", "filled", "cancelled", "rejected",
                        "not_owner", "not_open", "joined", "left",
                        "voted", "refused", "void"}
    reasons = {o["reason"] for s in steps for o in s["orders"]}
    assert reasons >= {"ioc_remainder", "fok_unfillable", "fok_too_deep", "post_only_would_take",
                       "market_no_liquidity", "stp_expired_taker", "stp_expired_maker",
                       "cancelled_by_origin"}
    assert any(s["rolled_back"] for s in steps)
    assert any(len(s["delivered"]) > 1 for s in steps)
    assert any(s["final_key"] for s in steps)
    for vector in VECTORS.values():
        assert vector["description"] and "\n" not in vector["description"]
        for step in vector["steps"]:
            if step["status"] == "delivered":
                assert hashlib.sha256(bytes.fromhex(step["event_hex"])).hexdigest() \
                    in step["delivered"]
