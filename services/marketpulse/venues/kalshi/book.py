"""Kalshi's bids-only order book and the two-sided views derived from it.

Kalshi publishes only bids: YES bids and NO bids. Buying YES at ``p`` is selling NO at ``1 - p``,
so a NO bid of size ``q`` at ``p`` is a YES ask of size ``q`` at ``1 - p`` and vice versa. The
YES token's book is therefore (YES bids, 1 - NO bids) and the NO token's (NO bids, 1 - YES bids).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Literal

from marketpulse.venues.kalshi.fields import ONE

Side = Literal["yes", "no"]
Level = tuple[float, float]  # (price, size) in dollars and contracts


@dataclass(slots=True)
class TokenView:
    """One outcome token's top-K book, best first."""

    bids: list[Level]
    asks: list[Level]

    @property
    def best_bid(self) -> Level | None:
        return self.bids[0] if self.bids else None

    @property
    def best_ask(self) -> Level | None:
        return self.asks[0] if self.asks else None


class Bids:
    """One side's bids: price → size (exact decimals), prices also kept sorted so that the top
    of the book is a slice, not a sort, after each of thousands of deltas."""

    __slots__ = ("_prices", "sizes")

    def __init__(self, levels: dict[Decimal, Decimal] | None = None) -> None:
        self.sizes: dict[Decimal, Decimal] = dict(levels or {})
        self._prices: list[Decimal] = sorted(self.sizes)

    def add(self, price: Decimal, delta: Decimal) -> bool:
        """Add ``delta`` at ``price``; a level at or below zero is removed. False when it would
        have gone negative (a message was missed: the book is suspect)."""
        old = self.sizes.get(price)
        size = (old or Decimal(0)) + delta
        if size > 0:
            if old is None:
                bisect.insort(self._prices, price)
            self.sizes[price] = size
            return True
        if old is not None:
            del self.sizes[price]
            del self._prices[bisect.bisect_left(self._prices, price)]
        return size == 0

    def top(self, depth: int) -> list[Decimal]:
        """The ``depth`` highest prices, highest first."""
        return self._prices[: -depth - 1 : -1] if depth > 0 else []


@lru_cache(maxsize=4096)
def _as_float(price: Decimal) -> float:
    return float(price)


@lru_cache(maxsize=4096)
def _complement(price: Decimal) -> float:
    return float(ONE - price)


class BidsBook:
    """YES and NO bids of one market."""

    __slots__ = ("no", "yes")

    def __init__(
        self,
        yes: dict[Decimal, Decimal] | None = None,
        no: dict[Decimal, Decimal] | None = None,
    ) -> None:
        self.yes = Bids(yes)
        self.no = Bids(no)

    def apply(self, side: Side, price: Decimal, delta: Decimal) -> bool:
        return (self.yes if side == "yes" else self.no).add(price, delta)

    def view(self, side: Side, depth: int) -> TokenView:
        """The ``side`` token's bids and asks, ``depth`` levels each, best first."""
        own, other = (self.yes, self.no) if side == "yes" else (self.no, self.yes)
        return TokenView(
            bids=[(_as_float(p), float(own.sizes[p])) for p in own.top(depth)],
            asks=[(_complement(p), float(other.sizes[p])) for p in other.top(depth)],
        )
