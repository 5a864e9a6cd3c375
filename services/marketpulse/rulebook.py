"""Rules as runtime configuration: the compacted rules topic (key rule id, value rule.avsc).

`marketpulse rules publish` writes the definitions of a YAML file (the packaged defaults unless
told otherwise) to the topic; `marketpulse rules list` reads it back. Workers start from the
YAML file, read the topic to its end *before* they consume market data (so a restarted worker
evaluates with the same versions as before), then follow it and apply every change at runtime.

`RuleBook` decides what a record does. A definition that does not validate is rejected with a
message naming the field, and the valid version in force stays; so does a record whose version
is older than the one in force (a stale publish), or that reuses the version in force with a
different content (a change must bump the version: signal ids include it). A tombstone (null
value) is ignored: deleting a rule is `enabled: false` with a new version.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer

from marketpulse import metrics
from marketpulse.codec import codec
from marketpulse.errors import BadMessage, ConfigError, TransientError
from marketpulse.kafka import Record, assign_all, producer, read_topic
from marketpulse.rules import RuleDef
from marketpulse.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    rule_id: str
    message: str


class RuleBook:
    """The valid rule definitions in force, by rule id."""

    def __init__(self, rules: Mapping[str, RuleDef]) -> None:
        self.rules = dict(rules)

    def offer(self, key: bytes | None, value: bytes | None) -> Verdict:
        """Apply one rules-topic record; the verdict says what happened and why."""
        name = key.decode(errors="replace") if key else "?"
        if value is None:
            return self._count(Verdict(False, name, "tombstone ignored (disable a rule instead)"))
        try:
            record = codec().decode("rule", value)
            rule = RuleDef.from_record(record)
        except (BadMessage, ConfigError, ValueError) as exc:
            return self._count(Verdict(False, name, f"invalid definition: {exc}"))
        if key is not None and key.decode(errors="replace") != rule.rule_id:
            return self._count(
                Verdict(False, name, f"key {name!r} is not the record's rule_id {rule.rule_id!r}")
            )
        return self._count(self.apply(rule))

    def apply(self, rule: RuleDef) -> Verdict:
        current = self.rules.get(rule.rule_id)
        if current is not None and rule.version < current.version:
            return Verdict(
                False, rule.rule_id, f"version {rule.version} is older than {current.version}"
            )
        if current is not None and rule.version == current.version:
            if rule == current:
                return Verdict(True, rule.rule_id, f"version {rule.version} unchanged")
            return Verdict(
                False,
                rule.rule_id,
                f"version {rule.version} is in force with other content: bump the version",
            )
        self.rules[rule.rule_id] = rule
        return Verdict(True, rule.rule_id, f"version {rule.version} in force")

    @staticmethod
    def _count(verdict: Verdict) -> Verdict:
        metrics.RULE_UPDATES.labels("accepted" if verdict.accepted else "rejected").inc()
        if not verdict.accepted:
            log.warning("rule %s rejected: %s", verdict.rule_id, verdict.message)
        return verdict


# --------------------------------------------------------------------------------------------
# The topic
# --------------------------------------------------------------------------------------------


async def publish(settings: Settings, rules: Mapping[str, RuleDef]) -> list[tuple[str, int]]:
    """Write every definition to the rules topic (key rule id); returns (rule id, version)."""
    topic, prod = settings.topic("rules"), producer(settings)
    try:
        await prod.start()
    except Exception as exc:
        raise TransientError(f"cannot reach Kafka at {settings.kafka_bootstrap}: {exc}") from exc
    try:
        for rule in rules.values():
            value = codec().encode("rule", rule.to_record())
            await prod.send_and_wait(topic, value, key=rule.rule_id.encode())
    finally:
        await prod.stop()
    return [(r.rule_id, r.version) for r in rules.values()]


async def read_to_end(settings: Settings, timeout_s: float = 10.0) -> tuple[list[Record], dict]:
    """Every record of the rules topic up to its current end, and the end offsets (where
    `follow` picks up). No consumer group: every worker reads everything."""
    return await read_topic(settings, "rules", timeout_s, client_id="mpx-rules")


async def follow(
    settings: Settings,
    start: Mapping[int, int],
    on_record: Callable[[bytes | None, bytes | None], None],
    stopped: asyncio.Event | None = None,
) -> None:
    """Feed every rules record from `start` offsets on to `on_record`, until `stopped`."""
    consumer = _consumer(settings)
    await consumer.start()
    try:
        parts = await assign_all(consumer, settings, settings.topic("rules"))
        for tp in parts:
            consumer.seek(tp, start.get(tp.partition, 0))
        while stopped is None or not stopped.is_set():
            batch = await consumer.getmany(*parts, timeout_ms=500)
            for msgs in batch.values():
                for m in msgs:
                    on_record(m.key, m.value)
    finally:
        await consumer.stop()


def _consumer(settings: Settings) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        enable_auto_commit=False,
        client_id="mpx-rules",
    )


async def current(
    settings: Settings, base: Mapping[str, RuleDef]
) -> tuple[RuleBook, dict[int, int]]:
    """`base` overlaid with the rules topic as it stands, and where the topic ended."""
    records, ends = await read_to_end(settings)
    book = RuleBook(base)
    for key, value in records:
        book.offer(key, value)
    return book, ends


def describe(rule: RuleDef) -> dict[str, Any]:
    return {
        "rule_id": rule.rule_id,
        "version": rule.version,
        "type": rule.type,
        "enabled": rule.enabled,
        "cooldown_ms": rule.cooldown_ms,
        "levels": rule.levels.model_dump(),
        "params": rule.params,
    }
