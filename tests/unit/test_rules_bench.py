"""The in-process evaluation benchmark runs every rule and reports its figures (tiny sizes)."""

from __future__ import annotations

from marketpulse.rules.bench import measure, paced_latency_ms


def test_measure_reports_throughput_latency_and_rss() -> None:
    out = measure(n_events=4, n_binaries=20, updates=600, state_markets=40)
    assert out["messages"] >= 600 and out["messages_per_s"] > 0
    assert set(out["rules"]) >= {"spike", "trend_fade", "cross_market", "logical", "whale"}
    assert out["handle_ms_p50"] is not None and out["handle_ms_p99"] >= out["handle_ms_p50"]
    assert out["state_markets"] >= 40 and out["state_books"] == 2 * out["state_markets"]
    assert out["rss_mb"] > 0
    assert set(out["tick_to_signal_ms_at_2000_per_s"]) == {"p50", "p99"}


def test_paced_latency_queues_behind_slow_messages() -> None:
    # 1 ms apart; the first takes 3 ms, so the second (fired) waits 2 ms and takes 1.
    assert paced_latency_ms([(3.0, False), (1.0, True)], 1_000) == [3.0]
    assert paced_latency_ms([(0.5, True), (0.5, True)], 1_000) == [0.5, 0.5]
