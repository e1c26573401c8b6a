"""Trade reports (protocols/trade_report.md): the divergence alarm on trades.

The origin of a taker event reports, once the event is final at it, how many trades it
computed and their hash; since 2026-11-27 a node's reports travel in its next heartbeat
(`own`, net/control.py), one message a second instead of one per event. A peer's report
(from its heartbeat, or alone on the trades topic) is kept until its event is final here
(`on_report`), then compared with our own trades (`check`): a difference is logged as
`DIVERGENCE` and counted. Only the taker event's origin may report it; a peer has at most
`TRADE_REPORTS_PEER_MAX` reports waiting, all peers `TRADE_REPORTS_PENDING_MAX`; a report
whose event stays unknown here for `TRADE_REPORT_WAIT_S` is dropped.
"""

from __future__ import annotations

import logging
import time

from libp2p.peer.id import ID

from ..core.events import short_id
from ..core.params import (
    OWN_TRADE_REPORTS_SCAN,
    TRADE_REPORT_WAIT_S,
    TRADE_REPORTS_PEER_MAX,
    TRADE_REPORTS_PENDING_MAX,
)
from ..core.replica import Replica
from . import wire
from .gossip import Reject
from .host import short_peer

log = logging.getLogger("p2pexchange.node")


class TradeReports:
    """Ours out, peers' in until their event is final, then compared."""

    def __init__(self, replica: Replica, origin: bytes, reject: Reject) -> None:
        self.replica = replica
        self.origin = origin
        self.divergences = 0
        self.matched = 0
        # (reporter, event id) -> the report and when it came, until the event is final
        # here (or, unknown here, for TRADE_REPORT_WAIT_S: it never came, or its event is
        # one the replica forgot, core/replica.py `_forget`)
        self.pending: dict[tuple[bytes, bytes], tuple[ID, wire.TradeReport, float]] = {}
        self._by_peer: dict[bytes, int] = {}
        self._reported: set[int] = set()  # seqs of own recent events reported (or not takers)
        self._reject = reject

    def on_report(self, sender: ID, report: wire.TradeReport) -> None:
        """Keep a report until its event is final. Only the taker event's origin reports
        its trades; a peer has at most `TRADE_REPORTS_PEER_MAX` reports waiting."""
        event = self.replica.event(report.event_id)
        if event is not None and event.origin != sender.to_bytes():
            self._reject("trade report", "not_reporters_event", sender)
            return
        key = (sender.to_bytes(), report.event_id)
        if key in self.pending:
            return
        waiting = self._by_peer.get(key[0], 0)
        if (waiting >= TRADE_REPORTS_PEER_MAX
                or len(self.pending) >= TRADE_REPORTS_PENDING_MAX):
            self._reject("trade report", "too_many_reports", sender)
            return
        self._by_peer[key[0]] = waiting + 1
        self.pending[key] = (sender, report, time.monotonic())

    def check(self) -> None:
        """Compare peers' reports for events now final with our own trades."""
        for key, (sender, report, came) in list(self.pending.items()):
            event_id = report.event_id
            event = self.replica.event(event_id)
            expired = event is None and time.monotonic() - came > TRADE_REPORT_WAIT_S
            if not expired and (event is None or not self.replica.is_final(event_id)):
                continue
            del self.pending[key]
            self._by_peer[key[0]] -= 1
            if not self._by_peer[key[0]]:
                del self._by_peer[key[0]]
            if event is None:
                continue  # (nothing to compare it with)
            if event.origin != key[0]:
                self._reject("trade report", "not_reporters_event", sender)
                continue
            mine = self.replica.trades_of(event_id)
            if len(mine) == report.trades and wire.trades_hash(mine) == report.hash:
                self.matched += 1
            else:
                self.divergences += 1
                log.error("DIVERGENCE: peer %s reports %d trades for event %s, we computed %d",
                          short_peer(sender), report.trades, short_id(event_id), len(mine))

    def own(self) -> tuple[wire.TradeReport, ...]:
        """The trade reports of our own taker events final since the last heartbeat (at
        most `HEARTBEAT_REPORTS_MAX`; the rest wait for the next one), for it to carry:
        one message a second, not one per event (py-libp2p's cost is per message)."""
        reports: list[wire.TradeReport] = []
        events = self.replica.last_events(self.origin, OWN_TRADE_REPORTS_SCAN)
        if events:  # what is older than the scan is never looked at again
            self._reported = {seq for seq in self._reported if seq >= events[0].seq}
        for event in events:
            if len(reports) == wire.HEARTBEAT_REPORTS_MAX:
                break
            if event.seq in self._reported or not self.replica.is_final(event.id):
                continue
            self._reported.add(event.seq)
            trades = self.replica.trades_of(event.id)
            if trades:
                reports.append(wire.TradeReport(event.id, len(trades), wire.trades_hash(trades)))
        return tuple(reports)
