"""SQLite event store: every accepted event, keyed by (origin, seq), in delivery order.

An event is written before it is published (our own) or right after it is delivered
(a peer's), so a node killed at any moment restarts from its store, replays it into
a fresh replica in the order it delivered the events (no buffering needed), and
continues its own seq without reuse. WAL mode; one table WITHOUT ROWID whose
primary key makes a second event for the same (origin, seq) impossible.

The table `genesis` holds the network's founding members (core/finality.py), fixed
when the node founded the network or first learned it from a peer.

With each batch the node also records its state digest after that batch, keyed by
the delivery position of the batch's last event (table `digests_v2`, added by
`CREATE TABLE IF NOT EXISTS`: older stores simply have none before the upgrade). The
name carries the digest fold (protocols/state_machine.md, section 7): a store written
by a build of the v1 fold keeps those digests in table `digests`, which nothing reads
any more (`old_digests` counts them for verify's verdict).
`python -m p2pexchange verify` replays the events and compares (client/verify.py).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Mapping

HISTORY_SCAN_ROWS = 16_384  # rows one `history_for` call reads at most (about 20 ms)

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    origin BLOB NOT NULL,
    seq INTEGER NOT NULL,
    id BLOB NOT NULL,
    delivered INTEGER NOT NULL,
    raw BLOB NOT NULL,
    PRIMARY KEY (origin, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS events_by_delivery ON events (delivered);
CREATE INDEX IF NOT EXISTS events_by_id ON events (id);
CREATE TABLE IF NOT EXISTS digests_v2 (
    delivered INTEGER PRIMARY KEY,
    digest BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS genesis (
    member BLOB PRIMARY KEY
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS start (
    n INTEGER PRIMARY KEY,
    checkpoint BLOB NOT NULL,
    segments INTEGER NOT NULL
);
"""


class EventStore:
    def __init__(self, path: str, read_only: bool = False) -> None:
        if read_only:  # for inspection (verify): never creates or changes anything
            self.db = sqlite3.connect(f"file:{os.path.abspath(path)}?mode=ro", uri=True)
        else:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self.db = sqlite3.connect(path)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
        row = self.db.execute("SELECT COALESCE(MAX(delivered), 0) FROM events").fetchone()
        self._next = row[0] + 1

    def add(self, rows: list[tuple[bytes, int, bytes, bytes]],
            digest: bytes | None = None) -> None:
        """Store (origin, seq, id, raw) rows in one transaction; known ones are kept as is.
        `digest` is the node's state digest once these rows are applied."""
        if not rows:
            return
        with self.db:
            self.db.executemany(
                "INSERT OR IGNORE INTO events (origin, seq, id, delivered, raw) "
                "VALUES (?, ?, ?, ?, ?)",
                [(o, s, i, self._next + k, r) for k, (o, s, i, r) in enumerate(rows)])
            if digest is not None:
                self.db.execute("INSERT OR REPLACE INTO digests_v2 (delivered, digest) "
                                "VALUES (?, ?)", (self._next + len(rows) - 1, digest))
        self._next += len(rows)

    def replay(self) -> Iterator[bytes]:
        for (raw,) in self.db.execute("SELECT raw FROM events ORDER BY delivered"):
            yield raw

    def rows(self) -> Iterator[tuple[int, bytes, int, bytes, bytes]]:
        """(delivered position, origin, seq, id, raw) in delivery order."""
        yield from self.db.execute(
            "SELECT delivered, origin, seq, id, raw FROM events ORDER BY delivered")

    def raws(self, items: list[bytes | tuple[bytes, int]]) -> list[bytes]:
        """`items` with each (origin, seq) replaced by that event's bytes (the replica
        names settled events so, core/settled.py); ends before the first one missing."""
        out = []
        for item in items:
            if type(item) is tuple:
                row = self.db.execute("SELECT raw FROM events WHERE origin = ? AND seq = ?",
                                      item).fetchone()
                if row is None:
                    break
                item = row[0]
            out.append(item)
        return out

    def history_for(self, theirs: Mapping[bytes, int], ours: Mapping[bytes, int],
                    limit: int) -> tuple[list[bytes], bool] | None:
        """Stored events that a peer with clock `theirs` lacks (`ours`: the delivered
        clock), at most `limit`, in our delivery order, which puts causes first, and
        whether more may follow: for a peer behind what the replica holds in memory
        (`Replica.behind`). Reads from the first event it lacks that is stored (None if
        none is: a node started from a checkpoint lacks the prefix), at most
        `HISTORY_SCAN_ROWS` rows."""
        starts = []
        for origin, seq in ours.items():
            have = theirs.get(origin, 0)
            if type(have) is int and 0 <= have < seq:
                row = self.db.execute("SELECT delivered FROM events WHERE origin = ? AND "
                                      "seq = ?", (origin, have + 1)).fetchone()
                if row is not None:
                    starts.append(row[0])
        if not starts:
            return None
        wanted: list[tuple[bytes, int]] = []
        # (origin, seq) only: the delivery index covers them, the bytes are read only
        # for the events sent
        rows = self.db.execute("SELECT origin, seq FROM events WHERE delivered >= ? "
                               "ORDER BY delivered LIMIT ?", (min(starts), HISTORY_SCAN_ROWS))
        read = 0
        for origin, seq in rows:
            read += 1
            have = theirs.get(origin, 0)
            if type(have) is not int or seq > have:
                if len(wanted) == limit:
                    return self.raws(wanted), True
                wanted.append((origin, seq))
        return self.raws(wanted), read == HISTORY_SCAN_ROWS

    def raw_of(self, event_id: bytes) -> bytes | None:
        """The bytes of the event with id `event_id`, if stored (for what the replica
        no longer holds in memory: core/replica.py `_forget`)."""
        row = self.db.execute("SELECT raw FROM events WHERE id = ?", (event_id,)).fetchone()
        return row[0] if row is not None else None

    def digests(self) -> list[tuple[int, bytes]]:
        """(delivered position, digest after it), in order; [] for an older store."""
        if not self._has_table("digests_v2"):
            return []
        return list(self.db.execute("SELECT delivered, digest FROM digests_v2 "
                                    "ORDER BY delivered"))

    def old_digests(self) -> int:
        """How many digests a build of the v1 fold recorded (never compared: another
        fold gives other digests for the same events)."""
        if not self._has_table("digests"):
            return 0
        return self.db.execute("SELECT COUNT(*) FROM digests").fetchone()[0]

    def _has_table(self, name: str) -> bool:
        found = self.db.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (name,))
        return found.fetchone() is not None

    def genesis(self) -> list[bytes]:
        """The network's founding members, as adopted once; [] if not known yet."""
        if not self._has_table("genesis"):
            return []
        return [m for (m,) in self.db.execute("SELECT member FROM genesis ORDER BY member")]

    def set_genesis(self, members: list[bytes]) -> None:
        assert members and not self.genesis(), "the genesis is adopted once"
        with self.db:
            self.db.executemany("INSERT INTO genesis (member) VALUES (?)",
                                [(m,) for m in members])

    def start(self) -> tuple[int, bytes, int] | None:
        """The checkpoint this node started from instead of the history (n and S_N), and
        how many of the first stored events are its segments; None for a node that holds
        the whole history."""
        if not self._has_table("start"):
            return None
        row = self.db.execute("SELECT n, checkpoint, segments FROM start").fetchone()
        return None if row is None else (row[0], row[1], row[2])

    def set_start(self, n: int, checkpoint: bytes,
                  rows: list[tuple[bytes, int, bytes, bytes]]) -> None:
        """Record that this node starts from checkpoint `n` (S_N bytes) with `rows`, the
        segments' events (origin, seq, id, raw), stored first, in one transaction."""
        assert not self.count() and self.start() is None, "a node starts once"
        with self.db:
            self.db.execute("INSERT INTO start (n, checkpoint, segments) VALUES (?, ?, ?)",
                            (n, checkpoint, len(rows)))
            self.db.executemany(
                "INSERT INTO events (origin, seq, id, delivered, raw) VALUES (?, ?, ?, ?, ?)",
                [(o, s, i, self._next + k, r) for k, (o, s, i, r) in enumerate(rows)])
        self._next += len(rows)

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM events").fetchone()[0]

    def close(self) -> None:
        self.db.close()
