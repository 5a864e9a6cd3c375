"""Paper fills against crafted books: full, partial, none, fees, level order not trusted."""

from __future__ import annotations

from typing import Any

import pytest

from marketpulse.execution.paper import PaperExecutor, fill_leg, slippage_bps
from marketpulse.fees import kalshi_order_fee

NO_FEE = {"model": "none"}


def book(asks: list[tuple[float, float]], bids: list[tuple[float, float]] = ()) -> dict[str, Any]:
    return {
        "token_id": "t",
        "ts_ms": 1_000,
        "asks": [{"price": p, "size": s} for p, s in asks],
        "bids": [{"price": p, "size": s} for p, s in bids],
    }


def leg(side: str, price: float, size: float) -> dict[str, Any]:
    return {"market_id": "pm:m", "token_id": "t", "side": side, "price": price, "size": size}


def test_a_buy_fills_fully_across_levels_at_its_vwap() -> None:
    # asks deliberately out of order: the venue's level order is not trusted
    fill = fill_leg(leg("BUY", 0.42, 150), book([(0.42, 100), (0.40, 100)]), NO_FEE)
    assert fill is not None
    assert fill["size"] == 150
    assert fill["price"] == pytest.approx((0.40 * 100 + 0.42 * 50) / 150)
    assert fill["levels"] == 2 and fill["fee"] == 0 and fill["book_ts_ms"] == 1_000


def test_a_buy_fills_partially_when_depth_within_the_limit_is_short() -> None:
    fill = fill_leg(leg("BUY", 0.41, 150), book([(0.40, 60), (0.41, 30), (0.45, 1000)]), NO_FEE)
    assert fill is not None and fill["size"] == 90 and fill["levels"] == 2


def test_nothing_fills_above_the_limit_or_without_a_book() -> None:
    assert fill_leg(leg("BUY", 0.39, 10), book([(0.40, 100)]), NO_FEE) is None
    assert fill_leg(leg("SELL", 0.60, 10), book([], [(0.59, 100)]), NO_FEE) is None
    assert fill_leg(leg("BUY", 0.5, 10), None, NO_FEE) is None
    assert fill_leg(leg("BUY", 0.5, 10), book([]), NO_FEE) is None


def test_a_sell_takes_bids_from_the_highest_down() -> None:
    fill = PaperExecutor().fill(leg("SELL", 0.55, 120), book([], [(0.55, 100), (0.60, 50)]), NO_FEE)
    assert fill is not None and fill["size"] == 120
    assert fill["price"] == pytest.approx((0.60 * 50 + 0.55 * 70) / 120)


def test_polymarket_fee_is_charged_per_level_by_the_venue_formula() -> None:
    fee = {"model": "polymarket", "rate": 0.25, "exponent": 2.0}
    fill = fill_leg(leg("BUY", 0.5, 100), book([(0.4, 50), (0.5, 50)]), fee)
    expected = 50 * 0.25 * (0.4 * 0.6) ** 2 + 50 * 0.25 * (0.5 * 0.5) ** 2
    assert fill is not None and fill["fee"] == pytest.approx(expected, abs=1e-6)


def test_kalshi_fee_rounds_up_to_the_cent_per_level() -> None:
    fee = {"model": "kalshi", "rate": 0.07}
    fill = fill_leg(leg("BUY", 0.35, 13), book([(0.33, 3), (0.35, 10)]), fee)
    assert fill is not None
    assert fill["fee"] == pytest.approx(kalshi_order_fee(3, 0.33) + kalshi_order_fee(10, 0.35))


def test_slippage_is_the_vwap_at_size_against_the_reference() -> None:
    b = book([(0.40, 50), (0.44, 50)], [(0.38, 100)])
    assert slippage_bps(b, "BUY", 50, 0.40) == pytest.approx(0.0)
    assert slippage_bps(b, "BUY", 100, 0.40) == pytest.approx(500.0)  # vwap 0.42
    assert slippage_bps(b, "SELL", 100, 0.40) == pytest.approx(500.0)  # 0.38 vs 0.40
    assert slippage_bps(book([]), "BUY", 10, 0.4) is None
