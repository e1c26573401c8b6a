"""Control messages: heartbeats, finality, and trade reports with the divergence alarm.

Every `HEARTBEAT_INTERVAL_MS` (every `HEARTBEAT_IDLE_S` while it delivers nothing) the
node publishes its vector clock, Lamport time, digest, event count, the network's
genesis and its latest checkpoint (core/checkpoint.py) on the control topic
(protocols/heartbeat.md). A peer's heartbeat is a hint only: one that shows the peer
ahead asks sync to pull from it, and a newcomer learns the genesis from it
(admission.py). Finality is the replica's, from delivered events alone
(core/finality.py). Each heartbeat carries the trade reports of the node's own taker
events that became final since the last one; after it the node compares the reports of
others with what it computed itself (net/reports.py); a mismatch is logged as
`DIVERGENCE`. So is a member's attested checkpoint whose
hash differs from ours for the same n (`compare_checkpoints`): the same final events
left the two states different.
"""

from __future__ import annotations

import logging
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable

import trio
from libp2p.peer.id import ID

from ..core.commit import Finality
from ..core.events import Event
from ..core.params import (
    HEARTBEAT_IDLE_S,
    HEARTBEAT_INTERVAL_MS,
)
from ..core.replica import Replica
from . import wire
from .gossip import CONTROL_TOPIC, PROOFS_TOPIC, Gossip, Reject
from .host import short_peer
from .reports import TradeReports

log = logging.getLogger("p2pexchange.node")


PEER_VIEWS_MAX = 1024  # peers whose view of our history is kept (the latest heard)
PEER_VIEW_FRESH_S = 5.0  # a view older than this is a silent peer's: not waited for
SEALED_TIMES_MAX = 10_000  # own events whose signing time is kept

class Control:
    """Heartbeats out and in, finality as the node reports it, trade reports (net/reports.py)."""

    def __init__(self, gossip: Gossip, replica: Replica, origin: bytes, reject: Reject,
                 want_sync: Callable[[ID], None],
                 on_genesis: Callable[[ID, tuple[bytes, ...]], None],
                 heard: Callable[[bytes], None] = lambda peer: None) -> None:
        self.gossip = gossip
        self.replica = replica
        self.origin = origin
        self.reports = TradeReports(replica, origin, reject)  # net/reports.py
        self.checkpoint_divergences = 0  # (trade reports' own: self.reports.divergences)
        # peer -> (the highest seq of ours its last heartbeat said it had, when received)
        self._views_of_mine: dict[bytes, tuple[int, float]] = {}
        self._announced = (-1, 0.0)  # (events delivered, when) at our last heartbeat
        self._eager_until = 0.0  # heartbeats every tick until then (announce_soon)
        self._broken_logged = 0
        self._sealed_at: deque[tuple[int, float]] = deque(maxlen=SEALED_TIMES_MAX)
        self._final_logged = 0
        self._reject = reject
        self._want_sync = want_sync
        self._on_genesis = on_genesis
        self._heard = heard  # a peer is alive (removal votes wait for silence)
        self._proofs_sent: set[tuple[bytes, int]] = set()  # proofs published or received
        # member -> the latest checkpoint (n, H_N) its heartbeats attested, and whether we
        # compared it with ours (the divergence alarm: core/checkpoint.py)
        self.attested: dict[bytes, tuple[int, bytes, bool]] = {}
        self.checkpoints_matched = 0

    @property
    def divergences(self) -> int:
        """Divergence alarms: trade reports and attested checkpoints that differ from ours."""
        return self.checkpoint_divergences + self.reports.divergences

    # -- in ------------------------------------------------------------------------

    def on_heartbeat(self, sender: ID, hb: wire.Heartbeat) -> None:
        self._on_genesis(sender, hb.genesis)
        code = self.replica.on_heartbeat(sender.to_bytes(), hb.clock)
        if code is not None:
            self._reject("heartbeat", code, sender)
            return
        self._heard(sender.to_bytes())
        for report in hb.reports:
            self.reports.on_report(sender, report)
        mine = self.replica.clock
        if any(s > mine.get(o, 0) for o, s in hb.clock.items()):
            self._want_sync(sender)
        if not self.replica.is_member(sender.to_bytes()):
            return  # a newcomer catching up is no sign that the network lags behind us
        views = self._views_of_mine
        views.pop(sender.to_bytes(), None)  # most recent last
        views[sender.to_bytes()] = (hb.clock.get(self.origin, 0), time.monotonic())
        while len(views) > PEER_VIEWS_MAX:
            del views[next(iter(views))]
        # (0, b""): it attests no checkpoint yet (a young network: a newcomer need not
        # wait for one, start.py)
        n, digest = hb.checkpoint if hb.checkpoint is not None else (0, b"")
        if n or sender.to_bytes() not in self.attested:
            known = self.attested.get(sender.to_bytes())
            if known is None or known[:2] != (n, digest):
                self.attested.pop(sender.to_bytes(), None)  # most recent last
                self.attested[sender.to_bytes()] = (n, digest, False)
                self.compare_checkpoints()

    def compare_checkpoints(self) -> None:
        """Compare each member's latest attested checkpoint with ours of the same n, once
        we hold it: a different hash means the member's state after the same final
        events differs from ours (a divergence alarm, like a trade report's)."""
        mine = self.replica.checkpoints
        for peer, (n, digest, compared) in list(self.attested.items()):
            if compared or n not in mine:
                continue
            self.attested[peer] = (n, digest, True)
            if mine[n] == digest:
                self.checkpoints_matched += 1
            else:
                self.checkpoint_divergences += 1
                log.error("DIVERGENCE: member %s attests checkpoint %d as %s, we computed %s",
                          short_peer(ID(peer)), n, digest.hex()[:16], mine[n].hex()[:16])

    def attesting(self) -> int:
        """Members (still members) whose latest attested checkpoint is ours (same n and
        hash)."""
        checkpoint = self.replica.checkpoint
        if checkpoint is None:
            return 0
        return sum(1 for peer, (n, digest, _) in self.attested.items()
                   if n == checkpoint.n and digest == checkpoint.hash
                   and self.replica.is_member(peer))

    def attested_checkpoint(self) -> tuple[int, bytes, list[ID]] | None:
        """The highest checkpoint (n, H_N) that more than half of the members attest as
        their latest, with those members (most recent attestation first); n = 0 if more
        than half attest none yet; None while neither holds, or while a member attests
        another hash for the same n (a divergence: the newcomer then replays the
        history): what a newcomer may start from (start.py). One honest member among
        them is enough for S_N to be the state after the final prefix up to n, so this
        trusts an honest majority of the members the newcomer knows (its genesis, before
        it holds anything)."""
        members = set(self.replica.members())
        votes: dict[tuple[int, bytes], list[bytes]] = {}
        for peer, (n, digest, _) in self.attested.items():
            if peer in members:
                votes.setdefault((n, digest), []).append(peer)
        quorum = len(members) // 2 + 1
        best = max((k for k, v in votes.items() if len(v) >= quorum), default=None)
        if best is None or any(n == best[0] and digest != best[1] for n, digest in votes):
            return None
        return best[0], best[1], [ID(p) for p in reversed(votes[best])]

    def on_proof(self, sender: ID, proof: tuple[Event, Event]) -> None:
        """A peer's proof of equivocation (both events verified by the decoder): kept,
        so this node too votes the equivocator out (admission.py)."""
        first, second = proof
        self._proofs_sent.add((first.origin, first.seq))  # gossip forwards it already
        if self.replica.note_equivocation(first, second):
            log.warning("proof of equivocation from %s: %s signed two versions of seq %d",
                        short_peer(sender), short_peer(ID(first.origin)), first.seq)

    def view_of_mine(self, peer: bytes) -> int:
        """Our highest seq that member `peer`'s latest heartbeat says it has delivered
        (0 if we heard none): a hint, for when a leaving node may stop (admission.py)."""
        return self._views_of_mine.get(peer, (0, 0.0))[0]

    def sealed(self, seq: int) -> None:
        """Note when we signed our event `seq` (for `peers_behind_s`)."""
        self._sealed_at.append((seq, time.monotonic()))

    def peers_behind_s(self) -> float:
        """How long ago we signed the oldest of our events that some peer heard from in
        the last `PEER_VIEW_FRESH_S` had not delivered by its last heartbeat: how far
        the network lags behind what this node publishes (backpressure; 0 if none)."""
        now = time.monotonic()
        views = [seq for seq, at in self._views_of_mine.values() if now - at < PEER_VIEW_FRESH_S]
        if not views or not self._sealed_at:
            return 0.0
        oldest_unseen = min(views) + 1
        sealed = self._sealed_at
        i = bisect_left(sealed, (oldest_unseen, 0.0))
        return now - sealed[i][1] if i < len(sealed) else 0.0

    # -- finality --------------------------------------------------------------------

    def finality(self) -> Finality:
        """What is final now, and whom finality waits for (core/finality.py)."""
        return self.replica.finality()

    # -- out -------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            try:
                await self.heartbeat()
            except Exception:  # a failed publish must not stop heartbeats for good
                log.exception("heartbeat failed")
            await trio.sleep(HEARTBEAT_INTERVAL_MS / 1000)

    def announce_soon(self) -> None:
        """A peer connected: heartbeat every tick for a while even if nothing changed, so
        a newcomer learns our genesis (and that we are ahead) within a second or two once
        gossip knows its subscription, not a `HEARTBEAT_IDLE_S` later."""
        self._eager_until = time.monotonic() + 2 * HEARTBEAT_IDLE_S

    async def heartbeat(self) -> None:
        """Publish our clock and digest (while nothing changes, only every
        `HEARTBEAT_IDLE_S`: a quiet network costs little); then act on what has become
        final."""
        replica = self.replica
        delivered = replica.stats()["events_delivered"]
        now = time.monotonic()
        if (delivered == self._announced[0] and now - self._announced[1] < HEARTBEAT_IDLE_S
                and now >= self._eager_until):
            return
        self._announced = (delivered, now)
        genesis = replica.membership.genesis if replica.membership is not None else ()
        if replica.membership is not None:
            replica.take_checkpoints()
        checkpoint = replica.checkpoint
        hb = wire.Heartbeat(replica.clock, replica.lamport, replica.digest,
                            replica.stats()["events_delivered"], tuple(sorted(genesis)),
                            None if checkpoint is None else (checkpoint.n, checkpoint.hash),
                            self.reports.own())
        await self.gossip.publish(CONTROL_TOPIC, wire.encode_heartbeat(hb))
        await self._publish_proofs()
        finality = self.finality()
        if replica.ledger.broken > self._broken_logged:  # core/ledger.py `broken`
            self._broken_logged = replica.ledger.broken
            log.critical("FINALITY BROKEN (%d): %s; more members misbehaved than the commit "
                         "rule tolerates (protocols/finality.md)", replica.ledger.broken,
                         replica.ledger.broken_detail)
        self.reports.check()
        self.compare_checkpoints()
        if finality.final_trades > self._final_logged:
            log.info("trades final: %d (+%d), pending: %d", finality.final_trades,
                     finality.final_trades - self._final_logged, finality.pending_trades)
            self._final_logged = finality.final_trades

    async def _publish_proofs(self) -> None:
        """Publish each proof of equivocation this node found itself, once."""
        for key, (first, second) in list(self.replica.equivocations.items()):
            if key not in self._proofs_sent:
                self._proofs_sent.add(key)
                await self.gossip.publish(PROOFS_TOPIC, wire.encode_proof(first, second))
