"""Candidate groups through review on the real broker: suggested pairs become open review items
(never signals); approving one publishes the cross_market rule one version up carrying it, and
a worker started afterwards compares the pair and signals its mispricing; re-suggesting never
reopens a decided item; rejecting records the decision only."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from test_worker import Worker, book, market, produce, read_all, workers  # noqa: F401

from marketpulse import group_review
from marketpulse.candidates import suggest
from marketpulse.codec import codec
from marketpulse.grouping import registry
from marketpulse.kafka import create_topics
from marketpulse.rulebook import current
from marketpulse.rules import load_rules
from marketpulse.settings import Settings

pytestmark = pytest.mark.integration

NO_FEE = {"model": "none", "rate": 0.0, "exponent": 1.0}
DEADLINE_S = 60.0


def binary(mid: str, question: str) -> dict[str, Any]:
    return {
        **market(mid, mid.upper(), 1, fee=NO_FEE),
        "question": question,
        "neg_risk": False,
        "end_ms": 1_762_300_000_000,
    }


async def test_a_reviewed_candidate_becomes_a_group_the_worker_signals_on(
    kafka_bootstrap: str,
    unique_name: str,
    tmp_path: Path,
    workers: list[Worker],  # noqa: F811
) -> None:
    settings = Settings(kafka_bootstrap=kafka_bootstrap, topic_prefix=f"t{unique_name}.")
    await create_topics(settings)
    markets = [
        binary("pm:win", "Will Zohran Mamdani win the 2025 NYC mayoral election?"),
        binary("pm:not", "Will Zohran Mamdani not win the 2025 New York City mayoral election?"),
        binary("pm:cuomo", "Will Andrew Cuomo win the 2025 NYC mayoral election?"),
        binary("pm:sliwa", "Will Curtis Sliwa win the 2025 NYC mayoral election?"),
        binary("pm:sliwa2", "Will Curtis Sliwa win the 2025 New York City mayoral election?"),
    ]
    cdc = codec()
    await produce(
        settings,
        [
            (settings.topic("markets"), m["market_id"].encode(), cdc.encode("market", m))
            for m in markets
        ],
    )
    from_topic = await group_review.read_markets(settings)
    assert sorted(m["market_id"] for m in from_topic) == sorted(m["market_id"] for m in markets)
    found, _ = suggest(from_topic)
    assert sorted(c.spec() for c in found) == [
        "complement:pm:win=yes,pm:not=yes",
        "identity:pm:sliwa=yes,pm:sliwa2=yes",
    ]
    mamdani, sliwa = sorted(found, key=lambda c: c.relation)

    # 1. Open review items, once each; nothing on the signals topic.
    assert await group_review.publish_candidates(settings, found) == (2, 0)
    assert await group_review.publish_candidates(settings, found) == (0, 2)
    items = await group_review.review_items(settings)
    assert {i["status"] for i in items.values()} == {"open"}
    assert items[f"group:{mamdani.candidate_id}"]["subject"] == mamdani.spec()

    # 2. Approve one, reject the other.
    group, rule = await group_review.approve(
        settings, mamdani.candidate_id, by="alice", resolution_source="AP race call"
    )
    await group_review.reject(settings, sliwa.candidate_id, by="bob", note="different sources")
    base = load_rules()["cross_market"]
    assert rule.version == base.version + 1
    book_in_force, _ = await current(settings, load_rules())
    in_force = registry(list(book_in_force.rules.values()))
    assert list(in_force) == [mamdani.candidate_id] and in_force[group.group_id].approved
    items = await group_review.review_items(settings)
    decided = {(i["subject"], i["status"], i["decided_by"]) for i in items.values()}
    assert decided == {(mamdani.spec(), "approved", "alice"), (sliwa.spec(), "rejected", "bob")}
    assert await group_review.publish_candidates(settings, found) == (0, 2)  # still decided

    # 3. A worker reads the rules topic at start: the pair is compared. "Mamdani wins" YES at
    #    0.40 plus "Mamdani does not win" YES at 0.45 pays 1 either way: 50 sets at 0.85.
    await produce(
        settings,
        [
            (settings.topic("books"), b["event_key"].encode(), cdc.encode("book", b))
            for b in (
                book("PM:WIN", "pm:win:y", [(0.40, 100)], [], 1_000, 1),
                book("PM:NOT", "pm:not:y", [(0.45, 50)], [], 1_001, 1),
            )
        ],
    )
    worker = Worker(settings, f"w{unique_name}", tmp_path / "worker.log")
    workers.append(worker)
    deadline = time.monotonic() + DEADLINE_S
    while not (signals := await read_all(settings, "signals")):
        assert worker.proc.poll() is None, worker.tail()
        assert time.monotonic() < deadline, worker.tail()
        await asyncio.sleep(0.3)
    (signal,) = signals
    assert (signal["rule_id"], signal["subject"]) == ("cross_market", mamdani.candidate_id)
    assert signal["rule_version"] == base.version + 1
    assert signal["size"] == pytest.approx(50)
    assert {leg["token_id"] for leg in signal["legs"]} == {"pm:win:y", "pm:not:y"}
    assert worker.stop() == 0, worker.tail()
