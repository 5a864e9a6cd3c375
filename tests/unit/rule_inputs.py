"""Builders of rule inputs (ticks, trades, markets) and of rules with overridden params."""

from __future__ import annotations

from typing import Any

from marketpulse.rules import RuleDef, load_rules


def rule(rule_id: str, cooldown_ms: int | None = None, **params: Any) -> RuleDef:
    base = load_rules()[rule_id]
    data = base.model_dump()
    data["params"] = {**base.params, **params}
    if cooldown_ms is not None:
        data["cooldown_ms"] = cooldown_ms
    return RuleDef.model_validate(data)


def tick(
    ts_ms: int,
    bid: float | None,
    ask: float | None,
    *,
    size: float = 500.0,
    token: str = "pm:m1:y",
    seq: int | None = None,
    last: float | None = None,
) -> dict[str, Any]:
    return {
        "event_key": "pm:e1",
        "market_id": token.rsplit(":", 1)[0],
        "token_id": token,
        "venue": "polymarket",
        "ts_ms": ts_ms,
        "recv_ms": ts_ms + 3,
        "seq": ts_ms if seq is None else seq,
        "best_bid": bid,
        "best_ask": ask,
        "bid_size": size,
        "ask_size": size,
        "last_price": last,
    }


def trade(
    ts_ms: int,
    price: float,
    size: float,
    *,
    wallet: str | None = "0xw",
    token: str = "pm:m1:y",
    side: str = "BUY",
    trade_id: str | None = None,
) -> dict[str, Any]:
    return {
        "event_key": "pm:e1",
        "market_id": token.rsplit(":", 1)[0],
        "token_id": token,
        "venue": "polymarket",
        "trade_id": trade_id or f"t{ts_ms}",
        "ts_ms": ts_ms,
        "recv_ms": ts_ms + 3,
        "price": price,
        "size": size,
        "side": side,
        "wallet": wallet,
        "tx_hash": None,
    }


def market(
    market_id: str = "pm:m1",
    *,
    event_id: str = "pm:e1",
    end_ms: int | None = None,
    fee: dict[str, Any] | None = None,
    status: str = "active",
    tick_size: float = 0.01,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "market_id": market_id,
        "event_id": event_id,
        "venue": market_id.split(":")[0],
        "question": f"{market_id}?",
        "outcomes": [
            {"name": "Yes", "token_id": f"{market_id}:y"},
            {"name": "No", "token_id": f"{market_id}:n"},
        ],
        "status": status,
        "end_ms": end_ms,
        "tick_size": tick_size,
        "min_size": 1.0,
        "fee": fee or {"model": "none", "rate": 0.0, "exponent": 1.0},
        "winning_token_id": None,
        "updated_ms": 1_000,
        **extra,
    }
