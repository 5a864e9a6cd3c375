"""Kafka plumbing shared by the processes: idempotent producers, topic administration from the
catalog, and the dead-letter writer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from marketpulse import metrics
from marketpulse.catalog import CATALOG
from marketpulse.codec import Codec, codec
from marketpulse.errors import BadMessage, ConfigError, TransientError
from marketpulse.settings import Settings

log = logging.getLogger(__name__)


def producer(settings: Settings, **overrides: Any) -> AIOKafkaProducer:
    """An idempotent producer (acks=all): a retry after a lost ack never duplicates a message."""
    opts: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "enable_idempotence": True,
        "acks": "all",
        "linger_ms": 5,
        "max_batch_size": 256 * 1024,
        "compression_type": None,
        "client_id": "marketpulse",
    }
    opts.update(overrides)
    return AIOKafkaProducer(**opts)


def admin(settings: Settings) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, client_id="mpx-admin")


async def create_topics(settings: Settings, partitions: int | None = None) -> list[str]:
    """Create every catalog topic that does not exist yet; returns the names created."""
    client = admin(settings)
    await client.start()
    try:
        existing = set(await client.list_topics())
        new = [
            NewTopic(
                name=settings.topic(t.id),
                num_partitions=partitions or t.partitions,
                replication_factor=t.replication_factor,
                topic_configs=t.config(),
            )
            for t in CATALOG.topics.values()
            if settings.topic(t.id) not in existing
        ]
        if new:
            # another process may create them between our list and create
            with contextlib.suppress(TopicAlreadyExistsError):
                await client.create_topics(new)
            await _until_led(client, [t.name for t in new])
        return [t.name for t in new]
    finally:
        await client.close()


async def _until_led(client: AIOKafkaAdminClient, names: list[str], timeout: float = 15) -> None:
    """Wait until every partition of `names` has a leader: a producer writing to a topic
    created a moment ago otherwise gets NotLeaderForPartition and retries (noisily)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        described = await client.describe_topics(names)
        if all(
            d.get("error_code", 0) == 0
            and d.get("partitions")
            and all(p.get("leader", -1) >= 0 for p in d["partitions"])
            for d in described
        ):
            return
        await asyncio.sleep(0.05)
    log.warning("topics created but not all led after %.0f s: %s", timeout, ", ".join(names))


async def describe_topics(settings: Settings) -> list[dict[str, Any]]:
    """Catalog topics with what the broker holds for each (partitions, end offsets)."""
    client = admin(settings)
    await client.start()
    try:
        names = {settings.topic(t.id): t for t in CATALOG.topics.values()}
        existing = set(await client.list_topics())
        described = {
            d["topic"]: d for d in await client.describe_topics([n for n in names if n in existing])
        }
    finally:
        await client.close()
    rows = []
    for name, spec in names.items():
        d = described.get(name)
        rows.append(
            {
                "id": spec.id,
                "name": name,
                "key": spec.key,
                "schema": spec.schema,
                "cleanup": spec.cleanup,
                "retention_ms": spec.retention_ms,
                "partitions_wanted": spec.partitions,
                "partitions": len(d["partitions"]) if d else None,
                "exists": d is not None,
            }
        )
    return rows


class DeadLetters:
    """Writes dead letters with their reason, and counts them. Never raises into the caller:
    a failing DLQ is logged, since losing the pipeline over a dead letter would be worse."""

    def __init__(
        self, settings: Settings, prod: AIOKafkaProducer, stage: str, cdc: Codec | None = None
    ) -> None:
        self._topic = settings.topic("dlq")
        self._prod = prod
        self._stage = stage
        self._codec = cdc or codec()

    async def send(
        self,
        source: str,
        err: BadMessage | Exception,
        *,
        partition: int = -1,
        offset: int = -1,
        key: bytes | None = None,
        payload: bytes | None = None,
    ) -> None:
        kind = err.kind if isinstance(err, BadMessage) else type(err).__name__
        metrics.DEAD_LETTERS.labels(self._stage, kind).inc()
        log.warning(
            "dead letter stage=%s source=%s[%d]@%d reason=%s: %s",
            self._stage,
            source,
            partition,
            offset,
            kind,
            err,
        )
        record = {
            "stage": self._stage,
            "source": source,
            "partition": partition,
            "offset": offset,
            "error_kind": kind,
            "error": str(err)[:2000],
            "key": key,
            "payload": payload,
            "ts_ms": int(time.time() * 1000),
        }
        try:
            await self._prod.send_and_wait(
                self._topic,
                self._codec.encode("dead_letter", record),
                key=source.encode(),
            )
        except Exception:
            log.exception("could not write dead letter for %s[%d]@%d", source, partition, offset)


Record = tuple[bytes | None, bytes | None]  # key, value


async def assign_all(
    consumer: AIOKafkaConsumer, settings: Settings, topic: str
) -> list[TopicPartition]:
    """Assign every partition of `topic` (counted by the admin client: a consumer's cached
    metadata may not know a topic created a moment ago)."""
    client = admin(settings)
    await client.start()
    try:
        described = await client.describe_topics([topic])
    finally:
        await client.close()
    ids = [p["partition"] for d in described if d["topic"] == topic for p in d["partitions"]]
    if not ids or any(d.get("error_code") for d in described):
        raise ConfigError(f"topic {topic} does not exist (marketpulse topics create)")
    parts = [TopicPartition(topic, p) for p in sorted(ids)]
    consumer.assign(parts)
    return parts


async def read_topic(
    settings: Settings, topic_id: str, timeout_s: float = 10.0, client_id: str = "mpx-reader"
) -> tuple[list[Record], dict[int, int]]:
    """Every record of a catalog topic up to its current end, in offset order per partition,
    and the end offsets by partition (where a follower picks up). No consumer group."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        enable_auto_commit=False,
        client_id=client_id,
    )
    try:
        await consumer.start()
    except Exception as exc:
        raise TransientError(f"cannot reach Kafka at {settings.kafka_bootstrap}: {exc}") from exc
    try:
        parts = await assign_all(consumer, settings, settings.topic(topic_id))
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        records: list[Record] = []
        async with asyncio.timeout(timeout_s):
            while [tp for tp in parts if await consumer.position(tp) < ends[tp]]:
                batch = await consumer.getmany(*parts, timeout_ms=200)
                for msgs in batch.values():
                    records += [(m.key, m.value) for m in msgs]
        return records, {tp.partition: ends[tp] for tp in parts}
    finally:
        await consumer.stop()
