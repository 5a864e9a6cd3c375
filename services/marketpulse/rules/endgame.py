"""Endgame sweep: someone buying a near-certain outcome close to resolution, in size.

- **sweep** (on a trade): the market ends within `horizon_ms` of the trade's event time, the
  traded price is at least `min_price`, and the volume of the trade's bucket is a z-score of at
  least `z_threshold` above the token's previous buckets (missing buckets count as zero volume
  between the first known one and the current). Edge: what the swept share still pays if it
  resolves as priced, net of the taker fee, in basis points of its price.
- **tick size** (on metadata): the market's tick size changes to `tick_size_trigger` (0.001:
  Polymarket refines the tick of markets priced near 0 or 1).
- **resolution** (on metadata): the market becomes resolved or gets a winning token.

Subject: the market. Metadata-triggered signals carry no edge (level by edge 0) and use the
market's `updated_ms` as event time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

from marketpulse.fees import taker_fee_per_share
from marketpulse.rules import RuleDef
from marketpulse.rules.common import cooling, leg, make_signal, mark, market_signal, num
from marketpulse.rules.params import EndgameParams

_TICK_EPSILON = 1e-12


def volume_z(
    buckets: Sequence[Sequence[float]], ts_ms: int, p: EndgameParams
) -> tuple[float, float, float, int] | None:
    """(z, current volume, mean, history length) of the bucket holding `ts_ms`, or None with
    fewer than `min_history` past buckets."""
    start = ts_ms - ts_ms % p.bucket_ms
    by_start = {int(b[0]): float(b[1]) for b in buckets}
    current = by_start.get(start, 0.0)
    known = [s for s in by_start if s < start]
    if not known:
        return None
    first = max(min(known), start - p.history_buckets * p.bucket_ms)
    past = [by_start.get(s, 0.0) for s in range(first, start, p.bucket_ms)]
    if len(past) < p.min_history:
        return None
    mean = sum(past) / len(past)
    std = math.sqrt(sum((v - mean) ** 2 for v in past) / len(past))
    z = (current - mean) / std if std > 0 else math.inf if current > mean else 0.0
    return z, current, mean, len(past)


def on_trade(
    rule: RuleDef,
    trade: Mapping[str, Any],
    market: Mapping[str, Any],
    buckets: Sequence[Sequence[float]],
    last_signals: MutableMapping[str, int],
) -> dict[str, Any] | None:
    """Sweep signal of one trade, or None. `buckets` already include this trade's volume."""
    p = rule.params_as(EndgameParams)
    ts, price, end = int(trade["ts_ms"]), float(trade["price"]), market.get("end_ms")
    if end is None or not 0 <= int(end) - ts <= p.horizon_ms or price < p.min_price:
        return None
    if trade.get("side", "BUY") != "BUY" or price >= 1:
        return None
    stats = volume_z(buckets, ts, p)
    if stats is None or stats[0] < p.z_threshold:
        return None
    subject = trade["market_id"]
    z, current, mean, n = stats
    fee = taker_fee_per_share(market.get("fee") or {"model": "none"}, price)
    per_share = 1.0 - price - fee
    size = float(trade["size"])
    return market_signal(
        rule,
        trade,
        last_signals,
        ts,
        edge_bps=per_share / price * 10_000,
        edge_score=per_share * size,
        id_parts=["sweep", trade["trade_id"]],
        legs=[leg(subject, trade["token_id"], "BUY", price, size)],
        size=size,
        notional=price * size,
        evidence={
            "trigger": "sweep",
            "token": trade["token_id"],
            "trade_id": trade["trade_id"],
            "price": num(price),
            "ms_to_end": str(int(end) - ts),
            "bucket_volume": num(current),
            "mean_volume": num(mean),
            "volume_z": "inf" if math.isinf(z) else num(z),
            "history_buckets": str(n),
            "fee_per_share": num(fee),
        },
        summary=(
            f"Endgame sweep on {subject}: {size:g} bought at {price:.3f}, "
            f"{(int(end) - ts) / 3_600_000:.1f}h before end, volume z {z:.1f}"
        ),
    )


def on_market(
    rule: RuleDef,
    previous: Mapping[str, Any] | None,
    market: Mapping[str, Any],
    last_signals: MutableMapping[str, int],
) -> list[dict[str, Any]]:
    """Signals of a metadata change: tick size refined to the trigger, market resolved."""
    p = rule.params_as(EndgameParams)
    if previous is None:
        return []  # first sight: no change to speak of (a replayed snapshot must not fire)
    out = []
    old_tick, new_tick = float(previous.get("tick_size", 0.01)), float(market.get("tick_size", 0))
    if (
        p.on_tick_size
        and abs(new_tick - p.tick_size_trigger) < _TICK_EPSILON
        and abs(old_tick - new_tick) > _TICK_EPSILON
    ):
        out.append(("tick_size", {"old_tick_size": num(old_tick), "tick_size": num(new_tick)}))
    was = previous.get("status") == "resolved" or previous.get("winning_token_id")
    now = market.get("status") == "resolved" or market.get("winning_token_id")
    if p.on_resolution and now and not was:
        out.append(
            (
                "resolution",
                {
                    "status": str(market.get("status")),
                    "winner": str(market.get("winning_token_id")),
                },
            )
        )
    signals = []
    subject, ts = market["market_id"], int(market["updated_ms"])
    for trigger, evidence in out:
        key = f"{subject}|{trigger}"
        if cooling(last_signals, key, ts, rule.cooldown_ms):
            continue
        mark(last_signals, key, ts)
        signals.append(
            make_signal(
                rule,
                subject=subject,
                event_key=market["event_id"],
                market_ids=[subject],
                ts_ms=ts,
                trigger_recv_ms=ts,
                edge_bps=0.0,
                edge_score=0.0,
                id_parts=[trigger],
                evidence={"trigger": trigger, **evidence},
                summary=f"Endgame {trigger.replace('_', ' ')} on {subject}: "
                + ", ".join(f"{k}={v}" for k, v in evidence.items()),
            )
        )
    return signals
