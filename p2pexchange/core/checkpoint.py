"""Checkpoints: the state after some final events that act, hashed.

Which ones: the `CHECKPOINT_EVERY`-th event that acts since the previous checkpoint, or
sooner the first that brings their actions to `CHECKPOINT_ACTIONS` (core/params.py,
protocols/heartbeat.md "Checkpoints"; the ledger marks them as it applies them).

Theory of operation (docs/snapshot_design.md, step 2). Once the N-th event that acts is
final, everything the state after it depends on is final too, so every replica that
holds it final computes the same state S_N:
- N, the event's key, and the digest D_N after it;
- the books as they stood after it: each resting order in priority order, in full;
- the membership and each origin's latest event, as the final prefix up to that key
  decides them (`Replica.prefix_state`).

S_N is encoded in canonical CBOR (integers and bytes only) and H_N is its SHA-256. A
replica takes its checkpoints when it compacts, before anything past them is settled:
the ledger captured the books' levels, encoded, when it applied the N-th (before any
later entry changed them; `Ledger._append`), and a level that did not change since the
previous checkpoint keeps its encoding (`OrderBook.encoded_levels`), so a checkpoint
costs a pass over the price levels and the encoding of those that changed, not one
over every resting order.

H_N is what members attest in their heartbeats (the divergence alarm), and S_N what a
newcomer installs instead of replaying the history once more than half of the members
it knows attest it (`decode_checkpoint` here, `Replica.install`; protocols/sync.md,
"Snapshot protocol"). Every honest replica must compute the same H_N for the same N
(the simulation checks it on every step, restarts included).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from .cbor import canonical, head, strict_loads
from .clock import OrderKey
from .events import ORIGIN_BYTES_MAX, SEQ_MAX, STP, OrderType, Side
from .finality import PrefixMembership

CHECKPOINT_VERSION = 1
CHECKPOINT_DEPTH = 7  # S_N nests map -> books -> market -> side -> level -> orders -> order


@dataclass(frozen=True)
class Checkpoint:
    n: int  # the state after the n-th final event that acts
    key: OrderKey  # that event's key
    hash: bytes  # H_N: SHA-256 of `encoded`
    encoded: bytes  # S_N in canonical CBOR


def make_checkpoint(n: int, key: OrderKey, digest: bytes,
                    books: Mapping[str, list[list[bytes]]], membership: PrefixMembership,
                    latest: tuple[tuple[bytes, int, bytes], ...]) -> Checkpoint:
    """S_N and H_N from their parts: per market `OrderBook.encoded_levels` (each level
    already in canonical CBOR), and `Replica.prefix_state`. The bytes are those of
    `canonical` over the whole map (tests/test_checkpoint.py rebuilds them with cbor2):
    the books' levels are put in place, not encoded again."""
    fields = {
        "v": canonical(CHECKPOINT_VERSION), "n": canonical(n), "k": canonical(list(key)),
        "d": canonical(digest), "b": _encoded_books(books),
        "m": canonical([list(membership.effective), list(membership.refused),
                        [list(x) for x in membership.left],
                        [list(x) for x in membership.removed]]),
        "o": canonical([list(x) for x in latest]),
    }
    encoded = _encoded_map(fields)
    return Checkpoint(n, key, hashlib.sha256(encoded).digest(), encoded)


def _encoded_map(fields: Mapping[str, bytes]) -> bytes:
    """A canonical CBOR map of text keys to already encoded values: keys in canonical
    order (shorter encoding first, then bytewise, as cbor2's `canonical=True`)."""
    keys = sorted((canonical(k) for k in fields), key=lambda k: (len(k), k))
    values = {canonical(k): v for k, v in fields.items()}
    return b"".join([head(5, len(fields))] + [k + values[k] for k in keys])


def _encoded_books(books: Mapping[str, list[list[bytes]]]) -> bytes:
    """`{market: [bids, asks]}` from each side's encoded levels."""
    return _encoded_map({market: b"".join([head(4, 2)] + [
        head(4, len(side)) + b"".join(side) for side in sides])
        for market, sides in books.items()})


class CheckpointRejected(Exception):
    """Bytes that are not a checkpoint this replica can start from; `str()` says why."""


@dataclass(frozen=True)
class Snapshot:
    """A checkpoint's S_N decoded and checked (`decode_checkpoint`)."""

    n: int
    key: OrderKey
    digest: bytes
    books: dict[str, list]  # market -> its `OrderBook.state()`
    membership: PrefixMembership
    latest: tuple[tuple[bytes, int, bytes], ...]  # (origin, seq, id), origins ascending
    hash: bytes
    encoded: bytes


_RESTING_TYPES = (OrderType.LIMIT, OrderType.POST_ONLY)


def decode_checkpoint(encoded: bytes, markets: Mapping[str, object]) -> Snapshot:
    """S_N from its bytes, every field checked (types, ranges, order and the book's
    shape: prices strictly better first, distinct order ids, `remaining` within `qty`,
    only limit and post-only orders resting), for `markets` exactly. Raises
    `CheckpointRejected` with the reason, never anything else."""
    try:
        return _decode(encoded, markets)
    except CheckpointRejected:
        raise
    except Exception as exc:  # what the checks did not foresee: refused all the same
        raise CheckpointRejected(f"malformed: {type(exc).__name__}") from None


def _check(ok: bool, why: str) -> None:
    if not ok:
        raise CheckpointRejected(why)


def _int(value: object, lo: int, hi: int = SEQ_MAX) -> bool:
    return type(value) is int and lo <= value <= hi


def _origin(value: object) -> bool:
    return type(value) is bytes and 0 < len(value) <= ORIGIN_BYTES_MAX


def _decode(encoded: bytes, markets: Mapping[str, object]) -> Snapshot:
    _check(type(encoded) is bytes, "not bytes")
    s = strict_loads(encoded, CHECKPOINT_DEPTH)
    _check(canonical(s) == encoded, "not in canonical CBOR (or bytes after it)")
    _check(type(s) is dict and set(s) == {"v", "n", "k", "d", "b", "m", "o"}, "not a checkpoint")
    _check(s["v"] == CHECKPOINT_VERSION and type(s["v"]) is int, f"version {s['v']!r}")
    n, key, digest = s["n"], s["k"], s["d"]
    _check(_int(n, 1), "n")
    _check(type(key) is list and len(key) == 4 and _int(key[0], 1) and _int(key[1], 0, 2)
           and _origin(key[2]) and _int(key[3], 1), "k")
    _check(type(digest) is bytes and len(digest) == 32, "d")
    books = s["b"]
    _check(type(books) is dict and set(books) == set(markets), "b: not this network's markets")
    ids: set[bytes] = set()
    for market, state in books.items():
        _check(type(state) is list and len(state) == 2, f"b[{market}]")
        for side, levels in enumerate(state):
            _check(type(levels) is list, f"b[{market}]")
            last = None
            for level in levels:
                _check(type(level) is list and len(level) == 2 and _int(level[0], 1)
                       and type(level[1]) is list and level[1], f"b[{market}]: a level")
                price = level[0]
                _check(last is None or (price < last if side == 0 else price > last),
                       f"b[{market}]: levels out of order")
                last = price
                for order in level[1]:
                    _check(type(order) is list and len(order) == 7, f"b[{market}]: an order")
                    oid, origin, oside, otype, qty, remaining, stp = order
                    _check(type(oid) is bytes and len(oid) == 34 and oid not in ids
                           and _origin(origin) and oside == int(Side(oside)) == side
                           and otype in _RESTING_TYPES and type(otype) is int
                           and _int(qty, 1) and _int(remaining, 1, qty)
                           and type(stp) is int and stp == int(STP(stp)),
                           f"b[{market}]: an order")
                    ids.add(oid)
    m = s["m"]
    _check(type(m) is list and len(m) == 4 and all(type(x) is list for x in m), "m")
    effective, refused, left, removed = m
    _check(all(_origin(x) for x in effective + refused) and effective
           and len(set(effective + refused)) == len(effective) + len(refused), "m: members")
    for pairs in (left, removed):
        _check(all(type(x) is list and len(x) == 2 and x[0] in effective and _int(x[1], 1)
                   for x in pairs), "m: leaves and removals")
    latest = s["o"]
    _check(type(latest) is list and all(
        type(x) is list and len(x) == 3 and _origin(x[0]) and _int(x[1], 1)
        and type(x[2]) is bytes and len(x[2]) == 32 for x in latest), "o")
    _check([x[0] for x in latest] == sorted({x[0] for x in latest}), "o: origins not ascending")
    membership = PrefixMembership(tuple(effective), tuple(refused),
                                  tuple((a, b) for a, b in left),
                                  tuple((a, b) for a, b in removed))
    return Snapshot(n, (key[0], key[1], key[2], key[3]), digest, books, membership,
                    tuple((a, b, c) for a, b, c in latest), hashlib.sha256(encoded).digest(),
                    encoded)
