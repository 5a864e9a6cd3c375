"""The backtest over a recording (CLI, CSV and Parquet) and over the embedded warehouse: the
same hits as the live worker's injected cases, and realised P&L where markets resolved."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from marketpulse import backtest as bt
from marketpulse.cli import main
from marketpulse.codec import codec
from marketpulse.rules import load_rules
from marketpulse.settings import Settings
from marketpulse.venues.rule_cases import Cases, cases, groups_yaml, rules_yaml, trigger_of


def recording(c: Cases) -> list[bt.Item]:
    return (
        [("market", m) for m in c.markets]
        + [("book", b) for b in c.books]
        + [("trade", t) for t in c.trades]
    )


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    (tmp_path / "groups.yaml").write_text(groups_yaml())
    path = tmp_path / "rules.yaml"
    path.write_text(rules_yaml(str(tmp_path / "groups.yaml")))
    return path


def resolved(c: Cases) -> list[bt.Item]:
    """The recording plus pm:cs resolving YES after its complete-set signal."""
    cs = next(m for m in c.markets if m["market_id"] == "pm:cs")
    final = {**cs, "status": "resolved", "winning_token_id": "pm:cs:y", "updated_ms": 2**41}
    return [*recording(c), ("market", final)]


def test_backtest_finds_every_injected_case(rules_file: Path) -> None:
    c = cases()
    result = bt.run(list(load_rules(rules_file).values()), recording(c))
    got = sorted((h["rule_id"], h["subject"], trigger_of(h)) for h in result.hits)
    assert got == sorted(c.expected)
    assert result.summary["endgame"]["hits"] == 3
    assert result.summary["whale"]["notional"] == 15_000


def test_realised_pnl_of_a_resolved_complete_set(rules_file: Path) -> None:
    result = bt.run(list(load_rules(rules_file).values()), resolved(cases()))
    (cs,) = [h for h in result.hits if h["rule_id"] == "complete_set"]
    # 10 YES at 0.40 pay 10, 10 NO at 0.50 pay 0: 10 - 9 = 1 on 9 put up.
    assert cs["realised_pnl"] == pytest.approx(1.0)
    assert cs["realised_edge_bps"] == pytest.approx(1 / 9 * 10_000)
    s = result.summary["complete_set"]
    assert s["resolved"] == 1 and s["realised_pnl"] == pytest.approx(1.0)
    assert result.summary["spike"]["realised_pnl"] is None  # its market never resolved


def test_time_window_skips_market_data_outside(rules_file: Path) -> None:
    c = cases()
    t0 = c.markets[0]["updated_ms"]
    result = bt.run(
        list(load_rules(rules_file).values()), recording(c), start_ms=t0, end_ms=t0 + 2_500
    )
    # The books at t0+1.0 s / t0+1.001 s, the whale trade at t0+2 s, and the two metadata
    # changes (always applied: tick size, resolution) fire; the spike at t0+21 s and
    # everything later do not.
    assert sorted(h["rule_id"] for h in result.hits) == [
        "complete_set",
        "endgame",
        "endgame",
        "whale",
    ]


def test_cli_writes_hits_and_summary(rules_file: Path, tmp_path: Path) -> None:
    rec = tmp_path / "rec.jsonl"
    bt.write_recording(rec, resolved(cases()))
    out = tmp_path / "out"
    res = CliRunner().invoke(
        main, ["backtest", "--rules", str(rules_file), "--from", str(rec), "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["rules"]["complete_set"]["hits"] == 1
    rows = list(csv.DictReader((out / "hits.csv").open()))
    # Every injected case, plus the complete set's realised resolution (an endgame signal).
    assert len(rows) == len(cases().expected) + 1
    assert {r["rule_id"] for r in rows} >= {"cross_market", "logical"}
    assert json.loads((out / "summary.json").read_text())["inputs"] == summary["inputs"]


def test_cli_parquet(rules_file: Path, tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    rec = tmp_path / "rec.jsonl"
    bt.write_recording(rec, recording(cases()))
    res = CliRunner().invoke(
        main,
        [
            "backtest",
            "--rules",
            str(rules_file),
            "--from",
            str(rec),
            "--out",
            str(tmp_path),
            "--format",
            "parquet",
        ],
    )
    assert res.exit_code == 0, res.output
    assert pq.read_table(tmp_path / "hits.parquet").num_rows == len(cases().expected)


@pytest.mark.parametrize(
    ("line", "named"),
    [('{"kind": "quote", "record": {}}', "unknown kind"), ("not json", "rec.jsonl:1")],
)
def test_bad_recording_names_the_line(tmp_path: Path, line: str, named: str) -> None:
    rec = tmp_path / "rec.jsonl"
    rec.write_text(line + "\n")
    with pytest.raises(bt.ConfigError, match=named):
        bt.read_recording(rec)


def test_parse_time() -> None:
    assert bt.parse_time("1767225600000") == 1_767_225_600_000
    assert bt.parse_time("2026-01-01") == 1_767_225_600_000
    assert bt.parse_time("2026-01-01T00:00:01Z") == 1_767_225_601_000
    with pytest.raises(bt.ConfigError, match="epoch ms or ISO"):
        bt.parse_time("yesterday")


def test_backtest_from_the_embedded_warehouse(rules_file: Path, tmp_path: Path) -> None:
    """Rows written through the sink's own mapping come back as the same records."""
    from marketpulse.warehouse import connect
    from marketpulse.warehouse.sink import TABLES

    settings = Settings(warehouse_url=f"chdb://{tmp_path / 'wh'}")
    wh = connect(settings)
    c, cdc = cases(), codec()
    try:
        wh.migrate()
        by_topic: dict[str, list[dict[str, Any]]] = {
            "markets": c.markets,
            "books": c.books,
            "trades": c.trades,
        }
        for topic, records in by_topic.items():
            table = TABLES[topic]
            # Through the codec, as the sink does, so Avro defaults are filled in.
            rows = [
                table.row(cdc.decode(table.schema, cdc.encode(table.schema, r)), 0, i)
                for i, r in enumerate(records)
            ]
            wh.insert(table.name, rows, table.columns)
    finally:
        wh.close()
    items = bt.read_warehouse(settings, None, None)
    result = bt.run(list(load_rules(rules_file).values()), items)
    got = sorted((h["rule_id"], h["subject"], trigger_of(h)) for h in result.hits)
    # The warehouse keeps the latest version of each market only: the tick-size change and
    # the resolution (metadata transitions) are not in it; every market-data case is.
    wanted = [e for e in c.expected if e[2] not in ("tick_size", "resolution")]
    assert got == sorted(wanted)


def test_realised_edge_is_each_rules_own_over_its_own_resolved_notional() -> None:
    def hit(rule: str, notional: float, pnl: float | None) -> dict[str, Any]:
        return {
            "rule_id": rule,
            "edge_bps": 100.0,
            "edge_score": 1.0,
            "notional": notional,
            "realised_pnl": pnl,
        }

    summary = bt.summarise([hit("a", 100.0, 10.0), hit("b", 900.0, -9.0), hit("b", 50.0, None)])
    assert summary["a"]["realised_edge_bps"] == pytest.approx(10 / 100 * 10_000)
    assert summary["b"]["realised_edge_bps"] == pytest.approx(-9 / 900 * 10_000)
    assert summary["b"]["resolved"] == 1 and summary["b"]["notional"] == 950.0
