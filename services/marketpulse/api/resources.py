"""Markets and signals as the API serves them: response models (the OpenAPI documentation),
their columns and the list queries. Shared by the list routes and the market drilldown."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from marketpulse.api.querying import add_filters, add_time_range, dt, like_pattern, opt_dt, where
from marketpulse.warehouse import Warehouse


class Market(BaseModel):
    market_id: str
    event_id: str
    venue: str
    question: str
    event_title: str
    slug: str | None
    outcome_names: list[str]
    token_ids: list[str]
    status: str
    end_time: datetime | None
    neg_risk: bool
    exclusive: bool
    event_market_count: int
    tick_size: float
    min_size: float
    fee_model: str
    fee_rate: float
    winning_token_id: str | None
    updated: datetime


class MarketPage(BaseModel):
    items: list[Market]
    limit: int = Field(description="Page size applied (requests above the cap are capped)")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null at end")


class Leg(BaseModel):
    market_id: str
    token_id: str
    side: str
    price: float
    size: float


class Signal(BaseModel):
    signal_id: str
    rule_id: str
    rule_version: int
    level: str
    subject: str
    event_key: str
    market_ids: list[str]
    ts: datetime = Field(description="Event time of the input that fired the rule")
    trigger_recv: datetime
    edge_bps: float
    edge_score: float
    size: float
    notional: float
    legs: list[Leg]
    evidence: dict[str, str]
    summary: str


class SignalPage(BaseModel):
    items: list[Signal]
    limit: int
    next_cursor: str | None


MARKET_COLUMNS = """
    market_id, event_id, venue, question, event_title, slug, outcome_names, token_ids, status,
    toUnixTimestamp64Milli(end_time) AS end_ms, neg_risk, exclusive, event_market_count,
    tick_size, min_size, fee_model, fee_rate, winning_token_id,
    toUnixTimestamp64Milli(updated) AS updated_ms"""

SIGNAL_COLUMNS = """
    signal_id, rule_id, rule_version, level, subject, event_key, market_ids,
    toUnixTimestamp64Milli(ts) AS ts_ms, toUnixTimestamp64Milli(trigger_recv) AS recv_ms,
    edge_bps, edge_score, size, notional, legs_json, evidence, summary"""


def query_markets(
    wh: Warehouse,
    *,
    venue: str | None,
    status: str | None,
    q: str | None,
    limit: int,
    after: str | None,
    ending_before_ms: int | None = None,
) -> list[dict[str, Any]]:
    conditions: list[str] = []
    params: dict[str, Any] = {"limit": limit + 1}
    if venue:
        conditions.append("venue = {venue:String}")
        params["venue"] = venue
    if status:
        conditions.append("status = {status:String}")
        params["status"] = status
    if q:
        conditions.append(
            "(question ILIKE {q:String} OR event_title ILIKE {q:String} "
            "OR market_id ILIKE {q:String} OR ifNull(slug, '') ILIKE {q:String})"
        )
        params["q"] = like_pattern(q)
    if ending_before_ms is not None:
        conditions.append("end_time < fromUnixTimestamp64Milli({ending:Int64}, 'UTC')")
        params["ending"] = ending_before_ms
    if after is not None:
        conditions.append("market_id > {after:String}")
        params["after"] = after
    # FINAL: the latest version of each market (ReplacingMergeTree(updated)), never two.
    sql = (
        f"SELECT {MARKET_COLUMNS} FROM markets FINAL WHERE {where(conditions)} "
        "ORDER BY market_id LIMIT {limit:UInt32}"
    )
    return wh.query(sql, params)


def query_signals(
    wh: Warehouse,
    *,
    rule: str | None,
    level: str | None,
    market: str | None,
    since_ms: int | None,
    until_ms: int | None,
    limit: int,
    before: tuple[int, str] | None,
) -> list[dict[str, Any]]:
    conditions: list[str] = []
    params: dict[str, Any] = {"limit": limit + 1}
    add_filters(conditions, params, rule=rule, level=level, market=market)
    add_time_range(conditions, params, since_ms, until_ms)
    if before is not None:
        # Keyset pagination on (ts, signal_id), newest first: stable while new rows arrive.
        conditions.append(
            "(ts < fromUnixTimestamp64Milli({c_ts:Int64}, 'UTC') OR "
            "(ts = fromUnixTimestamp64Milli({c_ts:Int64}, 'UTC') AND signal_id < {c_id:String}))"
        )
        params["c_ts"], params["c_id"] = before
    # Skip indexes (market_ids, signal_id) also under FINAL: every copy of a signal id carries
    # the same content, so skipping a granule can never surface a stale version.
    sql = (
        f"SELECT {SIGNAL_COLUMNS} FROM signals FINAL WHERE {where(conditions)} "
        "ORDER BY ts DESC, signal_id DESC LIMIT {limit:UInt32} "
        "SETTINGS use_skip_indexes_if_final = 1"
    )
    return wh.query(sql, params)


def market_model(row: dict[str, Any]) -> Market:
    return Market(**row, end_time=opt_dt(row["end_ms"]), updated=dt(row["updated_ms"]))


def signal_model(row: dict[str, Any]) -> Signal:
    return Signal(
        **row,
        ts=dt(row["ts_ms"]),
        trigger_recv=dt(row["recv_ms"]),
        legs=json.loads(row["legs_json"]),
    )
