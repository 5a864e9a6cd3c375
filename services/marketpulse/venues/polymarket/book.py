"""One token's order book, maintained from snapshots and deltas.

Levels are kept in dicts keyed by price, so a delta is O(1) and the level order the venue sends
does not matter: the best bid is the highest price and the best ask the lowest (the docs and
versions disagree on which end of the arrays is best, so index 0 is never trusted).
"""

from __future__ import annotations

from typing import Any

Level = dict[str, float]


class Book:
    __slots__ = ("asks", "bids", "hash", "last_price", "ts_ms")

    def __init__(self) -> None:
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        self.ts_ms = 0
        self.hash: str | None = None
        self.last_price: float | None = None

    def replace(self, bids: list[tuple[float, float]], asks: list[tuple[float, float]]) -> None:
        """A snapshot: the whole book (levels of size 0 are left out)."""
        self.bids = {p: s for p, s in bids if s > 0}
        self.asks = {p: s for p, s in asks if s > 0}

    def set_level(self, buy: bool, price: float, size: float) -> None:
        """A delta: ``size`` is the new total at ``price``; 0 removes the level."""
        side = self.bids if buy else self.asks
        if size > 0:
            side[price] = size
        else:
            side.pop(price, None)

    def best_bid(self) -> tuple[float, float] | None:
        if not self.bids:
            return None
        price = max(self.bids)
        return price, self.bids[price]

    def best_ask(self) -> tuple[float, float] | None:
        if not self.asks:
            return None
        price = min(self.asks)
        return price, self.asks[price]

    def top(self, depth: int) -> tuple[list[Level], list[Level]]:
        """The best ``depth`` levels a side, best first, as Avro Level records."""
        # sorted() in C beats heapq's Python loop on the book sizes seen (up to a few hundred).
        bids = sorted(self.bids, reverse=True)[:depth]
        asks = sorted(self.asks)[:depth]
        return (
            [{"price": p, "size": self.bids[p]} for p in bids],
            [{"price": p, "size": self.asks[p]} for p in asks],
        )

    def agrees(self, best_bid: float | None, best_ask: float | None) -> bool:
        """Whether this book's top matches the venue's own best bid/ask (None: not given).
        The venue writes an empty side as 0 (bid) or 0/1 (ask)."""
        ours_bid = self.best_bid()
        ours_ask = self.best_ask()
        if best_bid is not None and not _same(ours_bid[0] if ours_bid else 0.0, best_bid):
            return False
        if best_ask is None:
            return True
        if ours_ask is None:
            return best_ask in (0.0, 1.0)
        return _same(ours_ask[0], best_ask)

    def summary(self) -> dict[str, Any]:
        bid, ask = self.best_bid(), self.best_ask()
        return {
            "best_bid": bid[0] if bid else None,
            "bid_size": bid[1] if bid else None,
            "best_ask": ask[0] if ask else None,
            "ask_size": ask[1] if ask else None,
        }


def _same(a: float, b: float) -> bool:
    return abs(a - b) < 1e-9
