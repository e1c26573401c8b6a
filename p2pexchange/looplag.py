"""Event-loop lag: how late the node's trio loop wakes a task that asked to sleep, and
which task steps kept it busy.

A task sleeps `INTERVAL_S` over and over and records the overshoot of each wakeup
(the time the loop was busy with other tasks when it should have run this one). The
last `SAMPLES_MAX` overshoots are kept; `p99_ms` and `max_ms` summarise them for the
status and the metrics. It costs one wakeup per interval and a sort of at most
`SAMPLES_MAX` numbers per status call.

While it runs, a trio instrument times every task step (the code a task runs between
two awaits: nothing else runs meanwhile) and keeps the last `SLOW_STEPS_MAX` that took
at least `SLOW_STEP_MS`, with the task's name: `slow_steps` says what held the loop,
not only that something did. Two clock reads per step. A pass of the cyclic garbage
collector that long is kept as well (as `gc generation N`): it runs inside whichever
step allocated last, and is the collector's time, not that task's. Every task step is
counted (`steps`), and those of `STEP_BOUND_MS` or more (`steps_over_bound`): the bound
issue 11 sets on one step, measured in wall-clock time, so a step the OS paused counts.
"""

from __future__ import annotations

import gc
import time
from collections import deque

import trio

INTERVAL_S = 0.1
SAMPLES_MAX = 600  # the last minute at most (fewer seconds when the loop lags)
SLOW_STEP_MS = 20.0
SLOW_STEPS_MAX = 64
STEP_BOUND_MS = 50.0  # (counted: `steps_over_bound`)


class _Timer:
    """Times what runs between `start` and `stop` and keeps it in `slow` if long."""

    def __init__(self, slow: deque[tuple[float, str]]) -> None:
        self._slow = slow
        self._started = time.perf_counter()  # added within a step: that one counts from here

    def start(self) -> None:
        self._started = time.perf_counter()

    def stop(self, name: str) -> float:
        took_ms = (time.perf_counter() - self._started) * 1000
        if took_ms >= SLOW_STEP_MS:
            self._slow.append((round(took_ms, 1), name))
        return took_ms


class _StepTimer(_Timer, trio.abc.Instrument):
    def __init__(self, lag: LoopLag) -> None:
        super().__init__(lag.slow)
        self._lag = lag

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.start()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        lag = self._lag
        lag.steps += 1
        if self.stop(task.name) >= STEP_BOUND_MS:
            lag.steps_over_bound += 1


class _CollectorTimer(_Timer):
    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self.start()
        else:
            self.stop(f"gc generation {info['generation']}")


class LoopLag:
    def __init__(self) -> None:
        self.samples_ms: deque[float] = deque(maxlen=SAMPLES_MAX)
        self.slow: deque[tuple[float, str]] = deque(maxlen=SLOW_STEPS_MAX)
        self.steps = 0  # task steps since `run` started
        self.steps_over_bound = 0  # ... that took `STEP_BOUND_MS` or more

    async def run(self) -> None:
        timer = _StepTimer(self)
        collector = _CollectorTimer(self.slow)
        trio.lowlevel.add_instrument(timer)
        gc.callbacks.append(collector)
        try:
            while True:
                asked = trio.current_time() + INTERVAL_S
                await trio.sleep_until(asked)
                self.samples_ms.append(max(0.0, (trio.current_time() - asked) * 1000))
        finally:
            trio.lowlevel.remove_instrument(timer)
            gc.callbacks.remove(collector)

    def status(self) -> dict:
        """The node status's `loop_*` fields."""
        return {"loop_lag_p99_ms": self.p99_ms, "loop_lag_max_ms": self.max_ms,
                "loop_slow_steps": self.slow_steps(), "loop_steps": self.steps,
                "loop_steps_over_50ms": self.steps_over_bound}

    def quantile_ms(self, q: float) -> float:
        """The `q` quantile (0..1) of the recent overshoots in ms; 0 before any sample."""
        if not self.samples_ms:
            return 0.0
        ordered = sorted(self.samples_ms)
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)

    def slow_steps(self, count: int = 5) -> list[dict]:
        """The `count` longest of the recent slow task steps, longest first: the task
        (its function's name, shortened to the last two parts) and the milliseconds."""
        longest = sorted(self.slow, reverse=True)[:count]
        return [{"task": ".".join(name.split(".")[-2:]), "ms": ms} for ms, name in longest]

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
