"""The sync protocol `/p2pexchange/sync/1.0.0`: pull what we lack from a peer.

Gossip is best-effort; this repairs every gap (protocols/sync.md). The client sends
its vector clock and a limit; the server answers with the events the clock lacks,
causes first (from the replica and the store: intake.py `serve`), in bounded chunks, and says
whether there is more; the client repeats with its updated clock, at most
`SYNC_ROUNDS_MAX` times, all within `SYNC_TIMEOUT_S`, each answer within
`SYNC_ROUND_TIMEOUT_S`. An exchange that runs out of time having delivered something is
no failure: the client pulls again at once (a late joiner's history takes several
exchanges). Messages are varint-length-prefixed CBOR (net/wire.py), read with a length
limit checked before the body is read.

Who is pulled from, among connected peers: a peer just found, one whose heartbeat
shows it ahead, the sender of an event that had to wait for a missing cause, a random
peer when the replica knows of events it lacks, and a random peer every
`ANTI_ENTROPY_INTERVAL_S` whatever the state (doubling up to `ANTI_ENTROPY_IDLE_MAX_S`
while nothing at all is delivered; heartbeats still show any peer ahead). A peer whose
stream cannot be opened or that fails mid-exchange has its connection dropped, so
discovery dials afresh (a restarted peer leaves a stale connection behind), and is not
pulled from again for a backoff that doubles with each consecutive failure
(`SYNC_BACKOFF_MAX_S`): a peer that never answers costs a round timeout now and then.

Budgets (net/budget.py): the events of an answer that are new here are charged to
their verified origin's budget (events, actions, bytes); those beyond it are dropped
(counted as `rate_limited` against that origin), the exchange ends, the peer is
not pulled from for `SYNC_RATE_PAUSE_S`, and it is asked for fewer events per round
until an answer fits the budgets again, so a member flooding valid events cannot
push them through sync any faster than gossip lets them in. A refused event is
remembered (its digest, origin and cost) so that, sent again before its origin has
the budget, it is dropped without being decoded again. Answers served are paced per
requesting peer (`SYNC_SERVED_BYTES`): a peer asking for our history again and again
waits for its answers.

Hostile input: a malformed request or response, an oversize message, or more than
`SYNC_SERVE_STREAMS_MAX` concurrent streams from one peer is a counted rejection
attributed to that peer; nothing a peer sends here can end the node's tasks.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any

import trio
from libp2p.custom_types import TProtocol
from libp2p.io.exceptions import MessageTooLarge
from libp2p.peer.id import ID
from libp2p.utils.varint import encode_varint_prefixed, read_varint_prefixed_bytes_limited

from ..core.events import Event
from ..core.params import (
    ANTI_ENTROPY_IDLE_MAX_S,
    ANTI_ENTROPY_INTERVAL_S,
    DIAL_TIMEOUT_S,
    SYNC_BACKOFF_MAX_S,
    SYNC_CHUNK_EVENTS,
    SYNC_GAP_PULL_INTERVAL_S,
    SYNC_ROUND_TIMEOUT_S,
    SYNC_ROUNDS_MAX,
    SYNC_SERVE_STREAMS_MAX,
    SYNC_TIMEOUT_S,
)
from ..core.replica import Receipt, Replica
from . import wire
from .budget import SYNC_RATE_PAUSE_S, SYNC_SERVED_BYTES, Budget, SyncBudget
from .gossip import Reject
from .host import short_peer

log = logging.getLogger("p2pexchange.node")

SYNC_PROTOCOL = TProtocol("/p2pexchange/sync/1.0.0")
# Events asked for per round from a peer whose answer exceeded a budget or came too late:
# about what an origin's budget lets in per `SYNC_RATE_PAUSE_S` in events of the usual size,
# so the answers of a peer serving a flood, or of a slow one, stay small and quick (no
# round timeout, little to decode and refuse); one within budgets: `SYNC_CHUNK_EVENTS`.
SYNC_LIMITED_CHUNK_EVENTS = 16
SMALL_CHUNK_PEERS_MAX = 1024

# One answer's events: [(raw, or decoded and verified; where from, for logs; sender)]
Receive = Callable[[list[tuple[bytes | Event, str, ID]]], list[Receipt]]


class SyncFailed(Exception):
    """The peer misbehaved in a sync exchange; `code` names how."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class Sync:
    """Server and client of the sync protocol, and the loop that decides whom to pull."""

    def __init__(self, host: Any, replica: Replica, receive: Receive, reject: Reject,
                 peers: Callable[[], set[ID]], rng: random.Random,
                 heard: Callable[[ID], None] = lambda peer: None,
                 serve: Callable[[Any, int], tuple[list[bytes], bool]] | None = None,
                 hold: Callable[[], bool] = lambda: False) -> None:
        self._hold, self._heard = hold, heard  # (start.py; an answer is a sign of life)
        self._serve = serve or (lambda clock, limit: (  # (intake.py: the store's too)
            (e := replica.events_for(clock, limit + 1))[:limit], len(e) > limit))
        self.host = host
        self.replica = replica
        self._receive = receive
        self._reject = reject
        self._peers = peers
        self._rng = rng
        self._wanted: dict[ID, None] = {}
        self._wakeup = trio.Event()
        self._serving: dict[ID, int] = {}  # peer -> streams being served now
        self._failures: dict[ID, tuple[int, float]] = {}  # peer -> (in a row, retry at)
        self._misbehaved: set[ID] = set()  # its last failure was a bad answer, not silence
        self.completed = 0  # exchanges that ended with the peer having nothing more
        self.budget = SyncBudget(replica, reject)  # what answers bring, per origin
        self._served = Budget([SYNC_SERVED_BYTES])  # answers' bytes, per requesting peer
        self._rate_limited: set[ID] = set()  # peers whose last answer exceeded a budget
        # Peers asked for `SYNC_LIMITED_CHUNK_EVENTS` per round, not `SYNC_CHUNK_EVENTS`:
        # an answer of theirs exceeded a budget since their last one within budgets.
        self._small_chunks: dict[ID, None] = {}
        host.set_stream_handler(SYNC_PROTOCOL, self.serve)

    def want(self, peer: ID) -> None:
        """Pull from `peer` soon."""
        self._wanted[peer] = None
        self._wakeup.set()

    def found(self, peer: ID) -> None:
        """A new connection to `peer`: pull from it now if it failed only by being
        unreachable (the old connection's; after a partition heals, the first pull), and
        ask it for full chunks again (its timeouts were the old connection's too). A peer
        whose last answer was bad keeps its backoff: reconnecting must not let it take
        the sync loop's time again and again."""
        if peer not in self._misbehaved:
            self._failures.pop(peer, None)
            self._small_chunks.pop(peer, None)
        self.want(peer)

    # -- server ----------------------------------------------------------------------

    async def serve(self, stream: Any) -> None:
        peer = stream.muxed_conn.peer_id
        if self._serving.get(peer, 0) >= SYNC_SERVE_STREAMS_MAX:
            self._reject("sync request", "too_many_streams", peer)
            with trio.move_on_after(1):
                await stream.reset()
            return
        self._serving[peer] = self._serving.get(peer, 0) + 1
        try:
            # A round longer than the client's own limit: a client that keeps to it ends
            # first and counts the exchange as progress, not as a failed peer.
            with trio.fail_after(SYNC_TIMEOUT_S + SYNC_ROUND_TIMEOUT_S):
                await self._answer(stream, peer)
        except SyncFailed as exc:
            self._reject("sync request", exc.code, peer)
        except Exception as exc:  # a peer that vanished or stalled mid-stream
            log.debug("serving sync to %s ended: %r", short_peer(peer), exc)
        finally:
            self._serving[peer] -= 1
            if not self._serving[peer]:
                del self._serving[peer]
            with trio.move_on_after(1):
                await stream.close()

    async def _answer(self, stream: Any, peer: ID) -> None:
        for _ in range(SYNC_ROUNDS_MAX):
            request = await _read(stream, wire.SYNC_REQUEST_BYTES_MAX, eof_ok=True)
            if request is None:
                return  # the requester is done
            try:
                clock, limit = wire.decode_sync_request(request)
            except wire.WireError as exc:
                raise SyncFailed(exc.code) from None
            events, more = self._serve(clock, limit)
            answer = wire.encode_sync_response(events, more)
            wait_s = self._served.debit(peer, (len(answer),), time.monotonic())
            if wait_s > 0:  # this peer has asked for more than its budget lately
                await trio.sleep(wait_s)
            await stream.write(encode_varint_prefixed(answer))

    # -- client ----------------------------------------------------------------------

    async def pull(self, peer: ID) -> int:
        """Pull what we lack from `peer`; returns the number of events delivered."""
        delivered = 0
        with trio.fail_after(SYNC_ROUND_TIMEOUT_S):  # a peer stalling the negotiation
            stream = await self.host.new_stream(peer, [SYNC_PROTOCOL])
        source = f"sync from {short_peer(peer)}"
        try:
            with trio.move_on_after(SYNC_TIMEOUT_S) as exchange:
                for _ in range(SYNC_ROUNDS_MAX):  # full chunks again once an answer fits
                    chunk = SYNC_LIMITED_CHUNK_EVENTS if peer in self._small_chunks else \
                        SYNC_CHUNK_EVENTS
                    await stream.write(encode_varint_prefixed(
                        wire.encode_sync_request(self.replica.clock, chunk)))
                    with trio.fail_after(SYNC_ROUND_TIMEOUT_S):
                        data = await _read(stream, wire.SYNC_RESPONSE_BYTES_MAX, eof_ok=False)
                    self._heard(peer)
                    try:
                        events, more = wire.decode_sync_response(data)
                    except wire.WireError as exc:
                        raise SyncFailed(exc.code) from None
                    admitted, refused = self.budget.within(events, time.monotonic())
                    receipts = self._receive([(e, source, peer) for e in admitted])
                    delivered += sum(len(r.delivered) for r in receipts)
                    if refused:  # asking again now would bring the same events
                        self._rate_limited.add(peer)
                        self._small_chunks[peer] = None
                        while len(self._small_chunks) > SMALL_CHUNK_PEERS_MAX:
                            del self._small_chunks[next(iter(self._small_chunks))]
                        break
                    self._small_chunks.pop(peer, None)
                    if not more or not events:
                        self.completed += 1
                        break
        finally:
            with trio.move_on_after(1):
                await stream.close()
        if exchange.cancelled_caught:
            if not delivered:
                raise trio.TooSlowError  # nothing in the whole exchange: a failure
            # A long history takes several exchanges: progress is no failure, go on.
            log.info("synced %d events from %s, more to come", delivered, short_peer(peer))
            self.want(peer)
        elif delivered:
            log.info("synced %d events from %s", delivered, short_peer(peer))
        return delivered

    async def run(self) -> None:
        last_random = last_gap_pull = time.monotonic()
        anti_entropy_s, delivered_then = ANTI_ENTROPY_INTERVAL_S, -1
        while True:
            with trio.move_on_after(0.5):
                await self._wakeup.wait()
            self._wakeup = trio.Event()
            if self.replica.membership is None or self._hold():
                continue  # no genesis yet: no event can be judged (admission.py)
            targets = list(self._wanted)
            self._wanted.clear()
            now = time.monotonic()
            peers = sorted((p for p in self._peers() if self._failures.get(p, (0, 0.0))[1] <= now),
                           key=str)
            if (not targets and peers and now - last_gap_pull >= SYNC_GAP_PULL_INTERVAL_S
                    and self.replica.missing()):
                last_gap_pull = now
                targets = [self._rng.choice(peers)]
            if now - last_random > anti_entropy_s and peers:
                last_random = now
                targets.append(self._rng.choice(peers))
                delivered = self.replica.events_delivered
                anti_entropy_s = next_anti_entropy_s(anti_entropy_s, delivered != delivered_then)
                delivered_then = delivered
            # Only connected peers (one known from a heartbeat alone may have no address),
            # and none in its backoff.
            live = set(self.host.get_connected_peers())
            for peer in dict.fromkeys(p for p in targets if p in live):
                if self._failures.get(peer, (0, 0.0))[1] <= now:
                    await self._pull_or_drop(peer)

    async def _pull_or_drop(self, peer: ID) -> None:
        try:
            await self.pull(peer)
        except Exception as exc:  # unreachable peer, timeout, bad response
            if isinstance(exc, SyncFailed):
                self._reject("sync response", exc.code, peer)
                self._misbehaved.add(peer)
            else:
                self._misbehaved.discard(peer)
                if isinstance(exc, trio.TooSlowError):  # next time, an answer it can give
                    self._small_chunks[peer] = None  # in time (sync clears it)
                    while len(self._small_chunks) > SMALL_CHUNK_PEERS_MAX:
                        del self._small_chunks[next(iter(self._small_chunks))]
            in_a_row = self._failures.get(peer, (0, 0.0))[0] + 1
            backoff_s = min(SYNC_BACKOFF_MAX_S, 0.5 * 2 ** min(in_a_row, 16))
            self._failures[peer] = (in_a_row, time.monotonic() + backoff_s)
            # A connection that cannot carry a stream is stale (the peer restarted or
            # vanished): drop it, so discovery dials afresh.
            log.info("sync from %s failed (%s): dropping the connection",
                     short_peer(peer), str(exc)[:80] or type(exc).__name__)
            with trio.move_on_after(DIAL_TIMEOUT_S):
                try:
                    await self.host.disconnect(peer)
                except Exception as drop_exc:
                    log.debug("disconnect %s: %s", short_peer(peer), drop_exc)
        else:
            self._failures.pop(peer, None)
            self._misbehaved.discard(peer)
            if peer in self._rate_limited:  # not a failure: pull from others for a while
                self._rate_limited.discard(peer)
                self._failures[peer] = (0, time.monotonic() + SYNC_RATE_PAUSE_S)


def next_anti_entropy_s(current_s: float, delivered_since: bool) -> float:
    """The pause before the next backstop pull: see the module docstring."""
    return ANTI_ENTROPY_INTERVAL_S if delivered_since else min(2 * current_s,
                                                                ANTI_ENTROPY_IDLE_MAX_S)


async def _read(stream: Any, size_max: int, eof_ok: bool) -> bytes | None:
    """One length-prefixed message; None at a clean end of stream when `eof_ok`."""
    try:
        return await read_varint_prefixed_bytes_limited(stream, size_max)
    except MessageTooLarge:
        raise SyncFailed("oversize") from None
    except Exception:
        if eof_ok:
            return None  # the stream ended (or broke) between messages
        raise
