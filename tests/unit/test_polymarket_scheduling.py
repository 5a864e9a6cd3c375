"""Rate-limit budgets, snapshot tiers and collector health: the timing rules of the Polymarket
collector, without a network."""

from __future__ import annotations

import asyncio
import time

from marketpulse.frames import collector_health, forget_shard, note_shard
from marketpulse.venues.polymarket.normalize import PolymarketNormalizer
from marketpulse.venues.polymarket.ratelimit import LIMITS, RateLimiter, SlidingWindow
from marketpulse.venues.polymarket.rest import BookSnapshots, closest_first, interval_s, tier

HOUR = 3_600_000
NOW = 1_800_000_000_000


def test_official_budgets() -> None:
    assert (LIMITS["clob:/books"], LIMITS["data:/trades"], LIMITS["gamma:/events"]) == (
        500,
        200,
        500,
    )
    limiter = RateLimiter()
    assert [b.limit for b in limiter.budgets("gamma:/events")] == [15_000, 4_000, 500, 900]
    assert [b.limit for b in limiter.budgets("clob:/books")] == [15_000, 9_000, 500]


def test_sliding_window() -> None:
    w = SlidingWindow(2, window_s=10)
    w.take(0.0)
    w.take(1.0)
    assert w.wait_s(5.0) == 5.0  # the first slot frees at t=10
    assert w.wait_s(10.0) == 0.0


async def test_budget_honoured_under_concurrent_load() -> None:
    """30 tasks hammering one endpoint never get more than its budget in any window, and a
    throttled endpoint does not hold up another one."""
    limiter = RateLimiter({"general": 1000, "clob": 1000, "clob:/books": 5}, window_s=0.3)
    times: list[float] = []

    async def call() -> None:
        await limiter.acquire("clob:/books")
        times.append(time.monotonic())

    started = time.monotonic()
    task = asyncio.gather(*(call() for _ in range(30)))
    await asyncio.sleep(0.01)
    await limiter.acquire("clob:/book")  # another endpoint: not queued behind /books
    assert time.monotonic() - started < 0.1
    await task
    times.sort()
    for i, t in enumerate(times):
        assert sum(1 for u in times[i:] if u - t < 0.3 - 1e-3) <= 5
    assert times[-1] - started >= 5 * 0.3 - 0.05  # 30 calls at 5 per 0.3 s take >= 1.5 s


def test_tiers_by_hours_to_close() -> None:
    cases = [(None, 0), (72, 0), (48.5, 0), (30, 1), (12.5, 1), (8, 2), (2, 3), (0.5, 4), (-1, 4)]
    for hours, want in cases:
        end = None if hours is None else NOW + int(hours * HOUR)
        assert tier(end, NOW) == want, hours
    assert [interval_s(NOW + h * HOUR, NOW) for h in (100, 24, 6, 2, 0)] == [3600, 300, 60, 30, 15]


def test_due_snapshots_follow_tiers_wanted_and_down_shards() -> None:
    norm = PolymarketNormalizer()
    far = _market("far", NOW + 100 * HOUR)
    soon = _market("soon", NOW + HOUR // 2)
    for m in (far, soon):
        norm.markets[m["market_id"]] = m
    down: set[str] = set()
    snaps = BookSnapshots(None, "http://x", None, norm, down=lambda: down)  # type: ignore[arg-type]
    assert snaps.due(NOW) == ["far-y", "far-n", "soon-y", "soon-n"]  # never fetched
    snaps.last_ms = dict.fromkeys(["far-y", "far-n", "soon-y", "soon-n"], NOW)
    assert snaps.due(NOW + 16_000) == ["soon-y", "soon-n"]  # T4: every 15 s
    down.add("far-n")
    assert snaps.due(NOW + 16_000) == ["far-n", "soon-y", "soon-n"]  # shard down: 15 s
    norm.wanted_snapshots.add("far-y")
    assert snaps.due(NOW + 1_000) == ["far-y"]  # a mismatch: next turn
    assert snaps.due(NOW + 3_600_001)[:1] == ["far-y"]


def _market(name: str, end_ms: int) -> dict[str, object]:
    return {
        "market_id": f"pm:{name}",
        "status": "active",
        "end_ms": end_ms,
        "outcomes": [
            {"name": "Yes", "token_id": f"{name}-y"},
            {"name": "No", "token_id": f"{name}-n"},
        ],
    }


def test_health_reports_quiet_shards() -> None:
    note_shard("polymarket", "unit-a")  # registered, never heard from
    note_shard("polymarket", "unit-b", NOW - 5_000)
    note_shard("polymarket", "unit-c", NOW - 120_000)
    try:
        health = collector_health(quiet_s=60, now_ms=NOW)
        mine = {s["shard"]: s for s in health["shards"] if s["shard"].startswith("unit-")}
        assert {k: v["quiet"] for k, v in mine.items()} == {
            "unit-a": True, "unit-b": False, "unit-c": True
        }  # fmt: skip
        assert mine["unit-b"]["age_s"] == 5.0 and not health["ok"]
    finally:
        for shard in ("unit-a", "unit-b", "unit-c"):
            forget_shard("polymarket", shard)


def test_websocket_slots_go_to_markets_closest_to_close() -> None:
    markets = [
        _market("far", NOW + 100 * HOUR),
        _market("soon", NOW + HOUR // 2),
        {**_market("gone", NOW), "status": "resolved"},
        _market("day", NOW + 20 * HOUR),
    ]
    assert closest_first(markets, NOW) == ["soon-y", "soon-n", "day-y", "day-n", "far-y", "far-n"]
    assert closest_first(markets, NOW, cap=3) == ["soon-y", "soon-n", "day-y"]
