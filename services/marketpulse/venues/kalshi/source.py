"""The live Kalshi venue: discover markets over REST, then stream them over the WebSocket.

Discovery walks ``/series/{ticker}`` and ``/events?with_nested_markets=true&status=open`` (per
followed series, or every open event) with cursor pagination; every page is a frame, so the
normalizer publishes each market from it. The active markets' tickers (capped by
``kalshi_max_markets``) are then streamed by one signed WebSocket connection.

While the WebSocket has been down for ``kalshi_fallback_after_s``, order books are polled over
REST instead, round robin within the read budget, until it is back.

Every ``kalshi_reconcile_s`` discovery runs again: changed, closed and settled markets are
republished from the fresh pages, and when the set of active markets changed the connection is
reopened with the new set (its fresh snapshots rebuild every book).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any

import httpx

from marketpulse import metrics
from marketpulse.errors import TransientError
from marketpulse.settings import Settings
from marketpulse.venues.base import FrameSink
from marketpulse.venues.kalshi.auth import Credentials
from marketpulse.venues.kalshi.rest import KalshiRest
from marketpulse.venues.kalshi.ws import KalshiStream

log = logging.getLogger(__name__)


class KalshiSource:
    venue = "kalshi"

    def __init__(
        self,
        settings: Settings,
        sink: FrameSink,
        *,
        tickers: Sequence[str] | None = None,
        rest: KalshiRest | None = None,
        credentials: Credentials | None = None,
    ) -> None:
        """``tickers`` skips discovery (and reconciliation) and streams exactly those markets."""
        self.settings = settings
        self._sink = sink
        self._tickers = list(tickers) if tickers else None
        self._rest = rest
        self._creds = credentials
        self.streams: list[KalshiStream] = []

    async def discover(self) -> list[str]:
        """Tickers of the active markets of the followed series (or of every open event)."""
        rest = self._rest_client()
        tickers: list[str] = []
        followed: list[str | None] = list(self.settings.kalshi_series) or [None]
        for series in followed:
            params: dict[str, Any] = {"status": "open", "with_nested_markets": "true"}
            if series is not None:
                await rest.get(f"/series/{series}")
                params["series_ticker"] = series
            async for page in rest.pages("/events", params):
                tickers.extend(_active_tickers(page))
        cap = self.settings.kalshi_max_markets
        if cap and len(tickers) > cap:
            log.warning("kalshi: %d active markets, streaming the first %d", len(tickers), cap)
            tickers = tickers[:cap]
        return tickers

    async def run(self, stop: asyncio.Event) -> dict[str, Any]:
        """Discover (unless tickers were given), then stream until ``stop``; returns counts.
        Missing credentials raise ConfigError before any network access."""
        creds = self._creds or Credentials.from_settings(self.settings)
        try:
            tickers = self._tickers if self._tickers is not None else await self.discover()
            while not stop.is_set():
                log.info("kalshi: streaming %d markets", len(tickers))
                stream = KalshiStream(self.settings.kalshi_ws_url, creds, self._sink, tickers)
                self.streams.append(stream)
                tickers = await self._stream_until_changed(stream, tickers, stop)
        finally:
            if self._rest is not None:
                await self._rest.aclose()
        return {
            "markets": len(tickers),
            "frames": sum(s.frames for s in self.streams),
            "reconnects": sum(s.reconnects for s in self.streams),
            "resubscribes": sum(s.resubscribes for s in self.streams),
            "restreams": len(self.streams) - 1,
        }

    async def _stream_until_changed(
        self, stream: KalshiStream, tickers: list[str], stop: asyncio.Event
    ) -> list[str]:
        """Run ``stream`` until ``stop``, or until re-discovery finds another set of markets
        (returned; the stream is closed first)."""
        period = self.settings.kalshi_reconcile_s
        reconcile = self._tickers is None and period > 0
        stream_stop = asyncio.Event()
        task = asyncio.create_task(stream.run(stream_stop))
        fallback = asyncio.create_task(self._rest_books_while_down(stream, tickers, stream_stop))
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), period if reconcile else None)
                if stop.is_set() or task.done():
                    return tickers
                try:
                    found = await self.discover()
                except (TransientError, httpx.HTTPError) as exc:
                    log.warning("kalshi: re-discovery failed (%s); streaming on", exc)
                    continue
                if set(found) != set(tickers):
                    log.info("kalshi: market set changed (%d → %d)", len(tickers), len(found))
                    return found
        finally:
            stream_stop.set()
            await task
            await fallback

    async def _rest_books_while_down(
        self, stream: KalshiStream, tickers: list[str], stop: asyncio.Event
    ) -> None:
        """Poll REST order books, round robin, whenever ``stream`` has been down too long."""
        after = self.settings.kalshi_fallback_after_s
        if after <= 0 or not tickers:
            return
        rest, turn = self._rest_client(), 0
        while not stop.is_set():
            down = stream.down_since
            if down is None or time.monotonic() - down < after:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), min(after, 1.0))
                continue
            ticker = tickers[turn % len(tickers)]
            turn += 1
            try:
                await rest.orderbook(ticker)  # the budget paces this loop
                metrics.COLLECTOR_RESNAPSHOTS.labels("kalshi", "ws_down").inc()
            except (TransientError, httpx.HTTPError) as exc:
                log.warning(
                    "kalshi: REST book of %s failed while the stream is down: %s", ticker, exc
                )

    def _rest_client(self) -> KalshiRest:
        if self._rest is None:
            self._rest = KalshiRest(self.settings, self._sink)
        return self._rest


def _active_tickers(page: dict[str, Any]) -> list[str]:
    out = []
    for event in page.get("events") or []:
        for market in (event.get("markets") if isinstance(event, dict) else None) or []:
            if isinstance(market, dict) and market.get("status") in ("active", "open"):
                ticker = market.get("ticker")
                if isinstance(ticker, str) and ticker:
                    out.append(ticker)
    return out
