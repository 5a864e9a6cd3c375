"""`marketpulse bench`: drives the real pipeline (local broker, Faust worker, sink into chDB)
with mock market data and prints JSON as its last line.

Measured in one run, on one machine:
- ceiling: a bare aiokafka produce→consume loop of the same pre-encoded messages;
- pipeline: sustained ticks/s from the collector through Kafka to the worker and to ClickHouse;
- latency: tick-to-signal p50/p99 at a paced rate, from the collector's receive time to the
  moment the benchmark reads the signal off Kafka;
- peak RSS of every process.
"""

from __future__ import annotations

import asyncio
import platform
import resource
import shutil
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import httpx
import psutil
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from marketpulse.codec import codec
from marketpulse.dev import end_offsets, say, start_broker, wait_http
from marketpulse.kafka import create_topics, producer
from marketpulse.procs import ProcessGroup
from marketpulse.settings import Settings
from marketpulse.venues.mock import STEP_MS


@dataclass
class BenchOptions:
    home: Path
    updates: int
    paced_rate: float
    paced_seconds: float
    api_port: int
    quick: bool = False
    sections: tuple[str, ...] = ("pipeline",)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return round(ordered[k], 2)


def machine() -> dict[str, Any]:
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": psutil.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
    }


def mock_messages(settings: Settings, n: int) -> list[tuple[str, bytes, bytes]]:
    """(topic, key, value) of n book updates and their ticks, pre-encoded."""
    from marketpulse.venues.mock import MockVenue

    venue = MockVenue(seed=settings.mock_seed)
    cdc = codec()
    out = []
    books, ticks = settings.topic("books"), settings.topic("ticks")
    for i, (book, tick) in enumerate(venue.updates()):
        if i >= n:
            break
        key = book["event_key"].encode()
        out.append((books, key, cdc.encode("book", book)))
        out.append((ticks, key, cdc.encode("tick", tick)))
    return out


async def ceiling(settings: Settings, messages: list[tuple[str, bytes, bytes]]) -> dict:
    """The same messages through a bare idempotent producer and one consumer."""
    topic = settings.topic_prefix + "bench.ceiling"
    adm = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await adm.start()
    await adm.create_topics([NewTopic(topic, 4, 1)])
    await adm.close()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    await consumer._client.force_metadata_update()
    consumer.assign([TopicPartition(topic, p) for p in range(4)])
    prod = producer(settings)
    await prod.start()
    t0 = time.perf_counter()

    async def produce() -> None:
        pending = []
        for _, key, value in messages:
            pending.append(await prod.send(topic, value, key=key))
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)

    async def consume() -> None:
        got = 0
        while got < len(messages):
            batch = await consumer.getmany(timeout_ms=500, max_records=10000)
            got += sum(len(v) for v in batch.values())

    await asyncio.gather(produce(), consume())
    elapsed = time.perf_counter() - t0
    await prod.stop()
    await consumer.stop()
    return {
        "messages": len(messages),
        "seconds": round(elapsed, 2),
        "messages_per_s": round(len(messages) / elapsed),
    }


async def group_caught_up(settings: Settings, group: str, topic_id: str) -> bool:
    adm = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await adm.start()
    try:
        committed = await adm.list_consumer_group_offsets(group)
    except KafkaError as exc:
        if exc.retriable:  # no group coordinator yet on a fresh broker: not caught up
            return False
        raise
    finally:
        await adm.close()
    name = settings.topic(topic_id)
    done = sum(o.offset for tp, o in committed.items() if tp.topic == name and o.offset >= 0)
    return done >= (await end_offsets(settings, (topic_id,)))[topic_id]


async def ticks_stored(port: int) -> int:
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            r = await client.get(f"http://127.0.0.1:{port}/api/stats")
            return int(r.json().get("rows", {}).get("ticks", 0)) if r.status_code == 200 else 0
    except (httpx.HTTPError, ValueError):
        return 0


async def wait_worker_ready(group: ProcessGroup, timeout: float = 120) -> None:
    """Faust logs 'Ready' once it has joined the group and recovered its tables."""
    worker = next(c for c in group.children if c.name == "worker")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        group.check_alive()
        if "Ready" in worker.tail(200):
            return
        await asyncio.sleep(0.3)
    raise TimeoutError("the worker did not become ready; see " + str(worker.log))


async def collect_signals(settings: Settings, stop: asyncio.Event, latencies: list[float]) -> None:
    consumer = AIOKafkaConsumer(
        settings.topic("signals"),
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        auto_offset_reset="latest",
    )
    await consumer.start()
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=100)
            now_ms = time.time() * 1000
            for msgs in batch.values():
                for m in msgs:
                    sig = codec().decode("signal", m.value)
                    latencies.append(now_ms - sig["trigger_recv_ms"])
    finally:
        await consumer.stop()


async def pipeline(
    settings: Settings, opts: BenchOptions, group: ProcessGroup, start_ms: int
) -> dict:
    from marketpulse.collect import run as collect

    t0 = time.perf_counter()
    produced = await collect(
        settings,
        source="mock",
        seed=settings.mock_seed,
        rate=None,
        max_updates=opts.updates,
        start_ms=start_ms,
    )
    t_produced = time.perf_counter() - t0
    t_worker = t_sink = None
    deadline = time.monotonic() + 600
    with click.progressbar(
        length=opts.updates, label="  ticks into ClickHouse", file=click.get_text_stream("stderr")
    ) as bar:
        stored = 0
        while (t_worker is None or t_sink is None) and time.monotonic() < deadline:
            group.check_alive()
            group.sample_rss()
            if t_worker is None and await group_caught_up(settings, settings.worker_id, "books"):
                t_worker = time.perf_counter() - t0
            now_stored = await ticks_stored(opts.api_port)
            bar.update(now_stored - stored)
            stored = now_stored
            if t_sink is None and stored >= opts.updates:
                t_sink = time.perf_counter() - t0
            await asyncio.sleep(0.2)
    n = opts.updates
    return {
        "updates": n,
        "collector_events_per_s": round(2 * n / t_produced),
        "worker_ticks_per_s": round(n / t_worker) if t_worker else None,
        "clickhouse_ticks_per_s": round(n / t_sink) if t_sink else None,
        "seconds_to_worker": round(t_worker, 2) if t_worker else None,
        "seconds_to_clickhouse": round(t_sink, 2) if t_sink else None,
        "collector": produced,
    }


async def latency(settings: Settings, opts: BenchOptions, start_ms: int) -> dict:
    """Tick-to-signal latency of a run paced at `opts.paced_rate`, mock event time from
    `start_ms` (after whatever the worker already holds)."""
    from marketpulse.collect import run as collect

    latencies: list[float] = []
    stop = asyncio.Event()
    reader = asyncio.create_task(collect_signals(settings, stop, latencies))
    await asyncio.sleep(1.0)  # let the reader join before the first signal can be produced
    sent = await collect(
        settings,
        source="mock",
        seed=settings.mock_seed,
        rate=opts.paced_rate,
        duration=opts.paced_seconds,
        start_ms=start_ms,
        # Event time runs with the wall clock, as on a live feed: at the mock's default step
        # it would run rate/20 times faster, every token's tick opening a new window bucket.
        step_ms=1000 / opts.paced_rate,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not latencies:
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.0)
    stop.set()
    await reader
    return {
        "rate_updates_per_s": round(sent["books"] / max(sent["elapsed_s"], 1e-9)),
        "signals": len(latencies),
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "max_ms": round(max(latencies), 2) if latencies else None,
        "mean_ms": round(statistics.fmean(latencies), 2) if latencies else None,
    }


async def pipeline_section(settings: Settings, opts: BenchOptions) -> dict:
    """The spine: ceiling, then worker and sink processes fed by the mock collector."""
    env = {
        "MPX_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "MPX_TOPIC_PREFIX": settings.topic_prefix,
        "MPX_WAREHOUSE_URL": settings.warehouse_url,
        "MPX_API_PORT": str(opts.api_port),
        "MPX_WORKER_ID": settings.worker_id,
        "MPX_WORKER_DATA_DIR": str(opts.home / "worker"),
        "MPX_WORKER_WEB_PORT": "0",
        "MPX_LOG_LEVEL": "WARNING",
    }
    group = ProcessGroup(opts.home / "logs", env)
    try:
        await create_topics(settings)
        say(f"ceiling: bare aiokafka produce→consume of {2 * opts.updates} messages…")
        messages = mock_messages(settings, opts.updates)
        ceil = await ceiling(settings, messages)
        del messages
        say("starting the worker and the API with the sink on chDB…")
        group.spawn("api", "api", "--with-sink")
        group.spawn("worker", "worker", extra_env={"MPX_LOG_LEVEL": "INFO"})
        await wait_http(opts.api_port, "/healthz", group)
        await wait_worker_ready(group)
        start_ms = int(time.time() * 1000)
        say(f"pipeline: {opts.updates} mock updates as fast as the collector can…")
        pipe = await pipeline(settings, opts, group, start_ms)
        # Latency in the steady state, after the throughput run has warmed every process (a
        # fresh broker's JVM still compiling its hot paths tripled the p50, measured). The
        # same mock stream again, its event time after the first run's: the worker ignores
        # books older than those it holds.
        again_ms = start_ms + (opts.updates + 1000) * STEP_MS
        say(f"latency: {opts.paced_rate:.0f} updates/s for {opts.paced_seconds:.0f}s…")
        lat = await latency(settings, opts, again_ms)
        group.sample_rss()
        rss = {c.name: round(c.peak_rss / 2**20, 1) for c in group.children}
        # Again with the API process (the sink and chDB) stopped: the worker sharing the cores
        # with the collector and the broker only, as a worker host would.
        group.stop("api")
        third_ms = again_ms + int(opts.paced_seconds * 1500)  # event time ≈ wall: 1.5 times its run
        say("latency again, the sink and chDB stopped…")
        alone = await latency(settings, opts, third_ms)
        best = pipe["clickhouse_ticks_per_s"] or 0
        return {
            "ceiling": ceil,
            "pipeline": pipe,
            # the ceiling moves 2 messages (book + tick) per update, like the pipeline
            "pipeline_to_ceiling_ratio": round(2 * best / ceil["messages_per_s"], 3),
            "tick_to_signal": lat,
            "tick_to_signal_without_sink": alone,
            "peak_rss_mb": rss,
        }
    finally:
        group.stop()


async def worker_section(settings: Settings, opts: BenchOptions) -> dict:
    from marketpulse.worker_bench import bench_worker

    if opts.quick:
        return await bench_worker(settings, opts.home / "worker", 20_000)
    return await bench_worker(settings, opts.home / "worker", 100_000, state_markets=10_000)


async def collector_section(settings: Settings, opts: BenchOptions) -> dict:
    from marketpulse.venues.bench import bench_collector

    say("collector: recorded Polymarket frames → normalize → produce…")
    fresh = settings.model_copy(update={"topic_prefix": settings.topic_prefix + "col."})
    return await bench_collector(fresh, frames=10_000 if opts.quick else 50_000)


async def sink_section(settings: Settings, opts: BenchOptions) -> dict:
    from marketpulse.warehouse.bench import bench_sink

    say("sink: rows/s per topic into chDB vs a bare insert of the same rows…")
    updates = 20_000 if opts.quick else 200_000
    home = opts.home / "sink"
    return await asyncio.to_thread(bench_sink, settings.kafka_bootstrap, home, updates)


async def api_section(settings: Settings, opts: BenchOptions) -> dict:
    from marketpulse.warehouse.bench import bench_api

    ticks, signals = (100_000, 10_000) if opts.quick else (1_000_000, 100_000)
    say(f"api: query latency over {ticks:,} ticks and {signals:,} signals…")
    return await asyncio.to_thread(bench_api, opts.home / "api", ticks, signals)


async def alerts_section(settings: Settings, opts: BenchOptions) -> dict:
    from marketpulse.alerts.bench import bench_alerts

    say("alerts: signal → Slack stand-in latency at 50 signals/s, dedup on…")
    return await bench_alerts(settings, rate=50.0, seconds=5 if opts.quick else 20)


async def replay_section(settings: Settings, opts: BenchOptions) -> dict:
    from marketpulse.alerts.bench import bench_replay

    say("replay: rewind the worker and the sink, measure reprocessing…")
    updates = 5_000 if opts.quick else 20_000
    return await bench_replay(settings, opts.home / "replay", updates=updates)


async def execution_section(settings: Settings, opts: BenchOptions) -> dict:
    from marketpulse.execution.bench import bench_execution

    say("execution: signal → intent latency on the broker, intents/s through the risk stage…")
    return await bench_execution(settings, opts.home / "execution", quick=opts.quick)


SECTIONS: dict[str, Callable[[Settings, BenchOptions], Awaitable[dict]]] = {
    "pipeline": pipeline_section,
    "worker": worker_section,
    "collector": collector_section,
    "sink": sink_section,
    "api": api_section,
    "alerts": alerts_section,
    "replay": replay_section,
    "execution": execution_section,
}


async def bench(base: Settings, opts: BenchOptions, bootstrap: str | None) -> dict:
    """Every selected section on one broker; a failing section reports its error and the
    others still run (a benchmark that dies at the end would waste the whole run)."""
    if opts.home.exists():
        shutil.rmtree(opts.home)
    opts.home.mkdir(parents=True)
    addr, broker = start_broker(opts.home, bootstrap)
    prefix = f"bench{int(time.time())}."
    settings = base.model_copy(
        update={
            "kafka_bootstrap": addr,
            "topic_prefix": prefix,
            "api_port": opts.api_port,
            "worker_id": f"{prefix}worker",
            "warehouse_url": f"chdb://{(opts.home / 'warehouse').resolve()}",
        }
    )
    report: dict[str, Any] = {"benchmark": "marketpulse", "quick": opts.quick, "machine": machine()}
    try:
        for name in opts.sections:
            started = time.monotonic()
            try:
                report[name] = await SECTIONS[name](settings, opts)
            except Exception as exc:  # reported in the JSON; the next section still runs
                report[name] = {"error": f"{type(exc).__name__}: {exc}"}
            report[name]["section_seconds"] = round(time.monotonic() - started, 1)
    finally:
        if broker is not None:
            broker.stop()
    report["peak_rss_mb_bench_process"] = round(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
    )
    return report
