"""The live Polymarket venue: discovery, the market channel, REST snapshots and trades, as
concurrent tasks sharing one rate limiter and delivering every frame to one pipeline.

Startup: Gamma discovery first (so markets are published before their books and the WebSocket
knows what to follow), then the tasks. Every ``reconcile_s`` discovery runs again: new markets
join the WebSocket, closed ones leave it, and active markets that vanished from the open listing
are re-read by id to publish how they closed or resolved.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from marketpulse.errors import ConfigError, MarketPulseError
from marketpulse.frames import FramePipeline
from marketpulse.settings import Settings
from marketpulse.venues.polymarket import VENUE, gamma
from marketpulse.venues.polymarket.normalize import PolymarketNormalizer
from marketpulse.venues.polymarket.ratelimit import VenueHttp
from marketpulse.venues.polymarket.rest import BookSnapshots, closest_first
from marketpulse.venues.polymarket.trades import Boundary, TradesPoller
from marketpulse.venues.polymarket.ws import MarketChannel

log = logging.getLogger(__name__)


class PolymarketSource:
    venue = VENUE

    def __init__(
        self,
        settings: Settings,
        pipeline: FramePipeline,
        *,
        http: VenueHttp | None = None,
        trades: bool = True,
        snapshots: bool = True,
    ) -> None:
        self.settings = settings
        self.pipeline = pipeline
        norm = pipeline.normalizer(VENUE)
        if not isinstance(norm, PolymarketNormalizer):
            raise ConfigError(f"the pipeline's polymarket normalizer is a {type(norm).__name__}")
        self.norm = norm
        self.http = http or VenueHttp()
        self.channel = MarketChannel(
            settings.polymarket_ws_url,
            pipeline,
            shard_size=settings.polymarket_ws_shard_size,
            ping_s=settings.polymarket_ws_ping_s,
            stagger_s=settings.polymarket_ws_stagger_s,
        )
        self.snapshots = BookSnapshots(
            self.http, settings.polymarket_clob_url, pipeline, norm, down=self.channel.down
        )
        self.trades = TradesPoller(
            self.http,
            settings.polymarket_data_url,
            pipeline,
            Boundary(settings.collector_state_dir / "polymarket_trades.json"),
            page=settings.polymarket_trades_page,
            poll_s=settings.polymarket_trades_poll_s,
        )
        self._with_trades = trades
        self._with_snapshots = snapshots

    async def reconcile(self) -> None:
        """Discover, publish what changed, and make the WebSocket follow the active tokens."""
        started_ms = time.time_ns() // 1_000_000
        await gamma.discover(self.http, self.settings.polymarket_gamma_url, self.pipeline)
        vanished = [
            mid.removeprefix("pm:")
            for mid, m in self.norm.markets.items()
            if m["status"] == "active" and self.norm.gamma_seen_ms.get(mid, 0) < started_ms
        ]
        if vanished:
            await gamma.fetch_markets(
                self.http, self.settings.polymarket_gamma_url, self.pipeline, vanished
            )
        follow = closest_first(
            list(self.norm.markets.values()),
            time.time_ns() // 1_000_000,
            self.settings.polymarket_ws_max_assets,
        )
        await self.channel.set_assets(follow)

    async def run(self, stop: asyncio.Event) -> None:
        await self.reconcile()
        tasks = [
            asyncio.create_task(self.channel.run(stop)),
            asyncio.create_task(self._reconcile(stop)),
        ]
        if self._with_snapshots:
            tasks.append(asyncio.create_task(self.snapshots.run(stop)))
        if self._with_trades:
            tasks.append(asyncio.create_task(self.trades.run(stop)))
        try:
            await stop.wait()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.http.aclose()

    async def _reconcile(self, stop: asyncio.Event) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.polymarket_reconcile_s)
            if stop.is_set():
                return
            try:
                await self.reconcile()
            except MarketPulseError as exc:
                log.warning("polymarket reconciliation: %s", exc)
            except Exception:  # the next period tries again
                log.exception("polymarket reconciliation failed")
