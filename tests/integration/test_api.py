"""The HTTP API over a real chDB warehouse (and the real broker for readiness and the
in-process sink). One warehouse for the module: chDB opens one data path per process."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from fastapi.testclient import TestClient

from marketpulse.api import create_app
from marketpulse.codec import Codec
from marketpulse.kafka import create_topics
from marketpulse.settings import Settings
from marketpulse.sink import TABLES, to_row
from marketpulse.warehouse import Warehouse, connect

pytestmark = pytest.mark.integration

CODEC = Codec()
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
HOUR = 3_600_000
N_MARKETS = 23
N_SIGNALS = 37


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def market(i: int, **over: object) -> dict:
    return {
        "market_id": f"mk:m{i:03d}",
        "event_id": f"mk:e{i // 4}",
        "venue": "kalshi" if i % 3 == 0 else "polymarket",
        "question": f"Will thing {i} happen?" if i != 7 else "Above 50% by June?",
        "outcomes": [{"name": "Yes", "token_id": f"y{i}"}, {"name": "No", "token_id": f"n{i}"}],
        "status": "resolved" if i % 5 == 0 else "active",
        "updated_ms": T0,
        **over,
    }


def signal(i: int) -> dict:
    return {
        "signal_id": f"s{i:03d}",
        "rule_id": "complete_set" if i % 2 else "ladder",
        "rule_version": 1,
        "level": "P1" if i % 4 == 0 else "P2",
        "subject": f"mk:e{i % 5}",
        "event_key": f"mk:e{i % 5}",
        "market_ids": [f"mk:m{i % 6:03d}", "mk:m100"],
        "ts_ms": T0 + (i // 3) * HOUR,  # three signals share each ts: pagination must break ties
        "trigger_recv_ms": T0 + (i // 3) * HOUR + 4,
        "edge_bps": float(i),
        "legs": [
            {"market_id": "mk:m100", "token_id": "y1", "side": "buy", "price": 0.4, "size": 5.0}
        ],
        "evidence": {"i": str(i)},
        "summary": f"signal {i}",
    }


def load(wh: Warehouse, topic_id: str, records: list[dict]) -> None:
    # Through the codec, as the sink does, so Avro defaults are filled in.
    table = TABLES[topic_id]
    rows = [
        to_row(table, CODEC, CODEC.encode(table.schema, r), 0, n) for n, r in enumerate(records)
    ]
    wh.insert(table.name, rows, table.columns)


@pytest.fixture(scope="module")
def wh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Warehouse]:
    path = tmp_path_factory.mktemp("api") / "wh"
    warehouse = connect(Settings(warehouse_url=f"chdb://{path}"))
    try:
        warehouse.migrate()
        load(warehouse, "markets", [market(i) for i in range(N_MARKETS)])
        # A newer version of m001: the API must show it, and only it.
        load(warehouse, "markets", [market(1, status="closed", updated_ms=T0 + HOUR)])
        load(warehouse, "signals", [signal(i) for i in range(N_SIGNALS)])
        load(warehouse, "signals", [signal(5)])  # a redelivered signal: FINAL shows it once
        yield warehouse
    finally:
        warehouse.close()


@pytest.fixture(scope="module")
def client(wh: Warehouse) -> Iterator[TestClient]:
    settings = Settings(kafka_bootstrap=f"127.0.0.1:{closed_port()}")
    with TestClient(create_app(settings, warehouse=wh)) as c:
        yield c


def walk(client: TestClient, path: str, **params: object) -> list[dict]:
    items, cursor, pages = [], None, 0
    while True:
        page = client.get(path, params={**params, **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200, page.text
        body = page.json()
        items += body["items"]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            return items
        assert pages < 100


# ---- health and metrics --------------------------------------------------------------------


def test_healthz(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


def test_readyz_names_kafka_when_the_broker_is_unreachable(client: TestClient) -> None:
    r = client.get("/readyz")
    assert r.status_code == 503
    assert r.json() == {"kafka": False, "clickhouse": True, "down": ["kafka"]}


def test_readyz_is_200_with_the_real_broker(wh: Warehouse, kafka_bootstrap: str) -> None:
    with TestClient(create_app(Settings(kafka_bootstrap=kafka_bootstrap), warehouse=wh)) as c:
        r = c.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json() == {"kafka": True, "clickhouse": True, "down": []}
    assert not wh.closed  # a warehouse passed in belongs to the caller


def test_metrics_exposes_mpx_metrics_with_route_templates(client: TestClient) -> None:
    client.get("/api/markets", params={"venue": "kalshi"})
    text = client.get("/metrics").text
    assert 'mpx_api_request_seconds_count{route="/api/markets",status="200"}' in text
    assert "mpx_sink_rows_total" in text and "mpx_dead_letters_total" in text


def test_openapi_documents_the_response_models(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    assert {"MarketPage", "Market", "SignalPage", "Signal", "Readiness", "Stats"} <= set(schemas)


# ---- markets -------------------------------------------------------------------------------


def test_markets_show_the_latest_version_once(client: TestClient) -> None:
    items = walk(client, "/api/markets", limit=500)
    assert len(items) == N_MARKETS
    m1 = next(m for m in items if m["market_id"] == "mk:m001")
    assert m1["status"] == "closed" and m1["updated"] == "2026-01-01T01:00:00Z"
    assert m1["outcome_names"] == ["Yes", "No"] and m1["token_ids"] == ["y1", "n1"]


def test_market_filters(client: TestClient) -> None:
    kalshi = walk(client, "/api/markets", venue="kalshi")
    assert {m["market_id"] for m in kalshi} == {f"mk:m{i:03d}" for i in range(0, N_MARKETS, 3)}
    resolved = walk(client, "/api/markets", status="resolved", venue="polymarket")
    assert [m["market_id"] for m in resolved] == ["mk:m005", "mk:m010", "mk:m020"]


def test_market_search_is_case_insensitive_and_literal(client: TestClient) -> None:
    assert [m["market_id"] for m in walk(client, "/api/markets", q="ABOVE 50%")] == ["mk:m007"]
    assert walk(client, "/api/markets", q="5_%") == []  # wildcards are searched literally
    injected = walk(client, "/api/markets", q="' OR 1=1 --")
    assert injected == []


def test_market_pagination_walks_every_row_exactly_once(client: TestClient) -> None:
    items = walk(client, "/api/markets", limit=5)
    ids = [m["market_id"] for m in items]
    assert ids == sorted(ids) and len(ids) == len(set(ids)) == N_MARKETS


def test_limit_is_capped_and_validated(client: TestClient) -> None:
    assert client.get("/api/markets", params={"limit": 100_000}).json()["limit"] == 500
    assert client.get("/api/markets", params={"limit": 0}).status_code == 422
    assert client.get("/api/signals", params={"limit": 501}).json()["limit"] == 500


def test_a_bad_cursor_is_a_422(client: TestClient) -> None:
    assert client.get("/api/markets", params={"cursor": "garbage!"}).status_code == 422
    signals_cursor = client.get("/api/signals", params={"limit": 1}).json()["next_cursor"]
    r = client.get("/api/markets", params={"cursor": signals_cursor})
    assert r.status_code == 422 and "cursor" in r.json()["detail"]


# ---- signals -------------------------------------------------------------------------------


def test_signals_newest_first_and_paginated_exactly_once(client: TestClient) -> None:
    items = walk(client, "/api/signals", limit=7)
    keys = [(s["ts"], s["signal_id"]) for s in items]
    assert len(keys) == len(set(keys)) == N_SIGNALS
    assert keys == sorted(keys, reverse=True)
    s5 = next(s for s in items if s["signal_id"] == "s005")
    assert s5["legs"][0]["market_id"] == "mk:m100" and s5["evidence"] == {"i": "5"}


def test_signal_filters(client: TestClient) -> None:
    p1 = walk(client, "/api/signals", level="P1", rule="ladder")
    assert {s["signal_id"] for s in p1} == {f"s{i:03d}" for i in range(0, N_SIGNALS, 4)}
    on_m002 = walk(client, "/api/signals", market="mk:m002")
    assert {s["signal_id"] for s in on_m002} == {f"s{i:03d}" for i in range(2, N_SIGNALS, 6)}


def test_signal_time_range_iso_and_epoch_ms(client: TestClient) -> None:
    iso = walk(client, "/api/signals", since="2026-01-01T02:00:00Z", until="2026-01-01T04:00")
    epoch = walk(client, "/api/signals", since=T0 + 2 * HOUR, until=T0 + 4 * HOUR)
    expected = {f"s{i:03d}" for i in range(6, 12)}  # ts hours 2 and 3; until is exclusive
    assert {s["signal_id"] for s in iso} == {s["signal_id"] for s in epoch} == expected


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"since": "yesterday"}, "since: expected ISO 8601"),
        ({"until": "2026-13-01"}, "until: expected ISO 8601"),
        ({"since": "2026-01-02", "until": "2026-01-01"}, "since must be before until"),
        ({"since": "2026-01-01", "until": "2026-03-01"}, "more than 31 days"),
    ],
)
def test_bad_time_ranges_are_clear_422s(client: TestClient, params: dict, needle: str) -> None:
    r = client.get("/api/signals", params=params)
    assert r.status_code == 422 and needle in r.json()["detail"]


def test_stats_count_deduplicated_rows(client: TestClient) -> None:
    body = client.get("/api/stats").json()
    assert body["rows"]["markets"] == N_MARKETS and body["rows"]["signals"] == N_SIGNALS
    assert body["rows"]["ticks"] == 0
    assert body["latest_signal"] == "2026-01-01T12:00:00Z"


# ---- the in-process sink (embedded chDB has one owner) ---------------------------------------


def test_api_with_sink_writes_kafka_into_the_shared_warehouse(
    tmp_path: Path, kafka_bootstrap: str, unique_name: str, wh: Warehouse
) -> None:
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=f"t{unique_name}.",
        sink_group=f"g{unique_name}",
        sink_batch_ms=100,
    )
    asyncio.run(_produce_signals(settings, [signal(100 + i) for i in range(5)]))
    before = wh.query("SELECT count() AS n FROM signals FINAL")[0]["n"]
    with TestClient(create_app(settings, warehouse=wh, with_sink=True)) as c:
        deadline = time.monotonic() + 60
        while c.get("/api/stats").json()["rows"]["signals"] < before + 5:
            assert time.monotonic() < deadline, "the in-process sink wrote nothing"
            time.sleep(0.1)
    assert wh.query("SELECT count() AS n FROM signals FINAL")[0]["n"] == before + 5


async def _produce_signals(settings: Settings, records: list[dict]) -> None:
    await create_topics(settings)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        for r in records:
            await producer.send_and_wait(settings.topic("signals"), CODEC.encode("signal", r))
    finally:
        await producer.stop()
