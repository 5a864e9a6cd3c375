"""The CLOB WebSocket market channel, sharded.

Each shard is one connection following at most ``shard_size`` asset ids (the venue serves no more
than 500 per connection). Shards open one after another (``stagger_s`` apart: many connections at
once draw 429s), send ``PING`` every ``ping_s`` (the server answers ``PONG``), and reconnect after
any failure with exponential backoff and jitter. The channel has no replay cursor, so a reconnect
is a gap: it is counted, the shard resubscribes, and the server's first reply (fresh ``book``
snapshots of every asset) rebuilds the books. Assets join and leave running shards through the
``subscribe`` / ``unsubscribe`` operations as markets appear and close.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from dataclasses import dataclass, field

import websockets
from websockets.asyncio.client import ClientConnection

from marketpulse import metrics
from marketpulse.frames import forget_shard, note_shard
from marketpulse.venues.base import Frame, FrameSink
from marketpulse.venues.polymarket import VENUE

log = logging.getLogger(__name__)

CHANNEL = "ws:market"
BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0


@dataclass(eq=False)
class Shard:
    id: str
    index: int
    assets: set[str] = field(default_factory=set)
    ws: ClientConnection | None = None
    connects: int = 0
    task: asyncio.Task[None] | None = None


class MarketChannel:
    """Every asset the collector follows, spread over shards; ``set_assets`` changes the set
    while running. ``down()`` lists the assets whose shard is disconnected (REST covers them)."""

    def __init__(
        self,
        url: str,
        sink: FrameSink,
        *,
        shard_size: int = 500,
        ping_s: float = 10.0,
        stagger_s: float = 0.5,
        backoff_s: float = BACKOFF_S,
        max_backoff_s: float = MAX_BACKOFF_S,
    ) -> None:
        self.url = url
        self.sink = sink
        self.shard_size = shard_size
        self.ping_s = ping_s
        self.stagger_s = stagger_s
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.shards: list[Shard] = []
        self._next_index = 0
        self._stop = asyncio.Event()
        self._started = False

    # -- membership ----------------------------------------------------------------------------

    async def set_assets(self, assets: list[str]) -> None:
        """Follow exactly ``assets``: new ones fill shards with room (a live subscribe) or new
        shards; gone ones are unsubscribed; a shard left empty is closed."""
        wanted = dict.fromkeys(assets)
        current = {a for s in self.shards for a in s.assets}
        for shard in list(self.shards):
            gone = [a for a in shard.assets if a not in wanted]
            if gone:
                shard.assets.difference_update(gone)
                await self._send_op(shard, "unsubscribe", gone)
            if not shard.assets:
                await self._close_shard(shard)
        new = [a for a in wanted if a not in current]
        for shard in self.shards:
            room = self.shard_size - len(shard.assets)
            if room > 0 and new:
                batch, new = new[:room], new[room:]
                shard.assets.update(batch)
                await self._send_op(shard, "subscribe", batch)
        while new:
            batch, new = new[: self.shard_size], new[self.shard_size :]
            self._add_shard(set(batch))

    def down(self) -> set[str]:
        return {a for s in self.shards if s.ws is None for a in s.assets}

    def _add_shard(self, assets: set[str]) -> None:
        shard = Shard(f"pm-ws-{self._next_index}", self._next_index, assets)
        self._next_index += 1
        self.shards.append(shard)
        note_shard(VENUE, shard.id)
        if self._started:
            delay = self.stagger_s * sum(1 for s in self.shards if s.connects == 0)
            shard.task = asyncio.create_task(self._run_shard(shard, delay), name=shard.id)

    async def _close_shard(self, shard: Shard) -> None:
        self.shards.remove(shard)
        forget_shard(VENUE, shard.id)
        if shard.task is not None:
            shard.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await shard.task

    async def _send_op(self, shard: Shard, op: str, assets: list[str]) -> None:
        if shard.ws is None:
            return  # the next (re)connect subscribes the shard's current set
        with contextlib.suppress(websockets.ConnectionClosed):
            await shard.ws.send(json.dumps({"operation": op, "assets_ids": assets}))

    # -- running -------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Run every shard until ``stop``."""
        self._stop = stop
        self._started = True
        for i, shard in enumerate(self.shards):
            if shard.task is None:
                shard.task = asyncio.create_task(self._run_shard(shard, i * self.stagger_s))
        try:
            await stop.wait()
        finally:
            tasks = [s.task for s in self.shards if s.task is not None]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _run_shard(self, shard: Shard, delay: float) -> None:
        if await self._sleep(delay):
            return
        failures = 0
        while not self._stop.is_set():
            try:
                await self._session(shard)
                failures = 0  # the server ended a healthy session: reconnect at once
            except (OSError, TimeoutError, websockets.WebSocketException) as exc:
                failures += 1
                log.warning("polymarket %s: %s (attempt %d)", shard.id, exc, failures)
            except Exception:  # e.g. the broker refusing: the shard must not die silently
                failures += 1
                log.exception("polymarket %s: session failed (attempt %d)", shard.id, failures)
            if self._stop.is_set():
                return
            wait = min(self.max_backoff_s, self.backoff_s * 2 ** max(0, failures - 1))
            if await self._sleep(wait * (0.5 + random.random() / 2)):
                return

    async def _session(self, shard: Shard) -> None:
        async with websockets.connect(
            self.url, ping_interval=None, max_size=None, open_timeout=10, close_timeout=2
        ) as ws:
            subscribe = {"type": "market", "assets_ids": sorted(shard.assets)}
            await ws.send(json.dumps({**subscribe, "custom_feature_enabled": True}))
            if shard.connects:
                # No replay cursor: whatever happened while away is lost; the snapshots that
                # follow the subscription rebuild the books.
                metrics.COLLECTOR_RECONNECTS.labels(VENUE, shard.id).inc()
                metrics.COLLECTOR_GAPS.labels(VENUE, shard.id, "reconnect").inc()
            shard.connects += 1
            shard.ws = ws
            pinger = asyncio.create_task(self._ping(ws))
            try:
                async for message in ws:
                    now = time.time_ns() // 1_000_000
                    payload = message.encode() if isinstance(message, str) else bytes(message)
                    if payload == b"PONG":
                        note_shard(VENUE, shard.id, now)  # alive, even when the market is quiet
                        continue
                    await self.sink.frame(Frame(VENUE, CHANNEL, shard.id, now, payload))
            finally:
                shard.ws = None
                pinger.cancel()

    async def _ping(self, ws: ClientConnection) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            while True:
                await asyncio.sleep(self.ping_s)
                await ws.send("PING")

    async def _sleep(self, seconds: float) -> bool:
        """Sleep unless stopped first; True when stopped."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)
        return self._stop.is_set()
