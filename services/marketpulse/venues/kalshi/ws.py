"""Kalshi's signed WebSocket: subscribe, hand every frame to the sink, watch sequence numbers.

Each connection attempt is signed afresh (the timestamp is part of the signature). The stream
subscribes to order books, trades and tickers of its markets and to market lifecycle events.
Every received frame goes to the sink first, untouched (recording, normalization, dead letters
happen there); the stream then reads the envelope only to manage subscriptions:

  * a ``seq`` gap on an order-book subscription → unsubscribe it and subscribe again, which
    makes Kalshi send a fresh snapshot of every market (the normalizer holds those books
    meanwhile); counted in ``mpx_collector_resnapshots_total{cause="seq_gap"}``;
  * a dropped connection → reconnect with exponential backoff and jitter, resubscribe, and the
    fresh snapshots rebuild the books (Kalshi has no replay cursor).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Sequence
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidHandshake, WebSocketException

from marketpulse import metrics
from marketpulse.venues.base import Frame, FrameSink
from marketpulse.venues.kalshi.auth import Credentials
from marketpulse.venues.kalshi.markets import VENUE
from marketpulse.venues.kalshi.normalize import WS_CHANNEL
from marketpulse.venues.kalshi.seq import SeqTracker, Step

log = logging.getLogger(__name__)

BOOK_CHANNEL = "orderbook_delta"
TICKER_CHANNELS = (BOOK_CHANNEL, "trade", "ticker")
LIFECYCLE_CHANNEL = "market_lifecycle_v2"  # every market: the channel takes no ticker filter


class KalshiStream:
    """One WebSocket connection (``conn_id``) for a set of market tickers."""

    def __init__(
        self,
        url: str,
        credentials: Credentials,
        sink: FrameSink,
        tickers: Sequence[str],
        *,
        conn_id: str = "kalshi-ws-0",
        lifecycle: bool = True,
        backoff_s: float = 0.5,
        backoff_cap_s: float = 30.0,
        open_timeout_s: float = 10.0,
    ) -> None:
        self.url = url
        self.conn_id = conn_id
        self._creds = credentials
        self._sink = sink
        self._tickers = list(tickers)
        self._lifecycle = lifecycle
        self._backoff = (backoff_s, backoff_cap_s)
        self._open_timeout = open_timeout_s
        self.down_since: float | None = time.monotonic()  # None while connected
        self.connects = 0
        self.reconnects = 0
        self.resubscribes = 0
        self.frames = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Stream until ``stop`` is set, reconnecting whenever the connection drops."""
        failures = 0
        while not stop.is_set():
            try:
                async with connect(
                    self.url,
                    additional_headers=self._creds.ws_headers(self.url),
                    open_timeout=self._open_timeout,
                    max_size=None,  # snapshots of deep books are large
                ) as ws:
                    self.connects += 1
                    self.down_since = None
                    frames_before = self.frames
                    try:
                        await _Session(self, ws).run(stop)
                    finally:
                        self.down_since = time.monotonic()
                    if self.frames > frames_before:
                        failures = 0  # it worked for a while: start the backoff afresh
            except (OSError, TimeoutError, InvalidHandshake, WebSocketException) as exc:
                log.warning("kalshi %s: connection failed: %s", self.conn_id, exc)
            if stop.is_set():
                break
            failures += 1
            self.reconnects += 1
            metrics.COLLECTOR_RECONNECTS.labels(VENUE, self.conn_id).inc()
            metrics.COLLECTOR_GAPS.labels(VENUE, self.conn_id, "reconnect").inc()
            base, cap = self._backoff
            delay = min(cap, base * 2 ** (failures - 1)) * random.uniform(0.5, 1.0)
            log.info("kalshi %s: reconnecting in %.2fs", self.conn_id, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)


class _Session:
    """The state of one connection: command ids, subscriptions and their sequence numbers."""

    def __init__(self, stream: KalshiStream, ws: ClientConnection) -> None:
        self._stream = stream
        self._ws = ws
        self._next_id = 0
        self._pending: dict[int, str] = {}  # command id → channel
        self._channels: dict[int, str] = {}  # sid → channel
        self._dropped: set[int] = set()  # sids being replaced: their late messages are moot
        self._seq = SeqTracker()

    async def run(self, stop: asyncio.Event) -> None:
        for channel in TICKER_CHANNELS:
            if self._stream._tickers:
                await self._subscribe(channel, self._stream._tickers)
        if self._stream._lifecycle:
            await self._subscribe(LIFECYCLE_CHANNEL, None)
        closer = asyncio.create_task(self._close_on(stop))
        try:
            async for message in self._ws:
                recv_ms = time.time_ns() // 1_000_000
                payload = message.encode() if isinstance(message, str) else message
                self._stream.frames += 1
                await self._stream._sink.frame(
                    Frame(VENUE, WS_CHANNEL, self._stream.conn_id, recv_ms, payload)
                )
                await self._inspect(payload)
        finally:
            closer.cancel()

    async def _close_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        await self._ws.close()

    async def _send(self, cmd: str, params: dict[str, Any]) -> int:
        self._next_id += 1
        await self._ws.send(json.dumps({"id": self._next_id, "cmd": cmd, "params": params}))
        return self._next_id

    async def _subscribe(self, channel: str, tickers: Sequence[str] | None) -> None:
        params: dict[str, Any] = {"channels": [channel]}
        if tickers is not None:
            params["market_tickers"] = list(tickers)
        self._pending[await self._send("subscribe", params)] = channel

    async def _inspect(self, payload: bytes) -> None:
        try:
            data = json.loads(payload)
        except ValueError:
            return  # the sink has dead-lettered it already
        if not isinstance(data, dict):
            return
        kind, sid, seq = data.get("type"), data.get("sid"), data.get("seq")
        raw_msg = data.get("msg")
        msg: dict[str, Any] = raw_msg if isinstance(raw_msg, dict) else {}
        if kind == "subscribed" and isinstance(msg.get("sid"), int):
            cmd_id = data.get("id")
            pending = self._pending.pop(cmd_id, None) if isinstance(cmd_id, int) else None
            channel = pending or str(msg.get("channel"))
            self._channels[msg["sid"]] = channel
        elif kind == "error":
            log.warning("kalshi %s: venue error %s", self._stream.conn_id, msg)
        if not isinstance(sid, int) or not isinstance(seq, int) or sid in self._dropped:
            return
        if self._seq.step(sid, seq) is Step.GAP and self._channels.get(sid) == BOOK_CHANNEL:
            await self._resubscribe(sid)

    async def _resubscribe(self, sid: int) -> None:
        log.warning(
            "kalshi %s: seq gap on book subscription %d, resubscribing", self._stream.conn_id, sid
        )
        self._dropped.add(sid)
        self._seq.forget(sid)
        self._stream.resubscribes += 1
        metrics.COLLECTOR_RESNAPSHOTS.labels(VENUE, "seq_gap").inc()
        await self._send("unsubscribe", {"sids": [sid]})
        await self._subscribe(BOOK_CHANNEL, self._stream._tickers)
