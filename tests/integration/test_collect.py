"""The collector against the real broker: what it reports is exactly what the topics hold,
keyed and partitioned by event, in the Avro wire format."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import sys
import time
from collections import defaultdict

import pytest
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from marketpulse.codec import codec
from marketpulse.collect import run
from marketpulse.errors import ConfigError, TransientError
from marketpulse.kafka import create_topics, describe_topics
from marketpulse.settings import Settings
from marketpulse.venues.mock import MockVenue

START_MS = 1_700_000_000_000
TOPICS = ("markets", "books", "ticks")


async def read_all(settings: Settings) -> dict[str, list[ConsumerRecord[bytes, bytes]]]:
    """Every record of the collector's topics, from the beginning up to the end offsets."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False
    )
    partitions = {row["name"]: row["partitions"] for row in await describe_topics(settings)}
    tps = [
        TopicPartition(settings.topic(t), p)
        for t in TOPICS
        for p in range(partitions[settings.topic(t)])
    ]
    await consumer.start()
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        by_topic: dict[str, list[ConsumerRecord[bytes, bytes]]] = defaultdict(list)
        while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
            for tp, records in (await consumer.getmany(timeout_ms=1000)).items():
                by_topic[tp.topic].extend(records)
        return {t: by_topic[settings.topic(t)] for t in TOPICS}
    finally:
        await consumer.stop()


@pytest.fixture
async def settings(kafka_bootstrap: str, unique_name: str) -> Settings:
    s = Settings(kafka_bootstrap=kafka_bootstrap, topic_prefix=f"t{unique_name}.")
    await create_topics(s)
    return s


@pytest.mark.integration
async def test_collector_publishes_markets_books_and_ticks(settings: Settings) -> None:
    before_ms = int(time.time() * 1000)
    stats = await run(settings, rate=None, max_updates=500, start_ms=START_MS)
    venue = MockVenue(start_ms=START_MS)
    assert stats["markets"] == len(venue.markets())
    assert (stats["books"], stats["ticks"], stats["events"]) == (500, 500, 1000)
    # The first injected window (the binary) becomes visible at update 303: one of them.
    assert stats["opportunities"] == venue.count_opportunities(500) == 1

    got = await read_all(settings)
    c = codec()
    markets = {r.key: c.decode("market", r.value) for r in got["markets"]}
    assert markets == {m["market_id"].encode(): m for m in venue.markets()}

    assert len(got["books"]) == len(got["ticks"]) == 500
    books = [c.decode("book", r.value) for r in got["books"]]
    ticks = [c.decode("tick", r.value) for r in got["ticks"]]
    for schema_topic, records, values in (
        ("books", got["books"], books),
        ("ticks", got["ticks"], ticks),
    ):
        partitions: dict[bytes, set[int]] = defaultdict(set)
        for record, value in zip(records, values, strict=True):
            assert record.key == value["event_key"].encode(), schema_topic
            assert record.timestamp >= before_ms  # wall-clock send time, not event time
            partitions[record.key].add(record.partition)
        assert all(len(p) == 1 for p in partitions.values()), f"{schema_topic}: event split"
        assert len({p for ps in partitions.values() for p in ps}) > 1  # keys spread out

    # The same stream as the venue's, with the collector's receive time stamped at send.
    expected = list(itertools.islice(venue.updates(), 500))
    for value in books + ticks:
        assert value.pop("recv_ms") >= before_ms
    for book, _ in expected:
        book.pop("recv_ms")
    assert sorted(books, key=lambda b: b["seq"]) == [b for b, _ in expected]
    assert sorted(t["seq"] for t in ticks) == list(range(500))


@pytest.mark.integration
async def test_stop_event_ends_the_run_with_everything_delivered(settings: Settings) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(run(settings, rate=2000.0, stop=stop, start_ms=START_MS))
    got: dict[str, list[ConsumerRecord[bytes, bytes]]] = {}
    while len(got.get("books", [])) < 100:  # let it stream a while, then stop it
        got = await read_all(settings)
    stop.set()
    stats = await asyncio.wait_for(task, timeout=30)
    got = await read_all(settings)
    assert stats["books"] == stats["ticks"] == len(got["books"]) == len(got["ticks"]) >= 100


@pytest.mark.integration
async def test_cancellation_stops_cleanly(settings: Settings) -> None:
    task = asyncio.create_task(run(settings, rate=1000.0, start_ms=START_MS))
    while len((await read_all(settings))["books"]) < 50:
        pass
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=30)
    assert task.cancelled()


@pytest.mark.integration
async def test_sigterm_flushes_and_reports_through_the_cli(settings: Settings) -> None:
    env = {
        **os.environ,
        "MPX_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "MPX_TOPIC_PREFIX": settings.topic_prefix,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "marketpulse",
        "collect",
        "--rate",
        "1000",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        while len((await read_all(settings))["books"]) < 50:
            assert proc.returncode is None, "the collector exited early"
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    stats = json.loads(out.decode().strip().splitlines()[-1])
    got = await read_all(settings)
    assert stats["books"] == stats["ticks"] == len(got["books"]) == len(got["ticks"]) >= 50
    assert stats["markets"] == len(got["markets"])


async def test_unknown_source_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="valid sources: mock"):
        await run(Settings(kafka_bootstrap="127.0.0.1:1"), source="polymarket-v0")


async def test_unreachable_broker_is_a_transient_error(unique_name: str) -> None:
    settings = Settings(kafka_bootstrap="127.0.0.1:1", topic_prefix=f"t{unique_name}.")
    with pytest.raises(TransientError, match="unreachable") as raised:
        await run(settings, max_updates=1)
    assert raised.value.retriable
