"""How the sink cuts its inserts, without a broker or ClickHouse: the Avro container it hands
ClickHouse, and which sealed batches share one insert."""

from __future__ import annotations

import asyncio
import contextlib
import io
import threading
import time
from collections.abc import Callable
from typing import Any

import fastavro
from aiokafka import ConsumerRecord, TopicPartition

from marketpulse.codec import Codec
from marketpulse.settings import Settings
from marketpulse.warehouse.avro_block import Container, _offset_long, zigzag
from marketpulse.warehouse.sink import TABLES, Sink, to_row

CODEC = Codec()
T0 = 1_767_225_600_000
TICK = {
    "event_key": "pm:ev1",
    "market_id": "pm:0xabc",
    "token_id": "t1",
    "venue": "polymarket",
    "ts_ms": T0,
    "recv_ms": T0 + 5,
    "seq": 7,
    "best_bid": 0.4,
}


def _record(tp: TopicPartition, offset: int, value: bytes) -> ConsumerRecord:
    return ConsumerRecord(tp.topic, tp.partition, offset, T0, 0, b"k", value, None, 1, 1, ())


def test_zigzag_is_avro_long_encoding() -> None:
    for n in (0, -1, 1, 63, -64, 64, 2**31, -(2**40), 2**62):
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, {"type": "long"}, n)
        assert zigzag(n) == buf.getvalue(), n


def test_offsets_take_the_unrolled_encoding_at_every_width() -> None:
    for edge in (0, 2**6, 2**13, 2**20, 2**27, 2**40):
        for n in (edge - 1, edge, edge + 1):
            if n >= 0:
                assert _offset_long(n) == zigzag(n), n


def test_the_container_is_the_messages_plus_partition_and_offset() -> None:
    values = [CODEC.encode("tick", {**TICK, "seq": i}) for i in range(3)]
    c = Container("tick")
    assert all(c.accepts(v) for v in values)
    assert not c.accepts(
        CODEC.encode("trade", {**TICK, "trade_id": "x", "price": 1.0, "size": 1.0, "side": "BUY"})
    )
    assert not c.accepts(None) and not c.accepts(b"\x00\x00")
    tp = TopicPartition("u.mpx.ticks.v1", 2)
    messages = [_record(tp, 40 + i, v) for i, v in enumerate(values)]
    records = list(fastavro.reader(io.BytesIO(c.build([(2, messages)]))))
    assert [(r["seq"], r["_partition"], r["_offset"]) for r in records] == [
        (0, 2, 40),
        (1, 2, 41),
        (2, 2, 42),
    ]
    assert records[0] | {"_partition": 0, "_offset": 0} == {
        **CODEC.decode("tick", values[0]),
        "_partition": 0,
        "_offset": 0,
    }


def _sink(batch_rows: int, consumer: Any = None, **settings: int) -> Sink:
    """A sink without broker or warehouse; `consumer` stands in where a test needs one."""
    s = Settings(sink_batch_rows=batch_rows, sink_batch_ms=60_000, topic_prefix="u.", **settings)
    return Sink(s, warehouse=None, consumer=consumer or object(), dlq_producer=object())  # type: ignore[arg-type]


def _feed(sink: Sink, topic_id: str, partition: int, offsets: range) -> TopicPartition:
    tp = TopicPartition(f"u.{topic_id}", partition)
    for off in offsets:
        sink._add(tp, TABLES[topic_id], off, ("row", off))
    return tp


def test_timed_batches_of_one_table_share_an_insert() -> None:
    sink = _sink(batch_rows=10)
    a = _feed(sink, "ticks", 0, range(0, 4))
    t = _feed(sink, "trades", 0, range(0, 2))  # another table: its own insert
    b = _feed(sink, "ticks", 1, range(0, 5))
    c = _feed(sink, "ticks", 2, range(0, 3))
    sink.seal([a, t, b, c], timed=True)
    assert [x.tp for x in sink._next_insert()] == [a, b, c]
    assert [x.tp for x in sink._next_insert()] == [t]
    assert not sink._sealed


def test_full_batches_keep_their_own_insert_and_offsets_stay_in_order() -> None:
    sink = _sink(batch_rows=10)
    a = _feed(sink, "ticks", 0, range(0, 13))  # a full batch 0-9, open 10-12
    b = _feed(sink, "ticks", 1, range(0, 2))
    sink.seal([b, a], timed=True)
    full, b_timed, a_timed = list(sink._sealed)
    assert not full.timed and b_timed.timed and a_timed.timed
    assert sink._next_insert() == [full]
    # The timed batch of partition 0 may join b's insert only now that 0-9 went before it.
    assert sink._next_insert() == [b_timed, a_timed]


def test_a_timed_batch_never_overtakes_an_earlier_batch_of_its_partition() -> None:
    sink = _sink(batch_rows=10)
    b = _feed(sink, "ticks", 1, range(0, 2))
    sink.seal([b], timed=True)
    a = _feed(sink, "ticks", 0, range(0, 13))  # full 0-9 queued after b, then timed 10-12
    sink.seal([a], timed=True)
    first = sink._next_insert()
    assert [(x.tp, x.first) for x in first] == [(b, 0)]
    assert [(x.tp, x.first) for x in sink._next_insert()] == [(a, 0)]
    assert [(x.tp, x.first) for x in sink._next_insert()] == [(a, 10)]


class _Consumer:
    """The consumer facts the sink's sealing reads: high watermarks, assignment, pauses."""

    def __init__(self, ends: dict[TopicPartition, int]) -> None:
        self.ends = ends
        self._paused: set[TopicPartition] = set()

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.ends.get(tp)

    def assignment(self) -> set[TopicPartition]:
        return set(self.ends)

    def paused(self) -> set[TopicPartition]:
        return set(self._paused)

    def pause(self, *tps: TopicPartition) -> None:
        self._paused.update(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self._paused.difference_update(tps)


def test_a_table_read_to_its_end_is_sealed_at_once_in_one_insert() -> None:
    a, b = TopicPartition("u.ticks", 0), TopicPartition("u.ticks", 1)
    t = TopicPartition("u.trades", 0)
    consumer = _Consumer({a: 60, b: 50, t: 10})
    sink = _sink(100, consumer)
    _feed(sink, "ticks", 0, range(0, 40))  # 20 more to come in partition 0
    _feed(sink, "ticks", 1, range(0, 50))
    _feed(sink, "trades", 0, range(0, 5))
    sink._seal_caught_up()
    assert not sink._sealed, "partition 0 of ticks is still behind"
    _feed(sink, "ticks", 0, range(40, 60))
    sink._seal_caught_up()
    # Both ticks partitions at their end: sealed together, one insert. The trades batch is
    # at its end too, but 5 rows is less than a tenth of a batch: it waits for its timer.
    assert [x.tp for x in sink._next_insert()] == [a, b]
    assert not sink._sealed and set(sink._open) == {t}


def test_at_the_row_limit_open_batches_are_written_not_left_to_their_timer() -> None:
    tps = {TopicPartition("u.ticks", p): 1000 for p in range(4)}
    consumer = _Consumer(tps)
    sink = _sink(100, consumer, sink_max_buffered_rows=200)
    for p in range(4):
        _feed(sink, "ticks", p, range(0, 50))  # none full, 200 rows held
    sink._backpressure()
    assert consumer.paused() == set(tps)
    assert sorted(b.tp.partition for b in sink._sealed) == [0, 1, 2, 3]
    assert all(b.timed for b in sink._sealed) and not sink._open


class _Commits:
    def __init__(self) -> None:
        self.committed: dict[TopicPartition, int] = {}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.committed.update(offsets)


class _Warehouse:
    """Records inserts; the landing table refuses everything while `refuse` is set."""

    def __init__(self, refuse: bool) -> None:
        self.refuse = refuse
        self.avro: list[tuple[str, str, list[dict]]] = []
        self.rows: list[tuple[str, str, list[tuple]]] = []

    def insert_avro(self, table: str, container: bytes, token: str) -> None:
        if self.refuse:
            raise ValueError("Code: 395. out_of_range")
        self.avro.append((table, token, list(fastavro.reader(io.BytesIO(container)))))

    def insert(self, table: str, rows: list, columns: tuple, token: str) -> None:
        self.rows.append((table, token, rows))


async def _flush(refuse: bool) -> tuple[_Warehouse, _Commits, list[TopicPartition]]:
    settings = Settings(sink_batch_rows=10, sink_batch_ms=60_000, topic_prefix="u.")
    wh, consumer = _Warehouse(refuse), _Commits()
    sink = Sink(settings, warehouse=wh, consumer=consumer, dlq_producer=object())  # type: ignore[arg-type]
    tp0, tp1 = TopicPartition("u.mpx.ticks.v1", 0), TopicPartition("u.mpx.ticks.v1", 1)
    value = CODEC.encode("tick", TICK)
    sink._add_raw(tp0, TABLES["ticks"], [_record(tp0, 4, value)], 0, 1)
    sink._add(tp1, TABLES["ticks"], 7, None)  # a dead letter: only the offset advances
    sink.seal([tp0, tp1], timed=True)
    flusher = asyncio.create_task(sink._flush_loop())
    try:
        await asyncio.wait_for(sink._wait_for(lambda: sink.pending == 0), 5)
    finally:
        flusher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flusher
    assert sink.held_rows == 0
    return wh, consumer, [tp0, tp1]


async def test_raw_messages_go_to_the_landing_table_in_one_insert() -> None:
    wh, consumer, (tp0, tp1) = await _flush(refuse=False)
    assert wh.rows == []
    ((table, token, records),) = wh.avro
    assert (table, token) == ("ticks_avro", "u.mpx.ticks.v1:0:4-4+u.mpx.ticks.v1:1:7-7")
    assert [(r["seq"], r["_partition"], r["_offset"]) for r in records] == [(7, 0, 4)]
    assert consumer.committed == {tp0: 5, tp1: 8}


async def test_a_refused_insert_is_mapped_in_python_with_the_same_token() -> None:
    wh, consumer, (tp0, tp1) = await _flush(refuse=True)
    assert wh.avro == []
    ((table, token, rows),) = wh.rows
    assert (table, token) == ("ticks", "u.mpx.ticks.v1:0:4-4+u.mpx.ticks.v1:1:7-7")
    assert rows == [to_row(TABLES["ticks"], CODEC, CODEC.encode("tick", TICK), 0, 4)]
    assert consumer.committed == {tp0: 5, tp1: 8}


def _records(tp: TopicPartition, offsets: list[int]) -> list[ConsumerRecord]:
    value = CODEC.encode("tick", TICK)
    return [_record(tp, o, value) for o in offsets]


def test_raw_runs_are_cut_at_the_aligned_boundaries_across_offset_gaps() -> None:
    sink = _sink(batch_rows=10)
    tp = TopicPartition("u.mpx.ticks.v1", 0)
    msgs = _records(tp, [5, 6, 7, 8, 9, 10, 11, 15, 25, 26])
    sink._add_raw(tp, TABLES["ticks"], msgs, 0, len(msgs))
    # 5-9 ends on its boundary; 25 jumps past 10-19's end, which closes early.
    assert [([m.offset for m in b.raw], b.first, b.last, b.end) for b in sink._sealed] == [
        ([5, 6, 7, 8, 9], 5, 9, 10),
        ([10, 11, 15], 10, 15, 20),
    ]
    still_open = sink._open[tp]
    assert [m.offset for m in still_open.raw] == [25, 26] and still_open.end == 30
    assert sink.held_rows == len(msgs) == sum(b.held for b in [*sink._sealed, still_open])


def test_accept_sends_only_the_current_schema_version_raw() -> None:
    sink = _sink(batch_rows=100)
    tp = TopicPartition("u.mpx.ticks.v1", 0)
    good = _records(tp, [0, 1, 3])
    other = ConsumerRecord(tp.topic, 0, 2, T0, 0, b"k", b"not avro", None, 1, 8, ())
    sent: list[tuple[str, int]] = []

    async def reject(tp: TopicPartition, offset: int, *_: object) -> None:
        sent.append((tp.topic, offset))

    sink._reject = reject  # type: ignore[method-assign]
    asyncio.run(sink.accept(tp, [good[0], good[1], other, good[2]]))
    batch = sink._open[tp]
    assert [m.offset for m in batch.raw] == [0, 1, 3] and batch.rows == []
    assert sent == [(tp.topic, 2)] and (batch.first, batch.last) == (0, 3)


class _SlowFirstWarehouse(_Warehouse):
    """The first landing insert waits for `release`; every insert's entry is recorded."""

    def __init__(self) -> None:
        super().__init__(refuse=False)
        self.release = threading.Event()
        self.entered: list[str] = []

    def insert_avro(self, table: str, container: bytes, token: str) -> None:
        self.entered.append(token)
        if len(self.entered) == 1:
            self.release.wait(5)
        super().insert_avro(table, container, token)


async def test_the_next_insert_is_queued_while_one_runs_and_commits_stay_in_order() -> None:
    settings = Settings(sink_batch_rows=2, sink_batch_ms=60_000, topic_prefix="u.")
    wh, commits = _SlowFirstWarehouse(), _Ordered()
    sink = Sink(settings, warehouse=wh, consumer=commits, dlq_producer=object())  # type: ignore[arg-type]
    tp = TopicPartition("u.mpx.ticks.v1", 0)
    msgs = _records(tp, [0, 1, 2, 3])
    flusher = asyncio.create_task(sink._flush_loop())
    try:
        sink._add_raw(tp, TABLES["ticks"], msgs, 0, 2)  # 0-1: inserting, held up
        await _poll(lambda: len(wh.entered) == 1)
        sink._add_raw(tp, TABLES["ticks"], msgs, 2, 4)  # 2-3: handed to its thread at once
        await _poll(lambda: len(wh.entered) == 2)
        assert commits.sequence == [], "committed before the first insert ended"
        wh.release.set()
        await asyncio.wait_for(sink._wait_for(lambda: sink.pending == 0), 5)
    finally:
        wh.release.set()
        flusher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flusher
    assert wh.entered == ["u.mpx.ticks.v1:0:0-1", "u.mpx.ticks.v1:0:2-3"]
    assert commits.sequence == [{tp: 2}, {tp: 4}] and sink.held_rows == 0


class _Ordered:
    def __init__(self) -> None:
        self.sequence: list[dict[TopicPartition, int]] = []

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.sequence.append(dict(offsets))


async def _poll(predicate: Callable[[], bool], timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)
