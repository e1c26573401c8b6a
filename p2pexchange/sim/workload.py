"""Seeded generators of keys, orders and whole event histories.

Used by the tests, the benchmarks and the auto-trading node. Everything is a
function of its seed: a failing property test or benchmark prints the seed,
and the same seed rebuilds the same history byte for byte (Ed25519 signatures
are deterministic).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping

from libp2p.crypto.ed25519 import Ed25519PrivateKey
from libp2p.crypto.keys import KeyPair
from libp2p.peer.id import ID

from ..core.events import STP, Action, Cancel, Event, OrderType, Place, Side
from ..core.market import Market
from ..core.replica import Replica


def seeded_key_pair(seed: int | str) -> KeyPair:
    private = Ed25519PrivateKey.new(hashlib.sha256(f"p2pexchange-key-{seed}".encode()).digest())
    return KeyPair(private, private.get_public_key())


def peer_id_bytes(key_pair: KeyPair) -> bytes:
    return ID.from_pubkey(key_pair.public_key).to_bytes()


class OrderFlow:
    """Random orders around a mid price that drifts; cancels of the flow's own orders."""

    def __init__(self, rng: random.Random, mid: int = 10_000, spread: int = 20,
                 qty_max: int = 10, mix: Mapping[str, float] | None = None) -> None:
        self.rng = rng
        self.mid = mid
        self.spread = spread
        self.qty_max = qty_max
        self.mix = dict(mix or {"limit": 0.55, "cancel": 0.2, "ioc": 0.07, "fok": 0.05,
                                "post_only": 0.06, "market": 0.04, "bad_cancel": 0.03})
        self.open_orders: list[bytes] = []  # ids of orders this flow placed (maybe done)
        self._kinds = list(self.mix)
        self._weights = [self.mix[k] for k in self._kinds]

    def next_action(self) -> Action:
        rng = self.rng
        if rng.random() < 0.05:
            self.mid = max(self.spread * 4, self.mid + rng.choice((-1, 1)) * rng.randint(1, 5))
        kind = rng.choices(self._kinds, self._weights)[0]
        if kind == "cancel" and self.open_orders:
            index = rng.randrange(len(self.open_orders))
            self.open_orders[index], self.open_orders[-1] = (self.open_orders[-1],
                                                             self.open_orders[index])
            return Cancel(self.open_orders.pop())
        if kind == "bad_cancel":
            return Cancel(rng.randbytes(34))
        side = rng.choice((Side.BUY, Side.SELL))
        qty = rng.randint(1, self.qty_max)
        stp = rng.choice((STP.EXPIRE_TAKER, STP.EXPIRE_MAKER, STP.EXPIRE_BOTH))
        if kind == "market":
            return Place(side, OrderType.MARKET, 0, qty, stp)
        offset = rng.randint(-self.spread // 4, self.spread)  # mostly passive, sometimes crossing
        price = self.mid - offset if side is Side.BUY else self.mid + offset
        otype = {"ioc": OrderType.IOC, "fok": OrderType.FOK,
                 "post_only": OrderType.POST_ONLY}.get(kind, OrderType.LIMIT)
        return Place(side, otype, max(1, price), qty, stp)

    def placed(self, order_ids: list[bytes]) -> None:
        self.open_orders.extend(order_ids)


def simulate_history(seed: int, markets: Mapping[str, Market], origins: int = 3,
                     steps: int = 40, actions_max: int = 4, deliver_prob: float = 0.6
                     ) -> list[Event]:
    """Events of `origins` nodes that each see a random part of the others' events
    before creating their own: a history with real concurrency, in creation order."""
    rng = random.Random(seed)
    names = sorted(markets)
    nodes = []
    for i in range(origins):
        key_pair = seeded_key_pair(f"{seed}-{i}")
        origin = peer_id_bytes(key_pair)
        nodes.append((key_pair, Replica(markets, origin), OrderFlow(random.Random(rng.random()))))
    history: list[Event] = []
    for _ in range(steps):
        key_pair, replica, flow = rng.choice(nodes)
        for event in history:
            if rng.random() < deliver_prob:
                replica.admit(event)
        actions = [flow.next_action() for _ in range(rng.randint(1, actions_max))]
        event, _ = replica.create_event(key_pair.private_key, rng.choice(names), actions)
        flow.placed([event.order_id(i) for i, a in enumerate(actions) if isinstance(a, Place)])
        history.append(event)
    return history
