"""The warehouse benchmarks run for real at a tiny size: their figures are measured, and the
sink's rows all land. (The figures themselves come from `marketpulse bench`, never from tests.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from marketpulse.warehouse.bench import SINK_TOPICS, bench_api, bench_sink

pytestmark = pytest.mark.integration


def test_bench_sink_measures_every_topic_against_a_bare_insert(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    result = bench_sink(kafka_bootstrap, tmp_path, updates=400)
    assert result["rows"] == {"ticks": 400, "books": 400, "trades": 100, "signals": 40}
    assert set(result["per_topic"]) == set(SINK_TOPICS)
    for figures in result["per_topic"].values():
        assert figures["sink_rows_per_s"] > 0 and figures["bare_insert_rows_per_s"] > 0
        assert figures["ratio"] == pytest.approx(
            figures["sink_rows_per_s"] / figures["bare_insert_rows_per_s"], rel=0.05, abs=0.002
        )


def test_bench_api_times_every_main_query(tmp_path: Path) -> None:
    result = bench_api(tmp_path, ticks=5_000, signals=1_000, rounds=3)
    assert result["generated"]["ticks"] == 5_000
    assert {"markets", "signals", "kpi_daily", "dlq", "market_drilldown"} <= set(result["latency"])
    for figures in result["latency"].values():
        assert 0 < figures["p50_ms"] <= figures["p99_ms"]
