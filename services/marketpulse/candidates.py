"""Candidate equivalence groups: pairs of binary markets (same venue or Polymarket↔Kalshi) whose
questions look like the same proposition, or its negation, proposed for a person to review.

A candidate never fires a signal. It goes to the review topic (`group_review`); only once a
person approves it does it join the registry of the cross_market rule. Title similarity is
weak evidence on its own (one public audit found 3 of 30 title-similar Polymarket/Kalshi pairs
to be truly the same contract), so a pair is proposed only when every hard check passes:

- both markets are active binaries of different events (an event's own outcomes are the
  complete-set rule's business);
- the numbers in the questions (strikes, thresholds, counts; Kalshi strike fields included)
  are the same, and so are the years they name;
- they close within `max_days` of each other;
- the named entities (capitalised words, after a few venue synonyms such as "Pro Basketball" =
  "NBA") of one question are all in the other's: "Cleveland" matches "Cleveland Cavaliers",
  "Zohran Mamdani" does not match "Andrew Cuomo" however alike the rest of the wording;
- the wording left once negations are set aside scores at least `min_score` (rapidfuzz token
  ratios, blended with date proximity).

The relation is `complement` when exactly one question is negated ("not win") or they ask the
opposite side of the same threshold (above/below, over/under), else `identity`; the negated or
lower-side question is the second member, as the registry expects. Each candidate carries its
score and the reasons behind it. Blocking: markets are compared only when they share a named
entity or a number that at most `max_key_markets` markets carry, so thousands of markets cost
thousands of comparisons, not millions.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any, Literal

from rapidfuzz import fuzz

from marketpulse.errors import ConfigError

DAY_MS = 86_400_000
Relation = Literal["identity", "complement"]

# Venue wordings of one thing, applied (case-insensitively) before anything else.
SYNONYMS = {
    r"\bpro basketball\b": "NBA",
    r"\bpro football\b": "NFL",
    r"\bnyc\b": "New York City",
    r"\bu\.s\.(?:a\.)?": "US",
    r"\bbtc\b": "Bitcoin",
    r"\beth\b": "Ethereum",
}
_MONTHS = ["jan", "feb", "mar", "apr", "jun", "jul", "aug", "sept", "sep", "oct", "nov", "dec"]
_FULL = (
    "January February March April June July August September September October November December"
)
# "Dec 31" reads as "December 31" (a month before a day number; "mar" alone stays a word).
SYNONYMS.update(
    {rf"\b{short}\.?(?=\s+\d)": full for short, full in zip(_MONTHS, _FULL.split(), strict=True)}
)
_NOT_ENTITIES = {
    "will", "the", "a", "an", "in", "on", "by", "of", "who", "what", "which", "when", "how",
    "is", "are", "does", "do", "be", "yes", "no", "not", "january", "february", "march",
    "april", "may", "june", "july", "august", "september", "october", "november", "december",
}  # fmt: skip
# Words whose presence on one side only says nothing about the proposition.
_FILLER = {
    "will", "the", "a", "an", "be", "of", "in", "on", "by", "to", "for", "and", "at", "is",
    "are", "does", "do", "price", "game", "market", "contract", "happen", "there", "after",
}  # fmt: skip
EXTRA_WORD_PENALTY = 0.08  # per content word only one question has (module doc)
_NEGATION = re.compile(r"\b(?:not|never|fails? to)\b|n't\b")
_SIDES = {"above": "hi", "over": "hi", "below": "lo", "under": "lo"}
_NUMBER = re.compile(r"\$?\d[\d,]*(?:\.\d+)?\s?(?:k|m|b|thousand|million|billion|%)?(?![\w])")
_MULT = {"k": 1e3, "thousand": 1e3, "m": 1e6, "million": 1e6, "b": 1e9, "billion": 1e9}


@dataclass(frozen=True)
class Profile:
    """What matching reads of one market."""

    market_id: str
    event_id: str
    venue: str
    question: str
    text: str  # lower case, synonyms applied; negations, filler words, punctuation removed
    entities: frozenset[str]
    numbers: frozenset[float]
    years: frozenset[int]
    negated: bool
    side: str  # "hi" (above/over), "lo" (below/under) or ""
    end_ms: int | None


@dataclass(frozen=True)
class Candidate:
    """A proposed group of two markets, with why it was proposed."""

    relation: Relation
    first: Profile
    second: Profile  # the negated (or lower-side) question of a complement
    score: float
    reasons: tuple[str, ...]

    @property
    def candidate_id(self) -> str:
        """Stable over runs: the same pair and relation always get the same id."""
        digest = hashlib.sha1(self.spec().encode()).hexdigest()[:12]
        return f"cand-{digest}"

    def spec(self) -> str:
        """`relation:market=orientation,market=orientation`, what a reviewer approves."""
        return f"{self.relation}:{self.first.market_id}=yes,{self.second.market_id}=yes"

    def describe(self) -> str:
        return (
            f"{self.relation} score {self.score:.2f}: {self.first.question!r} "
            f"<> {self.second.question!r} ({'; '.join(self.reasons)})"
        )


def parse_spec(spec: str) -> tuple[Relation, list[tuple[str, str]]]:
    """(relation, [(market id, orientation), ...]) of a `Candidate.spec()` string."""
    relation, sep, rest = spec.partition(":")
    if not sep or relation not in ("identity", "complement"):
        raise ConfigError(f"not a group spec (relation:market=yes,market=no): {spec!r}")
    members = []
    for part in rest.split(","):
        market, eq, orientation = part.rpartition("=")
        if not eq or not market or orientation not in ("yes", "no"):
            raise ConfigError(f"bad member {part!r} in group spec {spec!r}")
        members.append((market, orientation))
    return relation, members  # type: ignore[return-value]


def profile(market: Mapping[str, Any]) -> Profile | None:
    """The profile of an active binary market; None for anything else."""
    if market.get("status", "active") != "active" or len(market.get("outcomes") or []) != 2:
        return None
    question = str(market.get("question") or "").strip()
    if not question:
        return None
    text = question.replace("\u2019", "'")
    for pattern, word in SYNONYMS.items():
        text = re.sub(pattern, word, text, flags=re.IGNORECASE)
    entities = frozenset(
        w.lower()
        for w in re.findall(r"\b[A-Z][\w'.-]*", text)
        if w.lower().strip(".'") not in _NOT_ENTITIES
    )
    lower = text.lower()
    numbers, years = _numbers(lower)
    for strike in ("floor_strike", "cap_strike"):
        if market.get(strike) is not None:
            numbers.add(float(market[strike]))
    side = next((s for w, s in _SIDES.items() if re.search(rf"\b{w}\b", lower)), "")
    plain = _NEGATION.sub(" ", lower)
    plain = re.sub(r"\b(?:above|over|below|under)\b", " ", plain)
    # Numbers and years are compared exactly on their own: the wording is the words around them.
    plain = _NUMBER.sub(" ", plain)
    words = re.sub(r"[^\w]+", " ", plain).split()
    plain = " ".join(_stem(w) for w in words if w not in _FILLER)
    return Profile(
        market_id=str(market["market_id"]),
        event_id=str(market.get("event_id") or market["market_id"]),
        venue=str(market.get("venue") or ""),
        question=question,
        text=plain,
        entities=entities,
        numbers=frozenset(numbers),
        years=frozenset(years),
        negated=bool(_NEGATION.search(lower)),
        side=side,
        end_ms=int(market["end_ms"]) if market.get("end_ms") else None,
    )


def _stem(word: str) -> str:
    """Plural and third-person "s" off ("cuts" = "cut"), enough for questions' wording."""
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def _numbers(text: str) -> tuple[set[float], set[int]]:
    numbers: set[float] = set()
    years: set[int] = set()
    for m in _NUMBER.finditer(text):
        raw = m.group(0).strip()
        digits = raw.lstrip("$").rstrip("%kmb ").replace(",", "")
        for word in ("thousand", "million", "billion"):
            digits = digits.removesuffix(word).strip()
        try:
            value = float(digits)
        except ValueError:
            continue
        unit = re.sub(r"[\d$,.%\s]", "", raw)
        if not raw.startswith("$") and not unit and value.is_integer() and 1900 <= value <= 2100:
            years.add(int(value))
            continue
        numbers.add(value * _MULT.get(unit, 1.0))
    return numbers, years


# --------------------------------------------------------------------------------------------
# Matching
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    min_score: float = 0.85
    max_days: float = 3.0
    max_key_markets: int = 50  # blocking keys shared by more markets are not used


def suggest(
    markets: Iterable[Mapping[str, Any]], options: Options | None = None
) -> tuple[list[Candidate], dict[str, int]]:
    """Candidates over `markets` (best first), and counts of what was done (profiles, pairs
    compared, candidates) so a caller can see the blocking at work."""
    opts = options or Options()
    # Sorted by id: the same markets in any order (a topic's partitions interleave) give the
    # same candidates, with the same member order and ids.
    unique = {p.market_id: p for m in markets if (p := profile(m)) is not None}
    profiles = [unique[mid] for mid in sorted(unique)]
    pairs = blocked_pairs(profiles, opts.max_key_markets)
    found = [c for i, j in sorted(pairs) if (c := compare(profiles[i], profiles[j], opts))]
    found.sort(key=lambda c: (-c.score, c.candidate_id))
    return found, {"markets": len(profiles), "compared": len(pairs), "candidates": len(found)}


def blocked_pairs(profiles: Sequence[Profile], max_key_markets: int) -> set[tuple[int, int]]:
    """Index pairs sharing a rare key (an entity or a number held by few markets)."""
    index: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(profiles):
        for key in {f"e:{e}" for e in p.entities} | {f"n:{n:g}" for n in p.numbers}:
            index[key].append(i)
    pairs: set[tuple[int, int]] = set()
    for members in index.values():
        if 2 <= len(members) <= max_key_markets:
            pairs.update(combinations(members, 2))
    return pairs


def compare(a: Profile, b: Profile, opts: Options) -> Candidate | None:
    """The candidate of two profiles, or None when any hard check fails (module doc)."""
    if a.market_id == b.market_id or a.event_id == b.event_id:
        return None
    if a.numbers != b.numbers or (a.years and b.years and a.years != b.years):
        return None
    days = _days_apart(a, b)
    # Both naming the same year settles the period; close times then differ by venue practice
    # (Kalshi closes long-dated markets at a late backstop, years after the expected end).
    same_year = bool(a.years) and a.years == b.years
    if days is not None and days > opts.max_days and not same_year:
        return None
    small, large = sorted((a.entities, b.entities), key=len)
    if not small or not small <= large:
        return None
    text = wording(a, b, large - small)
    closeness = 1.0 if days is None else max(0.5, 1.0 - days / (opts.max_days + 1.0))
    extra = extra_words(a, b)
    score = round(0.8 * text + 0.2 * closeness - EXTRA_WORD_PENALTY * len(extra), 4)
    if score < opts.min_score:
        return None
    reasons = [f"wording {text:.2f}", f"entities {' '.join(sorted(small))}"]
    if extra:
        reasons.append(f"only one side says {' '.join(sorted(extra))}")
    if a.numbers:
        reasons.append(f"numbers {', '.join(f'{n:g}' for n in sorted(a.numbers))}")
    if a.years and b.years:
        reasons.append(f"year {', '.join(str(y) for y in sorted(a.years))}")
    reasons.append("no close dates" if days is None else f"close {days:g} days apart")
    if a.venue != b.venue:
        reasons.append(f"cross-venue {a.venue}/{b.venue}")
    first, second, relation, why = _relation(a, b)
    reasons.append(why)
    return Candidate(relation, first, second, score, tuple(reasons))


def wording(a: Profile, b: Profile, extra_names: frozenset[str]) -> float:
    """Similarity in [0, 1] of the two wordings, leaving out the names only one side gives
    (already checked to refine the other's: "Cleveland Cavaliers" for "Cleveland")."""
    names = {_stem(e) for e in extra_names}
    ta, tb = (" ".join(w for w in p.text.split() if w not in names) for p in (a, b))
    return (fuzz.token_set_ratio(ta, tb) + fuzz.token_sort_ratio(ta, tb)) / 200


def extra_words(a: Profile, b: Profile) -> set[str]:
    """Content words of one question missing from the other ("second place", "margin"),
    entities of either side aside ("Cavaliers" in "Cleveland Cavaliers" is no qualifier)."""

    names = {_stem(e) for e in a.entities | b.entities}
    return (set(a.text.split()) ^ set(b.text.split())) - names


def _relation(a: Profile, b: Profile) -> tuple[Profile, Profile, Relation, str]:
    if a.negated != b.negated:
        first, second = (b, a) if a.negated else (a, b)
        return first, second, "complement", "the second question is negated"
    if a.side and b.side and a.side != b.side:
        first, second = (a, b) if a.side == "hi" else (b, a)
        why = "opposite sides of one threshold (check who settles the boundary value)"
        return first, second, "complement", why
    return a, b, "identity", "same wording"


def _days_apart(a: Profile, b: Profile) -> float | None:
    if a.end_ms is None or b.end_ms is None:
        return None
    return round(abs(a.end_ms - b.end_ms) / DAY_MS, 2)
