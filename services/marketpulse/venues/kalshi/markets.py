"""Kalshi markets as MarketPulse ``Market`` records (the same schema as every venue).

Ids: market ``ks:<ticker>``, event ``ks:<event_ticker>``, outcome tokens ``ks:<ticker>:yes`` and
``ks:<ticker>:no``. Strike fields are kept as the venue gives them: with ``strike_type`` they make
ladders ("above 100k", "above 110k") machine-readable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from marketpulse.errors import BadMessage
from marketpulse.venues.kalshi.fields import (
    MAX_MS,
    obj,
    optional_float,
    optional_iso_ms,
    text,
)

VENUE = "kalshi"
PREFIX = "ks:"

# Kalshi statuses (REST) → active | closed | resolved. "initialized"/"unopened" markets do not
# trade yet and "inactive" ones are paused: neither takes orders, so both read as closed.
_STATUS = {
    "active": "active",
    "open": "active",
    "initialized": "closed",
    "unopened": "closed",
    "inactive": "closed",
    "paused": "closed",
    "closed": "closed",
    "determined": "resolved",
    "disputed": "resolved",
    "amended": "resolved",
    "settled": "resolved",
    "finalized": "resolved",
}
# Kalshi quotes whole cents unless the market's price_ranges say finer.
DEFAULT_TICK = 0.01
# Counts are fixed-point with two decimals (fractional contracts trade: see count_fp "9.12").
MIN_SIZE = 0.01


def market_id(ticker: str) -> str:
    return f"{PREFIX}{ticker}"


def event_id(event_ticker: str) -> str:
    return f"{PREFIX}{event_ticker}"


def token_id(ticker: str, side: str) -> str:
    return f"{PREFIX}{ticker}:{side}"


def derived_event_ticker(ticker: str) -> str:
    """Kalshi market tickers are ``<event ticker>-<suffix>``; used only until the market's own
    ``event_ticker`` has been seen over REST."""
    head, sep, _ = ticker.rpartition("-")
    return head if sep else ticker


def status(venue_status: str) -> str:
    return _STATUS.get(venue_status, "closed")


@dataclass(frozen=True, slots=True)
class EventInfo:
    """What a market record needs from its event."""

    title: str
    exclusive: bool
    market_count: int


def event_info(event: dict[str, Any], n_markets: int) -> EventInfo:
    return EventInfo(
        title=str(event.get("title") or ""),
        exclusive=event.get("mutually_exclusive") is True,
        market_count=max(1, n_markets),
    )


def market_record(market: Any, event: EventInfo | None, updated_ms: int) -> dict[str, Any]:
    """A ``Market`` record. Without the event (a bare /markets page) the market is not known to
    belong to a complete set, so ``exclusive`` is False and the count 1: rules skip it."""
    m = obj(market, "market")
    ticker = text(m, "ticker")
    venue_status = text(m, "status")
    result = m.get("result")
    resolved = status(venue_status) == "resolved"
    return {
        "market_id": market_id(ticker),
        "event_id": event_id(text(m, "event_ticker")),
        "venue": VENUE,
        "question": str(m.get("title") or ticker),
        "event_title": event.title if event else "",
        "slug": None,
        "outcomes": [
            {"name": "Yes", "token_id": token_id(ticker, "yes")},
            {"name": "No", "token_id": token_id(ticker, "no")},
        ],
        "status": status(venue_status),
        "end_ms": optional_iso_ms(m, "close_time"),
        "neg_risk": False,
        "neg_risk_augmented": False,
        "exclusive": event.exclusive if event else False,
        "event_market_count": event.market_count if event else 1,
        "tick_size": _tick(m.get("price_ranges")),
        "min_size": MIN_SIZE,
        # rate 0: fees.py applies the configured Kalshi default (0.07)
        "fee": {"model": "kalshi", "rate": 0.0, "exponent": 1.0},
        "rules_text": _rules(m),
        "strike_type": _optional_text(m, "strike_type"),
        "floor_strike": optional_float(m, "floor_strike"),
        "cap_strike": optional_float(m, "cap_strike"),
        "winning_token_id": (
            token_id(ticker, result) if resolved and result in ("yes", "no") else None
        ),
        "updated_ms": updated_ms,
    }


def with_lifecycle(record: dict[str, Any], msg: dict[str, Any], recv_ms: int) -> dict[str, Any]:
    """A known market's record after a ``market_lifecycle_v2`` event."""
    kind = msg.get("event_type")
    out = dict(record, updated_ms=recv_ms)
    if kind == "activated":
        out["status"] = "active"
    elif kind == "deactivated":
        out["status"] = "closed"
    elif kind in ("determined", "settled"):
        out["status"] = "resolved"
        result = msg.get("result")
        if result in ("yes", "no"):
            out["winning_token_id"] = f"{record['market_id']}:{result}"
    close_ts = msg.get("close_ts")
    if (
        isinstance(close_ts, int)
        and not isinstance(close_ts, bool)
        and 0 < close_ts * 1000 < MAX_MS
    ):
        out["end_ms"] = close_ts * 1000
    return out


def _optional_text(m: dict[str, Any], name: str) -> str | None:
    value = m.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadMessage("bad_field", f"{name}={value!r} is not a string")
    return value


def _rules(m: dict[str, Any]) -> str | None:
    parts = [str(m[k]).strip() for k in ("rules_primary", "rules_secondary") if m.get(k)]
    return "\n\n".join(parts) or None


def _tick(ranges: Any) -> float:
    steps = []
    if isinstance(ranges, list):
        for r in ranges:
            step = r.get("step") if isinstance(r, dict) else None
            value = optional_float({"step": step}, "step")
            if value and value > 0:
                steps.append(value)
    return min(steps) if steps else DEFAULT_TICK
