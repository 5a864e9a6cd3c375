"""Message handling, without Faust either: `Pipeline` decodes a consumed message, runs the
`Evaluator`, delivers its signals and review items, forwards group members to the by-group
stage, applies the table writes, and sends undecodable or unprocessable input to the
dead-letter topic (counted) before moving on. The agents in `worker.app` call it."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from marketpulse import metrics
from marketpulse.codec import Codec, codec
from marketpulse.errors import BadMessage
from marketpulse.grouping import GroupEvaluator
from marketpulse.grouping import decode as decode_forwarded
from marketpulse.kafka import DeadLetters
from marketpulse.worker.evaluator import Evaluator, Step

log = logging.getLogger(__name__)


class MessageLike(Protocol):
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


Send = Callable[[bytes, bytes], Awaitable[None]]


class Pipeline:
    """Decodes input, runs the `Evaluator`, delivers signals, applies table writes, and sends
    undecodable or unprocessable input to the dead-letter topic (counted) before moving on."""

    def __init__(
        self,
        evaluator: Evaluator,
        *,
        books_topic: str,
        by_event_topic: str,
        forward: Send,
        emit: Send,
        dead_letters: DeadLetters,
        cdc: Codec | None = None,
        ticks_topic: str | None = None,
        trades_topic: str | None = None,
        groups: GroupEvaluator | None = None,
        group_routes: Mapping[str, Sequence[str]] | None = None,
        to_group: Send | None = None,
        review: Send | None = None,
    ) -> None:
        self.review = review
        self.evaluator = evaluator
        self.groups = groups
        self.group_routes = dict(group_routes or {})
        self.to_group = to_group
        self._schemas = {books_topic: "book", by_event_topic: "market"}
        if ticks_topic:
            self._schemas[ticks_topic] = "tick"
        if trades_topic:
            self._schemas[trades_topic] = "trade"
        # Public so that tests can put recorders in their place.
        self.forward = forward
        self.emit = emit
        self.dead_letters = dead_letters
        self._codec = cdc or codec()

    async def repartition(self, msg: MessageLike) -> None:
        """markets (key market id) → internal topic keyed by event key, value unchanged."""
        metrics.WORKER_MESSAGES.labels(msg.topic).inc()
        if msg.value is None:
            return  # a compaction tombstone: nothing to route (its market id has no event)
        try:
            market = self._codec.decode("market", msg.value)
        except BadMessage as exc:
            await self._dead_letter(msg, exc)
            return
        await self.forward(market["event_id"].encode(), msg.value)

    async def handle(self, msg: MessageLike) -> Step | None:
        """One book or repartitioned market: evaluate, deliver signals, then write tables."""
        metrics.WORKER_MESSAGES.labels(msg.topic).inc()
        try:
            schema, record, step = self._step(msg)
        except Exception as exc:  # bad input must never stop the pipeline
            await self._dead_letter(msg, exc)
            return None
        for signal in step.signals:
            await self.emit(signal["subject"].encode(), self._codec.encode("signal", signal))
            self._observe(signal, step, msg)
        if self.review is not None:
            for item in step.reviews:
                await self.review(
                    item["review_id"].encode(), self._codec.encode("review_item", item)
                )
        if self.to_group is not None and schema in ("book", "market") and msg.value is not None:
            # Members of equivalence groups and markets whose question reads as a comparable
            # claim go on to the by-group stage, value unchanged.
            for group_id in self._routes(schema, record, step):
                await self.to_group(group_id.encode(), msg.value)
            # Books held for this metadata could not be routed by their question's claim when
            # they arrived (registry routes need no metadata and went at once).
            for book in step.released:
                key = self.evaluator.proposition_route("book", book)
                if key:
                    await self.to_group(key.encode(), self._codec.encode("book", dict(book)))
        step.apply()
        return step

    def _routes(self, schema: str, record: Mapping[str, Any], step: Step) -> list[str]:
        out = self.group_routes.get(record["market_id"], ())
        key = step.route if schema == "book" else self.evaluator.proposition_route(schema, record)
        return [*out, key] if key else list(out)

    async def handle_group(self, msg: MessageLike) -> None:
        """One forwarded book or market on the by-group topic (key: group id)."""
        metrics.WORKER_MESSAGES.labels(msg.topic).inc()
        if self.groups is None:
            return
        try:
            if msg.key is None:
                raise BadMessage("no_key", "by-group records are keyed by group id")
            kind, record = decode_forwarded(self._codec, msg.value)
            signals, writes = self.groups.on_record(msg.key.decode(), kind, record)
        except Exception as exc:  # bad input must never stop the pipeline
            await self._dead_letter(msg, exc)
            return
        step = Step(signals=signals, writes=writes)
        if kind == "book":
            step.trigger_recv_ms = int(record["recv_ms"])
        for signal in signals:
            await self.emit(signal["subject"].encode(), self._codec.encode("signal", signal))
            self._observe(signal, step, msg)
        step.apply()

    def _step(self, msg: MessageLike) -> tuple[str, dict[str, Any], Step]:
        schema = self._schemas.get(msg.topic)
        if schema is None:
            raise BadMessage("unknown_topic", f"the worker does not consume {msg.topic!r}")
        if (schema == "tick" and not self.evaluator.flow.wants_ticks) or (
            schema == "trade" and not self.evaluator.flow.wants_trades
        ):
            return schema, {}, Step()  # no rule reads them now: not even worth decoding
        record = self._codec.decode(schema, msg.value)
        return schema, record, self._evaluate(schema, record, msg)

    def _evaluate(self, schema: str, record: dict[str, Any], msg: MessageLike) -> Step:
        if schema == "market":
            return self.evaluator.on_market(record)
        if msg.key is not None and msg.key != record["event_key"].encode():
            # Partition-local evaluation relies on market data being keyed by its event.
            raise BadMessage(
                "key_mismatch",
                f"key {msg.key!r} is not the {schema}'s event {record['event_key']!r}",
            )
        if schema == "tick":
            return self.evaluator.on_tick(record)
        if schema == "trade":
            return self.evaluator.on_trade(record)
        return self.evaluator.on_book(record)

    def _observe(self, signal: Mapping[str, Any], step: Step, msg: MessageLike) -> None:
        metrics.SIGNALS_EMITTED.labels(signal["rule_id"], signal["level"]).inc()
        if step.trigger_recv_ms is not None:  # metadata-triggered signals have no tick latency
            latency_s = max(0.0, time.time() - step.trigger_recv_ms / 1000.0)
            metrics.TICK_TO_SIGNAL.labels(signal["rule_id"]).observe(latency_s)
        log.info(
            "signal %s rule=%s level=%s subject=%s edge=%.1fbps size=%s from %s[%d]@%d",
            signal["signal_id"],
            signal["rule_id"],
            signal["level"],
            signal["subject"],
            signal["edge_bps"],
            signal["size"],
            msg.topic,
            msg.partition,
            msg.offset,
        )

    async def _dead_letter(self, msg: MessageLike, exc: Exception) -> None:
        if not isinstance(exc, BadMessage):
            log.exception("cannot process %s[%d]@%d", msg.topic, msg.partition, msg.offset)
        await self.dead_letters.send(
            msg.topic,
            exc,
            partition=msg.partition,
            offset=msg.offset,
            key=msg.key,
            payload=msg.value,
        )
