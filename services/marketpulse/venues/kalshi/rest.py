"""Kalshi REST (public market data): series, events and markets with cursor pagination, and
order books. Every response body is delivered to the sink as a raw frame before it is used, so
what the collector learnt is recorded and normalized exactly like WebSocket traffic.

Reads share one budget (Basic tier: 20 reads/s); 429 and 5xx are retried with backoff, honouring
``Retry-After``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx

from marketpulse import metrics
from marketpulse.errors import TransientError
from marketpulse.settings import Settings
from marketpulse.venues.base import Frame, FrameSink
from marketpulse.venues.kalshi.markets import VENUE
from marketpulse.venues.kalshi.normalize import rest_channel

log = logging.getLogger(__name__)

CONN_ID = "kalshi-rest"
PAGE_LIMIT = 200  # /events and /markets accept up to 200 (default 100)
MAX_ATTEMPTS = 5
BACKOFF_S = 0.5
BACKOFF_CAP_S = 10.0


class RateLimiter:
    """Token bucket: ``rate`` acquisitions per second, bursts of at most one second's worth."""

    def __init__(self, rate: float) -> None:
        self._rate = max(rate, 0.001)
        self._tokens = min(self._rate, 1.0)
        self._last = time.monotonic()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:  # one waiter at a time keeps the order fair
            while True:
                now = time.monotonic()
                self._tokens = min(self._rate, self._tokens + (now - self._last) * self._rate)
                self._last = now
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    return
                await asyncio.sleep((1.0 - self._tokens) / self._rate)


class KalshiRest:
    def __init__(
        self, settings: Settings, sink: FrameSink, client: httpx.AsyncClient | None = None
    ) -> None:
        self._base = settings.kalshi_rest_url.rstrip("/")
        self._sink = sink
        self._client = client or httpx.AsyncClient(timeout=15.0)
        self._limiter = RateLimiter(settings.kalshi_reads_per_s)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def get(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """GET ``path`` (relative to the REST base), deliver it as a frame, return its JSON."""
        endpoint = path.split("/")[1] if path.count("/") else path
        for attempt in range(1, MAX_ATTEMPTS + 1):
            await self._limiter.acquire()
            try:
                resp = await self._client.get(self._base + path, params=params)
            except httpx.TransportError as exc:
                outcome, retry_after, error = "error", None, str(exc)
            else:
                if resp.status_code == 200:
                    metrics.COLLECTOR_HTTP.labels(VENUE, endpoint, "ok").inc()
                    frame = Frame(VENUE, rest_channel(path), CONN_ID, _now_ms(), resp.content)
                    await self._sink.frame(frame)
                    return _body(resp)
                if resp.status_code != 429 and resp.status_code < 500:
                    metrics.COLLECTOR_HTTP.labels(VENUE, endpoint, str(resp.status_code)).inc()
                    raise TransientError(f"Kalshi {path} answered {resp.status_code}")
                outcome = "429" if resp.status_code == 429 else "5xx"
                retry_after, error = resp.headers.get("Retry-After"), f"HTTP {resp.status_code}"
            metrics.COLLECTOR_HTTP.labels(VENUE, endpoint, outcome).inc()
            delay = _delay(attempt, retry_after)
            log.warning(
                "kalshi GET %s: %s (attempt %d), retry in %.2fs", path, error, attempt, delay
            )
            await asyncio.sleep(delay)
        raise TransientError(f"Kalshi {path} failed {MAX_ATTEMPTS} times")

    async def pages(self, path: str, params: dict[str, Any] | None = None) -> AsyncIterator[Any]:
        """Every page of a cursor-paginated listing; stops when ``cursor`` is empty or null
        (or repeats, which would otherwise loop forever)."""
        query = {"limit": PAGE_LIMIT, **(params or {})}
        seen: set[str] = set()
        while True:
            body = await self.get(path, query)
            yield body
            cursor = body.get("cursor")
            if not cursor or not isinstance(cursor, str) or cursor in seen:
                return
            seen.add(cursor)
            query["cursor"] = cursor

    async def orderbook(self, ticker: str) -> dict[str, Any]:
        return await self.get(f"/markets/{ticker}/orderbook")


def _body(resp: httpx.Response) -> dict[str, Any]:
    try:
        body = json.loads(resp.content)
    except ValueError:
        return {}  # the frame already went to the normalizer, which dead-letters it
    return body if isinstance(body, dict) else {}


def _delay(attempt: int, retry_after: str | None) -> float:
    if retry_after:
        try:
            return min(BACKOFF_CAP_S, max(0.0, float(retry_after)))
        except ValueError:
            pass
    return min(BACKOFF_CAP_S, BACKOFF_S * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
