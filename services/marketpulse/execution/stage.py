"""The execution stage's state machine: signals and commands in, intent and position events out.
Deterministic and driven by event time only (no clock, no Kafka), so replaying the same inputs
gives the same events, and `restore` rebuilds the state from the stage's own output.

Lifecycle of an intent (each transition one event, `seq` 0, 1, 2…, with its reason and actor):

    suggested ──► rejected                      (a risk check failed; or `reject`)
        │    └──► expired                       (semi_auto: no decision within the timeout)
        ▼
    approved ──► filled | partially_filled      (paper fill against the book at approval time)
        │              └──► expired             (the unfilled part, at expires_ms)
        └──► expired                            (nothing filled within the limit)
    suggested/approved/partially_filled ──► cancelled   (`cancel`)

Fills happen at the approval's event time against, per leg, the latest book with ts_ms at or
before it (`BookSource`); the unfilled part of an order does not rest and match later books: it
simply expires (a paper simplification, stated in the reason). Event times: a signal's own
`ts_ms` (auto), a command's `ts_ms` (a person's approval, or a create through the API). When the
store holds no book at or before a signal's time, the signal's legs (worst price, executable
size) stand in for it, and the fill's reason says so; an approval or create never uses them.
Expiry runs on the stage's clock, the latest event time of any input (signal, command, book).

Memory: a closed intent is forgotten `orders.forget_closed_ms` of event time after it closed,
and a signal older than that is ignored as stale, so a forgotten intent's signal never makes
a second intent (its event time is at or before the intent's close). Open intents are kept
whatever their age."""

from __future__ import annotations

import heapq
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from marketpulse.execution import risk
from marketpulse.execution.config import ExecutionConfig
from marketpulse.execution.ids import intent_id_for
from marketpulse.execution.paper import Executor, PaperExecutor
from marketpulse.execution.portfolio import FillEvent, Portfolio, Position, mid_price, position_id
from marketpulse.execution.sizing import size_intent, venue_of

OPEN = frozenset({"suggested", "approved", "partially_filled"})
DAY_MS = 86_400_000
FALLBACK_HASH = "signal-legs"  # marks a signal's legs standing in for a book

# (token id, event time) -> the latest book of that token at or before that time, or None
BookSource = Callable[[str, int], Mapping[str, Any] | None]


@dataclass
class Output:
    """What one input produced: intent events and position records to publish, in order, and
    why an input produced nothing (for the metric of ignored inputs)."""

    intents: list[dict[str, Any]] = field(default_factory=list)
    positions: list[dict[str, Any]] = field(default_factory=list)
    ignored: str = ""

    def extend(self, other: Output) -> None:
        self.intents += other.intents
        self.positions += other.positions


class Stage:
    def __init__(
        self,
        config: ExecutionConfig,
        books: BookSource,
        executor: Executor | None = None,
    ) -> None:
        self.config = config
        self.books = books
        self.executor: Executor = executor or PaperExecutor()
        self.intents: dict[str, dict[str, Any]] = {}
        self.open: set[str] = set()  # ids of the intents in OPEN, for expiry and the checks
        self._closed: list[tuple[int, str]] = []  # heap: (event time it closed, intent id)
        self.forgotten = 0  # closed intents dropped from memory (`forget_closed`)
        self.markets: dict[str, dict[str, Any]] = {}
        self.portfolio = Portfolio(config.orders.mark_interval_ms)
        self.breaker = risk.CircuitBreaker(config.breaker)
        self.kill = risk.KillSwitch()
        self.daily: dict[int, float] = {}  # UTC day -> approved notional
        self.clock = 0  # latest event time seen
        # While a signal is handled: its legs as books, for tokens the store has no book of
        # at or before the signal's time (see `_book`).
        self._fallback: dict[str, dict[str, Any]] = {}

    # ---------------------------------------------------------------- inputs

    def on_signal(self, signal: Mapping[str, Any], *, requested_ms: int | None = None) -> Output:
        """A signal from the signals topic, at its own event time; or one a person asked for
        through a create command at `requested_ms` (any level, checked and filled against the
        books of that moment, with no stand-in from its legs: they may be old). A signal
        already turned into an intent gives nothing."""
        if requested_ms is None and not self.config.wants(dict(signal)):
            return Output(ignored="filtered")
        iid = intent_id_for(signal["signal_id"])
        if iid in self.intents:
            return Output(ignored="duplicate")
        if self.stale(signal):
            return Output(ignored="stale")
        ts = int(signal["ts_ms"]) if requested_ms is None else max(requested_ms, signal["ts_ms"])
        out = self.advance(ts)
        sized = size_intent(signal, self.markets, self.config.sizing)
        rec = self._new_intent(iid, signal, sized.legs, sized.notional, sized.method, ts)
        if sized.shares <= 0:
            rec["reason"] = f"sizing: {sized.why}" + (f" ({sized.detail})" if sized.detail else "")
            out.intents.append(self._emit(rec))
            out.intents.append(self._transition(iid, "rejected", ts, rec["reason"], "risk"))
            return out
        if requested_ms is None:
            self._fallback = {leg["token_id"]: _leg_book(leg, ts) for leg in signal["legs"]}
        try:
            checks = self._checks(rec, ts)
            rec["checks"] = checks
            rec["reason"] = sized.detail
            out.intents.append(self._emit(rec))
            if risk.failed(checks):
                out.intents.append(self._reject_by_risk(iid, checks, ts))
            elif self.config.approval == "auto":
                out.extend(self._approve(iid, ts, "auto", checks))
        finally:
            self._fallback = {}
        return out

    def stale(self, signal: Mapping[str, Any]) -> bool:
        """Older than the stage's memory of closed intents: it may have been one already."""
        return int(signal["ts_ms"]) < self.clock - self.config.orders.forget_closed_ms

    def is_new(self, signal: Mapping[str, Any]) -> bool:
        """Whether `signal` would make an intent now (it is neither known nor stale)."""
        return intent_id_for(signal["signal_id"]) not in self.intents and not self.stale(signal)

    def on_command(self, cmd: Mapping[str, Any]) -> Output:
        """A request from the API (intent_commands topic). Commands are idempotent: one that
        no longer applies (already decided, unknown intent) is ignored with its reason."""
        ts = int(cmd["ts_ms"])
        action = cmd["action"]
        actor = cmd.get("actor") or "api"
        out = self.advance(ts)
        if action == "create":
            signal = json.loads(cmd.get("signal_json") or "null")
            if not isinstance(signal, dict) or "signal_id" not in signal:
                out.ignored = "create without a signal"
                return out
            created = self.on_signal(signal, requested_ms=ts)
            created.intents[:0], created.positions[:0] = out.intents, out.positions
            return created
        if action in ("kill", "resume"):
            self.kill.set(action == "kill", cmd.get("reason") or f"{action} by {actor}", ts)
            return out
        current = self.intents.get(cmd.get("intent_id") or "")
        if current is None:
            out.ignored = "unknown intent"
        elif action == "approve" and current["status"] == "suggested":
            out.extend(self._approve(current["intent_id"], ts, actor, None))
        elif action == "reject" and current["status"] == "suggested":
            why = cmd.get("reason") or f"rejected by {actor}"
            out.intents.append(self._transition(current["intent_id"], "rejected", ts, why, actor))
        elif action == "cancel" and current["status"] in OPEN:
            why = cmd.get("reason") or f"cancelled by {actor}"
            out.intents.append(self._transition(current["intent_id"], "cancelled", ts, why, actor))
        else:
            out.ignored = f"{action} does not apply to a {current['status']} intent"
        return out

    def on_market(self, market: Mapping[str, Any]) -> Output:
        """Market metadata (tick, min size, fees) and resolution: settles its positions; a
        losing settlement counts against its rule's and market's circuit breaker."""
        self.markets[market["market_id"]] = dict(market)
        out = Output()
        for pos in self.portfolio.settle(market):
            rec = pos.record()
            out.positions.append(rec)
            if rec["realised_pnl"] < 0:
                for key in risk.breaker_keys(pos.rule_id, [pos.market_id]):
                    self.breaker.record(key, rec["ts_ms"])
        return out

    def on_book(self, book: Mapping[str, Any]) -> Output:
        """A book of a watched token: marks its positions (throttled) and moves the clock."""
        out = self.advance(int(book["ts_ms"]))
        for pos in self.portfolio.mark(book["token_id"], mid_price(book), int(book["ts_ms"])):
            out.positions.append(pos.record())
        return out

    def advance(self, now_ms: int) -> Output:
        """Move event time forward; intents whose expiry passed expire."""
        out = Output()
        if now_ms <= self.clock:
            return out
        self.clock = now_ms
        for iid in sorted(self.open):
            rec = self.intents[iid]
            if 0 < rec["expires_ms"] <= now_ms:
                out.intents.append(
                    self._transition(
                        iid, "expired", rec["expires_ms"], _expiry_reason(rec), "expiry"
                    )
                )
        self.forget_closed()
        return out

    def forget_closed(self) -> int:
        """Drop the intents that closed more than `orders.forget_closed_ms` before the clock
        (a closed intent never changes again); returns how many."""
        horizon = self.clock - self.config.orders.forget_closed_ms
        n = 0
        while self._closed and self._closed[0][0] < horizon:
            _, iid = heapq.heappop(self._closed)
            if self.intents.pop(iid, None) is not None:
                n += 1
        self.forgotten += n
        return n

    # ---------------------------------------------------------------- transitions

    def _approve(
        self,
        iid: str,
        ts: int,
        actor: str,
        checks: list[dict[str, Any]] | None,
    ) -> Output:
        """Approve (re-checking the limits when a person approves later) and fill on paper."""
        out = Output()
        rec = self.intents[iid]
        if checks is None:
            checks = self._checks(rec, ts, exclude=iid)
            if risk.failed(checks):
                out.intents.append(self._reject_by_risk(iid, checks, ts))
                return out
        day = ts // DAY_MS
        self.daily[day] = self.daily.get(day, 0.0) + rec["notional"]
        approved = self._transition(
            iid,
            "approved",
            ts,
            f"approved by {actor}",
            actor,
            checks=checks,
            expires_ms=ts + self.config.orders.expiry_ms,
        )
        out.intents.append(approved)
        out.extend(self._fill(iid, ts, actor))
        return out

    def _fill(self, iid: str, ts: int, actor: str) -> Output:
        """Fill every leg on paper against the latest book at or before `ts`."""
        out = Output()
        rec = self.intents[iid]
        books = [self._book(leg["token_id"], ts) for leg in rec["legs"]]
        fills = [
            f
            for f in (
                self.executor.fill(leg, book, self._fee(leg))
                for leg, book in zip(rec["legs"], books, strict=True)
            )
            if f is not None
        ]
        if not fills:
            return out
        wanted = sum(float(leg["size"]) for leg in rec["legs"])
        filled = round(sum(f["size"] for f in fills), 6)
        status = "filled" if filled >= wanted - 1e-6 else "partially_filled"
        why = f"paper fill {filled:g} of {wanted:g} shares against the book at {ts}"
        if any(book is not None and book.get("hash") == FALLBACK_HASH for book in books):
            why += " (no book in the store: the signal's own legs stood in for it)"
        event = self._transition(
            iid,
            status,
            ts,
            why,
            actor,
            fills=fills,
            filled_size=filled,
            fee=round(sum(f["fee"] for f in fills), 6),
        )
        out.intents.append(event)
        out.positions += [p.record() for p in self._book_fills(event)]
        return out

    def _reject_by_risk(self, iid: str, checks: list[dict[str, Any]], ts: int) -> dict[str, Any]:
        rec = self._transition(
            iid, "rejected", ts, risk.describe_failures(checks), "risk", checks=checks
        )
        self._count_rejection(rec)
        return rec

    def _count_rejection(self, rec: Mapping[str, Any]) -> None:
        """A risk rejection feeds the breaker of its rule and markets, unless only the breaker
        or the kill switch refused it."""
        names = {c["name"] for c in risk.failed(rec["checks"])}
        if rec["actor"] == "risk" and names and not names <= risk.GUARD_CHECKS:
            markets = [leg["market_id"] for leg in rec["legs"]]
            for key in risk.breaker_keys(rec["rule_id"], markets):
                self.breaker.record(key, rec["ts_ms"])

    def _transition(
        self, iid: str, status: str, ts: int, reason: str, actor: str, **fields: Any
    ) -> dict[str, Any]:
        prev = self.intents[iid]
        rec = {**prev, **fields, "status": status, "ts_ms": ts, "reason": reason, "actor": actor}
        rec["seq"] = prev["seq"] + 1
        return self._emit(rec)

    def _emit(self, rec: dict[str, Any]) -> dict[str, Any]:
        self._store(rec)
        return rec

    def _store(self, rec: dict[str, Any]) -> None:
        self.intents[rec["intent_id"]] = rec
        if rec["status"] in OPEN:
            self.open.add(rec["intent_id"])
        else:
            self.open.discard(rec["intent_id"])
            heapq.heappush(self._closed, (int(rec["ts_ms"]), rec["intent_id"]))

    def _new_intent(
        self,
        iid: str,
        signal: Mapping[str, Any],
        legs: list[dict[str, Any]],
        notional: float,
        method: str,
        ts: int,
    ) -> dict[str, Any]:
        first_market = legs[0]["market_id"] if legs else (signal.get("market_ids") or [""])[0]
        return {
            "intent_id": iid,
            "signal_id": signal["signal_id"],
            "status": "suggested",
            "ts_ms": ts,
            "reason": "",
            "legs": legs,
            "notional": notional,
            "mode": "paper",
            "approval": self.config.approval,
            "seq": 0,
            "rule_id": signal["rule_id"],
            "level": signal["level"],
            "subject": signal["subject"],
            "event_key": signal["event_key"],
            "venue": venue_of(first_market),
            "sizing": method,
            "edge_bps": float(signal["edge_bps"]),
            "checks": [],
            "fills": [],
            "filled_size": 0.0,
            "fee": 0.0,
            "expires_ms": ts + self.config.orders.approval_timeout_ms,
            "actor": "risk",
        }

    # ---------------------------------------------------------------- checks

    def _checks(self, rec: Mapping[str, Any], ts: int, exclude: str = "") -> list[dict[str, Any]]:
        """Every risk check of `rec` at event time `ts` (`exclude`: the intent itself, already
        counted among the open ones when a person approves it later)."""
        limits = self.config.limits
        notional = float(rec["notional"])
        others = [self.intents[i] for i in self.open if i != exclude]
        open_cash = sum(float(r["notional"]) for r in others)
        held, per_market = self.portfolio.exposure()
        added: dict[str, float] = {}
        for leg in rec["legs"]:
            added[leg["market_id"]] = added.get(leg["market_id"], 0.0) + notional / len(rec["legs"])
        open_ids = {p.position_id for p in self.portfolio.open_positions()}
        new_ids = [position_id(rec["rule_id"], leg["token_id"]) for leg in rec["legs"]]
        books = {leg["token_id"]: self._book(leg["token_id"], ts) for leg in rec["legs"]}
        return [
            risk.kill_switch(self.kill),
            self.breaker.check(risk.breaker_keys(rec["rule_id"], added), ts),
            risk.order_notional(notional, limits),
            risk.daily_notional(notional, self.daily.get(ts // DAY_MS, 0.0), limits),
            risk.open_intents(len(others), limits),
            risk.open_positions(open_ids, new_ids, limits),
            risk.total_exposure(held, open_cash, notional, limits),
            risk.market_exposure(per_market, added, limits),
            risk.drawdown(self.portfolio.drawdown(), limits),
            risk.slippage(rec["legs"], books, limits),
        ]

    def _book(self, token_id: str, ts: int) -> Mapping[str, Any] | None:
        """The latest book at or before `ts`; while a signal is handled and the store has
        none (its books went by before the stage watched the event, e.g. far behind in a
        replay), the signal's own leg: its worst price and executable size, as the rule saw
        them. A later approval has no fallback: it needs a real book."""
        return self.books(token_id, ts) or self._fallback.get(token_id)

    def _fee(self, leg: Mapping[str, Any]) -> Mapping[str, Any]:
        market = self.markets.get(leg["market_id"]) or {}
        return market.get("fee") or {"model": "none"}

    # ---------------------------------------------------------------- positions

    def _book_fills(self, event: Mapping[str, Any]) -> list[Position]:
        changed = []
        for i, f in enumerate(event["fills"]):
            meta = {
                "rule_id": event["rule_id"],
                "venue": event["venue"],
                "event_key": event["event_key"],
                "market_id": f["market_id"],
                "token_id": f["token_id"],
            }
            fill = FillEvent(
                event["ts_ms"],
                event["intent_id"],
                event["seq"],
                i,
                f["side"],
                f["price"],
                f["size"],
                f["fee"],
            )
            pos = self.portfolio.add_fill(meta, fill)
            if pos is not None:
                changed.append(pos)
        return changed

    # ---------------------------------------------------------------- restart

    def restore(self, event: Mapping[str, Any]) -> None:
        """Apply one intent event read back from the intents topic (at start): the latest seq
        wins, fills rebuild the positions, approvals the daily notional, risk rejections the
        breaker. Events may come in any order across partitions; each intent's in seq order."""
        rec = dict(event)
        prev = self.intents.get(rec["intent_id"])
        if prev is not None and prev["seq"] >= rec["seq"]:
            return
        self._store(rec)
        self.clock = max(self.clock, int(rec["ts_ms"]))
        if rec["status"] == "approved":
            day = rec["ts_ms"] // DAY_MS
            self.daily[day] = self.daily.get(day, 0.0) + rec["notional"]
        elif rec["status"] == "rejected":
            self._count_rejection(rec)
        elif rec["status"] in ("filled", "partially_filled"):
            self._book_fills(rec)

    def resume(self) -> Output:
        """After `restore`: finish what a crash may have cut between two events of one intent,
        deterministically (at the intent's own event time): a suggested intent whose checks
        failed is rejected, one that passed them in auto mode is approved and filled, an approved
        one without a fill event is filled. Where the events were all written, nothing changes:
        the latest seq would not be in these states with these fields."""
        out = Output()
        for iid in sorted(self.open, key=lambda i: (self.intents[i]["ts_ms"], i)):
            rec = self.intents[iid]
            if rec["status"] == "suggested" and rec["checks"] and risk.failed(rec["checks"]):
                out.intents.append(self._reject_by_risk(iid, rec["checks"], rec["ts_ms"]))
            elif rec["status"] == "suggested" and rec["checks"] and rec["approval"] == "auto":
                out.extend(self._approve(iid, rec["ts_ms"], "auto", rec["checks"]))
            elif rec["status"] == "approved" and not rec["fills"]:
                out.extend(self._fill(iid, rec["ts_ms"], rec["actor"]))
        return out

    def watched_events(self) -> set[str]:
        """Event keys whose books the stage needs: open intents and open positions."""
        keys = {self.intents[i]["event_key"] for i in self.open}
        return keys | {p.event_key for p in self.portfolio.open_positions()}


def _leg_book(leg: Mapping[str, Any], ts: int) -> dict[str, Any]:
    level = [{"price": float(leg["price"]), "size": float(leg["size"])}]
    side = "asks" if leg["side"] == "BUY" else "bids"
    return {
        "token_id": leg["token_id"],
        "ts_ms": ts,
        "asks": [],
        "bids": [],
        side: level,
        "hash": FALLBACK_HASH,
    }


def _expiry_reason(rec: Mapping[str, Any]) -> str:
    if rec["status"] == "suggested":
        return "no decision before the approval timeout"
    wanted = sum(float(leg["size"]) for leg in rec["legs"])
    left = wanted - float(rec["filled_size"])
    return f"unfilled part of {left:g} of {wanted:g} shares expired (paper orders do not rest)"
