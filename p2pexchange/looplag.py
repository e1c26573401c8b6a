"""Event-loop lag: how late the node's trio loop wakes a task that asked to sleep.

A task sleeps `INTERVAL_S` over and over and records the overshoot of each wakeup
(the time the loop was busy with other tasks when it should have run this one). The
last `SAMPLES_MAX` overshoots are kept; `p99_ms` and `max_ms` summarise them for the
status and the metrics. It costs one wakeup per interval and a sort of at most
`SAMPLES_MAX` numbers per status call.
"""

from __future__ import annotations

from collections import deque

import trio

INTERVAL_S = 0.1
SAMPLES_MAX = 600  # the last minute at most (fewer seconds when the loop lags)


class LoopLag:
    def __init__(self) -> None:
        self.samples_ms: deque[float] = deque(maxlen=SAMPLES_MAX)

    async def run(self) -> None:
        while True:
            asked = trio.current_time() + INTERVAL_S
            await trio.sleep_until(asked)
            self.samples_ms.append(max(0.0, (trio.current_time() - asked) * 1000))

    def quantile_ms(self, q: float) -> float:
        """The `q` quantile (0..1) of the recent overshoots in ms; 0 before any sample."""
        if not self.samples_ms:
            return 0.0
        ordered = sorted(self.samples_ms)
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)

    @property
    def last_ms(self) -> float:
        """The latest overshoot: how far behind the loop is now (backpressure)."""
        return self.samples_ms[-1] if self.samples_ms else 0.0

    @property
    def p99_ms(self) -> float:
        return self.quantile_ms(0.99)

    @property
    def max_ms(self) -> float:
        return self.quantile_ms(1.0)
