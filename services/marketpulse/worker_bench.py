"""`marketpulse bench --only worker`: one worker process on a backlog, and Faust's own floor.

The pipeline section measures the worker while the collector, the sink and ClickHouse share the
same cores; this one isolates the worker. A backlog of mock updates over thousands of markets
(the rules benchmark's mix: 400 multi-outcome events and 1,600 binaries, injected
opportunities included) is produced first; then a real `marketpulse worker` process with the
default rule set consumes it alone, and its throughput comes from its own message counter
(scraped off /metrics), its CPU time and peak RSS from the OS.

The floor is a Faust app with one agent that takes the same books in batches and does nothing
with them (`python -m marketpulse.worker_bench floor N [stock]`): what Faust itself costs per
message on this machine, which bounds any Faust worker whatever its rules cost. It runs with the
worker's consumer (`fastdrain`) and with Faust's stock one, which spends four asyncio tasks on
every message.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from marketpulse.dev import end_offsets, say
from marketpulse.kafka import create_topics
from marketpulse.procs import ProcessGroup
from marketpulse.settings import Settings

N_EVENTS, N_BINARIES = 400, 1_600
METRICS_PORT = 9431


async def bench_worker(
    settings: Settings, home: Path, updates: int, state_markets: int = 0
) -> dict[str, Any]:
    """Throughput over the mixed backlog and the floor; with `state_markets`, also the RSS of a
    worker holding that many binary markets' state (every token's book, twice updated)."""
    fresh = settings.model_copy(
        update={"topic_prefix": settings.topic_prefix + "wk.", "worker_id": "bench-wk"}
    )
    markets = N_EVENTS + N_BINARIES
    say(f"worker: producing a backlog of {updates:,} updates over {markets:,} markets…")
    books = await _backlog(fresh, N_EVENTS, N_BINARIES, updates)
    say("worker: one worker process over the backlog, nothing else running…")
    worker = await _worker_run(fresh, home / "mix", books)
    say("worker: Faust's floor (an agent that does nothing) over the same books…")
    floor = await asyncio.to_thread(_floor_run, fresh, books)
    stock = await asyncio.to_thread(_floor_run, fresh, books, True)
    result: dict[str, Any] = {
        "markets": markets,
        "books": books,
        "worker": worker,
        "faust_floor": floor,
        "faust_floor_stock_consumer": stock,
        "worker_to_floor_ratio": (
            round(worker["books_per_s"] / floor["messages_per_s"], 3)
            if worker.get("books_per_s") and floor.get("messages_per_s")
            else None
        ),
    }
    if state_markets:
        big = settings.model_copy(
            update={"topic_prefix": settings.topic_prefix + "wks.", "worker_id": "bench-wks"}
        )
        say(f"worker: the state of {state_markets:,} markets (RSS)…")
        n = await _backlog(big, 2, state_markets, 4 * state_markets)
        state = await _worker_run(big, home / "state", n)
        result["state"] = {"markets": state_markets + 2, "books": n, **state}
    return result


async def _backlog(settings: Settings, n_events: int, n_binaries: int, updates: int) -> int:
    from marketpulse.collect import run as collect

    await create_topics(settings)
    await collect(
        settings,
        source="mock",
        seed=settings.mock_seed,
        n_events=n_events,
        n_binaries=n_binaries,
        rate=None,
        max_updates=updates,
    )
    return int((await end_offsets(settings, ("books",)))["books"])


async def _worker_run(settings: Settings, home: Path, books: int) -> dict[str, Any]:
    env = {
        "MPX_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "MPX_TOPIC_PREFIX": settings.topic_prefix,
        "MPX_WORKER_ID": settings.worker_id,
        "MPX_WORKER_DATA_DIR": str(home / "worker"),
        "MPX_WORKER_WEB_PORT": "0",
        "MPX_METRICS_PORT": str(METRICS_PORT),
        "MPX_LOG_LEVEL": "WARNING",
    }
    group = ProcessGroup(home / "logs", env)
    child = group.spawn("worker", "worker")
    proc = psutil.Process(child.proc.pid)
    try:
        first: tuple[float, float, float] | None = None  # (time, messages, cpu) at first count
        deadline = time.monotonic() + 600
        async with httpx.AsyncClient(timeout=2) as client:
            while time.monotonic() < deadline:
                group.check_alive()
                child.sample_rss()
                seen = await _books_seen(client, settings)
                now, cpu = time.monotonic(), _cpu(proc)
                if seen and first is None:
                    first = (now, seen, cpu)
                if seen >= books:
                    break
                await asyncio.sleep(0.25)
        if first is None or seen < books:
            raise TimeoutError(f"the worker read {seen} of {books} books; see {child.log}")
        n, seconds, cpu_s = seen - first[1], now - first[0], cpu - first[2]
        return {
            "books_per_s": round(n / seconds),
            "books_per_cpu_s": round(n / cpu_s) if cpu_s else None,
            "measured_books": int(n),
            "seconds": round(seconds, 2),
            "peak_rss_mb": round(child.peak_rss / 2**20, 1),
        }
    finally:
        group.stop()


async def _books_seen(client: httpx.AsyncClient, settings: Settings) -> float:
    """The worker's own count of books read (0 until its metrics answer)."""
    try:
        text = (await client.get(f"http://127.0.0.1:{METRICS_PORT}/metrics")).text
    except httpx.HTTPError:
        return 0.0
    wanted = f'mpx_worker_messages_total{{topic="{settings.topic("books")}"}}'
    for line in text.splitlines():
        if line.startswith(wanted):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def _floor_run(settings: Settings, books: int, stock: bool = False) -> dict[str, Any]:
    env = {
        **os.environ,
        "MPX_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "MPX_TOPIC_PREFIX": settings.topic_prefix,
    }
    cmd = [sys.executable, "-m", "marketpulse.worker_bench", "floor", str(books)]
    cmd += ["stock"] if stock else []
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    try:
        out, _ = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        return {"error": "the Faust floor run did not finish in 300 s"}
    for line in out.decode(errors="replace").splitlines():
        if "FLOOR " in line:  # after Faust's terminal escapes, on the same line
            result: dict[str, Any] = json.loads(line.split("FLOOR ", 1)[1])
            return result
    return {"error": f"the Faust floor run printed no result (exit {proc.returncode})"}


def floor(books: int, stock: bool = False) -> None:
    """The floor app (a child process): count the books topic's messages, then stop. With
    `stock`, on Faust's own consumer instead of the worker's."""
    import faust

    from marketpulse import fastdrain

    settings = Settings()
    app = faust.App(
        f"bench-floor-{os.getpid()}",
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",
        topic_disable_leader=True,
        web_enabled=False,
        autodiscover=False,
        datadir=f"/tmp/mpx-bench-floor-{os.getpid()}",
        broker_max_poll_records=5_000,
        stream_buffer_maxsize=20_000,
    )
    if not stock:
        fastdrain.install(app)
    topic = app.topic(settings.topic("books"), key_serializer="raw", value_serializer="raw")
    seen: dict[str, Any] = {"n": 0, "t0": None}

    @app.agent(topic)
    async def count(stream: Any) -> None:
        async for events in stream.take_events(1_000, 0.005):
            if seen["t0"] is None:
                seen["t0"] = (time.perf_counter(), time.process_time(), len(events))
            seen["n"] += len(events)
            if seen["n"] >= books:
                t0, c0, n0 = seen["t0"]
                n, wall, cpu = seen["n"] - n0, time.perf_counter() - t0, time.process_time() - c0
                result = {
                    "messages_per_s": round(n / wall),
                    "messages_per_cpu_s": round(n / cpu) if cpu else None,
                    "measured_messages": n,
                }
                print("FLOOR " + json.dumps(result), flush=True)
                os.kill(os.getpid(), signal.SIGTERM)
                return

    worker = faust.Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()


if __name__ == "__main__":
    if sys.argv[1:2] == ["floor"]:
        floor(int(sys.argv[2]), stock=sys.argv[3:4] == ["stock"])
