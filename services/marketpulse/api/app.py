"""The HTTP API (FastAPI) over the warehouse and Kafka: the app, health, readiness, metrics,
and the market and signal lists. Other routes live in routers by what they serve:
`insights` (market drilldown, KPIs, dead letters, review items), `live` (signal stream),
`admin` (mutating routes, behind the API key of `auth`), `execution` (order intents, positions,
PnL and the commands that drive the execution stage).

With embedded chDB only one process may open the data path, so this process then also runs
the sink (`marketpulse api --with-sink`, the default for chdb:// URLs) and both share one
`Warehouse`. Against a ClickHouse server the API and the sinks scale out separately."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any

import uvicorn
from fastapi import FastAPI, Query, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from marketpulse import metrics
from marketpulse.alerts import routes as alerts_routes
from marketpulse.api import admin, execution, insights, live
from marketpulse.api.querying import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    Limit,
    WarehouseDep,
    decode_cursor,
    dt,
    encode_cursor,
    page_of,
    parse_time,
    time_range,
    unprocessable,
)
from marketpulse.api.readiness import Readiness, ReadinessProbe
from marketpulse.api.resources import (
    MarketPage,
    SignalPage,
    market_model,
    query_markets,
    query_signals,
    signal_model,
)
from marketpulse.settings import Settings
from marketpulse.warehouse import Warehouse, connect, sink

log = logging.getLogger(__name__)


class Health(BaseModel):
    status: str = "ok"


class Stats(BaseModel):
    rows: dict[str, int] = Field(description="Rows per table, de-duplicated (FINAL)")
    latest_signal: datetime | None


def stats(wh: Warehouse) -> Stats:
    # Table names come from the sink's own list, never from a request.
    rows = {
        t.name: wh.query(f"SELECT count() AS n FROM {t.name} FINAL")[0]["n"]
        for t in sink.TABLES.values()
    }
    latest = wh.query("SELECT toUnixTimestamp64Milli(max(ts)) AS ms, count() AS n FROM signals")
    return Stats(rows=rows, latest_signal=dt(latest[0]["ms"]) if latest[0]["n"] else None)


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
            # Everything allocated so far (modules, schemas, the warehouse) lives as long as the
            # process: keep it out of the collector's full passes, which otherwise land 65-80 ms
            # pauses in random requests' p99 (measured by the API benchmark).
            gc.collect()
            gc.freeze()
            stop = asyncio.Event()
            task = asyncio.create_task(_supervise_sink(settings, stop, wh)) if with_sink else None
            try:
                yield
            finally:
                stop.set()
                if task is not None:
                    await task
                await app.state.publisher.stop()
        finally:
            if owned:
                wh.close()

    app = FastAPI(
        title="MarketPulse",
        summary="Prediction-market surveillance: markets, signals, KPIs, health.",
        description="Mutating routes need the `X-API-Key` header (MPX_API_KEY).",
        version="0.2.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.readiness = ReadinessProbe(settings)
    app.state.publisher = admin.Publisher(settings)
    app.state.streams = live.StreamSlots(settings.api_stream_max_clients)
    app.middleware("http")(_record_request)
    _routes(app)
    # /api/signals/stream before insights: no other route may claim its path first.
    app.include_router(live.router)
    app.include_router(insights.router)
    app.include_router(admin.router)
    app.include_router(alerts_routes.router)
    app.include_router(execution.router)
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
        responses={503: {"model": Readiness, "description": "A dependency is down or lagging"}},
        tags=["health"],
    )
    async def readyz(request: Request, wh: WarehouseDep) -> Any:
        """Readiness: Kafka answers a metadata request, ClickHouse a query, and the sink group
        is at most `MPX_API_READY_MAX_LAG` messages behind (its lag is reported either way)."""
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
        venue: Annotated[str | None, Query(max_length=40)] = None,
        status: Annotated[
            str | None, Query(max_length=40, description="active | closed | resolved")
        ] = None,
        q: Annotated[str | None, Query(max_length=200, description="Text search")] = None,
        ending_before: Annotated[
            str | None,
            Query(description="Markets whose end time is before this (ISO 8601 or epoch ms)"),
        ] = None,
        limit: Limit = DEFAULT_LIMIT,
        cursor: str | None = None,
    ) -> MarketPage:
        """Latest state of each market, by market id."""
        limit = min(limit, MAX_LIMIT)
        after = decode_cursor("markets", cursor, 1)[0] if cursor else None
        ending = parse_time("ending_before", ending_before) if ending_before else None
        rows = query_markets(
            wh,
            venue=venue,
            status=status,
            q=q,
            limit=limit,
            after=after,
            ending_before_ms=ending,
        )
        page, more = page_of(rows, limit)
        nxt = encode_cursor("markets", [page[-1]["market_id"]]) if more else None
        return MarketPage(items=[market_model(r) for r in page], limit=limit, next_cursor=nxt)

    @app.get("/api/signals", response_model=SignalPage, tags=["signals"])
    def signals(
        wh: WarehouseDep,
        rule: Annotated[str | None, Query(max_length=100)] = None,
        level: Annotated[str | None, Query(description="P1 | P2 | P3", max_length=10)] = None,
        market: Annotated[
            str | None, Query(description="Signals with this market", max_length=200)
        ] = None,
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
                raise unprocessable("cursor is not a cursor of /api/signals")
            before = (c_ts, c_id)
        filters = {"rule": rule, "level": level, "market": market}
        rows = query_signals(
            wh, **filters, since_ms=since_ms, until_ms=until_ms, limit=limit, before=before
        )
        page, more = page_of(rows, limit)
        last = page[-1] if page else None
        nxt = (
            encode_cursor("signals", [last["ts_ms"], last["signal_id"]]) if more and last else None
        )
        return SignalPage(items=[signal_model(r) for r in page], limit=limit, next_cursor=nxt)

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
