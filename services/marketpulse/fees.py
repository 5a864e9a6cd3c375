"""Taker fees of the venues, from a market's fee schedule (`FeeSchedule` in market.avsc).

Rates live in the data (and in config), never in code: Polymarket changed its schedule in 2026,
and Kalshi publishes per-series multipliers. Makers pay nothing on either venue; every rule here
assumes it crosses the spread, so it pays the taker fee.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

KALSHI_DEFAULT_RATE = 0.07
# A hair below one cent so that a float product such as 0.07 * 100 * 0.25 = 1.7500000000000002
# rounds up to 1.75, not 1.76.
_CENT_EPSILON = 1e-9


def taker_fee_per_share(fee: Mapping[str, Any], price: float) -> float:
    """Continuous taker fee of one share (one contract) bought or sold at `price`.

    - ``none``: 0.
    - ``polymarket``: ``rate * (p * (1 - p)) ** exponent`` per share, i.e. the venue's
      ``C x feeRate x (p(1-p))^exponent`` divided by C.
    - ``kalshi``: ``rate * p * (1 - p)`` per contract, ``rate`` defaulting to 0.07 when the
      schedule leaves it at 0. Kalshi really rounds each order's fee *up* to the cent (see
      `kalshi_order_fee`); the continuous form understates it by less than one cent per order.
      Depth walks use this form because a marginal share needs a marginal price; `order_fee`
      puts the rounding back when totals are booked.

    Raises ValueError for an unknown model, naming it.
    """
    model = str(fee.get("model", "none"))
    p = float(price)
    if model == "none":
        return 0.0
    if model == "polymarket":
        return float(fee.get("rate", 0.0)) * (p * (1.0 - p)) ** float(fee.get("exponent", 1.0))
    if model == "kalshi":
        return _kalshi_rate(fee) * p * (1.0 - p)
    raise ValueError(f"unknown fee model {model!r} (expected none, polymarket or kalshi)")


def kalshi_order_fee(contracts: float, price: float, rate: float = KALSHI_DEFAULT_RATE) -> float:
    """Kalshi's fee of one order: ``ceil_to_cent(rate * C * P * (1 - P))`` in dollars."""
    raw = rate * contracts * price * (1.0 - price)
    return math.ceil(raw * 100.0 - _CENT_EPSILON) / 100.0


def order_fee(fee: Mapping[str, Any], fills: Iterable[tuple[float, float]]) -> float:
    """Total taker fee of the fills ``(price, size)`` of one leg.

    Kalshi rounds up per order; counting every price level as its own order is the most
    conservative reading (Σ ceil ≥ ceil Σ), so a Kalshi edge is never overstated.
    """
    if fee.get("model") == "kalshi":
        rate = _kalshi_rate(fee)
        return sum(kalshi_order_fee(size, price, rate) for price, size in fills)
    return sum(size * taker_fee_per_share(fee, price) for price, size in fills)


def _kalshi_rate(fee: Mapping[str, Any]) -> float:
    rate = float(fee.get("rate", 0.0))
    return rate if rate else KALSHI_DEFAULT_RATE
