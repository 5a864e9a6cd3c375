"""The Polymarket collector against real servers on 127.0.0.1 (HTTP for Gamma, CLOB and the Data
API; a WebSocket market channel) replaying recorded payloads, and the real Kafka broker: each
test asserts what reached the topics."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from polymarket_venue import Venue, cloned_events, real

from marketpulse import kafka, metrics
from marketpulse.codec import codec
from marketpulse.collect import run_frames
from marketpulse.frames import FramePipeline, collector_health
from marketpulse.kafka import create_topics
from marketpulse.settings import Settings
from marketpulse.venues.base import Frame
from marketpulse.venues.polymarket.ratelimit import VenueHttp
from marketpulse.venues.polymarket.source import PolymarketSource
from marketpulse.venues.polymarket.trades import Boundary, TradesPoller
from marketpulse.venues.polymarket.ws import MarketChannel

pytestmark = pytest.mark.integration
Topics = dict[str, list[tuple[bytes, dict[str, Any]]]]
TOPICS = ("markets", "books", "ticks", "trades", "dlq", "raw")


async def read_topics(settings: Settings) -> Topics:
    """Every record of the collector's topics, decoded, from the beginning to the end offsets."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = [
            TopicPartition(settings.topic(t), p)
            for t in TOPICS
            for p in consumer.partitions_for_topic(settings.topic(t))
            or await _partitions(consumer, settings.topic(t))
        ]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        got: Topics = {t: [] for t in TOPICS}
        names = {settings.topic(t): t for t in TOPICS}
        c = codec()
        while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                topic = names[tp.topic]
                schema = {"dlq": "dead_letter", "raw": "raw_frame"}.get(topic, topic[:-1])
                got[topic].extend((r.key or b"", c.decode(schema, r.value)) for r in records)
        return got
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()
    return consumer.partitions_for_topic(topic) or set()


async def wait_for(
    settings: Settings, ok: Callable[[Topics], bool], timeout: float = 30.0
) -> Topics:
    deadline = time.monotonic() + timeout
    while True:
        got = await read_topics(settings)
        if ok(got):
            return got
        if time.monotonic() > deadline:
            counts = {t: len(v) for t, v in got.items()}
            raise AssertionError(f"topics never reached the expected state: {counts}")
        await asyncio.sleep(0.2)


@pytest.fixture
async def base_settings(kafka_bootstrap: str, unique_name: str, tmp_path: Path) -> Settings:
    s = Settings(
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=f"t{unique_name}.",
        collector_state_dir=tmp_path / "state",
        polymarket_ws_ping_s=0.2,
        polymarket_ws_stagger_s=0.05,
    )
    await create_topics(s, partitions=2)
    return s


def venue_settings(s: Settings, venue: Venue) -> Settings:
    return s.model_copy(
        update={
            "polymarket_gamma_url": venue.http_url,
            "polymarket_clob_url": venue.http_url,
            "polymarket_data_url": venue.http_url,
            "polymarket_ws_url": venue.ws_url,
        }
    )


@contextlib.asynccontextmanager
async def running(
    settings: Settings, *, record: Path | None = None, **source_opts: Any
) -> AsyncIterator[tuple[PolymarketSource, FramePipeline]]:
    prod = kafka.producer(settings)
    await prod.start()
    pipe = FramePipeline(settings, prod, record=record)
    source = PolymarketSource(settings, pipe, http=VenueHttp(backoff_s=0.05), **source_opts)
    stop = asyncio.Event()
    task = asyncio.create_task(source.run(stop))
    try:
        yield source, pipe
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        await pipe.flush()
        pipe.close()
        await prod.stop()


def value(counter: Any) -> float:
    return float(counter._value.get())


async def test_discovery_sharding_and_books_over_500_assets(base_settings: Settings) -> None:
    events = cloned_events(9)  # 9 x 32 active markets x 2 tokens = 576 assets
    async with Venue(events) as venue:
        venue.fail_first["/events/keyset"] = 1  # a 429 first: retried, then served
        settings = venue_settings(base_settings, venue)
        active = {t for e in events for m in e["markets"] if m["active"] and not m["closed"]
                  for t in json.loads(m["clobTokenIds"])}  # fmt: skip
        assert len(active) == 576
        retries = value(metrics.COLLECTOR_HTTP.labels("polymarket", "gamma:/events", "429"))
        async with running(settings, trades=False, snapshots=False) as _:
            got = await wait_for(
                settings, lambda g: len({b["token_id"] for _, b in g["books"]}) == 576
            )
            deadline = time.monotonic() + 10
            while venue.pings < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            health = collector_health(quiet_s=30)
        # Gamma: keyset pages chained through after_cursor, never cursor=
        assert [p.get("after_cursor") for p in venue.keyset_params] == [None, "5"]
        assert venue.requests["/events/keyset"] == 3  # the 429, then the two pages
        assert not any("cursor" in p for p in venue.keyset_params)
        assert (
            value(metrics.COLLECTOR_HTTP.labels("polymarket", "gamma:/events", "429"))
            == retries + 1
        )
        markets = {k.decode(): m for k, m in got["markets"]}
        assert len(markets) == 9 * 60
        assert Counter(m["status"] for m in markets.values()) == {
            "active": 9 * 32, "resolved": 9 * 18, "closed": 9 * 10
        }  # fmt: skip
        # WebSocket: 2 shards of <= 500 assets covering exactly the active tokens, pinged
        assert sorted(len(s) for s in venue.subscriptions) == [76, 500]
        assert set().union(*venue.subscriptions) == active
        assert venue.pings >= 2
        shards = {s["shard"] for s in health["shards"] if s["shard"].startswith("pm-ws-")}
        assert shards >= {"pm-ws-0", "pm-ws-1"}
        # Books keyed by event, on the event's partition, best first
        for key, book in got["books"]:
            assert key.decode() == book["event_key"] == markets[book["market_id"]]["event_id"]
            assert book["bids"][0] == {"price": 0.11, "size": 65.0}
            assert book["asks"][0] == {"price": 0.49, "size": 15.0}
        assert {b["token_id"] for _, b in got["ticks"]} == active
        assert got["dlq"] == []


async def test_dropped_connection_reconnects_and_rebuilds_books(base_settings: Settings) -> None:
    events = cloned_events(1)
    async with Venue(events) as venue:
        venue.drop_first = 2  # the first two sessions end right after their snapshots
        settings = venue_settings(base_settings, venue)
        before = value(metrics.COLLECTOR_RECONNECTS.labels("polymarket", "pm-ws-0"))
        async with running(settings, trades=False, snapshots=False):
            got = await wait_for(settings, lambda g: len(g["books"]) >= 3 * 64)
        assert len(venue.subscriptions) >= 3  # resubscribed after each drop
        assert all(sorted(s) == sorted(venue.subscriptions[0]) for s in venue.subscriptions)
        assert value(metrics.COLLECTOR_RECONNECTS.labels("polymarket", "pm-ws-0")) >= before + 2
        per_token = Counter(b["token_id"] for _, b in got["books"])
        assert len(per_token) == 64 and min(per_token.values()) >= 3  # a fresh snapshot each time


async def test_disagreeing_delta_triggers_a_rest_resnapshot(base_settings: Settings) -> None:
    events = cloned_events(1)
    async with Venue(events) as venue:
        market = next(m for m in events[0]["markets"] if m["active"] and not m["closed"])
        token = json.loads(market["clobTokenIds"])[0]
        # The venue says the best bid is 0.30, but the snapshot's best bid is 0.11 and the delta
        # adds 0.20: the maintained book cannot be right.
        venue.after_snapshot = [json.dumps({
            "event_type": "price_change", "market": market["conditionId"],
            "timestamp": str(time.time_ns() // 1_000_000),
            "price_changes": [{"asset_id": token, "price": "0.2", "size": "10", "side": "BUY",
                               "hash": "delta", "best_bid": "0.3", "best_ask": "0.49"}],
        })]  # fmt: skip
        fresh = venue.book_for(token, ts_ms=time.time_ns() // 1_000_000 + 60_000)
        fresh["bids"] = [*fresh["bids"], {"price": "0.3", "size": "42"}]
        fresh["hash"] = "fresh-from-rest"
        venue.book_overrides[token] = fresh
        settings = venue_settings(base_settings, venue)
        mismatches = value(metrics.COLLECTOR_BOOK_MISMATCHES.labels("polymarket"))
        async with running(settings, trades=False) as _:
            got = await wait_for(
                settings,
                lambda g: any(b["hash"] == "fresh-from-rest" for _, b in g["books"]),
            )
        assert value(metrics.COLLECTOR_BOOK_MISMATCHES.labels("polymarket")) == mismatches + 1
        assert token in venue.books_requested
        books = [b for _, b in got["books"] if b["token_id"] == token]
        assert all(b["hash"] != "delta" for b in books)  # the wrong book was never published
        rest = next(b for b in books if b["hash"] == "fresh-from-rest")
        assert rest["bids"][0] == {"price": 0.3, "size": 42.0}


async def test_trades_window_boundary_dedup_and_possible_loss(
    base_settings: Settings, tmp_path: Path
) -> None:
    rows = real("data_api/polycopy_data_api_trades_global_2026-04-18.json")
    async with Venue(cloned_events(1), trades=rows) as venue:
        venue.fail_first["/trades"] = 1
        settings = venue_settings(base_settings, venue)
        first, last = min(int(r["timestamp"]) for r in rows), max(int(r["timestamp"]) for r in rows)
        prod = kafka.producer(settings)
        await prod.start()
        pipe = FramePipeline(settings, prod)
        http = VenueHttp(backoff_s=0.01)
        boundary = Boundary(tmp_path / "trades.json")
        boundary.save(first - 1)
        poller = TradesPoller(http, venue.http_url, pipe, boundary, page=100, offset_cap=300)
        losses = value(metrics.COLLECTOR_POSSIBLE_LOSS.labels("polymarket", "data:trades"))
        try:
            through = await poller.poll_once(now_s=last + 20)
            again = await poller.poll_once(now_s=last + 40)  # overlapping window: no duplicates
        finally:
            await pipe.flush()
            await http.aclose()
            await prod.stop()
        assert through == last + 10 and again == last + 30
        assert json.loads((tmp_path / "trades.json").read_text()) == {
            "complete_through_s": last + 30
        }
        got = await wait_for(settings, lambda g: len(g["trades"]) >= 1)
        trades = [t for _, t in got["trades"]]
        fields = ("transactionHash", "asset", "proxyWallet", "side", "size", "price")
        keys = {tuple(r[f] for f in fields) for r in rows}
        assert len(trades) == len({t["trade_id"] for t in trades})  # no duplicates
        seconds = Counter(int(r["timestamp"]) for r in rows)
        busiest = max(seconds.values())
        # Halving stops at one-second windows: only a second with > 300 trades could be lost.
        if busiest <= 300:
            assert len(trades) == len(keys) == 500
            assert (
                value(metrics.COLLECTOR_POSSIBLE_LOSS.labels("polymarket", "data:trades")) == losses
            )
        assert all(t["wallet"] and t["wallet"].startswith("0x") for t in trades)
        assert venue.requests["/trades"] > 5  # paged and split into windows

        # A one-second window beyond the cap is reported as a possible loss, in the DLQ.
        burst = [dict(r, timestamp=last + 100) for r in rows[:250]]
        venue.trades = burst
        prod = kafka.producer(settings)
        await prod.start()
        pipe = FramePipeline(settings, prod)
        http = VenueHttp(backoff_s=0.01)
        small = TradesPoller(http, venue.http_url, pipe, boundary, page=100, offset_cap=200)
        try:
            await small.read_window(last + 100, last + 100)
        finally:
            await pipe.flush()
            await http.aclose()
            await prod.stop()
        assert (
            value(metrics.COLLECTOR_POSSIBLE_LOSS.labels("polymarket", "data:trades")) == losses + 1
        )
        got = await wait_for(settings, lambda g: len(g["dlq"]) >= 1)
        ((_, dead),) = got["dlq"]
        assert dead["error_kind"] == "possible_data_loss"
        assert json.loads(dead["payload"])["start_s"] == last + 100


async def test_pipeline_dead_letters_bad_frames_and_records_them(
    base_settings: Settings, tmp_path: Path
) -> None:
    settings = base_settings.model_copy()
    record = tmp_path / "rec.jsonl"
    prod = kafka.producer(settings)
    await prod.start()
    pipe = FramePipeline(settings, prod, record=record, raw_topic=True)
    good = json.dumps(real("ws/originalgoku_ws_book_sample.json")).encode()
    try:
        await pipe.frame(Frame("polymarket", "ws:market", "pm-ws-0", 1, good))
        await pipe.frame(Frame("polymarket", "ws:market", "pm-ws-0", 2, good[:50]))  # truncated
        await pipe.frame(Frame("polymarket", "ws:market", "pm-ws-0", 3, b"\xff\xfe binary"))
        await pipe.frame(Frame("nowhere", "ws:x", "c", 4, b"{}"))
        await pipe.flush()
    finally:
        pipe.close()
        await prod.stop()
    got = await wait_for(settings, lambda g: len(g["dlq"]) >= 3 and len(g["raw"]) >= 4)
    kinds = sorted(d["error_kind"] for _, d in got["dlq"])
    assert kinds == ["bad_json", "bad_json", "unknown_venue"]
    assert {d["payload"] for _, d in got["dlq"]} == {good[:50], b"\xff\xfe binary", b"{}"}
    assert len(got["books"]) == len(got["ticks"]) == 1
    raw = {r["recv_ms"]: (key, r["payload"]) for key, r in got["raw"]}
    assert raw[1] == (b"polymarket/ws:market", good) and raw[4] == (b"nowhere/ws:x", b"{}")
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    assert [line["recv_ms"] for line in lines] == [1, 2, 3, 4]
    assert lines[0]["payload"].encode() == good and "payload_b64" in lines[2]


async def test_a_recording_replays_into_the_same_records(
    base_settings: Settings, tmp_path: Path, unique_name: str
) -> None:
    """Frames recorded while collecting, replayed with ``--source replay:FILE``, give exactly the
    records the live run produced (same normalization, recorded receive times)."""
    record = tmp_path / "pm.jsonl"
    frames = [
        ("rest:gamma", real("gamma/polyarb_gamma_event_negrisk_world-cup-winner.json")),
        *(("ws:market", f) for f in real("ws/polyarb_ws_market_capture.json")),
        ("rest:books", real("clob/polyarb_clob_book_negrisk_outcome.json")),
        ("data:trades", real("data_api/polyarb_data_api_trades_market.json")),
    ]
    prod = kafka.producer(base_settings)
    await prod.start()
    pipe = FramePipeline(base_settings, prod, record=record)
    try:
        for i, (channel, payload) in enumerate(frames):
            await pipe.frame(
                Frame("polymarket", channel, "pm-rec", 1000 + i, json.dumps(payload).encode())
            )
        await pipe.flush()
    finally:
        pipe.close()
        await prod.stop()
    live = await wait_for(base_settings, lambda g: len(g["trades"]) == 3)

    replayed_settings = base_settings.model_copy(update={"topic_prefix": f"r{unique_name}."})
    await create_topics(replayed_settings, partitions=2)
    stats = await run_frames(replayed_settings, f"replay:{record}", speed=None)
    assert stats["frames"] == len(frames) and stats["rejected"] == 0
    replayed = await wait_for(replayed_settings, lambda g: len(g["trades"]) == 3)
    for topic in ("markets", "books", "ticks", "trades"):
        assert sorted(map(repr, replayed[topic])) == sorted(map(repr, live[topic])), topic
    assert len(live["markets"]) == 60 and len(live["books"]) == 3 + 8 + 1


async def test_markets_join_and_leave_running_shards(base_settings: Settings) -> None:
    events = cloned_events(1)
    async with Venue(events) as venue:
        settings = venue_settings(base_settings, venue)
        prod = kafka.producer(settings)
        await prod.start()
        pipe = FramePipeline(settings, prod)
        tokens = sorted(venue.condition)[:5]
        channel = MarketChannel(venue.ws_url, pipe, shard_size=3, ping_s=5, stagger_s=0.01)
        await channel.set_assets(tokens[:4])  # 2 shards: 3 + 1
        stop = asyncio.Event()
        task = asyncio.create_task(channel.run(stop))
        try:
            await wait_for(settings, lambda g: len(g["books"]) == 4)
            await channel.set_assets([*tokens[1:4], tokens[4]])  # tokens[0] leaves, [4] joins
            got = await wait_for(settings, lambda g: len(g["books"]) == 5)
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
            await pipe.flush()
            await prod.stop()
        assert sorted(len(s) for s in venue.subscriptions) == [1, 3]
        assert {"operation": "unsubscribe", "assets_ids": [tokens[0]]} in venue.ops
        assert {"operation": "subscribe", "assets_ids": [tokens[4]]} in venue.ops
        assert {b["token_id"] for _, b in got["books"]} == set(tokens)  # the joiner's snapshot
        # the leaver's slot in the first shard went to the joiner
        assert [sorted(s.assets) for s in channel.shards] == [
            sorted([*tokens[1:3], tokens[4]]),
            [tokens[3]],
        ]


async def test_collect_polymarket_records_what_it_publishes(
    base_settings: Settings, tmp_path: Path
) -> None:
    """``collect --source polymarket --record FILE --raw-topic`` end to end: every task runs (the
    trades poller finds nothing), and the recording holds every frame that was published raw."""
    async with Venue(cloned_events(1)) as venue:
        settings = venue_settings(base_settings, venue)
        record = tmp_path / "live.jsonl"
        stop = asyncio.Event()
        task = asyncio.create_task(
            run_frames(settings, "polymarket", record=record, raw_topic=True, stop=stop)
        )
        # the WebSocket snapshots and the first REST snapshots of all 64 tokens
        await wait_for(settings, lambda g: len(g["books"]) >= 2 * 64)
        stop.set()
        stats = await asyncio.wait_for(task, 20)
    assert stats["rejected"] == 0 and stats["produced"]["markets"] == 60
    got = await read_topics(settings)
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    assert len(lines) == stats["frames"] == len(got["raw"])
    channels = Counter(line["channel"] for line in lines)
    assert channels["rest:gamma"] == 1 and channels["ws:market"] >= 1
    assert channels["rest:books"] >= 1 and channels["data:trades"] >= 1
    assert venue.requests["/trades"] >= 1 and venue.requests["/books"] >= 1
