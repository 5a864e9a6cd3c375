"""`marketpulse execute`: the execution stage as its own process (not inside the Faust worker).

Consumes signals (consumer group; offsets committed every COMMIT_EVERY_S, once every intent
sent before is acked),
intent_commands (re-read from the beginning at every start: applying a command twice changes
nothing), markets (compacted, from the beginning) and books (no group: the last
`books.warm_messages` per partition at start, then live). Produces intents (key intent id) and
positions (key position id) with the idempotent producer.

State survives a restart by event sourcing from the stage's own output: at start the whole
intents topic is read back (latest seq per intent; fills rebuild the positions, approvals the
daily notional, risk rejections the breaker), then the markets (settlements), then the
positions topic (the last marks; a position the rebuild disagrees with is republished, which
repairs a crash between an intent's fill and its position); once the books are read, a
lifecycle a crash cut between two events is finished (`Stage.resume`); then the commands. A
signal
redelivered after a crash maps to the same intent id and is skipped, so nothing is lost and
nothing is produced twice.

Fills are deterministic under replay: an intent fills at its event time (the signal's, or the
approve command's) against the latest book with ts_ms at or before it. Before it does, the stage
waits (at most `orders.book_wait_ms`) until the books consumer has passed the Kafka timestamp of
the signal or command on every partition, or the end offsets asked of the broker after it
arrived: the books that fired a signal were produced before it, so they are then in the store.
Books of events nobody watches are kept undecoded (see `books.BookStore`); with no book at all
(history shorter than the lag), the signal's legs stand in (see `stage`).

Run ONE execute process per deployment: the limits (daily notional, exposure, open intents,
kill switch) are global, and a second member of the signals group would decide with a state
rebuilt at its own start. A replacement after a crash is what the restore is for."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import signal as os_signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from marketpulse import metrics
from marketpulse.codec import Codec, codec
from marketpulse.errors import BadMessage, TransientError
from marketpulse.execution.books import BookStore
from marketpulse.execution.config import ExecutionConfig, load_config
from marketpulse.execution.stage import Output, Stage
from marketpulse.kafka import DeadLetters, producer
from marketpulse.replay import partitions_of
from marketpulse.settings import Settings

log = logging.getLogger(__name__)

POLL_RECORDS = 500
UNWATCH_EVERY_S = 10.0
COMMIT_EVERY_S = 0.2
PRUNE_AT = 10_000  # sends kept in the unacked list before the acked ones are dropped


@dataclass
class BooksProgress:
    """How far the books consumer got on one partition."""

    kafka_ts: int = -1  # Kafka timestamp of the last message consumed
    next_offset: int = 0  # the next offset it will read


@dataclass
class Counts:
    """What this process produced since it started (for logs, tests and the demo)."""

    intents: dict[str, int] = field(default_factory=dict)
    positions: int = 0
    republished: int = 0


class Execution:
    def __init__(self, settings: Settings, config: ExecutionConfig | None = None) -> None:
        self.settings = settings
        self.config = config or load_config(settings)
        self._codec: Codec = codec()
        books = self.config.books
        self.store = BookStore(self._decode_book, books.ring, books.max_events, books.history)
        self.stage = Stage(self.config, self.store.at)
        self._producer = producer(
            settings, client_id=f"{settings.execution_group}-execute", linger_ms=1
        )
        self._dead = DeadLetters(settings, self._producer, stage="execute", cdc=self._codec)
        self._lock = asyncio.Lock()  # one input at a time: stage call + its sends, in order
        # Sends not known to be acked. Never swapped out by the one who waits: the commands
        # loop's flush must not hide a signal's sends from the signals' commit.
        self._unacked: list[asyncio.Future[Any]] = []
        self.progress: dict[int, BooksProgress] = {}
        self._books: AIOKafkaConsumer | None = None
        self._offsets: AIOKafkaConsumer | None = None  # asks the broker for end offsets only
        self.counts = Counts()
        self.ready = False
        self._swept = 0.0  # monotonic time of the last unwatch sweep
        self._watched_at: dict[str, float] = {}  # event key -> monotonic time it was watched

    def _decode_book(self, value: bytes) -> dict[str, Any]:
        return self._codec.decode("book", value)

    def topic(self, topic_id: str) -> str:
        return self.settings.topic(topic_id)

    # ---------------------------------------------------------------- lifecycle

    async def run(self, stop: asyncio.Event) -> None:
        await self._producer.start()
        consumers: list[AIOKafkaConsumer] = []
        tasks: list[asyncio.Task[Any]] = []
        try:
            markets = await self._assigned("markets", consumers)
            await self.restore(markets)
            books = await self._assigned("books", consumers, warm=self.config.books.warm_messages)
            self._books = books
            self._offsets = AIOKafkaConsumer(
                bootstrap_servers=self.settings.kafka_bootstrap,
                group_id=None,
                client_id=f"{self.settings.execution_group}-offsets",
            )
            await self._offsets.start()
            consumers.append(self._offsets)
            for tp in books.assignment():
                self.progress[tp.partition] = BooksProgress(next_offset=await books.position(tp))
            commands = await self._assigned("intent_commands", consumers)
            signals = self._signals_consumer()
            consumers.append(signals)
            tasks.append(
                asyncio.create_task(self._loop(books, self._on_books, stop, self._books_idle))
            )
            tasks.append(asyncio.create_task(self._loop(markets, self._on_markets, stop)))
            await self._books_warm(stop)
            async with self._lock:  # what a crash cut short, before anything new
                await self._publish(self.stage.resume())
            await self._flush()
            tasks.append(asyncio.create_task(self._loop(commands, self._on_commands, stop)))
            await signals.start()
            signals.subscribe([self.topic("signals")])
            tasks.append(asyncio.create_task(self._signals_loop(signals, stop)))
            self.ready = True
            log.info(
                "execution stage ready: %s approval, levels %s, %d intents and %d positions known",
                self.config.approval,
                ",".join(self.config.levels),
                len(self.stage.intents),
                len(self.stage.portfolio.positions),
            )
            stopping = asyncio.create_task(stop.wait())
            tasks.append(stopping)
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in done:  # a consumer loop that died takes the process down, loudly
                if t is not stopping and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
        finally:
            self.ready = False
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(BaseException):
                    await t
            for c in consumers:
                with contextlib.suppress(Exception):
                    await c.stop()
            with contextlib.suppress(Exception):
                await self._flush()
            await self._producer.stop()

    def readiness(self) -> dict[str, Any]:
        return {
            "ok": self.ready,
            "intents_known": len(self.stage.intents),
            "intents_forgotten": self.stage.forgotten,
            "open_intents": len(self.stage.open),
            "watched_events": len(self.store.watched),
            "kill_switch": self.stage.kill.on,
        }

    # ---------------------------------------------------------------- consumers

    async def _assigned(
        self, topic_id: str, consumers: list[AIOKafkaConsumer], warm: int | None = None
    ) -> AIOKafkaConsumer:
        """A group-less consumer of every partition of a topic, from the beginning (or the
        last `warm` messages of each partition)."""
        name = self.topic(topic_id)
        parts = await self._partitions(name)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id=f"{self.settings.execution_group}-{topic_id}",
        )
        await consumer.start()
        consumers.append(consumer)
        tps = [TopicPartition(name, p) for p in parts]
        consumer.assign(tps)
        begins = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            start = begins[tp] if warm is None else max(begins[tp], ends[tp] - warm)
            consumer.seek(tp, start)
        return consumer

    async def _partitions(self, name: str, wait_s: float = 10.0) -> list[int]:
        deadline = time.monotonic() + wait_s
        while True:
            found = (await partitions_of(self.settings, [name]))[name]
            if found:
                return found
            if time.monotonic() > deadline:
                raise TransientError(f"topic {name} missing (marketpulse topics create)")
            await asyncio.sleep(0.2)

    def _signals_consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=self.settings.execution_group,
            client_id=f"{self.settings.execution_group}-signals",
            enable_auto_commit=False,
            auto_offset_reset=self.settings.execution_offset_reset,
            isolation_level="read_committed",
        )

    async def _loop(
        self,
        consumer: AIOKafkaConsumer,
        handle: Callable[[AIOKafkaConsumer, TopicPartition, list[ConsumerRecord]], Awaitable[None]],
        stop: asyncio.Event,
        idle: Callable[[AIOKafkaConsumer], Awaitable[None]] | None = None,
    ) -> None:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=100, max_records=POLL_RECORDS)
            for tp, messages in batch.items():
                await handle(consumer, tp, messages)
            if not batch and idle is not None:
                await idle(consumer)

    async def read_to_end(
        self, consumer: AIOKafkaConsumer, apply: Callable[[TopicPartition, ConsumerRecord], None]
    ) -> int:
        """Apply every message up to the end offsets as of now; returns how many."""
        tps = list(consumer.assignment())
        ends = await consumer.end_offsets(tps)
        n = 0
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            for tp, messages in batch.items():
                for msg in messages:
                    if msg.offset < ends[tp]:
                        apply(tp, msg)
                        n += 1
        return n

    # ---------------------------------------------------------------- restart

    async def restore(self, markets: AIOKafkaConsumer) -> None:
        """Rebuild the state from the stage's own output (see the module doc)."""
        tmp: list[AIOKafkaConsumer] = []
        try:
            intents = await self._assigned("intents", tmp)
            n_intents = await self.read_to_end(intents, self._restore_intent)
            settled = Output()

            def on_market(tp: TopicPartition, msg: ConsumerRecord) -> None:
                rec = self._decode_quietly("market", msg)
                if rec is not None:
                    settled.extend(self.stage.on_market(rec))

            await self.read_to_end(markets, on_market)
            latest: dict[str, dict[str, Any]] = {}

            def on_position(tp: TopicPartition, msg: ConsumerRecord) -> None:
                rec = self._decode_quietly("position", msg)
                if rec is not None:
                    latest[rec["position_id"]] = rec

            await self.read_to_end(await self._assigned("positions", tmp), on_position)
        finally:
            for c in tmp:
                await c.stop()
        await self._repair_positions(latest)
        for event_key in self.stage.watched_events():
            self._watch(event_key)
        self.stage.forget_closed()  # what closed long ago stays in the topic, not in memory
        # The restored history lives as long as the process: keep it out of the GC's full
        # passes, which cost ~180 ms at 20,000 intents and would land in signal latency.
        gc.collect()
        gc.freeze()
        log.info(
            "restored %d intent events, %d positions (%d republished)",
            n_intents,
            len(self.stage.portfolio.positions),
            self.counts.republished,
        )

    def _restore_intent(self, tp: TopicPartition, msg: ConsumerRecord) -> None:
        rec = self._decode_quietly("intent", msg)
        if rec is not None:
            self.stage.restore(rec)

    async def _repair_positions(self, latest: dict[str, dict[str, Any]]) -> None:
        """Take the last published marks back, and republish any position the rebuild sees
        differently from the topic (a fill whose position record was lost in a crash)."""
        for pid, pos in self.stage.portfolio.positions.items():
            published = latest.get(pid)
            if published is not None and published.get("mark_price") is not None:
                pos.set_mark(published["mark_price"], int(published["ts_ms"]))
            rebuilt = pos.record()
            if published != rebuilt:
                await self._send_position(rebuilt)
                self.counts.republished += 1
        await self._flush()

    def _decode_quietly(self, schema: str, msg: ConsumerRecord) -> dict[str, Any] | None:
        """Our own topics at start: an unreadable record is logged and skipped (it was
        dead-lettered, or never written by us)."""
        try:
            return self._codec.decode(schema, msg.value)
        except BadMessage as exc:
            log.error("unreadable %s record at offset %d skipped: %s", schema, msg.offset, exc)
            return None

    # ---------------------------------------------------------------- handlers

    async def _on_books(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, messages: list[ConsumerRecord]
    ) -> None:
        for msg in messages:
            try:
                book = self.store.offer(msg.key, msg.value)
            except BadMessage as exc:
                await self._dead_letter(tp, msg, exc)
                continue
            if book is not None:
                async with self._lock:
                    await self._publish(self.stage.on_book(book))
        progress = self.progress.setdefault(tp.partition, BooksProgress())
        progress.kafka_ts = max(progress.kafka_ts, messages[-1].timestamp)
        progress.next_offset = messages[-1].offset + 1

    async def _books_idle(self, consumer: AIOKafkaConsumer) -> None:
        """An empty poll: note how far each partition got, sweep the watch list."""
        for part in consumer.assignment():
            progress = self.progress.setdefault(part.partition, BooksProgress())
            progress.next_offset = max(progress.next_offset, await consumer.position(part))
        self._sweep_watched()

    async def book_ends(self) -> dict[int, int]:
        """End offset of every books partition, asked of the broker now: every book produced
        before this moment lies below it."""
        assert self._books is not None and self._offsets is not None
        # Asked through a consumer of its own: the books consumer's connection is often
        # parked in a long-poll fetch, behind which this request would wait up to 500 ms.
        ends = await self._offsets.end_offsets(list(self._books.assignment()))
        return {tp.partition: end for tp, end in ends.items()}

    async def _books_warm(self, stop: asyncio.Event, wait_s: float = 30.0) -> None:
        """Wait until the books consumer read everything there was at start."""
        ends = await self.book_ends()
        deadline = time.monotonic() + wait_s
        while not stop.is_set() and time.monotonic() < deadline:
            if all(self.progress[p].next_offset >= end for p, end in ends.items()):
                return
            await asyncio.sleep(0.05)
        log.warning("books consumer not at the end after %.0fs: starting anyway", wait_s)

    async def _books_reached(self, kafka_ts: int, known: dict[str, dict[int, int]]) -> None:
        """Hold an input produced at `kafka_ts` until, on every books partition, the books
        consumer read a message produced at or after it, or everything below the end offsets
        asked after the input was produced (`known["ends"]`, asked here once per poll, and only
        when some partition is behind): then the books that fired it are in the store. At
        most `orders.book_wait_ms`."""
        if all(p.kafka_ts >= kafka_ts for p in self.progress.values()):
            return  # the usual case while books flow: no round trip
        if "ends" not in known:
            known["ends"] = await self.book_ends()
        ends = known["ends"]
        deadline = time.monotonic() + self.config.orders.book_wait_ms / 1000.0
        waited = False
        while not all(
            p.kafka_ts >= kafka_ts or p.next_offset >= ends.get(part, 0)
            for part, p in self.progress.items()
        ):
            if time.monotonic() >= deadline:
                metrics.EXEC_BOOK_WAITS.labels("timeout").inc()
                return
            waited = True
            await asyncio.sleep(0.002)
        if waited:
            metrics.EXEC_BOOK_WAITS.labels("reached").inc()

    def _watch(self, event_key: str) -> None:
        self.store.watch(event_key)
        self._watched_at[event_key] = time.monotonic()

    def _sweep_watched(self, now: float | None = None) -> None:
        """Stop decoding the books of events with nothing open (now and then). An event
        watched less than UNWATCH_EVERY_S ago stays: its signal may still be on its way
        through the stage (the sweep runs in the books task, between two of its awaits)."""
        now = time.monotonic() if now is None else now
        if now - self._swept < UNWATCH_EVERY_S:
            return
        self._swept = now
        keep = self.stage.watched_events()
        for event_key in list(self.store.watched - keep):
            if now - self._watched_at.get(event_key, 0.0) >= UNWATCH_EVERY_S:
                self.store.unwatch(event_key)
                self._watched_at.pop(event_key, None)
        metrics.EXEC_WATCHED_EVENTS.set(len(self.store.watched))

    async def _on_markets(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, messages: list[ConsumerRecord]
    ) -> None:
        for msg in messages:
            try:
                market = self._codec.decode("market", msg.value)
            except BadMessage as exc:
                await self._dead_letter(tp, msg, exc)
                continue
            async with self._lock:
                await self._publish(self.stage.on_market(market))
        if messages:
            await self._flush()

    async def _on_commands(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, messages: list[ConsumerRecord]
    ) -> None:
        for msg in messages:
            try:
                cmd = self._codec.decode("intent_command", msg.value)
                if cmd["action"] == "create":
                    self._watch_signal_json(cmd)
                if cmd["action"] in ("create", "approve"):
                    await self._books_reached(msg.timestamp, {})
                async with self._lock:
                    out = self.stage.on_command(cmd)
                    await self._publish(out)
            except BadMessage as exc:
                await self._dead_letter(tp, msg, exc)
                continue
            except (ValueError, KeyError, TypeError) as exc:  # a create with a broken signal
                await self._dead_letter(tp, msg, BadMessage("bad_command", repr(exc)))
                continue
            if out.ignored:
                metrics.EXEC_INPUTS_IGNORED.labels("command", out.ignored.split(" ")[0]).inc()
                log.info(
                    "command %s %s ignored: %s", cmd["action"], cmd.get("intent_id"), out.ignored
                )
            metrics.EXEC_KILL_SWITCH.set(1 if self.stage.kill.on else 0)
        if messages:
            await self._flush()

    def _watch_signal_json(self, cmd: dict[str, Any]) -> None:
        signal = json.loads(cmd.get("signal_json") or "null")
        if isinstance(signal, dict) and signal.get("event_key"):
            self._watch(str(signal["event_key"]))

    async def _signals_loop(self, consumer: AIOKafkaConsumer, stop: asyncio.Event) -> None:
        """Signals in offset order. Intents are sent without waiting for each ack; every
        COMMIT_EVERY_S, the offsets read so far are committed once every send made before is
        acked (a crash in between re-reads those signals, whose intents then already exist or
        are made now). That wait and the commit run beside the loop, not in its way: awaited
        inline they held the next signal up to an ack and a commit round trip."""
        offsets: dict[TopicPartition, int] = {}
        committed_at = time.monotonic()
        committing: asyncio.Task[None] | None = None
        try:
            while not stop.is_set():
                await self._signals_poll(consumer, offsets)
                if committing is not None and committing.done():
                    committing.result()  # a send that failed takes the process down, loudly
                    committing = None
                due = time.monotonic() - committed_at >= COMMIT_EVERY_S
                if offsets and committing is None and due:
                    acks = self._pending()
                    committing = asyncio.create_task(_commit_after(acks, consumer, offsets))
                    offsets, committed_at = {}, time.monotonic()
        finally:
            if committing is not None:  # not committed: re-read at the next start, harmlessly
                committing.cancel()

    async def _signals_poll(
        self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]
    ) -> None:
        """One poll of signals, handled in order; `offsets` gets the next offset to commit."""
        batch = await consumer.getmany(timeout_ms=100, max_records=POLL_RECORDS)
        known: dict[str, dict[int, int]] = {}  # the books' end offsets, once per poll
        for tp, messages in batch.items():
            for msg in messages:
                try:
                    signal = self._codec.decode("signal", msg.value)
                except BadMessage as exc:
                    await self._dead_letter(tp, msg, exc)
                    continue
                if self._new_intent(signal):
                    self._watch(signal["event_key"])
                    await self._books_reached(msg.timestamp, known)
                if await self._on_signal(tp, msg, signal):
                    lag_ms = time.time() * 1000 - msg.timestamp
                    metrics.EXEC_SIGNAL_TO_INTENT.observe(max(0.0, lag_ms) / 1000)
            offsets[tp] = messages[-1].offset + 1

    def _new_intent(self, signal: dict[str, Any]) -> bool:
        """Whether a signal will become a new intent (and so needs its books)."""
        return self.config.wants(signal) and self.stage.is_new(signal)

    async def _on_signal(
        self, tp: TopicPartition, msg: ConsumerRecord, signal: dict[str, Any]
    ) -> bool:
        """Hand a decoded signal to the stage; True when it made intent events."""
        try:
            async with self._lock:
                out = self.stage.on_signal(signal)
                await self._publish(out)
        except (ValueError, KeyError, TypeError) as exc:
            await self._dead_letter(tp, msg, BadMessage("bad_signal", repr(exc)))
            return False
        if out.ignored:
            metrics.EXEC_INPUTS_IGNORED.labels("signal", out.ignored).inc()
        return bool(out.intents)

    # ---------------------------------------------------------------- output

    async def _publish(self, out: Output) -> None:
        for rec in out.intents:
            self._unacked.append(
                await self._producer.send(
                    self.topic("intents"),
                    self._codec.encode("intent", rec),
                    key=rec["intent_id"].encode(),
                )
            )
            self.counts.intents[rec["status"]] = self.counts.intents.get(rec["status"], 0) + 1
            if rec["status"] != "suggested":
                log.info("intent %s %s: %s", rec["intent_id"], rec["status"], rec["reason"])
            metrics.EXEC_INTENT_EVENTS.labels(rec["status"], rec["rule_id"]).inc()
            if rec["status"] == "rejected":
                for c in rec["checks"]:
                    if not c["passed"]:
                        metrics.EXEC_CHECKS_FAILED.labels(c["name"]).inc()
        for pos in out.positions:
            await self._send_position(pos)
        if len(self._unacked) > PRUNE_AT:  # marks of books alone: nothing flushes for a while
            self._prune()

    async def _send_position(self, rec: dict[str, Any]) -> None:
        self._unacked.append(
            await self._producer.send(
                self.topic("positions"),
                self._codec.encode("position", rec),
                key=rec["position_id"].encode(),
            )
        )
        self.counts.positions += 1

    async def _flush(self) -> None:
        """Wait for every send so far to be acknowledged (raises if one failed)."""
        await _all_acked(self._pending())

    def _pending(self) -> list[asyncio.Future[Any]]:
        """The sends so far not acked yet (a copy, for one task to wait on)."""
        self._prune()
        return list(self._unacked)

    def _prune(self) -> None:
        """Drop the acked sends; a failed one stays, for every later wait to raise."""
        self._unacked = [f for f in self._unacked if not _acked(f)]

    async def _dead_letter(self, tp: TopicPartition, msg: ConsumerRecord, exc: BadMessage) -> None:
        await self._dead.send(
            tp.topic, exc, partition=tp.partition, offset=msg.offset, key=msg.key, payload=msg.value
        )


async def _commit_after(
    acks: list[asyncio.Future[Any]], consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]
) -> None:
    """Commit `offsets` once every send in `acks` (those made before them) is acknowledged."""
    await _all_acked(acks)
    await _commit(consumer, offsets)


async def _all_acked(acks: list[asyncio.Future[Any]]) -> None:
    """Wait for every send in `acks`; raises what a failed one raised. Cancelled (at stop), it
    leaves the sends alone: `asyncio.wait` does not cancel them, as `gather` would."""
    if acks:
        await asyncio.wait(acks)
        for ack in acks:
            ack.result()


def _acked(send: asyncio.Future[Any]) -> bool:
    return send.done() and not send.cancelled() and send.exception() is None


async def _commit(consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
    try:
        await consumer.commit(offsets)
    except Exception as exc:
        # Lost to a rebalance: the next owner re-reads them, and their intents already exist.
        where = ", ".join(f"{tp.topic}[{tp.partition}]@{o}" for tp, o in offsets.items())
        log.warning("commit of %s failed: %s", where, exc)


async def run(
    settings: Settings, stop: asyncio.Event | None = None, execution: Execution | None = None
) -> None:
    """Run the execution stage until `stop` is set (or SIGINT/SIGTERM without one)."""
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (os_signal.SIGINT, os_signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    await (execution or Execution(settings)).run(stop)
