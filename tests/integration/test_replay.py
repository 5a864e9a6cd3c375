"""Rewinding consumer groups and backfilling what-if copies, on the real broker: the plan per
partition, each kind of target, refusal while the group is active, the stateful-group rules
(table reset by tombstones), and a backfill that keeps partitions, keys and timestamps."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import NewTopic

from marketpulse.errors import ConfigError
from marketpulse.kafka import admin, create_topics
from marketpulse.replay import backfill, execute, parse_target, plan, replay
from marketpulse.settings import Settings

pytestmark = pytest.mark.integration

T0 = 1_767_225_600_000
PER_PARTITION = 10


@pytest.fixture
async def settings(kafka_bootstrap: str, unique_name: str) -> Settings:
    s = Settings(kafka_bootstrap=kafka_bootstrap, topic_prefix=f"rp{unique_name}.")
    await create_topics(s)
    return s


@pytest.fixture
async def ticks(settings: Settings) -> str:
    """The ticks topic with PER_PARTITION messages in each of its 4 partitions, one second of
    timestamp apart: message i of a partition has timestamp T0 + i s."""
    topic = settings.topic("ticks")
    prod = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await prod.start()
    try:
        for i in range(PER_PARTITION):
            for p in range(4):
                await prod.send(
                    topic,
                    f"v{p}-{i}".encode(),
                    key=f"k{p}".encode(),
                    partition=p,
                    timestamp_ms=T0 + i * 1000,
                    headers=[("h", b"1")],
                )
        await prod.flush()
    finally:
        await prod.stop()
    return topic


async def consume_all(settings: Settings, group: str, topic: str) -> int:
    """A group member that reads `topic` to its end, commits, and leaves."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    n = 0
    try:
        while n < 4 * PER_PARTITION:
            batch = await consumer.getmany(timeout_ms=1000)
            n += sum(len(m) for m in batch.values())
        await consumer.commit()
    finally:
        await consumer.stop()
    return n


async def committed(settings: Settings, group: str) -> dict[tuple[str, int], int]:
    client = admin(settings)
    await client.start()
    try:
        offsets = await client.list_consumer_group_offsets(group)
    finally:
        await client.close()
    return {(tp.topic, tp.partition): m.offset for tp, m in offsets.items()}


@pytest.fixture
async def consumed(settings: Settings, ticks: str, unique_name: str) -> AsyncIterator[str]:
    group = f"rp-group-{unique_name}"
    assert await consume_all(settings, group, ticks) == 4 * PER_PARTITION
    yield group


def test_targets_parse() -> None:
    assert parse_target("earliest").kind == "earliest"
    assert parse_target("2026-01-01T00:00:05Z").ms == T0 + 5000
    assert parse_target("2026-01-01T00:00:05").ms == T0 + 5000  # naive is UTC
    assert parse_target(str(T0)).ms == T0
    off = parse_target("mpx.ticks.v1:2:7")
    assert (off.kind, off.tp, off.offset) == ("offset", TopicPartition("mpx.ticks.v1", 2), 7)
    with pytest.raises(ConfigError, match="expected earliest"):
        parse_target("yesterday")


async def test_earliest_is_planned_then_moved(
    settings: Settings, ticks: str, consumed: str
) -> None:
    dry = await plan(settings, consumed, "earliest")
    assert [(m.partition, m.current, m.target, m.to_reprocess) for m in dry.moves] == [
        (p, PER_PARTITION, 0, PER_PARTITION) for p in range(4)
    ]
    assert dry.to_reprocess == 40 and not dry.executed
    assert await committed(settings, consumed) == {(ticks, p): PER_PARTITION for p in range(4)}
    assert "dry run" in dry.table()

    await execute(settings, dry)
    assert await committed(settings, consumed) == {(ticks, p): 0 for p in range(4)}
    assert await consume_all(settings, consumed, ticks) == 40  # it really reads them again


async def test_a_time_moves_each_partition_to_its_first_message_at_or_after_it(
    settings: Settings, ticks: str, consumed: str
) -> None:
    moved = await replay(settings, consumed, "2026-01-01T00:00:06.500Z", execute_it=True)
    assert {m.target for m in moved.moves} == {7}  # timestamps T0+7 s onwards
    assert moved.to_reprocess == 4 * 3
    after_all = await plan(settings, consumed, "2030-01-01T00:00:00Z")
    assert {m.target for m in after_all.moves} == {PER_PARTITION}  # nothing later: the end


async def test_an_offset_moves_only_its_partition_and_latest_skips(
    settings: Settings, ticks: str, consumed: str
) -> None:
    await replay(settings, consumed, f"{ticks}:2:3", execute_it=True)
    assert await committed(settings, consumed) == {
        (ticks, 0): 10,
        (ticks, 1): 10,
        (ticks, 2): 3,
        (ticks, 3): 10,
    }
    await replay(settings, consumed, "latest", topics=["ticks"], execute_it=True)  # catalog id
    assert set((await committed(settings, consumed)).values()) == {PER_PARTITION}


async def test_refused_while_the_group_has_a_member(
    settings: Settings, ticks: str, consumed: str
) -> None:
    member = AIOKafkaConsumer(
        ticks,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=consumed,
        enable_auto_commit=False,
    )
    await member.start()
    try:
        await member.getmany(timeout_ms=2000)  # joined
        with pytest.raises(ConfigError, match="1 active member"):
            await replay(settings, consumed, "earliest", execute_it=True)
    finally:
        await member.stop()
    assert await committed(settings, consumed) == {(ticks, p): PER_PARTITION for p in range(4)}


async def test_unknown_groups_and_topics_are_clear_errors(settings: Settings) -> None:
    with pytest.raises(ConfigError, match="no committed offsets"):
        await plan(settings, "nobody-ever", "earliest")
    with pytest.raises(ConfigError, match="no such topic"):
        await plan(settings, "nobody-ever", "earliest", topics=["not.a.topic"])


async def test_a_stateful_group_replays_from_earliest_only_and_resets_its_tables(
    settings: Settings, ticks: str, unique_name: str
) -> None:
    group = f"rp-worker-{unique_name}"  # shaped like a Faust worker: tables and repartition
    changelog, repart = f"{group}-cs-books-changelog", f"{group}-by-event-repartition"
    never_committed = f"{group}-by-group-repartition"
    client = admin(settings)
    await client.start()
    try:
        await client.create_topics(
            [
                NewTopic(changelog, 2, 1, topic_configs={"cleanup.policy": "compact"}),
                NewTopic(repart, 4, 1),
                NewTopic(never_committed, 1, 1),
            ]
        )
    finally:
        await client.close()
    prod = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await prod.start()
    try:
        for key, p in [(b"a", 0), (b"b", 1), (b"a", 0), (b"c", 1)]:
            await prod.send(changelog, b"state", key=key, partition=p)
        for p in range(4):
            await prod.send(repart, b"m", key=b"e", partition=p)
        await prod.send(never_committed, b"m", key=b"e", partition=0)
        await prod.flush()
    finally:
        await prod.stop()
    assert await consume_all(settings, group, ticks) == 40
    mover = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=group)
    await mover.start()
    try:
        mover.assign([TopicPartition(repart, p) for p in range(4)])
        await mover.commit({TopicPartition(repart, p): 1 for p in range(4)})
    finally:
        await mover.stop()

    assert await live_keys(settings, changelog) == {b"a", b"b", b"c"}
    with pytest.raises(ConfigError, match="only be replayed from earliest"):
        await plan(settings, group, "2026-01-01T00:00:03Z")
    with pytest.raises(ConfigError, match="--reset-state"):
        await plan(settings, group, "earliest")

    done = await replay(settings, group, "earliest", execute_it=True, reset_state=True)
    assert done.reset_changelogs == [changelog] and done.tombstones == 3  # a, b, c
    offsets = await committed(settings, group)
    assert {o for (t, _), o in offsets.items() if t == ticks} == {0}
    assert {o for (t, _), o in offsets.items() if t == repart} == {1}  # its end: not re-read
    assert offsets[(never_committed, 0)] == 1  # also its end, though never committed before
    assert await live_keys(settings, changelog) == set()


async def live_keys(settings: Settings, topic: str) -> set[bytes]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    latest: dict[bytes, Any] = {}
    try:
        for _ in range(10):
            for msgs in (await consumer.getmany(timeout_ms=300)).values():
                latest.update({m.key: m.value for m in msgs})
    finally:
        await consumer.stop()
    return {k for k, v in latest.items() if v is not None}


async def test_backfill_copies_a_time_range_into_an_isolated_prefix(
    settings: Settings, ticks: str, unique_name: str
) -> None:
    prefix = f"whatif{unique_name}."
    out = await backfill(settings, ["ticks"], prefix, since_ms=T0 + 2000, until_ms=T0 + 5000)
    dest = prefix + ticks
    assert out == {"copied": {dest: 4 * 3}, "topic_prefix": prefix + settings.topic_prefix}
    consumer = AIOKafkaConsumer(
        dest,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    got = []
    try:
        while len(got) < 12:
            for msgs in (await asyncio.wait_for(consumer.getmany(timeout_ms=500), 10)).values():
                got += msgs
    finally:
        await consumer.stop()
    assert sorted((m.partition, m.key, m.value, m.timestamp) for m in got) == sorted(
        (p, f"k{p}".encode(), f"v{p}-{i}".encode(), T0 + i * 1000)
        for p in range(4)
        for i in (2, 3, 4)
    )
    assert all(m.headers == (("h", b"1"),) for m in got)
    with pytest.raises(ConfigError, match="to-prefix"):
        await backfill(settings, ["ticks"], "")
