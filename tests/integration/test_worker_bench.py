"""The worker benchmark runs for real at a tiny size: a real worker process drains a real
backlog, and the Faust floor app counts the same books (figures come from `marketpulse bench`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from marketpulse.settings import Settings
from marketpulse.worker_bench import bench_worker

pytestmark = pytest.mark.integration


async def test_bench_worker_drains_a_backlog_and_measures_the_floor(
    kafka_bootstrap: str, unique_name: str, tmp_path: Path
) -> None:
    settings = Settings(kafka_bootstrap=kafka_bootstrap, topic_prefix=f"t{unique_name}.")
    result = await bench_worker(settings, tmp_path, updates=3_000)
    assert result["books"] == 3_000
    worker, floor = result["worker"], result["faust_floor"]
    assert worker["books_per_s"] > 0 and worker["peak_rss_mb"] > 0
    assert 0 < worker["measured_books"] <= 3_000
    assert floor["messages_per_s"] > 0 and 0 < floor["measured_messages"] <= 3_000
    assert result["worker_to_floor_ratio"] == pytest.approx(
        worker["books_per_s"] / floor["messages_per_s"], abs=0.001
    )
