"""A replica's start from a checkpoint instead of the history (docs/snapshot_design.md,
step 4; protocols/sync.md, "Snapshot protocol"): installing a checkpoint and the chain
segments a member serves with it (`install`), and, on the serving side, which segments
those are (`snapshot_segments`, `segment_events`); and a member's move onto its own
checkpoint's segments, dropping what lies below them (`_forget`, docs/snapshot_design.md
step 5), with `behind` for the peers that then need the store.

`Install` is a part of `Replica` (core/replica.py), kept apart because it is one concern:
it fills an empty replica's chains, clock, ledger, membership and frontier floor from a
checkpoint, and reads a serving replica's chains and membership. It changes nothing on
a refused offer (`CheckpointRejected`).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .checkpoint import Checkpoint, CheckpointRejected, Snapshot
from .events import Event, Join, Leave, Vote
from .settled import Chain, Settled, forget_chain

if TYPE_CHECKING:
    from .buffer import CausalBuffer
    from .clock import OrderKey
    from .finality import Membership, PrefixMembership
    from .ledger import Ledger


class Install:
    """Starting from a checkpoint, as one replica does it; see the module docstring."""

    membership: Membership | None
    ledger: Ledger
    _events: dict[bytes, Chain]
    _by_id: dict[bytes, Any]
    _clock: dict[bytes, int]
    _settled: dict[bytes, int]
    _lamport: int
    _buffer: CausalBuffer
    _stats: dict[str, int]
    _final_floor: OrderKey | None
    _final_seen: OrderKey | None
    _final_at: tuple[int, OrderKey | None]
    checkpoint: Checkpoint | None
    checkpoints: dict[int, bytes]
    _forgot: dict[bytes, int]

    if TYPE_CHECKING:  # the replica's own (core/commit.py)
        def prefix_state(self, key: OrderKey) -> tuple[PrefixMembership,
                                                       tuple[tuple[bytes, int, bytes], ...]]: ...

    def install(self, snapshot: Snapshot, events: Sequence[Event]) -> None:
        """Start from a checkpoint instead of the history (docs/snapshot_design.md, step
        4): the books, digest and membership of `snapshot` (decoded and checked,
        core/checkpoint.py; the caller judged its hash, as f + 1 members attest it), and
        `events`, decoded and verified prefix events: for each origin a segment of its
        chain ending at the latest event the checkpoint names, linked by predecessor ids
        down from that id, reaching as far down as the events still to come may name
        (`snapshot_segments` on the serving replica). Everything up to the checkpoint's
        key is final here from now on; the events after it come through sync as usual.

        Raises `CheckpointRejected`, changing nothing, if this replica is not empty or
        has no genesis, if the checkpoint is another network's or records a removal (its
        votes are not carried: replay the history instead), or if `events` are not such
        segments: every origin the checkpoint names present, each segment contiguous and
        ending at the named id, every event within the prefix and without removal votes,
        each leave it records and a join of each member that never spoke among them."""
        membership = self.membership
        if membership is None or self._stats["events_delivered"] or len(self._buffer) \
                or self.ledger.floor is not None:
            raise CheckpointRejected("only an empty replica with a genesis starts from one")
        prefix = snapshot.membership
        genesis = tuple(sorted(membership.genesis))
        if prefix.effective[:len(genesis)] != genesis:
            raise CheckpointRejected("another network's genesis")
        if prefix.removed:
            raise CheckpointRejected("it records a removal, whose votes it does not carry")
        latest = {o: (s, i) for o, s, i in snapshot.latest}
        chains: dict[bytes, list[Event]] = {}
        for event in events:
            if type(event) is not Event or event.key > snapshot.key:
                raise CheckpointRejected("an event that is not in the prefix")
            if any(a.__class__ is Vote for a in event.actions):
                raise CheckpointRejected("a removal vote in the prefix")
            chains.setdefault(event.origin, []).append(event)
        if set(chains) != set(latest):
            raise CheckpointRejected("the segments are not the checkpoint's origins")
        for origin, got in chains.items():
            got.sort(key=lambda e: e.seq)
            seq, top = latest[origin]
            if got[-1].seq != seq or got[-1].id != top:
                raise CheckpointRejected(f"{origin.hex()[-8:]}: not the latest event named")
            for below, above in itertools.pairwise(got):
                if above.seq != below.seq + 1 or above.heads.get(origin) != below.id:
                    raise CheckpointRejected(f"{origin.hex()[-8:]}: a broken segment")
        for member, seq in prefix.left:
            top = chains[member][-1] if member in chains else None
            if top is None or top.seq != seq or not top.actions \
                    or top.actions[0].__class__ is not Leave:
                raise CheckpointRejected(f"{member.hex()[-8:]}: its leave is missing")
        joins = [e for e in events if e.actions and e.actions[0].__class__ is Join]
        joined = {a.member for e in joins for a in e.actions}
        if any(m not in latest and m not in joined for m in prefix.effective[len(genesis):]):
            raise CheckpointRejected("a member that never spoke comes without its join")
        # What the segments must reach down to, as far as these events show it: every
        # cause the latest events name, and the joins of members without an event in
        # the prefix (their first events are judged against them); the server also
        # names what the events past them name, which only it holds (protocols/sync.md).
        # A join of a member that spoke may lie in a segment by chance: its causes are
        # not needed, and the server does not send them.
        silent = [e for e in joins if any(a.member in prefix.effective and a.member not in
                                          latest for a in e.actions)]
        for event in [got[-1] for got in chains.values()] + silent:
            for o, s in event.clock.items():
                if o in chains and s < chains[o][0].seq:
                    raise CheckpointRejected(f"{o.hex()[-8:]}: its segment does not reach "
                                             f"seq {s}, which a latest event or a join names")
        self.ledger.restore(snapshot.n, snapshot.key, snapshot.digest, snapshot.books)
        for origin, got in chains.items():
            chain = self._events[origin] = Chain(got, base=got[0].seq - 1)
            self._settled[origin] = chain.base
            self._clock[origin] = got[-1].seq
            for event in got:
                self._by_id[event.id] = event
        self._lamport = snapshot.key[0]
        self._stats["events_delivered"] = len(events)
        membership.restore(prefix, events)
        self._final_floor = self._final_seen = snapshot.key
        self._final_at = (-1, None)
        self.checkpoint = Checkpoint(snapshot.n, snapshot.key, snapshot.hash, snapshot.encoded)
        self.checkpoints = {snapshot.n: snapshot.hash}

    def snapshot_segments(self) -> tuple[Checkpoint, dict[bytes, tuple[int, int]]] | str:
        """What a newcomer needs to start from our latest checkpoint (`install`): the
        checkpoint, and per origin it names the seqs (first, last) of the segment of its
        chain to send, the last being the latest event the checkpoint names. Or why we
        cannot serve one (a string).

        A segment reaches as far down as any event still to come may name
        (docs/snapshot_design.md, "What a newcomer must judge"): a member's next event
        names at least every origin's latest final event (F1), so what can name less is
        already here or a newcomer's first event. The segments therefore cover what is
        named by every event we hold past the latest ones the checkpoint names, by
        those latest ones, and by the joins of members without an event in the prefix
        (with those joins: their first events are judged against them). Costs the
        events past the checkpoint times their clocks."""
        checkpoint, membership = self.checkpoint, self.membership
        if checkpoint is None or membership is None:
            return "no checkpoint yet"
        key = checkpoint.key
        removals = membership.removals
        if removals.decided or any(v.key <= key for said in removals.rounds.values()
                                   for v in said.values()):
            return "removal votes in the prefix (not carried by a checkpoint)"
        latest = {o: s for o, s, _ in self.prefix_state(key)[1]}
        low = dict(latest)
        events = self._events

        def name(clock: Mapping[bytes, int]) -> None:
            for o, s in clock.items():
                if 0 < s < low.get(o, 0):
                    low[o] = s

        for o, chain in events.items():
            for event in chain[max(latest.get(o, 1) - 1, chain.base):]:
                name(event.clock)
        for m in membership.effective:
            if m in latest:
                continue  # (one without an event in the prefix: its first is judged later)
            for sponsor, seq, _ in membership.joins_of(m):
                if seq <= latest.get(sponsor, 0):
                    name({sponsor: seq})
                    name(events[sponsor][seq - 1].clock)
        for o, s in low.items():
            if s <= events[o].base:
                return f"{o.hex()[-8:]}: events below our own checkpoint's segments are named"
        return checkpoint, {o: (low[o], latest[o]) for o in sorted(latest)}

    def segment_events(self, segments: Mapping[bytes, tuple[int, int]]
                       ) -> list[bytes | tuple[bytes, int]]:
        """The events of `segments` (`snapshot_segments`), in origin and seq order: raw
        bytes, or `(origin, seq)` for a settled one, for the caller to read from its
        store (as `events_for`)."""
        out: list[bytes | tuple[bytes, int]] = []
        for origin, (first, last) in segments.items():
            chain = self._events[origin]
            for seq in range(first, last + 1):
                event = chain[seq - 1]
                out.append((origin, seq) if type(event) is Settled else event.raw)
        return out

    def _forget(self, key: OrderKey) -> None:
        """Drop from memory what the checkpoint at `key` covers, as far as it is settled
        (docs/snapshot_design.md, step 5): the ledger's entries (ids, records, trades),
        the id index of settled events, and each origin's events below the segment a
        newcomer would be sent with this checkpoint (`snapshot_segments`: no event still
        to come can name one; the chain's `base` moves up to it, as after `install`).
        The books, the digest and every verdict stay as they were; queries by id no
        longer know those events (`event`, `outcomes_of`, `trades_of`), and sync serves
        the peers behind a chain's base from the store (`behind`)."""
        served = self.snapshot_segments()
        segments = served[1] if type(served) is tuple else {}
        for origin, chain in self._events.items():
            start = self._forgot.get(origin, chain.base)
            self._forgot[origin] = forget_chain(
                chain, start, self._settled.get(origin, 0), key, self._by_id,
                segments[origin][0] - 1 if origin in segments else 0)
        self.ledger.forget(self.ledger.count_upto(key))

    def behind(self, their_clock: Mapping[bytes, int]) -> bool:
        """Whether a peer with `their_clock` lacks events below some chain's `base`
        (forgotten here, or before the checkpoint we started from): `events_for` cannot
        give them, the store may."""
        try:
            return any(chain.base and type(h := their_clock.get(o, 0)) is int
                       and h < chain.base for o, chain in self._events.items())
        except Exception:  # an odd mapping from a peer
            return False
