"""Raw venue frames into Kafka: the ``FramePipeline`` every real venue connection (and a replay)
delivers to, the JSONL recording format, and the health of those connections.

The pipeline is venue-agnostic: each venue brings a ``Normalizer`` (``venues/base.py``), created
on the venue's first frame from ``NORMALIZERS``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from marketpulse import kafka, metrics
from marketpulse.catalog import CATALOG
from marketpulse.codec import codec
from marketpulse.errors import BadMessage
from marketpulse.settings import Settings
from marketpulse.venues.base import Frame, Normalizer, Out

log = logging.getLogger(__name__)

# Connections seen by this process: (venue, shard) -> last receive time (epoch ms; 0 = none yet).
_LAST_SEEN: dict[tuple[str, str], int] = {}


def note_shard(venue: str, shard: str, recv_ms: int = 0) -> None:
    """Register a connection (so one that never receives anything is still reported quiet), or
    record that it just received a frame."""
    if recv_ms or (venue, shard) not in _LAST_SEEN:
        _LAST_SEEN[venue, shard] = recv_ms
    if recv_ms:
        metrics.COLLECTOR_LAST_MESSAGE.labels(venue, shard).set(recv_ms / 1000)


def forget_shard(venue: str, shard: str) -> None:
    """A connection closed on purpose (unsubscribed shard): no longer expected to speak."""
    _LAST_SEEN.pop((venue, shard), None)


def collector_health(quiet_s: float = 60.0, now_ms: int | None = None) -> dict[str, Any]:
    """Every connection of this process with its last message time; ``ok`` is false when one
    has been silent for ``quiet_s`` seconds (what ``/readyz`` should report)."""
    now_ms = now_ms if now_ms is not None else time.time_ns() // 1_000_000
    shards = []
    for (venue, shard), last in sorted(_LAST_SEEN.items()):
        age = None if not last else (now_ms - last) / 1000
        quiet = age is None or age > quiet_s
        shards.append(
            {"venue": venue, "shard": shard, "last_ms": last or None, "age_s": age, "quiet": quiet}
        )
    return {"ok": not any(s["quiet"] for s in shards), "quiet_s": quiet_s, "shards": shards}


def frame_to_json(frame: Frame) -> str:
    """One line of a recording: the payload as text, or base64 when it is not valid UTF-8."""
    line: dict[str, Any] = {
        "venue": frame.venue,
        "channel": frame.channel,
        "conn_id": frame.conn_id,
        "recv_ms": frame.recv_ms,
    }
    try:
        line["payload"] = frame.payload.decode()
    except UnicodeDecodeError:
        line["payload_b64"] = base64.b64encode(frame.payload).decode("ascii")
    return json.dumps(line, ensure_ascii=False)


def _polymarket_normalizer(settings: Settings) -> Normalizer:
    from marketpulse.venues.polymarket.normalize import PolymarketNormalizer

    return PolymarketNormalizer(depth=settings.collector_book_depth)


def _kalshi_normalizer(settings: Settings) -> Normalizer:
    from marketpulse.venues.kalshi import KalshiNormalizer

    return KalshiNormalizer(depth=settings.collector_book_depth)


# Created on a venue's first frame, so a replay of one venue never imports the other.
NORMALIZERS: dict[str, Callable[[Settings], Normalizer]] = {
    "polymarket": _polymarket_normalizer,
    "kalshi": _kalshi_normalizer,
}


class FramePipeline:
    """The FrameSink every real venue connection delivers to.

    Per frame: optionally record it (raw topic and/or a JSONL file), give it to its venue's
    normalizer, produce every record with the idempotent producer (keyed as the normalizer says:
    market id for markets, event key for books/ticks/trades). A frame the normalizer rejects, or
    whose records do not encode, becomes a dead letter with the raw bytes and the reason, counted
    in COLLECTOR_REJECTS; the stream goes on. Sends are not awaited one by one (that would cost a
    broker round trip per frame); a failed send is counted and logged, and ``flush()`` waits for
    everything outstanding.
    """

    def __init__(
        self,
        settings: Settings,
        prod: AIOKafkaProducer,
        *,
        record: Path | None = None,
        raw_topic: bool = False,
        observe_lag: bool = True,
        normalizers: dict[str, Normalizer] | None = None,
    ) -> None:
        self.settings = settings
        self._prod = prod
        self._codec = codec()
        self._dlq = kafka.DeadLetters(settings, prod, "collector", self._codec)
        self._normalizers: dict[str, Normalizer] = dict(normalizers or {})
        self._topics: dict[str, tuple[str, str]] = {}
        self._routes: dict[tuple[str, bytes], int] = {}
        self._partitions: dict[str, list[int]] = {}
        self._choose = DefaultPartitioner()
        self._raw = settings.topic("raw") if raw_topic else None
        self._record = record.open("a", encoding="utf-8") if record else None
        self._observe_lag = observe_lag
        self.frames = 0
        self.rejected = 0
        self.send_errors = 0
        self.produced: dict[str, int] = {}

    def use(self, normalizer: Normalizer) -> None:
        """Normalize ``normalizer.venue``'s frames with this instance (e.g. a replay's options)."""
        self._normalizers[normalizer.venue] = normalizer

    def normalizer(self, venue: str) -> Normalizer:
        """This pipeline's normalizer of ``venue`` (created on first use); sources use it to read
        the state it keeps (known markets, books that need a fresh snapshot)."""
        norm = self._normalizers.get(venue)
        if norm is None:
            factory = NORMALIZERS.get(venue)
            if factory is None:
                raise BadMessage("unknown_venue", f"no normalizer for venue {venue!r}")
            norm = self._normalizers[venue] = factory(self.settings)
        return norm

    async def frame(self, frame: Frame) -> None:
        self.frames += 1
        note_shard(frame.venue, frame.conn_id, frame.recv_ms)
        if self._record is not None:
            self._record.write(frame_to_json(frame) + "\n")
        if self._raw is not None:
            raw = {
                "venue": frame.venue,
                "channel": frame.channel,
                "conn_id": frame.conn_id,
                "recv_ms": frame.recv_ms,
                "payload": frame.payload,
            }
            key = f"{frame.venue}/{frame.channel}".encode()
            await self._send(self._raw, key, self._codec.encode("raw_frame", raw))
        try:
            outs = self.normalizer(frame.venue).normalize(frame)
            encoded = [self.encode(out) for out in outs]
        except Exception as exc:  # a normalizer bug must not end the stream either
            await self._reject(frame, exc)
            return
        for (topic, key, value), (topic_id, _, _) in zip(encoded, outs, strict=True):
            await self._send(topic, key, value)
            self.produced[topic_id] = self.produced.get(topic_id, 0) + 1
        if self._observe_lag and outs and "ts_ms" in outs[0][2]:
            # One observation per frame: its records share the venue's timestamp.
            lag_s = (time.time_ns() // 1_000_000 - outs[0][2]["ts_ms"]) / 1000
            metrics.COLLECTOR_LAG.labels(frame.venue).observe(lag_s)

    def encode(self, out: Out) -> tuple[str, bytes, bytes]:
        topic_id, key, rec = out
        spec = self._topics.get(topic_id)
        if spec is None:
            spec = self._topics[topic_id] = (
                self.settings.topic(topic_id),
                CATALOG.topic(topic_id).schema,
            )
        try:
            return spec[0], key.encode(), self._codec.encode(spec[1], rec)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise BadMessage("unencodable", f"{topic_id} record: {exc}") from exc

    async def _send(self, topic: str, key: bytes, value: bytes) -> None:
        # send() returns once the record is in the producer's buffer (it waits only when the
        # buffer is full: backpressure); the returned future resolves on the broker's ack.
        partition = self._routes.get((topic, key))
        if partition is None:
            partition = self._routes[topic, key] = await self._route(topic, key)
        fut = await self._prod.send(topic, value, key=key, partition=partition)
        fut.add_done_callback(self._acked)

    async def _route(self, topic: str, key: bytes) -> int:
        """The default partitioner's choice (murmur2, as Java clients), computed once per key:
        hashing every message again in Python is a large share of the collector's time."""
        parts = self._partitions.get(topic)
        if parts is None:
            parts = self._partitions[topic] = sorted(await self._prod.partitions_for(topic))
        return int(self._choose(key, parts, parts))

    def _acked(self, fut: asyncio.Future[Any]) -> None:
        if not fut.cancelled() and fut.exception() is not None:
            self.send_errors += 1
            metrics.COLLECTOR_REJECTS.labels("all", "send_failed").inc()
            log.error("collector send failed: %s", fut.exception())

    async def _reject(self, frame: Frame, exc: Exception) -> None:
        self.rejected += 1
        if isinstance(exc, BadMessage):
            reason = exc.kind
        else:
            reason = f"internal:{type(exc).__name__}"
            log.exception("normalizer of %s failed on a frame from %s", frame.venue, frame.conn_id)
        metrics.COLLECTOR_REJECTS.labels(frame.venue, reason).inc()
        err = exc if isinstance(exc, BadMessage) else BadMessage(reason, str(exc))
        await self._dlq.send(
            f"{frame.venue}:{frame.channel}",
            err,
            key=frame.conn_id.encode(),
            payload=frame.payload,
        )

    async def dead_letter(self, source: str, err: BadMessage, payload: bytes) -> None:
        """A loss a source detected itself (e.g. a polling window it could not read whole)."""
        venue = source.split(":", 1)[0]
        metrics.COLLECTOR_REJECTS.labels(venue, err.kind).inc()
        await self._dlq.send(source, err, payload=payload)

    async def flush(self) -> None:
        """Wait until every record sent so far is acknowledged (and the recording written)."""
        await self._prod.flush()
        if self._record is not None:
            self._record.flush()

    def close(self) -> None:
        if self._record is not None:
            self._record.close()
            self._record = None
