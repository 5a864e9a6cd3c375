"""The retry policy: one payload to one channel, retried with exponential backoff and jitter,
honouring what the server asks for (`Retry-After`), until it succeeds, cannot succeed, or has
been tried for `give_up_s`. Giving up is the caller's cue to dead-letter."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from marketpulse import metrics
from marketpulse.alerts.channels import Attempt, Channel
from marketpulse.settings import Settings


class Interrupted(Exception):
    """The process is stopping mid-retry: the message stays uncommitted and is redelivered."""


@dataclass(frozen=True)
class RetryPolicy:
    base_s: float = 0.5
    max_s: float = 30.0
    give_up_s: float = 600.0
    # Equal jitter: half the backoff is fixed, half random, so retries from many alerts
    # spread out without ever retrying immediately.
    jitter: Callable[[], float] = field(default=lambda: random.uniform(0.5, 1.0))

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        s = settings
        return cls(s.alerts_backoff_s, s.alerts_backoff_max_s, s.alerts_give_up_s)

    def delay(self, retry: int, asked_s: float | None) -> float:
        """Wait before retry number `retry` (1-based). A server's Retry-After wins: asking
        again sooner would only earn another 429."""
        if asked_s is not None:
            return asked_s
        return min(self.max_s, self.base_s * 2 ** (retry - 1)) * self.jitter()


@dataclass
class Delivery:
    ok: bool
    attempts: int
    reason: str = ""  # of the last failed attempt
    waits: list[float] = field(default_factory=list)  # the delays slept, in order


async def deliver(
    channel: Channel,
    payload: Mapping[str, Any],
    policy: RetryPolicy,
    stop: asyncio.Event | None = None,
) -> Delivery:
    """Post until delivered or given up. Raises `Interrupted` if `stop` is set while waiting."""
    started = time.monotonic()
    result = Delivery(ok=False, attempts=0)
    while True:
        attempt: Attempt = await channel.post(payload)
        result.attempts += 1
        if attempt.ok:
            result.ok = True
            return result
        result.reason = attempt.reason
        if not attempt.retriable:
            return result
        wait = policy.delay(result.attempts, attempt.retry_after_s)
        if time.monotonic() - started + wait > policy.give_up_s:
            result.reason = f"gave_up_{attempt.reason}"
            return result
        metrics.ALERTS_RETRIED.labels(channel.name, attempt.reason).inc()
        result.waits.append(wait)
        await _sleep(wait, stop)


async def _sleep(seconds: float, stop: asyncio.Event | None) -> None:
    if stop is None:
        await asyncio.sleep(seconds)
        return
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return
    raise Interrupted("stopping while a delivery waits to be retried")
