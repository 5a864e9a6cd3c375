"""The warehouse on a real ClickHouse engine (chDB in tmp_path): migrations, dedup tokens, and
exact FINAL counts under redelivery.

chDB opens one data path per process at a time: every test opens its own path and closes it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from marketpulse.api import insights
from marketpulse.codec import Codec
from marketpulse.errors import ConfigError
from marketpulse.settings import Settings
from marketpulse.warehouse import (
    Migration,
    MigrationError,
    Warehouse,
    connect,
    load_migrations,
    parse_url,
)
from marketpulse.warehouse.sink import TABLES, expected_columns, to_row

pytestmark = pytest.mark.integration

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
CODEC = Codec()


@pytest.fixture
def wh(tmp_path: Path) -> Iterator[Warehouse]:
    warehouse = connect(Settings(warehouse_url=f"chdb://{tmp_path}/wh", warehouse_database="t"))
    try:
        yield warehouse
    finally:
        warehouse.close()


def tick(seq: int, token: str = "t1") -> dict:
    return {
        "event_key": "mk:e1",
        "market_id": "mk:m1",
        "token_id": token,
        "venue": "mock",
        "ts_ms": T0 + seq,
        "recv_ms": T0 + seq + 2,
        "seq": seq,
        "best_bid": 0.4,
        "best_ask": 0.6,
    }


def tick_rows(offsets: range) -> list[tuple]:
    table = TABLES["ticks"]
    return [to_row(table, CODEC, CODEC.encode("tick", tick(o)), 0, o) for o in offsets]


def count(wh: Warehouse, table: str, final: bool = False) -> int:
    return wh.query(f"SELECT count() AS n FROM {table}{' FINAL' if final else ''}")[0]["n"]


def insert_ticks(wh: Warehouse, offsets: range, token: str | None) -> None:
    wh.insert("ticks", tick_rows(offsets), TABLES["ticks"].columns, token)


# ---- URLs ----------------------------------------------------------------------------------


def test_chdb_urls_resolve_relative_and_absolute_paths(tmp_path: Path) -> None:
    assert parse_url("chdb://var/wh", base=tmp_path).path == tmp_path / "var" / "wh"
    assert parse_url(f"chdb://{tmp_path}/abs").path == tmp_path / "abs"  # chdb:///abs
    server = parse_url("https://u:s3cret@ch.example:8443/db")
    assert not server.embedded and "s3cret" not in server.redacted()
    with pytest.raises(ConfigError):
        parse_url("clickhouse://x")


def test_a_database_name_is_never_formatted_into_sql(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        connect(Settings(warehouse_url=f"chdb://{tmp_path}/wh", warehouse_database="x; DROP"))


# ---- migrations ----------------------------------------------------------------------------


ROLLUPS = {
    "markets_history",
    "candles_1m",
    "rule_kpi_daily",
    "ingest_lag_1m",
    "positions_history",
    "signal_kpi",
}
VIEWS = {
    "markets_history_mv",
    "candles_1m_ticks_mv",
    "candles_1m_trades_mv",
    "rule_kpi_daily_mv",
    "ingest_lag_1m_mv",
    "positions_history_mv",
    "intent_state",
    "intent_fills",
    "ticks_avro_mv",
    "books_avro_mv",
    "trades_avro_mv",
    "signals_avro_mv",
    "signal_kpi_mv",
    "rule_kpi_daily_realised",
}


def test_migrations_apply_once_and_create_every_table(wh: Warehouse) -> None:
    versions = [m.version for m in load_migrations()]
    assert [m.version for m in wh.migrate()] == versions
    assert wh.migrate() == []  # idempotent
    assert count(wh, "schema_migrations", final=True) == len(versions)
    for table in TABLES.values():
        described = {r["name"] for r in wh.query(f"DESCRIBE TABLE {table.name}")}
        assert set(table.columns) | {"_inserted"} == described, table.name
    assert wh.missing_columns(expected_columns()) == {}


def test_a_table_older_than_the_code_is_refused_by_name(wh: Warehouse) -> None:
    wh.migrate()
    wh.command("ALTER TABLE ticks DROP COLUMN ask_size")  # as if a migration were missing
    assert wh.missing_columns(expected_columns()) == {"ticks": ["ask_size"]}
    with pytest.raises(MigrationError, match=r"ticks: ask_size.*add a migration"):
        wh.require_columns(expected_columns())


def test_upgrading_a_0001_warehouse_backfills_the_rollups(wh: Warehouse) -> None:
    # A user's warehouse at 0001 with data in it: 0002 must cover that data too.
    first, *_ = load_migrations()
    wh.migrate([first])
    insert_ticks(wh, range(0, 10), token=None)
    applied = wh.migrate()
    assert applied[0].version == 2
    got = wh.query("SELECT uniqExactMerge(ticks) AS n FROM candles_1m")[0]["n"]
    assert got == 10


def test_upgrading_intents_to_v2_keeps_old_rows_and_can_be_rerun(wh: Warehouse) -> None:
    # A warehouse at 0002 holding a v1 intent: 0003 adds the v2 columns (seq joins the sorting
    # key) and the views read the old row with defaults. DDL is not transactional, so every
    # statement of 0003 must also survive running again after a crash mid-migration.
    migrations = load_migrations()
    wh.migrate(migrations[:2])
    v1 = ("in1", "sig1", "suggested", T0, "", "[]", 5.0, "paper", 0, 7)
    wh.insert("intents", [v1], (*TABLES["intents"].columns[:8], "_partition", "_offset"))
    assert [m.version for m in wh.migrate(migrations[:3])] == [3]
    for statement in migrations[2].statements():
        wh.command(statement)
    state = wh.query("SELECT intent_id, seq, status, approval, expires FROM intent_state")
    assert state == [
        {
            "intent_id": "in1",
            "seq": 0,
            "status": "suggested",
            "approval": "semi_auto",
            "expires": None,
        }
    ]
    assert (
        "seq"
        in wh.query(
            "SELECT sorting_key FROM system.tables WHERE database = 't' AND name = 'intents'"
        )[0]["sorting_key"]
    )


def test_tables_land_in_the_configured_database(wh: Warehouse) -> None:
    wh.migrate()
    rows = wh.query(
        "SELECT name FROM system.tables WHERE database = {db:String} ORDER BY name",
        {"db": "t"},
    )
    landing = {t.landing for t in TABLES.values() if t.landing}
    expected = {t.name for t in TABLES.values()} | landing | ROLLUPS | VIEWS | {"schema_migrations"}
    assert {r["name"] for r in rows} == expected


def test_a_changed_applied_migration_is_refused(wh: Warehouse) -> None:
    wh.migrate()
    first = load_migrations()[0]
    tampered = Migration(first.version, first.name, first.sql + "\n-- edited after release\n")
    with pytest.raises(MigrationError, match="0001_init was applied with checksum"):
        wh.migrate([tampered])


def test_a_new_migration_applies_only_itself(wh: Warehouse, tmp_path: Path) -> None:
    wh.migrate()
    extra = Migration(
        len(load_migrations()) + 1,
        "extra",
        "ALTER TABLE ticks ADD COLUMN IF NOT EXISTS note String;",
    )
    assert wh.migrate([*load_migrations(), extra]) == [extra]
    assert "note" in {r["name"] for r in wh.query("DESCRIBE TABLE ticks")}
    assert wh.migrate([*load_migrations(), extra]) == []


def test_migration_files_need_consecutive_versions(tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("SELECT 1")
    (tmp_path / "0003_c.sql").write_text("SELECT 1")
    with pytest.raises(MigrationError, match="expected version 0002"):
        load_migrations(tmp_path)


def test_statements_split_on_semicolons_outside_comment_lines() -> None:
    mig = Migration(1, "x", "-- a; b\nCREATE TABLE a (x UInt8) ENGINE = Memory;\n\nSELECT 1;\n")
    assert mig.statements() == ["CREATE TABLE a (x UInt8) ENGINE = Memory", "SELECT 1"]


# ---- idempotent inserts --------------------------------------------------------------------


def migrated_without_merges(wh: Warehouse) -> None:
    # A background merge of ReplacingMergeTree would also collapse duplicates and hide what
    # the insert itself did: stop merges so raw counts show exactly what was stored.
    wh.migrate()
    wh.command("SYSTEM STOP MERGES ticks")


def test_the_same_batch_with_the_same_token_lands_once(wh: Warehouse) -> None:
    migrated_without_merges(wh)
    insert_ticks(wh, range(0, 50), token="mpx.ticks.v1:0:0-49")
    insert_ticks(wh, range(0, 50), token="mpx.ticks.v1:0:0-49")
    assert count(wh, "ticks") == 50  # dropped by the token, not merged away later


def test_final_counts_are_exact_after_redelivery_with_other_batch_boundaries(
    wh: Warehouse,
) -> None:
    migrated_without_merges(wh)
    for start in range(0, 100, 30):
        offsets = range(start, min(start + 30, 100))
        insert_ticks(wh, offsets, f"ticks:0:{offsets[0]}-{offsets[-1]}")
    for start in range(0, 100, 25):  # the replay cut the stream differently
        offsets = range(start, start + 25)
        insert_ticks(wh, offsets, f"ticks:0:{offsets[0]}-{offsets[-1]}")
    assert count(wh, "ticks") == 200  # both copies are stored...
    assert count(wh, "ticks", final=True) == 100  # ...and FINAL sees each natural key once


def test_every_table_accepts_its_mapped_rows(wh: Warehouse) -> None:
    # The migration's column types and the sink's mappings must agree (Nullable, arrays,
    # maps, DateTime64 from epoch ms, raw bytes into String).
    wh.migrate()
    legs = [{"market_id": "mk:m1", "token_id": "t1", "side": "buy", "price": 0.5, "size": 1.0}]
    records = {
        "markets": {
            "market_id": "mk:m1",
            "event_id": "mk:e1",
            "venue": "mock",
            "question": "Q?",
            "outcomes": [{"name": "Yes", "token_id": "t1"}],
            "status": "active",
            "updated_ms": T0,
        },
        "books": {
            **{k: v for k, v in tick(1).items() if not k.startswith("best")},
            "bids": [{"price": 0.4, "size": 1.0}],
            "asks": [],
        },
        "ticks": tick(1),
        "trades": {
            **{k: v for k, v in tick(1).items() if k not in ("seq", "best_bid", "best_ask")},
            "trade_id": "x1",
            "price": 0.5,
            "size": 2.0,
            "side": "SELL",
        },
        "signals": {
            "signal_id": "s1",
            "rule_id": "r",
            "rule_version": 1,
            "level": "P2",
            "subject": "mk:e1",
            "event_key": "mk:e1",
            "market_ids": ["mk:m1"],
            "ts_ms": T0,
            "trigger_recv_ms": T0,
            "edge_bps": 10.0,
            "legs": legs,
            "evidence": {"k": "v"},
        },
        "intents": {
            "intent_id": "i1",
            "signal_id": "s1",
            "status": "approved",
            "ts_ms": T0,
            "legs": legs,
        },
        "review": {
            "review_id": "s1",
            "signal_id": "s1",
            "status": "approved",
            "decided_by": "ana",
            "ts_ms": T0,
        },
        "dlq": {
            "stage": "sink",
            "source": "x",
            "error_kind": "bad_magic",
            "error": "e",
            "payload": b"\x00\xff",
            "ts_ms": T0,
        },
    }
    for topic_id, record in records.items():
        table = TABLES[topic_id]
        data = CODEC.encode(table.schema, record)
        wh.insert(table.name, [to_row(table, CODEC, data, 1, 5)], table.columns, "tok")
        assert count(wh, table.name) == 1, table.name
    ts = wh.query("SELECT toUnixTimestamp64Milli(ts) AS ms, mid FROM ticks")[0]
    assert ts == {"ms": T0 + 1, "mid": pytest.approx(0.5)}
    dead = wh.query("SELECT partition, offset, hex(payload) AS p FROM dead_letters")[0]
    assert dead == {"partition": -1, "offset": -1, "p": "00FF"}


def test_market_data_with_an_old_event_time_is_kept(wh: Warehouse) -> None:
    # Retention counts from load time: a replayed recording from years ago must land (a TTL on
    # `ts` drops such rows as they are written).
    wh.migrate()
    old = {**tick(1), "ts_ms": 1_577_836_800_000, "recv_ms": 1_577_836_800_000}  # 2020-01-01
    wh.insert(
        "ticks",
        [to_row(TABLES["ticks"], CODEC, CODEC.encode("tick", old), 0, 0)],
        TABLES["ticks"].columns,
    )
    wh.command("OPTIMIZE TABLE ticks FINAL")
    assert count(wh, "ticks") == 1


# ---- chDB's one-owner rule -----------------------------------------------------------------


def test_a_second_chdb_path_in_the_same_process_is_a_clear_error(
    wh: Warehouse, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="Only one process may open a chDB path"):
        connect(Settings(warehouse_url=f"chdb://{tmp_path}/other"))
    assert wh.ping()  # the open warehouse is unaffected


def test_another_process_cannot_open_a_held_path(wh: Warehouse, tmp_path: Path) -> None:
    code = (
        "from marketpulse.settings import Settings; from marketpulse.warehouse import connect; "
        f"connect(Settings(warehouse_url='chdb://{tmp_path}/wh'))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "ConfigError" in proc.stderr and "--with-sink" in proc.stderr


# ---- rollups: exact under redelivery and replay --------------------------------------------


def priced_tick(seq: int) -> dict:
    bid = 0.30 + (seq * 7 % 11) / 100  # prices move, so open/close/high/low are all distinct
    return {
        **tick(seq),
        "ts_ms": T0 + seq * 1000,  # one per second: 100 ticks span two minutes
        "recv_ms": T0 + seq * 1000 + seq % 5,
        "best_bid": bid,
        "best_ask": bid + 0.02,
    }


def trade(i: int) -> dict:
    return {
        **{k: v for k, v in tick(0).items() if k not in ("seq", "best_bid", "best_ask")},
        "trade_id": f"tr{i}",
        "ts_ms": T0 + i * 3000,
        "recv_ms": T0 + i * 3000 + 1,
        "price": 0.5,
        "size": float(i + 1),
        "side": "BUY",
    }


def kpi_signal(i: int) -> dict:
    return {
        "signal_id": f"s{i}",
        "rule_id": "complete_set" if i % 3 else "spike",
        "rule_version": 1,
        "level": "P1" if i % 4 == 0 else "P2",
        "subject": "mk:e1",
        "event_key": "mk:e1",
        "market_ids": ["mk:m1"],
        "ts_ms": T0 + i * 3_600_000,  # hourly: 30 signals span two days
        "trigger_recv_ms": T0 + i * 3_600_000,
        "edge_bps": 10.0 + i,
        "notional": 100.0 * i,
        "legs": [],
        "evidence": {},
    }


def deliver(wh: Warehouse, topic_id: str, records: list[dict], cut: int, tag: str) -> None:
    """Insert like the sink: contiguous batches of `cut` offsets, tokens naming the range."""
    table = TABLES[topic_id]
    for start in range(0, len(records), cut):
        offsets = range(start, min(start + cut, len(records)))
        rows = [to_row(table, CODEC, CODEC.encode(table.schema, records[o]), 0, o) for o in offsets]
        wh.insert(table.name, rows, table.columns, f"{tag}:{offsets[0]}-{offsets[-1]}")


@pytest.fixture
def redelivered(wh: Warehouse) -> Warehouse:
    """Every record delivered twice with different batch boundaries (a crash and a replay),
    plus one batch retried with its own token; merges stopped so nothing hides a duplicate."""
    wh.migrate()
    for table in ("ticks", "trades", "signals", "candles_1m", "rule_kpi_daily", "ingest_lag_1m"):
        wh.command(f"SYSTEM STOP MERGES {table}")
    data = {
        "ticks": [priced_tick(s) for s in range(100)],
        "trades": [trade(i) for i in range(40)],
        "signals": [kpi_signal(i) for i in range(30)],
    }
    for topic_id, records in data.items():
        deliver(wh, topic_id, records, 30, topic_id)
        deliver(wh, topic_id, records, 25, topic_id)  # the replay cut differently
        deliver(wh, topic_id, records[:25], 25, topic_id)  # a retried batch: dropped by token
    return wh


def test_redelivered_rows_are_stored_twice_but_final_counts_once(redelivered: Warehouse) -> None:
    assert count(redelivered, "ticks") == 200
    assert count(redelivered, "ticks", final=True) == 100
    assert count(redelivered, "signals", final=True) == 30


def test_candles_are_exact_after_redelivery(redelivered: Warehouse) -> None:
    got = insights.candles(redelivered, ["t1"], minutes=60)
    ticks = [priced_tick(s) for s in range(100)]
    trades = [trade(i) for i in range(40)]
    assert [c.minute.timestamp() * 1000 for c in got] == [T0, T0 + 60_000]
    for candle in got:
        lo = int(candle.minute.timestamp() * 1000)
        mids = [
            (t["best_bid"] + t["best_ask"]) / 2 for t in ticks if lo <= t["ts_ms"] < lo + 60_000
        ]
        sizes = [t["size"] for t in trades if lo <= t["ts_ms"] < lo + 60_000]
        assert (candle.open, candle.close) == (pytest.approx(mids[0]), pytest.approx(mids[-1]))
        assert (candle.high, candle.low) == (pytest.approx(max(mids)), pytest.approx(min(mids)))
        assert (candle.ticks, candle.trades) == (len(mids), len(sizes))
        assert candle.volume == pytest.approx(sum(sizes))


def test_daily_rule_kpis_are_exact_after_redelivery(redelivered: Warehouse) -> None:
    got = {
        (k.rule_id, k.day.isoformat()): k
        for k in insights.daily_kpis(redelivered, None, None, None)
    }
    signals = [kpi_signal(i) for i in range(30)]
    assert len(got) == 4  # two rules, two days
    for (rule, day), kpi in got.items():
        mine = [
            s
            for s in signals
            if s["rule_id"] == rule and s["ts_ms"] // 86_400_000 * 86_400_000 == _day_ms(day)
        ]
        edges = [s["edge_bps"] for s in mine]
        assert kpi.signals == len(mine)
        assert kpi.p1 == sum(s["level"] == "P1" for s in mine)
        assert kpi.total_edge_bps == pytest.approx(sum(edges))
        assert kpi.mean_edge_bps == pytest.approx(sum(edges) / len(edges))
        assert kpi.executable_notional == pytest.approx(sum(s["notional"] for s in mine))


def _day_ms(day: str) -> int:
    return int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp() * 1000)


def test_ingest_lag_is_exact_after_redelivery(redelivered: Warehouse) -> None:
    rows = redelivered.query(
        """SELECT venue, arrayMap(x -> x.3, groupUniqArrayMerge(lags)) AS l,
                  max(loaded) > now() - INTERVAL 1 HOUR AS fresh
        FROM ingest_lag_1m GROUP BY venue"""
    )
    lags = [s % 5 for s in range(100)]
    assert len(rows) == 1 and rows[0]["venue"] == "mock" and rows[0]["fresh"]
    assert sorted(rows[0]["l"]) == sorted(lags)  # each tick once, with its own lag


def test_market_history_keeps_every_version_once(wh: Warehouse) -> None:
    wh.migrate()
    base = {
        "market_id": "mk:m1",
        "event_id": "mk:e1",
        "venue": "mock",
        "question": "Q?",
        "outcomes": [{"name": "Yes", "token_id": "t1"}],
    }
    versions = [
        {**base, "status": "active", "updated_ms": T0},
        {**base, "status": "closed", "updated_ms": T0 + 1000},
        {**base, "status": "resolved", "updated_ms": T0 + 2000, "winning_token_id": "t1"},
    ]
    deliver(wh, "markets", versions, 2, "m")
    deliver(wh, "markets", versions, 3, "m")  # redelivered
    history = wh.query("SELECT status FROM markets_history FINAL ORDER BY updated")
    assert [r["status"] for r in history] == ["active", "closed", "resolved"]
    latest = wh.query("SELECT status FROM markets FINAL")
    assert latest == [{"status": "resolved"}]
