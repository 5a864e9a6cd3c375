"""The worker's Faust wiring and process: topics, tables, the agents and their batches, the
settle step that orders signal delivery before table writes, and `run`. The logic is in
`worker.evaluator` and `worker.pipeline`; see the package doc for the data flow."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

import faust
from aiokafka import AIOKafkaProducer
from aiokafka.admin import NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from marketpulse import fastdrain, rulebook
from marketpulse.catalog import CATALOG
from marketpulse.errors import ConfigError, TransientError
from marketpulse.grouping import GroupEvaluator, registry, routes
from marketpulse.kafka import DeadLetters, admin
from marketpulse.rules import RuleDef, load_rules
from marketpulse.settings import Settings
from marketpulse.state import TableBacking, WriteBehind, as_current, raw_table
from marketpulse.worker.evaluator import Evaluator, Table
from marketpulse.worker.pipeline import Pipeline

log = logging.getLogger(__name__)

# Sending a signal is retried (the agent waits) rather than skipped: dropping it would break
# at-least-once, and Faust acks a message whose handler raised.
_SEND_BACKOFF_S = (0.1, 0.5, 1.0, 2.0, 5.0)

# The evaluating agents take up to BATCH_MAX messages at a time, waiting at most BATCH_WITHIN_S
# for a batch to fill.
BATCH_MAX = 1_000
BATCH_WITHIN_S = 0.005


def repartition_topic(settings: Settings) -> str:
    """Internal topic of market metadata keyed by event key (named like Faust's group_by)."""
    return f"{settings.worker_id}-markets-by-event-repartition"


def group_topic(settings: Settings) -> str:
    """Internal topic of group members' metadata and books, keyed by equivalence group id."""
    return f"{settings.worker_id}-market-data-by-group-repartition"


# --------------------------------------------------------------------------------------------
# Faust wiring
# --------------------------------------------------------------------------------------------


class _FaustProducer:
    """The `send_and_wait` DeadLetters expects, over Faust's own producer, so that dead letters
    are flushed with everything else before Faust commits offsets."""

    def __init__(self, app: faust.App) -> None:
        self._app = app

    async def send_and_wait(self, topic: str, value: bytes, key: bytes | None = None) -> Any:
        return await self._app.producer.send_and_wait(topic, key, value, None, None, None)


def create_app(
    settings: Settings,
    *,
    partitions: int | None = None,
    rules: Mapping[str, RuleDef] | None = None,
    follow_rules_from: Mapping[int, int] | None = None,
) -> faust.App:
    """The worker's Faust app. `partitions` must equal the books topic's partition count
    (`run` reads it from the broker); the catalog's count is the default. With
    `follow_rules_from` (rules-topic offsets, where `rulebook.current` stopped), a task applies
    every later rules-topic record at runtime."""
    n = partitions or CATALOG.topic("books").partitions
    rules = rules if rules is not None else load_rules(settings.rules_file)
    app = faust.App(
        settings.worker_id,  # also the consumer group and the prefix of internal topics
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",  # tables are rebuilt from their changelog topics at start
        topic_replication_factor=1,
        topic_partitions=n,
        topic_disable_leader=True,  # no on_leader timers: one internal topic less
        datadir=str(settings.worker_data_dir),
        web_enabled=settings.worker_web_port > 0,
        web_port=settings.worker_web_port or 6066,
        producer_acks=-1,
        # Throughput (measured on a backlog): changelog and signal records leave in batches,
        # and the consumer hands the stream thousands of records per wake-up, not hundreds.
        producer_linger=0.005,
        producer_max_batch_size=1 << 20,
        broker_max_poll_records=5_000,
        stream_buffer_maxsize=20_000,
        autodiscover=False,
    )
    fastdrain.install(app)  # no four tasks per consumed message (see fastdrain)
    raw: dict[str, Any] = {"key_serializer": "raw", "value_serializer": "raw"}
    books_name, by_event_name = settings.topic("books"), repartition_topic(settings)
    trades_name = settings.topic("trades")
    markets_in = app.topic(settings.topic("markets"), **raw)
    by_event_out = app.topic(by_event_name, partitions=n, internal=True, **raw)
    # internal=True makes Faust create the repartition topic itself (the broker's auto-create
    # is off); for the market-data topics, which `run` checked exist, that creation is a no-op.
    # Trades are keyed by event key like books: co-partitioned, one agent for all. The ticks
    # topic is not read: tick rules evaluate each book's top of book (`top_of_book`).
    inputs = app.topic(books_name, trades_name, by_event_name, partitions=n, internal=True, **raw)
    signals_out = app.topic(settings.topic("signals"), **raw)

    stores: list[WriteBehind] = []

    def table(name: str) -> Table:
        store = WriteBehind(TableBacking(app, raw_table(app, name, n)))
        stores.append(store)
        return store

    evaluator = Evaluator(
        list(rules.values()),
        table("cs-markets"),
        table("cs-books"),
        table("cs-trackers"),
        flow_state=table("flow-state"),
        wallets=table("flow-wallets"),
    )

    async def forward(key: bytes, value: bytes) -> None:
        await by_event_out.send(key=key, value=value)

    in_flight: list[tuple[bytes, bytes, Awaitable[Any] | None]] = []

    async def emit(key: bytes, value: bytes) -> None:
        """Queue a signal; `settle` waits for its delivery (one round trip per batch)."""
        try:
            in_flight.append((key, value, await signals_out.send(key=key, value=value)))
        except Exception as exc:
            log.warning("signal not queued (%r); settle retries it", exc)
            in_flight.append((key, value, None))

    async def deliver(key: bytes, value: bytes, queued: Awaitable[Any] | None) -> None:
        attempt = 0
        while True:  # Kafka being away is transient: wait for it rather than drop a signal
            try:
                await (queued or await signals_out.send(key=key, value=value))
                return
            except Exception as exc:
                queued = None
                pause = _SEND_BACKOFF_S[min(attempt, len(_SEND_BACKOFF_S) - 1)]
                attempt += 1
                log.warning("signal not delivered (attempt %d: %r); retrying", attempt, exc)
                await asyncio.sleep(pause)

    settling = asyncio.Lock()

    async def settle() -> None:
        """End of a batch: its signals are delivered, *then* its table writes are made (so a
        table saying "signalled" is never ahead of the signal), then Faust acks the batch.
        Both agents settle through here: a write is buffered only after its message's signals
        were queued, and the lock makes every flush wait for all queued signals."""
        async with settling:
            while in_flight:
                await deliver(*in_flight.pop(0))
            for store in stores:
                await store.flush()

    async def forget(*_: Any, **__: Any) -> None:
        for store in stores:
            store.forget()
        in_flight.clear()  # their events are not acked: they are processed again

    app.on_partitions_revoked.connect(forget)
    app.on_partitions_assigned.connect(forget)

    groups = registry(list(rules.values()))
    by_group = app.topic(group_topic(settings), partitions=n, internal=True, **raw)
    group_eval = GroupEvaluator(
        list(rules.values()), groups, table("xm-markets"), table("xm-books"), table("xm-trackers")
    )

    async def to_group(key: bytes, value: bytes) -> None:
        await by_group.send(key=key, value=value)

    review_out = app.topic(settings.topic("review"), **raw) if "review" in CATALOG.topics else None

    async def review(key: bytes, value: bytes) -> None:
        assert review_out is not None
        await (await review_out.send(key=key, value=value))

    dlq = DeadLetters(settings, cast(AIOKafkaProducer, _FaustProducer(app)), stage="worker")
    pipeline = Pipeline(
        evaluator,
        books_topic=books_name,
        by_event_topic=by_event_name,
        forward=forward,
        emit=emit,
        dead_letters=dlq,
        trades_topic=trades_name,
        groups=group_eval,
        group_routes=routes(groups),
        to_group=to_group,
        review=review if review_out is not None else None,
    )

    # Agents: concurrency 1 (KAFKA_LOCAL.md: higher commits past in-flight messages).
    @app.agent(markets_in, name="repartition-markets", concurrency=1)
    async def repartition_markets(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            await pipeline.repartition(event.message)

    # Batches amortise Faust's per-event cost and let `settle` coalesce table writes; `within`
    # bounds the wait a lone update can add to its signal's latency.
    async def in_batches(
        stream: faust.StreamT[bytes], handle: Callable[[Any], Awaitable[Any]]
    ) -> None:
        async for events in cast(faust.Stream, stream).take_events(BATCH_MAX, BATCH_WITHIN_S):
            for event in events:
                with as_current(event):
                    await handle(event.message)
            await settle()

    @app.agent(inputs, name="complete-set", concurrency=1)
    async def complete_set(stream: faust.StreamT[bytes]) -> None:
        await in_batches(stream, pipeline.handle)

    @app.agent(by_group, name="cross-market", concurrency=1)
    async def cross_market(stream: faust.StreamT[bytes]) -> None:
        await in_batches(stream, pipeline.handle_group)

    if follow_rules_from is not None:
        book = rulebook.RuleBook(rules)

        def on_rule(key: bytes | None, value: bytes | None) -> None:
            before = dict(book.rules)
            verdict = book.offer(key, value)
            if book.rules != before:
                evaluator.set_rules(list(book.rules.values()))
                group_eval.set_rules(list(book.rules.values()))
                # A group approved at runtime: its members' data must start flowing to it.
                pipeline.group_routes = dict(routes(registry(list(book.rules.values()))))
                log.info("rule %s: %s", verdict.rule_id, verdict.message)

        @app.task
        async def follow_rules() -> None:
            await rulebook.follow(settings, follow_rules_from, on_rule)

    app.pipeline = pipeline  # type: ignore[attr-defined]  # for tests and introspection
    return app


# --------------------------------------------------------------------------------------------
# Process
# --------------------------------------------------------------------------------------------


def freeze_heap() -> None:
    """Move everything alive now (modules, rules, recovered tables) out of the cyclic garbage
    collector's view. A full collection walks every tracked object: ~100,000 of them after
    start, 55-76 ms per pass in the worker (measured), a pause every signal in flight waits
    through; frozen, the same pass took 4 ms. Frozen objects are still freed by reference
    counting, only cycles among them are not."""
    gc.collect()
    gc.freeze()


class _Worker(faust.Worker):
    async def on_startup_finished(self) -> None:
        await super().on_startup_finished()
        freeze_heap()  # tables recovered: what is alive now lives as long as the process


def run(settings: Settings) -> None:
    """Run the worker until SIGTERM or SIGINT (blocking). Faust's Worker installs the signal
    handlers, stops the agents, flushes the producer and commits before returning."""
    import prometheus_client

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)  # Faust and mode look the loop up; make it this one
    partitions = loop.run_until_complete(check_topics(settings))
    # The rules topic as it stands decides the versions in force before any market data is
    # read, so that a restart evaluates with the same versions as before it.
    book, ends = loop.run_until_complete(
        rulebook.current(settings, load_rules(settings.rules_file))
    )
    app = create_app(settings, partitions=partitions, rules=book.rules, follow_rules_from=ends)
    if settings.metrics_port:
        prometheus_client.start_http_server(settings.metrics_port)
    worker = _Worker(
        app,
        loop=loop,
        loglevel=settings.log_level,
        quiet=True,  # no banner or spinner on stdout: logs only
        redirect_stdouts=False,
    )
    worker.spinner = None  # quiet=True still draws a terminal spinner at WARNING and above
    log.info(
        "worker %s: %s -> %s, %d partitions, web %s",
        settings.worker_id,
        settings.topic("books"),
        settings.topic("signals"),
        partitions,
        settings.worker_web_port or "off",
    )
    try:
        worker.execute_from_commandline()  # always ends in SystemExit
    except SystemExit as exc:
        if exc.code not in (None, 0):
            raise


async def check_topics(settings: Settings) -> int:
    """Partition count of the books topic, after checking that every topic the worker reads
    or writes exists (Faust would otherwise wait forever for a missing source topic) and
    that the repartition topic, if it exists, is co-partitioned with books."""
    client = admin(settings)
    try:
        await client.start()
    except KafkaError as exc:
        raise TransientError(f"cannot reach Kafka at {settings.kafka_bootstrap}: {exc}") from exc
    try:
        names = [settings.topic(t) for t in ("markets", "books", "trades", "signals", "dlq")]
        by_event = repartition_topic(settings)
        existing = set(await client.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            raise ConfigError(
                f"topics missing on {settings.kafka_bootstrap}: {', '.join(missing)} "
                "(create them with `marketpulse topics create`)"
            )
        data = [settings.topic(t) for t in ("books", "trades")]
        wanted = data + ([by_event] if by_event in existing else [])
        counts = {d["topic"]: len(d["partitions"]) for d in await client.describe_topics(wanted)}
        # The internal topics are created here, before Faust starts: when Faust creates one
        # while subscribing, its assignor can miss it in stale metadata and the worker then
        # never reads it (seen in the demo and under load: "Ignoring missing topic").
        books_parts = counts[settings.topic("books")]
        for internal in (by_event, group_topic(settings)):
            if internal not in existing:
                with contextlib.suppress(TopicAlreadyExistsError):
                    await client.create_topics([NewTopic(internal, books_parts, 1)])
    finally:
        await client.close()
    books = counts[settings.topic("books")]
    for name in data[1:]:
        if counts[name] != books:
            raise ConfigError(
                f"{name} has {counts[name]} partitions but books has {books}: market data "
                "topics are keyed by event key and must be co-partitioned"
            )
    if by_event in counts and counts[by_event] != books:
        raise ConfigError(
            f"{by_event} has {counts[by_event]} partitions but books has {books}: "
            "they must match (delete the repartition topic, or use a new MPX_WORKER_ID)"
        )
    return books
