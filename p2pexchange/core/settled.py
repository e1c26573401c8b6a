"""Settled events: what a replica keeps of a final event once it compacts its history.

Theory of operation. A delivered event is read for three things: its actions (applied
by the ledger, judged at delivery), its raw bytes (stored, gossiped, served by sync)
and its place in the causal graph (origin, seq, Lamport time, key, clock, id: the
delivery checks of later events and the commit rule read these). Once an event is
final none of the first two is read again by the replica: nothing with actions sorts
before it any more (protocols/finality.md), so the ledger never applies it again, and
the node's store holds its bytes. `Replica.compact` therefore replaces each final
event in its chains by its causal part alone, packed in a plain tuple (`pack`) and read
back as a `Settled`: a fifth of the memory, and nothing the collector keeps scanning
(its full passes then grow with the open orders, not with the history). The ledger
settles the same entries (ledger.py `settle`: each kept as the record its queries read,
its trades as bytes, `packed_trade`), and the books forget their undo records and the orders
that left them (undo.py `settle`).

What stays whole: a membership event with actions (joins, leaves and removal votes
are few, and membership and removal code keep them anyway), and every event that is
not final. Settled events answer every query the graph needs, so every verdict, the
frontier and the digest are the same with or without compaction (tests/test_compaction.py
feeds compacted and whole replicas the same events in many orders). What a settled
event cannot give, its bytes, the replica reports as a reference `(origin, seq)` for
the caller to read from its store (`Replica.events_for`).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .clock import OrderKey, last_within
from .events import MEMBERSHIP_MARKET, Place, Side, intern_bounded, order_id
from .orders import Trade

if TYPE_CHECKING:
    from .events import Event


_ORIGIN_SETS: dict[tuple[bytes, ...], tuple[bytes, ...]] = {}
ORIGIN_SETS_MAX = 4096  # distinct clock origin sets shared by settled events
_MARKETS: dict[str, str] = {}
MARKETS_MAX = 256  # distinct market names shared by settled events
_ID, _LAMPORT, _RANK, _SEQ, _CLOCK = 0, 32, 40, 41, 49  # offsets in a packed blob


def pack(event: Event) -> tuple:
    """What a chain keeps of a settled event: a plain tuple of its causal part (clock
    origins as one shared tuple, market and origin shared strings and bytes) and one
    bytes object with the rest: id (32 bytes), Lamport time (8), rank (1), seq (8) and
    the clock's seqs (8 each), about 200 bytes for a clock of 5. Every item is a
    string, bytes or a tuple of them, so the collector stops scanning it after its
    first pass: what compaction keeps does not lengthen the collector's passes as
    history grows."""
    lamport, rank, origin, seq = event.key
    blob = b"".join((event.id, lamport.to_bytes(8, "big"), rank.to_bytes(1, "big"),
                     seq.to_bytes(8, "big"),
                     *(s.to_bytes(8, "big") for s in event.clock.values())))
    return (intern_bounded(_ORIGIN_SETS, tuple(event.clock), ORIGIN_SETS_MAX), blob,
            intern_bounded(_MARKETS, event.market, MARKETS_MAX), origin)


def packed_id(packed: tuple) -> bytes:
    """The id of a packed event (`pack`)."""
    return packed[1][:_LAMPORT]


class Settled:
    """A final event without its actions, signature or bytes, as read from its packed
    form (`pack`): `Event`'s other fields (its origin, seq and Lamport time are read from
    its key; its clock is unpacked when read, which is rare: the rule and delivery read
    the latest events, which stay whole). Made when read, short-lived."""

    __slots__ = ("_blob", "_origins", "key", "market")

    def __init__(self, packed: tuple) -> None:
        self._origins, blob, self.market, origin = packed
        self._blob = blob
        self.key = (int.from_bytes(blob[_LAMPORT:_RANK], "big"), blob[_RANK], origin,
                    int.from_bytes(blob[_SEQ:_CLOCK], "big"))

    @property
    def id(self) -> bytes:
        return self._blob[:_LAMPORT]

    @property
    def lamport(self) -> int:
        return self.key[0]

    @property
    def origin(self) -> bytes:
        return self.key[2]

    @property
    def seq(self) -> int:
        return self.key[3]

    @property
    def clock(self) -> Mapping[bytes, int]:
        blob = self._blob
        return {o: int.from_bytes(blob[_CLOCK + 8 * i:_CLOCK + 8 * i + 8], "big")
                for i, o in enumerate(self._origins)}

    def order_id(self, index: int) -> bytes:
        return order_id(self.id, index)

    def __repr__(self) -> str:
        return f"Settled({self.origin[-4:].hex()}, {self.seq}, lamport={self.lamport})"


class BeforeSnapshot(LookupError):
    """A read of an event below a chain's `base`: a replica started from a checkpoint
    (`Replica.install`) holds no event of the prefix below the segments it was given."""


# What a chain holds for each seq below its `base`: one shared object, 8 bytes a seq.
ABSENT = ("absent",)


class Chain(list):
    """An origin's delivered events by seq - 1: whole `Event`s, and the settled ones
    packed (`pack`), read as `Settled` (by index, slice or iteration alike). Each read
    of a settled one makes a new `Settled`, so compare events by id, never by identity,
    and read a chain's tail by index (`Replica.last_events`), not by slicing it whole.

    A replica started from a checkpoint holds an origin's chain only from a seq on:
    `base` is how many seqs below it it lacks (0 otherwise), each held as `ABSENT`;
    reading one raises `BeforeSnapshot`, and searches along a chain start at `base`."""

    __slots__ = ("base",)

    def __init__(self, events=(), base: int = 0) -> None:
        list.__init__(self, [ABSENT] * base if base else ())
        self.extend(events)
        self.base = base

    def __getitem__(self, index):  # type: ignore[override]
        item = list.__getitem__(self, index)
        if type(index) is slice:
            return [_read(e) if type(e) is tuple else e for e in item]
        if type(item) is tuple:  # (the usual settled read makes no extra call)
            return Settled(item) if item is not ABSENT else _read(item)
        return item

    def __iter__(self):  # type: ignore[override]
        for item in list.__iter__(self):
            yield _read(item) if type(item) is tuple else item

    def __reversed__(self):  # type: ignore[override]
        for item in list.__reversed__(self):
            yield _read(item) if type(item) is tuple else item


def _read(item: tuple) -> Settled:
    if item is ABSENT:
        raise BeforeSnapshot("an event below the checkpoint this replica started from")
    return Settled(item)


def keeps_whole(event: Event) -> bool:
    """Whether compaction keeps `event` whole: a membership event with actions."""
    return event.market == MEMBERSHIP_MARKET and bool(event.actions)


def settle_chain(chain: Chain, start: int, frontier: OrderKey,
                 by_id: dict[bytes, Any]) -> int:
    """Settle `chain[start:]` up to its last event with a key at most `frontier` (keys
    grow along a chain), the chain's latest event excepted (its origin's head stays
    whole), in `chain` and in `by_id` (event id -> event, or its packed form); returns
    where the next call starts."""
    lo = last_within(chain, start, max(start, len(chain) - 1), frontier)
    for i in range(start, lo):
        event = list.__getitem__(chain, i)
        if type(event) is not tuple and not keeps_whole(event):
            packed = pack(event)
            list.__setitem__(chain, i, packed)
            by_id[event.id] = packed
    return lo


def forget_chain(chain: Chain, start: int, end: int, key: OrderKey,
                 by_id: dict[bytes, Any], base: int) -> int:
    """Drop from `by_id` the settled events of `chain[start:end]` (end: where settling
    stopped) with a key at most `key`, and from the chain itself those below index
    `base` (which becomes its `base`: what no later event can name, `_forget`); returns
    where the next call starts."""
    stop = last_within(chain, start, end, key) if end > start else start
    base = min(base, stop)
    for i in range(start, stop):
        item = list.__getitem__(chain, i)
        if type(item) is tuple and item is not ABSENT:
            by_id.pop(packed_id(item), None)
    for i in range(chain.base, base):
        list.__setitem__(chain, i, ABSENT)
    chain.base = max(chain.base, base)
    return stop


# -- the ledger's settled entries (ledger.py `settle`) ------------------------------

_SHARED_RECORDS: dict[tuple, tuple] = {}
SHARED_RECORDS_MAX = 4096  # distinct records of settled entries without trades kept once
# A settled entry is kept as (outcomes, first, count, acts, void, market, origin, places):
# what queries read of it (its trades are `_settled_trades[first:first + count]`), and
# who placed an order once the book has forgot it, for the API (`places`: a bit per
# action index that placed an order; a cancel's outcome never reads it, state_machine.md
# §4). Every item is a string, bytes,
# a number or a tuple of strings, so the collector stops scanning the record.
R_OUTCOMES, R_FIRST, R_COUNT, R_ACTS, R_VOID, R_MARKET, R_ORIGIN, R_PLACES = range(8)


def settled_record(entry: Any, first: int) -> tuple:
    """What is kept of a settled entry. One object per distinct record without trades
    (most events have one action, so a handful of records cover nearly all of them;
    past the bound, a tuple of its own): such an entry costs its id's place in the
    index and in the order, nothing else."""
    event = entry.event
    assert event is not None
    places = 0
    if entry.acts and event.market != MEMBERSHIP_MARKET:
        for index, action in enumerate(event.actions):
            if action.__class__ is Place:
                places |= 1 << index
    count = len(entry.trades)
    record = (tuple(entry.outcomes), first if count else 0, count, entry.acts, entry.void,
              event.market, event.origin, places)
    if count:
        return record
    return intern_bounded(_SHARED_RECORDS, record, SHARED_RECORDS_MAX)


# A settled trade is kept as one bytes object (`_TRADE`): maker order, taker order,
# price, qty, side, and the numbers `_NAMES` gives its two origins and its market. Its
# event id is its taker order's first 32 bytes (the order ids of an event's places,
# ledger.py `_apply`). 91 bytes in one object where a plain tuple held nine items, two
# order ids and a price object: about 128 bytes a trade against about 300, and under
# load settled trades were most of what a node holds until a checkpoint lets it forget
# them. A trade these rules do not fit (a name past `NAMES_MAX`, an id of another
# length) is kept as a plain tuple, its side as an int.
_TRADE = struct.Struct(">34s34sQQBHHH")
_NAMES: list = []  # origins (bytes) and market names (str), in the order first seen
_NUMBERS: dict = {}
NAMES_MAX = 65_535
_SIDES = {int(side): side for side in Side}


def _number(name: bytes | str) -> int | None:
    number = _NUMBERS.get(name)
    if number is None and len(_NAMES) < NAMES_MAX:
        number = _NUMBERS[name] = len(_NAMES)
        _NAMES.append(name)
    return number


def packed_trade(trade: Trade) -> bytes | tuple:
    """A settled trade as bytes, or a plain tuple (see `_TRADE`): either way an object
    the collector does not scan, unlike a `Trade` (its `Side` member is one it tracks)."""
    market, event_id, maker, taker, maker_origin, taker_origin, price, qty, side = trade
    numbers = (_number(maker_origin), _number(taker_origin), _number(market))
    if (len(maker) == len(taker) == 34 and taker[:32] == event_id and None not in numbers
            and price < 1 << 64 and qty < 1 << 64):
        return _TRADE.pack(maker, taker, price, qty, side, *numbers)
    return (*trade[:-1], int(side))


def unpacked_trades(packed: list[bytes | tuple]) -> list[Trade]:
    """Settled trades as `Trade`s again."""
    names, sides, unpack = _NAMES, _SIDES, _TRADE.unpack
    trades = []
    for item in packed:
        if type(item) is bytes:
            maker, taker, price, qty, side, maker_origin, taker_origin, market = unpack(item)
            trades.append(Trade(names[market], taker[:32], maker, taker, names[maker_origin],
                                names[taker_origin], price, qty, sides[side]))
        else:
            m, e, mo, to, mg, tg, p, q, s = item
            trades.append(Trade(m, e, mo, to, mg, tg, p, q, sides[s]))
    return trades
