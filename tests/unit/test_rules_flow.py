"""Endgame, whale/new-wallet and longshot rules on both sides of every threshold."""

from __future__ import annotations

import math
from typing import Any

import pytest
from rule_inputs import market, rule, tick, trade

from marketpulse.rules import endgame, longshot, whale
from marketpulse.rules.params import EndgameParams
from marketpulse.rules.window import add_volume

H = 3_600_000
B = 300_000  # endgame bucket


def buckets(*vols: float, current: float) -> list[list[float]]:
    """Past buckets (oldest first) then the current one, ending at bucket 100."""
    out: list[list[float]] = []
    for i, v in enumerate(vols):
        out = add_volume(out, (100 - len(vols) + i) * B, v, B, 12)
    return add_volume(out, 100 * B + 1, current, B, 12)


# ------------------------------------------------------------------------------- endgame


def sweep(price: float = 0.97, end_in: int = 2 * H, current: float = 1_000.0, **p: Any) -> Any:
    ts = 100 * B + 1
    m = market(end_ms=ts + end_in)
    return endgame.on_trade(
        rule("endgame", **p), trade(ts, price, current), m, buckets(10, 20, 30, current=current), {}
    )


def test_volume_z_counts_missing_buckets_as_zero() -> None:
    p = EndgameParams()
    b = add_volume(add_volume([], 0, 10.0, B, 12), 3 * B, 40.0, B, 12)
    z, current, mean, n = endgame.volume_z(b, 3 * B, p) or (0, 0, 0, 0)
    assert (current, mean, n) == (40.0, 10 / 3, 3)
    assert z == pytest.approx(
        (40 - 10 / 3) / math.sqrt(((10 - 10 / 3) ** 2 + 2 * (10 / 3) ** 2) / 3)
    )


def test_sweep_fires_near_the_end_on_a_volume_spike() -> None:
    sig = sweep()
    assert sig is not None and sig["evidence"]["trigger"] == "sweep"
    assert sig["edge_bps"] == pytest.approx(0.03 / 0.97 * 10_000)
    assert sig["legs"] == [
        {"market_id": "pm:m1", "token_id": "pm:m1:y", "side": "BUY", "price": 0.97, "size": 1000}
    ]


@pytest.mark.parametrize(("price", "fires"), [(0.9499, False), (0.95, True)])
def test_sweep_price_threshold(price: float, fires: bool) -> None:
    assert (sweep(price=price) is not None) is fires


@pytest.mark.parametrize(("end_in", "fires"), [(24 * H, True), (24 * H + 1, False), (-1, False)])
def test_sweep_horizon(end_in: int, fires: bool) -> None:
    assert (sweep(end_in=end_in) is not None) is fires


def test_sweep_volume_z_threshold() -> None:
    # past 10, 20, 30: mean 20, std 8.165; z >= 3 needs >= 44.49
    assert sweep(current=44.0) is None
    assert sweep(current=45.0) is not None


def test_sweep_needs_history() -> None:
    ts = 100 * B + 1
    b = add_volume(add_volume([], 99 * B, 5.0, B, 12), ts, 1000.0, B, 12)
    assert (
        endgame.on_trade(rule("endgame"), trade(ts, 0.97, 1000), market(end_ms=ts + H), b, {})
        is None
    )
    assert (
        endgame.on_trade(
            rule("endgame", min_history=2, history_buckets=2),
            trade(ts, 0.97, 1000),
            market(end_ms=ts + H),
            b,
            {},
        )
        is None
    )  # one known past bucket is history of length 1


def test_tick_size_change_to_0_001_fires_once() -> None:
    r, last = rule("endgame"), {}
    before, after = market(tick_size=0.01), market(tick_size=0.001, updated_ms=5_000)
    (sig,) = endgame.on_market(r, before, after, last)
    assert sig["evidence"]["trigger"] == "tick_size" and sig["ts_ms"] == 5_000
    assert endgame.on_market(r, after, after, last) == []  # no change
    assert endgame.on_market(r, None, after, {}) == []  # first sight is no change
    assert endgame.on_market(r, before, market(tick_size=0.005), {}) == []


def test_resolution_fires_on_the_transition_only() -> None:
    r = rule("endgame")
    resolved = market(status="resolved", winning_token_id="pm:m1:y", updated_ms=9_000)
    (sig,) = endgame.on_market(r, market(), resolved, {})
    assert sig["evidence"] == sig["evidence"] | {"trigger": "resolution", "winner": "pm:m1:y"}
    assert endgame.on_market(r, resolved, resolved, {}) == []
    assert endgame.on_market(rule("endgame", on_resolution=False), market(), resolved, {}) == []


def test_endgame_min_history_cannot_exceed_history() -> None:
    with pytest.raises(ValueError, match="min_history"):
        rule("endgame", min_history=13)


# ------------------------------------------------------------------------------- whale


def whale_sig(
    price: float, size: float, first_seen: int | None = 0, volume: float = 1e9, **p: Any
) -> Any:
    return whale.on_trade(
        rule("whale", **p), trade(10 * 86_400_000, price, size), first_seen, volume, {}
    )


@pytest.mark.parametrize(("size", "fires"), [(19_999, False), (20_000, True)])
def test_whale_notional_threshold(size: float, fires: bool) -> None:
    sig = whale_sig(0.5, size)
    assert (sig is not None) is fires
    if sig:
        assert sig["evidence"]["kinds"] == "whale" and sig["notional"] == 10_000


def test_new_wallet_window_and_notional() -> None:
    now = 10 * 86_400_000
    week = 7 * 86_400_000
    assert whale_sig(0.5, 2_000, first_seen=now - week)["evidence"]["kinds"] == "new_wallet"
    assert whale_sig(0.5, 2_000, first_seen=now - week - 1) is None
    assert whale_sig(0.5, 1_999, first_seen=now) is None  # $999.5
    assert whale_sig(0.5, 2_000, first_seen=None)["evidence"]["wallet_first_seen_ms"] == "new"


def test_large_for_market_share() -> None:
    sig = whale_sig(0.5, 2_000, volume=4_000)
    assert sig is not None and sig["evidence"]["kinds"] == "large_for_market"
    assert sig["edge_bps"] == 5_000 and sig["level"] == "P1"
    assert whale_sig(0.5, 2_000, volume=4_001) is None


def test_first_seen_is_a_minimum() -> None:
    assert whale.first_seen(None, 5) == 5
    assert whale.first_seen(3, 5) == 3 and whale.first_seen(7, 5) == 5


# ------------------------------------------------------------------------------- longshot


def ls(rule_id: str, bid: float, ask: float, end_in: int = H, size: float = 100, **p: Any) -> Any:
    m = market(end_ms=1_000 + end_in)
    return longshot.evaluate(rule(rule_id, **p), tick(1_000, bid, ask, size=size), m, {})


@pytest.mark.parametrize(
    ("ask", "fires"), [(0.89, False), (0.90, True), (0.98, True), (0.981, False)]
)
def test_near_certain_price_band(ask: float, fires: bool) -> None:
    assert (ls("longshot_near_certain", ask - 0.01, ask) is not None) is fires


def test_near_certain_edge_net_of_fees() -> None:
    sig = ls("longshot_near_certain", 0.94, 0.95)
    assert sig["edge_bps"] == pytest.approx(0.05 / 0.95 * 10_000)
    assert sig["legs"][0]["side"] == "BUY"


@pytest.mark.parametrize(("end_in", "fires"), [(48 * H, True), (48 * H + 1, False)])
def test_longshot_horizon(end_in: int, fires: bool) -> None:
    assert (ls("longshot_near_certain", 0.94, 0.95, end_in=end_in) is not None) is fires


@pytest.mark.parametrize(("size", "fires"), [(9.9, False), (10, True)])
def test_longshot_depth(size: float, fires: bool) -> None:
    assert (ls("longshot_near_certain", 0.94, 0.95, size=size) is not None) is fires


def test_overpriced_longshot_sells_the_bid() -> None:
    sig = ls("longshot_overpriced", 0.04, 0.05)
    assert sig["legs"][0]["side"] == "SELL"
    assert sig["edge_bps"] == pytest.approx(0.5 * 0.04 / 0.96 * 10_000)
    assert ls("longshot_overpriced", 0.051, 0.06) is None
    assert ls("longshot_overpriced", 0.04, 0.05, min_edge_bps=209) is None  # edge 208.3 bps
