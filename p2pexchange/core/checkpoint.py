"""Checkpoints: the state after every `CHECKPOINT_EVERY`-th final event that acts, hashed.

Theory of operation (docs/snapshot_design.md, step 2). Once the N-th event that acts is
final, everything the state after it depends on is final too, so every replica that
holds it final computes the same state S_N:
- N, the event's key, and the digest D_N after it;
- the books as they stood after it: each resting order in priority order, in full;
- the membership and each origin's latest event, as the final prefix up to that key
  decides them (`Replica.prefix_state`).

S_N is encoded in canonical CBOR (integers and bytes only) and H_N is its SHA-256. A
replica takes its checkpoints when it compacts, before anything past them is settled:
the ledger undoes the entries after the N-th, captures the books, and applies them again
(as a rollback does; `Ledger.capture_at`), so that costs what a rollback of the
non-final tail costs, plus one pass over the resting orders, once per
`CHECKPOINT_EVERY` events that act.

H_N is what members will attest in their heartbeats, and S_N what a newcomer will
install instead of replaying the history (steps 2 and 3 of the design; not built yet).
Today the checkpoints are a check: every honest replica must compute the same H_N for
the same N (the simulation checks it on every step, restarts included).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from .cbor import canonical
from .clock import OrderKey
from .finality import PrefixMembership

CHECKPOINT_VERSION = 1


@dataclass(frozen=True)
class Checkpoint:
    n: int  # the state after the n-th final event that acts
    key: OrderKey  # that event's key
    hash: bytes  # H_N: SHA-256 of `encoded`
    encoded: bytes  # S_N in canonical CBOR


def make_checkpoint(n: int, key: OrderKey, digest: bytes, books: Mapping[str, list],
                    membership: PrefixMembership,
                    latest: tuple[tuple[bytes, int, bytes], ...]) -> Checkpoint:
    """S_N and H_N from their parts (`OrderBook.state` per market, `Replica.prefix_state`)."""
    encoded = canonical({
        "v": CHECKPOINT_VERSION, "n": n, "k": list(key), "d": digest,
        "b": dict(books),
        "m": [list(membership.effective), list(membership.refused),
              [list(x) for x in membership.left], [list(x) for x in membership.removed]],
        "o": [list(x) for x in latest],
    })
    return Checkpoint(n, key, hashlib.sha256(encoded).digest(), encoded)
