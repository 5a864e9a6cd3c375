"""Replays are safe end to end, on the real broker and the real ClickHouse engine: run the whole
pipeline (mock collector with a fixed seed and start, worker subprocess, sink on chDB, alerts to a
Slack stand-in), stop it, rewind every group to the start with `marketpulse.replay`, run it
again, and compare: the worker re-emits the very same signal ids, the warehouse counts do not
change, and no alert is sent twice."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from aiokafka import AIOKafkaConsumer
from pydantic import SecretStr

from marketpulse.alerts.service import Alerter
from marketpulse.codec import codec
from marketpulse.collect import run as collect
from marketpulse.kafka import admin, create_topics
from marketpulse.replay import replay
from marketpulse.settings import Settings
from marketpulse.venues.mock import MockVenue
from marketpulse.warehouse import Warehouse, connect, sink
from slack_standin import SlackStandIn

pytestmark = pytest.mark.integration

SEED = 11
START_MS = 1_767_225_600_000
DEADLINE_S = 120.0
ROUTES = "channels: {slack: {type: slack}}\nroutes: [{channels: [slack]}]\n"


@pytest.fixture
def slack() -> Iterator[SlackStandIn]:
    with SlackStandIn() as server:
        yield server


@pytest.fixture
def settings(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path, slack: SlackStandIn
) -> Settings:
    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTES)  # no cooldown, no digest: one alert per signal
    return Settings(
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=f"re{unique_name}.",
        worker_id=f"re-worker-{unique_name}",
        sink_group=f"re-sink-{unique_name}",
        sink_batch_ms=200,
        alerts_group=f"re-alerts-{unique_name}",
        alerts_routes_file=routes,
        alerts_webhooks={"slack": SecretStr(slack.url)},
        alerts_offset_reset="earliest",
        alerts_backoff_s=0.05,
        worker_data_dir=tmp_path / "worker",
        worker_web_port=0,
        warehouse_url=f"chdb://{tmp_path / 'warehouse'}",
    )


class Pipeline:
    """Worker (child process), sink and alerts (tasks of this process) of one run."""

    def __init__(self, settings: Settings, warehouse: Warehouse, log: IO[bytes]) -> None:
        env = {
            **os.environ,
            "MPX_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "MPX_TOPIC_PREFIX": settings.topic_prefix,
            "MPX_WORKER_ID": settings.worker_id,
            "MPX_WORKER_DATA_DIR": str(settings.worker_data_dir),
            "MPX_WORKER_WEB_PORT": "0",
        }
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "marketpulse", "worker"], env=env, stdout=log, stderr=log
        )
        self.stop = asyncio.Event()
        self.sink = asyncio.create_task(sink.run(settings, self.stop, warehouse))
        self.alerts = asyncio.create_task(Alerter(settings).run(self.stop))

    def check(self) -> None:
        assert self.worker.poll() is None, "the worker died: see worker.log in tmp_path"
        for task in (self.sink, self.alerts):
            if task.done():
                task.result()
                raise AssertionError("a consumer ended by itself")

    async def close(self) -> None:
        self.worker.terminate()
        try:
            await asyncio.to_thread(self.worker.wait, 30)
        except subprocess.TimeoutExpired:
            self.worker.kill()
        self.stop.set()
        await asyncio.wait_for(asyncio.gather(self.sink, self.alerts), 30)


async def read_signals(settings: Settings, expected: int, check: Callable[[], None]) -> list[str]:
    """Signal ids of the whole topic, once `expected` arrived and 3 quiet seconds passed."""
    consumer = AIOKafkaConsumer(
        settings.topic("signals"),
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    ids: list[str] = []
    deadline, quiet_until = time.monotonic() + DEADLINE_S, None
    try:
        while time.monotonic() < deadline:
            check()
            for msgs in (await consumer.getmany(timeout_ms=200)).values():
                ids += [codec().decode("signal", m.value)["signal_id"] for m in msgs]
            if len(ids) >= expected:
                quiet_until = quiet_until or time.monotonic() + 3
                if time.monotonic() > quiet_until:
                    break
    finally:
        await consumer.stop()
    return ids


async def caught_up(settings: Settings, group: str) -> bool:
    """Every partition the group committed is committed at its end."""
    client = admin(settings)
    await client.start()
    try:
        offsets = await client.list_consumer_group_offsets(group)
    finally:
        await client.close()
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(list(offsets))
    finally:
        await consumer.stop()
    return bool(offsets) and all(offsets[tp].offset >= ends[tp] for tp in offsets)


async def wait_caught_up(settings: Settings, group: str, check: Callable[[], None]) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not await caught_up(settings, group):
        check()
        assert time.monotonic() < deadline, f"group {group} did not catch up"
        await asyncio.sleep(0.3)


def counts(warehouse: Warehouse, settings: Settings) -> dict[str, int]:
    db = settings.warehouse_database
    return {
        t.name: warehouse.query(f"SELECT count() AS n FROM {db}.{t.name} FINAL")[0]["n"]
        for t in sink.TABLES.values()
    }


async def test_rewinding_every_group_changes_nothing_downstream(
    settings: Settings, slack: SlackStandIn, tmp_path: Path
) -> None:
    await create_topics(settings)
    venue = MockVenue(seed=SEED, start_ms=START_MS)
    n_updates = venue.n_updates_until_all_done() + 100
    n_truth = len(venue.opportunities(n_updates))
    warehouse = connect(settings)
    warehouse.migrate()
    log = (tmp_path / "worker.log").open("wb")
    try:
        # ---- first run
        run = Pipeline(settings, warehouse, log)
        try:
            await collect(settings, seed=SEED, rate=None, max_updates=n_updates, start_ms=START_MS)
            first = await read_signals(settings, n_truth, run.check)
            assert len(first) == n_truth
            for group in (settings.sink_group, settings.alerts_group):
                await wait_caught_up(settings, group, run.check)
        finally:
            await run.close()
        before = counts(warehouse, settings)
        assert before["signals"] == n_truth and before["ticks"] == n_updates
        assert len(slack.payloads()) == n_truth

        # ---- rewind every group to the start (the worker's tables too)
        plans = {
            settings.worker_id: await replay(
                settings, settings.worker_id, "earliest", execute_it=True, reset_state=True
            ),
            settings.sink_group: await replay(
                settings, settings.sink_group, "earliest", execute_it=True
            ),
            settings.alerts_group: await replay(
                settings, settings.alerts_group, "earliest", execute_it=True
            ),
        }
        assert plans[settings.worker_id].tombstones > 0  # its tables held state
        assert plans[settings.sink_group].to_reprocess >= n_updates
        assert plans[settings.alerts_group].to_reprocess == n_truth

        # ---- second run over the same input
        run = Pipeline(settings, warehouse, log)
        try:
            both = await read_signals(settings, 2 * n_truth, run.check)
            for group in (settings.sink_group, settings.alerts_group):
                await wait_caught_up(settings, group, run.check)
        finally:
            await run.close()
    finally:
        log.close()
        after = counts(warehouse, settings)
        warehouse.close()

    again = both[len(first) :]
    assert sorted(again) == sorted(first), "the replay re-emitted different signal ids"
    assert after == before, "a replay changed the warehouse"
    assert len(slack.payloads()) == n_truth, "a replay sent an alert twice"
    assert sorted(_sent_ids(slack)) == sorted(first)


def _sent_ids(slack: SlackStandIn) -> list[str]:
    out: list[Any] = []
    for payload in slack.payloads():
        out.append(payload["blocks"][-1]["elements"][0]["text"].split("`")[1])
    return out
