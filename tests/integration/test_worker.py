"""The streams worker end to end on a real broker: `python -m marketpulse worker` in a child
process, crafted markets and books in, exactly the injected opportunities out as signals; a
restart adds nothing, and a replay by a fresh group re-emits the very same signal ids."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from marketpulse.catalog import CATALOG
from marketpulse.codec import codec
from marketpulse.kafka import admin, create_topics
from marketpulse.settings import Settings
from marketpulse.worker.app import repartition_topic

pytestmark = pytest.mark.integration

DEADLINE_S = 90.0
POLY_2PCT = {"model": "polymarket", "rate": 0.02, "exponent": 1.0}
NO_FEE = {"model": "none", "rate": 0.0, "exponent": 1.0}


# --------------------------------------------------------------------------------------------
# Crafted input
# --------------------------------------------------------------------------------------------


def market(
    market_id: str, event_id: str, count: int, *, augmented: bool = False, fee: dict = POLY_2PCT
) -> dict[str, Any]:
    return {
        "market_id": market_id,
        "event_id": event_id,
        "venue": "polymarket",
        "question": f"{market_id}?",
        "outcomes": [
            {"name": "Yes", "token_id": f"{market_id}:y"},
            {"name": "No", "token_id": f"{market_id}:n"},
        ],
        "status": "active",
        "neg_risk": True,
        "neg_risk_augmented": augmented,
        "exclusive": True,
        "event_market_count": count,
        "min_size": 5.0,
        "fee": fee,
        "updated_ms": 1,
    }


def book(
    event_key: str, token_id: str, asks: list, bids: list, ts_ms: int, seq: int
) -> dict[str, Any]:
    return {
        "event_key": event_key,
        "market_id": token_id.rsplit(":", 1)[0],
        "token_id": token_id,
        "venue": "polymarket",
        "ts_ms": ts_ms,
        "recv_ms": ts_ms + 7,
        "seq": seq,
        "asks": [{"price": p, "size": s} for p, s in asks],
        "bids": [{"price": p, "size": s} for p, s in bids],
    }


# YES ladders of a 3-outcome exclusive event: walking them together gives 100 sets
# (50 at Σ 0.95, 30 at 0.96, 20 at 0.97) for 95.70 plus 1.30222 of Polymarket fees.
YES_ASKS = {
    1: [(0.30, 100)],
    2: [(0.33, 80), (0.34, 100)],
    3: [(0.32, 50), (0.33, 200)],
}
EXPECTED_FEES = 1.30222
EXPECTED_BUY_EDGE = (100 - 95.7 - EXPECTED_FEES) / (95.7 + EXPECTED_FEES) * 10_000


def crafted() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Markets and books of: an arbitrage event (pm:ARB), the same prices on a negRisk-
    augmented event (pm:AUG, must not fire), a binary whose bids sum above 1 (pm:SELL: mint
    and sell 20 sets) and a fairly priced binary (pm:FAIR, must not fire)."""
    markets, books = [], []
    for event, prefix, augmented in (("pm:ARB", "pm:arb", False), ("pm:AUG", "pm:aug", True)):
        for i in (1, 2, 3):
            mid = f"{prefix}{i}"
            markets.append(market(mid, event, 3, augmented=augmented))
            books.append(book(event, f"{mid}:y", YES_ASKS[i], [(0.20, 10)], 1_000 + i, i))
            books.append(book(event, f"{mid}:n", [(0.90, 10)], [(0.60, 10)], 1_000 + i, 10 + i))
    markets.append(market("pm:sell", "pm:SELL", 1, fee=NO_FEE))
    books.append(book("pm:SELL", "pm:sell:y", [(0.60, 50)], [(0.55, 20)], 2_000, 1))
    books.append(book("pm:SELL", "pm:sell:n", [(0.50, 50)], [(0.50, 40)], 2_001, 2))
    markets.append(market("pm:fair", "pm:FAIR", 1, fee=NO_FEE))
    books.append(book("pm:FAIR", "pm:fair:y", [(0.50, 50)], [(0.48, 50)], 3_000, 1))
    books.append(book("pm:FAIR", "pm:fair:n", [(0.50, 50)], [(0.49, 50)], 3_000, 2))
    return markets, books


# --------------------------------------------------------------------------------------------
# Kafka helpers
# --------------------------------------------------------------------------------------------


async def produce(settings: Settings, items: list[tuple[str, bytes, bytes]]) -> None:
    prod = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, enable_idempotence=True, acks="all"
    )
    await prod.start()
    try:
        for topic, key, value in items:
            await prod.send_and_wait(topic, value, key=key)
    finally:
        await prod.stop()


async def read_all(settings: Settings, topic_id: str) -> list[dict[str, Any]]:
    """Every record of a catalog topic, decoded, from the beginning to the current end."""
    topic = settings.topic(topic_id)
    tps = [TopicPartition(topic, p) for p in range(CATALOG.topic(topic_id).partitions)]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        records = []
        while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
            for msgs in (await consumer.getmany(*tps, timeout_ms=1_000)).values():
                records += [codec().decode(CATALOG.topic(topic_id).schema, m.value) for m in msgs]
        return records
    finally:
        await consumer.stop()


async def caught_up(settings: Settings, group: str, topics: list[str]) -> bool:
    """True once the group has committed every message currently in `topics`: the worker has
    processed all its input, so the signals topic is final for that input."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    client = admin(settings)
    await consumer.start()
    await client.start()
    try:
        tps = [TopicPartition(t, p) for t in topics for p in range(4)]
        end = await consumer.end_offsets(tps)
        try:
            committed = await client.list_consumer_group_offsets(group)
        except KafkaError as exc:
            if exc.retriable:  # e.g. no group coordinator yet on a fresh broker: ask again
                return False
            raise
    finally:
        await client.close()
        await consumer.stop()
    return all(end[tp] == 0 or (tp in committed and committed[tp].offset >= end[tp]) for tp in tps)


async def wait_caught_up(
    settings: Settings, group: str, topics: list[str], worker: Worker
) -> float:
    started = time.monotonic()
    while not await caught_up(settings, group, topics):
        assert worker.proc.poll() is None, f"worker exited early:\n{worker.tail()}"
        assert time.monotonic() - started < DEADLINE_S, f"worker never caught up:\n{worker.tail()}"
        await asyncio.sleep(0.2)
    return time.monotonic() - started


# --------------------------------------------------------------------------------------------
# The worker process
# --------------------------------------------------------------------------------------------


class Worker:
    def __init__(self, settings: Settings, worker_id: str, log: Path) -> None:
        env = {
            **os.environ,
            "MPX_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "MPX_TOPIC_PREFIX": settings.topic_prefix,
            "MPX_WORKER_ID": worker_id,
            "MPX_WORKER_WEB_PORT": "0",  # several workers may run at once
            "MPX_WORKER_DATA_DIR": str(log.parent / worker_id),
            "MPX_LOG_LEVEL": "INFO",
        }
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "marketpulse", "worker"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=log.parent,  # nothing lands in the repository (var/, .env)
            )

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, as a supervisor would; the worker must exit cleanly with 0."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for w in started:
        w.kill()


# --------------------------------------------------------------------------------------------
# The test
# --------------------------------------------------------------------------------------------


async def test_worker_emits_exactly_the_injected_opportunities(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path, workers: list[Worker]
) -> None:
    settings = Settings(kafka_bootstrap=kafka_bootstrap, topic_prefix=f"t{unique_name}.")
    await create_topics(settings)
    markets, books = crafted()
    cdc = codec()
    await produce(
        settings,
        [
            (settings.topic("markets"), m["market_id"].encode(), cdc.encode("market", m))
            for m in markets
        ]
        + [(settings.topic("books"), b["event_key"].encode(), cdc.encode("book", b)) for b in books]
        + [(settings.topic("books"), b"pm:ARB", b"not avro")],
    )

    group = f"w{unique_name}"
    inputs = [
        settings.topic("markets"),
        settings.topic("books"),
        f"{group}-markets-by-event-repartition",
    ]
    assert inputs[2] == repartition_topic(settings.model_copy(update={"worker_id": group}))

    # 1. Exactly the two opportunities, with their sizes, edges and legs.
    first = Worker(settings, group, tmp_path / "worker.log")
    workers.append(first)
    took = await wait_caught_up(settings, group, inputs, first)
    signals = sorted(await read_all(settings, "signals"), key=lambda s: s["subject"])
    assert [(s["subject"], s["evidence"]["direction"]) for s in signals] == [
        ("pm:ARB", "buy"),
        ("pm:sell", "sell"),
    ], first.tail()
    buy, sell = signals
    assert buy["size"] == 100 and buy["level"] == "P1"
    assert buy["edge_bps"] == pytest.approx(EXPECTED_BUY_EDGE, abs=1e-3)
    assert buy["market_ids"] == ["pm:arb1", "pm:arb2", "pm:arb3"]
    assert [(lg["token_id"], lg["side"], lg["price"], lg["size"]) for lg in buy["legs"]] == [
        ("pm:arb1:y", "BUY", 0.30, 100),
        ("pm:arb2:y", "BUY", 0.34, 100),
        ("pm:arb3:y", "BUY", 0.33, 100),
    ]
    assert buy["ts_ms"] == 1_003 and float(buy["evidence"]["fees"]) == pytest.approx(EXPECTED_FEES)
    assert sell["size"] == 20 and sell["edge_bps"] == pytest.approx(500)
    assert [(lg["side"], lg["price"]) for lg in sell["legs"]] == [("SELL", 0.55), ("SELL", 0.50)]
    dead = await read_all(settings, "dlq")
    assert [(d["stage"], d["error_kind"], d["source"]) for d in dead] == [
        ("worker", "bad_magic", settings.topic("books"))
    ]
    assert first.stop() == 0, first.tail()
    ids = {s["signal_id"] for s in signals}

    # 2. A restart resumes from committed offsets and recovered tables: nothing new. A fresh
    #    book (no opportunity) proves the restarted worker is consuming again.
    again = Worker(settings, group, tmp_path / "worker.log")
    workers.append(again)
    sentinel = book("pm:AUG", "pm:aug1:y", [(0.30, 100)], [(0.2, 10)], 5_000, 99)
    await produce(settings, [(settings.topic("books"), b"pm:AUG", cdc.encode("book", sentinel))])
    await wait_caught_up(settings, group, inputs, again)
    after_restart = await read_all(settings, "signals")
    assert sorted(after_restart, key=lambda s: s["subject"]) == signals, again.tail()
    assert again.stop() == 0, again.tail()

    # 3. A replay by a fresh group (own offsets, own tables) re-emits the very same ids.
    replay_group = f"r{unique_name}"
    replay = Worker(settings, replay_group, tmp_path / "replay.log")
    workers.append(replay)
    replay_inputs = [*inputs[:2], f"{replay_group}-markets-by-event-repartition"]
    await wait_caught_up(settings, replay_group, replay_inputs, replay)
    replayed = await read_all(settings, "signals")
    assert len(replayed) == 4 and {s["signal_id"] for s in replayed} == ids
    assert replay.stop() == 0, replay.tail()
    print(f"worker caught up with {len(books) + 1} books in {took:.1f}s from process start")
