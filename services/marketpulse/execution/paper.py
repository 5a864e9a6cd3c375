"""Paper fills: walk one order book for one leg, as a taker would, and charge the venue's fee.
Pure functions; the `Executor` protocol is where a live venue client would plug in instead.

A buy takes asks from the lowest up to its limit price, a sell takes bids from the highest down
to its limit; what the book cannot give at the limit is left unfilled (a partial fill, or none).
Levels are re-sorted here: a venue's level order is not trusted (VENUES.md)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from marketpulse.fees import order_fee

# Sizes are kept to hundredths of a share at most; below this nothing is left to fill.
_SIZE_EPS = 1e-9


class Executor(Protocol):
    """Fills one leg of an approved intent. `PaperExecutor` is the only one shipped; a live
    venue client would implement the same call (and keep its keys outside this package)."""

    def fill(
        self, leg: Mapping[str, Any], book: Mapping[str, Any] | None, fee: Mapping[str, Any]
    ) -> dict[str, Any] | None: ...


def ladder(book: Mapping[str, Any], side: str) -> list[tuple[float, float]]:
    """The levels a taker of `side` consumes, best first: asks ascending for a buy, bids
    descending for a sell; levels without size or outside (0, 1) are dropped."""
    levels = book.get("asks" if side == "BUY" else "bids") or []
    usable = [
        (float(lv["price"]), float(lv["size"]))
        for lv in levels
        if float(lv["size"]) > 0 and 0.0 < float(lv["price"]) < 1.0
    ]
    return sorted(usable, key=lambda lv: lv[0], reverse=side != "BUY")


def walk(
    levels: Sequence[tuple[float, float]], side: str, size: float, limit: float | None
) -> list[tuple[float, float]]:
    """(price, size) taken per level for up to `size` shares, within `limit` (None: any)."""
    taken: list[tuple[float, float]] = []
    left = size
    for price, avail in levels:
        if left <= _SIZE_EPS:
            break
        if limit is not None and (
            price > limit + 1e-12 if side == "BUY" else price < limit - 1e-12
        ):
            break
        take = min(avail, left)
        taken.append((price, take))
        left -= take
    return taken


def vwap(taken: Sequence[tuple[float, float]]) -> float | None:
    size = sum(s for _, s in taken)
    return sum(p * s for p, s in taken) / size if size > 0 else None


def slippage_bps(book: Mapping[str, Any], side: str, size: float, reference: float) -> float | None:
    """How much worse than `reference` the book's VWAP for `size` shares is, in basis points
    (positive: worse). None when the book has nothing on that side."""
    avg = vwap(walk(ladder(book, side), side, size, None))
    if avg is None or reference <= 0:
        return None
    worse = avg - reference if side == "BUY" else reference - avg
    return worse / reference * 10_000.0


def fill_leg(
    leg: Mapping[str, Any], book: Mapping[str, Any] | None, fee: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The Fill record (intent.avsc) of `leg` against `book` at its limit price, or None when
    nothing fills (no book, or no depth within the limit)."""
    if book is None:
        return None
    side = str(leg["side"])
    taken = walk(ladder(book, side), side, float(leg["size"]), float(leg["price"]))
    size = round(sum(s for _, s in taken), 6)
    if size <= _SIZE_EPS:
        return None
    avg = vwap(taken)
    assert avg is not None
    return {
        "market_id": leg["market_id"],
        "token_id": leg["token_id"],
        "side": side,
        "price": round(avg, 6),
        "size": size,
        "fee": round(order_fee(fee, taken), 6),
        "levels": len(taken),
        "book_ts_ms": int(book["ts_ms"]),
    }


class PaperExecutor:
    """Simulated taker fills against the book (see `fill_leg`)."""

    def fill(
        self, leg: Mapping[str, Any], book: Mapping[str, Any] | None, fee: Mapping[str, Any]
    ) -> dict[str, Any] | None:
        return fill_leg(leg, book, fee)
