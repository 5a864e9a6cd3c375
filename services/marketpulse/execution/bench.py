"""Benchmark of the execution stage, for `marketpulse bench --only execution` (a JSON-able dict).

- `risk_stage`: intents/s through sizing, the ten risk checks and the paper fill, in process
  (the `Stage` alone, auto approval, no Kafka): the stage's own ceiling.
- `book_filter`: µs per book message for an event nobody watches (kept raw by Kafka key)
  against a watched one (decoded): what filtering by key saves.
- `broker`: a `marketpulse execute` child process on the real broker, auto approval. Signals are
  produced at a paced rate (after `warmup_s` of the same, not measured: `--only execution` runs
  on a broker whose JVM just started, and its first seconds are slow); signal-to-intent
  latency = the moment this process reads the intent's first event (`suggested`) off Kafka minus
  the moment it produced the signal (one clock; the bench's producer does not linger). Then a
  burst of signals produced at once, timed until every one of them is filled: intents/s end to
  end (decode, book wait, checks, fill, produce with acks=all, commit).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from marketpulse.codec import codec
from marketpulse.execution.books import BookStore
from marketpulse.execution.config import parse_config
from marketpulse.execution.stage import Stage
from marketpulse.kafka import create_topics, producer
from marketpulse.procs import ProcessGroup
from marketpulse.settings import Settings

T0 = 1_767_225_600_000
EVENTS = 20
FEE = {"model": "polymarket", "rate": 0.02, "exponent": 1.0}
# Limits that never bind: the benchmark measures the path, not the refusals.
BENCH_CONFIG: dict[str, Any] = {
    "approval": "auto",
    "sizing": {"method": "fixed", "fixed_notional": 10.0},
    "limits": {
        "max_order_notional": 1e9,
        "max_daily_notional": 1e12,
        "max_open_intents": 10**9,
        "max_open_positions": 10**9,
        "max_total_exposure": 1e12,
        "max_market_exposure": 1e12,
        "max_drawdown": 1e12,
    },
}


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))], 2)


def _market(i: int) -> dict[str, Any]:
    mid = f"mk:bx-{i}-m0"
    return {
        "market_id": mid,
        "event_id": f"mk:bx-{i}",
        "venue": "mock",
        "question": "bench?",
        "outcomes": [
            {"name": "Yes", "token_id": f"{mid}:y"},
            {"name": "No", "token_id": f"{mid}:n"},
        ],
        "status": "active",
        "tick_size": 0.01,
        "min_size": 1.0,
        "fee": FEE,
        "updated_ms": T0,
    }


def _book(i: int, side: str, ask: float) -> dict[str, Any]:
    mid = f"mk:bx-{i}-m0"
    return {
        "event_key": f"mk:bx-{i}",
        "market_id": mid,
        "token_id": f"{mid}:{side}",
        "venue": "mock",
        "ts_ms": T0,
        "recv_ms": T0,
        "seq": 1,
        "asks": [{"price": ask, "size": 1e9}],
        "bids": [{"price": round(ask - 0.01, 2), "size": 1e9}],
    }


def _signal(n: int, tag: str) -> dict[str, Any]:
    i = n % EVENTS
    mid = f"mk:bx-{i}-m0"
    ts = T0 + 1_000 + n
    return {
        "signal_id": f"bx-{tag}-{n:07d}",
        "rule_id": "complete_set",
        "rule_version": 1,
        "level": "P1",
        "subject": mid,
        "event_key": f"mk:bx-{i}",
        "market_ids": [mid],
        "ts_ms": ts,
        "trigger_recv_ms": ts,
        "edge_bps": 400.0,
        "edge_score": 1.0,
        "size": 1000.0,
        "notional": 0.0,
        "legs": [
            {"market_id": mid, "token_id": f"{mid}:y", "side": "BUY", "price": 0.45, "size": 1e3},
            {"market_id": mid, "token_id": f"{mid}:n", "side": "BUY", "price": 0.50, "size": 1e3},
        ],
        "evidence": {},
        "summary": "bench",
    }


def risk_stage(n: int) -> dict[str, Any]:
    """Intents/s of the pure stage: n signals, each suggested, checked, approved and filled."""
    store = BookStore(decode=lambda b: json.loads(b))
    for i in range(EVENTS):
        store.watch(f"mk:bx-{i}")
        store.add(_book(i, "y", 0.45))
        store.add(_book(i, "n", 0.50))
    stage = Stage(parse_config(BENCH_CONFIG), store.at)
    for i in range(EVENTS):
        stage.on_market(_market(i))
    signals = [_signal(k, "inproc") for k in range(n)]
    t0 = time.perf_counter()
    filled = sum(1 for s in signals if stage.on_signal(s).intents[-1]["status"] == "filled")
    elapsed = time.perf_counter() - t0
    return {
        "signals": n,
        "filled": filled,
        "seconds": round(elapsed, 3),
        "intents_per_s": round(n / elapsed),
        "us_per_intent": round(elapsed / n * 1e6, 1),
    }


def book_filter(n: int) -> dict[str, Any]:
    """Cost per book message of the stage's books consumer: an unwatched event's book (kept
    raw by its Kafka key) against a watched one (Avro-decoded and stored)."""
    from marketpulse.venues.mock import MockVenue

    cdc = codec()
    msgs = []
    for i, (rec, _) in enumerate(MockVenue(seed=7).updates()):
        if i >= n:
            break
        msgs.append((rec["event_key"].encode(), cdc.encode("book", rec)))
    cost = {}
    for name, watch in (("unwatched", False), ("watched", True)):
        store = BookStore(lambda v: cdc.decode("book", v))
        if watch:
            for key, _ in msgs:
                store.watch(key.decode())
        t0 = time.perf_counter()
        for key, value in msgs:
            store.offer(key, value)
        cost[f"{name}_us_per_book"] = round((time.perf_counter() - t0) / len(msgs) * 1e6, 2)
    return {"books": len(msgs), **cost}


async def bench_execution(
    base: Settings, home: Path, quick: bool = False, rate: float = 100.0
) -> dict[str, Any]:
    """Both measurements (see the module doc); `home` holds the child's log and limits."""
    result: dict[str, Any] = {
        "risk_stage": risk_stage(2_000 if quick else 20_000),
        "book_filter": book_filter(10_000 if quick else 50_000),
    }
    result["broker"] = await broker_run(
        base, home, rate=rate, seconds=4 if quick else 15, burst=1_000 if quick else 5_000
    )
    return result


async def broker_run(
    base: Settings, home: Path, rate: float, seconds: float, burst: int, warmup_s: float = 2.0
) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    settings = base.model_copy(update={"topic_prefix": f"benchex{tag}."})
    home.mkdir(parents=True, exist_ok=True)
    limits = home / "limits.yaml"
    limits.write_text(json.dumps(BENCH_CONFIG))  # JSON is YAML
    await create_topics(settings)
    # No linger: the latency measured starts when a signal is sent, not after the bench's own
    # producer batched it (the worker's linger is upstream of the stage, not part of it).
    prod = producer(settings, linger_ms=0)
    await prod.start()
    cdc = codec()
    group = ProcessGroup(
        home / "logs",
        {
            "MPX_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "MPX_TOPIC_PREFIX": settings.topic_prefix,
            "MPX_EXECUTION_GROUP": f"bench-execute-{tag}",
            "MPX_EXECUTION_OFFSET_RESET": "earliest",
            "MPX_EXECUTION_FILE": str(limits),
        },
    )
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    try:
        for i in range(EVENTS):
            market = _market(i)
            value = cdc.encode("market", market)
            await prod.send(settings.topic("markets"), value, key=market["market_id"].encode())
            for side, ask in (("y", 0.45), ("n", 0.50)):
                value = cdc.encode("book", _book(i, side, ask))
                await prod.send(settings.topic("books"), value, key=f"mk:bx-{i}".encode())
        await prod.flush()
        topic = settings.topic("intents")
        await consumer._client.force_metadata_update()
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        group.spawn("execute", "execute")
        sent: dict[str, float] = {}
        seen: dict[str, float] = {}
        filled: dict[str, float] = {}

        async def read(until: set[str], timeout: float) -> None:
            deadline = time.monotonic() + timeout
            while not until <= set(filled) and time.monotonic() < deadline:
                group.check_alive()
                batch = await consumer.getmany(timeout_ms=100, max_records=5000)
                now = time.perf_counter()
                for msgs in batch.values():
                    for m in msgs:
                        rec = cdc.decode("intent", m.value)
                        if rec["seq"] == 0:
                            seen.setdefault(rec["signal_id"], now)
                        if rec["status"] == "filled":
                            filled.setdefault(rec["signal_id"], now)

        async def send(sig: dict[str, Any]) -> None:
            sent[sig["signal_id"]] = time.perf_counter()
            await prod.send(settings.topic("signals"), cdc.encode("signal", sig), key=b"bench")

        async def paced(tag: str, n: int) -> None:
            reader = asyncio.create_task(read({f"bx-{tag}-{k:07d}" for k in range(n)}, 60))
            t0 = time.perf_counter()
            for k in range(n):
                await send(_signal(k, tag))
                await asyncio.sleep(max(0.0, t0 + (k + 1) / rate - time.perf_counter()))
            await reader

        warm = _signal(0, "warm")  # the child's start (restore, books warm-up) is not measured
        await send(warm)
        await read({warm["signal_id"]}, 120)
        await paced("warmup", int(rate * warmup_s))  # nor a broker fresh from its JVM's start
        n_paced = int(rate * seconds)
        await paced("paced", n_paced)
        latencies = [
            (seen[s] - sent[s]) * 1000 for s in sent if s.startswith("bx-paced") and s in seen
        ]
        burst_ids = {f"bx-burst-{k:07d}" for k in range(burst)}
        b0 = time.perf_counter()
        for k in range(burst):
            await send(_signal(k, "burst"))
        await read(burst_ids, 120)
        b_elapsed = time.perf_counter() - b0
        done = len(burst_ids & set(filled))
        group.sample_rss()
        rss = {c.name: round(c.peak_rss / 2**20, 1) for c in group.children}
        return {
            "paced_rate": rate,
            "warmup_signals": int(rate * warmup_s),
            "signals": n_paced,
            "intents_seen": len(latencies),
            "signal_to_intent_ms_p50": _pct(latencies, 50),
            "signal_to_intent_ms_p99": _pct(latencies, 99),
            "signal_to_intent_ms_max": _pct(latencies, 100),
            "target_p99_ms": 50,
            "burst_signals": burst,
            "burst_filled": done,
            "burst_seconds": round(b_elapsed, 2),
            "intents_per_s_end_to_end": round(done / b_elapsed) if b_elapsed else None,
            "peak_rss_mb": rss,
        }
    finally:
        await consumer.stop()
        await prod.stop()
        group.stop()
