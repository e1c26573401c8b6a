"""Gossip over a simulated network: loss, duplication, delay and reordering.

Theory of operation. A sent event becomes one message per destination. Each message
is lost with the loss rate, duplicated now and then, and delayed by a whole number
of ticks; what falls due in a tick is handed out in a random order, grouped by
destination (a node takes its inbox in one batch, as the node's intake does). Whether
the destination is up and reachable is judged at delivery by the caller, from the
fault schedule; an unreachable message is lost. Messages carry decoded events: the
node decodes and verifies an event once, at the gossip validator, before the replica
sees it, and the simulation checks the replica, not the decoder.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from ..core.events import Event

DUPLICATE_P = 0.1
DELAY_TICKS_MAX = 4


class Network:
    def __init__(self, rng: random.Random, loss: float) -> None:
        self.rng = rng
        self.loss = loss
        self.sent = 0
        self.lost = 0
        self._in_flight: list[tuple[int, int, int, Event]] = []  # (due, dest, src, event)

    def send(self, src: int, dests: Iterable[int], event: Event, tick: int,
             lossless: bool = False) -> None:
        rng = self.rng
        for dest in dests:
            self.sent += 1
            if not lossless and rng.random() < self.loss:
                self.lost += 1
                continue
            copies = 1 + (not lossless and rng.random() < DUPLICATE_P)
            for _ in range(copies):
                delay = 0 if lossless else rng.randint(0, DELAY_TICKS_MAX)
                self._in_flight.append((tick + delay, dest, src, event))

    def due(self, tick: int) -> list[tuple[int, list[tuple[int, Event]]]]:
        """What falls due by `tick`, shuffled: (destination, [(source, event)]) in
        destination order."""
        due = [m for m in self._in_flight if m[0] <= tick]
        if not due:
            return []
        self._in_flight = [m for m in self._in_flight if m[0] > tick]
        self.rng.shuffle(due)
        inboxes: dict[int, list[tuple[int, Event]]] = {}
        for _, dest, src, event in due:
            inboxes.setdefault(dest, []).append((src, event))
        return sorted(inboxes.items())

    def idle(self) -> bool:
        return not self._in_flight
