"""The execution stage on the real broker: the mock venue's injected opportunities, through the
Faust worker's signals, become filled paper positions (and PnL rows in ClickHouse, settled at
resolution); a `marketpulse execute` process killed mid-run loses and duplicates nothing; bad
input is dead-lettered with its reason; commands from the API's topic drive semi_auto."""

from __future__ import annotations

import asyncio
import json
import os
import signal as os_signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client import REGISTRY

from marketpulse.catalog import CATALOG
from marketpulse.codec import codec
from marketpulse.collect import run as collect
from marketpulse.execution.config import parse_config
from marketpulse.execution.ids import intent_id_for as iid
from marketpulse.execution.service import Execution
from marketpulse.kafka import create_topics
from marketpulse.settings import Settings
from marketpulse.venues.mock import MockVenue
from marketpulse.warehouse import connect
from marketpulse.warehouse.sink import run as run_sink

pytestmark = pytest.mark.integration

T0 = 1_767_225_600_000
DEADLINE_S = 60.0
FEE = {"model": "polymarket", "rate": 0.02, "exponent": 1.0}
# Generous limits: these tests are about the pipeline, the unit tests cover every limit.
CONFIG = {
    "approval": "auto",
    "sizing": {"method": "fixed", "fixed_notional": 50.0},
    "limits": {
        "max_order_notional": 1e6,
        "max_daily_notional": 1e9,
        "max_open_intents": 10_000,
        "max_open_positions": 10_000,
        "max_total_exposure": 1e9,
        "max_market_exposure": 1e9,
        "max_drawdown": 1e9,
    },
    "books": {"ring": 100_000},
}


@pytest.fixture
def settings(kafka_bootstrap: str, unique_name: str, tmp_path: Path) -> Settings:
    limits = tmp_path / "limits.yaml"
    limits.write_text(json.dumps(CONFIG))  # JSON is YAML
    return Settings(
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=f"ex{unique_name}.",
        execution_group=f"ex-{unique_name}",
        execution_offset_reset="earliest",
        execution_file=limits,
        worker_id=f"ex-worker-{unique_name}",
        sink_group=f"ex-sink-{unique_name}",
        worker_data_dir=tmp_path / "worker",
        worker_web_port=0,
        warehouse_url=f"chdb://{tmp_path / 'warehouse'}",
    )


def env_of(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "MPX_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "MPX_TOPIC_PREFIX": settings.topic_prefix,
        "MPX_WORKER_ID": settings.worker_id,
        "MPX_WORKER_DATA_DIR": str(settings.worker_data_dir),
        "MPX_WORKER_WEB_PORT": "0",
        "MPX_EXECUTION_GROUP": settings.execution_group,
        "MPX_EXECUTION_OFFSET_RESET": "earliest",
        "MPX_EXECUTION_FILE": str(settings.execution_file),
    }


def spawn(settings: Settings, log: Path, *args: str) -> subprocess.Popen[bytes]:
    out = log.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "marketpulse", *args], env=env_of(settings), stdout=out, stderr=out
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------------------- Kafka helpers


async def produce(settings: Settings, items: list[tuple[str, str, str, dict[str, Any]]]) -> None:
    """(topic id, key, schema, record) each, in order."""
    prod = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, enable_idempotence=True, acks="all"
    )
    await prod.start()
    try:
        for topic_id, key, schema, rec in items:
            value = codec().encode(schema, rec)
            await prod.send_and_wait(settings.topic(topic_id), value, key=key.encode())
    finally:
        await prod.stop()


async def read_all(settings: Settings, topic_id: str) -> list[dict[str, Any]]:
    """Every record of a catalog topic, decoded, from the beginning to the current end."""
    spec = CATALOG.topic(topic_id)
    tps = [TopicPartition(settings.topic(topic_id), p) for p in range(spec.partitions)]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        records: list[dict[str, Any]] = []
        while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
            for msgs in (await consumer.getmany(*tps, timeout_ms=1_000)).values():
                records += [codec().decode(spec.schema, m.value) for m in msgs]
        return records
    finally:
        await consumer.stop()


async def poll_until(
    what: str,
    check: Callable[[], Awaitable[bool]],
    alive: Callable[[], None] = lambda: None,
    timeout: float = DEADLINE_S,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive()
        if await check():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def latest(records: list[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for rec in records:
        out[rec[key]] = rec
    return out


def lifecycles(events: list[dict[str, Any]]) -> dict[str, list[tuple[int, str]]]:
    out: dict[str, list[tuple[int, str]]] = {}
    for e in events:
        out.setdefault(e["intent_id"], []).append((e["seq"], e["status"]))
    return out


# ---------------------------------------------------------------------------- crafted inputs


def market(mid: str, event: str, **over: Any) -> dict[str, Any]:
    rec = {
        "market_id": mid,
        "event_id": event,
        "venue": "polymarket",
        "question": f"{mid}?",
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
    rec.update(over)
    return rec


def book(mid: str, event: str, token: str, ts: int, ask: float) -> dict[str, Any]:
    return {
        "event_key": event,
        "market_id": mid,
        "token_id": token,
        "venue": "polymarket",
        "ts_ms": ts,
        "recv_ms": ts,
        "seq": ts - T0,
        "asks": [{"price": ask, "size": 100_000.0}],
        "bids": [{"price": round(ask - 0.01, 2), "size": 100_000.0}],
    }


def crafted_signal(i: int, mid: str, event: str) -> dict[str, Any]:
    ts = T0 + 1_000 + i * 10
    return {
        "signal_id": f"crafted-{i:03d}",
        "rule_id": "complete_set",
        "rule_version": 1,
        "level": "P1",
        "subject": mid,
        "event_key": event,
        "market_ids": [mid],
        "ts_ms": ts,
        "trigger_recv_ms": ts,
        "edge_bps": 400.0,
        "edge_score": 2.0,
        "size": 1000.0,
        "notional": 0.0,
        "legs": [
            {"market_id": mid, "token_id": f"{mid}:y", "side": "BUY", "price": 0.45, "size": 1e3},
            {"market_id": mid, "token_id": f"{mid}:n", "side": "BUY", "price": 0.50, "size": 1e3},
        ],
        "evidence": {},
        "summary": "",
    }


EVENTS = (("pm:m1", "pm:E1"), ("pm:m2", "pm:E2"))


async def seed_markets_and_books(settings: Settings) -> None:
    items: list[tuple[str, str, str, dict[str, Any]]] = []
    for mid, event in EVENTS:
        items.append(("markets", mid, "market", market(mid, event)))
        items.append(("books", event, "book", book(mid, event, f"{mid}:y", T0, 0.45)))
        items.append(("books", event, "book", book(mid, event, f"{mid}:n", T0, 0.50)))
    await produce(settings, items)


def crafted_signals(n: int) -> list[tuple[str, str, str, dict[str, Any]]]:
    out = []
    for i in range(n):
        mid, event = EVENTS[i % 2]
        sig = crafted_signal(i, mid, event)
        out.append(("signals", sig["subject"], "signal", sig))
    return out


# ---------------------------------------------------------------------------- tests


async def test_a_crash_mid_run_loses_and_duplicates_nothing(
    settings: Settings, tmp_path: Path
) -> None:
    """SIGKILL the process while signals stream in, restart it: every signal ends as exactly
    one intent with exactly one event per transition, and the positions hold every fill once."""
    await create_topics(settings)
    await seed_markets_and_books(settings)
    n = 80
    signals = crafted_signals(n)
    log = tmp_path / "execute.log"
    first = spawn(settings, log, "execute")
    try:

        async def paced() -> None:  # 40 signals/s: the crash lands in the middle
            for item in signals:
                await produce(settings, [item])
                await asyncio.sleep(0.025)

        feeding = asyncio.create_task(paced())

        async def some_intents() -> bool:
            return len(await read_all(settings, "intents")) >= 30

        await poll_until("the first intents", some_intents, lambda: _alive(first, log))
        first.send_signal(os_signal.SIGKILL)  # a crash: nothing flushed, nothing committed
        first.wait(10)
        before = len(await read_all(settings, "intents"))
        await feeding
    finally:
        stop(first)
    second = spawn(settings, log, "execute")
    try:

        async def all_filled() -> bool:
            done = lifecycles(await read_all(settings, "intents"))
            return len(done) == n and all(ev[-1][1] == "filled" for ev in done.values())

        await poll_until("every signal filled", all_filled, lambda: _alive(second, log))
    finally:
        stop(second)

    events = await read_all(settings, "intents")
    by_intent = lifecycles(events)
    assert set(by_intent) == {iid(f"crafted-{i:03d}") for i in range(n)}
    for intent, seqs in by_intent.items():
        assert seqs == [(0, "suggested"), (1, "approved"), (2, "filled")], (intent, seqs)
    assert 0 < before < len(events) == 3 * n, "the crash really happened mid-run"

    fills: dict[str, float] = {}
    for e in events:
        for f in e["fills"]:
            fills[f["token_id"]] = fills.get(f["token_id"], 0.0) + f["size"]
    positions = latest(await read_all(settings, "positions"), "position_id")
    assert {p["token_id"]: p["size"] for p in positions.values()} == pytest.approx(fills)
    shares = 52.63  # 50 / 0.95 per intent, floored to the lot
    assert fills["pm:m1:y"] == pytest.approx(shares * n / 2)


def _alive(proc: subprocess.Popen[bytes], log: Path) -> None:
    if proc.poll() is not None:
        raise AssertionError(f"execute died ({proc.returncode}):\n{log.read_text()[-3000:]}")


async def test_semi_auto_commands_and_bad_input_on_the_real_broker(settings: Settings) -> None:
    """semi_auto: a signal waits; an approve command fills it, a reject and a kill act; a
    garbage signal and a broken create command are dead-lettered with their reason."""
    await create_topics(settings)
    await seed_markets_and_books(settings)
    config = parse_config({**CONFIG, "approval": "semi_auto"})
    execution = Execution(settings, config)
    stop_ev = asyncio.Event()
    task = asyncio.create_task(execution.run(stop_ev))
    try:
        await poll_until("ready", _true(lambda: execution.ready), _task_alive(task))
        await produce(settings, crafted_signals(3))
        prod = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
        await prod.start()
        await prod.send_and_wait(settings.topic("signals"), b"\x00garbage", key=b"x")
        await prod.stop()

        async def three_suggested() -> bool:
            return len(lifecycles(await read_all(settings, "intents"))) == 3

        await poll_until("three suggestions", three_suggested, _task_alive(task))
        now = T0 + 2_000

        def cmd(n: int, action: str, iid: str = "", **over: Any) -> tuple[str, str, str, dict]:
            rec = {
                "command_id": f"c{n}",
                "action": action,
                "intent_id": iid,
                "actor": "api:t",
                "ts_ms": now + n,
                **over,
            }
            return ("intent_commands", iid or "risk", "intent_command", rec)

        await produce(
            settings,
            [
                cmd(1, "approve", iid("crafted-000")),
                cmd(2, "reject", iid("crafted-001"), reason="not today"),
                cmd(3, "kill", reason="drill"),
                cmd(4, "approve", iid("crafted-002")),
                cmd(5, "create", signal_json="{not json"),
                cmd(6, "resume"),
            ],
        )

        async def decided() -> bool:
            return len(await read_all(settings, "intents")) >= 3 + 2 + 1 + 1

        await poll_until("the decisions", decided, _task_alive(task))
        final = {k: v[-1][1] for k, v in lifecycles(await read_all(settings, "intents")).items()}
        assert final == {
            iid("crafted-000"): "filled",
            iid("crafted-001"): "rejected",
            iid("crafted-002"): "rejected",  # approved while the kill switch was on
        }
        events = latest(await read_all(settings, "intents"), "intent_id")
        assert events[iid("crafted-002")]["reason"].startswith("kill_switch 1 > 0 (drill)")
        assert events[iid("crafted-001")]["actor"] == "api:t"

        async def two_dead_letters() -> bool:
            return len(await read_all(settings, "dlq")) >= 2

        await poll_until("dead letters", two_dead_letters, _task_alive(task))
        dead = await read_all(settings, "dlq")
        assert {d["stage"] for d in dead} == {"execute"}
        assert {d["source"] for d in dead} == {
            settings.topic("signals"),
            settings.topic("intent_commands"),
        }
        assert any(d["error_kind"] == "bad_command" for d in dead)
        assert not execution.stage.kill.on  # resumed
        ready = execution.readiness()  # what /readyz answers
        assert ready["ok"] and ready["intents_known"] == 3 and not ready["kill_switch"]
        failed = REGISTRY.get_sample_value(
            "mpx_execution_checks_failed_total", {"check": "kill_switch"}
        )
        assert failed is not None and failed >= 1
        dead = REGISTRY.get_sample_value(
            "mpx_dead_letters_total", {"stage": "execute", "reason": "bad_command"}
        )
        assert dead is not None and dead >= 1
    finally:
        stop_ev.set()
        await asyncio.wait_for(task, 30)


def _true(pred: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return pred()

    return check


def _task_alive(task: asyncio.Task[None]) -> Callable[[], None]:
    def alive() -> None:
        if task.done():
            task.result()  # raises what killed it
            raise AssertionError("the execution stage stopped")

    return alive


@pytest.fixture
def worker(settings: Settings, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    proc = spawn(settings, tmp_path / "worker.log", "worker")
    yield proc
    stop(proc)


async def test_injected_opportunities_become_filled_paper_positions_and_pnl(
    settings: Settings, worker: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    """Mock venue → collector → Kafka → Faust worker → signals → execution (auto) → intents
    and positions → sink → ClickHouse; then the markets resolve and the PnL is realised."""
    await create_topics(settings)
    seed = 11
    venue = MockVenue(seed=seed, start_ms=T0)
    n_updates = venue.n_updates_until_all_done() + 100
    truth = venue.opportunities(n_updates)
    warehouse = connect(settings)
    warehouse.migrate()
    stop_ev = asyncio.Event()
    execution = Execution(settings)
    tasks = [
        asyncio.create_task(run_sink(settings, stop_ev, warehouse)),
        asyncio.create_task(execution.run(stop_ev)),
    ]
    try:
        await poll_until("ready", _true(lambda: execution.ready), _task_alive(tasks[1]))
        await collect(settings, seed=seed, rate=None, max_updates=n_updates, start_ms=T0)

        async def every_opportunity_filled() -> bool:
            done = lifecycles(await read_all(settings, "intents"))
            return len(done) >= len(truth) and all(v[-1][1] == "filled" for v in done.values())

        def alive() -> None:
            assert worker.poll() is None, "the worker died; see worker.log"
            _task_alive(tasks[1])()

        # the Faust worker's first start (group, changelogs) takes long on a busy machine
        await poll_until("filled intents", every_opportunity_filled, alive, timeout=150)
        intents = latest(await read_all(settings, "intents"), "intent_id")
        assert len(intents) == len(truth)
        by_tokens = {tuple(sorted(f["token_id"] for f in i["fills"])): i for i in intents.values()}
        for opp in truth:
            intent = by_tokens[tuple(sorted(opp.token_ids))]
            price_of = dict(zip(opp.token_ids, opp.leg_prices, strict=True))
            shares = intent["legs"][0]["size"]
            assert 0 < shares <= opp.depth
            assert {leg["size"] for leg in intent["legs"]} == {shares}  # equal share counts
            for f in intent["fills"]:
                assert f["price"] == pytest.approx(price_of[f["token_id"]])  # the injected ask
                assert f["size"] == shares and f["levels"] == 1
                assert f["fee"] == pytest.approx(
                    shares
                    * opp.fee["rate"]
                    * (f["price"] * (1 - f["price"])) ** opp.fee["exponent"],
                    abs=1e-6,
                )
            assert all(c["passed"] for c in intent["checks"])

        # resolve every market of the opportunities: the first leg's token wins its market,
        # every other leg's market resolves to an outcome outside the set.
        markets = {m["market_id"]: m for m in venue.markets()}
        resolved = []
        for opp in truth:
            for mid in dict.fromkeys(opp.market_ids):
                m = dict(markets[mid])
                tokens = [o["token_id"] for o in m["outcomes"]]
                first = opp.token_ids[0]
                winner = (
                    first if first in tokens else next(t for t in tokens if t not in opp.token_ids)
                )
                m.update(status="resolved", winning_token_id=winner, updated_ms=T0 + 10**7)
                resolved.append(("markets", mid, "market", m))
        await produce(settings, resolved)

        async def settled() -> bool:
            pos = latest(await read_all(settings, "positions"), "position_id")
            return bool(pos) and all(p["status"] == "settled" for p in pos.values())

        await poll_until("settled positions", settled, alive)
        positions = latest(await read_all(settings, "positions"), "position_id")
        for opp in truth:
            intent = by_tokens[tuple(sorted(opp.token_ids))]
            shares = intent["legs"][0]["size"]
            paid = sum(f["price"] * f["size"] + f["fee"] for f in intent["fills"])
            pnl = sum(positions[f"complete_set|{t}"]["realised_pnl"] for t in opp.token_ids)
            assert pnl == pytest.approx(shares * 1.0 - paid, abs=1e-5)  # one set pays 1

        table = f"{settings.warehouse_database}.positions"

        async def in_clickhouse() -> bool:
            rows = warehouse.query(
                f"SELECT count() AS n FROM {table} FINAL WHERE status = 'settled'"
            )
            return rows[0]["n"] == len(positions)

        await poll_until("positions in ClickHouse", in_clickhouse, alive)
        total = warehouse.query(f"SELECT sum(realised_pnl) AS pnl FROM {table} FINAL")[0]["pnl"]
        assert total == pytest.approx(sum(p["realised_pnl"] for p in positions.values()), abs=1e-5)
        assert total > 0  # the injected opportunities were real arbitrage
    finally:
        stop_ev.set()
        for t in tasks:
            await asyncio.wait_for(t, 30)
        warehouse.close()


def timeline_ask(token_side: str, ts: int) -> float:
    """The crafted books' ask of a token at event time ts (a new book every 400 ms)."""
    k = min(4, (ts - T0) // 400)
    return round((0.44 if token_side == "y" else 0.49) + 0.01 * (k % 3), 2)


async def test_a_replay_produces_the_same_fills(settings: Settings) -> None:
    """Books that change while signals arrive; each fill takes the book of its signal's event
    time. A copy of the inputs (`backfill`) replayed by a fresh stage fills identically."""
    await create_topics(settings)
    items: list[tuple[str, str, str, dict[str, Any]]] = []
    for mid, event in EVENTS:
        items.append(("markets", mid, "market", market(mid, event)))
    timeline: list[tuple[int, int, tuple[str, str, str, dict[str, Any]]]] = []
    for mid, event in EVENTS:
        for k in range(5):
            ts = T0 + k * 400
            for side in ("y", "n"):
                rec = book(mid, event, f"{mid}:{side}", ts, timeline_ask(side, ts))
                timeline.append((ts, 0, ("books", event, "book", rec)))
    n = 30
    for i in range(n):
        mid, event = EVENTS[i % 2]
        sig = crafted_signal(i, mid, event)
        sig["ts_ms"] = T0 + 100 + i * 53
        sig["legs"][0]["price"], sig["legs"][1]["price"] = 0.47, 0.52
        timeline.append((sig["ts_ms"], 1, ("signals", mid, "signal", sig)))
    timeline.sort(key=lambda t: (t[0], t[1]))

    async def run_until_filled(s: Settings) -> dict[str, list[tuple[str, float]]]:
        stop_ev = asyncio.Event()
        execution = Execution(s)
        task = asyncio.create_task(execution.run(stop_ev))
        try:
            await poll_until("ready", _true(lambda: execution.ready), _task_alive(task))
            if s is settings:  # live: inputs arrive while the stage runs
                await produce(s, items + [t[2] for t in timeline])

            async def filled() -> bool:
                done = lifecycles(await read_all(s, "intents"))
                return len(done) == n and all(v[-1][1] == "filled" for v in done.values())

            await poll_until("filled", filled, _task_alive(task))
        finally:
            stop_ev.set()
            await asyncio.wait_for(task, 30)
        final = latest(await read_all(s, "intents"), "intent_id")
        return {
            iid: sorted((f["token_id"], f["price"]) for f in rec["fills"])
            for iid, rec in final.items()
        }

    live = await run_until_filled(settings)
    for i in range(n):
        mid, _ = EVENTS[i % 2]
        ts = T0 + 100 + i * 53
        assert live[iid(f"crafted-{i:03d}")] == sorted(
            [(f"{mid}:n", timeline_ask("n", ts)), (f"{mid}:y", timeline_ask("y", ts))]
        ), f"signal {i} at {ts - T0} ms filled against another book"

    from marketpulse.replay import backfill

    copy = await backfill(settings, ["markets", "books", "signals"], to_prefix="rp.")
    replayed = settings.model_copy(
        update={
            "topic_prefix": copy["topic_prefix"],
            "execution_group": "rp-" + settings.execution_group,
        }
    )
    assert await run_until_filled(replayed) == live
