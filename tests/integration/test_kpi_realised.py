"""Daily rule KPIs from the warehouse (migration 0004's view, what /api/kpi/daily and the Rules
dashboard read): exact under redelivery, and the realised edge the backtest's own definition
(`backtest.realised` per signal, `backtest.summarise` per rule) gives for the same signals and
resolutions."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from marketpulse.api.insights import daily_kpis
from marketpulse.backtest import realised, summarise
from marketpulse.codec import Codec
from marketpulse.settings import Settings
from marketpulse.warehouse import Warehouse, connect
from marketpulse.warehouse.sink import TABLES, to_row

pytestmark = pytest.mark.integration

CODEC = Codec()
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
DAY = 86_400_000


def market(i: int, winner: int | None, updated_ms: int) -> dict[str, Any]:
    return {
        "market_id": f"m{i}",
        "event_id": "e1",
        "venue": "polymarket",
        "question": f"Q{i}?",
        "outcomes": [{"name": "Yes", "token_id": f"t{i}y"}, {"name": "No", "token_id": f"t{i}n"}],
        "status": "active" if winner is None else "resolved",
        "winning_token_id": None if winner is None else f"t{i}{'yn'[winner]}",
        "updated_ms": updated_ms,
    }


def leg(i: int, outcome: str, side: str, price: float, size: float) -> dict[str, Any]:
    token = f"t{i}{outcome}"
    return {"market_id": f"m{i}", "token_id": token, "side": side, "price": price, "size": size}


def signal(n: int, rule: str, day: int, legs: list[dict[str, Any]], notional: float) -> dict:
    return {
        "signal_id": f"s{n}",
        "rule_id": rule,
        "rule_version": 1,
        "level": "P1" if n % 2 else "P2",
        "subject": "e1",
        "event_key": "e1",
        "market_ids": sorted({leg["market_id"] for leg in legs}),
        "ts_ms": T0 + day * DAY + n,
        "trigger_recv_ms": T0 + day * DAY + n,
        "edge_bps": 10.0 + n,
        "edge_score": 0.1,
        "size": 10.0,
        "notional": notional,
        "legs": legs,
        "evidence": {},
    }


# m1 resolves Yes, m2 No, m3 never; m1 was first seen unresolved (the latest version counts).
MARKETS = [market(1, None, T0), market(1, 0, T0 + 5 * DAY), market(2, 1, T0), market(3, None, T0)]
SIGNALS = [
    # A complete set bought below 1: every leg resolved, profit.
    signal(1, "complete_set", 0, [leg(1, "y", "BUY", 0.45, 10), leg(1, "n", "BUY", 0.5, 10)], 9.5),
    # A losing buy and a winning sell on two resolved markets, same rule and day.
    signal(2, "complete_set", 0, [leg(1, "n", "BUY", 0.3, 7), leg(2, "y", "SELL", 0.6, 4)], 2.1),
    # One leg on an unresolved market: not counted as realised.
    signal(3, "complete_set", 0, [leg(1, "y", "BUY", 0.4, 5), leg(3, "y", "BUY", 0.2, 5)], 3.0),
    # Another day: nothing resolved yet.
    signal(4, "complete_set", 1, [leg(3, "n", "BUY", 0.7, 3)], 2.1),
    # Another rule: a resolved buy with no notional (edge undefined), and a legless signal
    # (no leg left unresolved: realised P&L 0, as in the backtest).
    signal(5, "spike", 0, [leg(2, "n", "BUY", 0.25, 8)], 0.0),
    signal(6, "spike", 0, [], 4.0),
]


@pytest.fixture
def wh(tmp_path: Path) -> Any:
    warehouse = connect(Settings(warehouse_url=f"chdb://{tmp_path}/wh"))
    try:
        warehouse.migrate()
        yield warehouse
    finally:
        warehouse.close()


def load(wh: Warehouse, topic_id: str, records: list[dict[str, Any]], token: str) -> None:
    table = TABLES[topic_id]
    values = [CODEC.encode(table.schema, r) for r in records]
    rows = [to_row(table, CODEC, v, 0, n) for n, v in enumerate(values)]
    wh.insert(table.name, rows, table.columns, token)


def expected() -> dict[tuple[str, str], dict[str, Any]]:
    """What the backtest says for the same signals and final market versions."""
    final = {m["market_id"]: m for m in sorted(MARKETS, key=lambda m: m["updated_ms"])}
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for s in SIGNALS:
        day = datetime.fromtimestamp(s["ts_ms"] / 1000, UTC).date().isoformat()
        groups[(s["rule_id"], day)].append({**s, **realised(s, final)})
    return {key: summarise(hits)[key[0]] for key, hits in groups.items()}


def test_realised_edge_per_rule_and_day_is_the_backtests(wh: Warehouse) -> None:
    load(wh, "markets", MARKETS, "markets")
    load(wh, "signals", SIGNALS, "signals")
    load(wh, "signals", SIGNALS[:3], "redelivered, cut otherwise")  # must count once
    rows = {(r.rule_id, r.day.isoformat()): r for r in daily_kpis(wh, None, None, None)}
    want = expected()
    assert set(rows) == set(want)
    for key, w in want.items():
        r = rows[key]
        assert r.signals == w["hits"] and r.executable_notional == pytest.approx(w["notional"])
        assert r.resolved_signals == w["resolved"], key
        assert r.realised_pnl == pytest.approx(w["realised_pnl"], abs=1e-9), key
        assert r.realised_edge_bps == pytest.approx(w["realised_edge_bps"], abs=1e-9), key
    # The cases above, spelled out: known, profitable; unknown; known but no notional.
    assert rows[("complete_set", "2026-01-01")].realised_pnl == pytest.approx(0.5 + (-2.1 + 2.4))
    assert rows[("complete_set", "2026-01-02")].realised_edge_bps is None
    assert rows[("complete_set", "2026-01-02")].realised_pnl is None
    spike = rows[("spike", "2026-01-01")]
    assert (spike.resolved_signals, spike.realised_pnl) == (2, pytest.approx(8 * 0.75))
    assert spike.realised_edge_bps == pytest.approx(8 * 0.75 / 4.0 * 10_000)


def test_a_resolution_arriving_later_makes_the_edge_known(wh: Warehouse) -> None:
    load(wh, "markets", [market(3, None, T0)], "m3 open")
    load(wh, "signals", [SIGNALS[3]], "s4")
    assert daily_kpis(wh, "complete_set", None, None)[0].realised_edge_bps is None
    load(wh, "markets", [market(3, 1, T0 + 3 * DAY)], "m3 resolved")
    (row,) = daily_kpis(wh, "complete_set", None, None)
    assert row.realised_pnl == pytest.approx((1 - 0.7) * 3)
    assert row.realised_edge_bps == pytest.approx((1 - 0.7) * 3 / 2.1 * 10_000)
