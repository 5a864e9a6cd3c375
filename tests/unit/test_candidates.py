"""Candidate equivalence groups: the scoring's hard checks and edges, blocking, and the real
Gamma and Kalshi payloads (concrete pairs found, look-alikes not proposed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from marketpulse.candidates import Options, blocked_pairs, compare, parse_spec, profile, suggest
from marketpulse.errors import ConfigError
from marketpulse.group_review import load_markets, review_item

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "real"
GAMMA = REAL / "polymarket" / "gamma"
KALSHI_EVENTS = REAL / "kalshi" / "rest" / "cockpit_events_sports_nested.json"
DAY = 86_400_000
T0 = 1_780_000_000_000
MAMDANI = "pm:0xebddfcf7b4401dade8b4031770a1ab942b01854f3bed453d5df9425cd9f211a9"
MAMDANI_NOT = "pm:0xdb38635fa192748f48d28aacb7dc05f8c5777f2c8f529a6647d81fb25dfa82dc"


def m(mid: str, question: str, end_ms: int | None = T0, **extra: Any) -> dict[str, Any]:
    return {
        "market_id": mid,
        "event_id": extra.pop("event_id", f"{mid}:event"),
        "venue": "kalshi" if mid.startswith("ks:") else "polymarket",
        "question": question,
        "status": "active",
        "end_ms": end_ms,
        "outcomes": [{"token_id": f"{mid}:y"}, {"token_id": f"{mid}:n"}],
        **extra,
    }


def pair(a: dict[str, Any], b: dict[str, Any], **opts: Any) -> Any:
    pa, pb = profile(a), profile(b)
    assert pa is not None and pb is not None
    return compare(pa, pb, Options(**opts))


# ------------------------------------------------------------------------------- scoring


def test_same_question_across_venues_is_an_identity() -> None:
    c = pair(
        m("ks:KXFED-26MAR-C25", "Will the Fed cut rates by 25 bps at the March 2026 meeting?"),
        m("pm:0xfed", "Fed cuts rates by 25 bps after the March 2026 meeting?", T0 + DAY),
    )
    assert c is not None and c.relation == "identity"
    assert c.spec() == "identity:ks:KXFED-26MAR-C25=yes,pm:0xfed=yes"
    assert "cross-venue kalshi/polymarket" in c.reasons and "numbers 25" in c.reasons


def test_a_negated_question_is_the_second_member_of_a_complement() -> None:
    c = pair(
        m("pm:not", "Will Zohran Mamdani not win the 2025 NYC mayoral election?"),
        m("pm:win", "Will Zohran Mamdani win the 2025 New York City mayoral election?"),
    )
    assert c.relation == "complement" and (c.first.market_id, c.second.market_id) == (
        "pm:win",
        "pm:not",
    )


def test_opposite_sides_of_one_threshold_are_a_complement() -> None:
    c = pair(
        m("pm:lo", "Will Bitcoin be below $100,000 on December 31, 2026?"),
        m("ks:HI", "Bitcoin above $100k on Dec 31, 2026?"),
    )
    assert c.relation == "complement" and c.first.market_id == "ks:HI"
    assert any("boundary" in r for r in c.reasons)


@pytest.mark.parametrize(
    ("a", "b", "why"),
    [
        (
            "Will Bitcoin reach $150,000 by December 31?",
            "Will Bitcoin reach $200,000 by December 31?",
            "strike",
        ),
        (
            "Will Spain win the 2026 FIFA World Cup?",
            "Will Spain win the 2030 FIFA World Cup?",
            "year",
        ),
        (
            "Will Zohran Mamdani win the 2025 NYC mayoral election?",
            "Will Andrew Cuomo win the 2025 NYC mayoral election?",
            "entity",
        ),
        (
            "Will Nikki Haley win the 2028 Republican presidential nomination?",
            "Will Nikki Haley win the 2028 US Presidential Election?",
            "office",
        ),
    ],
)
def test_look_alikes_are_not_proposed(a: str, b: str, why: str) -> None:
    assert pair(m("pm:a", a), m("ks:B", b), min_score=0.0) is None, why


def test_close_times_gate_unless_both_name_the_same_year() -> None:
    a = m("pm:a", "Will Gemini 3.0 be released by November 30?")
    assert pair(a, m("ks:B", "Gemini 3.0 released by November 30?", T0 + 3 * DAY)) is not None
    assert pair(a, m("ks:B", "Gemini 3.0 released by November 30?", T0 + 4 * DAY)) is None
    # Kalshi closes long-dated markets at a backstop years out: the named year decides.
    ks = m("ks:C", "Will Cleveland win the 2027 Pro Basketball Finals?", T0 + 800 * DAY)
    pm = m("pm:c", "Will the Cleveland Cavaliers win the 2027 NBA Finals?", T0)
    c = pair(ks, pm)
    assert c is not None and c.relation == "identity" and c.score == pytest.approx(0.9)


def test_extra_qualifiers_cost_score() -> None:
    plain = m("pm:a", "Will Curtis Sliwa win the 2025 NYC mayoral election?")
    second = m("pm:b", "Will Curtis Sliwa win second place in the 2025 NYC mayoral election?")
    weak = pair(plain, second, min_score=0.0)
    assert weak is not None and weak.score < 0.85
    assert "only one side says place second" in weak.reasons
    assert pair(plain, second) is None  # the default bar


def test_kalshi_strike_fields_count_as_numbers() -> None:
    a = m("ks:T1", "Houston vs San Diego Total Runs?", floor_strike=7.5, strike_type="greater")
    b = m("ks:T2", "Houston vs San Diego Total Runs?", floor_strike=8.5, strike_type="greater")
    assert pair(a, b, min_score=0.0) is None


def test_markets_of_one_event_and_non_binaries_are_left_to_other_rules() -> None:
    a = m("pm:a", "Will Spain win the 2026 FIFA World Cup?", event_id="pm:wc")
    b = m("pm:b", "Will Spain win the 2026 FIFA World Cup?", event_id="pm:wc")
    assert pair(a, b, min_score=0.0) is None
    assert profile({**a, "outcomes": [{"token_id": "x"}] * 3}) is None
    assert profile({**a, "status": "resolved"}) is None


def test_blocking_compares_only_markets_sharing_a_rare_key() -> None:
    markets = [m(f"pm:{i}", f"Will Candidate{i} win the 2028 election?") for i in range(300)]
    markets += [m("ks:X", "Will Candidate7 win the 2028 election?")]
    found, stats = suggest(markets)
    assert stats["compared"] == 1  # of 45,150 possible pairs
    assert [c.spec() for c in found] == ["identity:ks:X=yes,pm:7=yes"]
    # A key every market shares is not used at all.
    common = [m(f"pm:c{i}", "Will Bitcoin reach $1m?") for i in range(60)]
    profiles = [p for x in common if (p := profile(x))]
    assert blocked_pairs(profiles, max_key_markets=50) == set()


def test_specs_round_trip_and_bad_specs_are_refused() -> None:
    c = pair(
        m("pm:win", "Will Zohran Mamdani win the 2025 NYC mayoral election?"),
        m("pm:not", "Will Zohran Mamdani not win the 2025 NYC mayoral election?"),
    )
    assert parse_spec(c.spec()) == ("complement", [("pm:win", "yes"), ("pm:not", "yes")])
    assert (
        c.candidate_id
        == pair(
            m("pm:not", "Will Zohran Mamdani not win the 2025 NYC mayoral election?"),
            m("pm:win", "Will Zohran Mamdani win the 2025 NYC mayoral election?"),
        ).candidate_id
    )  # stable whatever the input order
    item = review_item(c, 5)
    assert item["review_id"] == f"group:{c.candidate_id}" and item["status"] == "open"
    assert item["subject"] == c.spec() and item["signal_id"] == ""
    for bad in ("implies:pm:a=yes,pm:b=yes", "identity:pm:a=maybe", "identity"):
        with pytest.raises(ConfigError):
            parse_spec(bad)


# ------------------------------------------------------------------------------- real data


def _real_markets() -> list[dict[str, Any]]:
    if not KALSHI_EVENTS.exists():
        pytest.skip(f"real fixtures not found at {REAL} (see SOURCES.md there)")
    out: list[dict[str, Any]] = []
    for path in [*sorted(GAMMA.glob("*.json")), KALSHI_EVENTS]:
        found, bad = load_markets(path)
        assert bad == 0, path
        out += found
    return out


def test_real_payloads_yield_the_mamdani_complement_and_nothing_else() -> None:
    markets = _real_markets()
    assert len({x["market_id"] for x in markets}) > 400
    found, stats = suggest(markets)
    assert [(c.relation, c.first.market_id, c.second.market_id) for c in found] == [
        ("complement", MAMDANI, MAMDANI_NOT)
    ]
    assert stats["compared"] < stats["markets"] ** 2 / 20  # blocking at work


def test_real_cross_venue_look_alikes_are_not_proposed() -> None:
    markets = {x["market_id"]: x for x in _real_markets()}
    kalshi_cle = markets["ks:KXNBA-27-CLE"]  # "Will Cleveland win the 2027 Pro Basketball Finals?"
    pm_cle = next(x for x in markets.values() if "Cleveland Cavaliers" in x["question"])
    assert "2026 NBA Finals" in pm_cle["question"]  # another season
    assert pair(kalshi_cle, pm_cle, min_score=0.0) is None
    # The same contract worded the Polymarket way (a counterpart written for this test): found.
    same = {**pm_cle, "question": "Will the Cleveland Cavaliers win the 2027 NBA Finals?"}
    c = pair(kalshi_cle, same)
    assert c is not None and c.relation == "identity"


def test_loading_reads_nested_events_wrappers_and_gamma_pages(tmp_path: Path) -> None:
    if not KALSHI_EVENTS.exists():
        pytest.skip(f"real fixtures not found at {REAL} (see SOURCES.md there)")
    single, _ = load_markets(REAL / "kalshi" / "rest" / "cockpit_market_single_with_orderbook.json")
    assert [x["market_id"] for x in single] == ["ks:KXNCAAFGAME-26SEP19MSUND-ND"]
    events, _ = load_markets(KALSHI_EVENTS)
    nba = [x for x in events if x["event_id"] == "ks:KXNBA-27"]
    assert len(nba) == 30 and all(x["event_market_count"] == 30 for x in nba)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"conditionId": "0x1", "question": "q", "outcomes": "{"}]))
    assert load_markets(bad) == ([], 1)
    with pytest.raises(ConfigError):
        load_markets(tmp_path / "missing.json")


def test_the_cli_suggests_from_files_and_explains_itself() -> None:
    from click.testing import CliRunner

    from marketpulse.cli import main

    runner = CliRunner()
    assert "GET /api/review" in runner.invoke(main, ["groups", "--help"]).output
    assert runner.invoke(main, ["groups", "suggest"]).exit_code != 0  # no input named
    if not KALSHI_EVENTS.exists():
        pytest.skip(f"real fixtures not found at {REAL} (see SOURCES.md there)")
    files = [str(p) for p in sorted(GAMMA.glob("*.json"))] + [str(KALSHI_EVENTS)]
    args = [arg for f in files for arg in ("--file", f)]
    res = runner.invoke(main, ["groups", "suggest", "--json", *args])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert [c["spec"] for c in out["candidates"]] == [f"complement:{MAMDANI}=yes,{MAMDANI_NOT}=yes"]
    assert out["stats"]["unreadable"] == 0 and out["candidates"][0]["reasons"]
