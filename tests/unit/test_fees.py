"""Taker fee schedules: the formulas of VENUES.md, Kalshi's per-order rounding, bad models."""

from __future__ import annotations

import pytest

from marketpulse.fees import kalshi_order_fee, order_fee, taker_fee_per_share


def test_no_fee_model_costs_nothing() -> None:
    assert taker_fee_per_share({"model": "none", "rate": 0.5, "exponent": 1.0}, 0.4) == 0.0


@pytest.mark.parametrize(
    ("rate", "exponent", "price", "expected"),
    [
        (0.02, 1.0, 0.5, 0.02 * 0.25),
        (0.02, 1.0, 0.3, 0.02 * 0.21),
        (0.25, 2.0, 0.3, 0.25 * 0.21**2),
        (0.0, 1.0, 0.5, 0.0),  # fee-free markets carry rate 0
    ],
)
def test_polymarket_fee_per_share(
    rate: float, exponent: float, price: float, expected: float
) -> None:
    fee = {"model": "polymarket", "rate": rate, "exponent": exponent}
    assert taker_fee_per_share(fee, price) == pytest.approx(expected)


def test_polymarket_fee_is_symmetric_and_largest_at_half() -> None:
    fee = {"model": "polymarket", "rate": 0.02, "exponent": 1.0}
    assert taker_fee_per_share(fee, 0.2) == pytest.approx(taker_fee_per_share(fee, 0.8))
    assert taker_fee_per_share(fee, 0.5) > taker_fee_per_share(fee, 0.2)


def test_kalshi_fee_per_contract_defaults_to_seven_percent() -> None:
    assert taker_fee_per_share({"model": "kalshi", "rate": 0.0}, 0.5) == pytest.approx(0.0175)
    assert taker_fee_per_share({"model": "kalshi", "rate": 0.035}, 0.5) == pytest.approx(0.00875)


@pytest.mark.parametrize(
    ("contracts", "price", "expected"),
    [
        (100, 0.5, 1.75),  # 1.7500000000000002 in floats: must not round up to 1.76
        (1, 0.5, 0.02),  # 0.0175 rounds up to 2 cents
        (10, 0.3, 0.15),  # 0.147 → 0.15
        (1, 0.01, 0.01),  # any non-zero fee costs at least a cent
    ],
)
def test_kalshi_order_fee_rounds_up_to_the_cent(
    contracts: float, price: float, expected: float
) -> None:
    assert kalshi_order_fee(contracts, price) == pytest.approx(expected)


def test_order_fee_is_continuous_except_for_kalshi() -> None:
    fills = [(0.4, 10.0), (0.45, 5.0)]
    poly = {"model": "polymarket", "rate": 0.02, "exponent": 1.0}
    assert order_fee(poly, fills) == pytest.approx(10 * 0.02 * 0.24 + 5 * 0.02 * 0.2475)
    # Kalshi: every level is booked as its own order, each rounded up to the cent.
    kalshi = {"model": "kalshi", "rate": 0.0, "exponent": 1.0}
    assert order_fee(kalshi, fills) == pytest.approx(0.17 + 0.09)
    assert order_fee(kalshi, fills) >= sum(s * taker_fee_per_share(kalshi, p) for p, s in fills)


def test_unknown_model_is_named_in_the_error() -> None:
    with pytest.raises(ValueError, match="'maker-rebate'"):
        taker_fee_per_share({"model": "maker-rebate"}, 0.5)
