"""Gamma: discovery of events and markets, and their normalization into Market records.

Discovery pages through ``/events/keyset`` passing each page's ``next_cursor`` back as
``after_cursor`` (a ``cursor=`` parameter is silently ignored and offset paging is gone). Every
page is delivered as a raw frame (channel ``rest:gamma``) so a recording replays discovery too;
the normalizer turns it into Market records and publishes only what is new or changed, which makes
periodic re-discovery the reconciliation of new, changed, closed and resolved markets.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

from marketpulse.errors import BadMessage
from marketpulse.venues.base import Frame, FrameSink
from marketpulse.venues.polymarket import PREFIX, VENUE
from marketpulse.venues.polymarket import parse as p
from marketpulse.venues.polymarket.ratelimit import VenueHttp

log = logging.getLogger(__name__)

CHANNEL = "rest:gamma"
EVENTS_PAGE = 500  # the keyset endpoint's maximum
NO_FEE: dict[str, Any] = {"model": "none", "rate": 0.0, "exponent": 1.0}

Record = dict[str, Any]


def items(payload: Any) -> Iterator[tuple[Record, Record | None]]:
    """(market, its full event or None) for every market in a Gamma payload: a keyset page
    ``{"events"|"markets"|"data": [...], "next_cursor"}``, an array of events or markets, or a
    single event or market."""
    if isinstance(payload, dict) and "id" not in payload and "conditionId" not in payload:
        for key in ("events", "markets", "data"):  # a page, not an event or a market
            if isinstance(payload.get(key), list):
                payload = payload[key]
                break
    for item in payload if isinstance(payload, list) else [payload]:
        item = p.obj(item, "gamma item")
        if "conditionId" in item:
            yield item, None
        elif isinstance(item.get("markets"), list):
            for market in item["markets"]:
                yield p.obj(market, "gamma market"), item
        else:
            raise BadMessage("bad_shape", "gamma item is neither an event nor a market")


def market_record(m: Record, event: Record | None, recv_ms: int) -> Record:
    """The Market record of one Gamma market. ``event`` is its full event (all markets) when
    known; a market listed without it gets ``exclusive=False`` so that no rule assumes it has
    every leg of a multi-outcome set (a partial set would look like an arbitrage)."""
    condition = p.text(m, "conditionId")
    embedded = m.get("events")
    ev = event or (embedded[0] if isinstance(embedded, list) and embedded else None)
    ev = ev if isinstance(ev, dict) else None
    market_id = PREFIX + condition
    names = p.str_list(m.get("outcomes"), "outcomes")
    tokens = p.str_list(m.get("clobTokenIds"), "clobTokenIds")
    if tokens and len(names) != len(tokens):
        raise BadMessage("bad_field", f"{len(names)} outcomes but {len(tokens)} token ids")
    prices = p.str_list(m.get("outcomePrices"), "outcomePrices")
    neg_risk = bool(m.get("negRisk") or (ev or {}).get("negRisk"))
    n_markets = len(event["markets"]) if event is not None else 1
    status, winner = _status(m, tokens, prices)
    return {
        "market_id": market_id,
        "event_id": PREFIX + str(ev["id"]) if ev is not None and "id" in ev else market_id,
        "venue": VENUE,
        "question": str(m.get("question") or ""),
        "event_title": str((ev or {}).get("title") or ""),
        "slug": m.get("slug") if isinstance(m.get("slug"), str) else None,
        "outcomes": [{"name": n, "token_id": t} for n, t in zip(names, tokens, strict=False)],
        "status": status,
        "end_ms": p.iso_ms(m.get("endDate")) or p.iso_ms(m.get("endDateIso")),
        "neg_risk": neg_risk,
        "neg_risk_augmented": bool((ev or {}).get("negRiskAugmented")),
        "exclusive": event is not None and (neg_risk or n_markets == 1),
        "event_market_count": n_markets,
        "tick_size": p.number(m.get("orderPriceMinTickSize") or 0.01, "orderPriceMinTickSize"),
        "min_size": p.number(m.get("orderMinSize") or 1.0, "orderMinSize"),
        "fee": fee_schedule(m),
        "rules_text": str(m.get("description") or (ev or {}).get("description") or "") or None,
        "strike_type": None,
        "floor_strike": None,
        "cap_strike": None,
        "winning_token_id": winner,
        "updated_ms": p.iso_ms(m.get("updatedAt")) or recv_ms,
    }


def _status(m: Record, tokens: list[str], prices: list[str]) -> tuple[str, str | None]:
    """active | closed | resolved, and the winning token once resolved (its price is 1)."""
    if not m.get("closed"):
        return ("active" if m.get("active", True) else "closed"), None
    winners = [t for t, price in zip(tokens, prices, strict=False) if _is_one(price)]
    if len(winners) == 1 or m.get("umaResolutionStatus") == "resolved":
        return "resolved", winners[0] if len(winners) == 1 else None
    return "closed", None


def _is_one(value: str) -> bool:
    try:
        return float(value) == 1.0
    except ValueError:
        return False


def fee_schedule(m: Record) -> Record:
    """Taker fee ``rate x (p(1-p))^exponent`` from the market's ``feeSchedule`` when fees are
    enabled; no fee otherwise (the rates changed in 2026 and live in the data, not in code)."""
    sched = m.get("feeSchedule")
    if not m.get("feesEnabled") or not isinstance(sched, dict):
        return dict(NO_FEE)
    return {
        "model": "polymarket",
        "rate": p.number(sched.get("rate", 0.0), "feeSchedule.rate"),
        "exponent": p.number(sched.get("exponent", 1.0), "feeSchedule.exponent"),
    }


def new_market_record(msg: Record, recv_ms: int) -> Record:
    """A Market record from the WebSocket's ``new_market`` message (custom feature)."""
    condition = str(msg.get("market") or msg.get("condition_id") or "")
    if not condition:
        raise BadMessage("missing_field", "new_market without market/condition_id")
    raw_ev = msg.get("event_message")
    ev: Record = raw_ev if isinstance(raw_ev, dict) else {}
    tokens = p.str_list(msg.get("clob_token_ids") or msg.get("assets_ids"), "clob_token_ids")
    names = p.str_list(msg.get("outcomes"), "outcomes")
    market_id = PREFIX + condition
    return {
        "market_id": market_id,
        "event_id": PREFIX + str(ev["id"]) if "id" in ev else market_id,
        "venue": VENUE,
        "question": str(msg.get("question") or ""),
        "event_title": str(ev.get("title") or ""),
        "slug": msg.get("slug") if isinstance(msg.get("slug"), str) else None,
        "outcomes": [{"name": n, "token_id": t} for n, t in zip(names, tokens, strict=False)],
        "status": "active" if msg.get("active", True) else "closed",
        "end_ms": None,
        "neg_risk": False,
        "neg_risk_augmented": False,
        # Its siblings are unknown until Gamma is read again: never a complete multi set yet.
        "exclusive": False,
        "event_market_count": 1,
        "tick_size": p.number(msg.get("order_price_min_tick_size") or 0.01, "tick_size"),
        "min_size": 1.0,
        "fee": dict(NO_FEE),
        "rules_text": str(msg.get("description") or "") or None,
        "strike_type": None,
        "floor_strike": None,
        "cap_strike": None,
        "winning_token_id": None,
        "updated_ms": p.ts_ms(msg.get("timestamp", recv_ms)),
    }


async def discover(
    http: VenueHttp,
    base_url: str,
    sink: FrameSink,
    *,
    closed: bool = False,
    max_pages: int = 10_000,
) -> int:
    """Page through ``/events/keyset`` and deliver every page as a frame; returns the number of
    pages. Only open events by default (closed ones come back through reconciliation: a market
    that disappears from the open listing is re-read by id)."""
    cursor: str | None = None
    pages = 0
    while pages < max_pages:
        params: dict[str, Any] = {"limit": EVENTS_PAGE, "closed": str(closed).lower()}
        if cursor:
            params["after_cursor"] = cursor
        body = await http.get("gamma:/events", f"{base_url}/events/keyset", params=params)
        await sink.frame(Frame(VENUE, CHANNEL, "pm-gamma", _now_ms(), body))
        pages += 1
        cursor = _next_cursor(body)
        if not cursor:
            break
    return pages


async def fetch_markets(http: VenueHttp, base_url: str, sink: FrameSink, ids: list[str]) -> None:
    """Re-read markets by condition id (≤ 100 per request): how a market that left the open
    listing is seen closing or resolving."""
    for i in range(0, len(ids), 100):
        params = [("condition_ids", c) for c in ids[i : i + 100]] + [("limit", "100")]
        body = await http.get("gamma:/markets", f"{base_url}/markets", params=params)
        await sink.frame(Frame(VENUE, CHANNEL, "pm-gamma", _now_ms(), body))


def _next_cursor(body: bytes) -> str | None:
    try:
        page = json.loads(body)
    except ValueError:
        return None  # the frame itself becomes a dead letter; paging stops here
    cursor = page.get("next_cursor") if isinstance(page, dict) else None
    return cursor if isinstance(cursor, str) and cursor else None


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
