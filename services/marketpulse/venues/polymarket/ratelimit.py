"""Polymarket's request budgets, shared by every task of the process, and the HTTP client that
honours them.

Budgets are the official sliding 10-second windows (VENUES.md). A request counts against every
budget it falls under (the general one, its service's, its endpoint's), and waits until all of
them have room: Cloudflare queues or throttles rather than rejects, so staying under the budget
is what keeps latency flat. 429 and 5xx answers are retried with exponential backoff and jitter.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from typing import Any

import httpx

from marketpulse import metrics
from marketpulse.errors import MarketPulseError, TransientError
from marketpulse.venues.polymarket import VENUE

WINDOW_S = 10.0

# Requests per sliding 10 s window.
LIMITS: dict[str, int] = {
    "general": 15_000,
    "gamma": 4_000,
    "gamma:/events": 500,
    "gamma:/markets": 300,
    "gamma:listing": 900,
    "data": 1_000,
    "data:/trades": 200,
    "clob": 9_000,
    "clob:/book": 1_500,
    "clob:/books": 500,
    "clob:/price": 1_500,
    "clob:/prices": 500,
    "clob:/midpoint": 1_500,
    "clob:/prices-history": 1_000,
}
# Which budgets an endpoint draws on, beyond "general" and its service.
EXTRA: dict[str, tuple[str, ...]] = {
    "gamma:/events": ("gamma:listing",),
    "gamma:/markets": ("gamma:listing",),
}


class RequestRejected(MarketPulseError):
    """The venue refused the request itself (a 4xx other than 429): retrying cannot help."""

    retriable = False
    kind = "request_rejected"


class SlidingWindow:
    """At most ``limit`` acquisitions in any ``window_s`` seconds."""

    def __init__(self, limit: int, window_s: float = WINDOW_S) -> None:
        self.limit = limit
        self.window_s = window_s
        self._times: deque[float] = deque()

    def wait_s(self, now: float) -> float:
        """Seconds until one more acquisition fits (0: now)."""
        while self._times and now - self._times[0] >= self.window_s:
            self._times.popleft()
        if len(self._times) < self.limit:
            return 0.0
        return self._times[0] + self.window_s - now

    def take(self, now: float) -> None:
        self._times.append(now)


class RateLimiter:
    """The process's budgets, one SlidingWindow each. Checking and taking a slot happen with no
    await in between, so tasks on the event loop can never overshoot a budget together; a task
    throttled on one endpoint does not hold up requests to the others."""

    def __init__(self, limits: dict[str, int] | None = None, window_s: float = WINDOW_S) -> None:
        self._windows = {k: SlidingWindow(v, window_s) for k, v in (limits or LIMITS).items()}

    def budgets(self, endpoint: str) -> list[SlidingWindow]:
        service = endpoint.split(":", 1)[0]
        names = ("general", service, endpoint, *EXTRA.get(endpoint, ()))
        return [self._windows[n] for n in names if n in self._windows]

    async def acquire(self, endpoint: str) -> None:
        budgets = self.budgets(endpoint)
        while True:
            now = time.monotonic()
            wait = max((b.wait_s(now) for b in budgets), default=0.0)
            if wait <= 0:
                for b in budgets:
                    b.take(now)
                return
            await asyncio.sleep(wait)


class VenueHttp:
    """GET/POST through the shared budgets, retrying 429/5xx/network errors with backoff and
    jitter (honouring Retry-After); returns the raw body bytes (they become frames)."""

    def __init__(
        self,
        limiter: RateLimiter | None = None,
        *,
        retries: int = 5,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        timeout_s: float = 15.0,
    ) -> None:
        self.limiter = limiter or RateLimiter()
        self._client = httpx.AsyncClient(timeout=timeout_s, headers={"User-Agent": "marketpulse"})
        self._retries = retries
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s

    async def get(self, endpoint: str, url: str, **kwargs: Any) -> bytes:
        return await self.request("GET", endpoint, url, **kwargs)

    async def post(self, endpoint: str, url: str, **kwargs: Any) -> bytes:
        return await self.request("POST", endpoint, url, **kwargs)

    async def request(self, method: str, endpoint: str, url: str, **kwargs: Any) -> bytes:
        counter = metrics.COLLECTOR_HTTP
        for attempt in range(self._retries + 1):
            await self.limiter.acquire(endpoint)
            retry_after: float | None = None
            try:
                resp = await self._client.request(method, url, **kwargs)
            except httpx.HTTPError as exc:
                outcome, detail = "error", f"{type(exc).__name__}: {exc}"
            else:
                if resp.status_code < 400:
                    counter.labels(VENUE, endpoint, "ok").inc()
                    return resp.content
                outcome = "429" if resp.status_code == 429 else f"{resp.status_code // 100}xx"
                detail = f"HTTP {resp.status_code}: {resp.text[:200]}"
                if resp.status_code != 429 and resp.status_code < 500:
                    counter.labels(VENUE, endpoint, outcome).inc()
                    raise RequestRejected(f"{method} {url}: {detail}")
                retry_after = _retry_after(resp)
            counter.labels(VENUE, endpoint, outcome).inc()
            if attempt == self._retries:
                break
            counter.labels(VENUE, endpoint, "retry").inc()
            await asyncio.sleep(retry_after if retry_after is not None else self._delay(attempt))
        raise TransientError(f"{method} {url} failed after {self._retries + 1} tries: {detail}")

    def _delay(self, attempt: int) -> float:
        base = min(self._max_backoff_s, self._backoff_s * 2**attempt)
        return base * (0.5 + random.random() / 2)  # jitter: tasks that failed together spread

    async def aclose(self) -> None:
        await self._client.aclose()


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("Retry-After")
    try:
        return min(30.0, max(0.0, float(value))) if value is not None else None
    except ValueError:
        return None
