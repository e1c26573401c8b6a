"""Events: canonical CBOR, signatures, and rejection of every kind of bad input."""

from __future__ import annotations

import hashlib
import pathlib

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pexchange.core.events import (
    EVENT_ACTIONS_MAX,
    EVENT_BYTES_MAX,
    MEMBERSHIP_MARKET,
    PROTOCOL_VERSION,
    Cancel,
    EventRejected,
    Join,
    OrderType,
    Place,
    Side,
    canonical,
    decode_event,
    sign_event,
)
from p2pexchange.core.market import DEFAULT_MARKETS
from p2pexchange.sim.workload import peer_id_bytes, seeded_key_pair

KEY = seeded_key_pair("events-test")
ORIGIN = peer_id_bytes(KEY)
OTHER = peer_id_bytes(seeded_key_pair("events-test-other"))
# Clock entries name events by id; these tests only decode, so any 32 bytes will do.
ID_A = hashlib.sha256(b"event a").digest()
ID_B = hashlib.sha256(b"event b").digest()
CRASHERS = pathlib.Path(__file__).parent / "crashers"


def make(seq: int = 1, clock: dict | None = None, lamport: int = 1, market: str = "BTC-USD",
         actions: tuple = (Place(Side.BUY, OrderType.LIMIT, 100, 5),)):
    return sign_event(KEY.private_key, ORIGIN, seq, clock or {}, lamport, market, actions)


def wire(event) -> dict:
    return cbor2.loads(event.raw)


def resign(msg: dict) -> bytes:
    """Re-sign a tampered body with the right key, so only the tampering is wrong."""
    from p2pexchange.core.events import SIGNATURE_DOMAIN
    body = {k: v for k, v in msg.items() if k != "g"}
    msg = dict(body, g=KEY.private_key.sign(SIGNATURE_DOMAIN + canonical(body)))
    return canonical(msg)


def rejected_code(raw) -> str:
    with pytest.raises(EventRejected) as info:
        decode_event(raw, DEFAULT_MARKETS)
    return info.value.code


def test_event_round_trips_byte_for_byte():
    event = make(seq=3, clock={ORIGIN: (2, ID_A), OTHER: (7, ID_B)}, lamport=9,
                 actions=(Place(Side.SELL, OrderType.FOK, 12345, 2), Cancel(b"\x01" * 34)))
    decoded = decode_event(event.raw, DEFAULT_MARKETS)
    assert decoded == event
    assert decoded.id == event.id and decoded.raw == event.raw
    assert canonical(cbor2.loads(event.raw)) == event.raw
    assert decoded.order_id(1) == event.id + b"\x00\x01"
    # A clock entry is [seq, id] on the wire; the event splits it into clock and heads.
    assert wire(event)["c"] == {ORIGIN: [2, ID_A], OTHER: [7, ID_B]}
    assert decoded.clock == {ORIGIN: 2, OTHER: 7} and decoded.heads == {ORIGIN: ID_A, OTHER: ID_B}
    assert list(decoded.clock) == list(decoded.heads) == sorted([ORIGIN, OTHER])


def test_an_acknowledgement_round_trips():
    """An empty event on the membership market: no actions, only a clock."""
    ack = make(seq=2, clock={ORIGIN: (1, ID_A), OTHER: (4, ID_B)}, lamport=5,
               market=MEMBERSHIP_MARKET, actions=())
    msg = wire(ack)
    assert msg["m"] == "" and msg["a"] == [] and msg["v"] == PROTOCOL_VERSION
    decoded = decode_event(ack.raw, DEFAULT_MARKETS)
    assert decoded == ack and decoded.raw == ack.raw and decoded.id == ack.id
    assert decoded.actions == () and decoded.heads == {ORIGIN: ID_A, OTHER: ID_B}
    assert decoded.key == ack.key and decoded.key[0] == 5


def test_a_join_round_trips():
    event = make(clock={OTHER: (3, ID_B)}, lamport=4, market=MEMBERSHIP_MARKET,
                 actions=(Join(OTHER), Join(b"\x00\x24" + b"\x07" * 36)))
    assert wire(event)["a"] == [[2, OTHER], [2, b"\x00\x24" + b"\x07" * 36]]
    decoded = decode_event(event.raw, DEFAULT_MARKETS)
    assert decoded == event and decoded.raw == event.raw
    assert decoded.actions == (Join(OTHER), Join(b"\x00\x24" + b"\x07" * 36))


def test_signing_is_deterministic_so_ids_agree_everywhere():
    assert make().id == make().id
    assert make().id != make(lamport=2).id


@pytest.mark.parametrize("raw, code", [
    (b"\xff\xff", "bad_cbor"),
    (b"", "bad_cbor"),
    (cbor2.dumps([1, 2, 3]), "bad_type"),
    (b"\x00" * (EVENT_BYTES_MAX + 1), "oversize"),
    ("not bytes", "bad_type"),
])
def test_garbage_is_rejected_with_a_reason(raw, code):
    assert rejected_code(raw) == code


@pytest.mark.parametrize("field, value, code", [
    ("v", 1, "bad_version"),  # the format before clock entries named ids
    ("v", PROTOCOL_VERSION + 1, "bad_version"),
    ("s", 0, "out_of_range"),
    ("s", 1.0, "bad_type"),
    ("l", -1, "out_of_range"),
    ("m", "DOGE-USD", "unknown_market"),
    ("m", 7, "bad_type"),
    ("m", MEMBERSHIP_MARKET, "bad_actions"),  # a place on the membership market
    ("c", {ORIGIN: [5, ID_A]}, "bad_clock"),
    ("c", [1], "bad_clock"),
    ("c", {OTHER: [0, ID_A]}, "out_of_range"),
    ("c", {OTHER: [3.0, ID_A]}, "bad_type"),
    ("c", {OTHER: 3}, "bad_clock"),  # the v1 form: a seq without its id
    ("c", {OTHER: [3]}, "bad_clock"),
    ("c", {OTHER: [3, ID_A, 1]}, "bad_clock"),
    ("c", {OTHER: {"s": 3, "i": ID_A}}, "bad_clock"),
    ("c", {OTHER: [3, ID_A[:31]]}, "bad_clock"),
    ("c", {OTHER: [3, ID_A + b"\x00"]}, "bad_clock"),
    ("c", {OTHER: [3, ID_A.hex()[:32]]}, "bad_clock"),
    ("c", {OTHER: [3, b""]}, "bad_clock"),
    ("c", {b"": [3, ID_A]}, "bad_clock"),
    ("a", [], "bad_actions"),  # a market event needs at least one action
    ("a", [[2, OTHER]], "bad_actions"),  # a join belongs on the membership market
    ("a", [[0, 0, 0, 100, 5, 0], [2, OTHER]], "bad_actions"),
    ("a", [[0, 0, 0, 100.5, 5, 0]], "bad_type"),
    ("a", [[0, 0, 0, 100, 0, 0]], "out_of_range"),
    ("a", [[0, 2, 0, 100, 5, 0]], "out_of_range"),
    ("a", [[0, 0, 4, 100, 5, 0]], "out_of_range"),
    ("a", [[0, 0, 0, 100, 5]], "bad_action"),
    ("a", [[1, b"short"]], "bad_action"),
    ("a", [[9]], "bad_action"),
    ("a", [[2]], "bad_action"),
    ("a", [[2, OTHER, 0]], "bad_action"),
    ("a", [[2, b""]], "bad_action"),
    ("a", [[2, b"\x01" * 65]], "bad_action"),
    ("a", [[2, "peer"]], "bad_action"),
    ("a", [[2, 7]], "bad_action"),
    ("a", [[True, 0, 0, 100, 5, 0]], "bad_action"),
    ("a", [[0, 0, 0, 100, 5, 0]] * (EVENT_ACTIONS_MAX + 1), "bad_actions"),
    ("o", "text", "bad_origin"),
    ("o", b"\x00\x01garbage", "bad_origin"),
])
def test_wrong_fields_are_rejected_even_when_signed(field, value, code):
    msg = wire(make())
    msg[field] = value
    raw = resign(msg) if field != "o" else canonical(msg)
    if len(raw) > EVENT_BYTES_MAX:
        code = "oversize"
    assert rejected_code(raw) == code


@pytest.mark.parametrize("actions, code", [
    ([], None),  # an acknowledgement
    ([[2, OTHER]], None),
    ([[2, OTHER], [2, ORIGIN]], None),
    ([[0, 0, 0, 100, 5, 0]], "bad_actions"),
    ([[1, b"\x01" * 34]], "bad_actions"),
    ([[2, OTHER], [1, b"\x01" * 34]], "bad_actions"),
    ([[2]], "bad_action"),
    ([[2, OTHER, OTHER]], "bad_action"),
    ([[2, b""]], "bad_action"),
    ([[2, b"\x01" * 65]], "bad_action"),
    ([[2, [OTHER]]], "bad_action"),
    ([[2, OTHER], [2, None]], "bad_action"),
])
def test_the_membership_market_carries_only_joins_or_nothing(actions, code):
    msg = wire(make(market=MEMBERSHIP_MARKET, actions=()))
    msg["a"] = actions
    raw = resign(msg)
    if code is None:
        assert decode_event(raw, DEFAULT_MARKETS).actions == tuple(Join(a[1]) for a in actions)
    else:
        assert rejected_code(raw) == code


def test_the_encoder_refuses_what_the_decoder_refuses():
    """Programmer errors: the same rules hold for what we sign ourselves."""
    for market, actions in (("BTC-USD", ()), ("BTC-USD", (Join(OTHER),)),
                            (MEMBERSHIP_MARKET, (Place(Side.BUY, OrderType.LIMIT, 1, 1),))):
        with pytest.raises(AssertionError):
            make(market=market, actions=actions)
    with pytest.raises(AssertionError):
        make(clock={OTHER: (3, ID_A[:31])})
    with pytest.raises(AssertionError):
        make(seq=2, clock={OTHER: (3, ID_A)})  # the clock must name our own seq 1


def test_missing_and_extra_fields_are_rejected():
    msg = wire(make())
    del msg["l"]
    assert rejected_code(canonical(msg)) == "bad_schema"
    msg = wire(make())
    msg["x"] = 1
    assert rejected_code(canonical(msg)) == "bad_schema"


def test_bad_signature_is_rejected():
    msg = wire(make())
    msg["g"] = bytes([msg["g"][0] ^ 1]) + msg["g"][1:]
    assert rejected_code(canonical(msg)) == "bad_signature"
    msg["g"] = b"short"
    assert rejected_code(canonical(msg)) == "bad_signature"


def test_forged_origin_is_rejected():
    """An event signed by one key but claiming another origin."""
    msg = wire(make())
    msg["o"] = OTHER
    assert rejected_code(resign(msg)) == "bad_signature"


def test_non_canonical_encoding_is_rejected():
    event = make()
    msg = wire(event)
    loose = cbor2.dumps(dict(reversed(list(msg.items()))))  # same content, keys unsorted
    assert loose != event.raw
    assert rejected_code(loose) == "non_canonical"


def test_every_crasher_file_is_rejected_cleanly():
    files = sorted(CRASHERS.glob("*.bin"))
    assert len(files) >= 8
    for path in files:
        with pytest.raises(EventRejected) as info:
            decode_event(path.read_bytes(), DEFAULT_MARKETS)
        assert info.value.code != "malformed", f"{path.name} reached the last net"


@pytest.mark.parametrize("field", ["s", "l", "v", "c", "a", "kind", "key"])
def test_a_bignum_anywhere_is_rejected_with_a_code(field):
    """A ~1.8 KB CBOR bignum (more than 4,300 digits) once made the error message raise
    ValueError before the signature was checked; CBOR tags are now refused outright."""
    huge = 10**4400
    msg = wire(make())
    if field == "c":
        msg["c"] = {OTHER: [huge, ID_A]}
    elif field == "a":
        msg["a"] = [[0, 0, 0, 100, huge, 0]]
    elif field == "kind":
        msg["a"] = [[huge, 0, 0, 100, 5, 0]]
    elif field == "key":
        msg[huge] = 1
    else:
        msg[field] = huge
    raw = resign(msg) if field != "key" else cbor2.dumps(msg)
    assert 1_800 < len(raw) <= EVENT_BYTES_MAX
    assert rejected_code(raw) == "bad_cbor"


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=512))
def test_random_bytes_never_raise_anything_but_a_rejection(data):
    assert rejected_code(data) != "malformed"


cbor_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.binary(max_size=40)
    | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(
        st.sampled_from(list("vosclmagx")) | st.binary(max_size=4), inner, max_size=9),
    max_leaves=30)


@settings(max_examples=300, deadline=None)
@given(cbor_values)
def test_random_cbor_structures_are_rejected_not_crashed(value):
    assert rejected_code(cbor2.dumps(value)) != "malformed"


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutated_valid_events_are_rejected_or_identical(data):
    raw = bytearray(make(seq=2, clock={ORIGIN: (1, ID_A), OTHER: (3, ID_B)}, lamport=4).raw)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    try:
        decoded = decode_event(bytes(raw), DEFAULT_MARKETS)
    except EventRejected as rejected:
        assert rejected.code != "malformed"
        return
    assert decoded.raw == bytes(raw)  # only an unchanged event may decode


def test_only_the_exact_ed25519_peer_id_may_originate_events():
    """A secp256k1 origin (its signatures are not deterministic: one content, several
    ids) and another encoding of an Ed25519 key (one key, several origins) are refused
    as `bad_origin`, even with a signature that verifies for the key."""
    from libp2p.crypto.secp256k1 import create_new_key_pair
    from libp2p.peer.id import ID

    from p2pexchange.core.events import decode_event, sign_event

    place = [Place(Side.SELL, OrderType.LIMIT, 100, 1)]
    assert decode_event(sign_event(KEY.private_key, ORIGIN, 1, {}, 1, "BTC-USD", place).raw,
                        DEFAULT_MARKETS).origin == ORIGIN
    secp = create_new_key_pair()
    secp_origin = ID.from_pubkey(secp.public_key).to_bytes()
    padded = ORIGIN[:1] + bytes([ORIGIN[1] + 2]) + ORIGIN[2:] + b"\x18\x00"  # extra field
    for key, origin in ((secp.private_key, secp_origin), (KEY.private_key, padded)):
        raw = sign_event(key, origin, 1, {}, 1, "BTC-USD", place).raw
        with pytest.raises(EventRejected) as rejected:
            decode_event(raw, DEFAULT_MARKETS)
        assert rejected.value.code == "bad_origin", rejected.value
