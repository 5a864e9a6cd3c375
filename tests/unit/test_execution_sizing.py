"""Sizing of order intents: fixed notional, fractional Kelly, volatility-scaled; equal share
counts across legs; rounding to the tick, the lot and the minimum size."""

from __future__ import annotations

from typing import Any

import pytest

from marketpulse.errors import ConfigError
from marketpulse.execution.config import Sizing, parse_config
from marketpulse.execution.sizing import (
    floor_to_lot,
    kelly_fraction,
    per_share_volatility,
    round_to_tick,
    size_intent,
)

MARKETS = {
    "pm:a": {"market_id": "pm:a", "tick_size": 0.01, "min_size": 5.0},
    "pm:b": {"market_id": "pm:b", "tick_size": 0.001, "min_size": 1.0},
}


def signal(**over: Any) -> dict[str, Any]:
    sig = {
        "signal_id": "s1",
        "rule_id": "complete_set",
        "level": "P1",
        "edge_bps": 300.0,
        "size": 1000.0,
        "notional": 0.0,
        "evidence": {},
        "legs": [
            {"market_id": "pm:a", "token_id": "a-yes", "side": "BUY", "price": 0.404, "size": 1000},
            {
                "market_id": "pm:b",
                "token_id": "b-yes",
                "side": "BUY",
                "price": 0.5555,
                "size": 1000,
            },
        ],
    }
    sig.update(over)
    return sig


def test_fixed_notional_buys_equal_shares_on_every_leg() -> None:
    sized = size_intent(signal(), MARKETS, Sizing(method="fixed", fixed_notional=100.0))
    outlay = 0.404 + 0.5555
    assert sized.shares == floor_to_lot(100.0 / outlay, 0.01) == 104.22
    assert [leg["size"] for leg in sized.legs] == [104.22, 104.22]
    assert sized.notional == pytest.approx(104.22 * outlay)


def test_prices_round_away_from_the_book_on_each_markets_tick() -> None:
    sized = size_intent(signal(), MARKETS, Sizing())
    assert [leg["price"] for leg in sized.legs] == [0.41, 0.556]  # buys round up
    assert round_to_tick(0.4049, 0.01, "SELL") == 0.40
    assert round_to_tick(0.30000000000000004, 0.01, "BUY") == 0.30  # float noise is no tick


def test_the_signals_own_cash_per_set_is_used_when_given() -> None:
    # a sell-side set: minting costs 1 per set, which sum(1 - p) would overstate
    sig = signal(size=50.0, notional=50.0)
    sized = size_intent(sig, MARKETS, Sizing(fixed_notional=20.0))
    assert sized.shares == 20.0


def test_size_is_capped_at_what_the_signal_says_is_executable() -> None:
    sized = size_intent(signal(size=30.0), MARKETS, Sizing(fixed_notional=1000.0))
    assert sized.shares == 30.0
    uncapped = size_intent(
        signal(size=30.0), MARKETS, Sizing(fixed_notional=1000.0, cap_at_signal_size=False)
    )
    assert uncapped.shares > 30.0


def test_below_the_markets_minimum_size_nothing_is_traded() -> None:
    # pm:a needs 5 shares: $4 at ~0.96 per set buys 4.16
    sized = size_intent(signal(), MARKETS, Sizing(fixed_notional=4.0))
    assert sized.shares == 0 and "min size 5" in sized.why
    assert size_intent(signal(), MARKETS, Sizing(fixed_notional=5.0)).shares == 5.21


def test_kalshi_contracts_are_whole() -> None:
    sig = signal(
        legs=[{"market_id": "ks:X", "token_id": "ks:X:yes", "side": "BUY", "price": 0.3, "size": 9}]
    )
    sized = size_intent(sig, {}, Sizing(fixed_notional=10.0))
    assert sized.shares == 33.0  # 33.33 floored to a whole contract


def test_kelly_fraction_formula_and_clamps() -> None:
    # f* = c/L - (1-c)/e
    assert kelly_fraction(0.5, 0.9, 1.0) == pytest.approx(0.9 - 0.1 / 0.5)  # 0.7
    assert kelly_fraction(0.01, 0.5, 1.0) == 0.0  # negative: no bet
    assert kelly_fraction(0.5, 0.99, 0.1) == 1.0  # never more than the bankroll
    assert kelly_fraction(0.0, 0.99, 0.1) == 0.0


def test_kelly_sizes_from_edge_and_level_confidence() -> None:
    sizing = Sizing(
        method="kelly",
        bankroll=1000.0,
        kelly_fraction=0.5,
        kelly_loss=1.0,
        confidence={"P1": 0.9},
        cap_at_signal_size=False,
    )
    sig = signal(edge_bps=5000.0)  # e = 0.5 -> f* = 0.7 -> cash = 1000 * 0.5 * 0.7 = 350
    sized = size_intent(sig, MARKETS, sizing)
    assert sized.shares == floor_to_lot(350.0 / (0.404 + 0.5555), 0.01)
    assert "f*=0.7000" in sized.detail
    # the rule's own confidence wins over the level's default
    low = size_intent(signal(edge_bps=5000.0, evidence={"confidence": "0.5"}), MARKETS, sizing)
    assert low.shares == 0 and "min size" in low.why


def test_volatility_scaling_uses_the_riskiest_legs_binary_deviation() -> None:
    sig = signal(
        legs=[{"market_id": "pm:a", "token_id": "t", "side": "BUY", "price": 0.5, "size": 1e6}],
        size=0.0,
    )
    assert per_share_volatility(sig) == pytest.approx(0.5)
    sized = size_intent(sig, MARKETS, Sizing(method="volatility", target_risk=25.0))
    assert sized.shares == 50.0  # 25 / 0.5
    given = size_intent(
        {**sig, "evidence": {"volatility": "0.1"}},
        MARKETS,
        Sizing(method="volatility", target_risk=25.0),
    )
    assert given.shares == 250.0


def test_a_signal_without_legs_is_not_sized() -> None:
    assert size_intent(signal(legs=[]), MARKETS, Sizing()).why == "signal has no legs"


def test_a_bad_config_value_names_its_field() -> None:
    with pytest.raises(ConfigError, match=r"limits\.max_drawdown"):
        parse_config({"limits": {"max_drawdown": -1}})
    with pytest.raises(ConfigError, match=r"sizing\.method"):
        parse_config({"sizing": {"method": "martingale"}})
    with pytest.raises(ConfigError, match=r"limits\.max_notional"):
        parse_config({"limits": {"max_notional": 5}})  # a typo is not silently ignored
