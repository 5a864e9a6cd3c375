"""The Kalshi REST read budget and retry delays (pagination and 429 retries run against a real
HTTP server in tests/integration/test_kalshi_network.py)."""

from __future__ import annotations

import asyncio
import time

from marketpulse.venues.kalshi.rest import BACKOFF_CAP_S, RateLimiter, _delay


async def test_rate_limiter_holds_reads_to_the_budget() -> None:
    limiter = RateLimiter(100.0)  # 100 reads/s, starting with one token
    started = time.monotonic()
    await asyncio.gather(*(limiter.acquire() for _ in range(51)))
    elapsed = time.monotonic() - started
    assert 0.45 <= elapsed < 1.5  # 50 reads beyond the first token at 100/s: ~0.5 s


def test_retry_delay_honours_retry_after_and_caps() -> None:
    assert _delay(1, "2") == 2.0
    assert _delay(1, "9999") == BACKOFF_CAP_S
    assert 0.25 <= _delay(1, None) <= 0.5  # 0.5 s base, jittered down to half
    assert 2.0 <= _delay(4, "not a number") <= 4.0
    assert _delay(30, None) <= BACKOFF_CAP_S
