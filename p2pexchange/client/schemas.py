"""The API's request and response bodies (they make the OpenAPI document) and the
conversions from the node's integers (ticks, lots, origin bytes) to what people read:
prices and quantities as decimal strings, origins as peer ids, ids as hex.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..core.market import Market
from ..core.orders import Order, Trade
from ..net.host import peer_name

BATCH_ORDERS_MAX = 1000
CLIENT_ORDER_ID_CHARS_MAX = 64

SideName = Literal["buy", "sell"]
TypeName = Literal["limit", "ioc", "fok", "post_only", "market"]
StpName = Literal["expire_taker", "expire_maker", "expire_both"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OrderRequest(Strict):
    market: str = Field(examples=["BTC-USD"])
    side: SideName
    type: TypeName = "limit"
    price: str | None = Field(None, description="decimal string on the market's tick grid; "
                              "omitted for market orders", examples=["65000.00"])
    quantity: str = Field(description="decimal string on the market's lot grid",
                          examples=["0.5"])
    stp: StpName = Field("expire_taker", description="self-trade prevention")
    client_order_id: str | None = Field(None, min_length=1,
                                        max_length=CLIENT_ORDER_ID_CHARS_MAX)


class BatchRequest(Strict):
    orders: list[OrderRequest] = Field(min_length=1, max_length=BATCH_ORDERS_MAX)


class CancelBatchRequest(Strict):
    order_ids: list[str] = Field(min_length=1, max_length=BATCH_ORDERS_MAX)


class TradingRequest(Strict):
    on: bool


class Fill(BaseModel):
    price: str
    quantity: str
    role: Literal["maker", "taker"]
    trade_event_id: str


class OrderOut(BaseModel):
    order_id: str
    market: str
    side: SideName
    type: TypeName
    price: str | None
    quantity: str
    filled: str
    remaining: str
    status: str
    reason: str
    origin: str
    fills: list[Fill] = []


class Placed(BaseModel):
    order_id: str = Field(description="the id every node uses: signed event id + index")
    outcome: str = Field(description="status after matching here, or a cancel's result")
    client_order_id: str | None = None
    duplicate: bool = Field(False, description="this client order id was placed before")
    order: OrderOut | None = None


class BatchPlaced(BaseModel):
    results: list[Placed]


class Cancelled(BaseModel):
    order_id: str
    outcome: str


class CancelledAll(BaseModel):
    cancelled: list[Cancelled]


class BatchCancelled(BaseModel):
    results: list[Cancelled]


class Orders(BaseModel):
    orders: list[OrderOut]


class Level(BaseModel):
    price: str
    quantity: str


class Book(BaseModel):
    market: str
    bids: list[Level]
    asks: list[Level]


class TradeOut(BaseModel):
    market: str
    event_id: str
    maker_order: str
    taker_order: str
    maker_origin: str
    taker_origin: str
    price: str
    quantity: str
    taker_side: SideName
    status: Literal["pending", "final"]


class Trades(BaseModel):
    trades: list[TradeOut]


class Removed(BaseModel):
    member: str
    cut: int = Field(description="its events beyond this seq count for nothing (void)")
    round: int
    equivocated: bool = Field(description="this node holds a proof that it signed two "
                              "versions of one seq (GET /misbehaviour shows it)")


class Checkpoint(BaseModel):
    n: int = Field(description="the state after the n-th final event that acts")
    hash: str = Field(description="SHA-256 of that state, encoded (hex): every node that "
                      "took checkpoint n holds the same (docs/snapshot_design.md)")
    attested_by: int = Field(description="other members whose latest heartbeat attests "
                             "this checkpoint, with the same hash")


class Status(BaseModel):
    peer_id: str
    addr: str
    multiaddrs: list[str]
    peers: int
    membership: Literal["learning", "joining", "catching_up", "member", "leaving",
                        "left", "removed"] = Field(
        description="this node's state in the network: learning its genesis, joining "
        "(not admitted yet), catching_up after a restart, member (it trades), leaving "
        "(its leave is signed or about to be, not final yet), left (for good: it may "
        "be stopped) or removed (the other members voted it out: it takes no orders)")
    members: list[str] = Field(description="the network's members as this node knows them")
    waiting_for: list[str] = Field(description="members whose next event would move "
                                   "finality; empty when nothing waits")
    digest: str
    final_frontier: int | None = Field(description="the Lamport time of the last final "
                                       "event (every event with a lower Lamport time is "
                                       "final); null while nothing is")
    events_final: int = Field(description="events final here, in the applied order")
    checkpoint: Checkpoint | None = Field(description="the latest checkpoint taken: the "
                                          "state after every 4,096th final event that "
                                          "acts (or sooner, every 65,536 actions), "
                                          "hashed (null before the first)")
    equivocations: int = Field(description="proofs of equivocation kept: (origin, seq) "
                               "pairs seen signed in two versions (at most 256)")
    removed: list[Removed] = Field(description="members removed from the network, in "
                                   "order of decision (protocols/finality.md)")
    voting_to_remove: list[str] = Field(description="members this node's standing "
                                        "removal votes name (it covers no more of them "
                                        "meanwhile)")
    events: int
    buffered: int
    own_seq: int
    trades: int
    trades_final: int
    trades_pending: int
    resting: dict[str, int]
    rollbacks: int
    events_reapplied: int = Field(description="applied events undone and applied again "
                                  "behind a late one, in all")
    rejected: dict[str, int] = Field(description="refused input, by reason")
    rejecting_peers: int
    divergences: int
    checkpoints_matched: int = Field(description="members' attested checkpoints compared "
                                     "with ours and found equal (a difference counts in "
                                     "divergences)")
    started_from: str = Field(description="how this node started: 'checkpoint N' (one more "
                              "than half of the members attested, instead of the history "
                              "before it), 'history', or '' while a newcomer decides")
    finality_broken: int = Field(description="events the commit rule rules out (a final "
                                 "event undone, beyond the tolerated dishonest members), "
                                 "taken as empty: an alarm; 0 otherwise")
    trade_reports_matched: int
    pending_actions: int
    loop_lag_p99_ms: float = Field(description="event-loop scheduling lag, 99th percentile "
                                   "of the recent wakeups (p2pexchange/looplag.py)")
    loop_lag_max_ms: float
    loop_slow_steps: list[dict] = Field(description="the longest recent task steps of at "
                                        "least 20 ms (what held the event loop): task, ms")
    loop_steps: int = Field(description="task steps the event loop ran since the start")
    loop_steps_over_50ms: int = Field(description="... of them, those that held it 50 ms "
                                      "or more (wall-clock)")
    trading: bool | None = Field(description="auto-trading on/off; null: none on this node")


class Trading(BaseModel):
    trading: bool


class Leaving(BaseModel):
    membership: str = Field(description="leaving: the leave is on its way; poll /status "
                            "until membership is left")
    cancelled: int = Field(description="this node's open orders cancelled before the leave")


class Flushed(BaseModel):
    events: list[str]
    actions: list[Cancelled]


class ErrorDetail(BaseModel):
    field: str | None = Field(description="the request field at fault, if one is")
    reason: str = Field(description="machine-readable: off_tick, off_lot, unknown_market, "
                        "unknown_order, not_my_order, not_open, malformed_json, invalid, "
                        "node_busy, node_not_ready, no_auto_trader, ...")
    message: str


class Error(BaseModel):
    error: ErrorDetail


# -- conversions -------------------------------------------------------------------


def peer(origin: bytes) -> str:
    return peer_name(origin)


def order_out(order: Order, market: Market, fills: list[Fill] | None = None) -> OrderOut:
    has_price = order.type.name != "MARKET"
    return OrderOut(
        order_id=order.order_id.hex(), market=order.market, side=order.side.name.lower(),
        type=order.type.name.lower(),
        price=market.ticks_to_price(order.price) if has_price else None,
        quantity=market.lots_to_qty(order.qty), filled=market.lots_to_qty(order.filled),
        remaining=market.lots_to_qty(order.remaining), status=order.status.name.lower(),
        reason=order.reason, origin=peer(order.origin), fills=fills or [])


def trade_out(trade: Trade, market: Market, final: bool) -> TradeOut:
    return TradeOut(
        market=trade.market, event_id=trade.event_id.hex(),
        maker_order=trade.maker_order.hex(), taker_order=trade.taker_order.hex(),
        maker_origin=peer(trade.maker_origin), taker_origin=peer(trade.taker_origin),
        price=market.ticks_to_price(trade.price), quantity=market.lots_to_qty(trade.qty),
        taker_side=trade.taker_side.name.lower(), status="final" if final else "pending")


def fill_of(trade: Trade, order_id: bytes, market: Market) -> Fill:
    return Fill(price=market.ticks_to_price(trade.price),
                quantity=market.lots_to_qty(trade.qty),
                role="maker" if trade.maker_order == order_id else "taker",
                trade_event_id=trade.event_id.hex())


def book_out(market: Market, depth: dict[str, list[tuple[int, int]]]) -> Book:
    def levels(rows: list[tuple[int, int]]) -> list[Level]:
        return [Level(price=market.ticks_to_price(p), quantity=market.lots_to_qty(q))
                for p, q in rows]
    return Book(market=market.name, bids=levels(depth.get("bids", [])),
                asks=levels(depth.get("asks", [])))


class Equivocation(BaseModel):
    origin: str = Field(description="the peer id that signed both events")
    seq: int
    first: str = Field(description="the version delivered here, raw event in hex")
    second: str = Field(description="the other version, raw event in hex")


class Misbehaviour(BaseModel):
    equivocations: list[Equivocation]
