"""Markets: decimal strings become integer ticks and lots at the edge, exactly or not at all."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pexchange.core.market import DEFAULT_MARKETS, QTY_LOTS_MAX, GridError

BTC = DEFAULT_MARKETS["BTC-USD"]


def test_prices_and_quantities_on_the_grid_convert_exactly():
    assert BTC.price_to_ticks("65000.01") == 6_500_001
    assert BTC.price_to_ticks(" 0.01 ") == 1
    assert BTC.qty_to_lots("1.5") == 15_000
    assert BTC.ticks_to_price(6_500_001) == "65000.01"
    assert BTC.lots_to_qty(15_000) == "1.5"
    assert BTC.ticks_to_price(100) == "1"


@pytest.mark.parametrize("text", ["65000.001", "0.005", "1e-3"])
def test_off_grid_prices_are_refused_not_rounded(text):
    with pytest.raises(GridError, match="not a multiple"):
        BTC.price_to_ticks(text)


@pytest.mark.parametrize("text", ["", "abc", "-1", "0", "NaN", "Infinity", "1,5"])
def test_nonsense_is_refused_with_a_reason(text):
    with pytest.raises(GridError):
        BTC.qty_to_lots(text)


def test_non_strings_and_huge_values_are_refused():
    with pytest.raises(GridError, match="decimal string"):
        BTC.price_to_ticks(1.5)  # floats never become money
    with pytest.raises(GridError, match="too large"):
        BTC.qty_to_lots(str((QTY_LOTS_MAX + 1) * Decimal("0.0001")))
    for huge in ("1e40", "1e999999999", "9" * 5000):  # beyond what Decimal divides exactly
        with pytest.raises(GridError, match="too large"):
            BTC.price_to_ticks(huge)


@given(st.integers(1, 2**48 - 1))
def test_ticks_round_trip_through_text(ticks):
    assert BTC.price_to_ticks(BTC.ticks_to_price(ticks)) == ticks
    assert BTC.qty_to_lots(BTC.lots_to_qty(ticks)) == ticks


def test_remembered_conversions_answer_as_the_first_one_and_refusals_are_never_kept():
    """Conversions are remembered (core/market.py `CONVERSIONS_KEPT`): asked again, a
    value converts the same; a refused one is refused again, with its reason; a text
    longer than `KEPT_TEXT_MAX` converts the same but is not remembered."""
    from p2pexchange.core import market

    eth = DEFAULT_MARKETS["ETH-USD"]  # another lot size: the grid is part of the key
    for _ in range(2):
        assert BTC.qty_to_lots("0.5") == 5_000 and eth.qty_to_lots("0.5") == 500
        assert BTC.lots_to_qty(5_000) == "0.5" and eth.lots_to_qty(5_000) == "5"
        for bad, reason in (("0.00001", "not a multiple"), ("-1", "positive"),
                            ("x", "not a decimal")):
            with pytest.raises(GridError, match=reason):
                BTC.qty_to_lots(bad)
    long = "0" * market.KEPT_TEXT_MAX + "1.5"
    before = market._to_units.cache_info().currsize
    assert BTC.qty_to_lots(long) == 15_000
    assert market._to_units.cache_info().currsize == before
    with pytest.raises(GridError, match="must be a decimal string"):
        BTC.price_to_ticks(1.5)  # type: ignore[arg-type]
