"""The full rule catalog on the real broker: injected cases for every rule through the worker
process yield exactly the expected signals; a fresh worker over the same offsets re-emits the
very same ids; a rule published at runtime is applied without a restart (and names its new
version), while an invalid one is rejected and the valid version stays in force."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from test_worker import Worker, produce, read_all, wait_caught_up, workers  # noqa: F401

from marketpulse.codec import codec
from marketpulse.kafka import create_topics
from marketpulse.rulebook import current, publish
from marketpulse.rules import RuleDef, load_rules
from marketpulse.settings import Settings
from marketpulse.venues.rule_cases import cases, groups_yaml, rules_yaml, trigger_of
from marketpulse.worker.app import group_topic, repartition_topic

pytestmark = pytest.mark.integration

DEADLINE_S = 90.0


def inputs(settings: Settings, worker_id: str) -> list[str]:
    s = settings.model_copy(update={"worker_id": worker_id})
    return [settings.topic(t) for t in ("markets", "books", "trades")] + [
        repartition_topic(s),
        group_topic(s),
    ]


async def wait_for(settings: Settings, n: int, worker: Worker) -> list[dict[str, Any]]:
    started = time.monotonic()
    while True:
        got = await read_all(settings, "signals")
        if len(got) >= n:
            return got
        assert worker.proc.poll() is None, f"worker exited early:\n{worker.tail()}"
        assert time.monotonic() - started < DEADLINE_S, f"{len(got)}/{n} signals:\n{worker.tail()}"
        await asyncio.sleep(0.3)


def key(sig: dict[str, Any]) -> tuple[str, str, str]:
    return sig["rule_id"], sig["subject"], trigger_of(sig)


async def test_every_rule_fires_exactly_once_and_a_replay_repeats_the_ids(
    kafka_bootstrap: str,
    unique_name: str,
    tmp_path: Path,
    workers: list[Worker],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = Settings(kafka_bootstrap=kafka_bootstrap, topic_prefix=f"t{unique_name}.")
    await create_topics(settings)
    (tmp_path / "groups.yaml").write_text(groups_yaml())
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(rules_yaml(str(tmp_path / "groups.yaml")))
    monkeypatch.setenv("MPX_RULES_FILE", str(rules_file))  # the worker child inherits it
    c, cdc = cases(), codec()
    await produce(
        settings,
        [
            (settings.topic("markets"), m["market_id"].encode(), cdc.encode("market", m))
            for m in c.markets
        ]
        + [
            (settings.topic(topic), r["event_key"].encode(), cdc.encode(schema, r))
            for topic, schema, records in (
                ("books", "book", c.books),
                ("trades", "trade", c.trades),
            )
            for r in records
        ],
    )

    # 1. Exactly one signal per injected case, each naming its rule version.
    first = Worker(settings, f"w{unique_name}", tmp_path / "first.log")
    workers.append(first)
    signals = await wait_for(settings, len(c.expected), first)
    await wait_caught_up(settings, f"w{unique_name}", inputs(settings, f"w{unique_name}"), first)
    signals = await read_all(settings, "signals")
    assert sorted(map(key, signals)) == sorted(c.expected), first.tail()
    assert all(s["rule_version"] == 1 and s["evidence"] for s in signals)
    assert first.stop() == 0, first.tail()

    # 2. A fresh worker id (own group, own tables) over the same offsets: the same ids.
    replay = Worker(settings, f"r{unique_name}", tmp_path / "replay.log")
    workers.append(replay)
    both = await wait_for(settings, 2 * len(signals), replay)
    await wait_caught_up(settings, f"r{unique_name}", inputs(settings, f"r{unique_name}"), replay)
    both = await read_all(settings, "signals")
    ids = Counter(s["signal_id"] for s in both)
    assert set(ids.values()) == {2} and len(ids) == len(signals), replay.tail()
    by_id = {s["signal_id"]: s for s in signals}
    for s in both:  # same edges and sizes too, not only ids
        assert (s["edge_bps"], s["size"], s["legs"]) == (
            by_id[s["signal_id"]]["edge_bps"],
            by_id[s["signal_id"]]["size"],
            by_id[s["signal_id"]]["legs"],
        )

    # 3. Runtime config: whale v2 (lower threshold) applies without a restart; an invalid
    #    v3 is rejected and v2 stays in force.
    whale_v1 = next(r for r in _load(rules_file) if r.rule_id == "whale")
    v2 = whale_v1.model_copy(
        update={"version": 2, "params": {**whale_v1.params, "min_notional": 400.0}}
    )
    await publish(settings, {"whale": RuleDef.model_validate(v2.model_dump())})
    bad = v2.to_record() | {"version": 3, "params_json": json.dumps({"min_notional": -1})}
    await produce(settings, [(settings.topic("rules"), b"whale", cdc.encode("rule", bad))])
    trade = {
        **c.trades[-1],
        "trade_id": "late",
        "ts_ms": c.trades[-1]["ts_ms"] + 10,
        "size": 1_000.0,
        "wallet": None,
    }
    deadline = time.monotonic() + DEADLINE_S
    n = len(both)
    while True:  # the worker picks the rules up asynchronously: resend until it answers
        await produce(settings, [(settings.topic("trades"), b"pm:WH", cdc.encode("trade", trade))])
        got = await read_all(settings, "signals")
        late = [s for s in got[n:] if s["rule_id"] == "whale"]
        if late:
            break
        assert time.monotonic() < deadline, replay.tail()
        trade = {**trade, "trade_id": f"late{time.monotonic_ns()}", "ts_ms": trade["ts_ms"] + 1}
        await asyncio.sleep(0.5)
    assert {s["rule_version"] for s in late} == {2}, replay.tail()
    in_force, _ = await current(settings, load_rules(rules_file))  # what `rules list` shows
    assert in_force.rules["whale"].version == 2
    assert "rule whale rejected: invalid definition" in replay.log.read_text()
    assert "params.min_notional" in replay.log.read_text()
    assert replay.stop() == 0, replay.tail()


def _load(path: Path) -> list[RuleDef]:
    return list(load_rules(path).values())
