"""The HTTP API (FastAPI) over the warehouse and Kafka: health, readiness, metrics, markets,
signals and table stats.

With embedded chDB only one process may open the data path, so this process then also runs
the sink (`marketpulse api --with-sink`, the default for chdb:// URLs) and both share one
`Warehouse`. Against a ClickHouse server the API and the sinks scale out separately."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import uvicorn
from aiokafka.client import AIOKafkaClient
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from marketpulse import metrics, sink
from marketpulse.settings import Settings
from marketpulse.warehouse import Warehouse, connect

log = logging.getLogger(__name__)

MAX_LIMIT = 500
DEFAULT_LIMIT = 50
MAX_RANGE = timedelta(days=31)
READY_TTL_S = 1.5
READY_TIMEOUT_S = 2.0


# ---- response models (they are the OpenAPI documentation) ----------------------------------


class Health(BaseModel):
    status: str = "ok"


class Readiness(BaseModel):
    kafka: bool
    clickhouse: bool
    down: list[str] = Field(default_factory=list, description="Dependencies that did not answer")


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


class Stats(BaseModel):
    rows: dict[str, int] = Field(description="Rows per table, de-duplicated (FINAL)")
    latest_signal: datetime | None


# ---- helpers -------------------------------------------------------------------------------


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _opt_dt(ms: int | None) -> datetime | None:
    return None if ms is None else _dt(ms)


def _unprocessable(detail: str) -> HTTPException:
    return HTTPException(status_code=422, detail=detail)


def encode_cursor(kind: str, key: list[Any]) -> str:
    """Opaque to clients: the sort key of the last row served, tagged with its endpoint."""
    raw = json.dumps({"k": kind, "v": key}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(kind: str, cursor: str, arity: int) -> list[Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
        key = data["v"]
        if data["k"] != kind or not isinstance(key, list) or len(key) != arity:
            raise ValueError
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise _unprocessable(f"cursor is not a cursor of /api/{kind}") from None
    return key


_EPOCH_MS = re.compile(r"^-?\d{1,15}$")


def parse_time(name: str, value: str) -> int:
    """ISO 8601 (naive means UTC) or epoch milliseconds → epoch milliseconds."""
    if _EPOCH_MS.match(value):
        return int(value)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise _unprocessable(
            f"{name}: expected ISO 8601 (2026-01-31T12:00:00Z) or epoch milliseconds, "
            f"got {value[:40]!r}"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def time_range(since: str | None, until: str | None) -> tuple[int | None, int | None]:
    lo = parse_time("since", since) if since is not None else None
    hi = parse_time("until", until) if until is not None else None
    if lo is not None and hi is not None:
        if lo >= hi:
            raise _unprocessable("since must be before until")
        if hi - lo > MAX_RANGE.total_seconds() * 1000:
            raise _unprocessable(f"since..until spans more than {MAX_RANGE.days} days")
    return lo, hi


def like_pattern(text: str) -> str:
    """`%text%` with LIKE's wildcards in `text` escaped: the user searches for literal text."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _where(conditions: list[str]) -> str:
    # Only fixed fragments from this module are joined here; user values stay in parameters.
    return " AND ".join(conditions) if conditions else "1"


# ---- queries -------------------------------------------------------------------------------

_MARKET_COLUMNS = """
    market_id, event_id, venue, question, event_title, slug, outcome_names, token_ids, status,
    toUnixTimestamp64Milli(end_time) AS end_ms, neg_risk, exclusive, event_market_count,
    tick_size, min_size, fee_model, fee_rate, winning_token_id,
    toUnixTimestamp64Milli(updated) AS updated_ms"""

_SIGNAL_COLUMNS = """
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
    if after is not None:
        conditions.append("market_id > {after:String}")
        params["after"] = after
    # FINAL: the latest version of each market (ReplacingMergeTree(updated)), never two.
    sql = (
        f"SELECT {_MARKET_COLUMNS} FROM markets FINAL WHERE {_where(conditions)} "
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
    if rule:
        conditions.append("rule_id = {rule:String}")
        params["rule"] = rule
    if level:
        conditions.append("level = {level:String}")
        params["level"] = level
    if market:
        conditions.append("has(market_ids, {market:String})")
        params["market"] = market
    if since_ms is not None:
        conditions.append("ts >= fromUnixTimestamp64Milli({since:Int64}, 'UTC')")
        params["since"] = since_ms
    if until_ms is not None:
        conditions.append("ts < fromUnixTimestamp64Milli({until:Int64}, 'UTC')")
        params["until"] = until_ms
    if before is not None:
        # Keyset pagination on (ts, signal_id), newest first: stable while new rows arrive.
        conditions.append(
            "(ts < fromUnixTimestamp64Milli({c_ts:Int64}, 'UTC') OR "
            "(ts = fromUnixTimestamp64Milli({c_ts:Int64}, 'UTC') AND signal_id < {c_id:String}))"
        )
        params["c_ts"], params["c_id"] = before
    sql = (
        f"SELECT {_SIGNAL_COLUMNS} FROM signals FINAL WHERE {_where(conditions)} "
        "ORDER BY ts DESC, signal_id DESC LIMIT {limit:UInt32}"
    )
    return wh.query(sql, params)


def _market(row: dict[str, Any]) -> Market:
    return Market(**row, end_time=_opt_dt(row["end_ms"]), updated=_dt(row["updated_ms"]))


def _signal(row: dict[str, Any]) -> Signal:
    return Signal(
        **row,
        ts=_dt(row["ts_ms"]),
        trigger_recv=_dt(row["recv_ms"]),
        legs=json.loads(row["legs_json"]),
    )


def stats(wh: Warehouse) -> Stats:
    # Table names come from the sink's own list, never from a request.
    rows = {
        t.name: wh.query(f"SELECT count() AS n FROM {t.name} FINAL")[0]["n"]
        for t in sink.TABLES.values()
    }
    latest = wh.query("SELECT toUnixTimestamp64Milli(max(ts)) AS ms, count() AS n FROM signals")
    return Stats(rows=rows, latest_signal=_dt(latest[0]["ms"]) if latest[0]["n"] else None)


# ---- readiness -----------------------------------------------------------------------------


async def kafka_answers(bootstrap: str, timeout: float = READY_TIMEOUT_S) -> bool:
    """A metadata request to the bootstrap servers, bounded by `timeout`."""
    client = AIOKafkaClient(
        bootstrap_servers=bootstrap,
        client_id="mpx-api-ready",
        request_timeout_ms=int(timeout * 1000),
    )
    try:
        await asyncio.wait_for(client.bootstrap(), timeout)
        return bool(client.cluster.brokers())
    except Exception:
        return False
    finally:
        await client.close()


class ReadinessProbe:
    """Checks Kafka and ClickHouse at most once per READY_TTL_S: a load balancer probing every
    replica often must not turn into a stream of broker connections."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = asyncio.Lock()
        self._at = -1e9
        self._last: Readiness | None = None

    async def check(self, wh: Warehouse) -> Readiness:
        async with self._lock:
            if self._last is not None and time.monotonic() - self._at < READY_TTL_S:
                return self._last
            kafka, clickhouse = await asyncio.gather(
                kafka_answers(self._settings.kafka_bootstrap), self._ping(wh)
            )
            answers = {"kafka": kafka, "clickhouse": clickhouse}
            for name, ok in answers.items():
                metrics.READY.labels(name).set(1 if ok else 0)
            down = [name for name, ok in answers.items() if not ok]
            self._last = Readiness(kafka=kafka, clickhouse=clickhouse, down=down)
            self._at = time.monotonic()
            return self._last

    @staticmethod
    async def _ping(wh: Warehouse) -> bool:
        try:
            return await asyncio.wait_for(asyncio.to_thread(wh.ping), READY_TIMEOUT_S)
        except TimeoutError:
            return False


# ---- the app -------------------------------------------------------------------------------


def get_warehouse(request: Request) -> Warehouse:
    return request.app.state.warehouse  # type: ignore[no-any-return]


WarehouseDep = Annotated[Warehouse, Depends(get_warehouse)]
Limit = Annotated[int, Query(ge=1, description=f"Page size, capped at {MAX_LIMIT}")]


async def _supervise_sink(settings: Settings, stop: asyncio.Event, wh: Warehouse) -> None:
    """Keep the in-process sink running: the broker may come up after the API does."""
    delay = 1.0
    while not stop.is_set():
        try:
            await sink.run(settings, stop, wh)
        except Exception:
            log.exception("sink failed; restarting in %.0fs", delay)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        delay = min(delay * 2, 30.0)


def create_app(
    settings: Settings, warehouse: Warehouse | None = None, with_sink: bool = False
) -> FastAPI:
    """The API. Without `warehouse` it opens (and on shutdown closes) its own; `with_sink` runs
    the sink in this process on the same Warehouse (embedded chDB has a single owner)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = warehouse is None
        wh = warehouse if warehouse is not None else await asyncio.to_thread(connect, settings)
        try:
            await asyncio.to_thread(wh.migrate)
            app.state.warehouse = wh
            stop = asyncio.Event()
            task = asyncio.create_task(_supervise_sink(settings, stop, wh)) if with_sink else None
            try:
                yield
            finally:
                stop.set()
                if task is not None:
                    await task
        finally:
            if owned:
                wh.close()

    app = FastAPI(
        title="MarketPulse",
        summary="Prediction-market surveillance: markets, signals, health.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.readiness = ReadinessProbe(settings)
    app.middleware("http")(_record_request)
    _routes(app)
    return app


async def _record_request(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    started, status = time.perf_counter(), 500
    try:
        response = await call_next(request)
        status = response.status_code
        return response
    finally:
        # The route template, not the raw path: label cardinality stays bounded.
        route = getattr(request.scope.get("route"), "path", "unmatched")
        metrics.API_REQUESTS.labels(route, str(status)).observe(time.perf_counter() - started)


def _routes(app: FastAPI) -> None:
    @app.get("/healthz", response_model=Health, tags=["health"])
    def healthz() -> Health:
        """Liveness: the process answers."""
        return Health()

    @app.get(
        "/readyz",
        response_model=Readiness,
        responses={503: {"model": Readiness, "description": "A dependency is down"}},
        tags=["health"],
    )
    async def readyz(request: Request, wh: WarehouseDep) -> Any:
        """Readiness: Kafka answers a metadata request and ClickHouse a query."""
        ready: Readiness = await request.app.state.readiness.check(wh)
        if ready.down:
            return JSONResponse(status_code=503, content=ready.model_dump())
        return ready

    @app.get("/metrics", tags=["health"], response_class=Response)
    def prometheus() -> Response:
        """Prometheus exposition of every mpx_ metric of this process."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/api/markets", response_model=MarketPage, tags=["markets"])
    def markets(
        wh: WarehouseDep,
        venue: str | None = None,
        status: Annotated[str | None, Query(description="active | closed | resolved")] = None,
        q: Annotated[str | None, Query(max_length=200, description="Text search")] = None,
        limit: Limit = DEFAULT_LIMIT,
        cursor: str | None = None,
    ) -> MarketPage:
        """Latest state of each market, by market id."""
        limit = min(limit, MAX_LIMIT)
        after = decode_cursor("markets", cursor, 1)[0] if cursor else None
        rows = query_markets(wh, venue=venue, status=status, q=q, limit=limit, after=after)
        page = rows[:limit]
        more = len(rows) > limit
        nxt = encode_cursor("markets", [page[-1]["market_id"]]) if more else None
        return MarketPage(items=[_market(r) for r in page], limit=limit, next_cursor=nxt)

    @app.get("/api/signals", response_model=SignalPage, tags=["signals"])
    def signals(
        wh: WarehouseDep,
        rule: str | None = None,
        level: Annotated[str | None, Query(description="P1 | P2 | P3")] = None,
        market: Annotated[str | None, Query(description="Signals with this market")] = None,
        since: Annotated[str | None, Query(description="ISO 8601 or epoch ms, inclusive")] = None,
        until: Annotated[str | None, Query(description="ISO 8601 or epoch ms, exclusive")] = None,
        limit: Limit = DEFAULT_LIMIT,
        cursor: str | None = None,
    ) -> SignalPage:
        """Signals, newest first. A since..until range may span at most 31 days."""
        limit = min(limit, MAX_LIMIT)
        since_ms, until_ms = time_range(since, until)
        before = None
        if cursor:
            c_ts, c_id = decode_cursor("signals", cursor, 2)
            if not isinstance(c_ts, int) or not isinstance(c_id, str):
                raise _unprocessable("cursor is not a cursor of /api/signals")
            before = (c_ts, c_id)
        filters = {"rule": rule, "level": level, "market": market}
        rows = query_signals(
            wh, **filters, since_ms=since_ms, until_ms=until_ms, limit=limit, before=before
        )
        page = rows[:limit]
        more = len(rows) > limit
        last = page[-1] if page else None
        nxt = (
            encode_cursor("signals", [last["ts_ms"], last["signal_id"]]) if more and last else None
        )
        return SignalPage(items=[_signal(r) for r in page], limit=limit, next_cursor=nxt)

    @app.get("/api/stats", response_model=Stats, tags=["stats"])
    def table_stats(wh: WarehouseDep) -> Stats:
        """Rows per table (de-duplicated) and the time of the latest signal."""
        return stats(wh)


def run(settings: Settings, with_sink: bool | None = None) -> None:
    """Serve on api_host:api_port. `with_sink` None: on for embedded chDB, whose data path
    only this process can open."""
    embedded = settings.warehouse_url.startswith("chdb")
    if with_sink is None:
        with_sink = embedded
    if embedded and not with_sink:
        log.warning("API owns the chDB path without a sink: `marketpulse sink` cannot open it")
    uvicorn.run(
        create_app(settings, with_sink=with_sink),
        host=settings.api_host,
        port=settings.api_port,
        log_level=settings.log_level.lower(),
    )
