"""The sink against the real broker and a real ClickHouse engine (chDB in tmp_path): exact
counts, dead letters with their reason, offsets committed only after inserts, and a replay
that adds no row."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from marketpulse import metrics
from marketpulse.catalog import CATALOG
from marketpulse.codec import Codec
from marketpulse.kafka import create_topics
from marketpulse.settings import Settings
from marketpulse.warehouse import Warehouse, connect, sink

pytestmark = pytest.mark.integration

CODEC = Codec()
N_TICKS = 600
DEADLINE_S = 60.0


def tick(i: int) -> dict[str, Any]:
    now = int(time.time() * 1000)
    return {
        "event_key": f"mk:e{i % 9}",
        "market_id": f"mk:m{i % 9}",
        "token_id": f"tok{i % 17}",
        "venue": "mock",
        "ts_ms": now,
        "recv_ms": now,
        "seq": i,
        "best_bid": 0.41,
        "best_ask": 0.43,
    }


# Four messages the sink cannot store, and why.
GARBAGE: list[tuple[bytes | None, str]] = [
    (b"not avro at all", "bad_magic"),
    (None, "empty"),
    (
        CODEC.encode(
            "trade", {**tick(0), "trade_id": "x", "price": 0.5, "size": 1.0, "side": "BUY"}
        ),
        "wrong_schema",
    ),
    (CODEC.encode("tick", {**tick(0), "seq": -1}), "out_of_range"),
]


@pytest.fixture
def settings(kafka_bootstrap: str, unique_name: str, tmp_path: Path) -> Settings:
    return Settings(
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=f"t{unique_name}.",
        warehouse_url=f"chdb://{tmp_path}/wh",
        sink_group=f"g{unique_name}",
        sink_batch_rows=100,
        sink_batch_ms=100,
    )


@pytest.fixture
async def wh(settings: Settings) -> AsyncIterator[Warehouse]:
    await create_topics(settings)
    warehouse = connect(settings)
    try:
        warehouse.migrate()  # the sink migrates too (a no-op then); tests query right away
        yield warehouse
    finally:
        warehouse.close()


async def produce(settings: Settings, values: list[tuple[bytes, bytes | None]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=5)
    await producer.start()
    try:
        for key, value in values:
            await producer.send(settings.topic("ticks"), value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


def tick_messages(n: int) -> list[tuple[bytes, bytes | None]]:
    return [(f"mk:e{i % 9}".encode(), CODEC.encode("tick", tick(i))) for i in range(n)]


async def count(wh: Warehouse, sql: str) -> int:
    rows = await asyncio.to_thread(wh.query, sql)
    return int(rows[0]["n"])


async def until(predicate: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not await predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


class Running:
    """The sink as a task (`sink.run`, or a given Sink), stopped gracefully on exit."""

    def __init__(self, settings: Settings, warehouse: Any, the_sink: sink.Sink | None = None):
        self._stop = asyncio.Event()
        job = the_sink.run(self._stop) if the_sink else sink.run(settings, self._stop, warehouse)
        self._task = asyncio.create_task(job)

    async def __aenter__(self) -> Running:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        await asyncio.wait_for(self._task, 30)

    def check(self) -> None:
        if self._task.done():
            self._task.result()  # surface a crash instead of timing out


def partitions(settings: Settings, topic_ids: tuple[str, ...]) -> list[TopicPartition]:
    # From the catalog, which created them: a fresh consumer has no metadata to ask yet.
    return [
        TopicPartition(settings.topic(t), p)
        for t in topic_ids
        for p in range(CATALOG.topic(t).partitions)
    ]


async def offsets(settings: Settings, topic_ids: tuple[str, ...]) -> dict[TopicPartition, tuple]:
    """(committed by the sink group, end offset) of every partition of `topic_ids`."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=settings.sink_group,
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        tps = partitions(settings, topic_ids)
        ends = await consumer.end_offsets(tps)
        return {tp: ((await consumer.committed(tp)) or 0, ends[tp]) for tp in tps}
    finally:
        await consumer.stop()


async def all_committed(settings: Settings) -> bool:
    return all(c == e for c, e in (await offsets(settings, ("ticks", "dlq"))).values())


async def dead_letter_records(settings: Settings) -> list[dict[str, Any]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    try:
        tps = partitions(settings, ("dlq",))
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        records: list[dict[str, Any]] = []
        while any([await consumer.position(tp) < ends[tp] for tp in tps]):
            batch = await consumer.getmany(timeout_ms=500)
            records += [CODEC.decode("dead_letter", m.value) for ms in batch.values() for m in ms]
        return records
    finally:
        await consumer.stop()


async def rewind_to_earliest(settings: Settings) -> None:
    """What `marketpulse replay` does: with the group stopped, move its offsets to earliest."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=settings.sink_group,
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        tps = partitions(settings, tuple(sink.TABLES))
        consumer.assign(tps)
        starts = await consumer.beginning_offsets(tps)
        await consumer.commit(starts)
    finally:
        await consumer.stop()


async def test_sink_counts_dead_letters_commits_and_replays_without_duplicates(
    settings: Settings, wh: Warehouse
) -> None:
    garbage = [(b"mk:bad", value) for value, _ in GARBAGE]
    await produce(settings, tick_messages(N_TICKS // 2) + garbage + tick_messages(N_TICKS)[300:])

    async def landed() -> bool:
        run.check()
        ticks = await count(wh, "SELECT count() AS n FROM ticks")
        dead = await count(wh, "SELECT count() AS n FROM dead_letters")
        return ticks >= N_TICKS and dead >= len(GARBAGE) and await all_committed(settings)

    async with Running(settings, wh) as run:
        await until(landed, "ticks, dead letters and commits")

    assert await count(wh, "SELECT count() AS n FROM ticks") == N_TICKS
    assert await count(wh, "SELECT count() AS n FROM ticks FINAL") == N_TICKS
    assert await count(wh, "SELECT countIf(mid IS NULL) AS n FROM ticks") == 0

    # Every bad message is in the dead-letter topic with its reason, source and offset...
    letters = await dead_letter_records(settings)
    assert sorted(d["error_kind"] for d in letters) == sorted(kind for _, kind in GARBAGE)
    ticks_topic = settings.topic("ticks")
    for d in letters:
        assert (d["stage"], d["source"]) == ("sink", ticks_topic) and d["offset"] >= 0
    assert {d["payload"] for d in letters} == {v for v, _ in GARBAGE}
    # ...and in the warehouse, pointing back at the same messages.
    stored = await asyncio.to_thread(
        wh.query, "SELECT partition, offset, error_kind FROM dead_letters ORDER BY offset"
    )
    assert sorted((r["partition"], r["offset"]) for r in stored) == sorted(
        (d["partition"], d["offset"]) for d in letters
    )
    final = await offsets(settings, ("ticks", "dlq"))
    assert all(c == e for c, e in final.values()) and sum(e for _, e in final.values()) > 0

    # Replay: rewind the stopped group to earliest and run it again.
    await rewind_to_earliest(settings)

    async def replayed() -> bool:
        rerun.check()
        ends = await offsets(settings, ("dlq",))
        return sum(e for _, e in ends.values()) == 2 * len(GARBAGE) and await all_committed(
            settings
        )

    async with Running(settings, wh) as rerun:
        await until(replayed, "the replay to catch up")

    assert await count(wh, "SELECT count() AS n FROM ticks FINAL") == N_TICKS
    # A replay re-dead-letters the same messages (at least once); they are the same sources.
    sources = "SELECT uniqExact(source, partition, offset) AS n FROM dead_letters FINAL"
    assert await count(wh, sources) == len(GARBAGE)


class FlakyWarehouse:
    """The real warehouse, whose inserts fail while `failing` is set (ClickHouse down)."""

    def __init__(self, inner: Warehouse) -> None:
        self._inner = inner
        self.failing = True

    def insert(self, *args: Any, **kwargs: Any) -> None:
        if self.failing:
            raise ConnectionError("injected: warehouse unreachable")
        self._inner.insert(*args, **kwargs)

    def insert_avro(self, *args: Any, **kwargs: Any) -> None:
        if self.failing:
            raise ConnectionError("injected: warehouse unreachable")
        self._inner.insert_avro(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


async def test_failed_inserts_are_retried_never_committed_past_and_memory_is_bounded(
    settings: Settings, wh: Warehouse
) -> None:
    limit = 150
    settings = settings.model_copy(update={"sink_max_buffered_rows": limit})
    flaky = FlakyWarehouse(wh)
    the_sink = sink.Sink(settings, flaky)  # type: ignore[arg-type]
    errors = metrics.SINK_INSERT_ERRORS.labels("ticks")
    before = errors._value.get()
    await produce(settings, tick_messages(N_TICKS))

    async def failing_and_paused() -> bool:
        run.check()
        return errors._value.get() >= before + 2 and the_sink.paused

    async def landed() -> bool:
        run.check()
        return await count(wh, "SELECT count() AS n FROM ticks") >= N_TICKS and (
            await all_committed(settings)
        )

    async with Running(settings, flaky, the_sink) as run:
        await until(failing_and_paused, "insert retries and backpressure")
        committed = await offsets(settings, ("ticks",))
        assert all(c == 0 for c, _ in committed.values()), "committed past a failed insert"
        # Paused at the limit: at most one more poll (sink_batch_rows) arrived after it.
        assert limit <= the_sink.held_rows <= limit + settings.sink_batch_rows
        flaky.failing = False
        await until(landed, "the retried inserts")

    assert await count(wh, "SELECT count() AS n FROM ticks") == N_TICKS


# ---- replay with other batch boundaries: FINAL and the rollups stay exact -------------------

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def priced(i: int) -> dict[str, Any]:
    bid = 0.20 + (i * 13 % 17) / 100
    return {
        **tick(i),
        "token_id": f"tok{i % 3}",
        "ts_ms": T0 + i * 500,
        "recv_ms": T0 + i * 500 + i % 7,
        "best_bid": bid,
        "best_ask": bid + 0.01,
    }


def scored(i: int) -> dict[str, Any]:
    return {
        "signal_id": f"sig{i}",
        "rule_id": "complete_set",
        "rule_version": 1,
        "level": "P1" if i % 3 == 0 else "P2",
        "subject": "mk:e1",
        "event_key": "mk:e1",
        "market_ids": ["mk:m1"],
        "ts_ms": T0 + i * 1000,
        "trigger_recv_ms": T0 + i * 1000,
        "edge_bps": 5.0 + i,
        "notional": 10.0 * i,
        "legs": [],
        "evidence": {},
    }


async def produce_records(settings: Settings, topic_id: str, records: list[dict]) -> None:
    schema = CATALOG.topic(topic_id).schema
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=5)
    await producer.start()
    try:
        for r in records:
            await producer.send(settings.topic(topic_id), CODEC.encode(schema, r), key=b"mk:e1")
        await producer.flush()
    finally:
        await producer.stop()


ROLLUPS = {
    "candles": """SELECT token_id, minute, argMinMerge(open) AS o, argMaxMerge(close) AS c,
        maxMerge(high) AS h, minMerge(low) AS l, uniqExactMerge(ticks) AS n
        FROM candles_1m GROUP BY token_id, minute ORDER BY token_id, minute""",
    "kpi": """SELECT rule_id, day, uniqExactMerge(signal_ids) AS n, uniqExactIfMerge(p1_ids) AS p1,
        arraySum(x -> x.2, groupUniqArrayMerge(edges)) AS edge,
        arraySum(x -> x.3, groupUniqArrayMerge(edges)) AS notional
        FROM rule_kpi_daily GROUP BY rule_id, day ORDER BY rule_id, day""",
    "lag": """SELECT venue, shard, arraySort(arrayMap(x -> x.3, groupUniqArrayMerge(lags))) AS l
        FROM ingest_lag_1m GROUP BY venue, shard ORDER BY venue, shard""",
}


async def test_a_replay_cut_into_other_batches_keeps_final_counts_and_rollups_exact(
    settings: Settings, wh: Warehouse
) -> None:
    n_ticks, n_signals = 400, 60
    await produce_records(settings, "ticks", [priced(i) for i in range(n_ticks)])
    await produce_records(settings, "signals", [scored(i) for i in range(n_signals)])
    topics = ("ticks", "signals")
    # Merges would collapse duplicates and hide them; the point is that nothing needs to.
    for table in ("ticks", "signals", "candles_1m", "rule_kpi_daily", "ingest_lag_1m"):
        await asyncio.to_thread(wh.command, f"SYSTEM STOP MERGES {table}")

    async def caught_up(running: Running) -> bool:
        running.check()
        return all(c == e for c, e in (await offsets(settings, topics)).values())

    async with Running(settings, wh) as first:
        await until(lambda: caught_up(first), "the first run")
    before = {name: await asyncio.to_thread(wh.query, sql) for name, sql in ROLLUPS.items()}

    # The replay runs with another batch size: its batches carry other tokens, so ClickHouse
    # stores every row a second time and the views see every row a second time.
    await rewind_to_earliest(settings)
    other = settings.model_copy(update={"sink_batch_rows": 70})
    async with Running(other, wh) as replay:
        await until(lambda: caught_up(replay), "the replay")

    # (A batch cut identically both times would be dropped by its token: hence not == 2n.)
    assert await count(wh, "SELECT count() AS n FROM ticks") > n_ticks
    assert await count(wh, "SELECT count() AS n FROM ticks FINAL") == n_ticks
    assert await count(wh, "SELECT count() AS n FROM signals FINAL") == n_signals
    after = {name: await asyncio.to_thread(wh.query, sql) for name, sql in ROLLUPS.items()}
    assert after == before
    # ...and they are the right numbers, not just stable ones.
    kpi = after["kpi"]
    assert [(r["n"], r["p1"]) for r in kpi] == [(n_signals, 20)]
    assert kpi[0]["edge"] == pytest.approx(sum(5.0 + i for i in range(n_signals)))
    assert kpi[0]["notional"] == pytest.approx(sum(10.0 * i for i in range(n_signals)))
    assert sum(r["n"] for r in after["candles"]) == n_ticks
    assert sorted(x for r in after["lag"] for x in r["l"]) == sorted(i % 7 for i in range(n_ticks))
