"""The alerts process: consume signals, decide (route, de-dup, cooldown, digest), deliver,
remember, and only then commit.

Per poll, the messages are handled in offset order and their offsets are committed once every
one of them is delivered, suppressed, or given up on (dead-lettered with the reason).
A crash in between re-reads them; the state then recognises what was already sent, so a restart
or a replay never alerts twice. A stop while a delivery waits to be retried leaves that poll
uncommitted."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal as os_signal
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import ConsumerRecord

from marketpulse import metrics
from marketpulse.alerts.channels import Channel, HttpChannel, build
from marketpulse.alerts.config import AlertsConfig, Route, load_config
from marketpulse.alerts.delivery import Interrupted, RetryPolicy, deliver
from marketpulse.alerts.state import AlertState
from marketpulse.codec import Codec, codec
from marketpulse.errors import BadMessage, ConfigError
from marketpulse.kafka import DeadLetters, producer
from marketpulse.settings import Settings

log = logging.getLogger(__name__)

POLL_RECORDS = 200


class DeliveryFailed(BadMessage):
    """A delivery given up on: the signal goes to the dead-letter topic with this reason."""


@dataclass
class Plan:
    """What one poll of one partition sends on one channel."""

    route: Route
    singles: list[dict[str, Any]] = field(default_factory=list)
    suppressed: list[tuple[dict[str, Any], str]] = field(default_factory=list)  # (sig, why)

    def digests(self) -> tuple[list[list[dict[str, Any]]], list[dict[str, Any]]]:
        """Bursts of one rule that become a digest, and the signals still sent one by one."""
        if self.route.digest is None:
            return [], self.singles
        by_rule: dict[str, list[dict[str, Any]]] = {}
        for s in self.singles:
            by_rule.setdefault(s["rule_id"], []).append(s)
        bursts = [g for g in by_rule.values() if len(g) >= self.route.digest.min_signals]
        in_burst = {id(s) for g in bursts for s in g}
        return bursts, [s for s in self.singles if id(s) not in in_burst]


class Alerter:
    def __init__(
        self,
        settings: Settings,
        config: AlertsConfig | None = None,
        *,
        policy: RetryPolicy | None = None,
        cdc: Codec | None = None,
    ) -> None:
        self.settings = settings
        self.config = config or load_config(settings)
        self.policy = policy or RetryPolicy.from_settings(settings)
        self._codec = cdc or codec()
        self._topic = settings.topic("signals")
        self._http = httpx.AsyncClient(timeout=settings.alerts_timeout_s)
        self.channels: dict[str, Channel] = {
            name: build(c, self._http, settings.grafana_url)
            for name, c in self.config.channels.items()
        }
        self._producer = producer(settings, client_id=f"{settings.alerts_group}-alerts")
        self.state = AlertState(settings, self._producer, self._codec)
        self._dead = DeadLetters(settings, self._producer, stage="alerts", cdc=self._codec)
        self._stop = asyncio.Event()
        for name, ch in self.channels.items():
            if isinstance(ch, HttpChannel) and ch.dry_run:
                log.warning("alerts channel %s has no webhook URL: dry run (logs only)", name)

    def _consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=self.settings.alerts_group,
            client_id=f"{self.settings.alerts_group}-alerts",
            enable_auto_commit=False,
            auto_offset_reset=self.settings.alerts_offset_reset,
            isolation_level="read_committed",
            # A delivery may retry for give_up_s; the group must not evict us meanwhile.
            max_poll_interval_ms=int((self.settings.alerts_give_up_s + 120) * 1000),
        )

    async def run(self, stop: asyncio.Event) -> None:
        await self._producer.start()
        consumer = self._consumer()
        try:
            await self.state.start()
            consumer.subscribe([self._topic], listener=_CatchUp(self.state))
            await consumer.start()
            log.info("alerts group %s consuming %s", self.settings.alerts_group, self._topic)
            stopper = asyncio.create_task(self._forward_stop(stop))
            try:
                while not stop.is_set():
                    batch = await consumer.getmany(timeout_ms=200, max_records=POLL_RECORDS)
                    if not batch:
                        continue
                    if not await self.handle(batch):
                        return  # stopping mid-delivery: this poll stays uncommitted
                    await _commit(consumer, {tp: m[-1].offset + 1 for tp, m in batch.items()})
            finally:
                stopper.cancel()
        finally:
            with contextlib.suppress(Exception):
                await consumer.stop()
            await self.state.stop()
            await self._producer.stop()
            await self._http.aclose()

    async def _forward_stop(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._stop.set()

    async def handle(self, batch: Mapping[TopicPartition, Sequence[ConsumerRecord]]) -> bool:
        """Everything one poll brought (all partitions together, so that a burst spread over
        partitions still becomes one digest); False if interrupted by a stop."""
        signals = [
            s
            for tp, messages in batch.items()
            for s in [await self._decode(tp, m) for m in messages]
            if s is not None
        ]
        plans = self.plan(signals)
        try:
            for channel, plan in plans.items():
                await self._execute(self.channels[channel], plan)
        except Interrupted:
            log.info("stopped while a delivery was being retried: this poll stays uncommitted")
            return False
        await self.state.flush()  # the memory is durable before the offsets move
        return True

    async def _decode(self, tp: TopicPartition, msg: ConsumerRecord) -> dict[str, Any] | None:
        try:
            sig = self._codec.decode("signal", msg.value)
        except BadMessage as exc:
            await self._dead.send(
                tp.topic,
                exc,
                partition=tp.partition,
                offset=msg.offset,
                key=msg.key,
                payload=msg.value,
            )
            return None
        sig["_where"] = (tp.topic, tp.partition, msg.offset, msg.key, msg.value)
        return sig

    def plan(self, signals: Iterable[dict[str, Any]]) -> dict[str, Plan]:
        """Route each signal and sort it per channel: a candidate, or suppressed already
        (seen, or in the cooldown of an alert sent before this poll). Cooldowns between
        signals of this poll are decided at send time, once it is known what was sent."""
        plans: dict[str, Plan] = {}
        for sig in signals:
            route = self.config.route_for(sig["rule_id"], sig["level"])
            if route is None:
                continue
            for channel in route.channels:
                plan = plans.setdefault(channel, Plan(route))
                why = self.state.verdict(sig, channel, route.cooldown_s)
                if why is None:
                    plan.singles.append(sig)
                else:
                    plan.suppressed.append((sig, why))
        return plans

    async def _execute(self, channel: Channel, plan: Plan) -> None:
        durable = not (isinstance(channel, HttpChannel) and channel.dry_run)
        for sig, why in plan.suppressed:
            await self._suppress(channel.name, sig, why, durable)
        bursts, singles = plan.digests()
        for burst in bursts:
            payload = channel.render_digest([_public(s) for s in burst])
            await self._send(channel, payload, burst, "digest", durable)
        for sig in singles:
            # Re-checked now: an earlier signal of this poll may just have started a cooldown.
            now_why = self.state.verdict(sig, channel.name, plan.route.cooldown_s)
            if now_why is not None:
                await self._suppress(channel.name, sig, now_why, durable)
                continue
            await self._send(channel, channel.render(_public(sig)), [sig], "sent", durable)

    async def _suppress(
        self, channel: str, sig: Mapping[str, Any], why: str, durable: bool
    ) -> None:
        metrics.ALERTS_DEDUPLICATED.labels(channel, why).inc()
        if why == "cooldown":  # a seen one is already recorded
            await self.state.record(sig, channel, "suppressed", durable)

    async def _send(
        self,
        channel: Channel,
        payload: Mapping[str, Any],
        signals: Sequence[dict[str, Any]],
        outcome: Any,
        durable: bool,
    ) -> None:
        result = await deliver(channel, payload, self.policy, self._stop)
        if not result.ok:
            metrics.ALERTS_FAILED.labels(channel.name, result.reason).inc()
            for sig in signals:
                await self._dead_letter(sig, channel.name, result.reason, result.attempts)
            return
        now = time.time()
        for sig in signals:
            metrics.ALERTS_SENT.labels(channel.name, sig["rule_id"], sig["level"]).inc()
            metrics.ALERT_LATENCY.labels(channel.name).observe(
                max(0.0, now - sig["trigger_recv_ms"] / 1000)
            )
            await self.state.record(sig, channel.name, outcome, durable)
        log.info(
            "alert %s on %s: %s (%d attempt(s))",
            outcome,
            channel.name,
            ", ".join(s["signal_id"] for s in signals),
            result.attempts,
        )

    async def _dead_letter(
        self, sig: Mapping[str, Any], channel: str, reason: str, attempts: int
    ) -> None:
        topic, partition, offset, key, value = sig["_where"]
        detail = f"channel {channel}: not delivered after {attempts} attempt(s)"
        err = DeliveryFailed(reason, detail)
        await self._dead.send(
            topic, err, partition=partition, offset=offset, key=key, payload=value
        )

    async def close(self) -> None:
        """Release the clients when `run` (which closes everything) never ran."""
        await self._http.aclose()
        await self._producer.stop()


def _public(sig: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in sig.items() if not k.startswith("_")}


async def _commit(consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
    try:
        await consumer.commit(offsets)
    except Exception as exc:
        # Lost to a rebalance: the next owner re-reads, and the state recognises what was sent.
        where = ", ".join(f"{tp.topic}[{tp.partition}]@{o}" for tp, o in offsets.items())
        log.warning("commit of %s failed: %s", where, exc)


class _CatchUp(ConsumerRebalanceListener):
    def __init__(self, state: AlertState) -> None:
        self._state = state

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        return None

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._state.catch_up()  # what a previous owner of these partitions sent


async def send_test(
    settings: Settings, channel_names: Sequence[str] | None = None
) -> dict[str, Any]:
    """A test message on each channel, bypassing de-dup and state (`POST /api/alerts/test`).
    Retries briefly: a caller waits on the answer."""
    config = load_config(settings)
    names = list(channel_names or config.channels)
    unknown = [n for n in names if n not in config.channels]
    if unknown:
        raise ConfigError(f"unknown channel(s) {unknown}; configured: {sorted(config.channels)}")
    policy = RetryPolicy(settings.alerts_backoff_s, settings.alerts_backoff_max_s, give_up_s=10)
    results = {}
    async with httpx.AsyncClient(timeout=settings.alerts_timeout_s) as client:
        for name in names:
            ch = build(config.channels[name], client, settings.grafana_url)
            result = await deliver(ch, ch.render(test_signal()), policy)
            results[name] = {
                "ok": result.ok,
                "attempts": result.attempts,
                "reason": result.reason,
                "dry_run": config.channels[name].dry_run,
            }
    return results


def test_signal() -> dict[str, Any]:
    now = int(time.time() * 1000)
    return {
        "signal_id": f"test-{now}",
        "rule_id": "test",
        "rule_version": 1,
        "level": "P3",
        "subject": "mk:test",
        "event_key": "mk:test",
        "market_ids": ["mk:test"],
        "ts_ms": now,
        "trigger_recv_ms": now,
        "edge_bps": 0.0,
        "edge_score": 0.0,
        "size": 0.0,
        "notional": 0.0,
        "legs": [],
        "evidence": {"note": "test message from POST /api/alerts/test"},
        "summary": "MarketPulse test alert: this channel is wired correctly.",
    }


async def run(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Run the alerts process until `stop` is set (or SIGINT/SIGTERM without one)."""
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (os_signal.SIGINT, os_signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    await Alerter(settings).run(stop)
