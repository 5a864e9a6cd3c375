"""How the sink cuts its inserts, without a broker or ClickHouse: the Avro container it hands
ClickHouse, and which sealed batches share one insert."""

from __future__ import annotations

import asyncio
import contextlib
import io

import fastavro
from aiokafka import TopicPartition

from marketpulse.codec import Codec
from marketpulse.settings import Settings
from marketpulse.warehouse.avro_block import Container, zigzag
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


def test_zigzag_is_avro_long_encoding() -> None:
    for n in (0, -1, 1, 63, -64, 64, 2**31, -(2**40), 2**62):
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, {"type": "long"}, n)
        assert zigzag(n) == buf.getvalue(), n


def test_the_container_is_the_messages_plus_partition_and_offset() -> None:
    values = [CODEC.encode("tick", {**TICK, "seq": i}) for i in range(3)]
    c = Container("tick")
    assert all(c.accepts(v) for v in values)
    assert not c.accepts(
        CODEC.encode("trade", {**TICK, "trade_id": "x", "price": 1.0, "size": 1.0, "side": "BUY"})
    )
    assert not c.accepts(None) and not c.accepts(b"\x00\x00")
    records = list(
        fastavro.reader(io.BytesIO(c.build([(2, 40 + i, v) for i, v in enumerate(values)])))
    )
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


def _sink(batch_rows: int) -> Sink:
    settings = Settings(sink_batch_rows=batch_rows, sink_batch_ms=60_000, topic_prefix="u.")
    return Sink(settings, warehouse=None, consumer=object(), dlq_producer=object())  # type: ignore[arg-type]


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
    sink._add(tp0, TABLES["ticks"], 4, None, raw=(4, b"k", value))
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
