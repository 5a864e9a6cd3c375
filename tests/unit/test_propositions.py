"""The proposition parser on crafted questions and on the real Gamma fixtures: what it reads
from real Polymarket questions, which implications follow, and how many go to review."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from marketpulse.rules import propositions as props
from marketpulse.rules.logical import implications
from marketpulse.rules.propositions import Parse, parse

GAMMA = (
    Path(__file__).resolve().parents[2]
    / ".."
    / "shared"
    / "fixtures"
    / "real"
    / "polymarket"
    / "gamma"
)


def ms(day: str) -> int:
    return int(datetime.fromisoformat(day).replace(tzinfo=UTC).timestamp() * 1000)


def market(question: str, end: str | None = "2025-12-31", mid: str = "pm:q") -> dict[str, Any]:
    return {
        "market_id": mid,
        "event_id": "pm:e",
        "question": question,
        "end_ms": ms(end) if end else None,
        "outcomes": [{"token_id": f"{mid}:y"}, {"token_id": f"{mid}:n"}],
    }


def read(question: str, **kw: Any) -> Parse:
    p = parse(market(question, **kw))
    assert p is not None
    return p


def test_price_on_date() -> None:
    p = read("Will the price of Bitcoin be above $124,000 on November 4?")
    assert p.claim is not None and not p.needs_review(0.9)
    assert (p.claim.kind, p.claim.underlying, p.claim.threshold) == ("above", "bitcoin", 124_000)
    assert p.claim.date_ms == ms("2025-11-04")  # the year of the market's end


@pytest.mark.parametrize(
    ("question", "kind", "threshold"),
    [
        ("Will Bitcoin reach $150,000 by December 31, 2025?", "reach", 150_000),
        ("Will ETH hit $6k by Dec 31?", "reach", 6_000),
        ("Will Bitcoin dip to $20,000 by December 31, 2025?", "dip", 20_000),
    ],
)
def test_touch_by_date(question: str, kind: str, threshold: float) -> None:
    p = read(question)
    assert p.claim is not None and p.confidence == 0.95
    assert (p.claim.kind, p.claim.threshold, p.claim.date_ms) == (kind, threshold, ms("2025-12-31"))


def test_deadlines_and_years() -> None:
    by = read("Will Gemini 3.0 be released by November 15?")
    assert by.claim is not None and by.claim.kind == "by" and by.claim.threshold is None
    before = read("Iran Nuke before 2027?")
    assert before.claim is not None and before.claim.date_ms == ms("2027-01-01")
    within = read("Xi Jinping out in 2025?")
    assert within.claim is not None and within.claim.date_ms == ms("2025-12-31")
    assert within.needs_review(0.9) and not within.needs_review(0.7)


@pytest.mark.parametrize(
    "question",
    [
        "Will Zohran Mamdani win by 0-10%?",  # a margin, not a deadline
        "Fed decreases interest rates by 50+ bps after December 2025 meeting?",
        "Will Bitcoin reach $150,000 in November?",  # a window, not "by"
    ],
)
def test_lookalikes_go_to_review(question: str) -> None:
    assert read(question).needs_review(0.9)


def test_no_cue_is_not_a_proposition() -> None:
    assert parse(market("Will Spain win the 2026 FIFA World Cup?")) is None


def test_a_date_needs_a_year() -> None:
    p = read("Will Monad perform an airdrop by November 15?", end=None)
    assert p.claim is None and "cannot read a date" in p.reason


# ------------------------------------------------------------------------------- fixtures


def gamma_markets() -> list[dict[str, Any]]:
    if not GAMMA.is_dir():
        pytest.skip(f"real Gamma fixtures not found at {GAMMA}")
    seen: dict[str, dict[str, Any]] = {}
    for f in sorted(GAMMA.glob("*.json")):
        for m in props.gamma_markets(json.loads(f.read_text())):
            seen[m["market_id"]] = m  # a market may appear in several captures
    return list(seen.values())


def test_real_gamma_questions() -> None:
    markets = gamma_markets()
    assert len(markets) == 171
    parses = [p for p in map(parse, markets) if p is not None]
    accepted = [p for p in parses if not p.needs_review(0.9)]
    review = [p for p in parses if p.needs_review(0.9)]
    assert (len(parses), len(accepted), len(review)) == (42, 15, 27)
    by_question = {p.question.strip(): p for p in parses}
    btc = by_question["Will the price of Bitcoin be above $106,000 on November 4?"].claim
    assert btc is not None and (btc.kind, btc.underlying, btc.threshold) == (
        "above",
        "bitcoin",
        106_000,
    )
    assert by_question["Will Zohran Mamdani win by 0-10%?"] in review
    pairs = {
        (s.underlying, s.kind, s.threshold, w.threshold)
        for s, w in implications([p.claim for p in accepted if p.claim is not None])
    }
    assert pairs == {
        ("bitcoin", "above", 106_000, 104_000),
        ("bitcoin", "above", 124_000, 106_000),
        ("bitcoin", "above", 124_000, 104_000),
        ("bitcoin", "reach", 200_000, 150_000),
        ("bitcoin", "reach", 200_000, 130_000),
        ("bitcoin", "reach", 150_000, 130_000),
        ("bitcoin", "reach", 1_000_000, 200_000),
        ("bitcoin", "reach", 1_000_000, 150_000),
        ("bitcoin", "reach", 1_000_000, 130_000),
        ("gemini 3.0 be released", "by", None, None),  # by Nov 15 => by Nov 30
    }


def test_cli_lists_the_review_queue_of_a_gamma_dump() -> None:
    from click.testing import CliRunner

    from marketpulse.cli import main

    gamma_markets()  # skips without the fixtures
    dump = GAMMA / "perryboer_gamma_markets_active_2025-11-04.json"
    res = CliRunner().invoke(main, ["propositions", str(dump), "--review-only"])
    assert res.exit_code == 0, res.output
    assert "REVIEW (unrecognised 'by' clause)" in res.stdout
    assert "Will Zohran Mamdani win by 0-10%?" in res.stdout
    assert "ok 0.95" not in res.stdout  # --review-only
    assert "100 market(s), 38 with a ladder or deadline cue, 13 read, 25 to review" in res.output
