"""How many shares an intent trades: fixed notional, fractional Kelly, or volatility-scaled.
Pure functions of the signal, its markets and the sizing config.

Every leg of an intent trades the same number of shares (an arbitrage set needs one of each),
floored to the venue's lot and refused below the markets' minimum order size; limit prices are
rounded to each market's tick *away* from the book (a buy up, a sell down) so that rounding never
makes the signal's own price unreachable.

The cash of one share of every leg (a "set") is the signal's own `notional / size` when it gives
both (it knows the fees and, for a sell-side set, that minting costs 1), else Σ price of the buys
plus Σ (1 - price) of the sells (the collateral of a short binary share).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from marketpulse.execution.config import Sizing

# Float noise guard for rounding (0.1 + 0.2 ticks must not floor one lot below).
_EPS = 1e-9


@dataclass(frozen=True)
class Sized:
    """The legs an intent would trade; `shares == 0` with `why` when it trades nothing."""

    method: str
    shares: float
    notional: float
    legs: list[dict[str, Any]] = field(default_factory=list)
    detail: str = ""
    why: str = ""


def venue_of(market_id: str) -> str:
    """The venue prefix of a market id (`pm:0x..` → `pm`)."""
    return market_id.split(":", 1)[0] if ":" in market_id else ""


def round_to_tick(price: float, tick: float, side: str) -> float:
    """A limit price on the tick grid: a buy rounds up, a sell down, within (0, 1)."""
    if tick <= 0:
        return price
    steps = price / tick
    n = math.ceil(steps - _EPS) if side == "BUY" else math.floor(steps + _EPS)
    decimals = max(0, -math.floor(math.log10(tick)) + 1)
    return round(min(max(n * tick, tick), 1.0 - tick), decimals)


def floor_to_lot(shares: float, lot: float) -> float:
    if lot <= 0:
        return shares
    decimals = max(0, -math.floor(math.log10(lot)) + 1)
    return round(math.floor(shares / lot + _EPS) * lot, decimals)


def set_outlay(signal: Mapping[str, Any]) -> float:
    """Cash needed for one share of every leg (see the module doc)."""
    size, notional = float(signal.get("size") or 0.0), float(signal.get("notional") or 0.0)
    if size > 0 and notional > 0:
        return notional / size
    return sum(
        float(lg["price"]) if lg["side"] == "BUY" else 1.0 - float(lg["price"])
        for lg in signal["legs"]
    )


def confidence_of(signal: Mapping[str, Any], sizing: Sizing) -> float:
    """The rule's own confidence when its evidence gives one, else the level's default."""
    raw = (signal.get("evidence") or {}).get("confidence")
    try:
        if raw is not None:
            return min(1.0, max(0.0, float(raw)))
    except ValueError:
        pass
    return float(sizing.confidence.get(signal["level"], 0.5))


def kelly_fraction(edge: float, confidence: float, loss: float) -> float:
    """Full-Kelly stake of a bet returning `edge` with probability `confidence` and losing
    `loss` of the stake otherwise: maximises c·ln(1+e·f) + (1-c)·ln(1-L·f), which gives
    f* = c/L - (1-c)/e; clamped to [0, 1] (never short a signal, never more than the bankroll)."""
    if edge <= 0 or loss <= 0:
        return 0.0
    return min(1.0, max(0.0, confidence / loss - (1.0 - confidence) / edge))


def per_share_volatility(signal: Mapping[str, Any]) -> float:
    """Price volatility of one set: the rule's evidence["volatility"] when given, else the
    largest leg's binary payoff deviation sqrt(p(1-p)) (a set treated as no better hedged
    than its riskiest leg: conservative for arbitrage, exact for one leg)."""
    raw = (signal.get("evidence") or {}).get("volatility")
    try:
        if raw is not None and float(raw) > 0:
            return float(raw)
    except ValueError:
        pass
    return max(
        math.sqrt(max(0.0, p * (1.0 - p))) for p in (float(lg["price"]) for lg in signal["legs"])
    )


def target_notional(signal: Mapping[str, Any], sizing: Sizing, outlay: float) -> tuple[float, str]:
    """Cash the method wants to put on this signal, and how it got there."""
    if sizing.method == "fixed":
        return sizing.fixed_notional, f"fixed {sizing.fixed_notional:g}"
    if sizing.method == "kelly":
        edge = float(signal["edge_bps"]) / 10_000.0
        conf = confidence_of(signal, sizing)
        f = kelly_fraction(edge, conf, sizing.kelly_loss)
        cash = sizing.bankroll * sizing.kelly_fraction * f
        return cash, (
            f"kelly edge={edge:.4f} confidence={conf:g} loss={sizing.kelly_loss:g} "
            f"f*={f:.4f} x {sizing.kelly_fraction:g} of bankroll {sizing.bankroll:g}"
        )
    sigma = per_share_volatility(signal)
    shares = sizing.target_risk / sigma if sigma > 0 else 0.0
    return shares * outlay, f"volatility sigma={sigma:.4f} target_risk={sizing.target_risk:g}"


def size_intent(
    signal: Mapping[str, Any], markets: Mapping[str, Mapping[str, Any]], sizing: Sizing
) -> Sized:
    """The legs of the intent for `signal` (its legs, sized and rounded)."""
    legs = signal.get("legs") or []
    if not legs:
        return Sized(sizing.method, 0.0, 0.0, why="signal has no legs")
    outlay = set_outlay(signal)
    if outlay <= 0:
        return Sized(sizing.method, 0.0, 0.0, why=f"no cash outlay per set ({outlay:g})")
    cash, detail = target_notional(signal, sizing, outlay)
    shares = cash / outlay
    if sizing.cap_at_signal_size and float(signal.get("size") or 0.0) > 0:
        shares = min(shares, float(signal["size"]))
    venue = venue_of(legs[0]["market_id"])
    lot = sizing.lot_for(venue)
    shares = floor_to_lot(shares, lot)
    min_size = max(float(markets.get(lg["market_id"], {}).get("min_size", 0.0)) for lg in legs)
    detail += f"; {shares:g} shares/leg (lot {lot:g}, min {min_size:g}) at {outlay:.4f}/set"
    if shares <= 0 or shares + _EPS < min_size:
        return Sized(
            sizing.method, 0.0, 0.0, detail=detail, why=f"{shares:g} shares < min size {min_size:g}"
        )
    out = [
        {
            "market_id": lg["market_id"],
            "token_id": lg["token_id"],
            "side": lg["side"],
            "price": round_to_tick(float(lg["price"]), tick_of(markets, lg), lg["side"]),
            "size": shares,
        }
        for lg in legs
    ]
    return Sized(sizing.method, shares, round(shares * outlay, 6), out, detail)


def tick_of(markets: Mapping[str, Mapping[str, Any]], leg: Mapping[str, Any]) -> float:
    return float(markets.get(leg["market_id"], {}).get("tick_size", 0.01) or 0.01)
