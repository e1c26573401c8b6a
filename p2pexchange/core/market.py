"""Markets and the integer grid that money lives on.

Theory of operation: every price on the wire is a whole number of ticks and
every quantity a whole number of lots. A market names its base and quote
assets and the size of one tick (in quote units) and one lot (in base units)
as decimal strings. Decimal strings from people are converted here, at the
edge, and a value that is not an exact multiple of the grid is refused rather
than rounded: an exchange that silently rounds a price is an exchange that
trades at a price nobody asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import lru_cache

PRICE_TICKS_MAX = 2**48 - 1
QTY_LOTS_MAX = 2**48 - 1
MARKET_NAME_BYTES_MAX = 32


class GridError(ValueError):
    """A decimal value that is malformed, out of range or off the market's grid."""


@dataclass(frozen=True)
class Market:
    name: str
    base: str
    quote: str
    tick_size: str
    lot_size: str

    def __post_init__(self) -> None:
        assert 0 < len(self.name.encode()) <= MARKET_NAME_BYTES_MAX, self.name
        assert Decimal(self.tick_size) > 0 and Decimal(self.lot_size) > 0

    # Conversions are pure functions of (value, grid): remembered for the most recent
    # `CONVERSIONS_KEPT` values each (an order API call of hundreds of orders at a few
    # prices parsed each price with Decimal again: a third of the call's time). A value
    # that is refused raises every time (nothing is remembered for it), and a text
    # longer than `KEPT_TEXT_MAX` is converted but not remembered.
    def price_to_ticks(self, price: str) -> int:
        return _units_of(price, self.tick_size, PRICE_TICKS_MAX, "price")

    def qty_to_lots(self, qty: str) -> int:
        return _units_of(qty, self.lot_size, QTY_LOTS_MAX, "quantity")

    def ticks_to_price(self, ticks: int) -> str:
        return _to_text(ticks, self.tick_size)

    def lots_to_qty(self, lots: int) -> str:
        return _to_text(lots, self.lot_size)


CONVERSIONS_KEPT = 4096
KEPT_TEXT_MAX = 40


def _units_of(text: str, unit_text: str, units_max: int, what: str) -> int:
    if not isinstance(text, str):
        raise GridError(f"{what} must be a decimal string, got {type(text).__name__}")
    convert = _to_units if len(text) <= KEPT_TEXT_MAX else _to_units.__wrapped__
    return convert(text, unit_text, units_max, what)


@lru_cache(maxsize=CONVERSIONS_KEPT)
def _to_units(text: str, unit_text: str, units_max: int, what: str) -> int:
    unit = Decimal(unit_text)
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise GridError(f"{what} {text[:40]!r} is not a decimal number") from None
    shown = repr(text[:40])  # error messages never echo unbounded input
    if not value.is_finite() or value <= 0:
        raise GridError(f"{what} {shown} must be a positive finite number")
    if value > unit * units_max:  # before dividing: 1e40 / 0.01 exceeds the context
        raise GridError(f"{what} {shown} is too large")
    units, remainder = divmod(value, unit)
    if remainder != 0:
        raise GridError(f"{what} {shown} is not a multiple of {unit}")
    return int(units)


@lru_cache(maxsize=CONVERSIONS_KEPT)
def _to_text(units: int, unit_text: str) -> str:
    return format((units * Decimal(unit_text)).normalize(), "f")


DEFAULT_MARKETS: dict[str, Market] = {
    m.name: m
    for m in (
        Market("BTC-USD", "BTC", "USD", tick_size="0.01", lot_size="0.0001"),
        Market("ETH-USD", "ETH", "USD", tick_size="0.01", lot_size="0.001"),
    )
}
