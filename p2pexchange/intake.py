"""Events in: from gossip and sync to the replica, in batches, and what follows.

Gossip readers only queue what arrives (`offer`) into one bounded inbox; one task
(`run`) takes whatever has queued up, at most `INBOX_BATCH_MAX` events and, past the
first, `INBOX_BATCH_BYTES_MAX` bytes, and hands it to the replica at once
(`Replica.receive_many`), so events that arrived out of order cost one rollback per
batch, not one each, while one batch holds the event loop for some 10 ms (a backlog of
full events once made one step last 0.2 s). A full inbox drops the
newest message and counts it (gossip is best-effort; sync brings it back). Sync hands
each answer over as one batch too. For every input the outcome is then carried out: a
rejection counted against the peer that sent it, a sync with the sender of an event that
had to wait, and what was delivered stored (with the digest after the batch), announced
to subscribers and logged. Every so many stored actions or events, what has become final
is compacted (`Replica.compact`) in steps of the event loop of their own, each settling
`COMPACT_STEP_ACTIONS` actions at most: under load one compaction in the step that stored
an event was the longest step of all (30 to 45 ms of CPU).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

import trio
from libp2p.peer.id import ID

from .core.checkpoint import decode_checkpoint
from .core.events import Event, decode_event, short_id
from .core.market import DEFAULT_MARKETS
from .core.orders import Trade
from .core.params import COMPACT_EVERY_ACTIONS, COMPACT_EVERY_EVENTS, COMPACT_STEP_ACTIONS
from .core.replica import Receipt, Replica
from .feed import Feed
from .net.host import short_peer
from .net.rejections import Rejections
from .store import EventStore

log = logging.getLogger("p2pexchange.node")

INBOX_MAX = 4096  # gossiped events waiting for the replica
INBOX_BATCH_MAX = 256  # events handed to the replica at once
# ... and bytes: about 1,200 one-order actions, some 10 ms of decoding and applying
INBOX_BATCH_BYTES_MAX = 32 * 1024
COMPACT_IDLE_S = 1.0  # how long a due compaction waits for the next arrival at most

# (raw event, or the event gossip's validator already decoded and verified; where from,
# for logs; sender)
Arrival = tuple[bytes | Event, str, ID | None]


class Intake:
    def __init__(self, replica: Replica, store: EventStore, feed: Feed,
                 rejections: Rejections, want_sync: Callable[[ID], None]) -> None:
        self.replica = replica
        self.store = store
        self.feed = feed
        self.rejections = rejections
        self.received: Counter[tuple[str, str]] = Counter()  # (gossip|sync, receipt status)
        self._want_sync = want_sync
        self._stored_since_compact = 0
        self._actions_since_compact = 0
        self._send, self._inbox = trio.open_memory_channel[Arrival](INBOX_MAX)
        self._held: Arrival | None = None  # taken from the inbox, first of the next batch
        self.compaction_due = False  # (`persist`, `compact`)

    @property
    def backlog(self) -> int:
        """Gossiped events queued for the replica."""
        return self._inbox.statistics().current_buffer_used + (self._held is not None)

    def offer(self, sender: ID, raw: bytes | Event) -> None:
        """Queue one gossiped event; never waits."""
        try:
            self._send.send_nowait((raw, "peer", sender))
        except trio.WouldBlock:
            self.received[("gossip", "dropped")] += 1

    async def run(self) -> None:
        """Batches and compaction steps, each a step of the event loop of its own: while
        compaction is due they take turns; otherwise this waits for an arrival (at most
        `COMPACT_IDLE_S`: storing our own events makes compaction due too)."""
        while True:
            if self.compaction_due:
                self.compact()
                await trio.sleep(0)
            if self._held is None:
                try:
                    if self.compaction_due:
                        self._held = self._inbox.receive_nowait()
                    else:
                        with trio.move_on_after(COMPACT_IDLE_S):
                            self._held = await self._inbox.receive()
                except trio.WouldBlock:
                    continue
                except trio.EndOfChannel:
                    return
                if self._held is None:
                    continue
            self.receive(self._batch())
            await trio.sleep(0)  # let the network tasks run between batches

    def compact(self) -> None:
        """One bounded step of compaction (`Replica.compact`, at most
        `COMPACT_STEP_ACTIONS` actions settled): due again at once if more is final."""
        self.replica.compact(COMPACT_STEP_ACTIONS)
        self.compaction_due = not self.replica.compacted

    def drain(self) -> None:
        """Hand what has queued to the replica now, one batch at most: called before our
        own next event is signed, so that it covers what has arrived (which would
        otherwise sort before it, being concurrent, and roll it back at once)."""
        batch = self._batch()
        if batch:
            self.receive(batch)

    def _batch(self) -> list[Arrival]:
        """The next batch from the inbox, held arrival first: up to `INBOX_BATCH_MAX`
        events and, past the first, `INBOX_BATCH_BYTES_MAX` bytes (the arrival that
        would exceed them is held for the next)."""
        batch: list[Arrival] = []
        size = 0
        while len(batch) < INBOX_BATCH_MAX:
            arrival, self._held = self._held, None
            if arrival is None:
                try:
                    arrival = self._inbox.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            size += _size(arrival)
            if batch and size > INBOX_BATCH_BYTES_MAX:
                self._held = arrival
                break
            batch.append(arrival)
        return batch

    def receive(self, arrivals: Sequence[Arrival]) -> list[Receipt]:
        """Hand events to the replica as one batch; carry out each outcome."""
        if self.replica.membership is None:  # no genesis yet (admission.py): not judged
            self.received[("any", "before_genesis")] += len(arrivals)
            return []
        receipts = self.replica.receive_many([raw for raw, _, _ in arrivals])
        delivered = []
        rolled_back = 0
        logging_info = log.isEnabledFor(logging.INFO)
        for k, ((_, source, sender), receipt) in enumerate(zip(arrivals, receipts,
                                                                strict=True)):
            if receipt.code == "before_snapshot" and (stored := self._forgotten(receipt)):
                receipt = receipts[k] = stored  # a seq the replica forgot, the store holds
            self.received[("sync" if source.startswith("sync") else "gossip",
                           receipt.status)] += 1
            if receipt.status == "rejected":
                self.rejections(f"event via {_where(source, sender)}", receipt.code or "?",
                                sender)
                if receipt.code == "equivocation" and receipt.event is not None:
                    self.prove(receipt.event)
            elif receipt.status == "buffered" and sender is not None:
                self._want_sync(sender)
            for event, code in receipt.dropped:  # waited here, then failed: its signer's
                self.rejections("buffered event", code, ID(event.origin))
            delivered += receipt.delivered
            rolled_back += receipt.rolled_back
            if not logging_info or source.startswith("sync"):
                continue  # sync logs one line per answer (net/sync.py), not per event or trade
            for event in receipt.delivered:
                if not event.actions:
                    continue  # an acknowledgement: nothing to tell
                log.info("order batch %s from %s applied: %d actions, seq %d%s",
                         short_id(event.id), short_peer(ID(event.origin)), len(event.actions),
                         event.seq, f" (via {_where(source, sender)})"
                         if event is receipt.event else " (unblocked)")
        if delivered:
            self.persist(delivered, rolled_back)
            self.log_trades([t for (_, source, _), r in zip(arrivals, receipts, strict=True)
                             if not source.startswith("sync") for t in r.trades], rolled_back)
        return receipts

    def _forgotten(self, receipt: Receipt) -> Receipt | None:
        """For an event refused as `before_snapshot` whose (origin, seq) the replica
        forgot (core/replica.py `_forget`) but the store holds: the verdict a replica
        that kept it gives, `duplicate`, or `equivocation` with the proof kept."""
        event = receipt.event
        stored = self.store.raws([(event.origin, event.seq)]) if event is not None else []
        if not stored:
            return None  # (below a checkpoint we started from: not held anywhere here)
        held = decode_event(stored[0], DEFAULT_MARKETS)
        if held.id == event.id:
            return Receipt("duplicate", event=event)
        self.replica.note_equivocation(held, event)
        return Receipt("rejected", "equivocation", event=event)

    def prove(self, event: Event) -> None:
        """Keep the proof that `event`, a decoded and verified second version of a seq
        this replica holds (refused by the replica, or by gossip's validator before it
        reached us), makes against its origin: with the version the replica holds
        whole, or, settled (core/settled.py: without its bytes), the stored one."""
        if (event.origin, event.seq) in self.replica.equivocations or \
                self.replica.prove_equivocation(event):
            return
        stored = self.store.raws([(event.origin, event.seq)])
        if stored:
            self.replica.note_equivocation(decode_event(stored[0], DEFAULT_MARKETS), event)

    def serve(self, clock: Mapping[bytes, int], limit: int) -> tuple[list[bytes], bool]:
        """A sync answer for a peer with `clock` (net/sync.py): at most `limit` events
        it lacks, causes first, and whether more may follow. From the replica, settled
        ones read from the store; for a peer behind what the replica still holds
        (forgotten, `Replica.behind`), from the store in delivery order."""
        if self.replica.behind(clock):
            found = self.store.history_for(clock, self.replica.clock, limit)
            if found is not None:
                return found
        events = self.store.raws(self.replica.events_for(clock, limit + 1))
        return events[:limit], len(events) > limit

    def replay_store(self) -> None:
        """At start: hand the replica every event of the store (applied again), after the
        checkpoint it started from, if it did (`start_from_store`)."""
        skip = start_from_store(self.replica, self.store)
        count = 0
        for raw in self.store.replay():
            if skip:
                skip -= 1
                continue
            count += self.replica.receive(raw).status == "delivered"
            if count % COMPACT_EVERY_EVENTS == 0:
                self.replica.compact()
        self.replica.compact()
        if count:
            log.info("replayed %d events from the store: own seq %d, digest %s", count,
                     self.replica.clock.get(self.replica.origin or b"", 0),
                     self.replica.digest_hex[:16])

    def persist(self, delivered: list, rolled_back: int) -> None:
        """Store delivered events (with the digest after them) and announce them."""
        self.store.add([(e.origin, e.seq, e.id, e.raw) for e in delivered],
                       self.replica.digest)
        self.feed.applied(delivered, rolled_back)
        # What is final and stored is kept in a compact form (core/settled.py); sync
        # reads those events' bytes from the store. In steps of its own (`run`).
        self._stored_since_compact += len(delivered)
        self._actions_since_compact += sum(len(e.actions) for e in delivered)
        if self._stored_since_compact >= COMPACT_EVERY_EVENTS or \
                self._actions_since_compact >= COMPACT_EVERY_ACTIONS:
            self._stored_since_compact = self._actions_since_compact = 0
            self.compaction_due = True

    @staticmethod
    def log_trades(trades: list[Trade], rolled_back: int = 0) -> None:
        if not log.isEnabledFor(logging.INFO):
            return  # the arguments below cost more than the lines
        if rolled_back:
            log.info("re-ordered %d later events behind late ones", rolled_back)
        for t in trades:
            market = DEFAULT_MARKETS[t.market]
            log.info("trade executed (pending) %s %s %s @ %s, maker %s taker %s", t.market,
                     market.lots_to_qty(t.qty), market.base, market.ticks_to_price(t.price),
                     short_peer(ID(t.maker_origin)), short_peer(ID(t.taker_origin)))


def _size(arrival: Arrival) -> int:
    raw = arrival[0]
    return len(raw) if type(raw) is bytes else len(raw.raw)


def _where(source: str, sender: ID | None) -> str:
    """Where an event came from, for logs: gossip arrivals name their sender only when
    a line is actually written."""
    return f"peer {short_peer(sender)}" if source == "peer" and sender is not None else source


def start_from_store(replica: Replica, store: EventStore) -> int:
    """Install the checkpoint the store's node started from (net/snapshot.py), with its
    segments, the first events stored; returns how many those are (0: the store holds the
    whole history). The store's bytes were checked when they came in; a store that no
    longer fits them raises `CheckpointRejected` or `EventRejected` (a damaged data dir:
    the node does not start on it)."""
    start = store.start()
    if start is None:
        return 0
    _, encoded, segments = start
    raws = [raw for _, raw in zip(range(segments), store.replay(), strict=False)]
    replica.install(decode_checkpoint(encoded, DEFAULT_MARKETS),
                    [decode_event(raw, DEFAULT_MARKETS) for raw in raws])
    return segments
