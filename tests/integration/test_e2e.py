"""The spine end to end, on the real broker and the real ClickHouse engine: the mock venue's
injected opportunities, and only they, come out as signals with the expected edges and sizes, and
ClickHouse holds every produced tick exactly once."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from marketpulse.codec import codec
from marketpulse.collect import run as collect
from marketpulse.kafka import create_topics
from marketpulse.settings import Settings
from marketpulse.venues.mock import MockVenue, Opportunity
from marketpulse.warehouse import connect
from marketpulse.warehouse.sink import run as run_sink

pytestmark = pytest.mark.integration

SEED = 11
START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: a fixed event-time origin
DEADLINE_S = 120


@pytest.fixture
def settings(kafka_bootstrap: str, unique_name: str, tmp_path: Path) -> Settings:
    return Settings(
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=f"e2e{unique_name}.",
        worker_id=f"e2e-worker-{unique_name}",
        sink_group=f"e2e-sink-{unique_name}",
        worker_data_dir=tmp_path / "worker",
        worker_web_port=0,
        warehouse_url=f"chdb://{tmp_path / 'warehouse'}",
    )


@pytest.fixture
def worker(settings: Settings, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "MPX_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "MPX_TOPIC_PREFIX": settings.topic_prefix,
        "MPX_WORKER_ID": settings.worker_id,
        "MPX_WORKER_DATA_DIR": str(settings.worker_data_dir),
        "MPX_WORKER_WEB_PORT": "0",
    }
    log = (tmp_path / "worker.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "marketpulse", "worker"], env=env, stdout=log, stderr=log
    )
    yield proc
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


async def read_signals(settings: Settings, expected: int, worker: subprocess.Popen) -> list[dict]:
    """Signals until `expected` arrived, then a quiet second to catch any extra one."""
    consumer = AIOKafkaConsumer(
        settings.topic("signals"),
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    signals: list[dict] = []
    deadline = time.monotonic() + DEADLINE_S
    quiet_until = None
    try:
        while time.monotonic() < deadline:
            assert worker.poll() is None, "the worker died; see worker.log in the test's tmp_path"
            batch = await consumer.getmany(timeout_ms=200)
            for msgs in batch.values():
                signals += [codec().decode("signal", m.value) for m in msgs]
            if len(signals) >= expected:
                quiet_until = quiet_until or time.monotonic() + 3
                if time.monotonic() > quiet_until:
                    break
    finally:
        await consumer.stop()
    return signals


def expected_edge_bps(opp: Opportunity) -> float:
    cost = sum(opp.leg_prices) + opp.fees_per_share()
    return opp.expected_edge_per_share() / cost * 10_000


async def test_injected_opportunities_become_signals_and_ticks_land_once(
    settings: Settings, worker: subprocess.Popen[bytes]
) -> None:
    await create_topics(settings)
    venue = MockVenue(seed=SEED, start_ms=START_MS)
    n_updates = venue.n_updates_until_all_done() + 100
    truth = venue.opportunities(n_updates)
    assert len(truth) == 3

    warehouse = connect(settings)
    warehouse.migrate()
    stop_sink = asyncio.Event()
    sink = asyncio.create_task(run_sink(settings, stop_sink, warehouse))
    try:
        stats = await collect(
            settings, seed=SEED, rate=None, max_updates=n_updates, start_ms=START_MS
        )
        assert stats["ticks"] == n_updates

        signals = await read_signals(settings, len(truth), worker)
        # Exactly the injected opportunities: one signal each, nothing else.
        assert len(signals) == len(truth), [s["summary"] for s in signals]
        by_tokens = {tuple(sorted(leg["token_id"] for leg in s["legs"])): s for s in signals}
        for opp in truth:
            sig = by_tokens[tuple(sorted(opp.token_ids))]
            assert sig["rule_id"] == "complete_set"
            assert sig["size"] == pytest.approx(opp.depth)
            assert sig["edge_bps"] == pytest.approx(expected_edge_bps(opp), rel=1e-6)
            assert sig["ts_ms"] == opp.start_ms  # event time of the book that opened it
            assert all(leg["size"] == pytest.approx(opp.depth) for leg in sig["legs"])
            assert {leg["price"] for leg in sig["legs"]} == set(opp.leg_prices)
            assert sig["evidence"], "a signal carries the inputs that fired it"

        # ClickHouse: every produced tick exactly once (plain count: no duplicate was written).
        deadline = time.monotonic() + DEADLINE_S
        table = f"{settings.warehouse_database}.ticks"
        while time.monotonic() < deadline:
            rows = warehouse.query(f"SELECT count() AS n FROM {table}")[0]["n"]
            if rows >= n_updates:
                break
            await asyncio.sleep(0.3)
        got = warehouse.query(
            f"SELECT count() AS n, uniqExact(token_id, seq) AS u, min(seq) AS lo, "
            f"max(seq) AS hi FROM {table}"
        )[0]
        assert got == {"n": n_updates, "u": n_updates, "lo": 0, "hi": n_updates - 1}
        stored = warehouse.query(
            f"SELECT count() AS n FROM {settings.warehouse_database}.signals FINAL"
        )[0]["n"]
        deadline = time.monotonic() + 30
        while stored < len(truth) and time.monotonic() < deadline:
            await asyncio.sleep(0.3)
            stored = warehouse.query(
                f"SELECT count() AS n FROM {settings.warehouse_database}.signals FINAL"
            )[0]["n"]
        assert stored == len(truth)
    finally:
        stop_sink.set()
        await asyncio.wait_for(sink, 30)
        warehouse.close()
