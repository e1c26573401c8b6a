"""SQLite event store: every accepted event, keyed by (origin, seq), in delivery order.

An event is written before it is published (our own) or right after it is delivered
(a peer's), so a node killed at any moment restarts from its store, replays it into
a fresh replica in the order it delivered the events (no buffering needed), and
continues its own seq without reuse. WAL mode; one table WITHOUT ROWID whose
primary key makes a second event for the same (origin, seq) impossible.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator

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
"""


class EventStore:
    def __init__(self, path: str) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.db = sqlite3.connect(path)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        row = self.db.execute("SELECT COALESCE(MAX(delivered), 0) FROM events").fetchone()
        self._next = row[0] + 1

    def add(self, rows: list[tuple[bytes, int, bytes, bytes]]) -> None:
        """Store (origin, seq, id, raw) rows in one transaction; known ones are kept as is."""
        if not rows:
            return
        with self.db:
            self.db.executemany(
                "INSERT OR IGNORE INTO events (origin, seq, id, delivered, raw) "
                "VALUES (?, ?, ?, ?, ?)",
                [(o, s, i, self._next + k, r) for k, (o, s, i, r) in enumerate(rows)])
        self._next += len(rows)

    def replay(self) -> Iterator[bytes]:
        for (raw,) in self.db.execute("SELECT raw FROM events ORDER BY delivered"):
            yield raw

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM events").fetchone()[0]

    def close(self) -> None:
        self.db.close()
