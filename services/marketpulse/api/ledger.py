"""The paper ledger as the API serves it: order intents (current state and lifecycle), positions
and PnL. Response models (the OpenAPI documentation), their columns and the queries; the routes
are in `execution`. User values reach SQL only as bound `{name:Type}` parameters."""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from marketpulse.api.querying import add_filters, add_time_range, dt, opt_dt, where
from marketpulse.api.resources import Leg
from marketpulse.warehouse import Warehouse

IntentStatus = Literal[
    "suggested", "approved", "rejected", "filled", "partially_filled", "expired", "cancelled"
]
PositionStatus = Literal["open", "closed", "settled"]

# What each decision needs the intent's current state to be; anything else is a 409.
ALLOWED_FROM: dict[str, frozenset[str]] = {
    "approve": frozenset({"suggested"}),
    "reject": frozenset({"suggested"}),
    "cancel": frozenset({"suggested", "approved", "partially_filled"}),
}


# ---- models --------------------------------------------------------------------------------


class RiskCheck(BaseModel):
    name: str
    passed: bool
    value: float
    limit: float
    detail: str


class Fill(BaseModel):
    market_id: str
    token_id: str
    side: str
    price: float = Field(description="Average price of the shares filled")
    size: float
    fee: float = Field(description="Venue fee paid, in dollars")
    levels: int = Field(description="Book levels walked")
    book_ts: datetime = Field(description="Event time of the book filled against")


class Intent(BaseModel):
    """An intent's current state: its highest-seq event."""

    intent_id: str
    signal_id: str
    status: IntentStatus
    seq: int
    created: datetime = Field(description="Event time of its first (suggested) event")
    ts: datetime = Field(description="Event time of its latest transition")
    reason: str
    actor: str
    rule_id: str
    level: str
    subject: str
    event_key: str
    venue: str
    market_ids: list[str]
    approval: str
    mode: str
    sizing: str
    edge_bps: float
    notional: float
    filled_size: float
    fee: float
    expires: datetime | None
    failed_checks: list[str] = Field(description="Risk checks that failed in any event")


class IntentEvent(BaseModel):
    seq: int
    status: IntentStatus
    ts: datetime
    reason: str
    actor: str
    notional: float
    filled_size: float
    fee: float
    expires: datetime | None
    legs: list[Leg]
    checks: list[RiskCheck]
    fills: list[Fill]


class IntentDetail(BaseModel):
    intent: Intent
    events: list[IntentEvent] = Field(description="The whole lifecycle, by seq")


class IntentPage(BaseModel):
    items: list[Intent]
    limit: int
    next_cursor: str | None


class Position(BaseModel):
    position_id: str = Field(description="rule_id|token_id")
    rule_id: str
    venue: str
    event_key: str
    market_id: str
    token_id: str
    size: float = Field(description="Shares held; negative when short")
    avg_price: float
    cost: float = Field(description="Cash in the open shares, fees included")
    fees: float
    realised_pnl: float
    unrealised_pnl: float
    mark_price: float | None
    status: PositionStatus
    ts: datetime


class PositionPage(BaseModel):
    items: list[Position]
    limit: int
    next_cursor: str | None


class PnlTotals(BaseModel):
    realised_pnl: float
    unrealised_pnl: float
    total_pnl: float = Field(description="realised + unrealised")
    fees: float
    open_exposure: float = Field(description="Sum of |cost| over open positions")
    open_positions: int
    positions: int


class RulePnl(PnlTotals):
    rule_id: str


class DailyPnl(BaseModel):
    """A rule's positions as of the end of one day (cumulative, not that day's change)."""

    day: date
    rule_id: str
    realised_pnl: float
    unrealised_pnl: float
    fees: float


class Pnl(BaseModel):
    rules: list[RulePnl]
    total: PnlTotals
    days: list[DailyPnl] | None = Field(None, description="With by=day only")


# ---- intents -------------------------------------------------------------------------------

INTENT_COLUMNS = """
    intent_id, signal_id, status, seq, toUnixTimestamp64Milli(created) AS created_ms,
    toUnixTimestamp64Milli(ts) AS ts_ms, reason, actor, rule_id, level, subject, event_key,
    venue, market_ids, approval, mode, sizing, edge_bps, notional, filled_size, fee,
    toUnixTimestamp64Milli(expires) AS expires_ms, failed_checks"""

EVENT_COLUMNS = """
    seq, status, toUnixTimestamp64Milli(ts) AS ts_ms, reason, actor, notional, filled_size, fee,
    toUnixTimestamp64Milli(expires) AS expires_ms, legs_json,
    check_names, check_passed, check_values, check_limits, check_details,
    fill_market_ids, fill_token_ids, fill_sides, fill_prices, fill_sizes, fill_fees, fill_levels,
    arrayMap(t -> toUnixTimestamp64Milli(t), fill_book_ts) AS fill_book_ms"""


def query_intents(
    wh: Warehouse,
    *,
    statuses: list[str],
    rule: str | None,
    level: str | None,
    market: str | None,
    since_ms: int | None,
    until_ms: int | None,
    limit: int,
    before: tuple[int, str] | None,
) -> list[dict[str, Any]]:
    """Current state of each intent, newest created first; time filters apply to `created`."""
    conditions: list[str] = []
    params: dict[str, Any] = {"limit": limit + 1}
    add_filters(conditions, params, statuses=statuses, rule=rule, level=level, market=market)
    add_time_range(conditions, params, since_ms, until_ms, column="created")
    if before is not None:
        # Keyset pagination on (created, intent_id), newest first.
        conditions.append(
            "(created < fromUnixTimestamp64Milli({c_ts:Int64}, 'UTC') OR "
            "(created = fromUnixTimestamp64Milli({c_ts:Int64}, 'UTC') "
            "AND intent_id < {c_id:String}))"
        )
        params["c_ts"], params["c_id"] = before
    sql = (
        f"SELECT {INTENT_COLUMNS} FROM intent_state WHERE {where(conditions)} "
        "ORDER BY created DESC, intent_id DESC LIMIT {limit:UInt32}"
    )
    return wh.query(sql, params)


def intent_state(wh: Warehouse, intent_id: str) -> dict[str, Any] | None:
    rows = wh.query(
        f"SELECT {INTENT_COLUMNS} FROM intent_state WHERE intent_id = {{id:String}}",
        {"id": intent_id},
    )
    return rows[0] if rows else None


def intent_of_signal(wh: Warehouse, signal_id: str) -> dict[str, Any] | None:
    """The current state of the intent made from `signal_id`, if any."""
    rows = wh.query(
        # By intent id, which the view's GROUP BY lets ClickHouse push down; the inner lookup
        # uses the signal_id skip index.
        f"SELECT {INTENT_COLUMNS} FROM intent_state WHERE intent_id IN "
        "(SELECT intent_id FROM intents WHERE signal_id = {id:String}) LIMIT 1",
        {"id": signal_id},
    )
    return rows[0] if rows else None


def intent_events(wh: Warehouse, intent_id: str) -> list[dict[str, Any]]:
    return wh.query(
        f"SELECT {EVENT_COLUMNS} FROM intents FINAL WHERE intent_id = {{id:String}} "
        "ORDER BY seq, ts",
        {"id": intent_id},
    )


def intent_model(row: dict[str, Any]) -> Intent:
    return Intent(
        **row,
        created=dt(row["created_ms"]),
        ts=dt(row["ts_ms"]),
        expires=opt_dt(row["expires_ms"]),
    )


def event_model(row: dict[str, Any]) -> IntentEvent:
    checks = zip(
        row["check_names"],
        row["check_passed"],
        row["check_values"],
        row["check_limits"],
        row["check_details"],
        strict=True,
    )
    fills = zip(
        row["fill_market_ids"],
        row["fill_token_ids"],
        row["fill_sides"],
        row["fill_prices"],
        row["fill_sizes"],
        row["fill_fees"],
        row["fill_levels"],
        row["fill_book_ms"],
        strict=True,
    )
    return IntentEvent(
        **row,
        ts=dt(row["ts_ms"]),
        expires=opt_dt(row["expires_ms"]),
        legs=json.loads(row["legs_json"]),
        checks=[
            RiskCheck(name=n, passed=p, value=v, limit=lim, detail=d) for n, p, v, lim, d in checks
        ],
        fills=[
            Fill(
                market_id=m,
                token_id=t,
                side=s,
                price=p,
                size=z,
                fee=f,
                levels=lv,
                book_ts=dt(b),
            )
            for m, t, s, p, z, f, lv, b in fills
        ],
    )


# ---- positions and PnL ---------------------------------------------------------------------

POSITION_COLUMNS = """
    position_id, rule_id, venue, event_key, market_id, token_id, size, avg_price, cost, fees,
    realised_pnl, unrealised_pnl, mark_price, status, toUnixTimestamp64Milli(ts) AS ts_ms"""


def query_positions(
    wh: Warehouse,
    *,
    statuses: list[str],
    rule: str | None,
    market: str | None,
    limit: int,
    after: str | None,
) -> list[dict[str, Any]]:
    conditions: list[str] = []
    params: dict[str, Any] = {"limit": limit + 1}
    add_filters(conditions, params, statuses=statuses, rule=rule)
    if market:  # a position holds one market
        conditions.append("market_id = {market:String}")
        params["market"] = market
    if after is not None:
        conditions.append("position_id > {after:String}")
        params["after"] = after
    # FINAL: the latest version of each position (ReplacingMergeTree(ts)), never two.
    sql = (
        f"SELECT {POSITION_COLUMNS} FROM positions FINAL WHERE {where(conditions)} "
        "ORDER BY position_id LIMIT {limit:UInt32}"
    )
    return wh.query(sql, params)


def position_model(row: dict[str, Any]) -> Position:
    return Position(**row, ts=dt(row["ts_ms"]))


def rule_pnl(wh: Warehouse, rule: str | None) -> list[RulePnl]:
    params: dict[str, Any] = {}
    condition = "1"
    if rule:
        condition, params["rule"] = "rule_id = {rule:String}", rule
    rows = wh.query(
        "SELECT rule_id, sum(realised_pnl) AS realised_pnl, "
        "sum(unrealised_pnl) AS unrealised_pnl, sum(fees) AS fees, "
        "sumIf(abs(cost), status = 'open') AS open_exposure, "
        "countIf(status = 'open') AS open_positions, count() AS positions "
        f"FROM positions FINAL WHERE {condition} GROUP BY rule_id ORDER BY rule_id",
        params,
    )
    return [RulePnl(**r, total_pnl=r["realised_pnl"] + r["unrealised_pnl"]) for r in rows]


def totals(rules: list[RulePnl]) -> PnlTotals:
    realised = sum(r.realised_pnl for r in rules)
    unrealised = sum(r.unrealised_pnl for r in rules)
    return PnlTotals(
        realised_pnl=realised,
        unrealised_pnl=unrealised,
        total_pnl=realised + unrealised,
        fees=sum(r.fees for r in rules),
        open_exposure=sum(r.open_exposure for r in rules),
        open_positions=sum(r.open_positions for r in rules),
        positions=sum(r.positions for r in rules),
    )


def daily_pnl(wh: Warehouse, rule: str | None, first: date, days: int) -> list[DailyPnl]:
    """Per rule and day, its positions as they stood at the end of that day: for each day,
    the latest version of each position up to it (positions_history keeps every version)."""
    params: dict[str, Any] = {"first": first, "n": days}
    condition = "1"
    if rule:
        condition, params["rule"] = "rule_id = {rule:String}", rule
    rows = wh.query(
        "SELECT day, rule_id, sum(r) AS realised_pnl, sum(u) AS unrealised_pnl, sum(f) AS fees "
        "FROM (SELECT day, position_id, any(rule_id) AS rule_id, argMax(realised_pnl, ts) AS r, "
        "argMax(unrealised_pnl, ts) AS u, argMax(fees, ts) AS f FROM positions_history FINAL "
        "ARRAY JOIN arrayMap(i -> addDays({first:Date}, i), range({n:UInt32})) AS day "
        f"WHERE toDate(ts) <= day AND {condition} GROUP BY day, position_id) "
        "GROUP BY day, rule_id ORDER BY day, rule_id",
        params,
    )
    return [DailyPnl(**r) for r in rows]
