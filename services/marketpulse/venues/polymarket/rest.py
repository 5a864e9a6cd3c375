"""REST book snapshots through ``POST /books``, scheduled by tier.

A token's tier comes from the hours until its market closes (VENUES.md): T0 > 48 h every hour,
T1 12-48 h every 5 min, T2 4-12 h every minute, T3 1-4 h every 30 s, T4 < 1 h every 15 s. With
the WebSocket up these snapshots are reconciliation; a token whose shard is down is fetched at
least every ``FALLBACK_S`` instead, and a token whose maintained book disagreed with the venue
(or saw a delta without a snapshot) is fetched on the next turn. Answers are delivered as raw
frames (channel ``rest:books``), so they go through the same normalizer as the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from marketpulse.errors import MarketPulseError
from marketpulse.venues.base import Frame, FrameSink
from marketpulse.venues.polymarket import VENUE
from marketpulse.venues.polymarket.normalize import PolymarketNormalizer
from marketpulse.venues.polymarket.ratelimit import VenueHttp

log = logging.getLogger(__name__)

CHANNEL = "rest:books"
HOUR_MS = 3_600_000
# (hours to close above which the tier applies, snapshot interval in seconds), T0 first.
TIERS = ((48, 3600.0), (12, 300.0), (4, 60.0), (1, 30.0), (float("-inf"), 15.0))
FALLBACK_S = 15.0  # a token without a live shard is snapshotted at least this often
BATCH = 100  # tokens per POST /books
TURN_S = 1.0


def tier(end_ms: int | None, now_ms: int) -> int:
    """0 (T0, far from close) .. 4 (T4, under an hour); no end date counts as far."""
    if end_ms is None:
        return 0
    hours = (end_ms - now_ms) / HOUR_MS
    return next(i for i, (above, _) in enumerate(TIERS) if hours > above)


def interval_s(end_ms: int | None, now_ms: int) -> float:
    return TIERS[tier(end_ms, now_ms)][1]


def closest_first(markets: list[dict[str, Any]], now_ms: int, cap: int = 0) -> list[str]:
    """Token ids of the active markets, highest tier (closest to close) first, at most ``cap``
    (0: all): who gets a WebSocket slot when there are more tokens than slots. The others are
    still snapshotted over REST on their tier's schedule."""
    active = [m for m in markets if m["status"] == "active"]
    active.sort(key=lambda m: -tier(m["end_ms"], now_ms))  # stable: discovery order within a tier
    tokens = [o["token_id"] for m in active for o in m["outcomes"]]
    return tokens[:cap] if cap > 0 else tokens


class BookSnapshots:
    """Fetches due books in batches and delivers them to ``sink``."""

    def __init__(
        self,
        http: VenueHttp,
        clob_url: str,
        sink: FrameSink,
        normalizer: PolymarketNormalizer,
        *,
        down: Callable[[], set[str]] = set,
        batch: int = BATCH,
    ) -> None:
        self.http = http
        self.url = f"{clob_url}/books"
        self.sink = sink
        self.norm = normalizer
        self.down = down
        self.batch = batch
        self.last_ms: dict[str, int] = {}  # token -> last snapshot request

    def due(self, now_ms: int) -> list[str]:
        """Tokens to fetch now: wanted ones first, then those past their tier's interval."""
        wanted = [t for t in self.norm.wanted_snapshots]
        down = self.down()
        due = []
        for market in self.norm.markets.values():
            if market["status"] != "active":
                continue
            every = interval_s(market["end_ms"], now_ms)
            for outcome in market["outcomes"]:
                token = outcome["token_id"]
                limit = min(every, FALLBACK_S) if token in down else every
                if now_ms - self.last_ms.get(token, 0) >= limit * 1000 and token not in wanted:
                    due.append(token)
        return wanted + due

    async def fetch(self, tokens: list[str]) -> None:
        """POST /books for ``tokens`` in batches; each answer becomes one frame."""
        for i in range(0, len(tokens), self.batch):
            batch = tokens[i : i + self.batch]
            now = time.time_ns() // 1_000_000
            for t in batch:
                self.last_ms[t] = now
            body = await self.http.post(
                "clob:/books", self.url, content=json.dumps([{"token_id": t} for t in batch])
            )
            await self.sink.frame(
                Frame(VENUE, CHANNEL, "pm-rest", time.time_ns() // 1_000_000, body)
            )

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.fetch(self.due(time.time_ns() // 1_000_000))
            except MarketPulseError as exc:  # venue down or refusing: try again next turn
                log.warning("polymarket book snapshots: %s", exc)
            except Exception:  # a bug or the broker: logged, and the task keeps its schedule
                log.exception("polymarket book snapshots failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), TURN_S)
