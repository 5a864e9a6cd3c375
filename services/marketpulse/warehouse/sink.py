"""The sink: every topic into ClickHouse, in batches, committing offsets only after the insert.

Steps, as in arroyo: decode → map to a row → batch per topic-partition → insert → commit.
A batch covers a contiguous offset range of one partition and is inserted with the token
`topic:partition:first-last`, so a retried or redelivered batch is dropped by ClickHouse;
batches end on offsets aligned to `sink_batch_rows`, so a redelivery after a crash cuts the
same full batches again. Where boundaries still differ (a batch closed early by time), the
tables' ReplacingMergeTree on natural keys + FINAL keeps counts exact; such timed batches of
one table share one insert.

The high-volume topics (ticks, books, trades, signals) skip decoding and mapping in Python:
their messages go to ClickHouse as one Avro container per insert, into a landing table whose
view maps them as the Python mapping does (`Table.landing`, `avro_block`, migration 0004).
Python maps only a batch ClickHouse refuses, which is how a bad message still becomes a dead
letter with its reason.

The poll loop, the inserts and the commits run in separate tasks: a slow or failing warehouse
never stops the consumer from polling (which would get it thrown out of the group), and the
next insert never waits for the broker to acknowledge a commit; memory stays bounded by
pausing the partitions instead. A landing insert sealed while another runs is handed to its
worker thread at once (it waits on the warehouse's lock): inserts follow each other without
waiting for the event loop, which shares the GIL with them and may be busy consuming."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import signal
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener

from marketpulse import metrics
from marketpulse.catalog import CATALOG
from marketpulse.codec import Codec, codec
from marketpulse.errors import BadMessage
from marketpulse.kafka import DeadLetters, producer
from marketpulse.settings import Settings
from marketpulse.warehouse import Warehouse, connect
from marketpulse.warehouse.avro_block import Container

log = logging.getLogger(__name__)

Record = dict[str, Any]
Row = tuple[Any, ...]

# DateTime64(3) columns take epoch milliseconds as-is; bound them to what the type can hold
# (1900..2299) so one absurd timestamp becomes a dead letter, not a batch that never inserts.
_MIN_MS = -2_208_988_800_000
_MAX_MS = 10_413_792_000_000 - 1
_MAX_UINT32 = 2**32 - 1
_MAX_UINT64 = 2**64 - 1


# ---- record → row, one mapping per table ---------------------------------------------------


def _ms(value: int, name: str) -> int:
    if not _MIN_MS <= value <= _MAX_MS:
        raise BadMessage("out_of_range", f"{name}={value} is not a plausible epoch-ms time")
    return value


def _opt_ms(value: int | None, name: str) -> int | None:
    return None if value is None else _ms(value, name)


def _uint(value: int, name: str, top: int) -> int:
    if not 0 <= value <= top:
        raise BadMessage("out_of_range", f"{name}={value} is outside 0..{top}")
    return value


def _json(value: Any) -> str:
    # Sorted and compact: the same record always gives the same bytes (replays compare equal).
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _mid(bid: float | None, ask: float | None) -> float | None:
    return None if bid is None or ask is None else (bid + ask) / 2


def market_row(r: Record) -> Row:
    fee = r["fee"]
    return (
        r["market_id"],
        r["event_id"],
        r["venue"],
        r["question"],
        r["event_title"],
        r["slug"],
        [o["name"] for o in r["outcomes"]],
        [o["token_id"] for o in r["outcomes"]],
        r["status"],
        _opt_ms(r["end_ms"], "end_ms"),
        r["neg_risk"],
        r["neg_risk_augmented"],
        r["exclusive"],
        _uint(r["event_market_count"], "event_market_count", _MAX_UINT32),
        r["tick_size"],
        r["min_size"],
        fee["model"],
        fee["rate"],
        fee["exponent"],
        r["rules_text"],
        r["strike_type"],
        r["floor_strike"],
        r["cap_strike"],
        r["winning_token_id"],
        _ms(r["updated_ms"], "updated_ms"),
    )


def book_row(r: Record) -> Row:
    bids, asks = r["bids"], r["asks"]
    return (
        r["event_key"],
        r["market_id"],
        r["token_id"],
        r["venue"],
        _ms(r["ts_ms"], "ts_ms"),
        _ms(r["recv_ms"], "recv_ms"),
        _uint(r["seq"], "seq", _MAX_UINT64),
        [lv["price"] for lv in bids],
        [lv["size"] for lv in bids],
        [lv["price"] for lv in asks],
        [lv["size"] for lv in asks],
        r["hash"],
    )


def tick_row(r: Record) -> Row:
    return (
        r["event_key"],
        r["market_id"],
        r["token_id"],
        r["venue"],
        _ms(r["ts_ms"], "ts_ms"),
        _ms(r["recv_ms"], "recv_ms"),
        _uint(r["seq"], "seq", _MAX_UINT64),
        r["best_bid"],
        r["best_ask"],
        r["bid_size"],
        r["ask_size"],
        r["last_price"],
        _mid(r["best_bid"], r["best_ask"]),
    )


def trade_row(r: Record) -> Row:
    return (
        r["event_key"],
        r["market_id"],
        r["token_id"],
        r["venue"],
        r["trade_id"],
        _ms(r["ts_ms"], "ts_ms"),
        _ms(r["recv_ms"], "recv_ms"),
        r["price"],
        r["size"],
        r["side"],
        r["wallet"],
        r["tx_hash"],
    )


def signal_row(r: Record) -> Row:
    return (
        r["signal_id"],
        r["rule_id"],
        _uint(r["rule_version"], "rule_version", _MAX_UINT32),
        r["level"],
        r["subject"],
        r["event_key"],
        list(r["market_ids"]),
        _ms(r["ts_ms"], "ts_ms"),
        _ms(r["trigger_recv_ms"], "trigger_recv_ms"),
        r["edge_bps"],
        r["edge_score"],
        r["size"],
        r["notional"],
        _json(r["legs"]),
        dict(r["evidence"]),
        r["summary"],
    )


def intent_row(r: Record) -> Row:
    checks, fills = r["checks"], r["fills"]
    return (
        r["intent_id"],
        r["signal_id"],
        r["status"],
        _ms(r["ts_ms"], "ts_ms"),
        r["reason"],
        _json(r["legs"]),
        r["notional"],
        r["mode"],
        _uint(r["seq"], "seq", _MAX_UINT32),
        r["approval"],
        r["rule_id"],
        r["level"],
        r["subject"],
        r["event_key"],
        r["venue"],
        list(dict.fromkeys(leg["market_id"] for leg in r["legs"])),  # distinct, in leg order
        r["sizing"],
        r["edge_bps"],
        # Checks and fills as parallel arrays (migration 0003): SQL filters them unparsed.
        [c["name"] for c in checks],
        [c["passed"] for c in checks],
        [c["value"] for c in checks],
        [c["limit"] for c in checks],
        [c["detail"] for c in checks],
        [f["market_id"] for f in fills],
        [f["token_id"] for f in fills],
        [f["side"] for f in fills],
        [f["price"] for f in fills],
        [f["size"] for f in fills],
        [f["fee"] for f in fills],
        [_uint(f["levels"], "fill levels", _MAX_UINT32) for f in fills],
        [_ms(f["book_ts_ms"], "fill book_ts_ms") for f in fills],
        r["filled_size"],
        r["fee"],
        _ms(r["expires_ms"], "expires_ms") if r["expires_ms"] else None,  # 0 = never expires
        r["actor"],
    )


def position_row(r: Record) -> Row:
    return (
        r["position_id"],
        r["rule_id"],
        r["venue"],
        r["event_key"],
        r["market_id"],
        r["token_id"],
        r["size"],
        r["avg_price"],
        r["cost"],
        r["fees"],
        r["realised_pnl"],
        r["unrealised_pnl"],
        r["mark_price"],
        r["status"],
        _ms(r["ts_ms"], "ts_ms"),
    )


def dead_letter_row(r: Record) -> Row:
    return (
        r["stage"],
        r["source"],
        r["partition"],
        r["offset"],
        r["error_kind"],
        r["error"],
        r["key"] or b"",  # raw bytes into String: the undecodable payload is kept verbatim
        r["payload"] or b"",
        _ms(r["ts_ms"], "ts_ms"),
    )


def review_row(r: Record) -> Row:
    return (
        r["review_id"],
        r["signal_id"],
        r["rule_id"],
        r["subject"],
        r["status"],
        r["decided_by"],
        r["note"],
        _ms(r["ts_ms"], "ts_ms"),
    )


@dataclass(frozen=True)
class Table:
    """Where one topic goes: its table, its columns (in row order) and its mapping.

    With a `landing` table (migration 0004), ClickHouse maps the messages itself: the sink
    sends their Avro bodies unparsed, and `map` is only the fallback for a batch ClickHouse
    refuses (and the reference the landing view must agree with)."""

    name: str
    topic_id: str
    fields: tuple[str, ...]
    map: Callable[[Record], Row]
    landing: str | None = None

    @property
    def schema(self) -> str:
        return CATALOG.topic(self.topic_id).schema

    @property
    def columns(self) -> tuple[str, ...]:
        return (*self.fields, "_partition", "_offset")

    def row(self, record: Record, partition: int, offset: int) -> Row:
        return (*self.map(record), partition, offset)


def _cols(names: str) -> tuple[str, ...]:
    return tuple(names.split())


_MARKET_DATA = "event_key market_id token_id venue"

# Topic id → table. Each column list is the row order of its mapping function above.
TABLES: dict[str, Table] = {
    t.topic_id: t
    for t in (
        Table(
            "markets",
            "markets",
            _cols(
                """market_id event_id venue question event_title slug outcome_names token_ids
                status end_time neg_risk neg_risk_augmented exclusive event_market_count
                tick_size min_size fee_model fee_rate fee_exponent rules_text strike_type
                floor_strike cap_strike winning_token_id updated"""
            ),
            market_row,
        ),
        Table(
            "books",
            "books",
            _cols(f"{_MARKET_DATA} ts recv seq bid_prices bid_sizes ask_prices ask_sizes hash"),
            book_row,
            landing="books_avro",
        ),
        Table(
            "ticks",
            "ticks",
            _cols(f"{_MARKET_DATA} ts recv seq best_bid best_ask bid_size ask_size last_price mid"),
            tick_row,
            landing="ticks_avro",
        ),
        Table(
            "trades",
            "trades",
            _cols(f"{_MARKET_DATA} trade_id ts recv price size side wallet tx_hash"),
            trade_row,
            landing="trades_avro",
        ),
        Table(
            "signals",
            "signals",
            _cols(
                """signal_id rule_id rule_version level subject event_key market_ids ts
                trigger_recv edge_bps edge_score size notional legs_json evidence summary"""
            ),
            signal_row,
            landing="signals_avro",
        ),
        Table(
            "intents",
            "intents",
            _cols(
                """intent_id signal_id status ts reason legs_json notional mode seq approval
                rule_id level subject event_key venue market_ids sizing edge_bps check_names
                check_passed check_values check_limits check_details fill_market_ids
                fill_token_ids fill_sides fill_prices fill_sizes fill_fees fill_levels
                fill_book_ts filled_size fee expires actor"""
            ),
            intent_row,
        ),
        Table(
            "positions",
            "positions",
            _cols(
                """position_id rule_id venue event_key market_id token_id size avg_price cost
                fees realised_pnl unrealised_pnl mark_price status ts"""
            ),
            position_row,
        ),
        Table(
            "review_items",
            "review",
            _cols("review_id signal_id rule_id subject status decided_by note ts"),
            review_row,
        ),
        Table(
            "dead_letters",
            "dlq",
            _cols("stage source partition offset error_kind error key payload ts"),
            dead_letter_row,
        ),
    )
}


def expected_columns() -> dict[str, tuple[str, ...]]:
    """Table → the columns the sink writes into it (checked against the warehouse at start),
    landing tables included: their columns are the Avro schema's fields."""
    out = {t.name: t.columns for t in TABLES.values()}
    for t in TABLES.values():
        if t.landing:
            fields = CATALOG.schemas[t.schema].definition["fields"]
            out[t.landing] = (*(f["name"] for f in fields), "_partition", "_offset")
    return out


def _offset(msg: ConsumerRecord) -> int:
    return msg.offset


def to_row(table: Table, cdc: Codec, value: bytes | None, partition: int, offset: int) -> Row:
    """Decode and map one message; anything that cannot become a row is a BadMessage."""
    record = cdc.decode(table.schema, value)
    try:
        return table.row(record, partition, offset)
    except BadMessage:
        raise
    except Exception as exc:  # a record the mapping cannot handle must not stop the sink
        raise BadMessage("unmappable", f"{type(exc).__name__}: {exc}") from exc


# ---- batching ------------------------------------------------------------------------------


@dataclass
class Batch:
    """Rows from a contiguous offset range of one topic-partition (dead letters included in
    the range, so committing `last + 1` also commits them)."""

    tp: TopicPartition
    table: Table
    first: int
    end: int  # aligned offset at which this batch closes (exclusive)
    opened: float = field(default_factory=time.monotonic)
    last: int = -1
    rows: list[Row] = field(default_factory=list)
    # Messages for the table's landing table, still Avro, as consumed (no copy per message:
    # every object held per message is more work for the GC).
    raw: list[ConsumerRecord] = field(default_factory=list)
    held: int = 0  # rows + raw messages, as counted in the sink's held rows
    timed: bool = False  # closed before its aligned end (time limit, stop, revoke)
    dropped: bool = False  # its partition was revoked: never commit it

    @property
    def token(self) -> str:
        return f"{self.tp.topic}:{self.tp.partition}:{self.first}-{self.last}"

    @property
    def where(self) -> str:
        return f"{self.tp.topic}[{self.tp.partition}]@{self.first}-{self.last}"


def _token(group: list[Batch]) -> str:
    return "+".join(b.token for b in group)


@dataclass(frozen=True)
class _RawInsert:
    """A landing-table insert under way in a worker thread."""

    done: asyncio.Future[None]
    started: float
    rows: int


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, sink: Sink) -> None:
        self._sink = sink

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._sink.release(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log.info("sink assigned %s", ", ".join(f"{t.topic}[{t.partition}]" for t in assigned))


class Sink:
    """One consumer of the sink group. `accept()`, `seal_due()` and the flush task are the
    steps; `run()` wires them to a consumer. Tests may inject the consumer and producer."""

    revoke_timeout_s = 10.0
    stop_timeout_s = 15.0

    def __init__(
        self,
        settings: Settings,
        warehouse: Warehouse,
        *,
        cdc: Codec | None = None,
        consumer: AIOKafkaConsumer | None = None,
        dlq_producer: AIOKafkaProducer | None = None,
        topic_ids: Iterable[str] | None = None,
    ) -> None:
        """`topic_ids` limits this sink to some catalog topics (default: every table's)."""
        self.settings = settings
        self.warehouse = warehouse
        self._codec = cdc or codec()
        wanted = set(TABLES) if topic_ids is None else set(topic_ids)
        self._tables = {settings.topic(tid): t for tid, t in TABLES.items() if tid in wanted}
        self._containers = {
            topic: Container(t.schema) for topic, t in self._tables.items() if t.landing
        }
        self._dlq_topic = settings.topic("dlq")
        self._consumer = consumer or self._new_consumer()
        self._producer = dlq_producer or producer(settings)
        self._dead = DeadLetters(settings, self._producer, stage="sink", cdc=self._codec)
        self._batch_rows = max(1, settings.sink_batch_rows)
        self._batch_s = max(0.001, settings.sink_batch_ms / 1000)
        self._open: dict[TopicPartition, Batch] = {}
        self._sealed: deque[Batch] = deque()
        self._inflight: list[Batch] = []  # the batches of the insert(s) being written
        self._insert_ended = 0.0  # perf_counter() when the latest landing insert ended
        self._committing: asyncio.Task[None] | None = None  # the latest commit, chained
        self._held = 0  # rows in memory, open + sealed + in flight
        self._changed = asyncio.Event()  # set whenever a batch is sealed or finishes
        self._give_up_at: float | None = None  # set on stop: inserts retry until then
        # For benchmarks: when the first message arrived and the latest commit succeeded, and
        # how long the sink sat with nothing to do but wait for a batch's time limit.
        self.first_fetch: float | None = None
        self.last_commit: float | None = None
        self.timer_wait_s = 0.0
        self._last_busy = time.monotonic()

    def _new_consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=self.settings.sink_group,
            client_id=f"{self.settings.sink_group}-sink",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # Faust may write signals/intents in transactions: never sink an aborted one.
            isolation_level="read_committed",
            # A whole batch of a partition per fetch round trip (the default 1 MiB holds ~4,000
            # books); a response stays capped by fetch_max_bytes, and a paused partition is
            # not fetched at all.
            max_partition_fetch_bytes=4 * 1024 * 1024,
            # A steady stream spread over many partitions would otherwise be fetched a few
            # messages at a time, each round trip encoded and decoded in Python (at 2,000
            # updates/s that was most of the sink's CPU, measured); batches wait for their
            # time limit anyway.
            fetch_min_bytes=256 * 1024,
            fetch_max_wait_ms=100,
        )

    # ---- the loop ----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        self._consumer.subscribe(list(self._tables), listener=_Rebalance(self))
        await self._producer.start()
        try:
            await self._consumer.start()
        except BaseException:
            await self._producer.stop()
            raise
        flusher = asyncio.create_task(self._flush_loop(), name="mpx-sink-flush")
        log.info("sink group %s consuming %s", self.settings.sink_group, sorted(self._tables))
        try:
            await self._poll_until(stop, flusher)
        finally:
            await self._shutdown(flusher)

    async def _poll_until(self, stop: asyncio.Event, flusher: asyncio.Task[None]) -> None:
        # Poll often enough to close batches on time and to notice `stop` quickly.
        timeout_ms = max(10, min(self.settings.sink_batch_ms // 2, 250))
        while not stop.is_set():
            if flusher.done():
                flusher.result()  # re-raise what killed it; it never ends otherwise
            fetched = await self._consumer.getmany(
                timeout_ms=timeout_ms, max_records=self._batch_rows
            )
            if fetched and self.first_fetch is None:
                self.first_fetch = time.monotonic()
            for tp, messages in fetched.items():
                await self.accept(tp, messages)
                self._report_lag(tp, messages[-1].offset + 1)
                # A batch may have been sealed: let the flush task start its insert now rather
                # than after every partition of this fetch is batched.
                await asyncio.sleep(0)
            if fetched:
                self._last_busy = time.monotonic()
                self._seal_caught_up()
            self.seal_due(time.monotonic())
            self._backpressure()
            # getmany() returns without suspending while the fetcher holds records: yield, so
            # the flush task starts inserting a sealed batch while we keep consuming.
            await asyncio.sleep(0)

    async def _shutdown(self, flusher: asyncio.Task[None]) -> None:
        """Graceful stop: flush what is held, commit it, then leave the group."""
        try:
            self.seal(list(self._open), timed=True)
            self._give_up_at = time.monotonic() + self.stop_timeout_s
            if not flusher.done():
                await self._wait_until(lambda: self.pending == 0, self.stop_timeout_s + 1)
            if self.pending:
                log.warning(
                    "sink stopped with %d batch(es) uninserted (re-read on restart)", self.pending
                )
        finally:
            for task in (flusher, self._committing):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
            await self._consumer.stop()
            await self._producer.stop()

    def _seal_caught_up(self) -> None:
        """Seal a table's open batches once every one of them has read all there is in its
        partition and together they hold a tenth of a full batch: the end of a backlog or of a
        burst goes in now, in one insert, instead of waiting idle for the time limit. A
        trickle keeps the time limit (smaller inserts would only make more parts to merge),
        and so does a partition ending in a transaction marker (never delivered, so never
        reached)."""
        tables: dict[str, list[TopicPartition]] = {}
        behind: set[str] = set()
        held: dict[str, int] = {}
        for tp, b in self._open.items():
            name = b.table.name
            tables.setdefault(name, []).append(tp)
            held[name] = held.get(name, 0) + b.last + 1 - b.first
            end = self._consumer.highwater(tp)
            if end is None or b.last + 1 < end:
                behind.add(name)
        for name, tps in tables.items():
            if name not in behind and held[name] >= self._batch_rows // 10:
                self.seal(tps, timed=True)

    def _report_lag(self, tp: TopicPartition, next_offset: int) -> None:
        # The fetch response carries the partition's high watermark: lag costs no request.
        end = self._consumer.highwater(tp)
        if end is not None:
            metrics.SINK_LAG.labels(self.settings.sink_group, tp.topic, str(tp.partition)).set(
                max(0, end - next_offset)
            )

    # ---- decode, map, batch ------------------------------------------------------------

    async def accept(self, tp: TopicPartition, messages: Iterable[ConsumerRecord]) -> None:
        """Decode and map each message into the open batch of its partition; a message that
        cannot become a row goes to the dead-letter topic and still advances the batch.

        A table with a landing table takes the messages of its current schema version as they
        are (ClickHouse decodes them); only the others are decoded here."""
        table = self._tables[tp.topic]
        container = self._containers.get(tp.topic)
        pending = list(messages)
        i = 0
        while i < len(pending):
            if container is not None:
                j = container.accepted_run(pending, i)
                if j > i:
                    self._add_raw(tp, table, pending, i, j)
                    i = j
                    continue
            msg = pending[i]
            i += 1
            try:
                row: Row | None = to_row(table, self._codec, msg.value, msg.partition, msg.offset)
            except BadMessage as err:
                await self._reject(tp, msg.offset, msg.key, msg.value, err)
                row = None
            self._add(tp, table, msg.offset, row)

    async def _reject(
        self,
        tp: TopicPartition,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        err: BadMessage,
    ) -> None:
        if tp.topic == self._dlq_topic:
            # A dead letter that cannot be read is counted and logged, never dead-lettered:
            # that would loop forever.
            metrics.SINK_DROPPED.labels(tp.topic, err.kind).inc()
            log.error(
                "undecodable dead letter %s[%d]@%d skipped: %s",
                tp.topic,
                tp.partition,
                offset,
                err,
            )
            return
        await self._dead.send(
            tp.topic, err, partition=tp.partition, offset=offset, key=key, payload=value
        )

    def _add(self, tp: TopicPartition, table: Table, offset: int, row: Row | None) -> None:
        """Add a mapped `row`, or none (a dead letter: only the offset range grows)."""
        batch = self._batch_at(tp, table, offset)
        batch.last = offset
        if row is not None:
            batch.rows.append(row)
            batch.held += 1
            self._held += 1
        if offset + 1 >= batch.end:
            self.seal([tp])

    def _add_raw(
        self, tp: TopicPartition, table: Table, msgs: list[ConsumerRecord], i: int, j: int
    ) -> None:
        """Add the messages `msgs[i:j]` (offsets ascending) for the landing table as they are,
        a batch's share at a time: the event loop does no work per message here."""
        while i < j:
            first = msgs[i].offset
            batch = self._batch_at(tp, table, first)
            # Offsets may skip (compaction, transaction markers), never repeat: at most
            # end - first of the messages belong to this batch.
            k = bisect_left(msgs, batch.end, i, min(j, i + batch.end - first), key=_offset)
            batch.raw += msgs[i:k]
            batch.last = msgs[k - 1].offset
            batch.held += k - i
            self._held += k - i
            if batch.last + 1 >= batch.end:
                self.seal([tp])
            i = k

    def _batch_at(self, tp: TopicPartition, table: Table, offset: int) -> Batch:
        """The open batch of `tp` that `offset` belongs to, opened if need be."""
        batch = self._open.get(tp)
        if batch is not None and offset >= batch.end:
            self.seal([tp])  # a gap (compaction) jumped past the boundary
            batch = None
        if batch is None:
            end = (offset // self._batch_rows + 1) * self._batch_rows
            batch = self._open[tp] = Batch(tp, table, first=offset, end=end)
        return batch

    def seal(self, tps: Iterable[TopicPartition], *, timed: bool = False) -> None:
        """Close the open batches of `tps` and queue them for insert, in offset order.
        `timed`: closed before their aligned end, so a redelivery may cut them otherwise."""
        for tp in tps:
            batch = self._open.pop(tp, None)
            if batch is not None:
                batch.timed = timed
                self._sealed.append(batch)
        if self._sealed:
            self._notify()

    def seal_due(self, now: float) -> None:
        """Seal the batches open for `sink_batch_ms`, and with them the batches of their tables
        past half of it: those would time out soon after, and now they share one insert."""
        tables = {b.table.name for b in self._open.values() if now - b.opened >= self._batch_s}
        due = [
            tp
            for tp, b in self._open.items()
            if b.table.name in tables and now - b.opened >= self._batch_s / 2
        ]
        if due and self.pending == 0:
            # Nothing arrived or was written since `_last_busy`: that was waiting, not work.
            self.timer_wait_s += max(0.0, now - self._last_busy)
        self.seal(due, timed=True)

    @property
    def held_rows(self) -> int:
        return self._held

    @property
    def paused(self) -> bool:
        """True while backpressure holds the partitions."""
        return bool(self._consumer.paused())

    @property
    def pending(self) -> int:
        """Batches sealed but not yet written (including those being written), plus one while
        a commit is under way."""
        committing = self._committing is not None and not self._committing.done()
        return len(self._sealed) + len(self._inflight) + committing

    def _backpressure(self) -> None:
        # Hysteresis: pause at the limit, resume at half, so we do not flap every poll.
        limit = self.settings.sink_max_buffered_rows
        if self._held >= limit:
            assigned = self._consumer.assignment()
            if assigned - self._consumer.paused():
                log.info("sink holds %d rows (limit %d): pausing partitions", self._held, limit)
                self._consumer.pause(*assigned)
            if not self._sealed and not self._inflight:
                # The limit is reached by open batches alone (many partitions, none full):
                # write them now rather than sit paused until their time limit.
                self.seal(list(self._open), timed=True)
        elif self._held <= limit // 2 and self._consumer.paused():
            self._consumer.resume(*self._consumer.paused())

    # ---- insert and commit -------------------------------------------------------------

    async def _flush_loop(self) -> None:
        ahead: tuple[list[Batch], _RawInsert | None] | None = None
        while True:
            if ahead is None:
                await self._wait_for(lambda: bool(self._sealed))
                group = self._next_insert()
                raw = self._start_raw(group)
            else:
                (group, raw), ahead = ahead, None
            self._inflight = group
            if raw is not None:
                ahead = await self._start_next(raw)
            try:
                if not await self._write(group, raw):
                    # Later batches of these partitions must not commit past the lost ones.
                    lost = {b.tp for b in group}
                    self._forget(lost)
                    for b in ahead[0] if ahead else []:
                        b.dropped = b.dropped or b.tp in lost
                else:
                    self._commit_later([b for b in group if not b.dropped])
            finally:
                self._held -= sum(b.held for b in group)
                self._inflight = list(ahead[0]) if ahead else []
                self._last_busy = time.monotonic()
                self._notify()

    async def _start_next(self, raw: _RawInsert) -> tuple[list[Batch], _RawInsert | None] | None:
        """While `raw` is written, start the next insert as soon as one is sealed: its thread
        waits on the warehouse's lock and starts the moment `raw` ends, however busy the event
        loop is by then. Its offsets still commit after `raw`'s, and not at all if `raw`'s
        batches are lost."""
        raw.done.add_done_callback(lambda _: self._notify())
        await self._wait_for(lambda: raw.done.done() or bool(self._sealed))
        if raw.done.done():
            return None  # the loop takes the next one as usual
        following = self._next_insert()
        self._inflight = self._inflight + following
        return following, self._start_raw(following)

    def _next_insert(self) -> list[Batch]:
        """The next batch, and with a timed one the other timed batches of its table queued
        now: one insert instead of one per partition (fewer, larger inserts are what
        ClickHouse wants; at most one batch per partition, all already held in memory).
        Timed boundaries depend on timing, so a redelivery never repeats them and their own
        tokens could not drop it anyway (ReplacingMergeTree + FINAL do); aligned full batches
        keep their own insert and token. A batch queued behind another of its partition stays
        there: offsets commit in order."""
        first = self._sealed.popleft()
        if not first.timed:
            return [first]
        group, rest, seen = [first], deque[Batch](), {first.tp}
        for b in self._sealed:
            if b.timed and b.table is first.table and b.tp not in seen:
                group.append(b)
            else:
                rest.append(b)
            seen.add(b.tp)
        self._sealed = rest
        return group

    async def _write(self, group: list[Batch], raw: _RawInsert | None = None) -> bool:
        """Insert `group` (batches of one table) at once, with retries and backoff; False only
        when giving up (stop, or every batch revoked).

        Raw messages go to the table's landing table in one try (`raw`, from `_start_raw`);
        if ClickHouse refuses them (a bad message, or the warehouse is down), they are decoded
        and mapped here, the bad ones dead-lettered, and the rows inserted (and retried) like
        any other batch."""
        token = _token(group)
        where = ", ".join(b.where for b in group)
        if raw is not None and await self._raw_written(group, raw):
            return True
        for b in group:
            if b.raw:
                await self._map_raw(b)
        rows = [r for b in group for r in b.rows]
        if not rows:
            return True  # only dead letters: nothing to insert, the offsets still commit
        table, attempt = group[0].table, 0
        while True:
            started = time.perf_counter()
            try:
                await asyncio.to_thread(
                    self.warehouse.insert, table.name, rows, table.columns, token
                )
            except Exception as exc:
                metrics.SINK_INSERT_ERRORS.labels(table.name).inc()
                attempt += 1
                if all(b.dropped for b in group) or self._past_deadline():
                    log.error("giving up on %s into %s: %s", where, table.name, exc)
                    return False
                delay = min(10.0, 0.2 * 2**attempt) * random.uniform(0.5, 1.0)
                log.warning(
                    "insert of %s into %s failed (attempt %d, retry in %.1fs): %s",
                    where,
                    table.name,
                    attempt,
                    delay,
                    exc,
                )
                await asyncio.sleep(delay)
                continue
            self._inserted(table.name, len(rows), started)
            log.debug("inserted %s: %d rows into %s", where, len(rows), table.name)
            return True

    def _start_raw(self, group: list[Batch]) -> _RawInsert | None:
        """Start inserting `group` into its landing table in a worker thread (which also builds
        the container: the event loop goes on consuming meanwhile), when all of its messages
        are raw; None otherwise."""
        if not any(b.raw for b in group) or any(b.rows for b in group):
            return None
        landing, token = group[0].table.landing, _token(group)
        assert landing is not None
        build = self._containers[group[0].tp.topic].build
        batches = [(b.tp.partition, b.raw) for b in group]

        def insert() -> None:
            self.warehouse.insert_avro(landing, build(batches), token)

        done = asyncio.get_running_loop().run_in_executor(None, insert)
        # Retrieved here so that one never awaited (the flush task cancelled on stop) is not
        # logged as an error; whoever awaits it still gets the exception.
        done.add_done_callback(lambda f: f.cancelled() or f.exception())
        return _RawInsert(done, time.perf_counter(), sum(len(b.raw) for b in group))

    async def _raw_written(self, group: list[Batch], raw: _RawInsert) -> bool:
        table, landing = group[0].table.name, group[0].table.landing
        try:
            await raw.done
        except Exception as exc:
            metrics.SINK_AVRO_FALLBACKS.labels(table).inc()
            log.warning("%s refused by %s, mapping it in Python: %s", _token(group), landing, exc)
            return False
        # An insert queued behind another one started when that one ended.
        self._inserted(table, raw.rows, max(raw.started, self._insert_ended))
        self._insert_ended = time.perf_counter()
        log.debug("inserted %s: %d Avro rows into %s", _token(group), raw.rows, landing)
        return True

    @staticmethod
    def _inserted(table: str, rows: int, started: float) -> None:
        metrics.SINK_BATCH_SECONDS.labels(table).observe(time.perf_counter() - started)
        metrics.SINK_BATCH_ROWS.labels(table).observe(rows)
        metrics.SINK_ROWS.labels(table).inc(rows)

    async def _map_raw(self, batch: Batch) -> None:
        """Decode and map the raw messages of `batch` into its rows (offset order kept)."""
        rows: list[tuple[int, Row]] = []
        for msg in batch.raw:
            try:
                row = to_row(batch.table, self._codec, msg.value, batch.tp.partition, msg.offset)
            except BadMessage as err:
                await self._reject(batch.tp, msg.offset, msg.key, msg.value, err)
                continue
            rows.append((msg.offset, row))
        batch.raw = []
        rows += [(r[-1], r) for r in batch.rows]  # a row's last column is its offset
        batch.rows = [r for _, r in sorted(rows, key=lambda pair: pair[0])]

    def _commit_later(self, batches: list[Batch]) -> None:
        """Commit in the background, so the next insert need not wait for the broker; each
        commit waits for the one before it, so offsets still advance in order."""
        if batches:
            previous = self._committing
            self._committing = asyncio.create_task(self._commit(batches, previous))

    async def _commit(self, batches: list[Batch], previous: asyncio.Task[None] | None) -> None:
        try:
            if previous is not None:
                await asyncio.shield(previous)  # never raises: see below
            await self._consumer.commit({b.tp: b.last + 1 for b in batches})
            self.last_commit = time.monotonic()
        except Exception as exc:
            # The rows are in; whoever re-reads these offsets inserts the same token (or
            # rows FINAL collapses), so a lost commit costs work, not correctness.
            log.warning("commit of %s failed: %s", ", ".join(b.where for b in batches), exc)
        finally:
            self._notify()

    def _past_deadline(self) -> bool:
        return self._give_up_at is not None and time.monotonic() > self._give_up_at

    # ---- rebalance ---------------------------------------------------------------------

    async def release(self, revoked: set[TopicPartition]) -> None:
        """Before giving partitions away, write and commit what we hold of them; what cannot
        be written in time is dropped (never committed) and re-read by the next owner."""
        self.seal([tp for tp in self._open if tp in revoked], timed=True)

        def settled() -> bool:
            inflight = any(b.tp in revoked for b in self._inflight)
            committing = self._committing is not None and not self._committing.done()
            return not (inflight or committing) and all(b.tp not in revoked for b in self._sealed)

        if not await self._wait_until(settled, self.revoke_timeout_s):
            self._forget(revoked)
            for b in self._inflight:
                if b.tp in revoked:
                    b.dropped = True
            log.warning("revoked partitions released with unwritten batches (re-read later)")

    def _forget(self, tps: set[TopicPartition]) -> None:
        """Drop the queued batches of `tps`, uncommitted: whoever consumes those partitions
        next re-reads them from the last committed offset."""
        self._held -= sum(b.held for b in self._sealed if b.tp in tps)
        self._sealed = deque(b for b in self._sealed if b.tp not in tps)

    async def _wait_for(self, predicate: Callable[[], bool]) -> None:
        # No await between the check, the clear and the wait, so no change can slip past;
        # set() wakes every waiter, and each re-checks its own predicate.
        while not predicate():
            self._changed.clear()
            await self._changed.wait()

    async def _wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._wait_for(predicate), timeout)
        except TimeoutError:
            return predicate()
        return True

    def _notify(self) -> None:
        self._changed.set()


async def run(
    settings: Settings, stop: asyncio.Event | None = None, warehouse: Warehouse | None = None
) -> None:
    """Run the sink until `stop` is set (or SIGINT/SIGTERM when no event is given).

    Pass `warehouse` when this process already owns it (embedded chDB: the API process)."""
    owned = warehouse is None
    wh = warehouse or connect(settings)
    try:
        await asyncio.to_thread(wh.migrate)
        await asyncio.to_thread(wh.require_columns, expected_columns())
        if stop is None:
            stop = _stop_on_signals()
        await Sink(settings, wh).run(stop)
    finally:
        if owned:
            wh.close()


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop
