"""The real Kafka broker used by tests and the demo: round trip, and restart/crash durability."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from marketpulse.broker import LocalBroker

pytestmark = pytest.mark.integration


async def _create_topic(bootstrap: str, topic: str) -> None:
    # The broker has auto.create.topics.enable=false: topics exist only if created explicitly.
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()


async def _list_topics(bootstrap: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return await admin.list_topics()
    finally:
        await admin.close()


async def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all")
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value)
    finally:
        await producer.stop()


async def _read_from_start(bootstrap: str, topic: str, count: int) -> list[bytes]:
    # Manual assignment, no group: no rebalance to wait for, so it stays fast.
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 0)])
        await consumer.seek_to_beginning()
        values: list[bytes] = []
        while len(values) < count:
            batch = await asyncio.wait_for(consumer.getmany(timeout_ms=1000), 30)
            values += [msg.value for msgs in batch.values() for msg in msgs if msg.value]
        return values
    finally:
        await consumer.stop()


async def _commit(bootstrap: str, group: str, tp: TopicPartition, offset: int | None) -> int | None:
    """Commit ``offset`` for ``group`` (if given); return the group's committed offset."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        consumer.assign([tp])
        if offset is not None:
            await consumer.commit({tp: offset})
        return await consumer.committed(tp)
    finally:
        await consumer.stop()


async def test_produce_and_consume_round_trip(kafka_bootstrap: str, unique_name: str) -> None:
    topic = f"mpx-test-broker-{unique_name}"
    await _create_topic(kafka_bootstrap, topic)

    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap, enable_idempotence=True, acks="all"
    )
    await producer.start()
    try:
        sent = await producer.send_and_wait(
            topic, b'{"price": 0.42}', key=b"market-1", headers=[("source", b"test")]
        )
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=f"mpx-test-group-{unique_name}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        received = await asyncio.wait_for(consumer.getone(), timeout=30)
        await consumer.commit()
    finally:
        await consumer.stop()

    assert (received.topic, received.partition, received.offset) == (
        sent.topic,
        sent.partition,
        sent.offset,
    )
    assert received.key == b"market-1"
    assert received.value == b'{"price": 0.42}'
    assert list(received.headers) == [("source", b"test")]


async def test_local_broker_keeps_topics_messages_and_offsets_across_restarts(
    tmp_path: Path, unique_name: str
) -> None:
    topic = f"mpx-test-restart-{unique_name}"
    group = f"mpx-test-restart-{unique_name}"
    tp = TopicPartition(topic, 0)
    values = [b"m0", b"m1", b"m2"]
    # start()/stop() block on the JVM: keep them off the event loop.
    broker = LocalBroker(tmp_path / "kafka")
    try:
        bootstrap = await asyncio.to_thread(broker.start)
        await _create_topic(bootstrap, topic)
        await _produce(bootstrap, topic, values)
        assert await _commit(bootstrap, group, tp, 2) == 2

        # Clean stop, then restart on the same dir: same address, same data, same offsets.
        await asyncio.to_thread(broker.stop)
        assert (broker.log_dirs / ".kafka_cleanshutdown").exists()
        assert await asyncio.to_thread(broker.start) == bootstrap
        assert topic in await _list_topics(bootstrap)
        assert await _read_from_start(bootstrap, topic, 3) == values
        assert await _commit(bootstrap, group, tp, None) == 2

        # Crash (SIGKILL) and restart: acknowledged (acks=all) messages are still there.
        await _produce(bootstrap, topic, [b"m3"])
        await asyncio.to_thread(broker.kill)
        assert await asyncio.to_thread(broker.start) == bootstrap
        assert await _read_from_start(bootstrap, topic, 4) == [*values, b"m3"]
    finally:
        await asyncio.to_thread(broker.close)
