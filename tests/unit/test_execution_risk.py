"""Every risk check on both sides of its limit, the circuit breaker's trip and cooldown, and the
kill switch."""

from __future__ import annotations

from typing import Any

import pytest

from marketpulse.execution import risk
from marketpulse.execution.config import Breaker, Limits

LIMITS = Limits(
    max_order_notional=100,
    max_daily_notional=1000,
    max_open_intents=3,
    max_open_positions=4,
    max_total_exposure=500,
    max_market_exposure=200,
    max_drawdown=50,
    max_slippage_bps=100,
)


def passes(c: dict[str, Any]) -> bool:
    return bool(c["passed"])


def test_order_notional() -> None:
    assert passes(risk.order_notional(100, LIMITS))
    at = risk.order_notional(100.01, LIMITS)
    assert not passes(at) and at["value"] == 100.01 and at["limit"] == 100


def test_daily_notional_adds_what_was_approved_today() -> None:
    assert passes(risk.daily_notional(100, 900, LIMITS))
    c = risk.daily_notional(100, 900.5, LIMITS)
    assert not passes(c) and c["value"] == 1000.5


def test_open_intents_counts_this_one() -> None:
    assert passes(risk.open_intents(2, LIMITS))
    c = risk.open_intents(3, LIMITS)
    assert not passes(c) and c["value"] == 4


def test_open_positions_counts_only_new_ones() -> None:
    held = {"r|a", "r|b", "r|c"}
    assert passes(risk.open_positions(held, ["r|a", "r|d"], LIMITS))  # 4
    c = risk.open_positions(held, ["r|d", "r|e"], LIMITS)
    assert not passes(c) and c["value"] == 5


def test_total_exposure_sums_positions_open_intents_and_this() -> None:
    assert passes(risk.total_exposure(300, 100, 100, LIMITS))
    assert not passes(risk.total_exposure(300, 100, 100.5, LIMITS))


def test_market_exposure_reports_the_worst_market() -> None:
    assert passes(risk.market_exposure({"m1": 150}, {"m1": 50, "m2": 50}, LIMITS))
    c = risk.market_exposure({"m1": 150, "m2": 190}, {"m1": 50, "m2": 50}, LIMITS)
    assert not passes(c) and c["value"] == 240 and "m2" in c["detail"]


def test_drawdown_stop() -> None:
    assert passes(risk.drawdown(50, LIMITS))
    assert not passes(risk.drawdown(50.5, LIMITS))


def book(asks: list[tuple[float, float]]) -> dict[str, Any]:
    return {"ts_ms": 1, "asks": [{"price": p, "size": s} for p, s in asks], "bids": []}


def test_slippage_against_the_current_book() -> None:
    leg = {"token_id": "t", "side": "BUY", "price": 0.40, "size": 100}
    # vwap 0.404 = 100 bps worse: at the limit
    ok = risk.slippage([leg], {"t": book([(0.40, 60), (0.41, 40)])}, LIMITS)
    assert passes(ok) and ok["value"] == pytest.approx(100.0)
    bad = risk.slippage([leg], {"t": book([(0.40, 50), (0.41, 50)])}, LIMITS)
    assert not passes(bad) and bad["value"] == pytest.approx(125.0)


def test_slippage_fails_without_a_book() -> None:
    leg = {"token_id": "t", "side": "BUY", "price": 0.40, "size": 100}
    c = risk.slippage([leg], {"t": None}, LIMITS)
    assert not passes(c) and "no book" in c["detail"]


def test_kill_switch() -> None:
    kill = risk.KillSwitch()
    assert passes(risk.kill_switch(kill))
    kill.set(True, "ops: venue incident", 5)
    c = risk.kill_switch(kill)
    assert not passes(c) and c["detail"] == "ops: venue incident"


def test_circuit_breaker_trips_after_n_events_in_the_window_then_cools_down() -> None:
    br = risk.CircuitBreaker(Breaker(max_events=3, window_ms=1000, cooldown_ms=5000))
    keys = risk.breaker_keys("r", ["m"])
    assert keys == ["rule:r", "market:m"]
    assert not br.record("rule:r", 0)
    assert not br.record("rule:r", 1500)  # the first one left the window
    assert not br.record("rule:r", 1600)
    assert passes(br.check(keys, 1700)) and br.check(keys, 1700)["value"] == 2
    assert br.record("rule:r", 1700)  # third within 1000 ms: trips
    tripped = br.check(keys, 1701)
    assert not passes(tripped) and "rule:r" in tripped["detail"]
    assert not passes(br.check(keys, 6699))  # still cooling down
    cooled = br.check(keys, 6700)
    assert passes(cooled) and cooled["value"] == 0  # counts afresh


def test_circuit_breaker_counts_out_of_order_event_times() -> None:
    br = risk.CircuitBreaker(Breaker(max_events=2, window_ms=100, cooldown_ms=10))
    br.record("market:m", 500)
    assert br.record("market:m", 450)  # earlier, from another partition: still in the window


def test_failures_are_described_with_their_numbers() -> None:
    text = risk.describe_failures([risk.order_notional(150, LIMITS), risk.drawdown(1, LIMITS)])
    assert text == "order_notional 150 > 100 (cash of this intent)"
