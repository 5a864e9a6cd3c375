"""The sink's Avro landing path (migration 0004) against the Python mapping it replaces: for
every landing table, the same messages give the same rows both ways; what ClickHouse cannot map
exactly (or Python would refuse) fails the insert, and the sink then maps that batch in Python,
dead-letters the bad message and stores the rest."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer, ConsumerRecord

from marketpulse import metrics
from marketpulse.codec import Codec
from marketpulse.errors import BadMessage
from marketpulse.kafka import create_topics
from marketpulse.settings import Settings
from marketpulse.warehouse import Warehouse, connect, sink
from marketpulse.warehouse.avro_block import Container
from marketpulse.warehouse.sink import TABLES, to_row

pytestmark = pytest.mark.integration

CODEC = Codec()
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
IDS = {"event_key": "pm:ev1", "market_id": "pm:0xabc", "token_id": "t1", "venue": "polymarket"}
TIMES = {"ts_ms": T0, "recv_ms": T0 + 5}


def legs(rng: random.Random, n: int) -> list[dict[str, Any]]:
    """Legs whose numbers cover what the landing view must write as Python does: whole
    numbers, shortest-repr fractions, tiny and huge values inside the fixed-notation range."""
    pool = [0.0, 1.0, 100.0, 0.5, 0.1 + 0.2, 1e-4, 0.00012345, 9999999999999998.0, 1 / 3]
    out = []
    for i in range(n):
        price = rng.choice(pool) if i % 2 else round(rng.uniform(0.01, 0.99), rng.randint(1, 17))
        size = rng.choice(pool) if i % 3 else float(rng.randint(1, 10 ** rng.randint(1, 15)))
        side = "BUY" if i % 2 else "SELL"
        out.append({"market_id": f"pm:0x{i}", "token_id": f"t-{i}/x", "side": side})
        out[-1].update(price=price, size=size)
    return out


def records() -> dict[str, list[dict[str, Any]]]:
    rng = random.Random(5)
    ticks = [
        {**IDS, **TIMES, "seq": 1, "best_bid": 0.4, "best_ask": 0.5, "bid_size": 3.0},
        {**IDS, **TIMES, "seq": 2**62, "last_price": 0.7},  # every optional field else null
        {**IDS, "ts_ms": -2_208_988_800_000, "recv_ms": 10_413_791_999_999, "seq": 0},
    ]
    books = [
        {**IDS, **TIMES, "seq": 3, "bids": [], "asks": []},
        {
            **IDS,
            **TIMES,
            "seq": 4,
            "bids": [{"price": 0.4, "size": 10.0}, {"price": 0.39, "size": 5.5}],
            "asks": [{"price": 0.5, "size": 12.0}],
            "hash": "abc",
        },
    ]
    trades = [
        {**IDS, **TIMES, "trade_id": "x1", "price": 0.45, "size": 100.0, "side": "BUY"},
        {**IDS, **TIMES, "trade_id": "x2", "price": 0.5, "size": 1.5, "side": "SELL"}
        | {"wallet": "0xw", "tx_hash": "0xh"},
    ]
    signals = [
        {
            "signal_id": f"s{i}",
            "rule_id": "complete_set",
            "rule_version": i,
            "level": "P1",
            "subject": "pm:ev1",
            "event_key": "pm:ev1",
            "market_ids": [f"pm:0x{j}" for j in range(i % 3)],
            "ts_ms": T0 + i,
            "trigger_recv_ms": T0 + i + 7,
            "edge_bps": 12.5 * i,
            "notional": 40.0,
            "legs": legs(rng, i % 5),
            "evidence": {"why": f"e{i}", "k": ""} if i % 2 else {},
        }
        for i in range(60)
    ]
    return {"ticks": ticks, "books": books, "trades": trades, "signals": signals}


@pytest.fixture
def wh(tmp_path: Path) -> Any:
    warehouse = connect(Settings(warehouse_url=f"chdb://{tmp_path}/wh"))
    try:
        warehouse.migrate()
        yield warehouse
    finally:
        warehouse.close()


def stored(wh: Warehouse, table: str) -> list[dict[str, Any]]:
    return wh.query(f"SELECT * EXCEPT _inserted FROM {table} ORDER BY _offset")


def container(topic_id: str, values: list[bytes], partition: int = 3) -> bytes:
    messages = [
        ConsumerRecord("t", partition, n, 0, 0, None, v, None, -1, len(v), ())
        for n, v in enumerate(values)
    ]
    return Container(TABLES[topic_id].schema).build([(partition, messages)])


@pytest.mark.parametrize("topic_id", ["ticks", "books", "trades", "signals"])
def test_the_landing_view_stores_the_rows_python_maps(wh: Warehouse, topic_id: str) -> None:
    table = TABLES[topic_id]
    values = [CODEC.encode(table.schema, r) for r in records()[topic_id]]
    rows = [to_row(table, CODEC, v, 3, n) for n, v in enumerate(values)]
    wh.insert(table.name, rows, table.columns, "python")
    by_python = stored(wh, table.name)
    wh.command(f"TRUNCATE TABLE {table.name}")
    assert table.landing is not None
    wh.insert_avro(table.landing, container(topic_id, values), "avro")
    assert stored(wh, table.name) == by_python and len(by_python) == len(values)


def test_landing_views_feed_the_same_rollups(wh: Warehouse) -> None:
    signals = records()["signals"]
    values = [CODEC.encode("signal", r) for r in signals]
    assert TABLES["signals"].landing is not None
    wh.insert_avro(TABLES["signals"].landing, container("signals", values), "avro")
    kpi = wh.query("SELECT count() AS n, sum(edge_bps) AS e FROM signal_kpi FINAL")[0]
    assert kpi == {"n": len(signals), "e": pytest.approx(sum(s["edge_bps"] for s in signals))}


def test_a_repeated_avro_batch_is_dropped_by_its_token(wh: Warehouse) -> None:
    values = [CODEC.encode("tick", r) for r in records()["ticks"]]
    for _ in range(2):
        wh.insert_avro("ticks_avro", container("ticks", values), "ticks:3:0-2")
    assert wh.query("SELECT count() AS n FROM ticks")[0]["n"] == len(values)


REFUSED = [
    ("ticks", {**IDS, **TIMES, "seq": -1}, "out_of_range"),
    ("ticks", {**IDS, "ts_ms": 10_413_792_000_000, "recv_ms": T0, "seq": 1}, "out_of_range"),
    ("books", {**IDS, **TIMES, "seq": -5, "bids": [], "asks": []}, "out_of_range"),
    (
        "trades",
        {**IDS, "ts_ms": T0, "recv_ms": -2_208_988_800_001, "trade_id": "x"}
        | {"price": 0.5, "size": 1.0, "side": "BUY"},
        "out_of_range",
    ),
    ("signals", {"rule_version": -1}, "out_of_range"),
    # Python stores these; only Python writes their legs JSON exactly.
    (
        "signals",
        {
            "legs": [
                {"market_id": "pm:é", "token_id": "t", "side": "BUY"} | {"price": 0.5, "size": 1.0}
            ]
        },
        None,
    ),
    (
        "signals",
        {
            "legs": [
                {"market_id": 'a"b', "token_id": "t", "side": "BUY"} | {"price": 0.5, "size": 1.0}
            ]
        },
        None,
    ),
    (
        "signals",
        {
            "legs": [
                {"market_id": "m", "token_id": "t", "side": "BUY"} | {"price": 1e-5, "size": 1e16}
            ]
        },
        None,
    ),
]


@pytest.mark.parametrize(("topic_id", "record", "python_error"), REFUSED)
def test_what_python_would_refuse_or_write_otherwise_fails_the_avro_insert(
    wh: Warehouse, topic_id: str, record: dict[str, Any], python_error: str | None
) -> None:
    if topic_id == "signals":
        record = {**records()["signals"][1], **record}
    table = TABLES[topic_id]
    value = CODEC.encode(table.schema, record)
    assert table.landing is not None
    with pytest.raises(Exception, match=r"out_of_range|unsupported"):
        wh.insert_avro(table.landing, container(topic_id, [value]), "tok")
    assert wh.query(f"SELECT count() AS n FROM {table.name}")[0]["n"] == 0
    if python_error:
        with pytest.raises(BadMessage) as err:
            to_row(table, CODEC, value, 0, 0)
        assert err.value.kind == python_error
    else:
        to_row(table, CODEC, value, 0, 0)


# ---- the sink: a refused batch is mapped in Python ------------------------------------------


@pytest.fixture
async def settings(kafka_bootstrap: str, unique_name: str, tmp_path: Path) -> Settings:
    s = Settings(
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=f"a{unique_name}.",
        warehouse_url=f"chdb://{tmp_path}/sinkwh",
        sink_group=f"ga{unique_name}",
        sink_batch_rows=50,
        sink_batch_ms=100,
    )
    await create_topics(s)
    return s


@pytest.fixture
async def sink_wh(settings: Settings) -> AsyncIterator[Warehouse]:
    warehouse = connect(settings)
    try:
        warehouse.migrate()
        yield warehouse
    finally:
        warehouse.close()


async def test_a_refused_batch_is_mapped_in_python_and_its_bad_message_dead_lettered(
    settings: Settings, sink_wh: Warehouse
) -> None:
    signals = records()["signals"]
    exotic = {**signals[1], "signal_id": "exotic", "legs": REFUSED[5][1]["legs"]}
    bad = {**signals[2], "signal_id": "bad", "ts_ms": 10_413_792_000_000}
    fallbacks = metrics.SINK_AVRO_FALLBACKS.labels("signals")
    before = fallbacks._value.get()
    all_of = [*signals, exotic, bad]
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        for s in all_of:
            # One partition, so the exotic, the bad and ordinary signals share batches.
            value = CODEC.encode("signal", s)
            await producer.send(settings.topic("signals"), value, partition=0)
        await producer.flush()
    finally:
        await producer.stop()

    stop = asyncio.Event()
    task = asyncio.create_task(sink.run(settings, stop, sink_wh))
    deadline = time.monotonic() + 60
    try:
        while True:
            assert not task.done(), task.result()
            n = sink_wh.query("SELECT count() AS n FROM signals")[0]["n"]
            dead = sink_wh.query("SELECT count() AS n FROM dead_letters")[0]["n"]
            if n >= len(all_of) - 1 and dead >= 1:
                break
            assert time.monotonic() < deadline, f"{n} signals, {dead} dead letters"
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)

    assert fallbacks._value.get() > before
    letters = sink_wh.query("SELECT error_kind, offset FROM dead_letters")
    assert [r["error_kind"] for r in letters] == ["out_of_range"]
    assert letters[0]["offset"] == len(all_of) - 1
    table = TABLES["signals"]
    want = [
        dict(zip(table.columns, to_row(table, CODEC, CODEC.encode("signal", s), 0, n), strict=True))
        for n, s in enumerate(all_of[:-1])
    ]
    got = sink_wh.query(f"SELECT {', '.join(table.columns)} FROM signals FINAL ORDER BY _offset")
    for row in [*want, *got]:
        row["ts"] = row["trigger_recv"] = None  # chDB returns datetimes, Python epoch ms
    assert got == want
