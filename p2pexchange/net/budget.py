"""Budgets: a fair rate per peer and per origin for everything peers push at us.

Theory of operation. Gossip is push: a peer decides how much we receive, decode, verify,
apply and forward. A member may sign valid events as fast as its CPU allows; without a
limit every honest node spends its own CPU on that flood and forwards it. So every
pushed message is charged, before it is accepted, to token buckets (`Rate`: refill per
second, burst) kept per key (`Budget`), in several units at once (messages, bytes,
actions); a message that some unit cannot pay for is refused with the reject code
`rate_limited` at the topic validator: it is not forwarded, is counted against the
peer whose budget it exceeded (net/rejections.py, whose log lines are limited), and
costs nothing more. A refused event is not lost: causal delivery waits for it and
sync pulls it later, at the puller's own pace, charged to the same kind of budget.

Who is charged (net/gossip.py, net/sync.py):
- the *forwarding peer* (the libp2p peer that passed the message to us), per topic
  class, in messages and bytes, before anything is decoded: this bounds what one
  connection can make us decode, whatever keys it signs with;
- the *publisher* (the pubsub `from`, authenticated by strict signing), per topic class,
  in messages and bytes, before decoding. On event topics the publisher must be the
  event's origin (else `not_origin`), so this is the origin's budget;
- the event's *origin*, in actions, after decoding (one event carries up to 500
  actions; bytes alone would let small actions through cheaply);
- events brought by a sync answer that are new here, to their (verified) origin in
  events, actions and bytes (`SyncBudget`): what gossip refused cannot
  come back faster through sync; an answer that exceeds it ends the exchange and pauses
  pulls from that peer (`SYNC_RATE_PAUSE_S`), so re-sent events cost little;
- sync answers served, per requesting peer, in bytes: a peer asking for our history
  again and again is paced (answers wait), not refused.

The numbers. Target load (README, bench_cluster): 10,000 orders/s over 5 nodes, i.e.
about 2,000 actions/s per origin, signed as one event per market per
`BATCH_INTERVAL_S` (0.15 s) of up to `BATCH_ACTIONS_MAX` (500) actions, measured at
about 17 bytes per action (a 500-action event is 5-9 KB; cancels are larger, ~40 B);
a heartbeat per node per second, carrying the node's trade reports (up to 128, one per
own final taker event: `OWN_TRADE_REPORTS_SCAN`, 256, looked at per heartbeat); join
requests every `JOIN_RETRY_S` (3 s). This implementation sends no trade report alone
any more; the trades topic still takes them (protocols/trade_report.md), so its budgets
stay at what the same reports would cost sent one by one.
Every budget is at least twice what an honest node sends at that load (the rate of
actions, which is what a flood costs others, exactly twice; the rest 4x and more), and
every burst holds an honest node's largest single flush (`PENDING_ACTIONS_MAX` = 10,000
actions queued while busy, flushed at once as 20+ events):

| budget                          | rate /s  | burst    | honest at target load        |
|---------------------------------|----------|----------|------------------------------|
| origin: actions                 | 4,000    | 10,000   | ~2,000/s; flush <= 10,000    |
| origin (publisher): events      | 100      | 200      | ~20/s (2 markets + acks)     |
| origin (publisher): event bytes | 512 KiB  | 1 MiB    | ~35-80 KiB/s                 |
| publisher: heartbeats           | 10, 64 KiB | 20, 128 KiB | 1/s, <= 32 KiB with reports |
| publisher: join requests        | 2, 4 KiB | 10, 8 KiB | 1 per 3 s, <= 256 B each   |
| publisher: trade reports        | 100, 64 KiB | 512, 128 KiB | none (were <= 14/s)  |
| forwarder: event messages, bytes| 2,000, 8 MiB | 4,000, 16 MiB | the whole network's events |
| forwarder: heartbeats           | 500, 2 MiB | 1,000, 4 MiB | 64 members x 1/s      |
| forwarder: join requests        | 100, 32 KiB | 200, 64 KiB | newcomers' retries  |
| forwarder: trade reports        | 2,000, 1 MiB | 4,000, 2 MiB | all members' reports |
| publisher: proofs               | 2, 256 KiB | 10, 1 MiB | one per equivocation seen |
| forwarder: proofs               | 20, 4 MiB | 100, 8 MiB | every member's proofs   |
| sync, origin: actions           | 4,000    | 20,000   | history at 2x its making     |
| sync, origin: events            | 1,000    | 5,000    | ~20/s made; 1-action events  |
| sync, origin: bytes             | 1 MiB    | 4 MiB    | ~35-80 KiB/s made            |
| sync served, per requester      | 4 MiB    | 16 MiB   | gaps; a late joiner's history|

Sync's budget of an origin keeps gossip's action rate (that is what bounds the harm)
with a larger burst, so a node back from a partition or a late joiner catches up on
ten seconds of an origin's history at once and on the rest twice as fast as it was
made (events the node already holds cost nothing, and each origin has its own); its
event and byte rates are far higher than gossip's, as a history made of small events
(one order each) must not take longer to catch up on than its actions allow.

The origin's action rate is also what bounds the harm, and why it is not higher: an
origin at its budget adds at most 4,000 actions/s to every node's work, never the
flood's rate; the budget of an origin is kept separately by gossip and by sync, so an
origin that floods both ways gets at most twice it, 8,000 actions/s, about 4/5 of the
whole target load. A flood's actions cost more than their number: its events are
concurrent with honest ones, so each late honest event rolls the flood's events back
and applies them again. Measured (tests/test_flood.py, three honest nodes in one
process): with 8,000 actions/s per path honest throughput fell to 40% during a flood;
with 4,000 it stayed at 99%; without budgets, 40%. An honest origin above twice the
per-origin target for longer than its burst (uneven load across nodes) is limited too:
its events then arrive by sync, a little later.

Known limits. A peer's message still costs us its transport decryption and py-libp2p's
pubsub signature check before our validator sees it (no hook runs earlier). A key
kept per table is forgotten once `KEYS_MAX` others are newer, which resets its bucket:
fresh publisher keys are cheap, which is why the forwarding peer is charged too.
Several colluding members flooding at once can make an honest relay exceed its
forwarding budget at the next hop: that drop is repaired by sync like any other.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from libp2p.peer.id import ID

from ..core.events import Event, EventRejected, decode_event

RATE_LIMITED = "rate_limited"  # the reject code of a message beyond a peer's budget
KEYS_MAX = 1024  # keys (peers, origins) whose buckets a table keeps, most recent last
REFUSED_KEPT_MAX = 4096  # events refused for their origin's sync budget, remembered
KiB = 1024
MiB = 1024 * KiB


@dataclass(frozen=True)
class Rate:
    """A token bucket's refill per second and its capacity."""

    per_s: float
    burst: float

    def __post_init__(self) -> None:
        assert self.per_s > 0 and self.burst >= self.per_s * 0.1, self


class Budget:
    """Token buckets per key, one per unit (e.g. messages, bytes, actions): a charge is
    paid in every unit or not at all. Time comes in as `now` (seconds, any origin)."""

    def __init__(self, rates: Sequence[Rate], keys_max: int = KEYS_MAX) -> None:
        assert rates and keys_max > 0
        self.rates = tuple(rates)
        self.keys_max = keys_max
        self._buckets: dict[Hashable, tuple[float, list[float]]] = {}  # key -> (at, tokens)
        self.paid = 0  # charges paid, all keys
        self.refused = 0  # charges refused, all keys

    def _refilled(self, key: Hashable, now: float) -> list[float]:
        at, tokens = self._buckets.pop(key, (now, [r.burst for r in self.rates]))
        elapsed = max(0.0, now - at)
        tokens = [min(r.burst, t + r.per_s * elapsed)
                  for r, t in zip(self.rates, tokens, strict=True)]
        self._buckets[key] = (now, tokens)  # most recent last
        while len(self._buckets) > self.keys_max:
            del self._buckets[next(iter(self._buckets))]
        return tokens

    def affords(self, key: Hashable, cost: Sequence[float], now: float) -> bool:
        """Could `key` pay `cost` now? Charges nothing."""
        return all(t >= c for t, c in zip(self._refilled(key, now), cost, strict=True))

    def charge(self, key: Hashable, cost: Sequence[float], now: float) -> bool:
        """Pay `cost` (one amount per unit) from `key`'s buckets if every unit has it;
        True if paid. A cost above a unit's burst can never be paid."""
        tokens = self._refilled(key, now)
        if not all(t >= c for t, c in zip(tokens, cost, strict=True)):
            self.refused += 1
            return False
        for i, c in enumerate(cost):
            tokens[i] -= c
        self.paid += 1
        return True

    def debit(self, key: Hashable, cost: Sequence[float], now: float) -> float:
        """Pay `cost` whatever the tokens (they may go below zero); the seconds to wait
        until the debt is paid back (pacing, rather than refusing)."""
        tokens = self._refilled(key, now)
        wait_s = 0.0
        for i, (r, c) in enumerate(zip(self.rates, cost, strict=True)):
            tokens[i] -= c
            if tokens[i] < 0:
                wait_s = max(wait_s, -tokens[i] / r.per_s)
        return wait_s


# -- the budgets (see the table above) -------------------------------------------------
# Topic classes, as gossip.py names what a message is.
EVENT, HEARTBEAT, JOIN_REQUEST, TRADE_REPORT = "event", "heartbeat", "join request", "trade report"
PROOF = "proof"

ORIGIN_ACTIONS = Rate(4_000, 10_000)
ORIGIN_EVENTS = Rate(100, 200)
ORIGIN_EVENT_BYTES = Rate(512 * KiB, 1 * MiB)

# (messages, bytes) per publisher and per forwarding peer, by topic class.
PUBLISHER_RATES: dict[str, tuple[Rate, Rate]] = {
    EVENT: (ORIGIN_EVENTS, ORIGIN_EVENT_BYTES),
    HEARTBEAT: (Rate(10, 20), Rate(64 * KiB, 128 * KiB)),
    JOIN_REQUEST: (Rate(2, 10), Rate(4 * KiB, 8 * KiB)),
    TRADE_REPORT: (Rate(100, 512), Rate(64 * KiB, 128 * KiB)),
    PROOF: (Rate(2, 10), Rate(256 * KiB, 1 * MiB)),
}
FORWARDER_RATES: dict[str, tuple[Rate, Rate]] = {
    EVENT: (Rate(2_000, 4_000), Rate(8 * MiB, 16 * MiB)),
    HEARTBEAT: (Rate(500, 1_000), Rate(2 * MiB, 4 * MiB)),
    JOIN_REQUEST: (Rate(100, 200), Rate(32 * KiB, 64 * KiB)),
    TRADE_REPORT: (Rate(2_000, 4_000), Rate(1 * MiB, 2 * MiB)),
    PROOF: (Rate(20, 100), Rate(4 * MiB, 8 * MiB)),
}
# (events, actions, bytes) of an origin brought by sync answers, new here
SYNC_ORIGIN_RATES = (Rate(1_000, 5_000), Rate(4_000, 20_000), Rate(1 * MiB, 4 * MiB))
SYNC_SERVED_BYTES = Rate(4 * MiB, 16 * MiB)  # per requesting peer
SYNC_RATE_PAUSE_S = 1.0  # no pull from a peer whose answer exceeded an origin's budget

assert ORIGIN_ACTIONS.burst >= 10_000, "an honest node's largest flush passes at once"
assert ORIGIN_ACTIONS.per_s >= 2 * 2_000, "2x an honest origin at the target load"
assert SYNC_ORIGIN_RATES[1].per_s == ORIGIN_ACTIONS.per_s, "sync is no way around gossip"
assert ORIGIN_EVENT_BYTES.burst >= 64 * KiB, "the largest event (EVENT_BYTES_MAX) passes"
assert PUBLISHER_RATES[TRADE_REPORT][0].burst >= 256, "OWN_TRADE_REPORTS_SCAN at once"
for _what, (_msgs, _bytes) in PUBLISHER_RATES.items():
    assert FORWARDER_RATES[_what][0].per_s >= 10 * _msgs.per_s, _what


class GossipBudgets:
    """The budgets of gossip's topic validators: per forwarding peer and per publisher,
    by topic class, in (messages, bytes); per event origin, in actions."""

    def __init__(self) -> None:
        self.forwarders = {what: Budget(rates) for what, rates in FORWARDER_RATES.items()}
        self.publishers = {what: Budget(rates) for what, rates in PUBLISHER_RATES.items()}
        self.origin_actions = Budget([ORIGIN_ACTIONS])

    def admit(self, what: str, forwarder: ID, publisher: bytes, size: int,
              now: float) -> ID | None:
        """Charge one message of `size` bytes of topic class `what`, before decoding;
        None if paid, else the peer whose budget it exceeded (its forwarder's is
        checked first: that one bounds what one connection makes us decode)."""
        cost = (1, size)
        if not self.forwarders[what].charge(forwarder, cost, now):
            return forwarder
        if not self.publishers[what].charge(publisher, cost, now):
            return ID(publisher)
        return None


class CountedAgainst(Exception):
    """A refused message whose rejection `code` (the exception's text) is counted
    against `peer`, who need not be the peer that sent it."""

    def __init__(self, peer: ID, code: str) -> None:
        super().__init__(code)
        self.peer = peer


class OverBudget(CountedAgainst):
    """A message beyond the budget of `peer` (whose budget it is, not who sent it)."""

    def __init__(self, peer: ID) -> None:
        super().__init__(peer, RATE_LIMITED)


class SyncBudget:
    """What sync answers may bring: each event new here is charged to its verified
    origin (events, actions, bytes); one beyond it is refused, counted against that
    origin, and remembered (digest, origin, cost) so that, sent again before its origin
    has the budget, it is refused without being decoded again."""

    def __init__(self, replica: Any, reject: Callable[[str, str, ID | None], None]) -> None:
        self.replica = replica
        self.origins = Budget(SYNC_ORIGIN_RATES)
        self._reject = reject
        self._refused: OrderedDict[bytes, tuple[bytes, tuple[int, int, int]]] = OrderedDict()

    def within(self, raws: list[bytes], now: float) -> tuple[list[bytes | Event], int]:
        """The events of an answer that their origins' budgets allow, decoded where
        decoding was needed to tell (an undecodable one is left to the replica, which
        rejects it with its code); and how many were refused. Events already delivered
        here cost nothing, and are not even decoded: an event's id is the SHA-256 of its
        bytes, so bytes whose id we hold are that very event (under load most of what
        a pull brings has arrived by gossip in the meantime: decoding and verifying it
        again was about a third of the time a node spent in sync, py-spy)."""
        kept: list[bytes | Event] = []
        refused = 0
        replica = self.replica
        for raw in raws:
            digest = hashlib.sha256(raw).digest() if type(raw) is bytes else b""
            held = replica.event(digest)
            if type(held) is Event:
                kept.append(held)  # a duplicate: the replica says so, for free
                continue
            known = self._refused.get(digest)
            if known is not None and not self.origins.affords(known[0], known[1], now):
                refused += 1
                self._reject("event via sync", RATE_LIMITED, ID(known[0]))
                continue
            try:
                event = decode_event(raw, self.replica.markets)
            except EventRejected:
                kept.append(raw)
                continue
            if replica.event(event.id) is not None:
                kept.append(event)  # a duplicate of a settled event
                continue
            cost = (1, len(event.actions), len(raw))
            if self.origins.charge(event.origin, cost, now):
                self._refused.pop(digest, None)
                kept.append(event)
                continue
            refused += 1
            self._reject("event via sync", RATE_LIMITED, ID(event.origin))
            self._refused[digest] = (event.origin, cost)
            while len(self._refused) > REFUSED_KEPT_MAX:
                self._refused.popitem(last=False)
        return kept, refused
