"""Rejections: every refused input from the network, counted and attributed to its peer.

The network parts and the node report each refused message here (what it was, a
stable reject code, the peer that sent it). Counts by code feed the status and
metrics; counts by peer show who misbehaves; a bounded log of recent rejections
serves status and tests. Log lines are limited per peer, so a flood of garbage costs
a counter increment, not a line each.
"""

from __future__ import annotations

import logging
import time
from collections import deque

from libp2p.peer.id import ID

from .host import short_peer

log = logging.getLogger("p2pexchange.node")

RECENT_MAX = 256  # recent rejections kept for status and tests
PEERS_MAX = 1024  # peers whose counts are kept (the most recently rejected)
LOG_LINES_PER_PEER_MAX = 20  # per peer and `LOG_WINDOW_S`; the rest are only counted
LOG_WINDOW_S = 60.0


class Rejections:
    def __init__(self) -> None:
        self.by_code: dict[str, int] = {}
        self.by_peer: dict[str, int] = {}
        self.recent: deque[tuple[str, str, str]] = deque(maxlen=RECENT_MAX)
        self._log_limiter = LogLimiter(LOG_LINES_PER_PEER_MAX, LOG_WINDOW_S, PEERS_MAX)

    def __call__(self, source: str, code: str, peer: ID | None) -> None:
        """Record that `source` (e.g. "event via peer X") from `peer` was refused."""
        self.by_code[code] = self.by_code.get(code, 0) + 1
        name = str(peer) if peer else ""
        self.recent.append((source, code, name))
        self.by_peer[name] = self.by_peer.pop(name, 0) + 1  # most recent last
        while len(self.by_peer) > PEERS_MAX:
            del self.by_peer[next(iter(self.by_peer))]
        if self._log_limiter.allow(name):
            log.warning("rejected %s from %s: %s", source, short_peer(peer) if peer else "?",
                        code)


class LogLimiter:
    """At most `lines_max` log lines per key in each window of `window_s` seconds;
    tracks at most `keys_max` keys (the oldest window is forgotten first)."""

    def __init__(self, lines_max: int, window_s: float, keys_max: int) -> None:
        self.lines_max = lines_max
        self.window_s = window_s
        self.keys_max = keys_max
        self._windows: dict[str, tuple[float, int]] = {}  # key -> (window start, lines)

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        start, lines = self._windows.pop(key, (now, 0))
        if now - start >= self.window_s:
            start, lines = now, 0
        self._windows[key] = (start, lines + 1)
        while len(self._windows) > self.keys_max:
            del self._windows[next(iter(self._windows))]
        return lines < self.lines_max
