"""Read routes beyond the lists: one market's drilldown, daily rule KPIs, dead letters and
review items. Each query is bounded: by primary key (token ids), by a LIMIT, or by a capped
time range."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import BaseModel, Field

from marketpulse.api.querying import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    Limit,
    WarehouseDep,
    add_filters,
    add_time_range,
    decode_cursor,
    dt,
    encode_cursor,
    opt_dt,
    page_of,
    time_range,
    unprocessable,
    where,
)
from marketpulse.api.resources import (
    MARKET_COLUMNS,
    Market,
    Signal,
    market_model,
    query_signals,
    signal_model,
)
from marketpulse.warehouse import Warehouse

router = APIRouter()

MAX_CANDLE_MINUTES = 1440
MAX_KPI_RANGE = timedelta(days=366)
RECENT_SIGNALS = 20
MAX_RELATED = 50
PAYLOAD_PREVIEW = 512


# ---- models --------------------------------------------------------------------------------


class Outcome(BaseModel):
    name: str
    token_id: str
    best_bid: float | None = None
    best_ask: float | None = None
    last_price: float | None = None
    quote_ts: datetime | None = Field(None, description="Event time of the latest tick")


class Level(BaseModel):
    price: float
    size: float


class Book(BaseModel):
    token_id: str
    ts: datetime
    seq: int
    bids: list[Level]
    asks: list[Level]


class Candle(BaseModel):
    token_id: str
    minute: datetime
    open: float | None
    high: float | None
    low: float | None
    close: float | None
    ticks: int
    trades: int
    volume: float = Field(description="Shares traded in the minute (distinct trade ids)")


class MarketDetail(BaseModel):
    market: Market
    outcomes: list[Outcome]
    books: list[Book] = Field(description="Latest book of each outcome token")
    candles: list[Candle] = Field(description="1-minute candles ending at the latest data")
    related: list[Market] = Field(
        description="Markets of the same equivalence group. Until the group registry exists "
        "(rules), the markets of the same event."
    )
    related_basis: str = Field(description="How `related` was chosen: same_event")
    recent_signals: list[Signal]


class RuleKpi(BaseModel):
    rule_id: str
    day: date
    signals: int
    p1: int
    mean_edge_bps: float
    total_edge_bps: float
    executable_notional: float
    resolved_signals: int = Field(
        description="Signals whose every leg's market has resolved (a winning token is known)"
    )
    realised_pnl: float | None = Field(
        description="What the resolved signals' legs paid at resolution minus what they cost, "
        "before fees (the backtest's definition); null while none is resolved"
    )
    realised_edge_bps: float | None = Field(
        description="realised_pnl over the resolved signals' notional, in bps; null where unknown"
    )


class DeadLetter(BaseModel):
    ts: datetime
    stage: str
    source: str
    partition: int
    offset: int
    error_kind: str
    error: str
    key: str
    payload_preview: str = Field(description=f"First {PAYLOAD_PREVIEW} bytes, undecodable as �")
    payload_bytes: int


class DeadLetterPage(BaseModel):
    items: list[DeadLetter]
    limit: int
    next_cursor: str | None


class ReviewItem(BaseModel):
    review_id: str
    signal_id: str
    rule_id: str
    subject: str
    status: str
    decided_by: str
    note: str
    ts: datetime


# ---- the market drilldown ------------------------------------------------------------------


def _outcomes(wh: Warehouse, market: Market) -> list[Outcome]:
    # Latest tick per token: ORDER BY (token_id, ts, seq) lets ClickHouse read each token's
    # tail only.
    rows = wh.query(
        """SELECT token_id, best_bid, best_ask, last_price, toUnixTimestamp64Milli(ts) AS ms
        FROM ticks WHERE token_id IN {tokens:Array(String)}
        ORDER BY token_id, ts DESC, seq DESC LIMIT 1 BY token_id""",
        {"tokens": market.token_ids},
    )
    quotes = {r["token_id"]: r for r in rows}
    out = []
    for name, token in zip(market.outcome_names, market.token_ids, strict=False):
        q = quotes.get(token, {})
        out.append(
            Outcome(
                name=name,
                token_id=token,
                best_bid=q.get("best_bid"),
                best_ask=q.get("best_ask"),
                last_price=q.get("last_price"),
                quote_ts=opt_dt(q.get("ms")),
            )
        )
    return out


def _books(wh: Warehouse, tokens: list[str]) -> list[Book]:
    rows = wh.query(
        """SELECT token_id, toUnixTimestamp64Milli(ts) AS ms, seq, bid_prices, bid_sizes,
               ask_prices, ask_sizes
        FROM books WHERE token_id IN {tokens:Array(String)}
        ORDER BY token_id, ts DESC, seq DESC LIMIT 1 BY token_id""",
        {"tokens": tokens},
    )
    return [
        Book(
            token_id=r["token_id"],
            ts=dt(r["ms"]),
            seq=r["seq"],
            bids=[
                Level(price=p, size=s) for p, s in zip(r["bid_prices"], r["bid_sizes"], strict=True)
            ],
            asks=[
                Level(price=p, size=s) for p, s in zip(r["ask_prices"], r["ask_sizes"], strict=True)
            ],
        )
        for r in rows
    ]


CANDLES_SQL = """
SELECT token_id, ms, if(t > 0, o, NULL) AS o, if(t > 0, h, NULL) AS h, if(t > 0, l, NULL) AS l,
       if(t > 0, c, NULL) AS c, t, length(tr) AS trades, arraySum(x -> x.3, tr) AS volume
FROM (
    SELECT token_id, toUnixTimestamp(minute) * 1000 AS ms, argMinMerge(open) AS o,
           maxMerge(high) AS h, minMerge(low) AS l, argMaxMerge(close) AS c,
           uniqExactMerge(ticks) AS t, groupUniqArrayMerge(trades) AS tr
    FROM candles_1m
    WHERE token_id IN {tokens:Array(String)}
      AND minute > (SELECT max(minute) FROM candles_1m WHERE token_id IN {tokens:Array(String)})
                   - INTERVAL {minutes:UInt32} MINUTE
    GROUP BY token_id, minute
)
ORDER BY token_id, ms"""


def candles(wh: Warehouse, tokens: list[str], minutes: int) -> list[Candle]:
    """The last `minutes` 1-minute candles up to the latest data of these tokens (not up to
    now: a replayed or quiet market still draws its sparkline)."""
    rows = wh.query(CANDLES_SQL, {"tokens": tokens, "minutes": minutes})
    return [
        Candle(
            token_id=r["token_id"],
            minute=dt(r["ms"]),
            open=r["o"],
            high=r["h"],
            low=r["l"],
            close=r["c"],
            ticks=r["t"],
            trades=r["trades"],
            volume=r["volume"],
        )
        for r in rows
    ]


def _related(wh: Warehouse, market: Market) -> list[Market]:
    rows = wh.query(
        """SELECT market_id FROM markets FINAL
        WHERE event_id = {event:String} AND market_id != {market:String}
        ORDER BY market_id LIMIT {n:UInt32}""",
        {"event": market.event_id, "market": market.market_id, "n": MAX_RELATED},
    )
    ids = [r["market_id"] for r in rows]
    return [market_model(r) for r in _markets_by_id(wh, ids)]


def _markets_by_id(wh: Warehouse, ids: list[str]) -> list[dict[str, Any]]:
    if not ids:
        return []
    return wh.query(
        f"SELECT {MARKET_COLUMNS} FROM markets FINAL "
        "WHERE market_id IN {ids:Array(String)} ORDER BY market_id",
        {"ids": ids},
    )


def market_detail(wh: Warehouse, market_id: str, minutes: int) -> MarketDetail | None:
    rows = _markets_by_id(wh, [market_id])
    if not rows:
        return None
    market = market_model(rows[0])
    recent = query_signals(
        wh,
        rule=None,
        level=None,
        market=market_id,
        since_ms=None,
        until_ms=None,
        limit=RECENT_SIGNALS - 1,  # the query asks for limit + 1
        before=None,
    )
    return MarketDetail(
        market=market,
        outcomes=_outcomes(wh, market),
        books=_books(wh, market.token_ids),
        candles=candles(wh, market.token_ids, minutes),
        related=_related(wh, market),
        related_basis="same_event",
        recent_signals=[signal_model(r) for r in recent],
    )


# ---- KPIs, dead letters, review items ------------------------------------------------------

# From the warehouse view (migration 0004) that reads the narrow per-signal table with FINAL:
# exact under redelivery, and the realised edge defined once, there. No JIT: ClickHouse compiles
# a query's expressions the third time it sees them, and for this one that stalls that request
# by ~150 ms (measured on chDB), while the compiled code saves nothing at this size.
KPI_SQL = """
SELECT rule_id, day, signals, p1, mean_edge_bps, total_edge_bps, executable_notional,
       resolved_signals, realised_pnl, realised_edge_bps
FROM rule_kpi_daily_realised
WHERE {cond}
ORDER BY day DESC, rule_id
SETTINGS compile_expressions = 0, compile_aggregate_expressions = 0,
         compile_sort_description = 0"""


def daily_kpis(
    wh: Warehouse, rule: str | None, since_ms: int | None, until_ms: int | None
) -> list[RuleKpi]:
    conditions: list[str] = []
    params: dict[str, Any] = {}
    add_filters(conditions, params, rule=rule)
    if since_ms is not None:
        conditions.append("day >= toDate(fromUnixTimestamp64Milli({since:Int64}, 'UTC'))")
        params["since"] = since_ms
    if until_ms is not None:
        conditions.append("day < toDate(fromUnixTimestamp64Milli({until:Int64}, 'UTC'))")
        params["until"] = until_ms
    if since_ms is None and until_ms is None:
        # Unbounded asks get the latest 31 days with data, not the whole history.
        conditions.append("day > (SELECT max(day) FROM signal_kpi) - 31")
    rows = wh.query(KPI_SQL.replace("{cond}", where(conditions)), params)
    return [RuleKpi(**{k: r[k] for k in RuleKpi.model_fields}) for r in rows]


def dead_letters(
    wh: Warehouse,
    *,
    source: str | None,
    kind: str | None,
    since_ms: int | None,
    until_ms: int | None,
    limit: int,
    before: tuple[int, int, int] | None,
) -> list[dict[str, Any]]:
    conditions: list[str] = []
    params: dict[str, Any] = {"limit": limit + 1, "preview": PAYLOAD_PREVIEW}
    if source:
        conditions.append("source = {source:String}")
        params["source"] = source
    if kind:
        conditions.append("error_kind = {kind:String}")
        params["kind"] = kind
    add_time_range(conditions, params, since_ms, until_ms)
    if before is not None:
        # Keyset on (ts, the dead letter's own partition and offset): unique and stable.
        conditions.append(
            "(toUnixTimestamp64Milli(ts), _partition, _offset) < "
            "({c_ts:Int64}, {c_p:UInt32}, {c_o:UInt64})"
        )
        params["c_ts"], params["c_p"], params["c_o"] = before
    sql = (
        "SELECT toUnixTimestamp64Milli(ts) AS ts_ms, stage, source, partition, offset, "
        "error_kind, error, key, toValidUTF8(substring(payload, 1, {preview:UInt32})) AS pv, "
        "length(payload) AS n, _partition, _offset "
        f"FROM dead_letters FINAL WHERE {where(conditions)} "
        "ORDER BY ts DESC, _partition DESC, _offset DESC LIMIT {limit:UInt32}"
    )
    return wh.query(sql, params)


def _dead_letter(r: dict[str, Any]) -> DeadLetter:
    return DeadLetter(
        ts=dt(r["ts_ms"]),
        stage=r["stage"],
        source=r["source"],
        partition=r["partition"],
        offset=r["offset"],
        error_kind=r["error_kind"],
        error=r["error"],
        key=r["key"],
        payload_preview=r["pv"],
        payload_bytes=r["n"],
    )


def review_items(wh: Warehouse, status: str | None, limit: int) -> list[ReviewItem]:
    params: dict[str, Any] = {"limit": limit}
    cond = "1"
    if status:
        cond, params["status"] = "status = {status:String}", status
    rows = wh.query(
        "SELECT review_id, signal_id, rule_id, subject, status, decided_by, note, "
        f"toUnixTimestamp64Milli(ts) AS ms FROM review_items FINAL WHERE {cond} "
        "ORDER BY ts DESC, review_id LIMIT {limit:UInt32}",
        params,
    )
    return [ReviewItem(**{k: v for k, v in r.items() if k != "ms"}, ts=dt(r["ms"])) for r in rows]


# ---- routes --------------------------------------------------------------------------------


@router.get(
    "/api/markets/{market_id}",
    response_model=MarketDetail,
    responses={404: {"description": "No such market"}},
    tags=["markets"],
)
def get_market(
    wh: WarehouseDep,
    market_id: Annotated[str, Path(max_length=200, description="e.g. pm:0x…, ks:TICKER")],
    candle_minutes: Annotated[
        int, Query(ge=1, le=MAX_CANDLE_MINUTES, description="Sparkline length in minutes")
    ] = 120,
) -> MarketDetail:
    """One market: outcomes with their latest quotes, latest books, 1-minute candles, related
    markets and its recent signals."""
    detail = market_detail(wh, market_id, candle_minutes)
    if detail is None:
        raise HTTPException(status_code=404, detail=f"no market {market_id!r}")
    return detail


@router.get("/api/kpi/daily", response_model=list[RuleKpi], tags=["kpi"])
def kpi_daily(
    wh: WarehouseDep,
    rule: Annotated[str | None, Query(max_length=100)] = None,
    since: Annotated[str | None, Query(description="ISO 8601 or epoch ms, inclusive")] = None,
    until: Annotated[str | None, Query(description="ISO 8601 or epoch ms, exclusive")] = None,
) -> list[RuleKpi]:
    """Per rule and day: signals, P1s, mean and total edge (bps), executable notional, and
    where the outcome is known, the realised P&L and edge (null where unknown). Each signal
    id counts once, however often it was delivered. At most 366 days per request; without a
    range, the latest 31 days with data."""
    since_ms, until_ms = time_range(since, until, cap=MAX_KPI_RANGE)
    if (since_ms is None) != (until_ms is None):
        raise unprocessable("give both since and until, or neither")
    return daily_kpis(wh, rule, since_ms, until_ms)


@router.get("/api/dlq", response_model=DeadLetterPage, tags=["dead letters"])
def dlq(
    wh: WarehouseDep,
    source: Annotated[str | None, Query(max_length=200, description="Source topic")] = None,
    kind: Annotated[str | None, Query(max_length=100, description="Error kind")] = None,
    since: Annotated[str | None, Query(description="ISO 8601 or epoch ms, inclusive")] = None,
    until: Annotated[str | None, Query(description="ISO 8601 or epoch ms, exclusive")] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> DeadLetterPage:
    """Dead letters, newest first, with the error and a preview of the payload."""
    limit = min(limit, MAX_LIMIT)
    since_ms, until_ms = time_range(since, until)
    before = None
    if cursor:
        key = decode_cursor("dlq", cursor, 3)
        if not all(isinstance(v, int) for v in key):
            raise unprocessable("cursor is not a cursor of /api/dlq")
        before = (key[0], key[1], key[2])
    rows = dead_letters(
        wh,
        source=source,
        kind=kind,
        since_ms=since_ms,
        until_ms=until_ms,
        limit=limit,
        before=before,
    )
    page, more = page_of(rows, limit)
    nxt = None
    if more:
        last = page[-1]
        nxt = encode_cursor("dlq", [last["ts_ms"], last["_partition"], last["_offset"]])
    return DeadLetterPage(items=[_dead_letter(r) for r in page], limit=limit, next_cursor=nxt)


@router.get("/api/review", response_model=list[ReviewItem], tags=["review"])
def review(
    wh: WarehouseDep,
    status: Annotated[
        str | None, Query(max_length=20, description="open | approved | rejected | escalated")
    ] = None,
    limit: Limit = DEFAULT_LIMIT,
) -> list[ReviewItem]:
    """Review items, latest decision of each, newest first."""
    return review_items(wh, status, min(limit, MAX_LIMIT))
