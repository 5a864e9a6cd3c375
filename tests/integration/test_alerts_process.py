"""The alerts process on the real broker, delivering to a real HTTP server on 127.0.0.1 that
stands in for Slack: Block Kit content, no second alert after a restart and a rewind, nothing
lost through an outage (and nothing committed during it), dead letters with the reason, and the
test route behind the API key."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr

from marketpulse import metrics
from marketpulse.alerts import routes as alert_routes
from marketpulse.alerts.service import Alerter
from marketpulse.codec import codec
from marketpulse.kafka import admin, create_topics
from marketpulse.replay import replay
from marketpulse.settings import Settings
from slack_standin import OK, Reply, SlackStandIn

pytestmark = pytest.mark.integration

DEADLINE_S = 30.0
T0 = 1_767_225_600_000


@pytest.fixture
def slack() -> Iterator[SlackStandIn]:
    with SlackStandIn() as server:
        yield server


@pytest.fixture
async def settings(
    kafka_bootstrap: str, unique_name: str, slack: SlackStandIn, tmp_path: Path
) -> Settings:
    routes = tmp_path / "one-by-one.yaml"
    routes.write_text("channels: {slack: {type: slack}}\nroutes: [{channels: [slack]}]\n")
    s = Settings(
        alerts_routes_file=routes,  # no cooldown, no digest: one message per signal
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=f"al{unique_name}.",
        alerts_group=f"alerts-{unique_name}",
        alerts_webhooks={"slack": SecretStr(slack.url)},
        alerts_offset_reset="earliest",
        alerts_timeout_s=1.0,
        alerts_backoff_s=0.05,
        alerts_backoff_max_s=0.3,
        alerts_give_up_s=20.0,
        grafana_url="http://grafana.test",
    )
    await create_topics(s)
    return s


def make_signal(i: int, **over: Any) -> dict[str, Any]:
    now = int(time.time() * 1000)
    return {
        "signal_id": f"sig-{i:04d}",
        "rule_id": "complete_set",
        "rule_version": 1,
        "level": "P1" if i % 2 else "P2",
        "subject": f"mk:ev-{i:03d}",
        "event_key": f"mk:ev-{i:03d}",
        "market_ids": [f"mk:ev-{i:03d}-m0"],
        "ts_ms": T0 + i * 1000,
        "trigger_recv_ms": now,
        "edge_bps": 100.0 + i,
        "edge_score": 1.5,
        "size": 50.0,
        "notional": 47.0,
        "legs": [
            {
                "market_id": f"mk:ev-{i:03d}-m0",
                "token_id": f"t{i}y",
                "side": "BUY",
                "price": 0.47,
                "size": 50.0,
            },
        ],
        "evidence": {"direction": "buy", "set": "binary"},
        "summary": f"signal number {i}",
        **over,
    }


async def produce(settings: Settings, values: list[tuple[bytes, bytes | None]]) -> None:
    prod = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, enable_idempotence=True)
    await prod.start()
    try:
        for key, value in values:
            await prod.send_and_wait(settings.topic("signals"), value, key=key)
    finally:
        await prod.stop()


def encoded(*signals: dict[str, Any]) -> list[tuple[bytes, bytes | None]]:
    return [(s["subject"].encode(), codec().encode("signal", s)) for s in signals]


async def wait_for(
    predicate: Callable[[], bool], what: str, deadline_s: float = DEADLINE_S
) -> None:
    deadline = time.monotonic() + deadline_s
    while not predicate():
        for proc in Running.live:
            proc.assert_alive()
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def committed(settings: Settings) -> int:
    client = admin(settings)
    await client.start()
    try:
        offsets = await client.list_consumer_group_offsets(settings.alerts_group)
    finally:
        await client.close()
    return sum(
        max(0, m.offset) for tp, m in offsets.items() if tp.topic == settings.topic("signals")
    )


class Running:
    """One alerts process (its own Alerter, state and consumer), stopped on exit."""

    live: ClassVar[list[Running]] = []  # waits fail fast when one of these dies

    def __init__(self, settings: Settings) -> None:
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(Alerter(settings).run(self.stop))
        Running.live.append(self)

    async def close(self) -> None:
        self.stop.set()
        Running.live.remove(self)
        await asyncio.wait_for(self.task, 30)

    def assert_alive(self) -> None:
        if self.task.done():
            self.task.result()
            raise AssertionError("the alerts process ended by itself")


@pytest.fixture
async def alerts_process(settings: Settings) -> AsyncIterator[Callable[[], Running]]:
    started: list[Running] = []

    def start() -> Running:
        started.append(Running(settings))
        return started[-1]

    yield start
    for proc in started:
        if not proc.task.done():
            await proc.close()


def ids_sent(slack: SlackStandIn) -> list[str]:
    """Signal ids of the messages Slack accepted (from the context block)."""
    out = []
    for payload in slack.payloads():
        context = payload["blocks"][-1]["elements"][0]["text"]
        out.append(context.split("`")[1])
    return out


async def test_block_kit_once_each_even_after_a_restart_and_a_rewind(
    settings: Settings, slack: SlackStandIn, alerts_process: Callable[[], Running]
) -> None:
    await produce(settings, encoded(*(make_signal(i) for i in range(3))))
    first = alerts_process()
    await wait_for(lambda: len(slack.payloads()) == 3, "three alerts")
    await wait_for_committed(settings, 3)
    await first.close()

    payload = next(p for p in slack.payloads() if "sig-0001" in str(p))
    assert (
        payload["text"] == "[P1] complete_set mk:ev-001: edge 101.0 bps, size 50, notional $47.00"
    )
    blocks = str(payload["blocks"])
    assert "http://grafana.test/d/mpx-market?var-market=mk%3Aev-001-m0" in blocks
    assert "BUY 50 x `t1y` @ 0.47" in blocks and "signal number 1" in blocks

    # A new process, rewound to the start: it re-reads all three and sends none of them.
    plan = await replay(settings, settings.alerts_group, "earliest", execute_it=True)
    assert plan.to_reprocess == 3 and await committed(settings) == 0
    seen_before = metrics.ALERTS_DEDUPLICATED.labels("slack", "seen")._value.get()
    second = alerts_process()
    await wait_for_committed(settings, 3, second)
    assert sorted(ids_sent(slack)) == ["sig-0000", "sig-0001", "sig-0002"]
    assert metrics.ALERTS_DEDUPLICATED.labels("slack", "seen")._value.get() == seen_before + 3
    # ...while a genuinely new signal still goes out, once.
    await produce(settings, encoded(make_signal(7)))
    await wait_for(lambda: len(slack.payloads()) == 4, "the new alert")
    await wait_for_committed(settings, 4, second)
    assert sorted(ids_sent(slack)) == ["sig-0000", "sig-0001", "sig-0002", "sig-0007"]


async def wait_for_committed(settings: Settings, n: int, proc: Running | None = None) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while (got := await committed(settings)) < n:
        if proc is not None:
            proc.assert_alive()
        assert time.monotonic() < deadline, f"committed {got} of {n}"
        await asyncio.sleep(0.1)


async def test_nothing_is_lost_or_committed_while_slack_is_down(
    settings: Settings, slack: SlackStandIn, alerts_process: Callable[[], Running]
) -> None:
    slack.default = Reply(500)
    slack.script(Reply(429, retry_after=0.2))
    await produce(settings, encoded(*(make_signal(i) for i in range(5))))
    proc = alerts_process()
    await wait_for(lambda: len(slack.received) >= 8, "several failed attempts")
    proc.assert_alive()
    assert await committed(settings) == 0, "an offset was committed before its delivery"
    assert slack.payloads() == []

    slack.default = OK  # Slack comes back
    await wait_for(lambda: len(slack.payloads()) == 5, "every alert after the outage")
    await wait_for_committed(settings, 5, proc)
    assert sorted(ids_sent(slack)) == [f"sig-{i:04d}" for i in range(5)]  # each exactly once
    assert metrics.ALERTS_RETRIED.labels("slack", "http_500")._value.get() >= 6


async def read_dead_letters(settings: Settings, n: int) -> list[dict[str, Any]]:
    consumer = AIOKafkaConsumer(
        settings.topic("dlq"),
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + DEADLINE_S
    try:
        while len(out) < n and time.monotonic() < deadline:
            for msgs in (await consumer.getmany(timeout_ms=200)).values():
                out += [codec().decode("dead_letter", m.value) for m in msgs]
    finally:
        await consumer.stop()
    return out


async def test_given_up_and_undecodable_signals_are_dead_letters_with_the_reason(
    settings: Settings, slack: SlackStandIn, alerts_process: Callable[[], Running]
) -> None:
    slack.script(Reply(404))  # e.g. a revoked webhook: retrying cannot help
    rejected, fine = make_signal(1), make_signal(3)
    same_partition = rejected["subject"].encode()
    await produce(
        settings,
        [
            (same_partition, codec().encode("signal", rejected)),
            (same_partition, b"garbage"),
            (same_partition, codec().encode("signal", {**fine, "subject": rejected["subject"]})),
        ],
    )
    proc = alerts_process()
    dead = await read_dead_letters(settings, 2)
    kinds = sorted((d["stage"], d["error_kind"], d["offset"]) for d in dead)
    assert kinds == [("alerts", "bad_magic", 1), ("alerts", "http_404", 0)]
    http = next(d for d in dead if d["error_kind"] == "http_404")
    assert http["source"] == settings.topic("signals") and "channel slack" in http["error"]
    assert http["payload"] == codec().encode("signal", rejected)
    await wait_for(lambda: len(slack.payloads()) == 1, "the good signal")
    await wait_for_committed(settings, 3, proc)  # given up on counts as done


def test_the_test_route_needs_the_api_key_and_sends(
    settings: Settings, slack: SlackStandIn
) -> None:
    app = FastAPI()
    app.state.settings = settings.model_copy(update={"api_key": SecretStr("k-123")})
    app.include_router(alert_routes.router)
    with TestClient(app) as client:
        assert client.post("/api/alerts/test").status_code == 401
        assert client.post("/api/alerts/test", headers={"X-API-Key": "nope"}).status_code == 401
        answer = client.post("/api/alerts/test", headers={"X-API-Key": "k-123"})
        assert answer.status_code == 200, answer.text
        assert answer.json() == {
            "slack": {"ok": True, "attempts": 1, "reason": "", "dry_run": False}
        }
        bad = client.post(
            "/api/alerts/test", headers={"X-API-Key": "k-123"}, json={"channels": ["nope"]}
        )
        assert bad.status_code == 422 and "unknown channel" in bad.text
    assert "MarketPulse test alert" in str(slack.payloads())


async def test_the_replay_route_plans_and_refuses_an_active_group(
    settings: Settings, alerts_process: Callable[[], Running], slack: SlackStandIn
) -> None:
    await produce(settings, encoded(make_signal(1)))
    proc = alerts_process()
    await wait_for_committed(settings, 1, proc)
    app = FastAPI()
    app.state.settings = settings.model_copy(update={"api_key": SecretStr("k-123")})
    app.include_router(alert_routes.router)
    body = {"group": settings.alerts_group, "to": "earliest"}
    key = {"X-API-Key": "k-123"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        assert (await client.post("/api/admin/replay", json=body)).status_code == 401
        plan = (await client.post("/api/admin/replay", json=body, headers=key)).json()
        assert plan["to_reprocess"] == 1 and plan["executed"] is False
        assert {(m["current"], m["target"]) for m in plan["moves"] if m["current"]} == {(1, 0)}
        refused = await client.post(
            "/api/admin/replay", json={**body, "execute": True}, headers=key
        )
        assert refused.status_code == 409 and "active member" in refused.text
    assert await committed(settings) == 1


async def test_a_burst_becomes_one_digest_and_is_remembered_per_signal(
    settings: Settings, slack: SlackStandIn, tmp_path: Path
) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        "channels: {slack: {type: slack}}\n"
        "routes: [{channels: [slack], digest: {min_signals: 3}}]\n"
    )
    settings = settings.model_copy(update={"alerts_routes_file": routes})
    burst = [make_signal(i) for i in range(4)]
    # One key: one partition, so the whole burst arrives in one poll.
    await produce(settings, [(b"k", codec().encode("signal", s)) for s in burst])
    proc = Running(settings)
    try:
        await wait_for_committed(settings, 4, proc)
    finally:
        await proc.close()
    [digest] = slack.payloads()
    assert digest["text"] == "4 complete_set signals, best edge 103.0 bps"
    assert all(f"mk:ev-{i:03d}" in str(digest["blocks"]) for i in range(4))

    await replay(settings, settings.alerts_group, "earliest", execute_it=True)
    proc = Running(settings)
    try:
        await wait_for_committed(settings, 4, proc)
    finally:
        await proc.close()
    assert len(slack.payloads()) == 1  # each member is remembered: no second digest


async def test_a_stop_mid_retry_commits_nothing_and_the_restart_delivers_once(
    settings: Settings, slack: SlackStandIn
) -> None:
    slack.default = Reply(503)
    await produce(settings, encoded(make_signal(5)))
    proc = Running(settings)
    await wait_for(lambda: len(slack.received) >= 2, "failed attempts")
    started = time.monotonic()
    await proc.close()  # while the delivery waits for its next retry
    assert time.monotonic() - started < 5
    assert await committed(settings) == 0

    slack.default = OK
    proc = Running(settings)
    try:
        await wait_for_committed(settings, 1, proc)
    finally:
        await proc.close()
    assert ids_sent(slack) == ["sig-0005"]
