"""The alerts' memory: what was sent (or suppressed) per signal and channel, on a compacted
Kafka topic (`alerts_state`).

Why Kafka and not a local file: every process is stateless outside Kafka and ClickHouse, so an
alerts process can be restarted or moved anywhere and another group member can take over its
partitions; a local file would stay behind on the old machine. The topic is compacted on the
key `signal id|channel`, so it holds one small record per alert ever decided (a few hundred
bytes), and re-reading it at start takes a moment.

Both checks run on this memory: a signal id already decided for a channel is never sent again
(a replay, a restart after a lost commit), and a rule+subject alerted within the route's cooldown
(event time: replays decide the same) is suppressed. Signals of one subject always land in the
same signals partition, so its owner sees everything the cooldown needs; after a rebalance
`catch_up` reads what the previous owner wrote before anything is decided."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from marketpulse.codec import Codec, codec
from marketpulse.errors import BadMessage, TransientError
from marketpulse.replay import partitions_of
from marketpulse.settings import Settings

log = logging.getLogger(__name__)

Outcome = Literal["sent", "suppressed", "digest"]
Verdict = Literal["seen", "cooldown"] | None


def state_key(signal_id: str, channel: str) -> str:
    return f"{signal_id}|{channel}"


class AlertState:
    def __init__(
        self, settings: Settings, producer: AIOKafkaProducer, cdc: Codec | None = None
    ) -> None:
        self._settings = settings
        self._topic = settings.topic("alerts_state")
        self._producer = producer
        self._codec = cdc or codec()
        self._consumer: AIOKafkaConsumer | None = None
        self.decided: dict[str, str] = {}  # state key -> outcome
        self.last_sent: dict[tuple[str, str, str], int] = {}  # (channel, rule, subject) -> ts
        self._unacked: list[asyncio.Future[Any]] = []

    async def start(self) -> None:
        """Read the whole topic (the memory) before the first decision."""
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._settings.kafka_bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",  # the whole memory, from its first record
            client_id=f"{self._settings.alerts_group}-state",
        )
        await self._consumer.start()
        partitions = await self._partitions()
        if not partitions:
            await self.stop()
            raise TransientError(f"topic {self._topic} missing (marketpulse topics create)")
        tps = [TopicPartition(self._topic, p) for p in sorted(partitions)]
        self._consumer.assign(tps)
        for tp, first in (await self._consumer.beginning_offsets(tps)).items():
            self._consumer.seek(tp, first)
        await self.catch_up()

    async def _partitions(self, wait_s: float = 10.0) -> set[int]:
        """The topic's partitions; a topic created a moment ago may take a while to show."""
        assert self._consumer is not None
        deadline = time.monotonic() + wait_s
        while True:
            found = (await partitions_of(self._settings, [self._topic]))[self._topic]
            if found or time.monotonic() > deadline:
                return set(found or ())
            await asyncio.sleep(0.2)

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def catch_up(self) -> int:
        """Apply every record written up to now (by this or another alerts process)."""
        assert self._consumer is not None, "start() first"
        assigned = self._consumer.assignment()
        ends = await self._consumer.end_offsets(list(assigned))
        applied = 0
        while await self._behind(ends):
            batch = await self._consumer.getmany(timeout_ms=500)
            for messages in batch.values():
                for msg in messages:
                    applied += self._apply(msg.value)
        if applied:
            log.info("alerts state: %d decision(s) known", len(self.decided))
        return applied

    async def _behind(self, ends: Mapping[TopicPartition, int]) -> bool:
        assert self._consumer is not None
        for tp, end in ends.items():
            if await self._consumer.position(tp) < end:
                return True
        return False

    def _apply(self, value: bytes | None) -> int:
        if value is None:
            return 0
        try:
            rec = self._codec.decode("alert_state", value)
        except BadMessage as exc:  # someone else's garbage must not stop the alerts
            log.error("unreadable alerts state record skipped: %s", exc)
            return 0
        self._remember(rec)
        return 1

    def _remember(self, rec: Mapping[str, Any]) -> None:
        self.decided[state_key(rec["signal_id"], rec["channel"])] = rec["outcome"]
        if rec["outcome"] != "suppressed":
            key = (rec["channel"], rec["rule_id"], rec["subject"])
            self.last_sent[key] = max(self.last_sent.get(key, rec["ts_ms"]), rec["ts_ms"])

    def verdict(
        self,
        signal: Mapping[str, Any],
        channel: str,
        cooldown_s: float,
    ) -> Verdict:
        """Why `signal` must not be alerted on `channel` (None: alert it)."""
        if state_key(signal["signal_id"], channel) in self.decided:
            return "seen"
        if cooldown_s > 0:
            key = (channel, signal["rule_id"], signal["subject"])
            last = self.last_sent.get(key)
            if last is not None and 0 <= signal["ts_ms"] - last < cooldown_s * 1000:
                return "cooldown"
        return None

    async def record(
        self, signal: Mapping[str, Any], channel: str, outcome: Outcome, durable: bool = True
    ) -> None:
        """Remember a decision; durable=False (dry runs) keeps it in this process only."""
        rec = {
            "signal_id": signal["signal_id"],
            "channel": channel,
            "rule_id": signal["rule_id"],
            "subject": signal["subject"],
            "ts_ms": int(signal["ts_ms"]),
            "outcome": outcome,
            "at_ms": int(time.time() * 1000),
        }
        if durable:
            # Not awaited one by one (a round trip per alert would cap the rate): `flush`
            # awaits them all before the caller commits the signals' offsets.
            self._unacked.append(
                await self._producer.send(
                    self._topic,
                    self._codec.encode("alert_state", rec),
                    key=state_key(rec["signal_id"], channel).encode(),
                )
            )
        self._remember(rec)

    async def flush(self) -> None:
        """Wait until every recorded decision is acknowledged by Kafka (raises if one was
        not: the caller must then not commit)."""
        unacked, self._unacked = self._unacked, []
        if unacked:
            await asyncio.gather(*unacked)
