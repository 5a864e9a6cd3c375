"""Logical constraints: if claim S implies claim W then P(S) <= P(W). A violation (S bid above
W ask) is an arbitrage: buy W's YES and S's NO, which pays 1 in every state (2 when W holds and
S does not), so the edge is bid(S) - ask(W) net of fees, walked across both books
(`hedge.evaluate`; S's NO ask is its own, or 1 - S's YES bid on bids-only venues).

Claims come from Kalshi strike fields (`ladder_claims`) and from parsed questions
(`marketpulse.rules.propositions`). Implications (`implications`):
- **ladder**: "above X" implies "above Y" for Y < X, and "below X" implies "below Y" for Y > X,
  on the same underlying and date;
- **term structure**: "by D1" implies "by D2" for D1 < D2, on the same underlying and threshold;
- **touch** ("reach X by D", "dip to X by D"): reaching a higher X (dipping to a lower X) by an
  earlier or equal D implies reaching (dipping to) a lower (higher) one by a later or equal D.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from marketpulse.rules.common import num
from marketpulse.rules.hedge import Hedge

Kind = Literal["above", "below", "by", "reach", "dip"]

# Kalshi strike_type values whose YES is "value above floor_strike" / "below cap_strike".
_ABOVE = {"greater", "greater_or_equal"}
_BELOW = {"less", "less_or_equal"}


@dataclass(frozen=True)
class Claim:
    """A binary market read as a proposition about an underlying."""

    market_id: str
    event_key: str
    yes_token: str
    no_token: str
    underlying: str  # what the claim is about: same underlying, comparable claims
    kind: Kind
    threshold: float | None
    date_ms: int | None
    confidence: float = 1.0
    source: str = "strike"


def ladder_claims(markets: Iterable[Mapping[str, Any]]) -> list[Claim]:
    """Claims of the active binary markets carrying Kalshi strike fields. The underlying is the
    event (one Kalshi event = one underlying at one date)."""
    out = []
    for m in markets:
        kind: Kind | None = None
        strike_type = m.get("strike_type")
        if strike_type in _ABOVE and m.get("floor_strike") is not None:
            kind, threshold = "above", float(m["floor_strike"])
        elif strike_type in _BELOW and m.get("cap_strike") is not None:
            kind, threshold = "below", float(m["cap_strike"])
        if kind is None or len(m.get("outcomes") or []) != 2 or m.get("status") != "active":
            continue
        out.append(
            Claim(
                market_id=m["market_id"],
                event_key=m["event_id"],
                yes_token=m["outcomes"][0]["token_id"],
                no_token=m["outcomes"][1]["token_id"],
                underlying=m["event_id"],
                kind=kind,
                threshold=threshold,
                date_ms=m.get("end_ms"),
            )
        )
    return out


def implies(s: Claim, w: Claim) -> bool:
    """Whether claim `s` logically implies claim `w` (and they are different markets)."""
    if s.market_id == w.market_id or s.underlying != w.underlying or s.kind != w.kind:
        return False
    if s.kind in ("above", "below"):
        if s.date_ms != w.date_ms or s.threshold is None or w.threshold is None:
            return False
        return s.threshold > w.threshold if s.kind == "above" else s.threshold < w.threshold
    if s.kind in ("reach", "dip"):
        if None in (s.threshold, w.threshold, s.date_ms, w.date_ms):
            return False
        assert s.threshold is not None and w.threshold is not None
        assert s.date_ms is not None and w.date_ms is not None
        further = s.threshold >= w.threshold if s.kind == "reach" else s.threshold <= w.threshold
        sooner = s.date_ms <= w.date_ms
        return further and sooner and (s.threshold, s.date_ms) != (w.threshold, w.date_ms)
    if s.threshold != w.threshold or s.date_ms is None or w.date_ms is None:
        return False
    return s.date_ms < w.date_ms


def implications(claims: Sequence[Claim]) -> list[tuple[Claim, Claim]]:
    """Every (stronger, weaker) pair, in a deterministic order."""
    ordered = sorted(claims, key=lambda c: c.market_id)
    return [(s, w) for s in ordered for w in ordered if implies(s, w)]


def hedges(claims: Sequence[Claim]) -> list[Hedge]:
    """The arbitrage hedge of every implication: buy W's YES and S's NO."""
    out = []
    for s, w in implications(claims):
        what = "term" if s.kind == "by" else "ladder"
        out.append(
            Hedge(
                key=f"{what}|{s.market_id}=>{w.market_id}",
                subject=s.market_id,
                event_key=s.event_key,
                tokens=((w.market_id, w.yes_token), (s.market_id, s.no_token)),
                relation="implies",
                evidence=(
                    ("constraint", what),
                    ("stronger", s.market_id),
                    ("weaker", w.market_id),
                    ("kind", s.kind),
                    ("stronger_threshold", _opt(s.threshold)),
                    ("weaker_threshold", _opt(w.threshold)),
                    ("stronger_date_ms", _opt(s.date_ms)),
                    ("weaker_date_ms", _opt(w.date_ms)),
                    ("confidence", num(min(s.confidence, w.confidence))),
                    ("source", f"{s.source},{w.source}"),
                ),
            )
        )
    return out


def _opt(x: float | None) -> str:
    return "" if x is None else num(x)
