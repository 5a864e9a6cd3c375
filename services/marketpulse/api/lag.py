"""Consumer-group lag from the broker: how many messages a group has not committed yet.

Used by the API's readiness (the sink group). Lag of a partition = its end offset minus the group's
committed offset, or minus its beginning offset when the group never committed there (everything
still present counts as unread)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError


async def group_lag(
    bootstrap: str, group: str, topics: Iterable[str], timeout: float = 2.0
) -> dict[TopicPartition, int]:
    """Lag per partition of `topics` for `group`; topics that do not exist are left out.

    Raises TimeoutError (or a Kafka error) when the broker does not answer within `timeout`."""
    return await asyncio.wait_for(_lag(bootstrap, group, list(topics)), timeout)


async def _lag(bootstrap: str, group: str, topics: list[str]) -> dict[TopicPartition, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="mpx-lag")
    # No group: this consumer only asks for offsets, it never joins or commits.
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, client_id="mpx-lag")
    await admin.start()
    try:
        await consumer.start()
        try:
            committed = await _committed(admin, group)
            existing = await consumer.topics()
            tps = [
                TopicPartition(topic, p)
                for topic in topics
                if topic in existing
                for p in sorted(consumer.partitions_for_topic(topic) or ())
            ]
            if not tps:
                return {}
            ends = await consumer.end_offsets(tps)
            starts = await consumer.beginning_offsets(tps)
        finally:
            await consumer.stop()
    finally:
        await admin.close()
    lag: dict[TopicPartition, int] = {}
    for tp in tps:
        meta = committed.get(tp)
        done = meta.offset if meta is not None and meta.offset >= 0 else starts[tp]
        lag[tp] = max(0, ends[tp] - done)
    return lag


async def _committed(admin: AIOKafkaAdminClient, group: str) -> dict[TopicPartition, Any]:
    # A fresh broker has no group coordinator until __consumer_offsets exists: that error is
    # retriable, and the caller's timeout bounds the retries.
    while True:
        try:
            return await admin.list_consumer_group_offsets(group)
        except KafkaError as exc:
            if not exc.retriable:
                raise
            await asyncio.sleep(0.1)
