"""Polymarket questions read as propositions for the logical rule (ladders, term structure).

Polymarket has no strike fields: "Will the price of Bitcoin be above $124,000 on November 4?"
and "Will Bitcoin reach $150,000 by December 31, 2025?" carry the ladder in their wording.
`parse` turns a Market record into a `logical.Claim` with a confidence, or says why it cannot:

| wording                                             | kind    | confidence |
|-----------------------------------------------------|---------|------------|
| price of U be above/below $X on DATE                | above/below | 0.95   |
| U reach/hit $X by/before DATE (dip/fall/drop to)    | reach/dip | 0.95     |
| U reach $X in MONTH / in YEAR (a window, not "by")  | reach/dip | 0.6      |
| U reach X <unit> … (no dollar amount)               | reach   | 0.6        |
| U by/before DATE (an event happening by a date)     | by      | 0.9        |
| U before YEAR                                       | by      | 0.9        |
| U in YEAR                                           | by      | 0.7        |

A question with a ladder or deadline cue (above, below, reach, hit, dip, by, before, in YEAR)
that no pattern reads, or that reads below the rule's `min_confidence`, goes to the review queue
instead of to signals (`needs_review`): "win by 0-10%" or "by 50+ bps" are not deadlines, and
only a person can say what "reach 450 million subscribers in 2025" is comparable with. DATE is
"Month Day[, Year]" (the year of the market's end time when absent) or ISO "YYYY-MM-DD"; dates
compare as UTC midnights.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from marketpulse.rules.logical import Claim, Kind

_MONTHS = {
    m: i
    for i, names in enumerate(
        [
            ("january", "jan"),
            ("february", "feb"),
            ("march", "mar"),
            ("april", "apr"),
            ("may",),
            ("june", "jun"),
            ("july", "jul"),
            ("august", "aug"),
            ("september", "sep", "sept"),
            ("october", "oct"),
            ("november", "nov"),
            ("december", "dec"),
        ],
        1,
    )
    for m in names
}
_MONTH = "|".join(sorted(_MONTHS, key=len, reverse=True))
_DATE = (
    rf"(?P<date>(?:{_MONTH})\.? \d{{1,2}}(?:st|nd|rd|th)?(?:,? \d{{4}})?|\d{{4}}-\d{{2}}-\d{{2}})"
)
_MONEY = r"\$(?P<x>\d[\d,]*(?:\.\d+)?)\s?(?P<mult>[kmb]|thousand|million|billion)?"
_ALIASES = {"btc": "bitcoin", "eth": "ethereum", "sol": "solana", "xrp": "xrp"}
_UP = {"reach", "hit", "reaches", "hits", "top", "surpass", "exceed"}

_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    (
        "price_on",
        re.compile(
            rf"^will (?:the )?price of (?P<u>.+?) be (?P<cmp>above|below|over|under) {_MONEY} "
            rf"on {_DATE}$"
        ),
    ),
    (
        "touch_by",
        re.compile(
            rf"^will (?P<u>.+?) (?P<verb>reach|hit|top|surpass|exceed|dip to|fall to|drop to) "
            rf"{_MONEY} (?:by|before) (?:the end of )?{_DATE}$"
        ),
    ),
    (
        "touch_in",
        re.compile(
            rf"^will (?P<u>.+?) (?P<verb>reach|hit|dip to|fall to|drop to) {_MONEY} "
            rf"in (?P<period>{_MONTH}|\d{{4}})$"
        ),
    ),
    (
        "touch_units",
        re.compile(
            r"^will (?P<u>.+?) (?P<verb>reach|hit) (?P<x>\d[\d,.]*)\s?(?P<mult>k|thousand|million|"
            r"billion)? (?P<unit>[a-z ]+?) (?:by|before|in) (?P<period>.+)$"
        ),
    ),
    ("by_date", re.compile(rf"^(?:will )?(?P<u>.+?) (?:by|before) {_DATE}$")),
    ("before_year", re.compile(r"^(?:will )?(?P<u>.+?) before (?P<year>\d{4})$")),
    ("in_year", re.compile(r"^(?:will )?(?P<u>.+?) in (?P<year>\d{4})$")),
]
_CONFIDENCE = {
    "price_on": 0.95,
    "touch_by": 0.95,
    "touch_in": 0.6,
    "touch_units": 0.6,
    "by_date": 0.9,
    "before_year": 0.9,
    "in_year": 0.7,
}
_CUES = re.compile(r"\b(above|below|reach|hit|dip|by|before|in \d{4})\b")
_MULT = {"k": 1e3, "thousand": 1e3, "m": 1e6, "million": 1e6, "b": 1e9, "billion": 1e9}


@dataclass(frozen=True)
class Parse:
    """What a question says: a claim (maybe low confidence), or why none was read."""

    market_id: str
    question: str
    claim: Claim | None
    confidence: float
    pattern: str  # the pattern that read it, or "" when none did
    reason: str  # why no claim was read ("" when one was)

    def needs_review(self, min_confidence: float) -> bool:
        return self.claim is None or self.confidence < min_confidence

    def review_reason(self, min_confidence: float) -> str:
        if self.claim is None:
            return self.reason
        if self.confidence < min_confidence:
            return f"{self.pattern}: confidence {self.confidence:g} < {min_confidence:g}"
        return ""


def parse(market: Mapping[str, Any]) -> Parse | None:
    """The proposition of a binary market's question; None when it has no ladder or deadline
    cue at all (nothing to compare, nothing to review)."""
    question = str(market.get("question") or "")
    text = _clean(question)
    mid = str(market.get("market_id", ""))
    for name, pattern in _PATTERNS:
        m = pattern.match(text)
        if m is None:
            continue
        claim, why = _claim(name, m, market)
        if claim is None:
            return Parse(mid, question, None, 0.0, name, why)
        return Parse(mid, question, claim, _CONFIDENCE[name], name, "")
    cue = _CUES.search(text)
    if cue is None:
        return None
    return Parse(mid, question, None, 0.0, "", f"unrecognised {cue.group(1)!r} clause")


def _clean(question: str) -> str:
    text = " ".join(question.strip().lower().replace("\u2019", "'").split())
    return text.rstrip("?. ").strip()


def _claim(name: str, m: re.Match[str], market: Mapping[str, Any]) -> tuple[Claim | None, str]:
    outcomes = market.get("outcomes") or []
    if len(outcomes) != 2:
        return None, "not a binary market"
    end_ms = market.get("end_ms")
    groups = m.groupdict()
    kind: Kind
    threshold = None
    if "x" in groups and groups["x"] is not None:
        threshold = float(groups["x"].replace(",", "")) * _MULT.get(groups.get("mult") or "", 1)
    if name == "price_on":
        kind = "above" if groups["cmp"] in ("above", "over") else "below"
    elif name.startswith("touch"):
        kind = "reach" if groups["verb"] in _UP else "dip"
    else:
        kind = "by"
    date = _date_ms(name, groups, end_ms)
    if date is None:
        return None, f"{name}: cannot read a date"
    underlying = _underlying(groups["u"])
    if name == "touch_units":
        underlying = f"{underlying} [{groups['unit'].strip()}]"
    return (
        Claim(
            market_id=str(market["market_id"]),
            event_key=str(market.get("event_id", "")),
            yes_token=outcomes[0]["token_id"],
            no_token=outcomes[1]["token_id"],
            underlying=underlying,
            kind=kind,
            threshold=threshold,
            date_ms=date,
            confidence=_CONFIDENCE[name],
            source=f"question:{name}",
        ),
        "",
    )


def _underlying(text: str) -> str:
    text = re.sub(r"^(?:the )?price of ", "", text.strip())
    return _ALIASES.get(text, text)


def _date_ms(name: str, groups: Mapping[str, str | None], end_ms: int | None) -> int | None:
    """UTC midnight of the question's date: "before YEAR" is Jan 1 of it, "in YEAR" Dec 31,
    "in MONTH" its last day (of the market's end year)."""
    end_year = datetime.fromtimestamp(end_ms / 1000, UTC).year if end_ms else None
    if groups.get("date"):
        return _parse_date(str(groups["date"]), end_year)
    period = (groups.get("year") or groups.get("period") or "").strip()
    if period.isdigit() and len(period) == 4:
        return _utc(int(period), 1, 1) if name == "before_year" else _utc(int(period), 12, 31)
    if period in _MONTHS and end_year is not None:
        month = _MONTHS[period]
        first_of_next = _utc(end_year + (month == 12), month % 12 + 1, 1)
        return None if first_of_next is None else first_of_next - 86_400_000
    return None


def _parse_date(text: str, default_year: int | None) -> int | None:
    iso = re.fullmatch(r"(\d{4})-(\d{2})-(\d{2})", text)
    if iso:
        return _utc(int(iso.group(1)), int(iso.group(2)), int(iso.group(3)))
    m = re.fullmatch(rf"({_MONTH})\.? (\d{{1,2}})(?:st|nd|rd|th)?(?:,? (\d{{4}}))?", text)
    if m is None:
        return None
    year = int(m.group(3)) if m.group(3) else default_year
    if year is None:
        return None
    return _utc(year, _MONTHS[m.group(1)], int(m.group(2)))


def _utc(year: int, month: int, day: int) -> int | None:
    try:
        return int(datetime(year, month, day, tzinfo=UTC).timestamp() * 1000)
    except ValueError:
        return None


def gamma_markets(payload: Any) -> list[dict[str, Any]]:
    """Market-like records (market_id, question, end_ms, outcomes) of every market in a Gamma
    API payload (a market, a list of markets, an event with markets), de-duplicated by id."""
    found: dict[str, dict[str, Any]] = {}

    def walk(x: Any) -> None:
        if isinstance(x, dict):
            if "question" in x and "conditionId" in x:
                found[str(x["conditionId"])] = x
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(payload)
    out = []
    for cid, g in found.items():
        tokens = g.get("clobTokenIds") or "[]"
        tokens = json.loads(tokens) if isinstance(tokens, str) else tokens
        end = g.get("endDate")
        out.append(
            {
                "market_id": f"pm:{cid}",
                "event_id": "",
                "venue": "polymarket",
                "question": g["question"],
                "end_ms": _utc(int(end[:4]), int(end[5:7]), int(end[8:10])) if end else None,
                "outcomes": [{"token_id": str(t)} for t in tokens],
            }
        )
    return out
