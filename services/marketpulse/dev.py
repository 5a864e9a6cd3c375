"""`marketpulse dev` (what `make demo` runs): a local Kafka broker, the catalog's topics, and
every process of the pipeline on embedded defaults; prints where to look and the signals as they
arrive; with a duration it stops by itself and prints a one-line JSON summary last."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition

from marketpulse.codec import codec
from marketpulse.kafka import create_topics
from marketpulse.procs import ProcessGroup
from marketpulse.settings import Settings

MARKET_DATA = ("markets", "books", "ticks", "trades")
PROGRESS_EVERY_S = 10.0


@dataclass
class DemoOptions:
    home: Path
    duration: float | None
    rate: float
    fresh: bool
    api_port: int


def say(msg: str) -> None:
    click.echo(click.style("▸ ", fg="cyan") + msg, err=True)


def start_broker(home: Path, bootstrap: str | None) -> tuple[str, Any]:
    if bootstrap:
        say(f"using the Kafka broker at {bootstrap}")
        return bootstrap, None
    from marketpulse.broker import LocalBroker, ensure_jars

    ensure_jars()
    say("starting a local Apache Kafka broker (KRaft, single node)…")
    broker = LocalBroker(home / "kafka")
    t0 = time.monotonic()
    addr = broker.start()
    say(f"Kafka broker up at {addr} in {time.monotonic() - t0:.1f}s")
    return addr, broker


async def end_offsets(settings: Settings, topic_ids: tuple[str, ...]) -> dict[str, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    try:
        totals = {}
        for tid in topic_ids:
            name = settings.topic(tid)
            parts = consumer.partitions_for_topic(name) or set()
            if not parts:
                await consumer._client.force_metadata_update()
                parts = consumer.partitions_for_topic(name) or set()
            ends = await consumer.end_offsets([TopicPartition(name, p) for p in parts])
            totals[tid] = sum(ends.values())
        return totals
    finally:
        await consumer.stop()


def describe_signal(sig: dict[str, Any]) -> str:
    level_color = {"P1": "red", "P2": "yellow"}.get(sig["level"], "white")
    head = click.style(f"{sig['level']} {sig['rule_id']}", fg=level_color, bold=True)
    return (
        f"{head} {sig['subject']}  edge {sig['edge_bps']:.0f} bps  size {sig['size']:g}"
        f"  notional ${sig['notional']:.2f}  {sig.get('summary', '')}"
    )


async def tail_signals(settings: Settings, stop: asyncio.Event, seen: list[dict]) -> None:
    """Print every signal as it arrives (reads the topic directly, no consumer group)."""
    consumer = AIOKafkaConsumer(
        settings.topic("signals"),
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=300)
            for msgs in batch.values():
                for m in msgs:
                    try:
                        sig = codec().decode("signal", m.value)
                    except Exception as exc:
                        say(f"undecodable signal at offset {m.offset}: {exc}")
                        continue
                    seen.append(sig)
                    click.echo(describe_signal(sig))
    finally:
        await consumer.stop()


async def api_stats(port: int) -> dict[str, Any] | None:
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            r = await client.get(f"http://127.0.0.1:{port}/api/stats")
            return r.json() if r.status_code == 200 else None
    except httpx.HTTPError:
        return None


async def wait_http(port: int, path: str, group: ProcessGroup, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            group.check_alive()
            try:
                if (await client.get(f"http://127.0.0.1:{port}{path}")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.3)
    raise TimeoutError(f"http://127.0.0.1:{port}{path} did not answer within {timeout:.0f}s")


def table_rows(stats: dict[str, Any] | None) -> dict[str, int]:
    return dict((stats or {}).get("rows", {}))


async def wait_caught_up(
    settings: Settings, opts: DemoOptions, group: ProcessGroup, timeout: float = 60
) -> dict[str, Any] | None:
    """After the collector stopped: wait until the warehouse holds every tick produced."""
    produced = (await end_offsets(settings, ("ticks",)))["ticks"]
    deadline = time.monotonic() + timeout
    stats = None
    while time.monotonic() < deadline:
        group.check_alive()
        stats = await api_stats(opts.api_port)
        if table_rows(stats).get("ticks", -1) >= produced:
            break
        await asyncio.sleep(0.5)
    return stats


def quiet_libraries() -> None:
    """The supervisor's own output is the story; library chatter goes to the process logs."""
    for name in ("httpx", "aiokafka"):
        logging.getLogger(name).setLevel(logging.WARNING)


async def report_progress(port: int, started: float) -> None:
    """One status line, from the warehouse's own counts."""
    rows = table_rows(await api_stats(port))
    if rows:
        say(
            f"{time.monotonic() - started:5.0f}s  ticks stored {rows.get('ticks', 0):,}  "
            f"books {rows.get('books', 0):,}  signals {rows.get('signals', 0)}"
        )


async def demo(base: Settings, opts: DemoOptions) -> dict[str, Any]:
    quiet_libraries()
    if opts.fresh and opts.home.exists():
        shutil.rmtree(opts.home)
    opts.home.mkdir(parents=True, exist_ok=True)
    bootstrap, broker = start_broker(opts.home, None)
    settings = base.model_copy(
        update={
            "kafka_bootstrap": bootstrap,
            "warehouse_url": f"chdb://{(opts.home / 'warehouse').resolve()}",
            "api_port": opts.api_port,
        }
    )
    env = {
        "MPX_KAFKA_BOOTSTRAP": bootstrap,
        "MPX_WAREHOUSE_URL": settings.warehouse_url,
        "MPX_API_PORT": str(opts.api_port),
        "MPX_TOPIC_PREFIX": settings.topic_prefix,
        "MPX_WORKER_DATA_DIR": str(opts.home / "worker"),
        "MPX_WORKER_WEB_PORT": "0",
    }
    group = ProcessGroup(opts.home / "logs", env)
    stop = asyncio.Event()
    seen: list[dict] = []
    try:
        created = await create_topics(settings)
        say(f"topics ready ({len(created)} created from schemas/topics.yaml)")
        group.spawn("api", "api", "--with-sink")
        group.spawn("worker", "worker")
        group.spawn("alerts", "alerts")  # a dry run unless MPX_ALERTS_WEBHOOKS names a webhook
        # paper only: auto approval so the demo shows fills (semi_auto waits for the API)
        group.spawn("execute", "execute", "--approval", "auto")
        await wait_http(opts.api_port, "/healthz", group)
        group.spawn("collector", "collect", "--source", "mock", "--rate", str(opts.rate))
        url = f"http://127.0.0.1:{opts.api_port}"
        say("pipeline running: mock venue → collector → Kafka → worker → signals → sink → chDB")
        say(f"API        {url}/docs   signals: {url}/api/signals   metrics: {url}/metrics")
        say(
            f"Kafka      {bootstrap}   (topics: marketpulse topics describe --bootstrap "
            f"{bootstrap})"
        )
        say(f"logs       {group.log_dir}/   (alerts.log: what would go to Slack)")
        say(
            "signals appear below as the worker finds them"
            + (f"; stopping after {opts.duration:.0f}s" if opts.duration else "; Ctrl-C stops")
        )
        tail = asyncio.create_task(tail_signals(settings, stop, seen))
        started = next_report = time.monotonic()
        while opts.duration is None or time.monotonic() - started < opts.duration:
            group.check_alive()
            group.sample_rss()
            if time.monotonic() >= next_report + PROGRESS_EVERY_S:
                next_report = time.monotonic()
                await report_progress(opts.api_port, started)
            await asyncio.sleep(0.5)
        say("stopping the collector and letting the pipeline catch up…")
        group.stop("collector")
        stats = await wait_caught_up(settings, opts, group)
        produced = await end_offsets(settings, MARKET_DATA)
        execution = await end_offsets(settings, ("intents", "positions"))
        stop.set()
        await tail
        rows = table_rows(stats)
        return {
            "events": sum(produced.values()),
            "signals": rows.get("signals", len(seen)),
            "rows": sum(rows.values()),
            "ticks_stored": rows.get("ticks", 0),
            "signals_seen": len(seen),
            "intent_events": execution["intents"],
            "position_updates": execution["positions"],
            "elapsed_s": round(time.monotonic() - started, 1),
        }
    finally:
        stop.set()
        group.stop()
        if broker is not None:
            broker.stop()
