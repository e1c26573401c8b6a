"""The causal buffer and the claims: events waiting for their causes, and what is known
to exist but has not arrived (replica.py, theory of operation, items 2 and "Limits").

`CausalBuffer` keeps each waiting event registered on the exact (origin, seq) it still
lacks; delivering that one wakes only its waiters, and each resumes scanning its clock
where it stopped, so releasing n events costs O(n + their clock entries). It is bounded
in accounted bytes (raw bytes plus an estimate of the decoded event), in total and per
origin; over a quota the highest seqs go first, and when the whole buffer is full the
origin using the most loses its highest seq. `Claims` keeps, for at most
`KNOWN_ORIGINS_MAX` origins, the highest seq others say exists, ordered so that the
ranges `missing()` reports cost O(what is returned). Both only read the replica's
delivered clock; neither decides anything that reaches the state.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from heapq import heapify, heappop, heappush
from itertools import islice

from sortedcontainers import SortedSet

from .events import CLOCK_ORIGINS_MAX, EVENT_ACTIONS_MAX, EVENT_BYTES_MAX, Event
from .params import BUFFER_BYTES_MAX, BUFFER_ORIGIN_BYTES_MAX

KNOWN_ORIGINS_MAX = 4096  # origins with an unresolved claim, for missing()
# What a buffered event holds beyond its raw bytes: the decoded event, its buffer
# entries, its waiter. Fitted to tracemalloc measurements (events v2: about 1,560 +
# 160 per place + 240 per clock entry, which names its event by id) with a margin;
# tests/test_replica_limits.py checks that the estimate covers the real size of
# small, large and clock-heavy events.
BUFFERED_EVENT_OVERHEAD_BYTES = 1_792
BUFFERED_ACTION_OVERHEAD_BYTES = 176
BUFFERED_CLOCK_ENTRY_OVERHEAD_BYTES = 256
BUFFERED_EVENT_BYTES_MAX = (EVENT_BYTES_MAX + BUFFERED_EVENT_OVERHEAD_BYTES
                            + EVENT_ACTIONS_MAX * BUFFERED_ACTION_OVERHEAD_BYTES
                            + CLOCK_ORIGINS_MAX * BUFFERED_CLOCK_ENTRY_OVERHEAD_BYTES)

assert BUFFER_ORIGIN_BYTES_MAX >= 16 * BUFFERED_EVENT_BYTES_MAX, "a quota holds real bursts"
assert BUFFER_ORIGIN_BYTES_MAX <= BUFFER_BYTES_MAX
assert KNOWN_ORIGINS_MAX >= 4 * CLOCK_ORIGINS_MAX, "one clock's claims fit many times"


def buffered_size(event: Event) -> int:
    """The bytes a buffered event is accounted for: raw bytes plus decoded overhead."""
    return (len(event.raw) + BUFFERED_EVENT_OVERHEAD_BYTES
            + len(event.actions) * BUFFERED_ACTION_OVERHEAD_BYTES
            + len(event.clock) * BUFFERED_CLOCK_ENTRY_OVERHEAD_BYTES)


class _Waiter:
    """A buffered event, the clock entry it waits on, and where its scan stopped."""

    __slots__ = ("dep", "event", "origins", "pos", "size")

    def __init__(self, event: Event, pos: int, dep: tuple[bytes, int]) -> None:
        self.event = event
        self.origins = tuple(event.clock)  # sorted by origin, as decode_event builds it
        self.pos = pos  # entries before it are delivered, and stay so
        self.dep = dep  # (origin, seq) it is registered on
        self.size = buffered_size(event)


class CausalBuffer:
    """Events waiting for their causes, indexed by the exact (origin, seq) each lacks,
    bounded in accounted bytes overall and per origin (see the module docstring)."""

    def __init__(self, clock: Mapping[bytes, int], bytes_max: int,
                 origin_bytes_max: int) -> None:
        assert 0 < origin_bytes_max <= bytes_max
        self._clock = clock  # the replica's delivered clock, read only
        self.bytes_max = bytes_max
        self.origin_bytes_max = origin_bytes_max
        self.waiters: dict[tuple[bytes, int], _Waiter] = {}  # (origin, seq) -> waiter
        self._waiting: dict[tuple[bytes, int], dict[tuple[bytes, int], _Waiter]] = {}
        # Max-heaps with lazy deletion (an entry is live while it matches the buffer; a
        # heap is rebuilt once it holds more than twice its live entries): O(log n) per
        # change, and only an eviction pops.
        self._seqs: dict[bytes, list[int]] = {}  # origin -> heap of -seq
        self._counts: dict[bytes, int] = {}  # origin -> its buffered events
        self._origin_bytes: dict[bytes, int] = {}
        self._usage: list[tuple[int, bytes]] = []  # heap of (-bytes, origin)
        self.bytes = 0
        self.evicted = 0  # buffered events dropped to make room for another
        self.refused = 0  # incoming events that found no room
        self.wakeups = 0  # waiters re-examined because the (origin, seq) they lacked came

    def __len__(self) -> int:
        return len(self.waiters)

    def get(self, origin: bytes, seq: int) -> Event | None:
        waiter = self.waiters.get((origin, seq))
        return waiter.event if waiter is not None else None

    def first_unmet(self, event: Event) -> tuple[int, tuple[bytes, int]] | None:
        """The first clock entry not delivered yet, as (index, (origin, seq)), or None."""
        clock = self._clock
        for index, (o, s) in enumerate(event.clock.items()):
            if clock.get(o, 0) < s:
                return index, (o, s)
        return None

    def add(self, event: Event, pos: int, dep: tuple[bytes, int]) -> bool:
        """Buffer `event`, waiting on `dep` (its clock entry number `pos`), then trim to
        the bounds; False if the event itself was trimmed."""
        waiter = _Waiter(event, pos, dep)
        key = (event.origin, event.seq)
        self.waiters[key] = waiter
        self._waiting.setdefault(dep, {})[key] = waiter
        heappush(self._seqs.setdefault(event.origin, []), -event.seq)
        self._counts[event.origin] = self._counts.get(event.origin, 0) + 1
        self._charge(event.origin, waiter.size)
        while self._origin_bytes.get(event.origin, 0) > self.origin_bytes_max:
            self._evict_highest(event.origin, key)
        while self.bytes > self.bytes_max:
            self._evict_highest(self._largest_origin(), key)
        return key in self.waiters

    def remove(self, origin: bytes, seq: int) -> None:
        """Take (origin, seq) out of the buffer."""
        key = (origin, seq)
        waiter = self.waiters[key]
        waiting = self._waiting[waiter.dep]
        del waiting[key]
        if not waiting:
            del self._waiting[waiter.dep]
        self._forget(key, waiter)

    def release(self, origin: bytes, seq: int) -> list[Event]:
        """(origin, seq) was just delivered: take out and return its waiters that lack
        nothing more, in the order they came to wait on it; the others now wait on
        their next undelivered clock entry."""
        waiting = self._waiting.pop((origin, seq), None)
        if not waiting:
            return []
        ready = []
        for key, waiter in waiting.items():
            self.wakeups += 1
            dep = self._resume(waiter)
            if dep is None:
                self._forget(key, waiter)
                ready.append(waiter.event)
            else:
                waiter.dep = dep
                self._waiting.setdefault(dep, {})[key] = waiter
        return ready

    def _resume(self, waiter: _Waiter) -> tuple[bytes, int] | None:
        """Scan the waiter's clock from where it stopped for an entry not delivered."""
        clock = self._clock
        entries = waiter.event.clock
        origins = waiter.origins
        pos = waiter.pos
        while pos < len(origins):
            o = origins[pos]
            s = entries[o]
            if clock.get(o, 0) < s:
                waiter.pos = pos
                return (o, s)
            pos += 1
        waiter.pos = pos
        return None

    def _forget(self, key: tuple[bytes, int], waiter: _Waiter) -> None:
        del self.waiters[key]
        origin = key[0]
        count = self._counts[origin] - 1
        if count:
            self._counts[origin] = count
            seqs = self._seqs[origin]
            if len(seqs) > 2 * count + 16:
                live = [s for s in seqs if (origin, -s) in self.waiters]
                heapify(live)
                self._seqs[origin] = live
        else:
            del self._counts[origin], self._seqs[origin]
        self._charge(origin, -waiter.size)

    def origin_bytes(self, origin: bytes) -> int:
        return self._origin_bytes.get(origin, 0)

    def check_invariants(self) -> None:
        """For tests: the indexes agree with the waiters and the bounds hold."""
        per_origin: dict[bytes, int] = {}
        for (origin, seq), waiter in self.waiters.items():
            assert (origin, seq) == (waiter.event.origin, waiter.event.seq)
            assert self._waiting[waiter.dep][(origin, seq)] is waiter
            o, s = waiter.dep
            assert self._clock.get(o, 0) < s == waiter.event.clock[o], waiter.dep
            assert all(self._clock.get(x, 0) >= waiter.event.clock[x]
                       for x in waiter.origins[:waiter.pos])
            assert -seq in self._seqs[origin]
            per_origin[origin] = per_origin.get(origin, 0) + waiter.size
        assert sum(map(len, self._waiting.values())) == len(self.waiters)
        assert per_origin == self._origin_bytes and sum(per_origin.values()) == self.bytes
        assert {o: sum(1 for k in self.waiters if k[0] == o) for o in per_origin} == self._counts
        assert all(b <= self.origin_bytes_max for b in per_origin.values())
        assert self.bytes <= self.bytes_max

    def usage(self) -> dict[str, int]:
        heap_entries = len(self._usage) + sum(map(len, self._seqs.values()))
        return {"buffer_events": len(self.waiters), "buffer_bytes": self.bytes,
                "buffer_heap_entries": heap_entries,
                "buffer_origins": len(self._origin_bytes), "buffer_waiting_keys":
                len(self._waiting), "buffer_evicted": self.evicted,
                "buffer_refused": self.refused, "buffer_wakeups": self.wakeups}

    def _charge(self, origin: bytes, size: int) -> None:
        new = self._origin_bytes.get(origin, 0) + size
        assert new >= 0, (origin, new, size)
        if new:
            self._origin_bytes[origin] = new
            usage = self._usage
            heappush(usage, (-new, origin))  # the entry of its old size is stale from now
            if len(usage) > 2 * len(self._origin_bytes) + 16:
                usage[:] = [(-b, o) for o, b in self._origin_bytes.items()]
                heapify(usage)
        else:
            del self._origin_bytes[origin]
        self.bytes += size

    def _largest_origin(self) -> bytes:
        """The origin using the most bytes (ties: the lowest origin bytes)."""
        usage = self._usage
        while True:
            used, origin = usage[0]
            if self._origin_bytes.get(origin) == -used:
                return origin
            heappop(usage)  # stale: that origin has shrunk or left since

    def _evict_highest(self, origin: bytes, incoming: tuple[bytes, int]) -> None:
        """Drop `origin`'s highest buffered seq: the one furthest from delivery."""
        seqs = self._seqs[origin]
        while (origin, -seqs[0]) not in self.waiters:
            heappop(seqs)  # stale: released or evicted since
        key = (origin, -seqs[0])
        self.remove(*key)
        if key == incoming:
            self.refused += 1
        else:
            self.evicted += 1


class Claims:
    """Seqs that others say exist and this replica has not delivered: for each origin
    the highest claimed. Bounded by `KNOWN_ORIGINS_MAX` origins; ordered so that
    `ranges()` costs O(what it returns): origins we have delivered from ("members"
    here) first, then the others ("strangers"), each by origin bytes."""

    def __init__(self, clock: Mapping[bytes, int], origins_max: int) -> None:
        self._clock = clock  # the replica's delivered clock, read only
        self.origins_max = origins_max
        self.highest: dict[bytes, int] = {}
        self._order = SortedSet()  # (0 member | 1 stranger, origin)
        self._strangers: OrderedDict[bytes, None] = OrderedDict()  # in arrival order

    def __len__(self) -> int:
        return len(self.highest)

    def note(self, origin: bytes, seq: int) -> None:
        if seq <= self._clock.get(origin, 0):
            return
        old = self.highest.get(origin)
        if old is not None:
            if seq > old:
                self.highest[origin] = seq
            return
        if len(self.highest) >= self.origins_max:
            if not self._strangers:
                return  # every slot holds a claim about a member: keep those
            oldest, _ = self._strangers.popitem(last=False)
            del self.highest[oldest]
            self._order.remove((1, oldest))
        self.highest[origin] = seq
        if origin in self._clock:
            self._order.add((0, origin))
        else:
            self._order.add((1, origin))
            self._strangers[origin] = None

    def settle(self, origin: bytes, seq: int) -> None:
        """(origin, seq) was delivered: drop or reclassify its claim."""
        claimed = self.highest.get(origin)
        if claimed is None:
            return
        if origin in self._strangers:
            del self._strangers[origin]
            self._order.remove((1, origin))
            self._order.add((0, origin))
        if claimed <= seq:
            del self.highest[origin]
            self._order.remove((0, origin))

    def ranges(self, limit: int) -> dict[bytes, tuple[int, int]]:
        clock = self._clock
        return {o: (clock.get(o, 0) + 1, self.highest[o])
                for _, o in islice(self._order, limit)}
