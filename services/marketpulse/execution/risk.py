"""Risk checks of an order intent: one function per check, each returning a RiskCheck record
(intent.avsc) with the value it measured and the limit it compared it to. A check passes when
its value is at or below its limit. Plus the two stateful guards: the circuit breaker (per rule
and per market) and the global kill switch. Pure: no Kafka, no clock; time is event time."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from marketpulse.execution.config import Breaker, Limits
from marketpulse.execution.paper import slippage_bps

RiskCheck = dict[str, Any]

# A rejection caused only by these does not feed the breaker (it would keep itself tripped).
GUARD_CHECKS = frozenset({"circuit_breaker", "kill_switch"})


def check(name: str, value: float, limit: float, detail: str = "") -> RiskCheck:
    return {
        "name": name,
        "passed": value <= limit + 1e-9,
        "value": round(float(value), 6),
        "limit": float(limit),
        "detail": detail,
    }


def order_notional(notional: float, limits: Limits) -> RiskCheck:
    return check("order_notional", notional, limits.max_order_notional, "cash of this intent")


def daily_notional(notional: float, used_today: float, limits: Limits) -> RiskCheck:
    return check(
        "daily_notional",
        used_today + notional,
        limits.max_daily_notional,
        f"{used_today:g} approved today (UTC, event time) + this {notional:g}",
    )


def open_intents(open_count: int, limits: Limits) -> RiskCheck:
    return check(
        "open_intents",
        open_count + 1,
        limits.max_open_intents,
        f"{open_count} suggested or approved, not terminal, + this one",
    )


def open_positions(open_ids: set[str], new_ids: Iterable[str], limits: Limits) -> RiskCheck:
    after = open_ids | set(new_ids)
    return check(
        "open_positions",
        len(after),
        limits.max_open_positions,
        f"{len(open_ids)} open, {len(after) - len(open_ids)} new",
    )


def total_exposure(positions: float, intents: float, notional: float, limits: Limits) -> RiskCheck:
    return check(
        "total_exposure",
        positions + intents + notional,
        limits.max_total_exposure,
        f"positions {positions:g} + open intents {intents:g} + this {notional:g}",
    )


def market_exposure(
    current: Mapping[str, float], added: Mapping[str, float], limits: Limits
) -> RiskCheck:
    """The most exposed market of the intent after it: its open cost plus this intent's share."""
    worst, value = "", 0.0
    for market_id, cash in added.items():
        total = current.get(market_id, 0.0) + cash
        if total >= value:
            worst, value = market_id, total
    return check("market_exposure", value, limits.max_market_exposure, f"market {worst}")


def drawdown(current: float, limits: Limits) -> RiskCheck:
    return check("drawdown", current, limits.max_drawdown, "total PnL below its peak")


def slippage(
    legs: Sequence[Mapping[str, Any]],
    books: Mapping[str, Mapping[str, Any] | None],
    limits: Limits,
) -> RiskCheck:
    """Worst leg's VWAP at its size in the current book against its limit price. A leg without
    a book (or without that side) fails: nothing says it can be filled."""
    worst, where = 0.0, ""
    for leg in legs:
        book = books.get(leg["token_id"])
        bps = (
            None
            if book is None
            else slippage_bps(book, leg["side"], float(leg["size"]), float(leg["price"]))
        )
        if bps is None:
            return {
                "name": "slippage",
                "passed": False,
                "value": 0.0,
                "limit": float(limits.max_slippage_bps),
                "detail": f"no book side to fill {leg['side']} {leg['token_id']}",
            }
        if bps >= worst or not where:
            worst, where = bps, leg["token_id"]
    return check("slippage", worst, limits.max_slippage_bps, f"bps vs limit price, {where}")


def kill_switch(kill: KillSwitch) -> RiskCheck:
    return check("kill_switch", 1.0 if kill.on else 0.0, 0.0, kill.reason if kill.on else "off")


@dataclass
class KillSwitch:
    """Global stop: while on, no intent is approved (commands `kill` and `resume`)."""

    on: bool = False
    reason: str = ""
    since_ms: int = 0

    def set(self, on: bool, reason: str, ts_ms: int) -> None:
        self.on, self.reason, self.since_ms = on, reason, ts_ms


@dataclass
class CircuitBreaker:
    """Trips a key (`rule:<id>`, `market:<id>`) after `max_events` rejections or losses within
    `window_ms`; a tripped key refuses intents until `cooldown_ms` after the trip, then starts
    counting afresh. Event time only, so a replay trips at the same points."""

    config: Breaker
    events: dict[str, list[int]] = field(default_factory=dict)
    tripped_until: dict[str, int] = field(default_factory=dict)

    def record(self, key: str, ts_ms: int) -> bool:
        """Count one rejection or loss; True when this one trips the key."""
        if self.is_open(key, ts_ms):
            return False
        window = self.events.setdefault(key, [])
        bisect.insort(window, ts_ms)  # inputs of several partitions interleave
        self._expire(window, ts_ms)
        if len(window) >= self.config.max_events:
            self.tripped_until[key] = ts_ms + self.config.cooldown_ms
            window.clear()
            return True
        return False

    def is_open(self, key: str, ts_ms: int) -> bool:
        """Tripped and still cooling down at `ts_ms`."""
        return ts_ms < self.tripped_until.get(key, -1)

    def count(self, key: str, ts_ms: int) -> int:
        window = self.events.get(key)
        if not window:
            return 0
        self._expire(window, ts_ms)
        return len(window)

    def _expire(self, window: list[int], ts_ms: int) -> None:
        del window[: bisect.bisect_right(window, ts_ms - self.config.window_ms)]

    def check(self, keys: Sequence[str], ts_ms: int) -> RiskCheck:
        """Fails if any key is tripped; the value is the most events any key has in its
        window (the limit when tripped)."""
        tripped = [k for k in keys if self.is_open(k, ts_ms)]
        limit = float(self.config.max_events)
        if tripped:
            until = max(self.tripped_until[k] for k in tripped)
            return {
                "name": "circuit_breaker",
                "passed": False,
                "value": limit,
                "limit": limit,
                "detail": f"tripped: {', '.join(tripped)} until {until}",
            }
        value = max((self.count(k, ts_ms) for k in keys), default=0)
        return {
            "name": "circuit_breaker",
            "passed": True,
            "value": float(value),
            "limit": limit,
            "detail": f"events in window, worst of {', '.join(keys)}",
        }


def breaker_keys(rule_id: str, market_ids: Iterable[str]) -> list[str]:
    return [f"rule:{rule_id}", *(f"market:{m}" for m in dict.fromkeys(market_ids))]


def failed(checks: Iterable[RiskCheck]) -> list[RiskCheck]:
    return [c for c in checks if not c["passed"]]


def describe_failures(checks: Iterable[RiskCheck]) -> str:
    return "; ".join(
        f"{c['name']} {c['value']:g} > {c['limit']:g}"
        + (f" ({c['detail']})" if c["detail"] else "")
        for c in failed(checks)
    )
