"""Mutating routes, every one behind the API key (`auth.require_api_key`): rule uploads to the
compacted rules topic and review decisions to the review topic. The API never writes the
warehouse itself: it publishes to Kafka, the sink loads what it published, and every other
consumer (workers for rules) sees the same change."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any, Literal

from aiokafka import AIOKafkaProducer
from fastapi import APIRouter, Depends, HTTPException, Path, Request
from pydantic import BaseModel, ConfigDict, Field

from marketpulse.api.auth import require_api_key
from marketpulse.api.querying import WarehouseDep
from marketpulse.codec import codec
from marketpulse.kafka import producer
from marketpulse.rules import RuleDef
from marketpulse.settings import Settings

router = APIRouter(dependencies=[Depends(require_api_key)])

PUBLISH_TIMEOUT_S = 10.0


class Publisher:
    """One idempotent producer per app, started on first use (a read-only API never needs a
    broker connection for it) and stopped with the app."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def publish(self, topic_id: str, schema: str, key: str, record: dict[str, Any]) -> Any:
        """Send one record to a catalog topic and wait for the broker's ack."""
        value = codec().encode(schema, record)
        prod = await self._started()
        return await asyncio.wait_for(
            prod.send_and_wait(self._settings.topic(topic_id), value, key=key.encode()),
            PUBLISH_TIMEOUT_S,
        )

    async def _started(self) -> AIOKafkaProducer:
        async with self._lock:
            if self._producer is None:
                prod = producer(self._settings, client_id="mpx-api")
                await asyncio.wait_for(prod.start(), PUBLISH_TIMEOUT_S)
                self._producer = prod
            return self._producer

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None


class Published(BaseModel):
    topic: str
    partition: int
    offset: int
    key: str


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Literal["open", "approved", "rejected", "escalated"]
    decided_by: str = Field(min_length=1, max_length=100)
    note: str = Field("", max_length=2000)


def _publisher(request: Request) -> Publisher:
    return request.app.state.publisher  # type: ignore[no-any-return]


PublisherDep = Annotated[Publisher, Depends(_publisher)]


async def _send(pub: Publisher, topic_id: str, schema: str, key: str, rec: dict) -> Published:
    try:
        meta = await pub.publish(topic_id, schema, key, rec)
    except Exception as exc:
        raise HTTPException(status_code=503, detail=f"Kafka did not take it: {exc}") from None
    return Published(topic=meta.topic, partition=meta.partition, offset=meta.offset, key=key)


_AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or wrong X-API-Key"},
    503: {"description": "Kafka unreachable"},
}


@router.post(
    "/api/rules", response_model=Published, status_code=202, responses=_AUTH_ERRORS, tags=["rules"]
)
async def upload_rule(rule: RuleDef, pub: PublisherDep) -> Published:
    """Publish a rule definition to the compacted rules topic (latest per rule id wins). The
    body is validated like the rules YAML: known type, typed params, ordered levels; any
    problem is a 422 naming the field."""
    return await _send(pub, "rules", "rule", rule.rule_id, rule.to_record())


@router.post(
    "/api/review/{signal_id}",
    response_model=Published,
    status_code=202,
    responses={**_AUTH_ERRORS, 404: {"description": "No such signal"}},
    tags=["review"],
)
async def decide(
    signal_id: Annotated[str, Path(min_length=1, max_length=200)],
    decision: Decision,
    wh: WarehouseDep,
    pub: PublisherDep,
) -> Published:
    """Record a review decision on a signal (its review item is keyed by the signal id)."""
    rows = await asyncio.to_thread(
        wh.query,
        "SELECT rule_id, subject FROM signals WHERE signal_id = {id:String} LIMIT 1",
        {"id": signal_id},
    )
    if not rows:
        raise HTTPException(status_code=404, detail=f"no signal {signal_id!r}")
    record = {
        "review_id": signal_id,
        "signal_id": signal_id,
        "rule_id": rows[0]["rule_id"],
        "subject": rows[0]["subject"],
        "status": decision.status,
        "decided_by": decision.decided_by,
        "note": decision.note,
        "ts_ms": int(time.time() * 1000),
    }
    return await _send(pub, "review", "review_item", signal_id, record)
