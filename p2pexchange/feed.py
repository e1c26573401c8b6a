"""What the node tells its drivers: own actions signed, and events applied.

A driver that submits actions and needs their order ids (ids derive from the signed
event's id, so they exist only once the batch is signed) waits on a `Ticket`: the
node calls `Feed.sealed` right after it signs and applies each of its own events,
which resolves every waiting action of that event with (order id, outcome after
local matching). Actions are matched by identity: the batcher keeps the objects it
was given, and a waiting ticket holds them, so no two live actions share an id().

`Feed.applied` fans each delivered batch (own or a peer's) out to subscribers as an
`Applied` (the events and whether later ones were re-ordered behind them). A
subscriber that falls `APPLIED_BUFFER_MAX` behind misses batches rather than slow
the node; it can tell from `Applied.missed`.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass

import trio

from .core.events import Action, Event

APPLIED_BUFFER_MAX = 4096


class Ticket:
    """Actions waiting for their signed event; `results` once `done` is set."""

    def __init__(self, actions: Sequence[Action]) -> None:
        self.actions = list(actions)
        self.results: list[tuple[bytes, str] | None] = [None] * len(self.actions)
        self.left = len(self.actions)
        self.done = trio.Event()

    async def wait(self) -> list[tuple[bytes, str]]:
        await self.done.wait()
        return [r for r in self.results if r is not None]


@dataclass
class Applied:
    events: list[Event]
    rolled_back: int
    missed: int  # batches this subscriber lost before this one (it was too slow)


class Feed:
    def __init__(self) -> None:
        self._waiting: dict[int, tuple[Ticket, int]] = {}
        self._subscribers: list[list] = []  # [send channel, missed count]

    async def submit(self, actions: Sequence[tuple[str, Action]], markets: Container[str],
                     room: int, submit: Callable[[str, Action], None]) -> list[tuple[bytes, str]]:
        """Check all of `actions`, hand them to `submit`, wait until they are signed."""
        if any(market not in markets for market, _ in actions):
            raise ValueError("unknown market")
        if len(actions) > room:
            raise OverflowError("too many actions pending")
        ticket = self.expect([a for _, a in actions])
        try:
            for market, action in actions:
                submit(market, action)
            return await ticket.wait()
        finally:
            self.forget(ticket)

    def expect(self, actions: Sequence[Action]) -> Ticket:
        ticket = Ticket(actions)
        for index, action in enumerate(ticket.actions):
            assert id(action) not in self._waiting, "one action object submitted twice"
            self._waiting[id(action)] = (ticket, index)
        return ticket

    def forget(self, ticket: Ticket) -> None:
        """The waiter gave up: its actions stay queued, but nobody waits for them."""
        for action in ticket.actions:
            if self._waiting.get(id(action), (None,))[0] is ticket:
                del self._waiting[id(action)]

    def sealed(self, event: Event, outcomes: Sequence[str]) -> None:
        for index, action in enumerate(event.actions):
            waiting = self._waiting.pop(id(action), None)
            if waiting is None:
                continue
            ticket, position = waiting
            ticket.results[position] = (event.order_id(index), outcomes[index])
            ticket.left -= 1
            if not ticket.left:
                ticket.done.set()

    def subscribe(self) -> trio.MemoryReceiveChannel:
        send, receive = trio.open_memory_channel(APPLIED_BUFFER_MAX)
        self._subscribers.append([send, 0])
        return receive

    def applied(self, events: list[Event], rolled_back: int) -> None:
        if not events:
            return
        for entry in list(self._subscribers):
            send, missed = entry
            try:
                send.send_nowait(Applied(events, rolled_back, missed))
                entry[1] = 0
            except trio.WouldBlock:
                entry[1] += 1
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._subscribers.remove(entry)

    def close(self) -> None:
        for send, _ in self._subscribers:
            send.close()
