"""Every dashboard query, run against a warehouse filled by a real pipeline run: mock collector →
real broker → worker subprocess → sink → chDB. Grafana's macros and the dashboard variables are
expanded as the ClickHouse plugin and Grafana expand them; every query must succeed AND return
rows, so a dashboard whose SQL breaks (or silently shows nothing) fails the suite.

The mock venue has no trade stream, so the test publishes a few trades of its markets, and a few
undecodable messages so that the dead-letter panels have something to show; nor does it resolve
markets, so the test resolves the markets of one signal's legs, for the realised-edge panel. The
execution stage does not run here: the test publishes a paper-trading history (intent events
with checks and fills, positions; `execution_records`) to the real topics, for the sink to load."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import execution_records
import pytest
from aiokafka import AIOKafkaProducer

from marketpulse.codec import codec
from marketpulse.collect import run as collect
from marketpulse.kafka import create_topics
from marketpulse.settings import Settings
from marketpulse.venues.mock import MockVenue
from marketpulse.warehouse import Warehouse, connect
from marketpulse.warehouse.sink import run as run_sink

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "dashboards"
CLICKHOUSE = "grafana-clickhouse-datasource"
SEED = 11
START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
TRADES_PER_MARKET = 2
GARBAGE = [b"not avro", b"\x00\x00\x00\x03\xe9garbage", b""]
DEADLINE_S = 120.0
INTERVAL_S = 60  # what $__timeInterval / $__interval_s stand for here


# ---- the pipeline run ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def settings(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    tmp = tmp_path_factory.mktemp("dash")
    tag = f"{os.getpid()}{int(time.time() * 1000) % 10**8}"
    return Settings(
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=f"dash{tag}.",
        worker_id=f"dash-worker-{tag}",
        sink_group=f"dash-sink-{tag}",
        sink_batch_ms=100,
        worker_data_dir=tmp / "worker",
        worker_web_port=0,
        warehouse_url=f"chdb://{tmp / 'warehouse'}",
    )


@pytest.fixture(scope="module")
def worker(settings: Settings) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "MPX_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "MPX_TOPIC_PREFIX": settings.topic_prefix,
        "MPX_WORKER_ID": settings.worker_id,
        "MPX_WORKER_DATA_DIR": str(settings.worker_data_dir),
        "MPX_WORKER_WEB_PORT": "0",
    }
    log_path = settings.worker_data_dir.parent / "worker.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "marketpulse", "worker"], env=env, stdout=log, stderr=log
        )
        yield proc
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def trades_of(venue: MockVenue) -> list[tuple[bytes, dict[str, Any]]]:
    """Trades on the first outcome of every mock market, inside the run's event time."""
    out = []
    markets = venue.markets()
    for i in range(TRADES_PER_MARKET * len(markets)):
        m = markets[i % len(markets)]
        out.append(
            (
                m["event_id"].encode(),
                {
                    "event_key": m["event_id"],
                    "market_id": m["market_id"],
                    "token_id": m["outcomes"][0]["token_id"],
                    "venue": m["venue"],
                    "trade_id": f"tr{i}",
                    "ts_ms": START_MS + i * 1500,
                    "recv_ms": START_MS + i * 1500 + 4,
                    "price": 0.5,
                    "size": 10.0 + i,
                    "side": "BUY" if i % 2 else "SELL",
                },
            )
        )
    return out


async def publish_extras(settings: Settings, venue: MockVenue) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        for key, trade in trades_of(venue):
            await producer.send(settings.topic("trades"), codec().encode("trade", trade), key=key)
        for value in GARBAGE:
            await producer.send(settings.topic("ticks"), value, key=b"mk:bad")
        await producer.flush()
    finally:
        await producer.stop()


async def landed(
    wh: Warehouse, n_ticks: int, n_trades: int, worker: subprocess.Popen[bytes]
) -> None:
    want = {
        "ticks FINAL": n_ticks,
        "trades FINAL": n_trades,
        "dead_letters FINAL": len(GARBAGE),
        "signals FINAL": 1,
        "intents FINAL": len(execution_records.intent_events(START_MS)) - 1,  # one redelivered
        "positions FINAL": execution_records.N_POSITIONS,
    }
    deadline = time.monotonic() + DEADLINE_S
    while True:
        assert worker.poll() is None, "the worker died; see worker.log next to the warehouse"
        have = {
            t: (await asyncio.to_thread(wh.query, f"SELECT count() AS n FROM {t}"))[0]["n"]
            for t in want
        }
        if all(have[t] >= n for t, n in want.items()):
            return
        assert time.monotonic() < deadline, f"pipeline did not land: {have} < {want}"
        await asyncio.sleep(0.3)


async def resolve_one_signal(settings: Settings, wh: Warehouse, venue: MockVenue) -> None:
    """Resolve the markets of one signal's legs as a venue reports a resolution (Polymarket's
    `market_resolved`): a new version of each market record, status resolved, with its winning
    token. The mock venue never resolves a market, and the realised-edge panel needs one.

    The signal spanning the most markets is chosen: the worker re-evaluates an event when its
    markets change, and the market dashboard's variable then picks a market of that event, whose
    "same event" panel needs other markets."""
    rows = wh.query(
        """SELECT legs_json FROM signals FINAL WHERE legs_json != '[]'
        ORDER BY length(market_ids) DESC, ts, signal_id LIMIT 1"""
    )
    assert rows, "no signal with legs to resolve"
    ids = {leg["market_id"] for leg in json.loads(rows[0]["legs_json"])}
    end_ms = wh.query("SELECT toUnixTimestamp64Milli(max(ts)) AS ms FROM ticks")[0]["ms"]
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        for m in venue.markets():
            if m["market_id"] in ids:
                resolved = {
                    **m,
                    "status": "resolved",
                    "winning_token_id": m["outcomes"][0]["token_id"],
                    "updated_ms": end_ms + 1000,
                }
                value = codec().encode("market", resolved)
                await producer.send(settings.topic("markets"), value, key=m["market_id"].encode())
        await producer.flush()
    finally:
        await producer.stop()
    sql = """SELECT count() AS n FROM markets FINAL
        WHERE market_id IN {ids:Array(String)} AND winning_token_id IS NOT NULL"""
    deadline = time.monotonic() + DEADLINE_S
    while (await asyncio.to_thread(wh.query, sql, {"ids": sorted(ids)}))[0]["n"] < len(ids):
        assert time.monotonic() < deadline, "the resolved markets did not land"
        await asyncio.sleep(0.3)


@pytest.fixture(scope="module")
async def warehouse(
    settings: Settings, worker: subprocess.Popen[bytes]
) -> AsyncIterator[Warehouse]:
    await create_topics(settings)
    wh = connect(settings)
    wh.migrate()
    stop = asyncio.Event()
    sink = asyncio.create_task(run_sink(settings, stop, wh))
    try:
        venue = MockVenue(seed=SEED, start_ms=START_MS)
        n_updates = venue.n_updates_until_all_done() + 100
        stats = await collect(
            settings, seed=SEED, rate=None, max_updates=n_updates, start_ms=START_MS
        )
        await publish_extras(settings, venue)
        await execution_records.publish(settings, START_MS, with_signals=False)
        n_trades = TRADES_PER_MARKET * len(venue.markets())
        await landed(wh, stats["ticks"], n_trades, worker)
        await resolve_one_signal(settings, wh, venue)
    finally:
        stop.set()
        await asyncio.wait_for(sink, 30)
    try:
        yield wh
    finally:
        wh.close()


# ---- Grafana's side: variables and macros --------------------------------------------------


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS.glob("*.json"))


def time_range(wh: Warehouse) -> tuple[int, int]:
    """The dashboard's time picker: the span of the run's data (event and receive times)."""
    row = wh.query(
        """SELECT toUnixTimestamp(min(ts)) AS lo, toUnixTimestamp(max(greatest(ts, recv))) AS hi
        FROM ticks"""
    )[0]
    return row["lo"] - 60, row["hi"] + 60


def expand(sql: str, variables: dict[str, str], frm: int, to: int) -> str:
    """The plugin's macros and Grafana's variables, as they expand them (seconds precision)."""
    sql = re.sub(
        r"\$__timeFilter\(([\w.]+)\)",
        rf"\1 >= toDateTime({frm}) AND \1 <= toDateTime({to})",
        sql,
    )
    sql = re.sub(
        r"\$__timeInterval\(([\w.]+)\)",
        rf"toStartOfInterval(toDateTime(\1), INTERVAL {INTERVAL_S} second)",
        sql,
    )
    sql = sql.replace("$__fromTime", f"toDateTime({frm})").replace("$__toTime", f"toDateTime({to})")
    sql = sql.replace("$__interval_s", str(INTERVAL_S))
    for name, value in variables.items():
        sql = sql.replace(f"${{{name}}}", value).replace(f"${name}", value)
    assert "$" not in sql, f"a macro or variable this test does not expand: {sql}"
    return sql


def resolve_variables(wh: Warehouse, dash: dict[str, Any], frm: int, to: int) -> dict[str, str]:
    """Each query variable in order, as Grafana does; a variable may use the ones before it.
    Grafana picks the first option; so does this test, and the option must exist."""
    values: dict[str, str] = {}
    for var in dash["templating"]["list"]:
        assert var["type"] == "query", var["name"]
        rows = wh.query(expand(var["query"], values, frm, to))
        assert rows, f"variable {var['name']} has no options"
        values[var["name"]] = str(next(iter(rows[0].values())))
    return values


def queries(dash: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(title, SQL) of every ClickHouse query: panels (also nested in rows) and annotations."""

    def walk(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for p in items:
            yield p
            yield from walk(p.get("panels", []))

    for panel in walk(dash["panels"]):
        for target in panel.get("targets", []):
            if target.get("datasource", panel.get("datasource", {})).get("type") == CLICKHOUSE:
                yield panel["title"], target["rawSql"]
    for anno in dash["annotations"]["list"]:
        if anno.get("datasource", {}).get("type") == CLICKHOUSE:
            yield f"annotation {anno['name']}", anno["target"]["rawSql"]


# ---- the test ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", dashboard_files(), ids=lambda p: p.name)
def test_every_dashboard_query_runs_and_returns_rows(warehouse: Warehouse, path: Path) -> None:
    dash = json.loads(path.read_text())
    frm, to = time_range(warehouse)
    variables = resolve_variables(warehouse, dash, frm, to)
    failures: dict[str, str] = {}
    ran = 0
    for title, sql in queries(dash):
        ran += 1
        try:
            rows = warehouse.query(expand(sql, variables, frm, to))
        except Exception as exc:
            failures[title] = str(exc).splitlines()[0][:300]
            continue
        if not rows:
            failures[title] = "no rows"
    assert ran, f"{path.name} has no ClickHouse query"
    assert failures == {}, f"{path.name} with {variables}"


def test_the_drilldown_defaults_to_a_market_with_signals(warehouse: Warehouse) -> None:
    dash = json.loads((DASHBOARDS / "market.json").read_text())
    frm, to = time_range(warehouse)
    chosen = resolve_variables(warehouse, dash, frm, to)
    signalled = warehouse.query(
        "SELECT count() AS n FROM signals FINAL WHERE has(market_ids, {m:String})",
        {"m": chosen["market"]},
    )[0]["n"]
    assert signalled > 0
    token_of = warehouse.query(
        "SELECT has(token_ids, {t:String}) AS ok FROM markets FINAL WHERE market_id = {m:String}",
        {"t": chosen["token"], "m": chosen["market"]},
    )
    assert token_of == [{"ok": True}]


def test_the_execution_panels_show_the_published_history(warehouse: Warehouse) -> None:
    """Exact figures (see execution_records): a panel that returns rows but miscounts (a
    redelivered fill counted twice, an old position version summed) fails here."""
    dash = json.loads((DASHBOARDS / "execution.json").read_text())
    frm, to = time_range(warehouse)
    sql = dict(queries(dash))

    def rows(title: str) -> list[dict[str, Any]]:
        return warehouse.query(expand(sql[title], {}, frm, to))

    assert rows("Open exposure") == [{"open_exposure": 12.75}]
    assert rows("Total PnL") == [{"total_pnl": 2.25}]
    assert [(r["rule_id"], r["realised"], r["unrealised"]) for r in rows("PnL by rule")] == [
        ("complete_set", 0.0, 0.75),
        ("spike", 1.0, 0.5),
    ]
    assert rows("Rejection reasons") == [{"failed_check": "total_exposure", "intents": 1}]
    fill_rate = {r["rule_id"]: r for r in rows("Fill rate per rule")}
    assert (fill_rate["complete_set"]["filled"], fill_rate["complete_set"]["fill_rate"]) == (1, 1.0)
    assert (fill_rate["spike"]["partially_filled"], fill_rate["spike"]["expired"]) == (1, 1)
    assert len(rows("Latest fills")) == 3  # b's two legs (delivered twice) and d's one
