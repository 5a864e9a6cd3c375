"""Whale and new-wallet trades (venues that report the taker's wallet: Polymarket).

One trade may be any of, and signals once naming all that apply:
- **whale**: notional (price x size) at least `min_notional`;
- **new_wallet**: the wallet was first seen at most `new_wallet_window_ms` of event time before
  the trade (or is seen now for the first time) and the notional is at least
  `new_wallet_min_notional`;
- **large_for_market**: the trade is at least `min_volume_share` of the market's volume over
  `volume_window_ms` (itself included), with notional at least `volume_share_min_notional`.

`edge_bps` is that share of recent volume in basis points (flow signals claim no profit: the
level then says how dominant the trade is); `edge_score` is the notional. Subject: the market.
"First seen" is the earliest event time of the wallet's trades seen by this worker's partitions.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

from marketpulse.rules import RuleDef
from marketpulse.rules.common import cooling, leg, make_signal, mark, num
from marketpulse.rules.params import WhaleParams


def first_seen(previous: int | None, ts_ms: int) -> int:
    """A wallet's first-seen time after a trade at `ts_ms` (order-independent: a minimum)."""
    return ts_ms if previous is None else min(int(previous), ts_ms)


def on_trade(
    rule: RuleDef,
    trade: Mapping[str, Any],
    wallet_first_seen: int | None,
    recent_volume: float,
    last_signals: MutableMapping[str, int],
) -> dict[str, Any] | None:
    """Signal of one trade, or None. `wallet_first_seen` is the wallet's state *before* this
    trade (None: never seen); `recent_volume` the market's shares traded in the window,
    this trade included."""
    p = rule.params_as(WhaleParams)
    ts, price, size = int(trade["ts_ms"]), float(trade["price"]), float(trade["size"])
    notional = price * size
    wallet = trade.get("wallet")
    share = size / recent_volume if recent_volume > 0 else 1.0
    kinds = []
    if notional >= p.min_notional:
        kinds.append("whale")
    age = None if wallet_first_seen is None else ts - int(wallet_first_seen)
    if (
        wallet
        and notional >= p.new_wallet_min_notional
        and (age is None or age <= p.new_wallet_window_ms)
    ):
        kinds.append("new_wallet")
    if share >= p.min_volume_share and notional >= p.volume_share_min_notional:
        kinds.append("large_for_market")
    subject = trade["market_id"]
    if not kinds or cooling(last_signals, subject, ts, rule.cooldown_ms):
        return None
    mark(last_signals, subject, ts)
    side = str(trade.get("side", "BUY"))
    return make_signal(
        rule,
        subject=subject,
        event_key=trade["event_key"],
        market_ids=[subject],
        ts_ms=ts,
        trigger_recv_ms=int(trade["recv_ms"]),
        edge_bps=share * 10_000,
        edge_score=notional,
        id_parts=[trade["trade_id"]],
        legs=[leg(subject, trade["token_id"], side, price, size)],
        size=size,
        notional=notional,
        evidence={
            "kinds": ",".join(kinds),
            "trade_id": trade["trade_id"],
            "token": trade["token_id"],
            "wallet": str(wallet),
            "wallet_first_seen_ms": "new" if wallet_first_seen is None else str(wallet_first_seen),
            "wallet_age_ms": "0" if age is None else str(age),
            "price": num(price),
            "notional": num(notional),
            "recent_volume": num(recent_volume),
            "volume_share": num(share),
            "tx_hash": str(trade.get("tx_hash")),
        },
        summary=(
            f"{'/'.join(kinds)} on {subject}: {side} {size:g} at {price:.3f} "
            f"(${notional:,.0f}, {share:.0%} of recent volume) by {wallet or 'unknown wallet'}"
        ),
    )
