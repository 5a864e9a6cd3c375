"""Kalshi markets read as deadline claims, for term structure *across* events.

Within one Kalshi event the strike fields make a ladder (`logical.ladder_claims`). Across the
events of one series, dates differ, and only some claims imply each other over time:

- "X happens by/before D" (cumulative: once true it stays true) and "X reaches (dips to) K by D"
  (a touch at any time up to D): by D1 implies by D2 for D1 < D2, and a higher touch by an
  earlier date implies a lower one by a later date. These are compared.
- "X is above K *at/on* D" (an expiration value, Kalshi's usual strike market): the value at D1
  says nothing about the value at D2. These are never compared across dates.

Kalshi carries no field that says which of the two a market is (strike_type "greater" is used
for both), so a market counts as a deadline claim only when both its title and its rules agree:

1. the title reads as a "by/before DATE" or "reach/dip to K by/before DATE" question
   (`propositions.parse`, confidence >= the rule's `min_confidence`; "in YEAR" windows read
   below it and are left out: windows of different years are disjoint, not nested);
2. the rules text says "before", "prior to", "by the end of", "by <month>" or "at any
   time/point", and says nothing of a value at a time ("expiration value", "closing price",
   "settlement value", "at 5pm"): a title "above K by Friday" whose rules settle on Friday's
   5pm value is an expiration claim, whatever its title says;
3. a touch threshold in the title agrees with the strike field when there is one.

Claims are compared within one series only (the underlying is prefixed with the series ticker):
two series with alike titles may settle on different sources, which only a reviewed group may
assert.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from marketpulse.rules.propositions import Parse, parse

_MONTH = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?"  # any month, any spelling
_CUMULATIVE = re.compile(
    rf"\b(?:before|prior to|at any (?:time|point)|by the end of|on or before|by {_MONTH})\b"
)
_AT_TIME = re.compile(
    r"\b(?:expiration value|closing (?:price|value)|settlement value|"
    r"at \d{1,2}(?::\d{2})?\s?(?:am|pm))\b"
)
DEADLINE_KINDS = ("by", "reach", "dip")


def series(market: Mapping[str, Any]) -> str:
    """The series ticker of a Kalshi market: its event ticker up to the first dash."""
    event = str(market.get("event_id") or "").removeprefix("ks:")
    return event.split("-", 1)[0]


def parse_deadline(market: Mapping[str, Any]) -> Parse | None:
    """The deadline claim of a Kalshi market, or None when it is not one (see the module doc).
    A Parse with no claim says why a title that reads as a deadline was still left out."""
    parsed = parse(market)
    if parsed is None or parsed.claim is None or parsed.claim.kind not in DEADLINE_KINDS:
        return None
    rules = " ".join(str(market.get("rules_text") or "").lower().split())
    why = ""
    if _AT_TIME.search(rules):  # checked first: it overrides a "before" elsewhere in the text
        why = "rules settle on a value at a time, not on a deadline"
    elif not _CUMULATIVE.search(rules):
        why = "rules do not say the claim holds once true (no 'before', 'at any time', ...)"
    elif (strike := _strike(market, parsed.claim.kind)) is not None and (
        parsed.claim.threshold is None or abs(strike - parsed.claim.threshold) > 1e-9
    ):
        why = f"title threshold {parsed.claim.threshold} is not the strike {strike}"
    if why:
        return replace(parsed, claim=None, reason=f"kalshi: {why}")
    claim = replace(
        parsed.claim,
        underlying=f"{series(market)} {parsed.claim.underlying}",
        source=f"kalshi:{parsed.pattern}+rules",
    )
    return replace(parsed, claim=claim)


def _strike(market: Mapping[str, Any], kind: str) -> float | None:
    if kind == "reach" and market.get("floor_strike") is not None:
        return float(market["floor_strike"])
    if kind == "dip" and market.get("cap_strike") is not None:
        return float(market["cap_strike"])
    return None
