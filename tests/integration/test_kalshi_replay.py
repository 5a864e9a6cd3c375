"""The long real Kalshi capture (23,003 frames of one 15-minute gold market) replayed end to end
through the collector's FramePipeline into the real Kafka topics: every book published equals the
book rebuilt independently here from the same messages, and every trade arrives."""

from __future__ import annotations

import gzip
import heapq
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from marketpulse import kafka
from marketpulse.codec import codec
from marketpulse.collect import FramePipeline
from marketpulse.kafka import create_topics, describe_topics
from marketpulse.settings import Settings
from marketpulse.venues.kalshi import KalshiNormalizer
from marketpulse.venues.replay import kalshi_gap_policy, replay

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "real" / "kalshi"
GOLD = REAL / "ws" / "gold15m_KXGOLD15M-26AUG101900-00_2026-08-10.ndjson.gz"
TICKER = "KXGOLD15M-26AUG101900-00"
DEPTH = 10  # the default depth of published books

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not GOLD.is_file(), reason=f"real Kalshi capture not found at {GOLD}"),
]


def reference_books() -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """YES and NO books after each snapshot and delta, rebuilt with plain Decimal arithmetic;
    and the trade ids, in order."""
    bids: dict[str, dict[Decimal, Decimal]] = {"yes": {}, "no": {}}
    books: dict[str, list[dict[str, Any]]] = {"yes": [], "no": []}
    trades = []
    with gzip.open(GOLD, "rt") as fh:
        for line in fh:
            event = json.loads(line)["event"]
            msg = event["msg"]
            if event["type"] == "trade":
                trades.append(msg["trade_id"])
                continue
            if event["type"] == "orderbook_snapshot":
                for side in ("yes", "no"):
                    bids[side] = {
                        Decimal(p): Decimal(q) for p, q in msg.get(f"{side}_dollars_fp", [])
                    }
            else:
                side, price = bids[msg["side"]], Decimal(msg["price_dollars"])
                side[price] = side.get(price, Decimal(0)) + Decimal(msg["delta_fp"])
                if side[price] <= 0:
                    del side[price]
            for own, other in (("yes", "no"), ("no", "yes")):
                books[own].append(
                    {
                        "bids": [
                            {"price": float(p), "size": float(q)}
                            for p, q in heapq.nlargest(DEPTH, bids[own].items())
                        ],
                        "asks": [
                            {"price": float(1 - p), "size": float(q)}
                            for p, q in heapq.nlargest(DEPTH, bids[other].items())
                        ],
                    }
                )
    return books, trades


async def read_topic(settings: Settings, topic_id: str, schema: str) -> list[dict[str, Any]]:
    name = settings.topic(topic_id)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = {row["name"]: row["partitions"] for row in await describe_topics(settings)}
        tps = [TopicPartition(name, p) for p in range(partitions[name])]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        out: list[dict[str, Any]] = []
        while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
            for records in (await consumer.getmany(timeout_ms=1000, max_records=10_000)).values():
                out.extend(codec().decode(schema, r.value) for r in records)
        return out
    finally:
        await consumer.stop()


async def test_long_capture_replays_into_kafka(kafka_bootstrap: str, unique_name: str) -> None:
    settings = Settings(kafka_bootstrap=kafka_bootstrap, topic_prefix=f"t{unique_name}.")
    await create_topics(settings)
    normalizer = KalshiNormalizer(depth=DEPTH, gap_policy=kalshi_gap_policy(GOLD))
    assert normalizer.gap_policy == "count"  # one ticker cut out of shared subscriptions
    prod = kafka.producer(settings)
    await prod.start()
    pipeline = FramePipeline(settings, prod, normalizers={"kalshi": normalizer}, observe_lag=False)
    try:
        stats = await replay(GOLD, pipeline, None)
        await pipeline.flush()
    finally:
        pipeline.close()
        await prod.stop()
    assert stats["frames"] == 23_003 and pipeline.rejected == 0
    assert normalizer.stats.gaps > 9_000 and normalizer.stats.inconsistent == 0

    expected, trade_ids = reference_books()
    books = await read_topic(settings, "books", "book")
    for side in ("yes", "no"):
        got = [b for b in books if b["token_id"] == f"ks:{TICKER}:{side}"]
        assert [b["seq"] for b in got] == list(range(1, 22_027))  # 2 snapshots + 22,024 deltas
        assert [{"bids": b["bids"], "asks": b["asks"]} for b in got] == expected[side]
        assert {b["event_key"] for b in got} == {"ks:KXGOLD15M-26AUG101900"}
    # After the last delta the YES book is bid at 0.99 (9,857.34 contracts) and the NO side is
    # empty; the final snapshot (23:00:02, market closed) empties both.
    last_yes = [b for b in books if b["token_id"] == f"ks:{TICKER}:yes"][-2]
    assert last_yes["bids"][0] == {"price": 0.99, "size": 9857.34} and last_yes["asks"] == []
    assert expected["yes"][-1] == {"bids": [], "asks": []}

    trades = await read_topic(settings, "trades", "trade")
    assert [t["trade_id"] for t in trades] == trade_ids and len(trades) == 977
