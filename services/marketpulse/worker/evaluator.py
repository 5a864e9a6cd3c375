"""The worker's evaluation, without Faust: `Evaluator` keeps each event's latest metadata and books
in tables (any mappings) and runs the enabled rules when either changes; a `Step` is what one
input produced (signals, table writes, review items). Unit tests and the backtest drive it
over plain dicts; `worker.app` gives it Faust tables."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from marketpulse import metrics
from marketpulse.grouping import claim_of, proposition_key
from marketpulse.rules import CompleteSetParams, RuleDef, hedge, logical, propositions
from marketpulse.rules.complete_set import (
    LegSet,
    OpportunityTracker,
    complete_sets,
    evaluate_event,
    usable,
)
from marketpulse.rules.flow import FlowRules
from marketpulse.rules.params import LogicalParams

Table = MutableMapping[str, Any]

# Books held per event while its metadata is incomplete; beyond, evaluate with what is known.
HOLD_PER_EVENT = 20_000


def book_key(event_key: str, token_id: str) -> str:
    """Books are stored per token, not per event: an event of 100 outcomes would otherwise
    rewrite all 200 books to the changelog on every single update."""
    return f"{event_key}|{token_id}"


@dataclass
class Step:
    """What one input message produced: signals to deliver, then table writes to apply."""

    signals: list[dict[str, Any]] = field(default_factory=list)
    writes: list[tuple[Table, str, Any]] = field(default_factory=list)
    deletes: list[tuple[Table, str]] = field(default_factory=list)
    trigger_recv_ms: int | None = None  # set when a book (not metadata) triggered it
    reviews: list[dict[str, Any]] = field(default_factory=list)  # review_item records
    released: list[Mapping[str, Any]] = field(default_factory=list)  # held books now evaluated
    route: str | None = None  # by-group key of a book's parsed claim (see proposition_route)

    def apply(self) -> None:
        for table, key, value in self.writes:
            table[key] = value
        for table, key in self.deletes:
            if key in table:
                del table[key]


class Evaluator:
    """Keeps the latest metadata and books of each event, and runs the enabled rules when
    either changes: complete-set and ladder (logical) rules on books and metadata, flow rules
    (`FlowRules`) on ticks, trades and metadata. Tables are any mappings (Faust tables in the
    worker); the flow tables default to plain dicts."""

    def __init__(
        self,
        rules: Sequence[RuleDef],
        markets: Table,
        books: Table,
        trackers: Table,
        flow_state: Table | None = None,
        wallets: Table | None = None,
    ) -> None:
        self.markets = markets  # event key -> {market id: market}
        self.books = books  # book_key(event, token) -> book
        self.trackers = trackers  # event key -> {rule id: tracker state}
        self._flow_tables = (
            flow_state if flow_state is not None else {},
            wallets if wallets is not None else {},
        )
        self.set_rules(rules)
        self._sets_cache: dict[str, tuple[Mapping[str, Any], list[LegSet]]] = {}
        self._hedges_cache: dict[str, tuple[Mapping[str, Any], list[hedge.Hedge]]] = {}
        # event key -> (kind, record) in arrival order, kind "book" | "tick" | "trade"
        self.held: dict[str, list[tuple[str, Mapping[str, Any]]]] = {}

    def set_rules(self, rules: Sequence[RuleDef]) -> None:
        """Put a rule set in force (at start, and at runtime from the rules topic). State is
        kept: trackers and cooldown marks are per rule id, and survive a version change."""
        self.rules = [r for r in rules if r.enabled and r.type == "complete_set"]
        self._params = {r.rule_id: r.params_as(CompleteSetParams) for r in self.rules}
        self.ladder_rules = [
            r
            for r in rules
            if r.enabled and r.type == "logical" and r.params_as(LogicalParams).ladders
        ]
        # Books are trimmed to the deepest walk any rule makes.
        self.max_levels = max(
            [p.max_levels for p in self._params.values()]
            + [r.params_as(LogicalParams).max_levels for r in self.ladder_rules],
            default=10,
        )
        self.flow = FlowRules(rules, *self._flow_tables)
        # Polymarket questions are parsed into propositions; what cannot be read with enough
        # confidence goes to the review queue (the claims themselves feed no rule yet).
        self.proposition_rules = [
            r
            for r in rules
            if r.enabled and r.type == "logical" and r.params_as(LogicalParams).term_structure
        ]

    def _hold(self, event_key: str, kind: str, record: Mapping[str, Any]) -> bool:
        """Keep an input until its event's metadata is complete; False when over the bound."""
        held = self.held.setdefault(event_key, [])
        if len(held) >= HOLD_PER_EVENT:
            metrics.WORKER_BOOKS_HELD.labels("overflow").inc()
            return False
        held.append((kind, record))
        metrics.WORKER_BOOKS_HELD.labels("held").inc()
        return True

    def _release(self, event_key: str, markets: dict[str, Any]) -> Step:
        """Metadata just became complete: evaluate the held inputs in their arrival order.
        Their table writes apply at once, since each one's evaluation reads the previous one's
        state (see the module doc on why held inputs are not durable anyway)."""
        self.markets[event_key] = markets
        step = Step()
        handlers = {"book": self.on_book, "tick": self.on_tick, "trade": self.on_trade}
        for kind, record in self.held.pop(event_key):
            sub = handlers[kind](record)
            sub.apply()
            if kind == "book":
                step.released.append(record)
            step.signals += sub.signals
            step.trigger_recv_ms = sub.trigger_recv_ms
        step.writes.append((self.markets, event_key, markets))
        return step

    def on_market(self, market: Mapping[str, Any]) -> Step:
        event_key = market["event_id"]
        markets = dict(self.markets.get(event_key) or {})
        previous = markets.get(market["market_id"])
        markets[market["market_id"]] = _slim_market(market)
        flow_signals, flow_writes = self.flow.on_market(previous, markets[market["market_id"]])
        reviews = self._reviews(market) if previous is None else []
        claim = claim_of(market, self.proposition_rules)
        if claim is not None:  # the by-group stage compares it with its kind (term structure)
            markets[market["market_id"]]["prop_key"] = proposition_key(claim)
        if event_key in self.held and metadata_complete(markets):
            step = self._release(event_key, markets)
            step.signals[:0] = flow_signals
            step.writes += flow_writes
            step.reviews += reviews
            return step
        books = self._books_of(event_key, markets)
        step = self._evaluate(event_key, markets, books, touched_token=None, trigger=None)
        step.writes.insert(0, (self.markets, event_key, markets))
        step.signals[:0] = flow_signals
        step.writes += flow_writes
        step.reviews += reviews
        if market.get("status") != "active":
            # A closed market never trades again: its books would only grow the state.
            step.deletes += [
                (self.books, book_key(event_key, o["token_id"])) for o in market["outcomes"]
            ]
        return step

    def on_book(self, book: Mapping[str, Any]) -> Step:
        event_key, token = book["event_key"], book["token_id"]
        key = book_key(event_key, token)
        previous = self.books.get(key)
        if previous is not None and _book_order(previous) >= _book_order(book):
            return Step()  # a redelivery or a late duplicate: already reflected in the table
        markets = self.markets.get(event_key) or {}
        if not metadata_complete(markets) and self._hold(event_key, "book", book):
            return Step()
        slim = _slim_book(book, self.max_levels)
        books = self._books_of(event_key, markets)
        books[token] = slim
        step = self._evaluate(
            event_key, markets, books, touched_token=token, trigger=int(book["recv_ms"])
        )
        step.writes.insert(0, (self.books, key, slim))
        step.trigger_recv_ms = int(book["recv_ms"])
        step.route = (markets.get(book["market_id"]) or {}).get("prop_key")
        if self.flow.wants_ticks:
            # Tick rules read each book's top of book: the ticks topic carries the same top of
            # book, and reading it as well would double the worker's messages (measured).
            signals, writes = self.flow.on_tick(top_of_book(book), markets.get(book["market_id"]))
            step.signals += signals
            step.writes += writes
        return step

    def proposition_route(self, kind: str, record: Mapping[str, Any]) -> str | None:
        """The by-group key of a market (or of a book's market) whose question reads as a
        claim comparable with others (`grouping.proposition_key`), else None."""
        if kind == "market":
            claim = claim_of(record, self.proposition_rules)
            return proposition_key(claim) if claim is not None else None
        markets = self.markets.get(record["event_key"]) or {}
        key = (markets.get(record["market_id"]) or {}).get("prop_key")
        return str(key) if key else None

    def _reviews(self, market: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Review items of a market seen for the first time whose question reads as a ladder or
        deadline claim too uncertain to act on (one per logical rule's confidence bar)."""
        if not self.proposition_rules or market.get("venue") != "polymarket":
            return []
        parsed = propositions.parse(market)
        if parsed is None:
            return []
        out = []
        for rule in self.proposition_rules:
            why = parsed.review_reason(rule.params_as(LogicalParams).min_confidence)
            if why:
                out.append(
                    {
                        "review_id": f"proposition:{market['market_id']}",
                        "signal_id": "",
                        "rule_id": rule.rule_id,
                        "subject": market["market_id"],
                        "status": "open",
                        "decided_by": "",
                        "note": f"{why} | {parsed.question}",
                        "ts_ms": int(market["updated_ms"]),
                    }
                )
        return out[:1]  # one item per market: the strictest rule's reason

    def on_tick(self, tick: Mapping[str, Any]) -> Step:
        return self._on_flow("tick", tick)

    def on_trade(self, trade: Mapping[str, Any]) -> Step:
        return self._on_flow("trade", trade)

    def _on_flow(self, kind: str, record: Mapping[str, Any]) -> Step:
        """A tick or a trade: held like books until the event's metadata is complete, so that
        rules needing the market (end time, fees) see the same inputs on every replay."""
        wanted = self.flow.wants_ticks if kind == "tick" else self.flow.wants_trades
        if not wanted:
            return Step()
        event_key = record["event_key"]
        markets = self.markets.get(event_key) or {}
        if not metadata_complete(markets) and self._hold(event_key, kind, record):
            return Step()
        market = markets.get(record["market_id"])
        on = self.flow.on_tick if kind == "tick" else self.flow.on_trade
        signals, writes = on(record, market)
        return Step(signals=signals, writes=writes, trigger_recv_ms=int(record["recv_ms"]))

    def _hedges_of(self, event_key: str, markets: Mapping[str, Any]) -> list[hedge.Hedge]:
        """Ladder hedges of an event from its strike fields (cached like `_sets_of`)."""
        cached = self._hedges_cache.get(event_key)
        if cached is None or cached[0] is not markets:
            hs = logical.hedges(logical.ladder_claims(markets.values()))
            cached = self._hedges_cache[event_key] = (markets, hs)
        return cached[1]

    def _sets_of(self, event_key: str, markets: Mapping[str, Any]) -> list[LegSet]:
        """Complete sets of an event, recomputed only when its metadata object changes: the
        markets table is only ever written whole (never mutated in place), so identity is
        a correct version check, and the cache holds the object so that its id stays valid."""
        cached = self._sets_cache.get(event_key)
        if cached is None or cached[0] is not markets:
            cached = self._sets_cache[event_key] = (markets, complete_sets(markets.values()))
        return cached[1]

    def _books_of(
        self, event_key: str, markets: Mapping[str, Mapping[str, Any]]
    ) -> dict[str, Mapping[str, Any]]:
        books = {}
        for market in markets.values():
            for outcome in market["outcomes"]:
                book = self.books.get(book_key(event_key, outcome["token_id"]))
                if book is not None:
                    books[outcome["token_id"]] = book
        return books

    def _evaluate(
        self,
        event_key: str,
        markets: Mapping[str, Mapping[str, Any]],
        books: Mapping[str, Mapping[str, Any]],
        *,
        touched_token: str | None,
        trigger: int | None,
    ) -> Step:
        step = Step()
        if not markets or not (self.rules or self.ladder_rules):
            return step
        sets = self._sets_of(event_key, markets)
        before = self.trackers.get(event_key) or {}
        after = {}
        touched = books.get(touched_token) if touched_token is not None else None
        for rule in self.rules:
            tracker = OpportunityTracker.from_state(
                before.get(rule.rule_id),
                cooldown_ms=rule.cooldown_ms,
                update_on_change=self._params[rule.rule_id].update_on_change,
            )
            step.signals += evaluate_event(
                rule,
                markets,
                books,
                tracker,
                touched_token=touched_token,
                trigger_recv_ms=trigger,
                sets=sets,
            )
            if (state := tracker.saved()) is not None:
                after[rule.rule_id] = state
        hedges = self._hedges_of(event_key, markets) if self.ladder_rules else []
        for rule in self.ladder_rules if hedges else []:
            params = rule.params_as(LogicalParams)
            tracker = OpportunityTracker.from_state(
                before.get(rule.rule_id),
                cooldown_ms=rule.cooldown_ms,
                update_on_change=params.update_on_change,
            )
            if touched_token is None:
                tracker.retain(h.key for h in hedges)
            step.signals += hedge.evaluate(
                rule,
                params,
                hedges,
                markets,
                books,
                tracker,
                touched_market=touched["market_id"] if touched is not None else None,
                trigger_recv_ms=trigger,
            )
            if (state := tracker.saved()) is not None:
                after[rule.rule_id] = state
        if after != before:  # most updates change nothing: spare the changelog
            step.writes.append((self.trackers, event_key, after))
        return step


def top_of_book(book: Mapping[str, Any]) -> dict[str, Any]:
    """The Tick record of a book: best bid and ask with their sizes (no last trade)."""
    bids = [lv for lv in book["bids"] if lv["size"] > 0]
    asks = [lv for lv in book["asks"] if lv["size"] > 0]
    bid = max(bids, key=lambda lv: lv["price"]) if bids else None
    ask = min(asks, key=lambda lv: lv["price"]) if asks else None
    return {
        **{k: book[k] for k in ("event_key", "market_id", "token_id", "venue", "ts_ms")},
        "recv_ms": book["recv_ms"],
        "seq": book["seq"],
        "best_bid": bid["price"] if bid else None,
        "best_ask": ask["price"] if ask else None,
        "bid_size": bid["size"] if bid else None,
        "ask_size": ask["size"] if ask else None,
        "last_price": None,
    }


def metadata_complete(markets: Mapping[str, Mapping[str, Any]]) -> bool:
    """Every market of the event is known (rules need all legs of a complete set)."""
    if not markets:
        return False
    wanted = max(int(m.get("event_market_count", 1)) for m in markets.values())
    return len(markets) >= wanted


def _book_order(book: Mapping[str, Any]) -> tuple[int, int]:
    """Event time first, then the collector's sequence (which may restart with the collector)."""
    return int(book["ts_ms"]), int(book["seq"])


_MARKET_FIELDS = (
    "market_id",
    "event_id",
    "outcomes",
    "status",
    "exclusive",
    "neg_risk_augmented",
    "event_market_count",
    "tick_size",
    "min_size",
    "fee",
    "updated_ms",
    # flow and ladder rules: end time, resolution, strike ladders
    "end_ms",
    "winning_token_id",
    "strike_type",
    "floor_strike",
    "cap_strike",
    "prop_key",  # set by the worker: the by-group key of a parsed question's claim
)


def _slim_market(market: Mapping[str, Any]) -> dict[str, Any]:
    """What rules need of a market (rules text and titles stay out of the changelog)."""
    return {k: market[k] for k in _MARKET_FIELDS if k in market}


def _slim_book(book: Mapping[str, Any], max_levels: int) -> dict[str, Any]:
    asks = sorted(book["asks"], key=lambda lv: lv["price"])[:max_levels]
    bids = sorted(book["bids"], key=lambda lv: -lv["price"])[:max_levels]
    return {
        "market_id": book["market_id"],
        "token_id": book["token_id"],
        "ts_ms": int(book["ts_ms"]),
        "recv_ms": int(book["recv_ms"]),
        "seq": int(book["seq"]),
        "asks": [{"price": lv["price"], "size": lv["size"]} for lv in asks],
        "bids": [{"price": lv["price"], "size": lv["size"]} for lv in bids],
        # Computed once here rather than by every set and direction the book is evaluated in
        # (the levels are sorted best first; the first usable one is the best).
        "best_asks": _first_usable(asks),
        "best_bids": _first_usable(bids),
    }


def _first_usable(levels: Sequence[Mapping[str, float]]) -> float | None:
    return next((float(lv["price"]) for lv in levels if usable(lv)), None)
