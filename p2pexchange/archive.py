"""What a node answers about its history: orders, the outcomes and trades of an event,
the latest trades. The replica answers for what it holds; what compaction took out of
it (core/replica.py `take_departed`: closed orders, settled outcomes and trades) the
store keeps (store.py) and answers for, so memory does not hold them (README, "Join
benchmark"). The answer is the same either way: both hold what the replica computed.
"""

from __future__ import annotations

from .core.orders import ClosedOrder, Order, Trade
from .core.replica import Replica
from .store import EventStore


class Archive:
    def __init__(self, replica: Replica, store: EventStore) -> None:
        self.replica = replica
        self.store = store

    def keep(self) -> None:
        """Compact what is final (core/settled.py) and store what that took out."""
        self.replica.compact()
        self.store.add_settled(*self.replica.take_departed())

    def order(self, order_id: bytes) -> Order | ClosedOrder | None:
        return self.replica.order(order_id) or self.store.closed_order(order_id)

    def outcomes(self, event_id: bytes) -> list[tuple[bytes, str]]:
        """(order id, outcome) per action of a delivered event."""
        if (event := self.replica.event(event_id)) is None:
            return []
        return [(event.order_id(i), o) for i, o in enumerate(self._settled(event_id)[0])]

    def trades_of(self, event_id: bytes) -> list[Trade]:
        return self._settled(event_id)[1]

    def recent_trades(self, limit: int) -> list[Trade]:
        """The last `limit` trades, oldest first."""
        trades = self.replica.recent_trades(limit)
        if len(trades) >= limit:
            return trades
        return self.store.settled_trades(limit - len(trades)) + trades

    def history(self) -> tuple[list[bytes], list[Trade]]:
        """Every applied event id in the total order, and every trade (for tests and
        tools: it reads the store's whole table)."""
        ids, trades = self.store.settled_history()
        return ids + self.replica.applied_ids(), trades + self.replica.trades()

    def _settled(self, event_id: bytes) -> tuple[list[str], list[Trade]]:
        if self.replica.ledger.holds(event_id):
            return self.replica.outcomes_of(event_id), self.replica.trades_of(event_id)
        return self.store.settled(event_id) or ([], [])
