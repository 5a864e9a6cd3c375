"""Paper positions per rule and outcome token: size, cost basis, realised and unrealised PnL,
marked to the latest book and settled at resolution.

A position is a pure function of its fills, taken in a canonical order (event time, intent id,
seq, leg), plus its settlement and its latest mark. It is recomputed from that list whenever one
of them changes, so the same fills give the same position whatever order they were processed in:
a rebuild after a restart equals the live state it replaces.

Cash conventions (average-cost basis): `cost` is the net cash put into the open shares, fees
included (negative for a short: cash received). Reducing a position realises the fill's cash
flow minus the share of `cost` it releases; settlement pays 1 per winning share, 0 otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

_EPS = 1e-9

Folded = tuple[float, float, float, float]  # size, cost, fees, realised


@dataclass(frozen=True, order=True)
class FillEvent:
    """One leg fill of one intent event, sortable into the canonical order."""

    ts_ms: int
    intent_id: str
    seq: int
    leg: int
    side: str = field(compare=False)
    price: float = field(compare=False)
    size: float = field(compare=False)
    fee: float = field(compare=False)


@dataclass
class Position:
    rule_id: str
    venue: str
    event_key: str
    market_id: str
    token_id: str
    fills: list[FillEvent] = field(default_factory=list)
    mark_price: float | None = None
    mark_ts_ms: int = 0
    payout: float | None = None  # 1.0 / 0.0 once the market resolved
    settled_ts_ms: int = 0
    # fold of `fills` so far, extended in place when a fill sorts last (the usual case)
    _folded: Folded = field(default=(0.0, 0.0, 0.0, 0.0), repr=False)
    _keys: set[tuple[int, str, int, int]] = field(default_factory=set, repr=False)
    _record: dict[str, Any] | None = field(default=None, repr=False)  # until something changes

    @property
    def position_id(self) -> str:
        return position_id(self.rule_id, self.token_id)

    def add(self, fill: FillEvent) -> bool:
        """Add a fill once (a redelivered intent event adds nothing); True if new."""
        key = (fill.ts_ms, fill.intent_id, fill.seq, fill.leg)
        if key in self._keys:
            return False
        self._keys.add(key)
        self._record = None
        if not self.fills or self.fills[-1] <= fill:
            self.fills.append(fill)
            self._folded = fold([fill], self._folded)
        else:  # an earlier fill arrived late: refold in the canonical order
            self.fills.append(fill)
            self.fills.sort()
            self._folded = fold(self.fills)
        return True

    def set_mark(self, price: float, ts_ms: int) -> None:
        self.mark_price, self.mark_ts_ms = price, max(ts_ms, self.mark_ts_ms)
        self._record = None

    def settle(self, payout: float, ts_ms: int) -> None:
        self.payout, self.settled_ts_ms = payout, ts_ms
        self._record = None

    def record(self) -> dict[str, Any]:
        """The Position record (position.avsc) of the current fills, mark and settlement."""
        if self._record is None:
            self._record = self._compute()
        return dict(self._record)

    def _compute(self) -> dict[str, Any]:
        size, cost, fees, realised = self._folded
        status = "open" if abs(size) > _EPS else "closed"
        if self.payout is not None and self.fills:
            realised += size * self.payout - cost
            size, cost, status = 0.0, 0.0, "settled"
        mark = self.mark_price
        unrealised = size * mark - cost if mark is not None and status == "open" else 0.0
        last_fill = self.fills[-1].ts_ms if self.fills else 0
        return {
            "position_id": self.position_id,
            "rule_id": self.rule_id,
            "venue": self.venue,
            "event_key": self.event_key,
            "market_id": self.market_id,
            "token_id": self.token_id,
            "size": round(size, 6),
            "avg_price": round(cost / size, 6) if abs(size) > _EPS else 0.0,
            "cost": round(cost, 6),
            "fees": round(fees, 6),
            "realised_pnl": round(realised, 6),
            "unrealised_pnl": round(unrealised, 6),
            "mark_price": mark,
            "status": status,
            "ts_ms": max(last_fill, self.mark_ts_ms, self.settled_ts_ms),
        }


def position_id(rule_id: str, token_id: str) -> str:
    return f"{rule_id}|{token_id}"


def fold(fills: Iterable[FillEvent], start: Folded = (0.0, 0.0, 0.0, 0.0)) -> Folded:
    """(size, cost, fees, realised) after `fills` in order from `start`, average-cost basis."""
    size, cost, fees, realised = start
    for f in fills:
        signed = f.size if f.side == "BUY" else -f.size
        # cash flow of the whole fill: pay for a buy, receive for a sell; the fee always costs
        cash = -f.price * f.size - f.fee if f.side == "BUY" else f.price * f.size - f.fee
        fees += f.fee
        if abs(size) > _EPS and size * signed < 0:  # reduces (maybe flips) the position
            closing = min(abs(signed), abs(size))
            share = closing / abs(size)
            realised += cash * (closing / f.size) - cost * share
            cost -= cost * share
            size += closing if signed > 0 else -closing
            signed -= closing if signed > 0 else -closing
            cash *= 1.0 - closing / f.size
        if abs(signed) > _EPS:
            size += signed
            cost -= cash
    return size, cost, fees, realised


def mid_price(book: Mapping[str, Any]) -> float | None:
    """Mid of the best bid and ask (either alone when one side is empty)."""
    bids = [float(lv["price"]) for lv in book.get("bids") or [] if float(lv["size"]) > 0]
    asks = [float(lv["price"]) for lv in book.get("asks") or [] if float(lv["size"]) > 0]
    best_bid, best_ask = (max(bids) if bids else None), (min(asks) if asks else None)
    if best_bid is not None and best_ask is not None:
        return round((best_bid + best_ask) / 2.0, 6)
    return best_bid if best_bid is not None else best_ask


class Portfolio:
    """Every paper position, with the aggregates the risk checks read."""

    def __init__(self, mark_interval_ms: int = 0) -> None:
        self.positions: dict[str, Position] = {}
        self.by_token: dict[str, list[str]] = {}
        self.mark_interval_ms = mark_interval_ms
        self.peak_pnl = 0.0

    def add_fill(self, meta: Mapping[str, str], fill: FillEvent) -> Position | None:
        """Book one leg fill; `meta` has rule_id, venue, event_key, market_id, token_id.
        Returns the position when the fill was new."""
        pid = position_id(meta["rule_id"], meta["token_id"])
        pos = self.positions.get(pid)
        if pos is None:
            pos = Position(
                meta["rule_id"],
                meta["venue"],
                meta["event_key"],
                meta["market_id"],
                meta["token_id"],
            )
            self.positions[pid] = pos
            self.by_token.setdefault(pos.token_id, []).append(pid)
        if not pos.add(fill):
            return None
        self._track_peak()
        return pos

    def mark(self, token_id: str, price: float | None, ts_ms: int) -> list[Position]:
        """Mark the open positions of a token; only those due (mark_interval_ms of event time
        since their last mark) and whose price moved are returned for publication."""
        changed = []
        for pid in self.by_token.get(token_id, ()):
            pos = self.positions[pid]
            if price is None or pos.payout is not None or price == pos.mark_price:
                continue
            if pos.mark_price is not None and ts_ms - pos.mark_ts_ms < self.mark_interval_ms:
                continue
            pos.set_mark(price, ts_ms)
            changed.append(pos)
        if changed:
            self._track_peak()
        return changed

    def settle(self, market: Mapping[str, Any]) -> list[Position]:
        """Settle the positions in a resolved market's tokens (winner pays 1, others 0)."""
        winner = market.get("winning_token_id")
        if market.get("status") != "resolved" or not winner:
            return []
        settled = []
        for outcome in market.get("outcomes") or []:
            for pid in self.by_token.get(outcome["token_id"], ()):
                pos = self.positions[pid]
                if pos.payout is None:
                    payout = 1.0 if outcome["token_id"] == winner else 0.0
                    pos.settle(payout, int(market.get("updated_ms", 0)))
                    settled.append(pos)
        if settled:
            self._track_peak()
        return settled

    def open_positions(self) -> list[Position]:
        return [p for p in self.positions.values() if p.record()["status"] == "open"]

    def exposure(self) -> tuple[float, dict[str, float]]:
        """Cash at risk in open positions: total, and per market (|cost|)."""
        per_market: dict[str, float] = {}
        for pos in self.open_positions():
            per_market[pos.market_id] = per_market.get(pos.market_id, 0.0) + abs(
                pos.record()["cost"]
            )
        return sum(per_market.values()), per_market

    def total_pnl(self) -> float:
        return sum(
            r["realised_pnl"] + r["unrealised_pnl"]
            for r in (p.record() for p in self.positions.values())
        )

    def drawdown(self) -> float:
        """How far total PnL is below its peak (0 at a new high)."""
        return max(0.0, self.peak_pnl - self.total_pnl())

    def _track_peak(self) -> None:
        self.peak_pnl = max(self.peak_pnl, self.total_pnl())
