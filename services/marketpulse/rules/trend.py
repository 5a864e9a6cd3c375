"""Trend breakout and mean reversion (the seeds' fade-the-overreaction).

The latest price (tick mid, else last trade) is compared with the mean of the token's earlier
prices inside `window_ms` (at least `min_samples` of them). Beyond `threshold`:

- **breakout** follows the move at the touch; its edge is |deviation| in basis points of
  probability (a strength, not a profit claim);
- **fade** takes the other side at the touch, expecting the price back at the mean: the edge is
  (mean - ask - fee) per share bought, or (bid - mean - fee) per share sold, in basis points of
  the cash put up (ask, or 1 - bid for selling = buying the other outcome); at least
  `min_edge_bps`.

The touch must hold `min_depth` shares and the spread be at most `max_spread`. Subject: market.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

from marketpulse.fees import taker_fee_per_share
from marketpulse.rules import RuleDef
from marketpulse.rules.common import (
    PRICE_EPSILON,
    leg,
    market_signal,
    num,
    tick_price,
)
from marketpulse.rules.params import TrendParams
from marketpulse.rules.window import within


def evaluate(
    rule: RuleDef,
    tick: Mapping[str, Any],
    market: Mapping[str, Any],
    samples: Sequence[Sequence[float]],
    last_signals: MutableMapping[str, int],
) -> dict[str, Any] | None:
    """Signal of one tick, or None. `samples` holds the token's prices *including* this tick
    (the newest sample at this tick's time is left out of the mean)."""
    p = rule.params_as(TrendParams)
    price, ts = tick_price(tick), int(tick["ts_ms"])
    bid, ask = tick.get("best_bid"), tick.get("best_ask")
    if price is None or bid is None or ask is None:
        return None
    spread = float(ask) - float(bid)
    if spread > p.max_spread + PRICE_EPSILON:
        return None  # checked before the mean, which costs a pass over the window per tick
    history = [s for s in within(samples, ts, p.window_ms) if s[0] < ts]
    if len(history) < p.min_samples:
        return None
    mean = sum(s[1] for s in history) / len(history)
    dev = price - mean
    if abs(dev) < p.threshold - PRICE_EPSILON:
        return None
    follow_up = (dev > 0) == (p.mode == "breakout")  # BUY when following up or fading down
    side, touch = ("BUY", float(ask)) if follow_up else ("SELL", float(bid))
    size = float((tick.get("ask_size") if follow_up else tick.get("bid_size")) or 0.0)
    if size < p.min_depth:
        return None
    fee = taker_fee_per_share(market.get("fee") or {"model": "none"}, touch)
    if p.mode == "breakout":
        edge_bps, outlay = abs(dev) * 10_000, touch if follow_up else 1.0 - touch
    else:
        per_share = (mean - touch - fee) if follow_up else (touch - mean - fee)
        outlay = touch if follow_up else 1.0 - touch
        edge_bps = per_share / outlay * 10_000
        if per_share <= 0 or edge_bps < p.min_edge_bps:
            return None
    subject = tick["market_id"]
    return market_signal(
        rule,
        tick,
        last_signals,
        ts,
        edge_bps=edge_bps,
        edge_score=edge_bps / 10_000 * size,
        id_parts=[p.mode, tick["token_id"], str(tick["seq"])],
        legs=[leg(subject, tick["token_id"], side, touch, size)],
        size=size,
        notional=outlay * size,
        evidence={
            "mode": p.mode,
            "token": tick["token_id"],
            "price": num(price),
            "mean": num(mean),
            "deviation": num(dev),
            "samples": str(len(history)),
            "spread": num(spread),
            "touch": num(touch),
            "fee_per_share": num(fee),
            "tick_seq": str(tick["seq"]),
        },
        summary=(
            f"{'Breakout' if p.mode == 'breakout' else 'Fade'} on {subject} "
            f"({tick['token_id']}): {price:.3f} vs mean {mean:.3f} of {len(history)} prices; "
            f"{side} at {touch:.3f}"
        ),
    )
