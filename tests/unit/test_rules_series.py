"""Spike and trend (breakout, fade) rules on both sides of every threshold."""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest
from rule_inputs import market, rule, tick

from marketpulse.rules import spike, trend
from marketpulse.rules.window import MAX_SAMPLES, joined, push, push_parts, resolution_ms


def history(*points: tuple[int, float], keep_ms: int = 600_000) -> list[list[float]]:
    samples: list[list[float]] = []
    for ts, price in points:
        samples = push(samples, ts, price, keep_ms)
    return samples


def run_spike(t: dict[str, Any], base: float, base_ts: int = 0, **params: Any) -> Any:
    samples = history((base_ts, base), (t["ts_ms"], (t["best_bid"] + t["best_ask"]) / 2))
    return spike.evaluate(rule("spike", **params), t, samples, {})


# ------------------------------------------------------------------------------- window


def test_push_orders_late_samples_and_trims_to_the_window() -> None:
    s = history((1_000, 0.5), (3_000, 0.6), (2_000, 0.55), keep_ms=1_500)
    assert s == [[2_000, 0.55], [3_000, 0.6]]


def test_a_busy_window_keeps_its_whole_time_in_bounded_buckets() -> None:
    # 20 ticks a second for 15 minutes into a 10-minute window: 2.3 s buckets, the last price
    # of each, and the window still reaches back 10 minutes (not just the last 256 ticks).
    keep = 600_000
    res = resolution_ms(keep)
    s = history(*[(t, (t // 50) % 7 / 100) for t in range(0, 900_000, 50)], keep_ms=keep)
    assert res == 2_343 and len(s) <= MAX_SAMPLES + 1
    assert s[-1][0] == 899_950 and s[0][0] - (899_950 - keep) < res
    for (t0, _), (t1, _) in itertools.pairwise(s):
        assert t0 // res < t1 // res  # one sample per bucket
    assert all(v == (t // 50) % 7 / 100 for t, v in s)  # each the bucket's last price


def test_a_volume_bucket_adds_up_and_a_late_price_keeps_the_bucket_last() -> None:
    keep, vol = 60_000, []
    for t, size in ((1_000, 2.0), (1_100, 3.0), (1_050, 4.0), (5_000, 1.0)):
        vol = push(vol, t, size, keep, add=True)
    assert vol == [[1_100, 9.0], [5_000, 1.0]]
    px = history((1_000, 0.5), (1_100, 0.6), (1_050, 0.7), keep_ms=keep)
    assert px == [[1_100, 0.6]]  # the late 0.7 is older than the bucket's last price


@pytest.mark.parametrize("add", [False, True])
@pytest.mark.parametrize("seed", range(20))
def test_a_window_in_two_table_values_is_exactly_push(seed: int, add: bool) -> None:
    # Random streams (mostly in order, some late, bursts, gaps) through push and through a
    # table holding the window as push_parts writes it: the same window after every sample.
    rng = random.Random(seed)
    keep = rng.choice([1_000, 60_000, 600_000])
    whole: list[list[float]] = []
    table: dict[str, Any] = {}
    t, rewrites = 0, 0
    for _ in range(2_000):
        t += rng.choice([0, 0, 1, 5, 50, 500, resolution_ms(keep), keep // 3, 2 * keep])
        ts = t - rng.choice([0] * 8 + [1, 100, keep // 2, 3 * keep])  # some late
        value = round(rng.random(), 3)
        whole = push(whole, ts, value, keep, add=add)
        window, stored, head = push_parts(
            table.get("w", []), table.get("w+"), ts, value, keep, add=add
        )
        if stored is not None:
            table["w"], rewrites = stored, rewrites + 1
        if head is not None:
            table["w+"] = head
        assert window == whole == joined(table["w"], table.get("w+"), keep)
    assert rewrites <= 2_000


def test_a_busy_window_is_rewritten_once_per_bucket() -> None:
    # 20 ticks a second for 15 minutes into a 10-minute window: 18,000 pushes, and the whole
    # window is written once per 2.3 s bucket; the other ticks write one sample.
    keep, stored, head, rewrites = 600_000, [], None, 0
    for t in range(0, 900_000, 50):
        _, new_stored, new_head = push_parts(stored, head, t, t % 7 / 100, keep)
        if new_stored is not None:
            stored, rewrites = new_stored, rewrites + 1
        head = new_head if new_head is not None else head
    assert rewrites == 900_000 // resolution_ms(keep) + 1 == 385


# ------------------------------------------------------------------------------- spike


def test_spike_fires_at_the_move_threshold_with_the_momentum_leg() -> None:
    sig = run_spike(tick(30_000, 0.55, 0.57), base=0.51)  # mid 0.56: +0.05
    assert sig is not None
    assert sig["rule_id"] == "spike" and sig["rule_version"] == 2  # defaults.yaml
    assert sig["subject"] == "pm:m1" and sig["edge_bps"] == pytest.approx(500)
    (lg,) = sig["legs"]
    assert lg["side"] == "BUY" and lg["price"] == 0.57 and lg["size"] == 500
    assert sig["evidence"]["base_price"] == "0.51" and sig["evidence"]["param.min_move"] == "0.05"


def test_spike_below_the_move_threshold_is_silent() -> None:
    assert run_spike(tick(30_000, 0.55, 0.57), base=0.52) is None  # +0.04


def test_spike_down_sells_at_the_bid() -> None:
    sig = run_spike(tick(30_000, 0.40, 0.42), base=0.50)
    assert sig is not None and sig["legs"][0]["side"] == "SELL" and sig["legs"][0]["price"] == 0.40


def test_spike_outside_the_window_is_not_a_spike() -> None:
    assert run_spike(tick(30_000, 0.55, 0.57), base=0.40, base_ts=0, window_ms=29_999) is None
    assert run_spike(tick(30_000, 0.55, 0.57), base=0.40, base_ts=0, window_ms=30_000)


@pytest.mark.parametrize(("size", "fires"), [(99.0, False), (100.0, True)])
def test_spike_needs_depth(size: float, fires: bool) -> None:
    assert (run_spike(tick(30_000, 0.55, 0.57, size=size), base=0.40) is not None) is fires


@pytest.mark.parametrize(("ask", "fires"), [(0.5801, False), (0.58, True)])
def test_spike_needs_a_tight_spread(ask: float, fires: bool) -> None:
    assert (run_spike(tick(30_000, 0.55, ask), base=0.40) is not None) is fires


def test_spike_cooldown_per_subject_on_event_time() -> None:
    r = rule("spike", cooldown_ms=10_000)
    last: dict[str, int] = {}
    t1, t2, t3 = tick(30_000, 0.55, 0.57), tick(39_999, 0.65, 0.67), tick(40_000, 0.75, 0.77)
    samples = history((0, 0.40), (30_000, 0.56), (39_999, 0.66), (40_000, 0.76))
    assert spike.evaluate(r, t1, samples[:2], last) is not None
    assert spike.evaluate(r, t2, samples[:3], last) is None
    assert spike.evaluate(r, t3, samples, last) is not None


def test_spike_ids_are_deterministic_and_distinguish_inputs() -> None:
    a = run_spike(tick(30_000, 0.55, 0.57), base=0.40)
    b = run_spike(tick(30_000, 0.55, 0.57), base=0.40)
    c = run_spike(tick(30_000, 0.55, 0.57, seq=7), base=0.40)
    assert a is not None and b is not None and c is not None
    assert a["signal_id"] == b["signal_id"] != c["signal_id"]


# ------------------------------------------------------------------------------- trend


def flat(n: int, price: float, step: int = 10_000) -> list[tuple[int, float]]:
    return [(i * step, price) for i in range(n)]


def run_trend(mode: str, t: dict[str, Any], n: int = 10, mean: float = 0.50, **p: Any) -> Any:
    samples = history(*flat(n, mean), (t["ts_ms"], (t["best_bid"] + t["best_ask"]) / 2))
    return trend.evaluate(rule(f"trend_{mode}", **p), t, market(), samples, {})


def test_breakout_fires_beyond_the_threshold_and_follows_the_move() -> None:
    sig = run_trend("breakout", tick(100_000, 0.58, 0.59))  # mid 0.585: +0.085
    assert sig is not None and sig["legs"][0]["side"] == "BUY"
    assert sig["edge_bps"] == pytest.approx(850)
    assert sig["evidence"]["mean"] == "0.5" and sig["evidence"]["samples"] == "10"


def test_breakout_below_the_threshold_is_silent() -> None:
    assert run_trend("breakout", tick(100_000, 0.57, 0.58)) is None  # +0.075


@pytest.mark.parametrize(("n", "fires"), [(9, False), (10, True)])
def test_breakout_needs_enough_history(n: int, fires: bool) -> None:
    assert (run_trend("breakout", tick(100_000, 0.58, 0.59), n=n) is not None) is fires


def test_fade_sells_an_overreaction_up_net_of_fees() -> None:
    # mid 0.625 vs mean 0.50; sell at bid 0.62: expect 0.12/share back on 0.38 put up.
    sig = run_trend("fade", tick(100_000, 0.62, 0.63))
    assert sig is not None and sig["legs"][0]["side"] == "SELL"
    assert sig["edge_bps"] == pytest.approx(0.12 / 0.38 * 10_000)


def test_fade_buys_an_overreaction_down() -> None:
    sig = run_trend("fade", tick(100_000, 0.37, 0.38))
    assert sig is not None and sig["legs"][0]["side"] == "BUY"
    assert sig["edge_bps"] == pytest.approx(0.12 / 0.38 * 10_000)


@pytest.mark.parametrize(("min_edge", "fires"), [(3157.0, True), (3159.0, False)])
def test_fade_minimum_edge(min_edge: float, fires: bool) -> None:
    sig = run_trend("fade", tick(100_000, 0.62, 0.63), min_edge_bps=min_edge)
    assert (sig is not None) is fires


def test_fade_fee_can_remove_the_edge() -> None:
    samples = history(*flat(10, 0.50), (100_000, 0.625))
    fee = {"model": "polymarket", "rate": 1.0, "exponent": 1.0}  # 0.62*0.38 = 0.2356 > 0.12
    t = tick(100_000, 0.62, 0.63)
    assert trend.evaluate(rule("trend_fade"), t, market(fee=fee), samples, {}) is None


def test_trend_without_a_two_sided_book_is_silent() -> None:
    samples = history(*flat(10, 0.50), (100_000, 0.70))
    t = tick(100_000, None, None, last=0.70)
    assert trend.evaluate(rule("trend_breakout"), t, market(), samples, {}) is None
