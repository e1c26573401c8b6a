"""`python -m p2pexchange verify`: a demo's stored logs replay to what the nodes recorded;
a changed byte in a stored event, or a changed recorded digest, is named."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import pytest
from libp2p.peer.id import ID

pytestmark = pytest.mark.network


def verify(data_dir) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "p2pexchange", "verify", "--data-dir",
                           str(data_dir)], capture_output=True, text=True, timeout=60)


def copied_store(root, name: str, tmp_path) -> sqlite3.Connection:
    """A consistent copy of node `name`'s store under `tmp_path / name`, opened."""
    copy = tmp_path / name
    copy.mkdir()
    db = sqlite3.connect(root / name / "events.sqlite3")
    db.execute("VACUUM INTO ?", (str(copy / "events.sqlite3"),))
    db.close()
    return sqlite3.connect(copy / "events.sqlite3")


@pytest.fixture(scope="module")
def demo_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    result = subprocess.run([sys.executable, "-m", "p2pexchange", "demo", "--nodes", "2",
                             "--duration", "4", "--rate", "20", "--data-dir", str(root)],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout[-2000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["converged"] and summary["events"] > 0
    return root, summary


def test_verify_passes_on_a_demos_data_dirs(demo_dirs):
    root, summary = demo_dirs
    for name in ("node0", "node1"):
        result = verify(root / name)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.startswith(f"verified: {summary['events']} events replayed")
        assert result.stdout.strip().endswith(f"digest {summary['digests'][0]}")


def test_verify_names_the_event_whose_stored_bytes_changed(demo_dirs, tmp_path):
    root, _ = demo_dirs
    copy = tmp_path / "node1"
    db = copied_store(root, "node1", tmp_path)
    rows = db.execute("SELECT delivered, origin, seq, id, raw FROM events ORDER BY delivered"
                      ).fetchall()
    position, origin, seq, event_id, raw = rows[len(rows) // 2]
    changed = bytearray(raw)
    changed[len(changed) // 2] ^= 0x01
    with db:
        db.execute("UPDATE events SET raw = ? WHERE origin = ? AND seq = ?",
                   (bytes(changed), origin, seq))
    db.close()
    result = verify(copy)
    assert result.returncode == 1
    assert result.stdout.startswith(
        f"MISMATCH: event #{position} (origin {ID(origin)}, seq {seq}, id {event_id.hex()})")


def test_verify_reports_a_recorded_digest_the_replay_does_not_reach(demo_dirs, tmp_path):
    root, _ = demo_dirs
    copy = tmp_path / "node0"
    db = copied_store(root, "node0", tmp_path)
    (position,) = db.execute("SELECT MAX(delivered) FROM digests_v2").fetchone()
    with db:
        db.execute("UPDATE digests_v2 SET digest = ? WHERE delivered = ?",
                   (b"\0" * 32, position))
    db.close()
    result = verify(copy)
    assert result.returncode == 1 and result.stdout.startswith("MISMATCH: digest differs")
    assert f"position {position}" in result.stdout


def test_verify_leaves_an_older_builds_v1_digests_aside_and_says_so(demo_dirs, tmp_path):
    """A store written by a build of the v1 digest fold holds its digests in table
    `digests`; they are of another fold, so verify does not compare them (a v1 digest
    never equals a v2 one) and says how many it left aside."""
    root, summary = demo_dirs
    copy = tmp_path / "node0"
    db = copied_store(root, "node0", tmp_path)
    with db:
        db.execute("ALTER TABLE digests_v2 RENAME TO digests")
        db.execute("UPDATE digests SET digest = ?", (b"\1" * 32,))  # not v2 digests
    (old,) = db.execute("SELECT COUNT(*) FROM digests").fetchone()
    db.close()
    result = verify(copy)
    assert result.returncode == 0, result.stdout + result.stderr
    assert old > 0 and f"0 recorded digests match ({old} digests an older build" in result.stdout
    assert result.stdout.strip().endswith(f"digest {summary['digests'][0]}")
