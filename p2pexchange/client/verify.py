"""`python -m p2pexchange verify --data-dir D`: check a node's stored log from scratch.

Reads every stored event in the order the node delivered it into a fresh replica
(`Replica.receive` decodes, checks the schema and the Ed25519 signature, and
re-derives every trade by matching again), and checks at each step that:
  - the stored id, origin and seq columns are those of the bytes (the id is their hash);
  - the event is accepted and delivered at once (the node stored it only once it was
    deliverable, so a refusal or a wait means the bytes or the order changed);
  - the replica's digest equals the digest the node recorded after that batch.
It prints a verdict, or the first event where the stored state and the replay differ
(its position, origin, seq and id). No network; the store is opened read-only.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TextIO

from libp2p.peer.id import ID

from ..core.checkpoint import CheckpointRejected
from ..core.events import EventRejected
from ..core.market import DEFAULT_MARKETS
from ..core.replica import Replica
from ..intake import start_from_store
from ..store import EventStore


class Mismatch(Exception):
    pass


def verify(data_dir: str) -> str:
    """A one-line verdict; raises Mismatch naming the first differing event."""
    path = os.path.join(data_dir, "events.sqlite3")
    if not os.path.exists(path):
        raise FileNotFoundError(f"no event store at {path}")
    store = EventStore(path, read_only=True)
    try:
        return _replay(store)
    finally:
        store.close()


def _replay(store: EventStore) -> str:
    start = store.start()
    if start is None:
        replica, segments, started = Replica(DEFAULT_MARKETS), 0, ""
    else:  # the node started from a checkpoint: install it, then replay what followed
        replica = Replica(DEFAULT_MARKETS, genesis=store.genesis())
        try:
            segments = start_from_store(replica, store)
        except (CheckpointRejected, EventRejected) as exc:
            raise Mismatch(f"the checkpoint this node started from: {exc}") from None
        started = (f"started from checkpoint {start[0]} ({segments} events of its segments "
                   f"checked against it; the history before it is not in this store), ")
    digests = store.digests()
    checked = events = 0
    for position, origin, seq, event_id, raw in store.rows():
        if position <= segments:
            continue  # (the first rows: checked by the install)
        while checked < len(digests) and digests[checked][0] < position:
            _check_digest(replica, digests[checked], f"before event #{position}")
            checked += 1
        where = f"event #{position} (origin {_peer(origin)}, seq {seq}, id {event_id.hex()})"
        receipt = replica.receive(raw)
        if receipt.status != "delivered":
            reason = receipt.code or receipt.status
            raise Mismatch(f"{where}: replay {receipt.status} it ({reason} {receipt.detail})")
        event = receipt.event
        assert event is not None
        if (event.origin, event.seq, event.id) != (origin, seq, event_id):
            raise Mismatch(f"{where}: the bytes are event {event.id.hex()[:16]}, seq "
                           f"{event.seq} of {_peer(event.origin)}")
        events += 1
        if checked < len(digests) and digests[checked][0] == position:
            _check_digest(replica, digests[checked], f"after {where}")
            checked += 1
    for row in digests[checked:]:
        _check_digest(replica, row, "at the end of the log")
    stats = replica.stats()
    old = store.old_digests()
    older = (f" ({old} digests an older build recorded with the v1 fold not compared)"
             if old else "")
    return (f"verified: {started}{events} events replayed, {events} signatures checked, "
            f"{stats['trades']} trades re-derived, {len(digests)} recorded digests "
            f"match{older}; digest {replica.digest_hex}")


def _check_digest(replica: Replica, row: tuple[int, bytes], where: str) -> None:
    position, digest = row
    if replica.digest != digest:
        raise Mismatch(f"digest differs {where}: the node recorded {digest.hex()[:16]} at "
                       f"position {position}, the replay has {replica.digest_hex[:16]}")


def _peer(origin: bytes) -> str:
    try:
        return str(ID(origin))
    except Exception:  # not a peer id at all: show the bytes
        return origin.hex()[:24]


def main(argv: list[str], file: TextIO | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m p2pexchange verify", description=__doc__)
    p.add_argument("--data-dir", default="./p2pexchange-data", metavar="DIR")
    args = p.parse_args(argv)
    out = file or sys.stdout
    try:
        print(verify(args.data_dir), file=out)
    except Mismatch as exc:
        print(f"MISMATCH: {exc}", file=out)
        return 1
    except (OSError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr if file is None else file)
        return 2
    return 0
