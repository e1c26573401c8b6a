"""Events: signed batches of actions, their canonical CBOR and their validation.

Theory of operation: an event is what one origin (a libp2p peer) says at one
moment: a batch of `Place` and `Cancel` actions for one market, stamped with
the origin's next sequence number, its vector clock (for each origin, the
highest seq it had delivered) and a Lamport time, and signed with the origin's
libp2p Ed25519 key. The wire form is a canonical CBOR map (sorted keys,
shortest integers); the signature covers the canonical encoding of the map
without its signature field, prefixed by a domain tag. The event id is the
SHA-256 of the complete encoded event, so every node names every event, and
every order (`order_id = event_id || index`), the same way.

`decode_event` performs every check that needs no replica state: size, CBOR,
canonical form, schema, types, integer ranges, known market, the clock's own
entry (`clock[origin] == seq - 1`) and the signature. Checks that need state
(duplicate, equivocation, causal readiness, Lamport consistency) belong to the
replica. A failure raises `EventRejected` with a stable `code` naming the
peer's fault; nothing here ever raises anything else on bad input.

Hostile input. The bytes are untrusted until the signature verifies, and every
step before that is bounded by the size of the input:
- `strict_loads` decodes the CBOR subset the protocol uses (protocols/README.md:
  no tags, definite lengths, text or byte-string map keys, nesting at most
  `CBOR_DEPTH_MAX`). Every semantic tag is refused before cbor2 builds its value:
  bignums, and above all shared references (tags 28/29), which let a few hundred
  bytes describe a structure whose hash or repr takes exponential time.
- An error message never formats an untrusted value: `describe` names its type
  and a clipped, bounded rendering, and cannot raise (Python refuses int->str
  beyond 4,300 digits, and repr of a deep structure can recurse).
- A last `except Exception` turns anything the explicit checks did not foresee
  into `EventRejected("malformed")`; an `AssertionError` (our own bug) is never
  converted. Tests assert that no known input reaches that net.
- The public keys extracted from peer ids are cached, at most `PUBKEY_CACHE_MAX`,
  the oldest dropped first.
"""

from __future__ import annotations

import hashlib
import sys
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from itertools import islice
from typing import NamedTuple

from libp2p.crypto.ed25519 import Ed25519PublicKey
from libp2p.crypto.keys import PrivateKey, PublicKey

from .cbor import (  # noqa: F401 (re-exported: callers import them from here too)
    CBOR_DEPTH_MAX,
    canonical,
    describe,
    describe_error,
    intern_bounded,
    strict_loads,
)
from .market import MARKET_NAME_BYTES_MAX, PRICE_TICKS_MAX, QTY_LOTS_MAX

PROTOCOL_VERSION = 2
EVENT_BYTES_MAX = 64 * 1024
EVENT_ACTIONS_MAX = 1000
CLOCK_ORIGINS_MAX = 128  # also the most members a network can have (core/finality.py)
ORIGIN_BYTES_MAX = 64
SEQ_MAX = 2**63 - 1
SIGNATURE_BYTES_MAX = 128
SIGNATURE_DOMAIN = b"p2pexchange/event/v2\x00"
EVENT_ID_BYTES = 32  # SHA-256 of the encoded event
ORDER_ID_BYTES = 34  # 32-byte event id + 2-byte big-endian index
PUBKEY_CACHE_MAX = 4096  # peer id -> extracted public key; oldest dropped first
VOTE_MEMBERS_MAX = 64  # = finality.MEMBERS_MAX: a vote lists the effective members

assert EVENT_ACTIONS_MAX < 2**16, "an order id holds the action index in two bytes"
# A cancel encodes in 38 bytes, a place in at most 23, a join in at most 68, a vote in at
# most 2 + 66 + 5 + 2 + 64 * 66 (alone in its event); a clock
# entry (peer id, [seq, event id]) in at most 2 + 64 + 1 + 9 + 2 + 32 = 110.
assert EVENT_ACTIONS_MAX * 40 + CLOCK_ORIGINS_MAX * 110 + 256 < EVENT_BYTES_MAX
assert 75 + VOTE_MEMBERS_MAX * 66 + CLOCK_ORIGINS_MAX * 110 + 256 < EVENT_BYTES_MAX
MEMBERSHIP_MARKET = ""  # the market field of an event that carries no market actions


class Side(IntEnum):
    BUY = 0
    SELL = 1


class OrderType(IntEnum):
    LIMIT = 0  # good till cancelled
    IOC = 1  # immediate or cancel
    FOK = 2  # fill or kill
    POST_ONLY = 3  # rejected if it would take
    MARKET = 4  # takes what the book holds up to its size, rest cancelled


class STP(IntEnum):
    """Self-trade prevention: what happens when taker and maker share an origin."""

    EXPIRE_TAKER = 0
    EXPIRE_MAKER = 1
    EXPIRE_BOTH = 2


ACTION_PLACE = 0
ACTION_CANCEL = 1
ACTION_JOIN = 2
ACTION_LEAVE = 3
ACTION_VOTE = 4
ROUND_MAX = 2**32 - 1  # rounds of removal statements (core/finality.py)


class Place(NamedTuple):
    side: Side
    type: OrderType
    price: int  # ticks; 0 for market orders
    qty: int  # lots
    stp: STP = STP.EXPIRE_TAKER


class Cancel(NamedTuple):
    order_id: bytes


class Join(NamedTuple):
    """Admit `member` (a peer id) to the network's membership (core/finality.py)."""

    member: bytes


class Leave(NamedTuple):
    """Its origin leaves the network's membership for good (core/finality.py): once
    this event is final, finality no longer waits for it, and its later events may
    carry no actions."""


class Vote(NamedTuple):
    """A removal statement (core/finality.py): in round `round` among the members
    `members` (the effective members of its causal past, ascending), remove `target`;
    or, with `target` empty, a refusal: this member removes nobody in that round."""

    target: bytes  # a peer id, or b"" for a refusal
    round: int
    members: tuple[bytes, ...]


Action = Place | Cancel | Join | Leave | Vote


@dataclass(frozen=True, slots=True)
class Event:
    origin: bytes
    seq: int
    clock: Mapping[bytes, int]  # origin -> highest seq delivered when this was created
    heads: Mapping[bytes, bytes] = field(repr=False)  # origin -> id of that event
    lamport: int
    market: str
    actions: tuple[Action, ...]
    signature: bytes
    id: bytes = field(repr=False)
    raw: bytes = field(repr=False)
    # The total-order sort key: (lamport, rank, origin, seq), where `rank` is 0 for a
    # market event without place actions (cancels only), 1 for one with places and 2
    # for a membership event (joins, acknowledgements). At equal Lamport time
    # (concurrent events) cancels therefore take effect before places: a maker pulling
    # its order wins against a taker racing for it, the same way on every node; and a
    # late acknowledgement, which changes no book, never makes concurrent market events
    # re-apply. Lamport time first keeps the order an extension of causality. Computed
    # once: sorting, bisecting and merging by it are the replica's and sync's hot paths.
    key: tuple[int, int, bytes, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        rank = 2 if self.market == MEMBERSHIP_MARKET else 0
        if not rank:
            for action in self.actions:
                if action.__class__ is Place:
                    rank = 1
                    break
        object.__setattr__(self, "key", (self.lamport, rank, self.origin, self.seq))

    def order_id(self, index: int) -> bytes:
        return order_id(self.id, index)


class EventRejected(Exception):
    """A peer sent something that is not a valid event. `code` is stable and machine-readable."""

    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail


def order_id(event_id: bytes, index: int) -> bytes:
    return event_id + index.to_bytes(2, "big")


def short_id(b: bytes) -> str:
    """A short, human-readable handle for ids in logs."""
    return b.hex()[:12]


# ---------------------------------------------------------------------------
# Encoding


def _action_to_wire(action: Action) -> list:
    if isinstance(action, Place):
        return [ACTION_PLACE, int(action.side), int(action.type), action.price, action.qty,
                int(action.stp)]
    if isinstance(action, Join):
        return [ACTION_JOIN, action.member]
    if isinstance(action, Leave):
        return [ACTION_LEAVE]
    if isinstance(action, Vote):
        return [ACTION_VOTE, action.target, action.round, list(action.members)]
    return [ACTION_CANCEL, action.order_id]


def _body(origin: bytes, seq: int, clock: Mapping[bytes, tuple[int, bytes]], lamport: int,
          market: str, actions: tuple[Action, ...]) -> dict:
    return {
        "v": PROTOCOL_VERSION,
        "o": origin,
        "s": seq,
        "c": {o: [s, i] for o, (s, i) in clock.items()},
        "l": lamport,
        "m": market,
        "a": [_action_to_wire(a) for a in actions],
    }


def _actions_fit_market(market: str, actions: tuple[Action, ...]) -> bool:
    """Market actions (place, cancel) need a market and at least one action; an event
    with the membership market "" carries only joins, one leave or one vote and nothing
    else, or nothing (an acknowledgement)."""
    if market == MEMBERSHIP_MARKET:
        return (all(a.__class__ is Join for a in actions)
                or (len(actions) == 1 and actions[0].__class__ in (Leave, Vote)))
    return bool(actions) and all(a.__class__ is Place or a.__class__ is Cancel
                                 for a in actions)


def sign_event(private_key: PrivateKey, origin: bytes, seq: int,
               clock: Mapping[bytes, tuple[int, bytes]], lamport: int, market: str,
               actions: tuple[Action, ...] | list[Action]) -> Event:
    """Build and sign an event. `clock` maps each origin to (seq, event id) of the
    latest of its events delivered. Programmer errors (bad arguments) are asserts."""
    actions = tuple(actions)
    assert len(actions) <= EVENT_ACTIONS_MAX, len(actions)
    assert _actions_fit_market(market, actions), (market, actions)
    assert clock.get(origin, (0, b""))[0] == seq - 1, "the clock names the origin's previous seq"
    assert all(s > 0 and len(i) == EVENT_ID_BYTES for s, i in clock.values()), clock
    body = _body(origin, seq, clock, lamport, market, actions)
    signature = private_key.sign(SIGNATURE_DOMAIN + canonical(body))
    body["g"] = signature
    raw = canonical(body)
    assert len(raw) <= EVENT_BYTES_MAX, len(raw)
    entries = sorted(clock.items())
    return Event(origin, seq, {o: s for o, (s, _) in entries}, {o: i for o, (_, i) in entries},
                 lamport, market, actions, signature, hashlib.sha256(raw).digest(), raw)


# ---------------------------------------------------------------------------
# Decoding and stateless validation

_pubkeys: OrderedDict[bytes, PublicKey] = OrderedDict()


# An origin is exactly the peer id of an Ed25519 key: identity multihash (0x00, length
# 0x24) of the protobuf PublicKey {Type: Ed25519 (08 01), Data: 32 bytes (12 20 ...)}.
ED25519_PEER_ID_PREFIX = b"\x00\x24\x08\x01\x12\x20"
ED25519_PEER_ID_BYTES = len(ED25519_PEER_ID_PREFIX) + 32


def public_key_of(origin: bytes) -> PublicKey:
    """The Ed25519 public key an origin's peer id inlines. Only that exact 38-byte form
    may originate events: other key types (secp256k1 signatures are not deterministic,
    so one content would have several ids) and other encodings of the same key (which
    would make one key several origins) are `bad_origin` (protocols/transport.md)."""
    key = _pubkeys.get(origin)
    if key is None:
        if len(origin) != ED25519_PEER_ID_BYTES or not origin.startswith(ED25519_PEER_ID_PREFIX):
            raise EventRejected("bad_origin", "an origin must be the 38-byte peer id of an "
                                "Ed25519 key")
        try:
            key = Ed25519PublicKey.from_bytes(origin[len(ED25519_PEER_ID_PREFIX):])
        except Exception as exc:  # not a valid curve point
            raise EventRejected("bad_origin", "peer id does not embed a valid key: "
                                + describe_error(exc)) from None
        if len(_pubkeys) >= PUBKEY_CACHE_MAX:
            _pubkeys.popitem(last=False)
        _pubkeys[origin] = key
    return key


def pubkey_cache_size() -> int:
    return len(_pubkeys)


def _uint(value: object, name: str, lo: int, hi: int) -> int:
    if type(value) is not int:
        raise EventRejected("bad_type", f"{name} must be an integer, got {describe(value)}")
    if not lo <= value <= hi:
        raise EventRejected("out_of_range", f"{name}={describe(value)} not in [{lo}, {hi}]")
    return value


_SIDES = tuple(Side)
_TYPES = tuple(OrderType)
_STPS = tuple(STP)


def _decode_action(wire: object, index: int) -> Action:
    if type(wire) is not list or not wire:
        raise EventRejected("bad_action", f"action {index} is not a non-empty array")
    kind = wire[0]
    if type(kind) is not int:
        raise EventRejected("bad_action", f"action {index} has kind {describe(kind)}")
    if kind == ACTION_PLACE:
        if len(wire) != 6:
            raise EventRejected("bad_action", f"place {index} needs 6 fields, has {len(wire)}")
        _, side, otype, price, qty, stp = wire
        if (type(side) is int and type(otype) is int and type(price) is int
                and type(qty) is int and type(stp) is int and 0 <= side <= 1
                and 0 <= otype < 4 and 1 <= price <= PRICE_TICKS_MAX
                and 1 <= qty <= QTY_LOTS_MAX and 0 <= stp <= 2):
            return Place(_SIDES[side], _TYPES[otype], price, qty, _STPS[stp])  # the fast path
        _uint(side, "side", 0, 1)
        _uint(otype, "order type", 0, len(OrderType) - 1)
        if otype == OrderType.MARKET:
            _uint(price, "price", 0, 0)
        else:
            _uint(price, "price", 1, PRICE_TICKS_MAX)
        _uint(qty, "qty", 1, QTY_LOTS_MAX)
        _uint(stp, "stp", 0, len(STP) - 1)
        return Place(_SIDES[side], _TYPES[otype], price, qty, _STPS[stp])
    if kind == ACTION_JOIN:
        if len(wire) != 2:
            raise EventRejected("bad_action", f"join {index} needs 2 fields, has {len(wire)}")
        member = wire[1]
        if type(member) is not bytes or not 0 < len(member) <= ORIGIN_BYTES_MAX:
            raise EventRejected("bad_action", f"join {index}: member must be peer id bytes")
        return Join(member)
    if kind == ACTION_LEAVE:
        if len(wire) != 1:
            raise EventRejected("bad_action", f"leave {index} needs 1 field, has {len(wire)}")
        return Leave()
    if kind == ACTION_VOTE:
        return _decode_vote(wire, index)
    if kind == ACTION_CANCEL:
        if len(wire) != 2:
            raise EventRejected("bad_action", f"cancel {index} needs 2 fields, has {len(wire)}")
        oid = wire[1]
        if type(oid) is not bytes or len(oid) != ORDER_ID_BYTES:
            raise EventRejected("bad_action", f"cancel {index}: order id must be "
                                f"{ORDER_ID_BYTES} bytes")
        return Cancel(oid)
    raise EventRejected("bad_action", f"action {index} has unknown kind {describe(kind)}")


def _decode_vote(wire: list, index: int) -> Vote:
    if len(wire) != 4:
        raise EventRejected("bad_action", f"vote {index} needs 4 fields, has {len(wire)}")
    _, target, rnd, members = wire
    if type(target) is not bytes or len(target) > ORIGIN_BYTES_MAX:
        raise EventRejected("bad_action", f"vote {index}: target must be peer id bytes or empty")
    _uint(rnd, "round", 0, ROUND_MAX)
    if type(members) is not list or not 3 <= len(members) <= VOTE_MEMBERS_MAX:
        raise EventRejected("bad_action", f"vote {index}: members must be a list of 3 to "
                            f"{VOTE_MEMBERS_MAX} peer ids")
    for m in members:
        if type(m) is not bytes or not 0 < len(m) <= ORIGIN_BYTES_MAX:
            raise EventRejected("bad_action", f"vote {index}: members must be peer id bytes")
    if any(a >= b for a, b in zip(members, members[1:], strict=False)):
        raise EventRejected("bad_action", f"vote {index}: members must be ascending, "
                            "without repeats")
    return Vote(target, rnd, tuple(_interned(m) for m in members))


_FIELDS = frozenset("vosclmag")
# Each field's name as canonical CBOR, in canonical order (one-letter text strings: by
# their letter); `_canonical_without_signature` joins the encoded fields in this order.
_FIELD_ORDER = sorted((canonical(k), k) for k in _FIELDS)


def _canonical_without_signature(msg: dict) -> tuple[bytes, bytes]:
    """The canonical CBOR of `msg` less its signature "g" (what is signed) and of `msg`
    whole, encoding each field once: a canonical map is its header and its encoded
    entries in key order, so both are joins of the same pieces (n < 24 entries: a
    one-byte header)."""
    pieces = [(k, name + canonical(msg[k])) for name, k in _FIELD_ORDER]
    body = b"".join(p for k, p in pieces if k != "g")
    whole = b"".join(p for _, p in pieces)
    return bytes([0xA0 + len(pieces) - 1]) + body, bytes([0xA0 + len(pieces)]) + whole


def decode_event(raw: bytes, markets: Mapping[str, object]) -> Event:
    """Decode and check one event from the wire; raises EventRejected with a reason and
    nothing else (an AssertionError, our own bug, excepted)."""
    try:
        return _decode_event(raw, markets)
    except (EventRejected, AssertionError):
        raise
    except Exception as exc:  # input the checks below did not foresee: still refused
        raise EventRejected("malformed", f"unexpected {type(exc).__name__}: "
                            + describe_error(exc)) from None


def _decode_event(raw: bytes, markets: Mapping[str, object]) -> Event:
    if not isinstance(raw, (bytes, bytearray)):
        raise EventRejected("bad_type", "event must be bytes")
    raw = bytes(raw)
    if len(raw) > EVENT_BYTES_MAX:
        raise EventRejected("oversize", f"{len(raw)} bytes > {EVENT_BYTES_MAX}")
    try:
        msg = strict_loads(raw)
    except Exception as exc:  # cbor2 raises several types on garbage
        raise EventRejected("bad_cbor", describe_error(exc)) from None
    if type(msg) is not dict:
        raise EventRejected("bad_type", "event must be a CBOR map")
    keys = set(msg)  # text or byte strings only (strict_loads)
    if keys != _FIELDS:
        missing = sorted(_FIELDS - keys)
        extra = sorted(describe(k) for k in islice(keys - _FIELDS, 4))
        raise EventRejected("bad_schema", f"missing {missing} unexpected {extra}")
    version = msg["v"]
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise EventRejected("bad_version", f"version {describe(version)}")
    origin = msg["o"]
    if type(origin) is not bytes or not 0 < len(origin) <= ORIGIN_BYTES_MAX:
        raise EventRejected("bad_origin", "origin must be peer id bytes")
    seq = _uint(msg["s"], "seq", 1, SEQ_MAX)
    lamport = _uint(msg["l"], "lamport", 1, SEQ_MAX)
    market = msg["m"]
    if type(market) is not str or len(market.encode()) > MARKET_NAME_BYTES_MAX:
        raise EventRejected("bad_type", "market must be a short text string")
    if market != MEMBERSHIP_MARKET and market not in markets:
        raise EventRejected("unknown_market", describe(market))
    clock = msg["c"]
    if type(clock) is not dict or len(clock) > CLOCK_ORIGINS_MAX:
        raise EventRejected("bad_clock", f"clock must be a map of at most {CLOCK_ORIGINS_MAX}")
    seqs: dict[bytes, int] = {}
    heads: dict[bytes, bytes] = {}
    for o, entry in clock.items():
        if type(o) is not bytes or not 0 < len(o) <= ORIGIN_BYTES_MAX:
            raise EventRejected("bad_clock", "clock keys must be peer id bytes")
        if type(entry) is not list or len(entry) != 2:
            raise EventRejected("bad_clock", "a clock entry is [seq, event id]")
        seqs[o] = _uint(entry[0], "clock entry", 1, SEQ_MAX)
        if type(entry[1]) is not bytes or len(entry[1]) != EVENT_ID_BYTES:
            raise EventRejected("bad_clock", f"a clock entry's event id is {EVENT_ID_BYTES} bytes")
        heads[o] = entry[1]
    if seqs.get(origin, 0) != seq - 1:
        raise EventRejected("bad_clock", f"clock[origin]={seqs.get(origin, 0)} but seq={seq}")
    wire_actions = msg["a"]
    if type(wire_actions) is not list or len(wire_actions) > EVENT_ACTIONS_MAX:
        raise EventRejected("bad_actions", f"actions must be at most {EVENT_ACTIONS_MAX} items")
    actions = tuple(_decode_action(a, i) for i, a in enumerate(wire_actions))
    if not _actions_fit_market(market, actions):
        raise EventRejected("bad_actions", "place and cancel need a market and at least one "
                            "action; the membership market \"\" carries joins, one leave, one "
                            "vote or nothing")
    signature = msg["g"]
    if type(signature) is not bytes or len(signature) > SIGNATURE_BYTES_MAX:
        raise EventRejected("bad_signature", "signature must be bytes")
    body_bytes, whole = _canonical_without_signature(msg)
    if whole != raw:
        raise EventRejected("non_canonical", "encoding is not canonical CBOR")
    key = public_key_of(origin)
    try:
        ok = key.verify(SIGNATURE_DOMAIN + body_bytes, signature)
    except Exception:  # malformed signature bytes
        ok = False
    if not ok:
        raise EventRejected("bad_signature", "signature does not verify for origin")
    order = sorted(seqs)
    shared = [(_interned(o), o) for o in order]
    return Event(_interned(origin), seq, {k: seqs[o] for k, o in shared},
                 {k: heads[o] for k, o in shared}, lamport, sys.intern(market), actions,
                 signature, hashlib.sha256(raw).digest(), raw)


_INTERNED: dict[bytes, bytes] = {}
INTERNED_ORIGINS_MAX = 4096  # peer ids kept as one shared object each (~0.3 MB at most)


def _interned(origin: bytes) -> bytes:
    """One shared bytes object per peer id (every event names every origin in its clock:
    some 70 bytes saved per name). Past the bound a peer id is simply not shared."""
    return intern_bounded(_INTERNED, origin, INTERNED_ORIGINS_MAX)
