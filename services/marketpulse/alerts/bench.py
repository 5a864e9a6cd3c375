"""Benchmarks of the alerts and of replays, for `marketpulse bench` (each returns a JSON-able dict).

- `bench_alerts`: signal-to-Slack latency. Signals are produced at a paced rate (a fifth of them
  re-sends of an earlier signal id, so de-duplication is on the path) to a fresh topic prefix;
  the alerts process delivers to a local Slack stand-in (uvicorn on 127.0.0.1), which notes when
  each message arrives. Latency = arrival - the signal's `trigger_recv_ms` (set at produce).
- `bench_replay`: messages/s that the worker and the sink reprocess after a rewind. The mock
  collector fills a fresh prefix, the worker (child process) and the sink (this process, chDB in
  a scratch dir) consume it, then both groups are rewound to earliest with `marketpulse.replay`
  and timed until their committed offsets reach the end again (the worker commits every ~3 s:
  its figure is a lower bound)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import uvicorn
from aiokafka import AIOKafkaConsumer
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from marketpulse.alerts.config import parse_config
from marketpulse.alerts.service import Alerter
from marketpulse.codec import codec
from marketpulse.kafka import admin, create_topics, producer
from marketpulse.procs import ProcessGroup
from marketpulse.replay import replay
from marketpulse.settings import Settings
from marketpulse.warehouse import connect, sink

BENCH_ROUTES = {"channels": {"slack": {"type": "slack"}}, "routes": [{"channels": ["slack"]}]}


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))], 1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def slack_standin(arrivals: dict[str, float], deliveries: list[str]) -> AsyncIterator[str]:
    """A local Slack webhook that answers `ok`, notes each signal id's first arrival time and
    every delivery (a duplicate shows as a repeated id)."""

    async def hook(request: Request) -> PlainTextResponse:
        body = await request.json()
        context = body["blocks"][-1]["elements"][0]["text"]
        signal_id = context.split("`")[1]
        arrivals.setdefault(signal_id, time.time())
        deliveries.append(signal_id)
        return PlainTextResponse("ok")

    port = _free_port()
    app = Starlette(routes=[Route("/services/bench", hook, methods=["POST"])])
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/services/bench"
    finally:
        server.should_exit = True
        await task


def _signal(i: int, now_ms: int) -> dict[str, Any]:
    subject = f"mk:bench-{i}"
    return {
        "signal_id": f"bench-{i:06d}",
        "rule_id": "complete_set",
        "rule_version": 1,
        "level": "P2",
        "subject": subject,
        "event_key": subject,
        "market_ids": [f"{subject}-m0"],
        "ts_ms": now_ms,
        "trigger_recv_ms": now_ms,
        "edge_bps": 150.0,
        "edge_score": 3.0,
        "size": 100.0,
        "notional": 97.0,
        "legs": [
            {
                "market_id": f"{subject}-m0",
                "token_id": "t",
                "side": "BUY",
                "price": 0.97,
                "size": 100.0,
            },
        ],
        "evidence": {"direction": "buy", "set": "binary"},
        "summary": "bench",
    }


async def bench_alerts(base: Settings, rate: float = 50.0, seconds: float = 20.0) -> dict:
    """Signal-to-Slack latency p50/p99 at `rate` signals/s for `seconds`, de-dup on."""
    arrivals: dict[str, float] = {}
    deliveries: list[str] = []
    async with slack_standin(arrivals, deliveries) as url:
        settings = base.model_copy(
            update={
                "topic_prefix": f"benchal{uuid.uuid4().hex[:8]}.",
                "alerts_group": f"bench-alerts-{uuid.uuid4().hex[:8]}",
                "alerts_offset_reset": "earliest",
                "alerts_webhooks": {"slack": SecretStr(url)},
            }
        )
        await create_topics(settings)
        stop = asyncio.Event()
        alerter = Alerter(settings, parse_config(BENCH_ROUTES, settings.alerts_webhooks))
        task = asyncio.create_task(alerter.run(stop))
        prod = producer(settings)
        await prod.start()
        try:
            await _send(prod, settings, _signal(-1, int(time.time() * 1000)))  # warm-up
            await _until(lambda: bool(arrivals), 60, task)
            arrivals.clear()
            deliveries.clear()
            sent, dups = await _paced(prod, settings, rate, seconds)
            await _until(lambda: len(arrivals) >= len(sent), 30, task)
            await asyncio.sleep(1.0)  # a duplicate arriving late would show now
        finally:
            await prod.stop()
            stop.set()
            await task
    latencies = [(arrivals[i] - t / 1000) * 1000 for i, t in sent.items() if i in arrivals]
    return {
        "rate_per_s": rate,
        "signals": len(sent),
        "duplicates_produced": dups,
        "delivered": len(latencies),
        "delivered_twice": len(deliveries) - len(set(deliveries)),
        "delivered_unknown": len(set(arrivals) - set(sent)),
        "latency_ms_p50": _pct(latencies, 50),
        "latency_ms_p99": _pct(latencies, 99),
        "latency_ms_max": _pct(latencies, 100),
    }


async def _send(prod: Any, settings: Settings, sig: dict[str, Any]) -> None:
    await prod.send(
        settings.topic("signals"), codec().encode("signal", sig), key=sig["subject"].encode()
    )


async def _paced(
    prod: Any, settings: Settings, rate: float, seconds: float
) -> tuple[dict[str, int], int]:
    """Produce at `rate`/s; every fifth message repeats an earlier signal (de-dup must drop it)."""
    sent: dict[str, int] = {}
    dups, i, started = 0, 0, time.monotonic()
    while time.monotonic() - started < seconds:
        now_ms = int(time.time() * 1000)
        if i % 5 == 4 and sent:
            first = next(iter(sent))
            await _send(prod, settings, _signal(int(first.split("-")[1]), now_ms))
            dups += 1
        else:
            sig = _signal(i, now_ms)
            sent[sig["signal_id"]] = now_ms
            await _send(prod, settings, sig)
        i += 1
        await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))
    await prod.flush()
    return sent, dups


async def _until(predicate: Any, timeout: float, task: asyncio.Task[None]) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if task.done():
            task.result()
        if time.monotonic() > deadline:
            raise TimeoutError("the alerts process did not deliver in time")
        await asyncio.sleep(0.05)


# ---- replay throughput ---------------------------------------------------------------------


async def _caught_up(settings: Settings, group: str, topics: list[str]) -> bool:
    client = admin(settings)
    await client.start()
    try:
        offsets = await client.list_consumer_group_offsets(group)
    finally:
        await client.close()
    mine = {tp: m.offset for tp, m in offsets.items() if tp.topic in topics}
    if not mine:
        return False
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(list(mine))
    finally:
        await consumer.stop()
    return all(mine[tp] >= ends[tp] for tp in mine)


async def _time_catch_up(
    settings: Settings, groups: dict[str, list[str]], procs: ProcessGroup, timeout: float
) -> dict[str, float]:
    started, took = time.monotonic(), dict[str, float]()
    while len(took) < len(groups):
        procs.check_alive()
        for group, topics in groups.items():
            if group not in took and await _caught_up(settings, group, topics):
                took[group] = time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"not caught up in {timeout:.0f}s: {set(groups) - set(took)}")
        await asyncio.sleep(0.2)
    return took


async def bench_replay(base: Settings, home: Path, updates: int = 20_000) -> dict:
    """Messages/s reprocessed by the worker and the sink after both are rewound to earliest."""
    from marketpulse.collect import run as collect

    shutil.rmtree(home, ignore_errors=True)
    tag = uuid.uuid4().hex[:8]
    settings = base.model_copy(
        update={
            "topic_prefix": f"benchrp{tag}.",
            "worker_id": f"bench-rp-worker-{tag}",
            "sink_group": f"bench-rp-sink-{tag}",
            "worker_data_dir": home / "worker",
            "worker_web_port": 0,
            "warehouse_url": f"chdb://{home / 'warehouse'}",
        }
    )
    await create_topics(settings)
    await collect(settings, seed=7, rate=None, max_updates=updates, start_ms=1_767_225_600_000)
    worker_topics = [settings.topic("books"), settings.topic("markets")]
    sink_topics = [settings.topic(t) for t in sink.TABLES]
    groups = {settings.worker_id: worker_topics, settings.sink_group: sink_topics}
    env = {
        "MPX_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "MPX_TOPIC_PREFIX": settings.topic_prefix,
        "MPX_WORKER_ID": settings.worker_id,
        "MPX_WORKER_DATA_DIR": str(settings.worker_data_dir),
        "MPX_WORKER_WEB_PORT": "0",
    }
    warehouse = connect(settings)
    warehouse.migrate()
    try:
        first = await _run_until_caught_up(settings, warehouse, env, home, groups)
        plans = {
            settings.worker_id: await replay(
                settings, settings.worker_id, "earliest", execute_it=True, reset_state=True
            ),
            settings.sink_group: await replay(
                settings, settings.sink_group, "earliest", execute_it=True
            ),
        }
        again = await _run_until_caught_up(settings, warehouse, env, home, groups)
    finally:
        warehouse.close()
    out: dict[str, Any] = {"updates": updates, "first_run_s": first}
    for name, group in (("worker", settings.worker_id), ("sink", settings.sink_group)):
        n = sum(m.to_reprocess for m in plans[group].moves if m.topic in groups[group])
        out[f"{name}_messages"] = n
        out[f"{name}_replay_s"] = round(again[group], 2)
        out[f"{name}_messages_per_s"] = round(n / again[group])
    return out


async def _run_until_caught_up(
    settings: Settings,
    warehouse: Any,
    env: dict[str, str],
    home: Path,
    groups: dict[str, list[str]],
) -> dict[str, float]:
    procs = ProcessGroup(home / "logs", env)
    stop = asyncio.Event()
    sink_task = asyncio.create_task(sink.run(settings, stop, warehouse))
    try:
        procs.spawn("worker", "worker")
        took = await _time_catch_up(settings, groups, procs, timeout=600)
    finally:
        procs.stop()
        stop.set()
        await sink_task
    return {g: round(t, 2) for g, t in took.items()}


def main() -> None:  # pragma: no cover - manual entry: python -m marketpulse.alerts.bench
    import sys

    settings = Settings(kafka_bootstrap=sys.argv[1])
    print(json.dumps(asyncio.run(bench_alerts(settings))))
    print(json.dumps(asyncio.run(bench_replay(settings, Path("var/bench-replay")))))


if __name__ == "__main__":  # pragma: no cover
    main()
