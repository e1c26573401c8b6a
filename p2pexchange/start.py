"""How a newcomer starts: from a checkpoint its members attest, or from the whole history.

A node started with `--bootstrap` on an empty data dir learns the genesis from a
heartbeat (admission.py), then waits up to `SNAPSHOT_WAIT_S` for more than half of the
members it knows to attest one checkpoint in their heartbeats (net/control.py
`attested_checkpoint`). It then fetches that checkpoint and its segments from one of
them (net/snapshot.py; the next one if that fails), installs them (`Replica.install`)
and stores them as the start of its history (`EventStore.set_start`), so that a restart
installs them again (intake.py `start_from_store`). Sync waits meanwhile (`holding`),
and then brings what follows the checkpoint. Without such attestations (a network
younger than one checkpoint, too few members heard, removal votes in the prefix, every
attester failing) it replays the whole history through sync, as before.

Trust: one honest member among the attesters is enough for S_N to be the state after
the final prefix (every honest member computes the same S_N: core/checkpoint.py); so
this trusts an honest majority of the members the newcomer knows, which before it holds
anything is its genesis (itself learned from the bootstrap peer, admission.py). A
network whose genesis members have mostly left gives no quorum: full replay. The
segments are checked against S_N by their ids, and must reach what the latest events
and joins name; how much further down events still to come name is the server's word
(protocols/sync.md): a server that cuts that short leaves the newcomer refusing such
events as `before_snapshot` (its status shows them), a limit not closed yet.
"""

from __future__ import annotations

import logging
from typing import Any

import trio
from libp2p.peer.id import ID

from .core.checkpoint import CheckpointRejected
from .core.market import DEFAULT_MARKETS
from .core.params import SNAPSHOT_WAIT_S
from .core.replica import Replica
from .net.control import Control
from .net.host import short_peer
from .net.rejections import Rejections
from .net.snapshot import SnapshotFailed, Snapshots
from .store import EventStore

log = logging.getLogger("p2pexchange.node")


class Start:
    def __init__(self, host: Any, replica: Replica, store: EventStore, control: Control,
                 rejections: Rejections, wanted: bool, wait_s: float = SNAPSHOT_WAIT_S) -> None:
        self.replica = replica
        self.store = store
        self.control = control
        self.snapshots = Snapshots(host, replica, rejections, store.raws, DEFAULT_MARKETS)
        self._reject = rejections
        self._connected = host.get_connected_peers
        self._wait_s = wait_s
        self.decided = trio.Event()
        if not wanted:
            self.decided.set()
        # "checkpoint N" or "history" once decided (a restart: what the store says)
        stored = store.start()
        self.outcome = "" if wanted else "history" if stored is None else \
            f"checkpoint {stored[0]}"

    def holding(self) -> bool:
        """Whether sync should wait: the start is not decided yet."""
        return not self.decided.is_set()

    async def run(self) -> None:
        try:
            if not self.decided.is_set():
                await self._start()
        finally:
            self.decided.set()

    async def _start(self) -> None:
        while self.replica.membership is None:  # learning the genesis
            await trio.sleep(0.1)
        deadline = trio.current_time() + self._wait_s
        tried: set[tuple[int, ID]] = set()
        while trio.current_time() < deadline:
            choice = self.control.attested_checkpoint()
            if choice is not None and choice[0] == 0:  # a young network
                self.outcome = "history"
                log.info("starting from the whole history: more than half of the members "
                         "attest no checkpoint yet")
                return
            if choice is not None:
                n, digest, attesters = choice
                # Any peer holding it may serve it (the hash is what is attested): the
                # attesters first, then the others we are connected to.
                connected = list(self._connected())
                for peer in [p for p in attesters if p in connected] + \
                        [p for p in connected if p not in attesters]:
                    if (n, peer) not in tried:
                        tried.add((n, peer))
                        if await self._try(peer, n, digest):
                            return
            await trio.sleep(0.2)
        self.outcome = "history"
        log.info("starting from the whole history: no checkpoint that more than half of "
                 "the members attest could be installed within %.0f s", self._wait_s)

    async def _try(self, peer: ID, n: int, digest: bytes) -> bool:
        started = trio.current_time()
        try:
            snapshot, events = await self.snapshots.fetch(peer, n, digest)
            self.replica.install(snapshot, events)
        except SnapshotFailed as exc:
            if exc.code != "not_served":  # (moved on to a later checkpoint: no fault)
                self._reject("snapshot response", exc.code, peer)
            log.info("checkpoint %d from %s failed: %s", n, short_peer(peer), exc)
            return False
        except CheckpointRejected as exc:
            if self.replica.events_delivered or self.replica.stats()["events_buffered"]:
                log.info("not starting from checkpoint %d: events came in meanwhile", n)
                self.outcome = "history"  # (no fault of the peer)
                return True
            self._reject("snapshot response", "bad_segments", peer)
            log.info("checkpoint %d from %s refused: %s", n, short_peer(peer), exc)
            return False
        except Exception as exc:  # the peer vanished or stalled
            log.info("checkpoint %d from %s: %r", n, short_peer(peer), exc)
            return False
        self.store.set_start(n, snapshot.encoded,
                             [(e.origin, e.seq, e.id, e.raw) for e in events])
        self.outcome = f"checkpoint {n}"
        log.info("started from checkpoint %d (%s) served by %s in %.2f s: %d events of "
                 "segments, digest %s", n, digest.hex()[:16], short_peer(peer),
                 trio.current_time() - started, len(events), snapshot.digest.hex()[:16])
        return True
