"""Complete-set arbitrage, fee- and depth-aware. Pure functions: no Faust, no Kafka, no clock.

A *complete set* is a group of outcome tokens of which exactly one pays 1 at resolution: the YES
and NO of one binary market, or the YES of every market of a mutually exclusive event.

- **buy**: buy one of each below 1 in total, net of taker fees: profit/share = 1 - Σp - Σfee(p).
- **sell**: mint a set for 1, sell one of each above 1: profit/share = Σp - Σfee(p) - 1.

Legs are sized in equal share counts (a set needs one of each), walking every leg's ladder
together, so the executable size is the depth actually available at the prices used. Signals are
driven by *episodes*: one when an opportunity opens on a leg set, none while it stays the same,
nothing when it closes (see `OpportunityTracker`). Everything here depends only on its inputs,
event time included, so reprocessing the same messages yields the same signal ids.

Design note: negRiskAugmented events are skipped entirely (their implicit "Other" outcome makes
Σ YES < 1 without any arbitrage), and so is the multi-outcome set of non-exclusive events
(cumulative thresholds are not a partition). See VENUES.md, "Fees and arbitrage guards".
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal, NamedTuple

from marketpulse.fees import order_fee, taker_fee_per_share
from marketpulse.rules import CompleteSetParams, RuleDef

Direction = Literal["buy", "sell"]

# A marginal profit this close to zero is float noise (0.3 + 0.3 + 0.4 != 1.0), not an edge.
PROFIT_EPSILON = 1e-9
# Executable sizes are floored to hundredths of a share; the epsilon keeps 99.99999999 at 100.
SIZE_DECIMALS = 2
_SIZE_EPSILON = 1e-9


# --------------------------------------------------------------------------------------------
# Leg sets
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LegSet:
    """Tokens that form a complete set. `key` identifies it within its event."""

    key: str
    kind: Literal["binary", "multi"]
    subject: str  # market id for a binary set, event key for a multi-outcome set
    event_key: str
    tokens: tuple[tuple[str, str], ...]  # (market_id, token_id), in a deterministic order

    @cached_property
    def token_ids(self) -> frozenset[str]:
        return frozenset(token for _, token in self.tokens)


def complete_sets(markets_of_event: Iterable[Mapping[str, Any]]) -> list[LegSet]:
    """Complete sets of one event's markets (Market records), binaries first, sorted by id.

    Only active markets take part. The multi-outcome set needs an exclusive event with every one
    of its `event_market_count` (> 1) markets known and active: with a leg missing, Σ YES < 1
    is no arbitrage at all.
    """
    markets = sorted(markets_of_event, key=lambda m: m["market_id"])
    if not markets or any(m.get("neg_risk_augmented") for m in markets):
        return []
    event_key = markets[0]["event_id"]
    active = [m for m in markets if m.get("status") == "active"]
    sets = [
        LegSet(
            key=f"binary:{m['market_id']}",
            kind="binary",
            subject=m["market_id"],
            event_key=event_key,
            tokens=tuple((m["market_id"], o["token_id"]) for o in m["outcomes"]),
        )
        for m in active
        if len(m["outcomes"]) == 2
    ]
    expected = max(int(m.get("event_market_count", 1)) for m in markets)
    exclusive = all(m.get("exclusive", True) for m in markets)
    if exclusive and expected > 1 and len(active) == len(markets) == expected:
        sets.append(
            LegSet(
                key=f"multi:{event_key}",
                kind="multi",
                subject=event_key,
                event_key=event_key,
                tokens=tuple((m["market_id"], m["outcomes"][0]["token_id"]) for m in active),
            )
        )
    return sets


# --------------------------------------------------------------------------------------------
# Depth walk
# --------------------------------------------------------------------------------------------


class LegInput(NamedTuple):
    """One leg to evaluate: its market (for min_size), token, book side and fee schedule."""

    market: Mapping[str, Any]
    token_id: str
    levels: Sequence[Mapping[str, float]]  # asks to buy, bids to sell; {price, size}
    fee: Mapping[str, Any]
    # The best usable price of `levels` when the caller already knows it (the worker's stored
    # books carry it); None: found by scanning the levels.
    best: float | None = None


@dataclass(frozen=True)
class LegFill:
    market_id: str
    token_id: str
    side: Literal["BUY", "SELL"]
    fills: tuple[tuple[float, float], ...]  # (price, size) per level used, best first
    fee: float  # taker fee paid on this leg

    @property
    def size(self) -> float:
        return sum(size for _, size in self.fills)

    @property
    def worst_price(self) -> float:
        return self.fills[-1][0]

    @property
    def value(self) -> float:
        """Cash paid (buy) or received (sell) for the shares, before fees."""
        return sum(price * size for price, size in self.fills)


@dataclass(frozen=True)
class Opportunity:
    direction: Direction
    size: float  # shares per leg
    value: float  # Σ legs' cash paid (buy) or received (sell), before fees
    fees: float
    outlay: float  # cash needed: value + fees (buy), 1 per set minted (sell)
    profit: float
    edge_bps: float  # profit / outlay
    legs: tuple[LegFill, ...]

    def fingerprint(self) -> str:
        """What makes two sightings 'the same opportunity': its size and the prices used."""
        legs = ";".join(
            f"{leg.token_id}@" + ",".join(_num(price) for price, _ in leg.fills)
            for leg in self.legs
        )
        return f"{self.direction}|{self.size:.{SIZE_DECIMALS}f}|{legs}"


def evaluate_buy(
    legs: Sequence[LegInput], min_edge_bps: float = 0.0, max_levels: int = 10
) -> Opportunity | None:
    """Buy one of each leg while 1 - Σp - Σfee(p) > 0 at the current levels."""
    return _evaluate(
        "buy",
        legs,
        min_edge_bps,
        max_levels,
        marginal=lambda prices, fees: 1.0 - sum(prices) - sum(fees),
    )


def evaluate_sell(
    legs: Sequence[LegInput], min_edge_bps: float = 0.0, max_levels: int = 10
) -> Opportunity | None:
    """Mint sets at 1 and sell one of each while Σp - Σfee(p) - 1 > 0 at the current levels."""
    return _evaluate(
        "sell",
        legs,
        min_edge_bps,
        max_levels,
        marginal=lambda prices, fees: sum(prices) - sum(fees) - 1.0,
    )


def _evaluate(
    direction: Direction,
    legs: Sequence[LegInput],
    min_edge_bps: float,
    max_levels: int,
    marginal: Callable[[list[float], list[float]], float],
) -> Opportunity | None:
    if not legs or not _top_of_book_pays(direction, legs, marginal):
        return None
    ladders = [_ladder(leg.levels, direction, max_levels) for leg in legs]
    size = _floor_size(_walk(ladders, [leg.fee for leg in legs], marginal))
    min_size = max(float(leg.market.get("min_size", 0.0) or 0.0) for leg in legs)
    if size <= 0 or size < min_size:
        return None
    side: Literal["BUY", "SELL"] = "BUY" if direction == "buy" else "SELL"
    fills = []
    for leg, ladder in zip(legs, ladders, strict=True):
        used = _fills_for(ladder, size)
        fills.append(
            LegFill(leg.market["market_id"], leg.token_id, side, used, order_fee(leg.fee, used))
        )
    value = sum(f.value for f in fills)
    fees = sum(f.fee for f in fills)
    if direction == "buy":
        outlay = value + fees
        profit = size - outlay
    else:
        outlay = size  # minting a set costs exactly 1
        profit = value - fees - size
    edge_bps = profit / outlay * 10_000.0
    # Kalshi's per-order rounding (order_fee) can take back an edge the continuous walk saw.
    if profit <= 0 or edge_bps < min_edge_bps:
        return None
    return Opportunity(direction, size, value, fees, outlay, profit, edge_bps, legs=tuple(fills))


def _top_of_book_pays(
    direction: Direction,
    legs: Sequence[LegInput],
    marginal: Callable[[list[float], list[float]], float],
) -> bool:
    """Whether the best level of every leg already pays. Nearly every book update leaves the
    set fairly priced: this one pass per leg spares building and walking the ladders."""
    pick = min if direction == "buy" else max
    best = []
    for leg in legs:
        price = leg.best
        if price is None:
            # Inline rather than usable(): this loop runs for every level of every leg.
            price = pick(
                (lv["price"] for lv in leg.levels if lv["size"] > 0 and 0 < lv["price"] < 1),
                default=None,
            )
            if price is None:
                return False
        best.append(float(price))
    fees = [taker_fee_per_share(leg.fee, p) for leg, p in zip(legs, best, strict=True)]
    return marginal(best, fees) > PROFIT_EPSILON


def usable(level: Mapping[str, float]) -> bool:
    """A level a taker can trade: a price strictly inside (0, 1) with size."""
    return 0.0 < float(level["price"]) < 1.0 and float(level["size"]) > 0.0


def _ladder(
    levels: Sequence[Mapping[str, float]], direction: Direction, max_levels: int
) -> list[tuple[float, float]]:
    """Usable (price, size) levels, best first. Bad levels (price outside (0, 1), no size) are
    dropped rather than trusted, and the order is enforced: walking a worse level before a
    better one would misstate both size and edge."""
    clean = [(float(lv["price"]), float(lv["size"])) for lv in levels if usable(lv)]
    clean.sort(key=lambda lv: lv[0], reverse=direction == "sell")
    return clean[:max_levels]


def _walk(
    ladders: list[list[tuple[float, float]]],
    fee_schedules: list[Mapping[str, Any]],
    marginal: Callable[[list[float], list[float]], float],
) -> float:
    """Equal-share walk: at each step take the smallest remaining size among every leg's
    current level, while the marginal profit per share stays strictly positive."""
    index = [0] * len(ladders)
    remaining = [ladder[0][1] for ladder in ladders]
    total = 0.0
    while True:
        prices = [ladder[i][0] for ladder, i in zip(ladders, index, strict=True)]
        fees = [taker_fee_per_share(f, p) for f, p in zip(fee_schedules, prices, strict=True)]
        if marginal(prices, fees) <= PROFIT_EPSILON:
            return total
        step = min(remaining)
        total += step
        for k, ladder in enumerate(ladders):
            remaining[k] -= step
            if remaining[k] <= _SIZE_EPSILON:
                index[k] += 1
                if index[k] == len(ladder):
                    return total  # one leg has no more depth: no more complete sets
                remaining[k] = ladder[index[k]][1]


def _fills_for(ladder: list[tuple[float, float]], size: float) -> tuple[tuple[float, float], ...]:
    """The levels that fill `size` shares from the top of one ladder."""
    fills = []
    left = size
    for price, available in ladder:
        if left <= _SIZE_EPSILON:
            break
        take = min(available, left)
        fills.append((price, round(take, SIZE_DECIMALS + 6)))
        left -= take
    return tuple(fills)


def _floor_size(size: float) -> float:
    scale = 10**SIZE_DECIMALS
    return math.floor(size * scale + _SIZE_EPSILON) / scale


# --------------------------------------------------------------------------------------------
# Episodes
# --------------------------------------------------------------------------------------------


@dataclass
class OpportunityTracker:
    """Which leg sets have an open opportunity, and when each subject last had a signal.

    - closed → open: signal (unless the subject is in cooldown: then it is *pending* and is
      signalled at the first sighting after the cooldown, if still open);
    - open, same fingerprint: nothing; open, new size or prices: signal if `update_on_change`;
    - open → closed: nothing, and the next opening is a new episode.

    Times are event times (ms). The state is plain JSON (it lives in a Faust table).
    """

    cooldown_ms: int = 0
    update_on_change: bool = True
    # set key -> {"fp": fingerprint, "sent": whether that fingerprint was signalled}
    open: dict[str, dict[str, Any]] = field(default_factory=dict)
    last_signal_ms: dict[str, int] = field(default_factory=dict)  # subject -> event time

    @classmethod
    def from_state(
        cls, state: Mapping[str, Any] | None, *, cooldown_ms: int = 0, update_on_change: bool = True
    ) -> OpportunityTracker:
        state = state or {}
        return cls(
            cooldown_ms=cooldown_ms,
            update_on_change=update_on_change,
            open={k: dict(v) for k, v in state.get("open", {}).items()},
            last_signal_ms=dict(state.get("last_signal_ms", {})),
        )

    def state(self) -> dict[str, Any]:
        return {"open": self.open, "last_signal_ms": self.last_signal_ms}

    def saved(self) -> dict[str, Any] | None:
        """The state worth storing: None when nothing is open and nothing was ever signalled."""
        return self.state() if self.open or self.last_signal_ms else None

    def observe(self, set_key: str, subject: str, fingerprint: str | None, ts_ms: int) -> bool:
        """Record a sighting (fingerprint None = no opportunity); True when it is a signal."""
        current = self.open.get(set_key)
        if fingerprint is None:
            self.open.pop(set_key, None)
            return False
        if (
            current is not None
            and current["sent"]
            and (current["fp"] == fingerprint or not self.update_on_change)
        ):
            current["fp"] = fingerprint
            return False
        if self._cooling(subject, ts_ms):
            self.open[set_key] = {"fp": fingerprint, "sent": False}
            return False
        self.open[set_key] = {"fp": fingerprint, "sent": True}
        self.last_signal_ms[subject] = ts_ms
        return True

    def retain(self, set_keys: Iterable[str]) -> None:
        """Forget sets that no longer exist (a market closed, an event changed shape), so that
        one coming back starts a new episode instead of looking still open."""
        keep = set(set_keys)
        self.open = {k: v for k, v in self.open.items() if k in keep}

    def _cooling(self, subject: str, ts_ms: int) -> bool:
        last = self.last_signal_ms.get(subject)
        return self.cooldown_ms > 0 and last is not None and ts_ms - last < self.cooldown_ms


# --------------------------------------------------------------------------------------------
# Signals
# --------------------------------------------------------------------------------------------


def signal_id(rule_id: str, rule_version: int, subject: str, ts_ms: int, *parts: str) -> str:
    """Deterministic id from what fired the signal: same inputs, same id, on every replay.

    `parts` disambiguate signals of one subject at one event time (direction, input seqs).
    """
    raw = "|".join([rule_id, str(rule_version), subject, str(ts_ms), *parts])
    return hashlib.sha1(raw.encode()).hexdigest()[:24]


def build_signal(
    rule: RuleDef,
    leg_set: LegSet,
    opp: Opportunity,
    books: Mapping[str, Mapping[str, Any]],
    markets: Mapping[str, Mapping[str, Any]],
    trigger_recv_ms: int | None = None,
) -> dict[str, Any]:
    """The Signal record (signal.avsc) of an opportunity, with every input that fired it.

    `books` and `markets` are keyed by token id and market id. `ts_ms` is the latest event time
    among the legs' books (never the wall clock); `trigger_recv_ms` defaults to the latest
    receive time among them (when metadata, not a book, triggered the evaluation).
    """
    params = rule.params_as(CompleteSetParams)
    leg_books = [books[leg.token_id] for leg in opp.legs]
    ts_ms = max(int(b["ts_ms"]) for b in leg_books)
    if trigger_recv_ms is None:
        trigger_recv_ms = max(int(b["recv_ms"]) for b in leg_books)
    seqs = [f"{leg.token_id}@{int(b['seq'])}" for leg, b in zip(opp.legs, leg_books, strict=True)]
    sid = signal_id(rule.rule_id, rule.version, leg_set.subject, ts_ms, opp.direction, *seqs)
    evidence = _evidence(rule, params, leg_set, opp, leg_books, markets)
    return {
        "signal_id": sid,
        "rule_id": rule.rule_id,
        "rule_version": rule.version,
        "level": rule.levels.level_for(opp.edge_bps),
        "subject": leg_set.subject,
        "event_key": leg_set.event_key,
        "market_ids": list(dict.fromkeys(leg.market_id for leg in opp.legs)),
        "ts_ms": ts_ms,
        "trigger_recv_ms": int(trigger_recv_ms),
        "edge_bps": round(opp.edge_bps, 4),
        # Expected profit in quote currency at executable size: ranks signals across sizes.
        "edge_score": round(opp.profit, 6),
        "size": opp.size,
        "notional": round(opp.outlay, 6),
        "legs": [
            {
                "market_id": leg.market_id,
                "token_id": leg.token_id,
                "side": leg.side,
                "price": leg.worst_price,
                "size": opp.size,
            }
            for leg in opp.legs
        ],
        "evidence": evidence,
        "summary": _summary(leg_set, opp),
    }


def _evidence(
    rule: RuleDef,
    params: CompleteSetParams,
    leg_set: LegSet,
    opp: Opportunity,
    leg_books: list[Mapping[str, Any]],
    markets: Mapping[str, Mapping[str, Any]],
) -> dict[str, str]:
    ev = {
        "direction": opp.direction,
        "set": leg_set.kind,
        "set_key": leg_set.key,
        "legs": str(len(opp.legs)),
        "size": _num(opp.size),
        "value": _num(opp.value),
        "fees": _num(opp.fees),
        "outlay": _num(opp.outlay),
        "profit": _num(opp.profit),
        "edge_bps": _num(opp.edge_bps),
        "min_edge_bps": _num(params.min_edge_bps),
        "max_levels": str(params.max_levels),
        "levels": f"P1>={_num(rule.levels.P1)},P2>={_num(rule.levels.P2)}",
        "cooldown_ms": str(rule.cooldown_ms),
    }
    for side in ("asks", "bids"):
        total = _sum_best(leg_books, side)
        if total is not None:  # absent when a leg's side of the book is empty
            ev[f"sum_best_{side}"] = _num(total)
    for i, (leg, book) in enumerate(zip(opp.legs, leg_books, strict=True)):
        fee = markets[leg.market_id].get("fee") or {"model": "none"}
        ev[f"leg{i}.market"] = leg.market_id
        ev[f"leg{i}.token"] = leg.token_id
        ev[f"leg{i}.levels"] = ",".join(f"{_num(p)}x{_num(s)}" for p, s in leg.fills)
        ev[f"leg{i}.fee_paid"] = _num(leg.fee)
        ev[f"leg{i}.fee"] = (
            f"{fee.get('model')} rate={_num(fee.get('rate', 0.0))} "
            f"exponent={_num(fee.get('exponent', 1.0))}"
        )
        ev[f"leg{i}.book_seq"] = str(book["seq"])
        ev[f"leg{i}.book_ts_ms"] = str(book["ts_ms"])
        ev[f"leg{i}.book_recv_ms"] = str(book["recv_ms"])
    return ev


def _summary(leg_set: LegSet, opp: Opportunity) -> str:
    what = "binary market" if leg_set.kind == "binary" else f"{len(opp.legs)}-outcome event"
    verb = "buy every outcome" if opp.direction == "buy" else "mint and sell every outcome"
    return (
        f"Complete set on {what} {leg_set.subject}: {verb} at Σ {opp.value / opp.size:.4f} "
        f"+ fees {opp.fees / opp.size:.4f}/set, {opp.size:g} sets, "
        f"profit {opp.profit:.2f} on {opp.outlay:.2f} ({opp.edge_bps:.0f} bps)"
    )


def _sum_best(books: list[Mapping[str, Any]], side: str) -> float | None:
    tops = [book[side][0]["price"] for book in books if book.get(side)]
    return sum(tops) if len(tops) == len(books) else None


def _num(x: float) -> str:
    """Stable, short text of a number for evidence (same input, same text)."""
    return f"{x:.10g}"


# --------------------------------------------------------------------------------------------
# One event at a time
# --------------------------------------------------------------------------------------------


def evaluate_event(
    rule: RuleDef,
    markets: Mapping[str, Mapping[str, Any]],
    books: Mapping[str, Mapping[str, Any]],
    tracker: OpportunityTracker,
    *,
    touched_token: str | None = None,
    trigger_recv_ms: int | None = None,
    sets: Sequence[LegSet] | None = None,
) -> list[dict[str, Any]]:
    """Signals of one event after a change. Updates `tracker` in place.

    `markets` holds the event's Market records by market id, `books` the latest Book record of
    each token by token id. With `touched_token`, only the sets holding that token are evaluated
    (a book changed); without it every set is, and sets that disappeared are forgotten
    (metadata changed). A set with a leg's book still unknown is not evaluated at all.
    `sets` may pass `complete_sets(markets.values())` already computed (metadata changes far
    less often than books).
    """
    params = rule.params_as(CompleteSetParams)
    if sets is None:
        sets = complete_sets(markets.values())
    if touched_token is None:
        tracker.retain(f"{d}|{s.key}" for s in sets for d in params.directions)
    signals = []
    for leg_set in sets:
        if touched_token is not None and touched_token not in leg_set.token_ids:
            continue
        if any(token not in books for _, token in leg_set.tokens):
            continue
        ts_ms = max(int(books[token]["ts_ms"]) for _, token in leg_set.tokens)
        for direction in params.directions:
            opp = _evaluate_set(leg_set, direction, markets, books, params)
            fp = opp.fingerprint() if opp else None
            if tracker.observe(f"{direction}|{leg_set.key}", leg_set.subject, fp, ts_ms):
                assert opp is not None
                signals.append(build_signal(rule, leg_set, opp, books, markets, trigger_recv_ms))
    return signals


def _evaluate_set(
    leg_set: LegSet,
    direction: Direction,
    markets: Mapping[str, Mapping[str, Any]],
    books: Mapping[str, Mapping[str, Any]],
    params: CompleteSetParams,
) -> Opportunity | None:
    side = "asks" if direction == "buy" else "bids"
    legs = [
        LegInput(
            markets[market_id],
            token,
            books[token][side],
            markets[market_id].get("fee") or {"model": "none"},
            books[token].get(f"best_{side}"),
        )
        for market_id, token in leg_set.tokens
    ]
    evaluate = evaluate_buy if direction == "buy" else evaluate_sell
    return evaluate(legs, params.min_edge_bps, params.max_levels)
