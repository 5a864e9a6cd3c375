"""Spike: price velocity over a short event-time window, on a liquid book.

Fires when the token's price (tick mid, else last trade) moved by at least `min_move` from the
oldest price inside `window_ms`, the top of book is no wider than `max_spread` and holds at least
`min_depth` shares on both sides. Edge is the move in basis points of probability; the leg is
the momentum side at the touch (an alert, not an arbitrage). Subject: the market.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

from marketpulse.rules import RuleDef
from marketpulse.rules.common import (
    PRICE_EPSILON,
    leg,
    market_signal,
    num,
    tick_price,
)
from marketpulse.rules.params import SpikeParams
from marketpulse.rules.window import within


def evaluate(
    rule: RuleDef,
    tick: Mapping[str, Any],
    samples: Sequence[Sequence[float]],
    last_signals: MutableMapping[str, int],
) -> dict[str, Any] | None:
    """Signal of one tick, or None. `samples` is the token's price history *including* this
    tick; `last_signals` (subject -> event time) is updated when a signal is returned."""
    p = rule.params_as(SpikeParams)
    price, ts = tick_price(tick), int(tick["ts_ms"])
    window = within(samples, ts, p.window_ms)
    if price is None or len(window) < p.min_samples:
        return None
    base_ts, base = window[0]
    move = price - base
    bid, ask = tick.get("best_bid"), tick.get("best_ask")
    if abs(move) < p.min_move - PRICE_EPSILON or bid is None or ask is None:
        return None
    spread = float(ask) - float(bid)
    depth = min(float(tick.get("bid_size") or 0.0), float(tick.get("ask_size") or 0.0))
    subject = tick["market_id"]
    if spread > p.max_spread + PRICE_EPSILON or depth < p.min_depth:
        return None
    up = move > 0
    side, touch = ("BUY", float(ask)) if up else ("SELL", float(bid))
    size = float(tick["ask_size"] if up else tick["bid_size"])
    return market_signal(
        rule,
        tick,
        last_signals,
        ts,
        edge_bps=abs(move) * 10_000,
        edge_score=abs(move) * depth,
        id_parts=[tick["token_id"], str(tick["seq"])],
        legs=[leg(subject, tick["token_id"], side, touch, size)],
        size=size,
        notional=touch * size,
        evidence={
            "token": tick["token_id"],
            "price": num(price),
            "base_price": num(base),
            "base_ts_ms": str(int(base_ts)),
            "move": num(move),
            "samples": str(len(window)),
            "spread": num(spread),
            "depth": num(depth),
            "tick_seq": str(tick["seq"]),
        },
        summary=(
            f"Spike on {subject} ({tick['token_id']}): {base:.3f} -> {price:.3f} "
            f"in {(ts - int(base_ts)) / 1000:g}s, depth {depth:g}, spread {spread:.3f}"
        ),
    )
