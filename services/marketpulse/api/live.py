"""The live signal stream: Server-Sent Events tailing the signals topic.

Each client gets its own consumer without a group (nothing is committed, no rebalance touches
other clients) that starts at the end of every partition: a client sees signals emitted after
it connected; history is `GET /api/signals`. The number of open streams is capped because each
holds a broker connection."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from aiokafka import AIOKafkaConsumer
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import StreamingResponse

from marketpulse import metrics
from marketpulse.codec import codec
from marketpulse.errors import BadMessage
from marketpulse.settings import Settings

log = logging.getLogger(__name__)

router = APIRouter()

KEEPALIVE_S = 15.0
POLL_MS = 500
START_TIMEOUT_S = 5.0


class StreamSlots:
    """A counter of open streams with a cap (the event loop is single-threaded: no lock)."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.open = 0

    def acquire(self) -> bool:
        if self.open >= self.cap:
            return False
        self.open += 1
        metrics.API_STREAM_CLIENTS.set(self.open)
        return True

    def release(self) -> None:
        self.open -= 1
        metrics.API_STREAM_CLIENTS.set(self.open)


def matches(
    record: dict[str, Any], rule: str | None, level: str | None, market: str | None
) -> bool:
    """The stream's filters, with the same meaning as `GET /api/signals`."""
    return (
        (rule is None or record["rule_id"] == rule)
        and (level is None or record["level"] == level)
        and (market is None or market in record["market_ids"])
    )


def sse(data: dict[str, Any], *, event: str, event_id: str) -> str:
    """One Server-Sent Event; the JSON is one line, so one `data:` field suffices."""
    return f"event: {event}\nid: {event_id}\ndata: {json.dumps(data, sort_keys=True)}\n\n"


async def tail(settings: Settings) -> AIOKafkaConsumer:
    """A started consumer positioned at the current end of every signals partition."""
    topic = settings.topic("signals")
    # Subscribed without a group: the consumer takes every partition of the topic itself.
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="latest",
        client_id="mpx-api-stream",
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        while not consumer.assignment():  # the caller's timeout bounds this
            await asyncio.sleep(0.05)
        tps = sorted(consumer.assignment())
        await consumer.seek_to_end(*tps)
        # Resolve the positions now, so "ready" means "anything produced from here is seen".
        for tp in tps:
            await consumer.position(tp)
    except BaseException:
        await consumer.stop()
        raise
    return consumer


async def _events(
    request: Request,
    consumer: AIOKafkaConsumer,
    slots: StreamSlots,
    filters: dict[str, str | None],
) -> AsyncIterator[str]:
    cdc = codec()
    try:
        yield ": ready\n\n"
        quiet_since = time.monotonic()
        while not await request.is_disconnected():
            batch = await consumer.getmany(timeout_ms=POLL_MS)
            for messages in batch.values():
                for msg in messages:
                    try:
                        record = cdc.decode("signal", msg.value)
                    except BadMessage as err:
                        # The sink dead-letters it; a viewer just does not see it.
                        log.warning("stream skips %s@%d: %s", msg.topic, msg.offset, err)
                        continue
                    if matches(record, **filters):
                        quiet_since = time.monotonic()
                        yield sse(record, event="signal", event_id=record["signal_id"])
            if time.monotonic() - quiet_since >= KEEPALIVE_S:
                quiet_since = time.monotonic()
                yield ": keepalive\n\n"  # proxies close idle connections
    finally:
        slots.release()
        await consumer.stop()


@router.get(
    "/api/signals/stream",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "`event: signal`, `id: <signal_id>`, `data: <signal JSON>` per new "
            "signal; a `: ready` comment once the stream is positioned at the end of the topic.",
        },
        503: {"description": "Kafka unreachable, or too many open streams"},
    },
    tags=["signals"],
)
async def stream(
    request: Request,
    rule: Annotated[str | None, Query(max_length=100)] = None,
    level: Annotated[str | None, Query(max_length=10, description="P1 | P2 | P3")] = None,
    market: Annotated[str | None, Query(max_length=200)] = None,
) -> StreamingResponse:
    """Live stream of new signals (Server-Sent Events), optionally filtered."""
    slots: StreamSlots = request.app.state.streams
    if not slots.acquire():
        raise HTTPException(status_code=503, detail=f"at most {slots.cap} live streams at once")
    try:
        consumer = await asyncio.wait_for(tail(request.app.state.settings), START_TIMEOUT_S)
    except TimeoutError:
        slots.release()
        topic = request.app.state.settings.topic("signals")
        raise HTTPException(
            status_code=503, detail=f"no partition of {topic} within {START_TIMEOUT_S:.0f}s"
        ) from None
    except Exception as exc:
        slots.release()
        raise HTTPException(status_code=503, detail=f"cannot reach Kafka: {exc}") from None
    filters = {"rule": rule, "level": level, "market": market}
    return StreamingResponse(
        _events(request, consumer, slots, filters),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
