"""Complete-set arbitrage: leg sets, the equal-share depth walk, fees, episodes, signals."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marketpulse.codec import codec
from marketpulse.errors import ConfigError
from marketpulse.rules import RuleDef, load_rules
from marketpulse.rules.complete_set import (
    LegInput,
    OpportunityTracker,
    complete_sets,
    evaluate_buy,
    evaluate_event,
    evaluate_sell,
    signal_id,
)

NO_FEE = {"model": "none", "rate": 0.0, "exponent": 1.0}
POLY_2PCT = {"model": "polymarket", "rate": 0.02, "exponent": 1.0}


# --------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------


def market(
    market_id: str,
    event_id: str = "pm:e1",
    *,
    count: int = 1,
    exclusive: bool = True,
    augmented: bool = False,
    fee: dict[str, Any] | None = None,
    min_size: float = 1.0,
    status: str = "active",
) -> dict[str, Any]:
    return {
        "market_id": market_id,
        "event_id": event_id,
        "venue": "polymarket",
        "question": f"{market_id}?",
        "outcomes": [
            {"name": "Yes", "token_id": f"{market_id}:y"},
            {"name": "No", "token_id": f"{market_id}:n"},
        ],
        "status": status,
        "neg_risk_augmented": augmented,
        "exclusive": exclusive,
        "event_market_count": count,
        "tick_size": 0.01,
        "min_size": min_size,
        "fee": fee or NO_FEE,
        "updated_ms": 0,
    }


def levels(*pairs: tuple[float, float]) -> list[dict[str, float]]:
    return [{"price": p, "size": s} for p, s in pairs]


def book(
    token_id: str,
    *,
    asks: list[tuple[float, float]] = (),  # type: ignore[assignment]
    bids: list[tuple[float, float]] = (),  # type: ignore[assignment]
    ts_ms: int = 1_000,
    seq: int = 1,
    event_key: str = "pm:e1",
) -> dict[str, Any]:
    return {
        "event_key": event_key,
        "market_id": token_id.rsplit(":", 1)[0],
        "token_id": token_id,
        "venue": "polymarket",
        "ts_ms": ts_ms,
        "recv_ms": ts_ms + 5,
        "seq": seq,
        "bids": levels(*bids),
        "asks": levels(*asks),
        "hash": None,
    }


def leg(m: dict[str, Any], token: str, *pairs: tuple[float, float]) -> LegInput:
    return LegInput(m, token, levels(*pairs), m["fee"])


def rule(**params: Any) -> RuleDef:
    cooldown = params.pop("cooldown_ms", 0)
    return RuleDef(
        rule_id="complete_set", version=1, type="complete_set", cooldown_ms=cooldown, params=params
    )


# --------------------------------------------------------------------------------------------
# Leg sets
# --------------------------------------------------------------------------------------------


def test_binary_market_is_a_complete_set() -> None:
    (s,) = complete_sets([market("pm:m1")])
    assert s.kind == "binary" and s.subject == "pm:m1" and s.event_key == "pm:e1"
    assert s.tokens == (("pm:m1", "pm:m1:y"), ("pm:m1", "pm:m1:n"))


def test_exclusive_event_with_every_market_adds_the_yes_set() -> None:
    ms = [market(f"pm:m{i}", count=3) for i in (3, 1, 2)]
    sets = complete_sets(ms)
    assert [s.kind for s in sets] == ["binary", "binary", "binary", "multi"]
    multi = sets[-1]
    assert multi.subject == "pm:e1"
    assert multi.tokens == tuple((f"pm:m{i}", f"pm:m{i}:y") for i in (1, 2, 3))


def test_event_with_a_market_still_unknown_has_no_multi_set() -> None:
    sets = complete_sets([market("pm:m1", count=3), market("pm:m2", count=3)])
    assert [s.kind for s in sets] == ["binary", "binary"]


def test_event_with_an_inactive_market_has_no_multi_set() -> None:
    ms = [market("pm:m1", count=2), market("pm:m2", count=2, status="closed")]
    assert [s.key for s in complete_sets(ms)] == ["binary:pm:m1"]


def test_non_exclusive_event_keeps_only_its_binaries() -> None:
    ms = [market(f"pm:m{i}", count=2, exclusive=False) for i in (1, 2)]
    assert [s.kind for s in complete_sets(ms)] == ["binary", "binary"]


def test_augmented_event_is_skipped_entirely() -> None:
    ms = [market(f"pm:m{i}", count=2, augmented=True) for i in (1, 2)]
    assert complete_sets(ms) == []


# --------------------------------------------------------------------------------------------
# Depth walk, by hand
# --------------------------------------------------------------------------------------------


def test_binary_walk_across_levels_in_equal_share_counts() -> None:
    m = market("pm:m1")
    # 0.40+0.55 = 0.95 for 60; 0.40+0.57 = 0.97 for 40; 0.42+0.57 = 0.99 for 50; 0.46+0.57 > 1.
    opp = evaluate_buy(
        [
            leg(m, "pm:m1:y", (0.40, 100), (0.42, 50), (0.46, 500)),
            leg(m, "pm:m1:n", (0.55, 60), (0.57, 200)),
        ]
    )
    assert opp is not None
    assert opp.size == 150
    yes, no = opp.legs
    assert yes.fills == ((0.40, 100), (0.42, 50)) and yes.worst_price == 0.42
    assert no.fills == ((0.55, 60), (0.57, 90)) and no.worst_price == 0.57
    assert yes.size == no.size == 150
    assert opp.value == pytest.approx(61 + 84.3)
    assert opp.profit == pytest.approx(150 - 145.3)
    assert opp.edge_bps == pytest.approx(4.7 / 145.3 * 10_000)


def test_multi_outcome_walk_with_polymarket_fees() -> None:
    ms = [market(f"pm:m{i}", count=3, fee=POLY_2PCT) for i in (1, 2, 3)]
    opp = evaluate_buy(
        [
            leg(ms[0], "pm:m1:y", (0.30, 100)),
            leg(ms[1], "pm:m2:y", (0.33, 80), (0.34, 100)),
            leg(ms[2], "pm:m3:y", (0.32, 50), (0.33, 200)),
        ]
    )
    assert opp is not None
    assert opp.size == 100  # 50 at 0.95, 30 at 0.96, 20 at 0.97, then leg 1 is empty
    fees = (
        100 * 0.02 * 0.30 * 0.70
        + 80 * 0.02 * 0.33 * 0.67
        + 20 * 0.02 * 0.34 * 0.66
        + 50 * 0.02 * 0.32 * 0.68
        + 50 * 0.02 * 0.33 * 0.67
    )
    assert opp.value == pytest.approx(95.7)
    assert opp.fees == pytest.approx(fees)
    assert opp.profit == pytest.approx(100 - 95.7 - fees)
    assert opp.edge_bps == pytest.approx((100 - 95.7 - fees) / (95.7 + fees) * 10_000)
    assert [lg.worst_price for lg in opp.legs] == [0.30, 0.34, 0.33]


def test_walk_stops_where_fees_eat_the_marginal_edge() -> None:
    m = market("pm:m1", fee={"model": "polymarket", "rate": 0.025, "exponent": 1.0})
    # Level 1: 0.48+0.50 = 0.98, fees ≈ 0.0125 → +0.0075/share. Level 2: 0.49+0.50 = 0.99,
    # fees ≈ 0.0125 → -0.0025/share: not taken although the gross sum is still below 1.
    opp = evaluate_buy([leg(m, "pm:m1:y", (0.48, 10), (0.49, 100)), leg(m, "pm:m1:n", (0.50, 100))])
    assert opp is not None and opp.size == 10


def test_just_under_one_is_an_opportunity() -> None:
    m = market("pm:m1")
    opp = evaluate_buy([leg(m, "pm:m1:y", (0.49, 10)), leg(m, "pm:m1:n", (0.50, 10))])
    assert opp is not None
    assert opp.edge_bps == pytest.approx(0.01 / 0.99 * 10_000)


@pytest.mark.parametrize(
    ("yes", "no"),
    [(0.50, 0.51), (0.50, 0.50), (0.3, 0.7)],
    ids=["over-one", "exactly-one", "exactly-one-in-floats"],
)
def test_at_or_over_one_is_nothing(yes: float, no: float) -> None:
    m = market("pm:m1")
    assert evaluate_buy([leg(m, "pm:m1:y", (yes, 10)), leg(m, "pm:m1:n", (no, 10))]) is None


def test_three_legs_summing_to_one_in_floats_is_nothing() -> None:
    ms = [market(f"pm:m{i}", count=3) for i in (1, 2, 3)]
    prices = (0.3, 0.3, 0.4)
    legs = [leg(m, f"{m['market_id']}:y", (p, 10)) for m, p in zip(ms, prices, strict=True)]
    assert evaluate_buy(legs) is None


def test_fees_turn_a_gross_edge_negative() -> None:
    gross = market("pm:m1")
    legs = [leg(gross, "pm:m1:y", (0.49, 10)), leg(gross, "pm:m1:n", (0.50, 10))]
    assert evaluate_buy(legs) is not None
    taxed = market("pm:m1", fee={"model": "polymarket", "rate": 0.025, "exponent": 1.0})
    legs = [leg(taxed, "pm:m1:y", (0.49, 10)), leg(taxed, "pm:m1:n", (0.50, 10))]
    assert evaluate_buy(legs) is None  # fees 0.0125/share > gross 0.01/share


def test_kalshi_rounding_is_counted_when_booking_totals() -> None:
    m = market("ks:m1", fee={"model": "kalshi", "rate": 0.0, "exponent": 1.0})
    # Continuous fee 2 x 0.0175 = 0.035 < 0.04 gross, but 1 contract per leg pays 2 cents each.
    one = [leg(m, "ks:m1:y", (0.48, 1)), leg(m, "ks:m1:n", (0.48, 1))]
    assert evaluate_buy(one) is None
    many = [leg(m, "ks:m1:y", (0.48, 100)), leg(m, "ks:m1:n", (0.48, 100))]
    opp = evaluate_buy(many)
    assert opp is not None and opp.fees == pytest.approx(2 * 1.75)


def test_size_is_floored_to_hundredths() -> None:
    m = market("pm:m1")
    opp = evaluate_buy([leg(m, "pm:m1:y", (0.40, 10.555)), leg(m, "pm:m1:n", (0.50, 20))])
    assert opp is not None and opp.size == 10.55
    assert opp.legs[1].fills == ((0.50, 10.55),)


def test_below_min_size_or_min_edge_is_nothing() -> None:
    m = market("pm:m1", min_size=5)
    legs = [leg(m, "pm:m1:y", (0.40, 3)), leg(m, "pm:m1:n", (0.50, 100))]
    assert evaluate_buy(legs) is None
    legs = [leg(m, "pm:m1:y", (0.49, 100)), leg(m, "pm:m1:n", (0.50, 100))]  # 101 bps
    assert evaluate_buy(legs, min_edge_bps=100) is not None
    assert evaluate_buy(legs, min_edge_bps=102) is None


def test_max_levels_limits_the_walk() -> None:
    m = market("pm:m1")
    legs = [leg(m, "pm:m1:y", (0.40, 10), (0.41, 10)), leg(m, "pm:m1:n", (0.50, 100))]
    opp = evaluate_buy(legs, max_levels=1)
    assert opp is not None and opp.size == 10


def test_unsorted_or_bad_levels_are_not_trusted() -> None:
    m = market("pm:m1")
    legs = [
        leg(m, "pm:m1:y", (0.45, 10), (0.40, 10), (0.0, 99), (0.41, 0)),
        leg(m, "pm:m1:n", (0.50, 100)),
    ]
    opp = evaluate_buy(legs)
    assert opp is not None and opp.legs[0].fills == ((0.40, 10), (0.45, 10))


def test_empty_side_is_nothing() -> None:
    m = market("pm:m1")
    assert evaluate_buy([leg(m, "pm:m1:y", (0.4, 10)), leg(m, "pm:m1:n")]) is None


def test_sell_mints_at_one_and_sells_above() -> None:
    m = market("pm:m1")
    # 0.52+0.50 = 1.02 for 40; 0.52+0.49 = 1.01 for 60; then YES has no more bids.
    opp = evaluate_sell(
        [leg(m, "pm:m1:y", (0.52, 100)), leg(m, "pm:m1:n", (0.50, 40), (0.49, 100))]
    )
    assert opp is not None
    assert opp.direction == "sell" and opp.size == 100
    assert opp.value == pytest.approx(52 + 20 + 29.4)
    assert opp.outlay == 100 and opp.profit == pytest.approx(1.4)
    assert opp.edge_bps == pytest.approx(140)
    assert [lg.side for lg in opp.legs] == ["SELL", "SELL"]
    assert opp.legs[1].worst_price == 0.49
    assert evaluate_sell([leg(m, "pm:m1:y", (0.50, 9)), leg(m, "pm:m1:n", (0.50, 9))]) is None


# --------------------------------------------------------------------------------------------
# Depth walk, properties
# --------------------------------------------------------------------------------------------

_price = st.integers(1, 99).map(lambda c: c / 100)
_size = st.integers(1, 50_000).map(lambda c: c / 100)
_ladder = st.lists(st.tuples(_price, _size), min_size=1, max_size=5).map(
    lambda lv: sorted(lv, key=lambda x: x[0])
)
_fee = st.sampled_from([NO_FEE, POLY_2PCT, {"model": "kalshi", "rate": 0.0, "exponent": 1.0}])


@settings(max_examples=400, deadline=None)
@given(ladders=st.lists(_ladder, min_size=2, max_size=4), fee=_fee, sell=st.booleans())
def test_walk_properties(ladders: list[list[tuple[float, float]]], fee: dict, sell: bool) -> None:
    m = market("pm:m1", fee=fee, min_size=0)
    if sell:
        ladders = [sorted(lad, key=lambda x: -x[0]) for lad in ladders]
    legs = [leg(m, f"t{i}", *lad) for i, lad in enumerate(ladders)]
    opp = (evaluate_sell if sell else evaluate_buy)(legs)
    if opp is None:
        return
    assert opp.profit > 0 and opp.edge_bps > 0
    for lg, lad in zip(opp.legs, ladders, strict=True):
        # Equal share counts on every leg, never more than the depth of the levels used.
        assert lg.size == pytest.approx(opp.size, abs=1e-6)
        used = lad[: len(lg.fills)]
        assert opp.size <= sum(s for _, s in used) + 1e-6
        for (price, size), (lp, ls) in zip(lg.fills, used, strict=True):
            assert price == lp and size <= ls + 1e-9
    gross = opp.size - opp.value if not sell else opp.value - opp.size
    assert opp.profit == pytest.approx(gross - opp.fees)


@settings(max_examples=200, deadline=None)
@given(ladders=st.lists(_ladder, min_size=2, max_size=4))
def test_a_positive_top_of_book_is_always_found(ladders: list[list[tuple[float, float]]]) -> None:
    m = market("pm:m1", min_size=0)
    opp = evaluate_buy([leg(m, f"t{i}", *lad) for i, lad in enumerate(ladders)])
    top = sum(lad[0][0] for lad in ladders)
    assert (opp is not None) == (top < 1 - 1e-9)


# --------------------------------------------------------------------------------------------
# Episodes and signals
# --------------------------------------------------------------------------------------------


def binary_event() -> dict[str, dict[str, Any]]:
    return {"pm:m1": market("pm:m1", fee=POLY_2PCT)}


def run(
    r: RuleDef,
    tracker: OpportunityTracker,
    books: dict[str, dict[str, Any]],
    update: dict[str, Any],
    markets: dict[str, dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    books[update["token_id"]] = update
    return evaluate_event(
        r,
        markets or binary_event(),
        books,
        tracker,
        touched_token=update["token_id"],
        trigger_recv_ms=update["recv_ms"],
    )


def test_episode_open_stay_change_close_reopen() -> None:
    r = rule(directions=["buy"])
    tracker = OpportunityTracker()
    books: dict[str, dict[str, Any]] = {}
    assert run(r, tracker, books, book("pm:m1:y", asks=[(0.40, 100)], ts_ms=1_000)) == []
    opened = run(r, tracker, books, book("pm:m1:n", asks=[(0.50, 100)], ts_ms=1_100))
    assert len(opened) == 1
    same = book("pm:m1:y", asks=[(0.40, 100)], bids=[(0.3, 5)], ts_ms=2_000, seq=2)
    assert run(r, tracker, books, same) == []
    changed = run(r, tracker, books, book("pm:m1:y", asks=[(0.40, 60)], ts_ms=3_000, seq=3))
    assert len(changed) == 1 and changed[0]["size"] == 60
    assert changed[0]["signal_id"] != opened[0]["signal_id"]
    assert run(r, tracker, books, book("pm:m1:y", asks=[(0.52, 60)], ts_ms=4_000, seq=4)) == []
    assert tracker.open == {}
    reopened = run(r, tracker, books, book("pm:m1:y", asks=[(0.40, 100)], ts_ms=5_000, seq=5))
    assert len(reopened) == 1
    assert reopened[0]["signal_id"] not in {opened[0]["signal_id"], changed[0]["signal_id"]}


def test_changes_are_quiet_without_update_on_change() -> None:
    r = rule(directions=["buy"], update_on_change=False)
    tracker = OpportunityTracker(update_on_change=False)
    books: dict[str, dict[str, Any]] = {}
    run(r, tracker, books, book("pm:m1:y", asks=[(0.40, 100)]))
    assert len(run(r, tracker, books, book("pm:m1:n", asks=[(0.50, 100)]))) == 1
    assert run(r, tracker, books, book("pm:m1:y", asks=[(0.40, 60)], ts_ms=2_000, seq=2)) == []


def test_cooldown_delays_a_reopening_in_event_time() -> None:
    r = rule(directions=["buy"], cooldown_ms=10_000)
    tracker = OpportunityTracker(cooldown_ms=10_000)
    books: dict[str, dict[str, Any]] = {}
    run(r, tracker, books, book("pm:m1:y", asks=[(0.40, 100)], ts_ms=1_000))
    assert len(run(r, tracker, books, book("pm:m1:n", asks=[(0.50, 100)], ts_ms=1_000))) == 1
    run(r, tracker, books, book("pm:m1:y", asks=[(0.55, 100)], ts_ms=2_000, seq=2))  # closes
    reopen = book("pm:m1:y", asks=[(0.40, 100)], ts_ms=5_000, seq=3)
    assert run(r, tracker, books, reopen) == []  # 4 s after the last signal: cooling
    still = book("pm:m1:y", asks=[(0.40, 100)], ts_ms=11_000, seq=4)
    (late,) = run(r, tracker, books, still)  # cooldown over, still open: signalled now
    assert late["ts_ms"] == 11_000
    assert run(r, tracker, books, book("pm:m1:y", asks=[(0.40, 100)], ts_ms=12_000, seq=5)) == []


def test_tracker_state_is_json_and_round_trips() -> None:
    import json

    tracker = OpportunityTracker(cooldown_ms=5)
    assert tracker.observe("buy|binary:pm:m1", "pm:m1", "fp1", 100)
    state = json.loads(json.dumps(tracker.state()))
    again = OpportunityTracker.from_state(state, cooldown_ms=5)
    assert not again.observe("buy|binary:pm:m1", "pm:m1", "fp1", 101)
    assert not again.observe("buy|binary:pm:m1", "pm:m1", None, 102)
    assert again.state() == {"open": {}, "last_signal_ms": {"pm:m1": 100}}


def test_missing_leg_book_means_no_evaluation() -> None:
    markets = {f"pm:m{i}": market(f"pm:m{i}", count=2) for i in (1, 2)}
    tracker = OpportunityTracker()
    books = {"pm:m1:y": book("pm:m1:y", asks=[(0.10, 100)])}
    out = evaluate_event(rule(), markets, books, tracker)
    assert out == [] and tracker.state() == {"open": {}, "last_signal_ms": {}}


def test_multi_outcome_signal_carries_its_inputs() -> None:
    markets = {f"pm:m{i}": market(f"pm:m{i}", count=3, fee=POLY_2PCT) for i in (1, 2, 3)}
    books = {
        "pm:m1:y": book("pm:m1:y", asks=[(0.30, 100)], ts_ms=1_000, seq=11),
        "pm:m2:y": book("pm:m2:y", asks=[(0.33, 80), (0.34, 100)], ts_ms=1_200, seq=12),
        "pm:m3:y": book("pm:m3:y", asks=[(0.32, 50), (0.33, 200)], ts_ms=1_100, seq=13),
    }
    (sig,) = evaluate_event(rule(), markets, books, OpportunityTracker(), trigger_recv_ms=1_300)
    assert sig["subject"] == sig["event_key"] == "pm:e1"
    assert sig["market_ids"] == ["pm:m1", "pm:m2", "pm:m3"]
    assert sig["ts_ms"] == 1_200 and sig["trigger_recv_ms"] == 1_300
    assert sig["size"] == 100 and sig["level"] == "P1"
    assert [(lg["token_id"], lg["side"], lg["price"], lg["size"]) for lg in sig["legs"]] == [
        ("pm:m1:y", "BUY", 0.30, 100),
        ("pm:m2:y", "BUY", 0.34, 100),
        ("pm:m3:y", "BUY", 0.33, 100),
    ]
    ev = sig["evidence"]
    assert ev["leg1.levels"] == "0.33x80,0.34x20"
    assert ev["leg2.book_seq"] == "13" and ev["leg0.book_ts_ms"] == "1000"
    assert ev["leg0.fee"] == "polymarket rate=0.02 exponent=1"
    assert float(ev["sum_best_asks"]) == pytest.approx(0.95)
    assert ev["min_edge_bps"] == "10" and ev["levels"] == "P1>=300,P2>=100"
    assert all(isinstance(v, str) for v in ev.values())
    assert "3-outcome event pm:e1" in sig["summary"]
    # A valid Signal record, byte-for-byte reproducible.
    assert codec().decode("signal", codec().encode("signal", sig)) == sig
    again = evaluate_event(rule(), markets, books, OpportunityTracker(), trigger_recv_ms=1_300)
    assert again == [sig]


def test_metadata_triggered_signal_uses_the_latest_receive_time() -> None:
    books = {
        "pm:m1:y": book("pm:m1:y", asks=[(0.40, 10)], ts_ms=1_000),
        "pm:m1:n": book("pm:m1:n", asks=[(0.50, 10)], ts_ms=2_000),
    }
    (sig,) = evaluate_event(rule(), binary_event(), books, OpportunityTracker())
    assert sig["subject"] == "pm:m1" and sig["trigger_recv_ms"] == 2_005


def test_level_thresholds() -> None:
    r = RuleDef(
        rule_id="cs", version=2, type="complete_set", levels={"P1": 500, "P2": 50}, params={}
    )
    assert [r.levels.level_for(x) for x in (500, 499, 50, 49)] == ["P1", "P2", "P2", "P3"]


def test_signal_ids_are_deterministic_and_distinct() -> None:
    a = signal_id("complete_set", 1, "pm:e1", 1_000, "buy")
    assert a == signal_id("complete_set", 1, "pm:e1", 1_000, "buy") and len(a) == 24
    others = {
        signal_id("complete_set", 2, "pm:e1", 1_000, "buy"),
        signal_id("complete_set", 1, "pm:e2", 1_000, "buy"),
        signal_id("complete_set", 1, "pm:e1", 1_001, "buy"),
        signal_id("complete_set", 1, "pm:e1", 1_000, "sell"),
    }
    assert a not in others and len(others) == 4


def test_metadata_change_forgets_vanished_sets() -> None:
    markets = {f"pm:m{i}": market(f"pm:m{i}", count=2) for i in (1, 2)}
    books = {
        "pm:m1:y": book("pm:m1:y", asks=[(0.40, 10)], bids=[(0.39, 10)]),
        "pm:m1:n": book("pm:m1:n", asks=[(0.70, 10)], bids=[(0.55, 10)]),
        "pm:m2:y": book("pm:m2:y", asks=[(0.50, 10)], bids=[(0.45, 10)]),
        "pm:m2:n": book("pm:m2:n", asks=[(0.55, 10)], bids=[(0.45, 10)]),
    }
    tracker = OpportunityTracker()
    (sig,) = evaluate_event(rule(), markets, books, tracker)
    assert sig["subject"] == "pm:e1"
    markets["pm:m2"] = {**markets["pm:m2"], "status": "closed"}
    assert evaluate_event(rule(), markets, books, tracker) == []
    assert tracker.open == {}
    markets["pm:m2"] = {**markets["pm:m2"], "status": "active"}
    assert len(evaluate_event(rule(), markets, books, tracker)) == 1  # a new episode


# --------------------------------------------------------------------------------------------
# Rule definitions
# --------------------------------------------------------------------------------------------


def test_default_rules_load() -> None:
    rules = load_rules()
    cs = rules["complete_set"]
    assert cs.version == 1 and cs.enabled and cs.type == "complete_set"
    assert cs.params["min_edge_bps"] == 10 and cs.params["max_levels"] == 10
    assert cs.levels.P1 == 300 and cs.levels.P2 == 100


def test_rule_record_round_trip() -> None:
    cs = load_rules()["complete_set"]
    record = cs.to_record()
    assert codec().decode("rule", codec().encode("rule", record)) == record
    assert RuleDef.from_record(record) == cs


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ("  - {rule_id: x, version: 0, type: complete_set}", "field version"),
        ("  - {rule_id: x, version: 1, type: nope}", "field type"),
        (
            "  - {rule_id: x, version: 1, type: complete_set, params: {min_edge_bps: -1}}",
            "field params.min_edge_bps",
        ),
        (
            "  - {rule_id: x, version: 1, type: complete_set, params: {max_level: 3}}",
            "field params.max_level",
        ),
        (
            "  - {rule_id: x, version: 1, type: complete_set, levels: {P1: 10, P2: 20}}",
            "field levels",
        ),
        ("  - {rule_id: x, version: 1, type: complete_set, enabled: maybe}", "field enabled"),
    ],
)
def test_bad_rule_names_the_field(tmp_path: Any, body: str, named: str) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("rules:\n" + body + "\n")
    with pytest.raises(ConfigError, match=named) as err:
        load_rules(path)
    assert "rule 'x'" in str(err.value) and str(path) in str(err.value)


def test_duplicate_rule_ids_are_refused(tmp_path: Any) -> None:
    path = tmp_path / "rules.yaml"
    line = "  - {rule_id: x, version: 1, type: complete_set}\n"
    path.write_text("rules:\n" + line + line)
    with pytest.raises(ConfigError, match="appears twice"):
        load_rules(path)
