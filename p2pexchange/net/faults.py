"""An in-process fault layer for tests: message loss, delay with jitter, duplication and
reordering on what a node receives, seeded so a failing run replays its decisions.

A `FaultPlan` sits between the gossip readers and the handlers the node gives them
(`gossip_handlers`): for each message it decides, from its own `random.Random(seed)`,
whether the message is lost, how many copies arrive (duplication) and after how long
each does (delay `delay_ms` ± `jitter_ms`, plus with probability `reorder` a further
random hold-back of up to `reorder_ms`, so later messages overtake it). A delayed
copy is handed over by a task in the node's nursery. Optionally it also drops and
shuffles the events of each sync answer the node receives (`sync_receive`), before
they reach the intake. Every fault is off by default, and `enabled = False` turns the
whole plan off at once (messages already held back still arrive). A node without a
plan (`NodeConfig.faults is None`) gets its handlers back unchanged.

The decisions are a deterministic sequence for a seed; which message meets which
decision still depends on trio's scheduling, so a replay repeats the faults, not
necessarily their exact targets.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import trio

log = logging.getLogger("p2pexchange.node")

T = TypeVar("T")
Handler = Callable[[Any, Any], None]  # (sender, decoded message)


@dataclass
class FaultPlan:
    seed: int = 0
    loss: float = 0.0  # probability that a gossip message is lost
    delay_ms: float = 0.0  # mean delay of every gossip message
    jitter_ms: float = 0.0  # the delay is uniform in delay_ms ± jitter_ms
    duplicate: float = 0.0  # probability that a message arrives twice
    reorder: float = 0.0  # probability that a copy is held back a further while
    reorder_ms: float = 300.0  # longest such hold-back
    sync_loss: float = 0.0  # probability that an event of a sync answer is dropped
    sync_reorder: bool = False  # shuffle the events of every sync answer
    enabled: bool = True
    rng: random.Random = field(init=False, repr=False)
    counts: Counter[str] = field(init=False, default_factory=Counter)

    def __post_init__(self) -> None:
        assert 0 <= self.loss <= 1 and 0 <= self.duplicate <= 1 and 0 <= self.reorder <= 1
        assert 0 <= self.sync_loss <= 1 and 0 <= self.jitter_ms <= self.delay_ms
        self.rng = random.Random(self.seed)

    def decide(self) -> list[float]:
        """One message's fate: the delay in seconds of each copy that arrives (none:
        lost; two: duplicated)."""
        if not self.enabled:
            return [0.0]
        rng = self.rng
        if rng.random() < self.loss:
            self.counts["lost"] += 1
            return []
        copies = 2 if rng.random() < self.duplicate else 1
        self.counts["duplicated"] += copies - 1
        delays = []
        for _ in range(copies):
            delay_ms = self.delay_ms + rng.uniform(-self.jitter_ms, self.jitter_ms)
            if rng.random() < self.reorder:
                delay_ms += rng.uniform(0, self.reorder_ms)
                self.counts["held_back"] += 1
            delays.append(max(0.0, delay_ms) / 1000)
        self.counts["delayed"] += sum(1 for d in delays if d > 0)
        return delays

    def answer(self, events: Sequence[T]) -> list[T]:
        """What arrives of one sync answer's events, in which order."""
        if not self.enabled:
            return list(events)
        kept = [e for e in events if not (self.sync_loss and self.rng.random() < self.sync_loss)]
        self.counts["sync_lost"] += len(events) - len(kept)
        if self.sync_reorder and len(kept) > 1:
            self.rng.shuffle(kept)
            self.counts["sync_shuffled"] += 1
        return kept

    def wrap(self, nursery: trio.Nursery, handle: Handler) -> Handler:
        """`handle` behind this plan; held-back copies are handed over from `nursery`."""
        def faulty(sender: Any, value: Any) -> None:
            for delay_s in self.decide():
                if delay_s <= 0:
                    handle(sender, value)
                else:
                    nursery.start_soon(_later, delay_s, handle, sender, value)
        return faulty


async def _later(delay_s: float, handle: Handler, sender: Any, value: Any) -> None:
    await trio.sleep(delay_s)
    try:
        handle(sender, value)
    except Exception:  # as the gossip reader does: a failing handler stops nothing
        log.exception("handling a delayed message failed")


def gossip_handlers(plan: FaultPlan | None, nursery: trio.Nursery,
                    handlers: Sequence[Handler]) -> list[Handler]:
    """The node's gossip handlers, behind `plan` if there is one."""
    if plan is None:
        return list(handlers)
    return [plan.wrap(nursery, h) for h in handlers]


def sync_receive(plan: FaultPlan | None,
                 receive: Callable[[list[T]], list[Any]]) -> Callable[[list[T]], list[Any]]:
    """The intake's `receive` for sync answers, behind `plan` if there is one."""
    if plan is None:
        return receive
    return lambda arrivals: receive(plan.answer(arrivals))
