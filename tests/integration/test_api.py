"""The HTTP API over a real chDB warehouse (and the real broker for readiness and the
in-process sink). One warehouse for the module: chDB opens one data path per process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from fastapi.testclient import TestClient

from marketpulse.api import create_app
from marketpulse.catalog import CATALOG
from marketpulse.codec import Codec
from marketpulse.kafka import create_topics
from marketpulse.rules import RuleDef
from marketpulse.settings import Settings
from marketpulse.warehouse import Warehouse, connect
from marketpulse.warehouse.sink import TABLES, to_row

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
        "end_ms": T0 + i * HOUR,
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


N_TICKS = 240  # two tokens of mk:m001, one tick every 2 s: four minutes of candles
N_DEAD = 7


def tick(i: int) -> dict:
    bid = 0.30 + (i % 9) / 100
    return {
        "event_key": "mk:e0",
        "market_id": "mk:m001",
        "token_id": "y1" if i % 2 == 0 else "n1",
        "venue": "polymarket",
        "ts_ms": T0 + i * 1000,
        "recv_ms": T0 + i * 1000 + 3,
        "seq": i,
        "best_bid": bid,
        "best_ask": bid + 0.02,
    }


def book(i: int) -> dict:
    return {
        **{k: v for k, v in tick(i).items() if not k.startswith("best")},
        "bids": [{"price": 0.40 + i / 100, "size": 10.0}, {"price": 0.30, "size": 5.0}],
        "asks": [{"price": 0.50 + i / 100, "size": 12.0}],
    }


def trade(i: int) -> dict:
    return {
        **{k: v for k, v in tick(2 * i).items() if k not in ("seq", "best_bid", "best_ask")},
        "trade_id": f"tr{i}",
        "price": 0.45,
        "size": 10.0 * (i + 1),
        "side": "BUY",
    }


def dead_letter(i: int) -> dict:
    return {
        "stage": "sink",
        "source": "mpx.ticks.v1" if i % 2 else "mpx.books.v1",
        "partition": 0,
        "offset": i,
        "error_kind": "bad_magic",
        "error": f"bad {i}",
        "payload": b"\xff" + b"x" * 1000,
        "ts_ms": T0 + (i // 2) * 1000,  # pairs share a ts: the cursor must break ties
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
        load(warehouse, "ticks", [tick(i) for i in range(N_TICKS)])
        load(warehouse, "books", [book(i) for i in range(4)])
        load(warehouse, "trades", [trade(i) for i in range(6)])
        load(warehouse, "dlq", [dead_letter(i) for i in range(N_DEAD)])
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
    body = r.json()
    assert (body["kafka"], body["clickhouse"], body["down"]) == (False, True, ["kafka"])
    assert body["sink_lag"] is None  # unknown without a broker, not zero


def test_readyz_is_200_with_the_real_broker(wh: Warehouse, kafka_bootstrap: str) -> None:
    with TestClient(create_app(Settings(kafka_bootstrap=kafka_bootstrap), warehouse=wh)) as c:
        r = c.get("/readyz")
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["kafka"], body["clickhouse"], body["down"]) == (True, True, [])
    assert isinstance(body["sink_lag"], int)
    assert not wh.closed  # a warehouse passed in belongs to the caller


def test_metrics_exposes_mpx_metrics_with_route_templates(client: TestClient) -> None:
    client.get("/api/markets", params={"venue": "kalshi"})
    text = client.get("/metrics").text
    assert 'mpx_api_request_seconds_count{route="/api/markets",status="200"}' in text
    assert "mpx_sink_rows_total" in text and "mpx_dead_letters_total" in text


def test_openapi_documents_the_response_models(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    assert {"MarketPage", "Market", "SignalPage", "Signal", "Readiness", "Stats"} <= set(schemas)
    assert {"MarketDetail", "RuleKpi", "DeadLetterPage", "Published", "Decision"} <= set(schemas)


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
    assert body["rows"]["ticks"] == N_TICKS
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


# ---- markets: ending before, drilldown -----------------------------------------------------


def test_markets_ending_before(client: TestClient) -> None:
    soon = walk(client, "/api/markets", ending_before="2026-01-01T03:00:00Z")
    assert [m["market_id"] for m in soon] == ["mk:m000", "mk:m001", "mk:m002"]
    r = client.get("/api/markets", params={"ending_before": "soon"})
    assert r.status_code == 422 and "ending_before" in r.json()["detail"]


def test_market_drilldown(client: TestClient) -> None:
    r = client.get("/api/markets/mk:m001", params={"candle_minutes": 60})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["market"]["status"] == "closed"  # the latest version
    last_y = tick(N_TICKS - 2)  # the latest tick of token y1
    yes = body["outcomes"][0]
    assert (yes["name"], yes["token_id"]) == ("Yes", "y1")
    assert yes["best_bid"] == pytest.approx(last_y["best_bid"])
    assert yes["quote_ts"] == "2026-01-01T00:03:58Z"
    books = {b["token_id"]: b for b in body["books"]}
    assert books["n1"]["seq"] == 3 and books["n1"]["bids"][0] == {
        "price": pytest.approx(0.43),
        "size": 10.0,
    }
    assert books["y1"]["seq"] == 2 and books["y1"]["asks"] == [
        {"price": pytest.approx(0.52), "size": 12.0}
    ]
    candles = [c for c in body["candles"] if c["token_id"] == "y1"]
    assert [c["minute"][11:16] for c in candles] == ["00:00", "00:01", "00:02", "00:03"]
    assert sum(c["ticks"] for c in body["candles"]) == N_TICKS
    assert sum(c["volume"] for c in candles) == pytest.approx(sum(10.0 * (i + 1) for i in range(6)))
    # Related: the other markets of the same event (no equivalence registry yet).
    assert body["related_basis"] == "same_event"
    assert [m["market_id"] for m in body["related"]] == ["mk:m000", "mk:m002", "mk:m003"]
    # Those of the fixture (another test's sink may add more): market_ids has m001.
    recent = [s["signal_id"] for s in body["recent_signals"] if int(s["signal_id"][1:]) < 100]
    assert recent == ["s031", "s025", "s019", "s013", "s007", "s001"]
    assert all("mk:m001" in s["market_ids"] for s in body["recent_signals"])


def test_market_drilldown_errors(client: TestClient) -> None:
    assert client.get("/api/markets/mk:nope").status_code == 404
    assert client.get("/api/markets/mk:m001", params={"candle_minutes": 5000}).status_code == 422


def test_sparkline_ends_at_the_latest_data_not_at_now(client: TestClient) -> None:
    body = client.get("/api/markets/mk:m001", params={"candle_minutes": 2}).json()
    assert {c["minute"][11:16] for c in body["candles"]} == {"00:02", "00:03"}


# ---- KPIs, dead letters, review ------------------------------------------------------------


def test_daily_kpis(client: TestClient, wh: Warehouse) -> None:
    rows = client.get("/api/kpi/daily").json()
    # Every signal the warehouse holds, once (another test's sink may have added some).
    ids = [r["signal_id"] for r in wh.query("SELECT signal_id FROM signals FINAL")]
    mine = [signal(int(i[1:])) for i in ids]
    assert len(ids) >= N_SIGNALS

    def day(sig: dict) -> str:
        return datetime.fromtimestamp(sig["ts_ms"] / 1000, UTC).date().isoformat()

    assert {(r["rule_id"], r["day"]) for r in rows} == {(s["rule_id"], day(s)) for s in mine}
    for r in rows:
        of_rule = [s for s in mine if (s["rule_id"], day(s)) == (r["rule_id"], r["day"])]
        assert r["signals"] == len(of_rule)  # the redelivered s005 counts once
        assert r["p1"] == sum(s["level"] == "P1" for s in of_rule)
        assert r["total_edge_bps"] == pytest.approx(sum(s["edge_bps"] for s in of_rule))
    only = client.get("/api/kpi/daily", params={"rule": "ladder"}).json()
    assert {r["rule_id"] for r in only} == {"ladder"}
    r = client.get("/api/kpi/daily", params={"since": "2025-01-01", "until": "2026-06-01"})
    assert r.status_code == 422 and "366 days" in r.json()["detail"]
    assert client.get("/api/kpi/daily", params={"since": "2026-01-01"}).status_code == 422


def test_dead_letters_newest_first_paginated_with_previews(client: TestClient) -> None:
    items = walk(client, "/api/dlq", limit=3)
    assert [d["offset"] for d in items] == [6, 5, 4, 3, 2, 1, 0]
    assert items[0]["payload_bytes"] == 1001 and len(items[0]["payload_preview"]) <= 512
    books = walk(client, "/api/dlq", source="mpx.books.v1")
    assert [d["offset"] for d in books] == [6, 4, 2, 0]


def test_mutating_routes_need_the_api_key(client: TestClient) -> None:
    rule = {"rule_id": "x", "version": 1, "type": "complete_set"}
    missing = client.post("/api/rules", json=rule)
    assert missing.status_code == 401 and "X-API-Key" in missing.json()["detail"]
    wrong = client.post("/api/rules", json=rule, headers={"X-API-Key": "guess"})
    assert wrong.status_code == 401
    decision = {"status": "approved", "decided_by": "ana"}
    assert client.post("/api/review/s001", json=decision).status_code == 401


# ---- mutating routes and the live stream, on the real broker --------------------------------

API_KEY = "test-key-1234"


@pytest.fixture
def live_settings(kafka_bootstrap: str, unique_name: str) -> Settings:
    return Settings(
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=f"t{unique_name}.",
        sink_group=f"g{unique_name}",
        api_key=API_KEY,  # type: ignore[arg-type]
        api_stream_max_clients=1,
    )


def read_topic(settings: Settings, topic_id: str, n: int) -> list[tuple[bytes, dict]]:
    async def read() -> list[tuple[bytes, dict]]:
        consumer = AIOKafkaConsumer(
            settings.topic(topic_id),
            bootstrap_servers=settings.kafka_bootstrap,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        out: list[tuple[bytes, dict]] = []
        deadline = time.monotonic() + 30
        try:
            while len(out) < n and time.monotonic() < deadline:
                for msgs in (await consumer.getmany(timeout_ms=200)).values():
                    schema = CATALOG.topic(topic_id).schema
                    out += [(m.key, CODEC.decode(schema, m.value)) for m in msgs]
        finally:
            await consumer.stop()
        return out

    return asyncio.run(read())


def test_a_rule_upload_is_validated_and_published_to_the_rules_topic(
    wh: Warehouse, live_settings: Settings
) -> None:
    asyncio.run(create_topics(live_settings))
    headers = {"X-API-Key": API_KEY}
    rule = {
        "rule_id": "cs_strict",
        "version": 3,
        "type": "complete_set",
        "levels": {"P1": 500, "P2": 200},
        "params": {"min_edge_bps": 50},
    }
    with TestClient(create_app(live_settings, warehouse=wh)) as c:
        bad = c.post("/api/rules", json={**rule, "params": {"min_edge_bps": -1}}, headers=headers)
        assert bad.status_code == 422 and "min_edge_bps" in bad.text
        unknown = c.post("/api/rules", json={**rule, "type": "telepathy"}, headers=headers)
        assert unknown.status_code == 422 and "unknown rule type" in unknown.text
        ok = c.post("/api/rules", json=rule, headers=headers)
    assert ok.status_code == 202, ok.text
    assert ok.json()["topic"] == live_settings.topic("rules")
    [(key, record)] = read_topic(live_settings, "rules", 1)
    assert key == b"cs_strict"
    assert RuleDef.from_record(record) == RuleDef.model_validate(rule)


def test_a_review_decision_is_published_for_a_known_signal_only(
    wh: Warehouse, live_settings: Settings
) -> None:
    asyncio.run(create_topics(live_settings))
    headers = {"X-API-Key": API_KEY}
    decision = {"status": "rejected", "decided_by": "ana", "note": "stale book"}
    with TestClient(create_app(live_settings, warehouse=wh)) as c:
        assert c.post("/api/review/nope", json=decision, headers=headers).status_code == 404
        bad = c.post("/api/review/s003", json={**decision, "status": "maybe"}, headers=headers)
        assert bad.status_code == 422
        assert c.post("/api/review/s003", json=decision, headers=headers).status_code == 202
    [(key, record)] = read_topic(live_settings, "review", 1)
    assert key == b"s003"
    assert (record["signal_id"], record["rule_id"], record["status"]) == (
        "s003",
        "complete_set",
        "rejected",
    )


@contextlib.contextmanager
def serving(app: Any) -> Iterator[str]:
    """A real uvicorn server on a loopback port (SSE needs a real streaming connection)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the API did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def test_the_live_stream_sends_new_matching_signals(wh: Warehouse, live_settings: Settings) -> None:
    asyncio.run(_produce_signals(live_settings, [signal(200)]))  # history: never streamed
    new = [signal(i) for i in (201, 204, 205, 208)]  # 204 and 208 are P1
    app = create_app(live_settings, warehouse=wh)
    with (
        serving(app) as url,
        httpx.Client() as http,
        http.stream(
            "GET", f"{url}/api/signals/stream", params={"level": "P1"}, timeout=30
        ) as stream,
    ):
        assert stream.status_code == 200, stream.read()
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.iter_lines()
        assert next(lines) == ": ready"
        # One stream per client at most (api_stream_max_clients=1): a second one is a 503.
        assert http.get(f"{url}/api/signals/stream", timeout=10).status_code == 503
        asyncio.run(_produce_signals(live_settings, new))
        events = []
        for line in lines:
            if line.startswith("data: "):
                events.append(json.loads(line.removeprefix("data: ")))
            if len(events) == 2:
                break
    # Kafka orders within a partition only, and these signals have different keys.
    events.sort(key=lambda e: e["signal_id"])
    assert [e["signal_id"] for e in events] == ["s204", "s208"]
    assert events[0]["level"] == "P1" and events[0]["market_ids"] == ["mk:m000", "mk:m100"]
