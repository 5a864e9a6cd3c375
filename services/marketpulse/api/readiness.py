"""Readiness of the API: Kafka answers, ClickHouse answers, and the sink group keeps up.

Lag alone never makes the API unready until it passes `api_ready_max_lag`: a sink catching up
after a restart is normal, and readiness that flaps with load would take replicas out of a
load balancer for nothing."""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka.client import AIOKafkaClient
from pydantic import BaseModel, Field

from marketpulse import metrics
from marketpulse.api.lag import group_lag
from marketpulse.settings import Settings
from marketpulse.warehouse import Warehouse
from marketpulse.warehouse.sink import TABLES

log = logging.getLogger(__name__)

READY_TTL_S = 1.5
READY_TIMEOUT_S = 2.0


class Readiness(BaseModel):
    kafka: bool
    clickhouse: bool
    sink_group: str = Field(description="The consumer group whose lag is reported")
    sink_lag: int | None = Field(
        default=None, description="Messages the sink group has not committed; null if unknown"
    )
    sink_lag_limit: int = Field(description="Above this lag the API reports itself not ready")
    down: list[str] = Field(
        default_factory=list, description="Dependencies that did not answer, or 'sink_lag'"
    )


async def kafka_answers(bootstrap: str, timeout: float = READY_TIMEOUT_S) -> bool:
    """A metadata request to the bootstrap servers, bounded by `timeout`."""
    client = AIOKafkaClient(
        bootstrap_servers=bootstrap,
        client_id="mpx-api-ready",
        request_timeout_ms=int(timeout * 1000),
    )
    try:
        await asyncio.wait_for(client.bootstrap(), timeout)
        return bool(client.cluster.brokers())
    except Exception:
        return False
    finally:
        await client.close()


class ReadinessProbe:
    """Checks at most once per READY_TTL_S: a load balancer probing every replica often must
    not turn into a stream of broker connections."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._lock = asyncio.Lock()
        self._at = -1e9
        self._last: Readiness | None = None

    async def check(self, wh: Warehouse) -> Readiness:
        async with self._lock:
            if self._last is not None and time.monotonic() - self._at < READY_TTL_S:
                return self._last
            kafka, clickhouse = await asyncio.gather(
                kafka_answers(self._settings.kafka_bootstrap), self._ping(wh)
            )
            lag = await self._sink_lag() if kafka else None
            self._last = self._verdict(kafka, clickhouse, lag)
            self._at = time.monotonic()
            return self._last

    def _verdict(self, kafka: bool, clickhouse: bool, lag: int | None) -> Readiness:
        answers = {"kafka": kafka, "clickhouse": clickhouse}
        for name, ok in answers.items():
            metrics.READY.labels(name).set(1 if ok else 0)
        down = [name for name, ok in answers.items() if not ok]
        limit = self._settings.api_ready_max_lag
        if lag is not None and lag > limit:
            down.append("sink_lag")
        return Readiness(
            kafka=kafka,
            clickhouse=clickhouse,
            sink_group=self._settings.sink_group,
            sink_lag=lag,
            sink_lag_limit=limit,
            down=down,
        )

    async def _sink_lag(self) -> int | None:
        s = self._settings
        topics = [s.topic(tid) for tid in TABLES]
        try:
            per_partition = await group_lag(s.kafka_bootstrap, s.sink_group, topics)
        except Exception as exc:
            log.debug("sink lag unknown: %s", exc)
            return None
        for tp, n in per_partition.items():
            metrics.SINK_LAG.labels(s.sink_group, tp.topic, str(tp.partition)).set(n)
        return sum(per_partition.values())

    @staticmethod
    async def _ping(wh: Warehouse) -> bool:
        try:
            return await asyncio.wait_for(asyncio.to_thread(wh.ping), READY_TIMEOUT_S)
        except TimeoutError:
            return False
