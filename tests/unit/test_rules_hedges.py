"""Cross-market groups (cross-venue YES/NO inversion included) and logical constraints, plus
property tests of the hedge arithmetic."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rule_inputs import market, rule

from marketpulse.errors import ConfigError
from marketpulse.rules import cross_market, hedge, logical
from marketpulse.rules.complete_set import OpportunityTracker
from marketpulse.rules.params import CrossMarketParams, LogicalParams

KALSHI_FEE = {"model": "kalshi", "rate": 0.07, "exponent": 1.0}


def book(
    token: str, asks: Any = (), bids: Any = (), ts: int = 1_000, seq: int = 1
) -> dict[str, Any]:
    return {
        "token_id": token,
        "market_id": token.rsplit(":", 1)[0],
        "ts_ms": ts,
        "recv_ms": ts + 2,
        "seq": seq,
        "asks": [{"price": p, "size": s} for p, s in asks],
        "bids": [{"price": p, "size": s} for p, s in bids],
    }


def groups(tmp_path: Path, body: str) -> dict[str, cross_market.Group]:
    path = tmp_path / "groups.yaml"
    path.write_text(body)
    return cross_market.load_groups(path)


PAIR = """
groups:
  - group_id: g1
    relation: {relation}
    resolution_source: AP call
    approved: {approved}
    members:
      - {{market_id: "pm:a", orientation: yes}}
      - {{market_id: "ks:B", orientation: {orientation}}}
"""


def evaluate_group(
    tmp_path: Path,
    books: list[dict[str, Any]],
    relation: str = "identity",
    orientation: str = "yes",
    approved: str = "true",
) -> list[dict[str, Any]]:
    g = groups(tmp_path, PAIR.format(relation=relation, approved=approved, orientation=orientation))
    markets = {"pm:a": market("pm:a"), "ks:B": market("ks:B", fee=KALSHI_FEE)}
    r = rule("cross_market")
    return hedge.evaluate(
        r,
        r.params_as(CrossMarketParams),
        cross_market.hedges(g["g1"], markets),
        markets,
        {b["token_id"]: b for b in books},
        OpportunityTracker(),
    )


# ------------------------------------------------------------------------------- registry


def test_packaged_registry_loads_and_is_empty() -> None:
    assert cross_market.load_groups() == {}


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (PAIR.format(relation="same", approved="true", orientation="yes"), "field relation"),
        (PAIR.format(relation="identity", approved="true", orientation="maybe"), "orientation"),
        (
            "groups:\n  - {group_id: g, relation: complement, resolution_source: x, members: "
            "[{market_id: 'pm:a'}, {market_id: 'pm:b'}, {market_id: 'pm:c'}]}",
            "exactly 2",
        ),
        (
            "groups:\n  - {group_id: g, relation: identity, resolution_source: x, members: "
            "[{market_id: 'pm:a'}, {market_id: 'pm:a'}]}",
            "twice",
        ),
        (
            "groups:\n  - {group_id: g, relation: identity, members: "
            "[{market_id: 'pm:a'}, {market_id: 'pm:b'}]}",
            "field resolution_source",
        ),
        ("nope: 1", "top-level 'groups:'"),
    ],
)
def test_invalid_registry_names_the_field(tmp_path: Path, body: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        groups(tmp_path, body)


# ------------------------------------------------------------------------------- cross-market


def test_identity_pair_fires_buy_yes_here_no_there(tmp_path: Path) -> None:
    books = [book("pm:a:y", asks=[(0.40, 100)]), book("ks:B:n", asks=[(0.50, 60)])]
    (sig,) = evaluate_group(tmp_path, books)
    assert sig["subject"] == "g1" and sig["size"] == 60
    assert [(lg["token_id"], lg["side"]) for lg in sig["legs"]] == [
        ("pm:a:y", "BUY"),
        ("ks:B:n", "BUY"),
    ]
    fee = 0.07 * 60 * 0.25  # Kalshi: 1.05, rounded up to the cent per order
    assert sig["edge_score"] == pytest.approx(60 * 0.10 - 1.05)
    assert sig["notional"] == pytest.approx(60 * 0.90 + fee)
    assert sig["evidence"]["resolution_source"] == "AP call"


def test_kalshi_bids_only_are_inverted(tmp_path: Path) -> None:
    # ks:B has no NO asks; its YES bid 0.50 means NO is asked at 0.50.
    books = [book("pm:a:y", asks=[(0.40, 100)]), book("ks:B:y", bids=[(0.50, 60)])]
    (sig,) = evaluate_group(tmp_path, books)
    assert sig["legs"][1] == {
        "market_id": "ks:B",
        "token_id": "ks:B:n",
        "side": "BUY",
        "price": 0.5,
        "size": 60,
    }
    assert sig["evidence"]["leg1.asks_from"] == "inverted:ks:B:y"


def test_inverted_orientation_pairs_yes_with_yes(tmp_path: Path) -> None:
    # ks:B is worded the other way round: its YES pays when the proposition fails.
    books = [book("pm:a:y", asks=[(0.40, 100)]), book("ks:B:y", asks=[(0.50, 60)])]
    assert evaluate_group(tmp_path, books, orientation="no")
    assert evaluate_group(tmp_path, books, relation="complement")
    assert not evaluate_group(tmp_path, books)  # identity: YES+YES is no hedge


def test_fairly_priced_pair_and_unapproved_group_are_silent(tmp_path: Path) -> None:
    fair = [book("pm:a:y", asks=[(0.45, 100)]), book("ks:B:n", asks=[(0.56, 60)])]
    assert evaluate_group(tmp_path, fair) == []
    cheap = [book("pm:a:y", asks=[(0.40, 100)]), book("ks:B:n", asks=[(0.50, 60)])]
    assert evaluate_group(tmp_path, cheap, approved="false") == []


def test_min_edge_threshold_on_both_sides(tmp_path: Path) -> None:
    g = groups(tmp_path, PAIR.format(relation="identity", approved="true", orientation="yes"))
    markets = {"pm:a": market("pm:a"), "ks:B": market("ks:B")}
    books = {
        "pm:a:y": book("pm:a:y", asks=[(0.40, 10)]),
        "ks:B:n": book("ks:B:n", asks=[(0.59, 10)]),
    }
    edge = 0.01 / 0.99 * 10_000  # 101.01 bps
    for min_edge, fires in ((edge - 0.01, True), (edge + 0.01, False)):
        r = rule("cross_market", min_edge_bps=min_edge)
        sigs = hedge.evaluate(
            r,
            r.params_as(CrossMarketParams),
            cross_market.hedges(g["g1"], markets),
            markets,
            books,
            OpportunityTracker(),
        )
        assert bool(sigs) is fires


# ------------------------------------------------------------------------------- logical


def strike(mid: str, floor: float, kind: str = "greater", end: int = 5_000) -> dict[str, Any]:
    key = "floor_strike" if kind.startswith("greater") else "cap_strike"
    return market(f"ks:{mid}", event_id="ks:EV", end_ms=end, strike_type=kind, **{key: floor})


def test_ladder_implications_from_strike_fields() -> None:
    ms = [
        strike("T100", 100),
        strike("T90", 90),
        strike("T110", 110),
        market("ks:X", event_id="ks:EV"),
    ]
    pairs = [(s.market_id, w.market_id) for s, w in logical.implications(logical.ladder_claims(ms))]
    assert pairs == [
        ("ks:T100", "ks:T90"),
        ("ks:T110", "ks:T100"),
        ("ks:T110", "ks:T90"),
    ]
    below = [strike("B90", 90, "less"), strike("B100", 100, "less")]
    assert [
        (s.market_id, w.market_id) for s, w in logical.implications(logical.ladder_claims(below))
    ] == [("ks:B90", "ks:B100")]


def test_term_structure_implication() -> None:
    def by(mid: str, date: int) -> logical.Claim:
        return logical.Claim(mid, "pm:e", f"{mid}:y", f"{mid}:n", "btc", "by", 100_000.0, date)

    assert logical.implies(by("pm:jun", 1), by("pm:dec", 2))
    assert not logical.implies(by("pm:dec", 2), by("pm:jun", 1))


def ladder_signals(strong_bid: float, weak_ask: float, **p: Any) -> list[dict[str, Any]]:
    ms = {m["market_id"]: m for m in (strike("T100", 100), strike("T90", 90))}
    books = {
        "ks:T100:y": book("ks:T100:y", bids=[(strong_bid, 40)]),
        "ks:T90:y": book("ks:T90:y", asks=[(weak_ask, 50)]),
    }
    r = rule("logical", **p)
    hs = logical.hedges(logical.ladder_claims(ms.values()))
    return hedge.evaluate(r, r.params_as(LogicalParams), hs, ms, books, OpportunityTracker())


def test_ladder_violation_edge_is_bid_of_stronger_minus_ask_of_weaker() -> None:
    (sig,) = ladder_signals(0.62, 0.55)
    assert sig["subject"] == "ks:T100" and sig["size"] == 40
    assert sig["edge_score"] == pytest.approx(40 * (0.62 - 0.55))
    assert sig["evidence"]["constraint"] == "ladder"
    assert {lg["token_id"] for lg in sig["legs"]} == {"ks:T90:y", "ks:T100:n"}


def test_consistent_ladder_is_silent() -> None:
    assert ladder_signals(0.55, 0.55) == []
    assert ladder_signals(0.50, 0.55) == []


# ------------------------------------------------------------------------------- properties

prices = st.integers(min_value=1, max_value=99).map(lambda c: c / 100)
sizes = st.integers(min_value=1, max_value=10_000).map(float)
fee_rates = st.sampled_from([0.0, 0.02, 0.25, 1.0])


@settings(max_examples=200, deadline=None)
@given(a=prices, b=prices, sa=sizes, sb=sizes, rate=fee_rates)
def test_hedge_arithmetic_properties(a: float, b: float, sa: float, sb: float, rate: float) -> None:
    fee = {"model": "polymarket", "rate": rate, "exponent": 1.0}
    markets = {"pm:a": market("pm:a", fee=fee), "pm:b": market("pm:b", fee=fee)}
    books = {"pm:a:y": book("pm:a:y", asks=[(a, sa)]), "pm:b:n": book("pm:b:n", asks=[(b, sb)])}
    h = hedge.Hedge("k", "g", "group:g", (("pm:a", "pm:a:y"), ("pm:b", "pm:b:n")), "identity")
    r = rule("cross_market", min_edge_bps=0)
    sigs = hedge.evaluate(
        r, r.params_as(CrossMarketParams), [h], markets, books, OpportunityTracker()
    )
    per_share = 1 - a - b - rate * (a * (1 - a) + b * (1 - b))
    if per_share <= 1e-9:
        assert sigs == []
        return
    (sig,) = sigs
    assert sig["size"] == min(sa, sb)  # one level each: the shallower leg bounds the size
    assert sig["edge_score"] == pytest.approx(per_share * sig["size"], rel=1e-6, abs=1e-6)
    assert sig["notional"] == pytest.approx((1 - per_share) * sig["size"], rel=1e-6, abs=1e-6)
    assert sig["edge_bps"] == pytest.approx(
        per_share / (1 - per_share) * 10_000, rel=1e-6, abs=1e-4
    )  # edge_bps is rounded to 4 decimals
    assert all(lg["price"] in (a, b) for lg in sig["legs"])  # limit prices stay on the grid


@settings(max_examples=200, deadline=None)
@given(bids=st.lists(st.tuples(prices, sizes), min_size=1, max_size=5))
def test_inversion_is_an_involution_on_the_tick_grid(bids: list[tuple[float, float]]) -> None:
    levels = [{"price": p, "size": s} for p, s in bids]
    back = hedge.inverted_asks(hedge.inverted_asks(levels))
    assert back == [{"price": pytest.approx(p), "size": s} for p, s in bids]
    assert all(
        round(lv["price"] * 100, 6) == round(lv["price"] * 100)
        for lv in hedge.inverted_asks(levels)
    )
