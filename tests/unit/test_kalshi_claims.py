"""Kalshi term structure across events: which markets read as deadline claims (title and rules
must agree), and the by-group stage signalling a violation on both sides of the threshold."""

from __future__ import annotations

from typing import Any

import pytest

from marketpulse.grouping import GroupEvaluator, claim_of, proposition_key, registry
from marketpulse.rules import load_rules
from marketpulse.rules.kalshi_claims import parse_deadline, series

BEFORE = "If OpenAI publicly releases GPT-5 before {d}, then the market resolves to Yes."
TOUCH = "If the price of Bitcoin is above $150,000 at any time before Jan 1, 2026, Yes."
AT_5PM = "If the price of Bitcoin at 5pm EST on Dec 31, 2025 is above $150,000, Yes."


def ks(ticker: str, title: str, rules: str, **extra: Any) -> dict[str, Any]:
    event = ticker.rsplit("-", 1)[0] if ticker.count("-") > 1 else ticker
    return {
        "market_id": f"ks:{ticker}",
        "event_id": f"ks:{event}",
        "venue": "kalshi",
        "question": title,
        "rules_text": rules,
        "status": "active",
        "end_ms": None,
        "min_size": 0.01,
        "fee": {"model": "none", "rate": 0.0, "exponent": 1.0},
        "outcomes": [
            {"name": "Yes", "token_id": f"ks:{ticker}:yes"},
            {"name": "No", "token_id": f"ks:{ticker}:no"},
        ],
        **extra,
    }


OCT = ks("KXGPT5-25OCT", "Will OpenAI release GPT-5 by Oct 31, 2025?", BEFORE.format(d="Nov 1"))
DEC = ks("KXGPT5-25DEC", "Will OpenAI release GPT-5 by Dec 31, 2025?", BEFORE.format(d="Jan 1"))


def test_deadline_titles_with_deadline_rules_are_claims_of_their_series() -> None:
    parsed = parse_deadline(OCT)
    assert parsed is not None and parsed.claim is not None
    assert parsed.claim.kind == "by" and series(OCT) == "KXGPT5"
    assert parsed.claim.underlying == "KXGPT5 openai release gpt-5"
    assert parsed.claim.source == "kalshi:by_date+rules"
    touch = ks(
        "KXBTCMAX-25-150K",
        "Will Bitcoin reach $150,000 by Dec 31, 2025?",
        TOUCH,
        floor_strike=150_000.0,
        strike_type="greater",
    )
    claim = claim_of(touch, [load_rules()["logical"]])
    assert claim is not None and (claim.kind, claim.threshold) == ("reach", 150_000.0)


@pytest.mark.parametrize(
    ("title", "rules", "extra", "why"),
    [
        (
            "Will OpenAI release GPT-5 by Oct 31, 2025?",
            "Resolves Yes if OpenAI releases GPT-5.",
            {},
            "once true",
        ),
        ("Will Bitcoin reach $150,000 by Dec 31, 2025?", AT_5PM, {}, "value at a time"),
        (
            "Will Bitcoin reach $150,000 by Dec 31, 2025?",
            TOUCH,
            {"floor_strike": 140_000.0},
            "strike",
        ),
    ],
)
def test_a_deadline_title_is_not_enough(
    title: str, rules: str, extra: dict[str, Any], why: str
) -> None:
    parsed = parse_deadline(ks("KXX-25DEC", title, rules, **extra))
    assert parsed is not None and parsed.claim is None and why in parsed.reason


@pytest.mark.parametrize(
    "title",
    [
        "Will the price of Bitcoin be above $150,000 on Dec 31, 2025?",  # a value at a date
        "Will OpenAI release GPT-5 in 2025?",  # a window: 2025 and 2026 do not nest
        "Bitcoin price on Dec 31, 2025?",
    ],
)
def test_expiration_values_and_windows_are_never_compared_across_dates(title: str) -> None:
    market = ks("KXY-25DEC", title, TOUCH)
    assert claim_of(market, [load_rules()["logical"]]) is None


def run(stronger_bid: float, weaker_no_bid: float, *markets: dict[str, Any]) -> list[Any]:
    """The by-group stage over OCT (YES bid) and DEC (NO bid, so a YES ask of 1 - it)."""
    rules = list(load_rules().values())
    stage = GroupEvaluator(rules, registry(rules), {}, {}, {})
    logical = [r for r in rules if r.rule_id == "logical"]
    key = proposition_key(claim_of(OCT, logical))  # type: ignore[arg-type]
    assert key == proposition_key(claim_of(DEC, logical))  # type: ignore[arg-type]
    books = [
        ("ks:KXGPT5-25OCT", "ks:KXGPT5-25OCT:yes", stronger_bid),
        ("ks:KXGPT5-25DEC", "ks:KXGPT5-25DEC:no", weaker_no_bid),
    ]
    out = []
    inputs: list[tuple[str, dict[str, Any]]] = [("market", m) for m in markets]
    inputs += [
        (
            "book",
            {
                "market_id": mid,
                "token_id": token,
                "ts_ms": 1_000 + i,
                "recv_ms": 1_005,
                "seq": 1,
                "asks": [],
                "bids": [{"price": bid, "size": 40.0}],
            },
        )
        for i, (mid, token, bid) in enumerate(books)
    ]
    for kind, record in inputs:
        signals, writes = stage.on_record(key, kind, record)
        for table, k, value in writes:
            table[k] = value
        out += signals
    return out


def test_term_structure_across_events_fires_above_the_edge_and_not_below() -> None:
    # "by Oct 31" bid 0.60 > "by Dec 31" ask 0.45: buy Dec YES and Oct NO for 0.85, paid 1+.
    (signal,) = run(0.60, 0.55, OCT, DEC)
    assert signal["rule_id"] == "logical" and signal["subject"] == "ks:KXGPT5-25OCT"
    assert signal["evidence"]["constraint"] == "term"
    assert signal["size"] == pytest.approx(40) and signal["edge_bps"] > 0
    # Consistent prices (Oct 0.40 <= Dec 0.45) and a tie (0.45 = 0.45): nothing.
    assert run(0.40, 0.55, OCT, DEC) == []
    assert run(0.45, 0.55, OCT, DEC) == []


def test_no_term_structure_when_the_rules_settle_on_a_value_at_a_time() -> None:
    oct_at = {**OCT, "rules_text": "Resolves on the closing price at 5pm on Oct 31."}
    rules = [load_rules()["logical"]]
    assert claim_of(oct_at, rules) is None  # so it is never routed, let alone compared


def test_no_real_kalshi_market_reads_as_a_deadline() -> None:
    """Games, championships and the 15-minute gold contract (a value at a time, strike field
    "greater") from the real REST captures: none may enter term structure."""
    from pathlib import Path

    from marketpulse.group_review import load_markets

    rest = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "real" / "kalshi"
    files = sorted((rest / "rest").glob("*.json"))
    if not files:
        pytest.skip(f"real fixtures not found at {rest} (see SOURCES.md there)")
    markets = [m for f in files for m in load_markets(f)[0]]
    assert len(markets) > 250 and any(m["strike_type"] == "greater" for m in markets)
    assert [m["market_id"] for m in markets if claim_of(m, [load_rules()["logical"]])] == []


def test_touch_ladders_inside_one_event_are_left_to_the_event_ladder() -> None:
    from marketpulse.grouping import proposition_hedges
    from marketpulse.rules.logical import hedges

    title = "Will Bitcoin reach ${k},000 by Dec 31, 2025?"
    logical = [load_rules()["logical"]]
    same_event = [
        claim_of(ks(f"KXBTCMAX-25-{k}K", title.format(k=k), TOUCH, floor_strike=k * 1e3), logical)
        for k in (150, 200)
    ]
    claims = [c for c in same_event if c is not None]
    assert len(claims) == 2 and len(hedges(claims)) == 1  # 200k by Dec implies 150k by Dec
    assert proposition_hedges(claims) == []  # the first stage's strike ladder compares them
    later = ks("KXBTCMAX-26-150K", "Will Bitcoin reach $150,000 by Jun 30, 2026?", TOUCH)
    claims.append(claim_of(later, logical))  # type: ignore[arg-type]
    assert {h.key for h in proposition_hedges(claims)} == {
        "ladder|ks:KXBTCMAX-25-150K=>ks:KXBTCMAX-26-150K",
        "ladder|ks:KXBTCMAX-25-200K=>ks:KXBTCMAX-26-150K",
    }
