"""The streams worker: a Faust app that evaluates the rule catalog and emits signals.

Data flow (every name from the catalog via `settings.topic`, so a prefix isolates a run)::

    markets (key market id) --repartition-markets--> <worker id>-markets-by-event-repartition
                                                                  (key event key)
    books, trades (key event key) ────────┐                              │
                                          └──── event rules (one agent) ◄┘
                                                │   complete_set, logical ladders (books);
                                                │   spike, trend, longshot (each book's top
                                                │   of book); endgame, whale (trades, metadata)
                                                ├──► signals (key subject), dlq, review
                                                └──► <worker id>-market-data-by-group-repartition
                                                     (key group id: members of approved groups)
                                                          └── cross-market (one agent) ──► signals

Tables (changelog-backed): cs-markets and cs-trackers by event key, cs-books by event|token,
flow-state (price windows, volume buckets, cooldown marks), flow-wallets (first seen by wallet),
xm-markets/xm-books/xm-trackers by group. Rule definitions come from the YAML file overlaid with
the compacted rules topic (read to its end before any market data), and later rules-topic
records are applied at runtime (`rulebook`).

One agent consumes books, trades and the repartitioned metadata: all are keyed by event key
with the same partition count, so Faust assigns them (and the tables' changelogs) together,
and a single agent with concurrency 1 never interleaves two updates of one event. Evaluation runs
on every input and on every metadata update (data may arrive first). The ticks topic is not
read: it repeats each book's top of book, and reading it too would double the worker's input
messages per update. Reads of Faust tables cost more than most rules: state a rule needs only
when a threshold is passed (cooldown marks) is read lazily (`rules.flow`).
The repartition is an explicit agent rather than `stream.group_by`, so that an undecodable
market is a dead letter instead of an exception inside a key function. Cross-market rules need
every member of a group in one place: the first agent forwards members' metadata and books to
the by-group topic.

Batches: the agents take up to `BATCH_MAX` messages at a time. Tables are `state.WriteBehind`
views: reads are cached, writes are visible at once to the next message but reach the table and
its changelog once per key at the end of the batch (`settle`), straight through the producer.
Faust's own per-assignment send path cost more than the rules (profiled); Faust itself still
costs ~95 µs per message doing nothing on this machine, which bounds one worker process.

Delivery: at least once. A batch's signals are delivered (awaited) *before* its table writes
are flushed, and Faust acks the batch only after both, so a table state saying "signalled" is
never ahead of the signal itself; a redelivered message re-emits the same deterministic ids,
which every consumer de-duplicates. Faust's
exactly-once is not used (KAFKA_LOCAL.md). Nothing here reads the wall clock except latency
metrics. Signal ids depend on the inputs evaluated, so every book, tick and trade must be
evaluated with its event's complete metadata, whatever the arrival order: a worker that starts
on a backlog reads market data directly but the metadata one hop later (through the repartition
topic), so the inputs of an event whose metadata is not complete yet are *held* in arrival order
and evaluated one by one as soon as it is (bounded: past `HOLD_PER_EVENT` inputs an event is
evaluated with what is known). Held inputs live in memory only: a crash while inputs are held
loses their evaluation (not the data, which stays in Kafka and the warehouse); the window is the
repartition hop, milliseconds in steady state.

`Evaluator` and `Pipeline` hold all the logic and run without Faust (plain dicts as tables),
which is how the unit tests drive them; `create_app` only wires them to topics and tables.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import faust
from aiokafka import AIOKafkaProducer
from aiokafka.admin import NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from marketpulse import fastdrain, metrics, rulebook
from marketpulse.catalog import CATALOG
from marketpulse.codec import Codec, codec
from marketpulse.errors import BadMessage, ConfigError, TransientError
from marketpulse.grouping import (
    GroupEvaluator,
    claim_of,
    proposition_key,
    registry,
    routes,
)
from marketpulse.grouping import decode as decode_forwarded
from marketpulse.kafka import DeadLetters, admin
from marketpulse.rules import CompleteSetParams, RuleDef, hedge, load_rules, logical, propositions
from marketpulse.rules.complete_set import (
    LegSet,
    OpportunityTracker,
    complete_sets,
    evaluate_event,
    usable,
)
from marketpulse.rules.flow import FlowRules
from marketpulse.rules.params import LogicalParams
from marketpulse.settings import Settings
from marketpulse.state import TableBacking, WriteBehind, as_current, raw_table

log = logging.getLogger(__name__)

Table = MutableMapping[str, Any]

# Sending a signal is retried (the agent waits) rather than skipped: dropping it would break
# at-least-once, and Faust acks a message whose handler raised.
_SEND_BACKOFF_S = (0.1, 0.5, 1.0, 2.0, 5.0)

# Books held per event while its metadata is incomplete; beyond, evaluate with what is known.
HOLD_PER_EVENT = 20_000

# The evaluating agents take up to BATCH_MAX messages at a time, waiting at most BATCH_WITHIN_S
# for a batch to fill.
BATCH_MAX = 1_000
BATCH_WITHIN_S = 0.005


def repartition_topic(settings: Settings) -> str:
    """Internal topic of market metadata keyed by event key (named like Faust's group_by)."""
    return f"{settings.worker_id}-markets-by-event-repartition"


def group_topic(settings: Settings) -> str:
    """Internal topic of group members' metadata and books, keyed by equivalence group id."""
    return f"{settings.worker_id}-market-data-by-group-repartition"


def book_key(event_key: str, token_id: str) -> str:
    """Books are stored per token, not per event: an event of 100 outcomes would otherwise
    rewrite all 200 books to the changelog on every single update."""
    return f"{event_key}|{token_id}"


# --------------------------------------------------------------------------------------------
# Evaluation over tables (no Faust)
# --------------------------------------------------------------------------------------------


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
            state = tracker.state()
            if state["open"] or state["last_signal_ms"]:
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
            state = tracker.state()
            if state["open"] or state["last_signal_ms"]:
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


# --------------------------------------------------------------------------------------------
# Message handling (no Faust either: the agents call these)
# --------------------------------------------------------------------------------------------


class MessageLike(Protocol):
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


Send = Callable[[bytes, bytes], Awaitable[None]]


class Pipeline:
    """Decodes input, runs the `Evaluator`, delivers signals, applies table writes, and sends
    undecodable or unprocessable input to the dead-letter topic (counted) before moving on."""

    def __init__(
        self,
        evaluator: Evaluator,
        *,
        books_topic: str,
        by_event_topic: str,
        forward: Send,
        emit: Send,
        dead_letters: DeadLetters,
        cdc: Codec | None = None,
        ticks_topic: str | None = None,
        trades_topic: str | None = None,
        groups: GroupEvaluator | None = None,
        group_routes: Mapping[str, Sequence[str]] | None = None,
        to_group: Send | None = None,
        review: Send | None = None,
    ) -> None:
        self.review = review
        self.evaluator = evaluator
        self.groups = groups
        self.group_routes = dict(group_routes or {})
        self.to_group = to_group
        self._schemas = {books_topic: "book", by_event_topic: "market"}
        if ticks_topic:
            self._schemas[ticks_topic] = "tick"
        if trades_topic:
            self._schemas[trades_topic] = "trade"
        # Public so that tests can put recorders in their place.
        self.forward = forward
        self.emit = emit
        self.dead_letters = dead_letters
        self._codec = cdc or codec()

    async def repartition(self, msg: MessageLike) -> None:
        """markets (key market id) → internal topic keyed by event key, value unchanged."""
        metrics.WORKER_MESSAGES.labels(msg.topic).inc()
        if msg.value is None:
            return  # a compaction tombstone: nothing to route (its market id has no event)
        try:
            market = self._codec.decode("market", msg.value)
        except BadMessage as exc:
            await self._dead_letter(msg, exc)
            return
        await self.forward(market["event_id"].encode(), msg.value)

    async def handle(self, msg: MessageLike) -> Step | None:
        """One book or repartitioned market: evaluate, deliver signals, then write tables."""
        metrics.WORKER_MESSAGES.labels(msg.topic).inc()
        try:
            schema, record, step = self._step(msg)
        except Exception as exc:  # bad input must never stop the pipeline
            await self._dead_letter(msg, exc)
            return None
        for signal in step.signals:
            await self.emit(signal["subject"].encode(), self._codec.encode("signal", signal))
            self._observe(signal, step, msg)
        if self.review is not None:
            for item in step.reviews:
                await self.review(
                    item["review_id"].encode(), self._codec.encode("review_item", item)
                )
        if self.to_group is not None and schema in ("book", "market") and msg.value is not None:
            # Members of equivalence groups and markets whose question reads as a comparable
            # claim go on to the by-group stage, value unchanged.
            for group_id in self._routes(schema, record, step):
                await self.to_group(group_id.encode(), msg.value)
            # Books held for this metadata could not be routed by their question's claim when
            # they arrived (registry routes need no metadata and went at once).
            for book in step.released:
                key = self.evaluator.proposition_route("book", book)
                if key:
                    await self.to_group(key.encode(), self._codec.encode("book", dict(book)))
        step.apply()
        return step

    def _routes(self, schema: str, record: Mapping[str, Any], step: Step) -> list[str]:
        out = self.group_routes.get(record["market_id"], ())
        key = step.route if schema == "book" else self.evaluator.proposition_route(schema, record)
        return [*out, key] if key else list(out)

    async def handle_group(self, msg: MessageLike) -> None:
        """One forwarded book or market on the by-group topic (key: group id)."""
        metrics.WORKER_MESSAGES.labels(msg.topic).inc()
        if self.groups is None:
            return
        try:
            if msg.key is None:
                raise BadMessage("no_key", "by-group records are keyed by group id")
            kind, record = decode_forwarded(self._codec, msg.value)
            signals, writes = self.groups.on_record(msg.key.decode(), kind, record)
        except Exception as exc:  # bad input must never stop the pipeline
            await self._dead_letter(msg, exc)
            return
        step = Step(signals=signals, writes=writes)
        if kind == "book":
            step.trigger_recv_ms = int(record["recv_ms"])
        for signal in signals:
            await self.emit(signal["subject"].encode(), self._codec.encode("signal", signal))
            self._observe(signal, step, msg)
        step.apply()

    def _step(self, msg: MessageLike) -> tuple[str, dict[str, Any], Step]:
        schema = self._schemas.get(msg.topic)
        if schema is None:
            raise BadMessage("unknown_topic", f"the worker does not consume {msg.topic!r}")
        if (schema == "tick" and not self.evaluator.flow.wants_ticks) or (
            schema == "trade" and not self.evaluator.flow.wants_trades
        ):
            return schema, {}, Step()  # no rule reads them now: not even worth decoding
        record = self._codec.decode(schema, msg.value)
        return schema, record, self._evaluate(schema, record, msg)

    def _evaluate(self, schema: str, record: dict[str, Any], msg: MessageLike) -> Step:
        if schema == "market":
            return self.evaluator.on_market(record)
        if msg.key is not None and msg.key != record["event_key"].encode():
            # Partition-local evaluation relies on market data being keyed by its event.
            raise BadMessage(
                "key_mismatch",
                f"key {msg.key!r} is not the {schema}'s event {record['event_key']!r}",
            )
        if schema == "tick":
            return self.evaluator.on_tick(record)
        if schema == "trade":
            return self.evaluator.on_trade(record)
        return self.evaluator.on_book(record)

    def _observe(self, signal: Mapping[str, Any], step: Step, msg: MessageLike) -> None:
        metrics.SIGNALS_EMITTED.labels(signal["rule_id"], signal["level"]).inc()
        if step.trigger_recv_ms is not None:  # metadata-triggered signals have no tick latency
            latency_s = max(0.0, time.time() - step.trigger_recv_ms / 1000.0)
            metrics.TICK_TO_SIGNAL.labels(signal["rule_id"]).observe(latency_s)
        log.info(
            "signal %s rule=%s level=%s subject=%s edge=%.1fbps size=%s from %s[%d]@%d",
            signal["signal_id"],
            signal["rule_id"],
            signal["level"],
            signal["subject"],
            signal["edge_bps"],
            signal["size"],
            msg.topic,
            msg.partition,
            msg.offset,
        )

    async def _dead_letter(self, msg: MessageLike, exc: Exception) -> None:
        if not isinstance(exc, BadMessage):
            log.exception("cannot process %s[%d]@%d", msg.topic, msg.partition, msg.offset)
        await self.dead_letters.send(
            msg.topic,
            exc,
            partition=msg.partition,
            offset=msg.offset,
            key=msg.key,
            payload=msg.value,
        )


# --------------------------------------------------------------------------------------------
# Faust wiring
# --------------------------------------------------------------------------------------------


class _FaustProducer:
    """The `send_and_wait` DeadLetters expects, over Faust's own producer, so that dead letters
    are flushed with everything else before Faust commits offsets."""

    def __init__(self, app: faust.App) -> None:
        self._app = app

    async def send_and_wait(self, topic: str, value: bytes, key: bytes | None = None) -> Any:
        return await self._app.producer.send_and_wait(topic, key, value, None, None, None)


def create_app(
    settings: Settings,
    *,
    partitions: int | None = None,
    rules: Mapping[str, RuleDef] | None = None,
    follow_rules_from: Mapping[int, int] | None = None,
) -> faust.App:
    """The worker's Faust app. `partitions` must equal the books topic's partition count
    (`run` reads it from the broker); the catalog's count is the default. With
    `follow_rules_from` (rules-topic offsets, where `rulebook.current` stopped), a task applies
    every later rules-topic record at runtime."""
    n = partitions or CATALOG.topic("books").partitions
    rules = rules if rules is not None else load_rules(settings.rules_file)
    app = faust.App(
        settings.worker_id,  # also the consumer group and the prefix of internal topics
        broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://",  # tables are rebuilt from their changelog topics at start
        topic_replication_factor=1,
        topic_partitions=n,
        topic_disable_leader=True,  # no on_leader timers: one internal topic less
        datadir=str(settings.worker_data_dir),
        web_enabled=settings.worker_web_port > 0,
        web_port=settings.worker_web_port or 6066,
        producer_acks=-1,
        # Throughput (measured on a backlog): changelog and signal records leave in batches,
        # and the consumer hands the stream thousands of records per wake-up, not hundreds.
        producer_linger=0.005,
        producer_max_batch_size=1 << 20,
        broker_max_poll_records=5_000,
        stream_buffer_maxsize=20_000,
        autodiscover=False,
    )
    fastdrain.install(app)  # no four tasks per consumed message (see fastdrain)
    raw: dict[str, Any] = {"key_serializer": "raw", "value_serializer": "raw"}
    books_name, by_event_name = settings.topic("books"), repartition_topic(settings)
    trades_name = settings.topic("trades")
    markets_in = app.topic(settings.topic("markets"), **raw)
    by_event_out = app.topic(by_event_name, partitions=n, internal=True, **raw)
    # internal=True makes Faust create the repartition topic itself (the broker's auto-create
    # is off); for the market-data topics, which `run` checked exist, that creation is a no-op.
    # Trades are keyed by event key like books: co-partitioned, one agent for all. The ticks
    # topic is not read: tick rules evaluate each book's top of book (`top_of_book`).
    inputs = app.topic(books_name, trades_name, by_event_name, partitions=n, internal=True, **raw)
    signals_out = app.topic(settings.topic("signals"), **raw)

    stores: list[WriteBehind] = []

    def table(name: str) -> Table:
        store = WriteBehind(TableBacking(app, raw_table(app, name, n)))
        stores.append(store)
        return store

    evaluator = Evaluator(
        list(rules.values()),
        table("cs-markets"),
        table("cs-books"),
        table("cs-trackers"),
        flow_state=table("flow-state"),
        wallets=table("flow-wallets"),
    )

    async def forward(key: bytes, value: bytes) -> None:
        await by_event_out.send(key=key, value=value)

    in_flight: list[tuple[bytes, bytes, Awaitable[Any] | None]] = []

    async def emit(key: bytes, value: bytes) -> None:
        """Queue a signal; `settle` waits for its delivery (one round trip per batch)."""
        try:
            in_flight.append((key, value, await signals_out.send(key=key, value=value)))
        except Exception as exc:
            log.warning("signal not queued (%r); settle retries it", exc)
            in_flight.append((key, value, None))

    async def deliver(key: bytes, value: bytes, queued: Awaitable[Any] | None) -> None:
        attempt = 0
        while True:  # Kafka being away is transient: wait for it rather than drop a signal
            try:
                await (queued or await signals_out.send(key=key, value=value))
                return
            except Exception as exc:
                queued = None
                pause = _SEND_BACKOFF_S[min(attempt, len(_SEND_BACKOFF_S) - 1)]
                attempt += 1
                log.warning("signal not delivered (attempt %d: %r); retrying", attempt, exc)
                await asyncio.sleep(pause)

    settling = asyncio.Lock()

    async def settle() -> None:
        """End of a batch: its signals are delivered, *then* its table writes are made (so a
        table saying "signalled" is never ahead of the signal), then Faust acks the batch.
        Both agents settle through here: a write is buffered only after its message's signals
        were queued, and the lock makes every flush wait for all queued signals."""
        async with settling:
            while in_flight:
                await deliver(*in_flight.pop(0))
            for store in stores:
                await store.flush()

    async def forget(*_: Any, **__: Any) -> None:
        for store in stores:
            store.forget()
        in_flight.clear()  # their events are not acked: they are processed again

    app.on_partitions_revoked.connect(forget)
    app.on_partitions_assigned.connect(forget)

    groups = registry(list(rules.values()))
    by_group = app.topic(group_topic(settings), partitions=n, internal=True, **raw)
    group_eval = GroupEvaluator(
        list(rules.values()), groups, table("xm-markets"), table("xm-books"), table("xm-trackers")
    )

    async def to_group(key: bytes, value: bytes) -> None:
        await by_group.send(key=key, value=value)

    review_out = app.topic(settings.topic("review"), **raw) if "review" in CATALOG.topics else None

    async def review(key: bytes, value: bytes) -> None:
        assert review_out is not None
        await (await review_out.send(key=key, value=value))

    dlq = DeadLetters(settings, cast(AIOKafkaProducer, _FaustProducer(app)), stage="worker")
    pipeline = Pipeline(
        evaluator,
        books_topic=books_name,
        by_event_topic=by_event_name,
        forward=forward,
        emit=emit,
        dead_letters=dlq,
        trades_topic=trades_name,
        groups=group_eval,
        group_routes=routes(groups),
        to_group=to_group,
        review=review if review_out is not None else None,
    )

    # Agents: concurrency 1 (KAFKA_LOCAL.md: higher commits past in-flight messages).
    @app.agent(markets_in, name="repartition-markets", concurrency=1)
    async def repartition_markets(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            await pipeline.repartition(event.message)

    # Batches amortise Faust's per-event cost and let `settle` coalesce table writes; `within`
    # bounds the wait a lone update can add to its signal's latency.
    @app.agent(inputs, name="complete-set", concurrency=1)
    async def complete_set(stream: faust.StreamT[bytes]) -> None:
        async for events in cast(faust.Stream, stream).take_events(BATCH_MAX, BATCH_WITHIN_S):
            for event in events:
                with as_current(event):
                    await pipeline.handle(event.message)
            await settle()

    @app.agent(by_group, name="cross-market", concurrency=1)
    async def cross_market(stream: faust.StreamT[bytes]) -> None:
        async for events in cast(faust.Stream, stream).take_events(BATCH_MAX, BATCH_WITHIN_S):
            for event in events:
                with as_current(event):
                    await pipeline.handle_group(event.message)
            await settle()

    if follow_rules_from is not None:
        book = rulebook.RuleBook(rules)

        def on_rule(key: bytes | None, value: bytes | None) -> None:
            before = dict(book.rules)
            verdict = book.offer(key, value)
            if book.rules != before:
                evaluator.set_rules(list(book.rules.values()))
                group_eval.set_rules(list(book.rules.values()))
                # A group approved at runtime: its members' data must start flowing to it.
                pipeline.group_routes = dict(routes(registry(list(book.rules.values()))))
                log.info("rule %s: %s", verdict.rule_id, verdict.message)

        @app.task
        async def follow_rules() -> None:
            await rulebook.follow(settings, follow_rules_from, on_rule)

    app.pipeline = pipeline  # type: ignore[attr-defined]  # for tests and introspection
    return app


# --------------------------------------------------------------------------------------------
# Process
# --------------------------------------------------------------------------------------------


def freeze_heap() -> None:
    """Move everything alive now (modules, rules, recovered tables) out of the cyclic garbage
    collector's view. A full collection walks every tracked object: ~100,000 of them after
    start, 55-76 ms per pass in the worker (measured), a pause every signal in flight waits
    through; frozen, the same pass took 4 ms. Frozen objects are still freed by reference
    counting, only cycles among them are not."""
    gc.collect()
    gc.freeze()


class _Worker(faust.Worker):
    async def on_startup_finished(self) -> None:
        await super().on_startup_finished()
        freeze_heap()  # tables recovered: what is alive now lives as long as the process


def run(settings: Settings) -> None:
    """Run the worker until SIGTERM or SIGINT (blocking). Faust's Worker installs the signal
    handlers, stops the agents, flushes the producer and commits before returning."""
    import prometheus_client

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)  # Faust and mode look the loop up; make it this one
    partitions = loop.run_until_complete(check_topics(settings))
    # The rules topic as it stands decides the versions in force before any market data is
    # read, so that a restart evaluates with the same versions as before it.
    book, ends = loop.run_until_complete(
        rulebook.current(settings, load_rules(settings.rules_file))
    )
    app = create_app(settings, partitions=partitions, rules=book.rules, follow_rules_from=ends)
    if settings.metrics_port:
        prometheus_client.start_http_server(settings.metrics_port)
    worker = _Worker(
        app,
        loop=loop,
        loglevel=settings.log_level,
        quiet=True,  # no banner or spinner on stdout: logs only
        redirect_stdouts=False,
    )
    worker.spinner = None  # quiet=True still draws a terminal spinner at WARNING and above
    log.info(
        "worker %s: %s -> %s, %d partitions, web %s",
        settings.worker_id,
        settings.topic("books"),
        settings.topic("signals"),
        partitions,
        settings.worker_web_port or "off",
    )
    try:
        worker.execute_from_commandline()  # always ends in SystemExit
    except SystemExit as exc:
        if exc.code not in (None, 0):
            raise


async def check_topics(settings: Settings) -> int:
    """Partition count of the books topic, after checking that every topic the worker reads
    or writes exists (Faust would otherwise wait forever for a missing source topic) and
    that the repartition topic, if it exists, is co-partitioned with books."""
    client = admin(settings)
    try:
        await client.start()
    except KafkaError as exc:
        raise TransientError(f"cannot reach Kafka at {settings.kafka_bootstrap}: {exc}") from exc
    try:
        names = [settings.topic(t) for t in ("markets", "books", "trades", "signals", "dlq")]
        by_event = repartition_topic(settings)
        existing = set(await client.list_topics())
        missing = [n for n in names if n not in existing]
        if missing:
            raise ConfigError(
                f"topics missing on {settings.kafka_bootstrap}: {', '.join(missing)} "
                "(create them with `marketpulse topics create`)"
            )
        data = [settings.topic(t) for t in ("books", "trades")]
        wanted = data + ([by_event] if by_event in existing else [])
        counts = {d["topic"]: len(d["partitions"]) for d in await client.describe_topics(wanted)}
        # The internal topics are created here, before Faust starts: when Faust creates one
        # while subscribing, its assignor can miss it in stale metadata and the worker then
        # never reads it (seen in the demo and under load: "Ignoring missing topic").
        books_parts = counts[settings.topic("books")]
        for internal in (by_event, group_topic(settings)):
            if internal not in existing:
                with contextlib.suppress(TopicAlreadyExistsError):
                    await client.create_topics([NewTopic(internal, books_parts, 1)])
    finally:
        await client.close()
    books = counts[settings.topic("books")]
    for name in data[1:]:
        if counts[name] != books:
            raise ConfigError(
                f"{name} has {counts[name]} partitions but books has {books}: market data "
                "topics are keyed by event key and must be co-partitioned"
            )
    if by_event in counts and counts[by_event] != books:
        raise ConfigError(
            f"{by_event} has {counts[by_event]} partitions but books has {books}: "
            "they must match (delete the repartition topic, or use a new MPX_WORKER_ID)"
        )
    return books
