"""Record → row mapping of the sink, for every table, and its batching rules. No broker, no
ClickHouse: records go through the real codec so Avro defaults are filled as in production."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import pytest
from aiokafka import TopicPartition

from marketpulse.catalog import CATALOG
from marketpulse.codec import Codec
from marketpulse.errors import BadMessage
from marketpulse.settings import Settings
from marketpulse.warehouse.sink import TABLES, Sink, Table, to_row

CODEC = Codec()
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def wire(topic_id: str, record: dict[str, Any]) -> bytes:
    return CODEC.encode(CATALOG.topic(topic_id).schema, record)


def mapped(topic_id: str, record: dict[str, Any], partition: int = 2, offset: int = 41) -> dict:
    table = TABLES[topic_id]
    row = to_row(table, CODEC, wire(topic_id, record), partition, offset)
    assert len(row) == len(table.columns)
    return dict(zip(table.columns, row, strict=True))


MARKET = {
    "market_id": "pm:0xabc",
    "event_id": "pm:ev1",
    "venue": "polymarket",
    "question": "Will it rain?",
    "outcomes": [{"name": "Yes", "token_id": "t1"}, {"name": "No", "token_id": "t2"}],
    "status": "active",
    "updated_ms": T0,
}
TICK = {
    "event_key": "pm:ev1",
    "market_id": "pm:0xabc",
    "token_id": "t1",
    "venue": "polymarket",
    "ts_ms": T0,
    "recv_ms": T0 + 5,
    "seq": 7,
    "best_bid": 0.4,
    "best_ask": 0.5,
    "bid_size": 10.0,
    "ask_size": 12.0,
}
BOOK = {
    **{k: TICK[k] for k in ("event_key", "market_id", "token_id", "venue", "ts_ms", "recv_ms")},
    "seq": 3,
    "bids": [{"price": 0.4, "size": 10.0}, {"price": 0.39, "size": 5.0}],
    "asks": [{"price": 0.5, "size": 12.0}],
}
TRADE = {
    **{k: TICK[k] for k in ("event_key", "market_id", "token_id", "venue", "ts_ms", "recv_ms")},
    "trade_id": "tr1",
    "price": 0.45,
    "size": 100.0,
    "side": "BUY",
    "wallet": "0xw",
}
LEGS = [{"market_id": "pm:0xabc", "token_id": "t1", "side": "buy", "price": 0.5, "size": 10.0}]
SIGNAL = {
    "signal_id": "sig1",
    "rule_id": "complete_set",
    "rule_version": 2,
    "level": "P1",
    "subject": "pm:ev1",
    "event_key": "pm:ev1",
    "market_ids": ["pm:0xabc", "pm:0xdef"],
    "ts_ms": T0,
    "trigger_recv_ms": T0 + 3,
    "edge_bps": 120.0,
    "legs": LEGS,
    "evidence": {"sum_asks": "0.97"},
    "summary": "asks sum to 0.97",
}
INTENT = {
    "intent_id": "in1",
    "signal_id": "sig1",
    "status": "suggested",
    "ts_ms": T0,
    "legs": LEGS,
    "notional": 5.0,
}
DEAD = {
    "stage": "sink",
    "source": "mpx.ticks.v1",
    "partition": 1,
    "offset": 99,
    "error_kind": "bad_magic",
    "error": "bad_magic: not Avro",
    "payload": b"\xffgarbage",
    "ts_ms": T0,
}


# Raw frames (audit), configuration (rules), process state (alerts) and requests to the execution
# stage (their effects land as intent events, with the actor) have no table.
NOT_SINKED = {"raw", "rules", "alerts_state", "intent_commands"}


def test_every_sinked_topic_has_a_table_and_raw_and_rules_are_not_sinked() -> None:
    assert set(TABLES) == set(CATALOG.topics) - NOT_SINKED
    for table in TABLES.values():
        assert table.columns[-2:] == ("_partition", "_offset")
        assert len(set(table.columns)) == len(table.columns)


def test_market_flattens_outcomes_and_fee() -> None:
    row = mapped("markets", MARKET)
    assert row["outcome_names"] == ["Yes", "No"]
    assert row["token_ids"] == ["t1", "t2"]
    assert (row["fee_model"], row["fee_rate"], row["fee_exponent"]) == ("none", 0.0, 1.0)
    assert row["end_time"] is None and row["slug"] is None
    assert row["exclusive"] is True and row["event_market_count"] == 1
    assert row["updated"] == T0
    assert (row["_partition"], row["_offset"]) == (2, 41)


def test_book_splits_levels_into_parallel_arrays() -> None:
    row = mapped("books", BOOK)
    assert row["bid_prices"] == [0.4, 0.39] and row["bid_sizes"] == [10.0, 5.0]
    assert row["ask_prices"] == [0.5] and row["ask_sizes"] == [12.0]
    assert (row["ts"], row["recv"], row["seq"], row["hash"]) == (T0, T0 + 5, 3, None)


def test_tick_computes_mid_only_with_both_sides() -> None:
    assert mapped("ticks", TICK)["mid"] == pytest.approx(0.45)
    one_sided = mapped("ticks", {**TICK, "best_ask": None})
    assert one_sided["mid"] is None and one_sided["last_price"] is None


def test_trade() -> None:
    row = mapped("trades", TRADE)
    assert (row["trade_id"], row["price"], row["side"]) == ("tr1", 0.45, "BUY")
    assert (row["wallet"], row["tx_hash"]) == ("0xw", None)


def test_signal_keeps_evidence_and_serializes_legs_deterministically() -> None:
    row = mapped("signals", SIGNAL)
    assert row["market_ids"] == ["pm:0xabc", "pm:0xdef"]
    assert row["evidence"] == {"sum_asks": "0.97"}
    assert json.loads(row["legs_json"]) == LEGS
    assert row["legs_json"] == mapped("signals", SIGNAL, offset=99)["legs_json"]
    assert row["legs_json"] == json.dumps(LEGS, sort_keys=True, separators=(",", ":"))
    assert (row["ts"], row["trigger_recv"], row["edge_score"]) == (T0, T0 + 3, 0.0)


def test_intent() -> None:
    row = mapped("intents", INTENT)
    assert (row["status"], row["mode"], row["reason"]) == ("suggested", "paper", "")
    assert json.loads(row["legs_json"]) == LEGS
    assert (row["seq"], row["approval"], row["expires"]) == (0, "semi_auto", None)
    assert row["check_names"] == [] and row["fill_prices"] == []


FILL = {
    "market_id": "pm:0xabc",
    "token_id": "t1",
    "side": "buy",
    "price": 0.49,
    "size": 10.0,
    "fee": 0.07,
    "levels": 2,
    "book_ts_ms": T0 - 5,
}
CHECKS = [
    {"name": "max_notional", "passed": True, "value": 5.0, "limit": 100.0},
    {"name": "min_edge", "passed": False, "value": 20.0, "limit": 50.0, "detail": "thin"},
]


def test_intent_v2_spreads_checks_and_fills_into_parallel_arrays() -> None:
    legs = [*LEGS, {**LEGS[0], "token_id": "t2"}, {**LEGS[0], "market_id": "pm:0xdef"}]
    intent = {**INTENT, "seq": 3, "status": "filled", "legs": legs, "checks": CHECKS}
    row = mapped("intents", {**intent, "fills": [FILL], "expires_ms": T0 + 60_000})
    assert row["seq"] == 3 and row["expires"] == T0 + 60_000
    assert row["market_ids"] == ["pm:0xabc", "pm:0xdef"]  # distinct, in leg order
    assert row["check_names"] == ["max_notional", "min_edge"]
    assert row["check_passed"] == [True, False]
    assert (row["check_values"], row["check_limits"]) == ([5.0, 20.0], [100.0, 50.0])
    assert row["check_details"] == ["", "thin"]
    assert (row["fill_token_ids"], row["fill_prices"]) == (["t1"], [0.49])
    assert row["fill_sizes"] == [10.0]
    assert (row["fill_fees"], row["fill_levels"], row["fill_book_ts"]) == ([0.07], [2], [T0 - 5])


def test_intent_with_a_negative_seq_is_a_bad_message() -> None:
    with pytest.raises(BadMessage, match="seq=-1"):
        mapped("intents", {**INTENT, "seq": -1})


def test_position_keeps_a_missing_mark_as_null() -> None:
    position = {
        "position_id": "complete_set|t1",
        "rule_id": "complete_set",
        "venue": "polymarket",
        "event_key": "pm:ev1",
        "market_id": "pm:0xabc",
        "token_id": "t1",
        "size": -10.0,
        "avg_price": 0.49,
        "cost": -4.83,
        "fees": 0.07,
        "realised_pnl": 0.0,
        "unrealised_pnl": -0.2,
        "status": "open",
        "ts_ms": T0,
    }
    row = mapped("positions", position)
    assert (row["position_id"], row["size"], row["mark_price"]) == ("complete_set|t1", -10.0, None)
    assert (row["ts"], row["status"], row["_offset"]) == (T0, "open", 41)


def test_review_item_fills_defaults() -> None:
    review = {"review_id": "sig1", "signal_id": "sig1", "status": "open", "ts_ms": T0}
    row = mapped("review", review)
    assert (row["review_id"], row["status"], row["ts"]) == ("sig1", "open", T0)
    assert (row["rule_id"], row["decided_by"], row["note"]) == ("", "", "")


def test_a_sink_can_be_limited_to_some_topics() -> None:
    settings = Settings(topic_prefix="x.", _env_file=None)
    fakes: dict[str, Any] = {"consumer": object(), "dlq_producer": object()}
    only = Sink(settings, warehouse=None, topic_ids=["ticks"], **fakes)  # type: ignore[arg-type]
    assert list(only._tables) == ["x.mpx.ticks.v1"]


def test_dead_letter_keeps_the_raw_payload() -> None:
    row = mapped("dlq", DEAD)
    assert row["payload"] == b"\xffgarbage" and row["key"] == b""
    assert (row["source"], row["partition"], row["offset"]) == ("mpx.ticks.v1", 1, 99)


@pytest.mark.parametrize(
    ("topic_id", "record", "field"),
    [
        ("ticks", {**TICK, "seq": -1}, "seq"),
        ("books", {**BOOK, "ts_ms": 10**15}, "ts_ms"),
        ("signals", {**SIGNAL, "rule_version": -2}, "rule_version"),
        ("markets", {**MARKET, "end_ms": -(10**14)}, "end_ms"),
    ],
)
def test_values_a_column_cannot_hold_are_bad_messages(
    topic_id: str, record: dict[str, Any], field: str
) -> None:
    with pytest.raises(BadMessage) as err:
        mapped(topic_id, record)
    assert err.value.kind == "out_of_range" and field in err.value.detail


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (None, "empty"),
        (b"not avro", "bad_magic"),
        (wire("markets", MARKET), "wrong_schema"),
        (wire("ticks", TICK)[:9], "corrupt_avro"),
    ],
)
def test_undecodable_values_are_bad_messages(value: bytes | None, kind: str) -> None:
    with pytest.raises(BadMessage) as err:
        to_row(TABLES["ticks"], CODEC, value, 0, 0)
    assert err.value.kind == kind


def test_a_mapping_bug_becomes_a_bad_message_not_a_crash() -> None:
    broken = Table("ticks", "ticks", TABLES["ticks"].fields, lambda r: (r["no_such_field"],))
    with pytest.raises(BadMessage) as err:
        to_row(broken, CODEC, wire("ticks", TICK), 0, 0)
    assert err.value.kind == "unmappable" and "KeyError" in err.value.detail


# ---- batching (no broker: the consumer and producer are never touched) -----------------------


def _sink(batch_rows: int) -> Sink:
    settings = Settings(sink_batch_rows=batch_rows, sink_batch_ms=60_000, topic_prefix="u.")
    return Sink(settings, warehouse=None, consumer=object(), dlq_producer=object())  # type: ignore[arg-type]


def _feed(sink: Sink, tp: TopicPartition, offsets: range | list[int]) -> None:
    table = TABLES["ticks"]
    for off in offsets:
        sink._add(tp, table, off, ("row", off))


def test_batches_end_on_offsets_aligned_to_the_batch_size() -> None:
    # Aligned ends mean a redelivery from any committed offset cuts the same full batches
    # again, with the same dedup tokens.
    sink = _sink(batch_rows=10)
    tp = TopicPartition("u.mpx.ticks.v1", 3)
    _feed(sink, tp, range(7, 31))
    tokens = [b.token for b in sink._sealed]
    assert tokens == ["u.mpx.ticks.v1:3:7-9", "u.mpx.ticks.v1:3:10-19", "u.mpx.ticks.v1:3:20-29"]
    assert sink._open[tp].first == 30 and sink.held_rows == 24


def test_an_offset_gap_past_the_boundary_closes_the_batch() -> None:
    sink = _sink(batch_rows=10)
    tp = TopicPartition("u.mpx.markets.v1", 0)  # compacted topics have gaps
    _feed(sink, tp, [1, 4, 25])
    assert [b.token for b in sink._sealed] == ["u.mpx.markets.v1:0:1-4"]
    assert sink._open[tp].token == "u.mpx.markets.v1:0:25-25"


def test_seal_due_closes_only_old_batches() -> None:
    sink = _sink(batch_rows=100)
    old, new = TopicPartition("u.mpx.ticks.v1", 0), TopicPartition("u.mpx.ticks.v1", 1)
    _feed(sink, old, [0])
    _feed(sink, new, [0])
    sink._open[old].opened -= 120
    sink.seal_due(now=sink._open[new].opened + 1)
    assert [b.tp for b in sink._sealed] == [old] and list(sink._open) == [new]


class _Commits:
    """Stands in for the consumer's commit(): records what would be committed."""

    def __init__(self) -> None:
        self.committed: dict[TopicPartition, int] = {}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.committed.update(offsets)


class _Warehouse:
    """Inserts fail for one partition (its tokens start with `failing`)."""

    def __init__(self, failing: str) -> None:
        self.failing = failing
        self.tokens: list[str] = []

    def insert(self, table: str, rows: list, columns: tuple, token: str) -> None:
        if token.startswith(self.failing):
            raise ConnectionError("down")
        self.tokens.append(token)


async def test_a_batch_given_up_at_stop_is_never_committed_past() -> None:
    settings = Settings(sink_batch_rows=10, sink_batch_ms=60_000, topic_prefix="u.")
    consumer, wh = _Commits(), _Warehouse(failing="u.mpx.ticks.v1:0:")
    sink = Sink(settings, warehouse=wh, consumer=consumer, dlq_producer=object())  # type: ignore[arg-type]
    bad, good = TopicPartition("u.mpx.ticks.v1", 0), TopicPartition("u.mpx.ticks.v1", 1)
    _feed(sink, bad, range(0, 25))  # batches 0-9, 10-19 and an open 20-24
    _feed(sink, good, range(0, 5))
    sink.seal([bad, good])
    sink._give_up_at = 0.0  # stopping: no retries
    flusher = asyncio.create_task(sink._flush_loop())
    try:
        await asyncio.wait_for(sink._wait_for(lambda: sink.pending == 0), 5)
    finally:
        flusher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flusher
    assert consumer.committed == {good: 5}
    assert wh.tokens == ["u.mpx.ticks.v1:1:0-4"] and sink.held_rows == 0
