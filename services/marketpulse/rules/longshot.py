"""The seeds' longshot strategies, signal-only (no arbitrage claim, see `LongshotParams`).

- **near_certain**: a token asked in [`min_price`, `max_price`] within `horizon_ms` of its
  market's end; buying it pays (1 - ask - fee) per share if it resolves as priced, in basis
  points of the ask.
- **overpriced_longshot**: a token bid in (0, `max_price`] within `horizon_ms` of the end; by the
  favourite-longshot bias a share `bias` of its price is overpricing, so selling it (buying the
  other outcome at 1 - bid) earns bias x bid - fee per share, in basis points of 1 - bid.

Both need `min_depth` shares at the touch and at least `min_edge_bps`. Subject: the market.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

from marketpulse.fees import taker_fee_per_share
from marketpulse.rules import RuleDef
from marketpulse.rules.common import leg, market_signal, num
from marketpulse.rules.params import LongshotParams


def evaluate(
    rule: RuleDef,
    tick: Mapping[str, Any],
    market: Mapping[str, Any],
    last_signals: MutableMapping[str, int],
) -> dict[str, Any] | None:
    p = rule.params_as(LongshotParams)
    ts, end = int(tick["ts_ms"]), market.get("end_ms")
    if end is None or not 0 <= int(end) - ts <= p.horizon_ms or market.get("status") != "active":
        return None
    fee_schedule = market.get("fee") or {"model": "none"}
    if p.strategy == "near_certain":
        price, depth = tick.get("best_ask"), tick.get("ask_size")
        if price is None or not p.min_price <= price <= p.max_price:
            return None
        fee = taker_fee_per_share(fee_schedule, price)
        per_share, outlay, side = 1.0 - price - fee, float(price), "BUY"
    else:
        price, depth = tick.get("best_bid"), tick.get("bid_size")
        if price is None or not 0 < price <= p.max_price:
            return None
        fee = taker_fee_per_share(fee_schedule, price)
        per_share, outlay, side = p.bias * price - fee, 1.0 - price, "SELL"
    depth = float(depth or 0.0)
    edge_bps = per_share / outlay * 10_000
    subject = tick["market_id"]
    if depth < p.min_depth or per_share <= 0 or edge_bps < p.min_edge_bps:
        return None
    return market_signal(
        rule,
        tick,
        last_signals,
        ts,
        edge_bps=edge_bps,
        edge_score=per_share * depth,
        id_parts=[p.strategy, tick["token_id"], str(tick["seq"])],
        legs=[leg(subject, tick["token_id"], side, float(price), depth)],
        size=depth,
        notional=outlay * depth,
        evidence={
            "strategy": p.strategy,
            "token": tick["token_id"],
            "price": num(float(price)),
            "depth": num(depth),
            "ms_to_end": str(int(end) - ts),
            "fee_per_share": num(fee),
            "per_share": num(per_share),
            "tick_seq": str(tick["seq"]),
        },
        summary=(
            f"Longshot {p.strategy.replace('_', ' ')} on {subject} ({tick['token_id']}): "
            f"{side} {depth:g} at {float(price):.3f}, "
            f"{(int(end) - ts) / 3_600_000:.1f}h before end"
        ),
    )
