"""The collector: reads a venue and publishes normalized markets, books and ticks to Kafka.

Markets go to the compacted markets topic keyed by market id, all of them first (and flushed), so
a consumer that starts with the stream already knows every market. Books and ticks follow, keyed
by event key so that every outcome of an event lands in one partition. The producer is idempotent
with acks=all, so a retried batch never duplicates a message.

Venues plug in as a ``Source`` (``markets()`` and ``updates()``) registered in ``SOURCES`` (the
mock), or as a frame source registered in ``FRAME_SOURCES`` (Polymarket, Kalshi, a replayed
recording): those deliver raw frames to a ``marketpulse.frames.FramePipeline``, which records,
normalizes and produces them (``run_frames``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import signal
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError
from aiokafka.partitioner import DefaultPartitioner

from marketpulse import kafka, metrics
from marketpulse.codec import codec
from marketpulse.errors import ConfigError, TransientError

# The frame pipeline lives in marketpulse.frames; these names stay importable from here.
from marketpulse.frames import (  # noqa: F401
    NORMALIZERS,
    FramePipeline,
    collector_health,
    forget_shard,
    frame_to_json,
    note_shard,
)
from marketpulse.settings import Settings

if TYPE_CHECKING:
    from aiokafka.producer.message_accumulator import BatchBuilder

log = logging.getLogger(__name__)

Record = dict[str, Any]

CHUNK_UPDATES = 500  # updates encoded and handed to the producer per loop turn
MAX_UNACKED = 8000  # messages awaiting the broker's ack before the loop waits for the oldest
PACE_SLICE_S = 0.01  # the pacer releases at least this much of a second's budget at once
PACE_BURST_S = 0.1  # and never more than this, so a stall is not followed by a flood
PROGRESS_EVERY_S = 5.0


class Source(Protocol):
    """A venue as the collector sees it. ``updates()`` yields (book, tick) records forever (or
    until the venue ends); the collector sets their ``recv_ms``. A source may also offer
    ``count_opportunities(n_updates) -> int`` (ground truth of injected opportunities)."""

    venue: str

    def markets(self) -> list[Record]: ...

    def updates(self) -> Iterator[tuple[Record, Record]]: ...


def _mock(
    *, seed: int, n_events: int, n_binaries: int, start_ms: int | None, step_ms: float | None
) -> Source:
    from marketpulse.venues.mock import STEP_MS, MockVenue

    return MockVenue(
        seed=seed,
        n_events=n_events,
        n_binaries=n_binaries,
        start_ms=start_ms,
        step_ms=STEP_MS if step_ms is None else step_ms,
    )


# Real venues (Polymarket, Kalshi, recorded captures) register a factory here.
SOURCES: dict[str, Callable[..., Source]] = {"mock": _mock}


def open_source(name: str, **options: Any) -> Source:
    """The source called ``name``; a ConfigError lists the valid ones."""
    factory = SOURCES.get(name)
    if factory is None:
        raise ConfigError(f"unknown source {name!r}; valid sources: {', '.join(sorted(SOURCES))}")
    return factory(**options)


class _Pacer:
    """Token bucket on an absolute schedule: ``rate`` updates per second on average, released in
    slices of at least PACE_SLICE_S worth (no sleep per message), bursts capped at PACE_BURST_S
    worth. ``rate`` None (or <= 0) releases everything at once."""

    def __init__(self, rate: float | None, stop: asyncio.Event) -> None:
        self._rate = rate if rate is not None and rate > 0 else None
        self._stop = stop
        self._slice = max(1.0, (rate or 0) * PACE_SLICE_S)
        self._burst = max(self._slice, (rate or 0) * PACE_BURST_S)
        self._tokens = 0.0
        self._last = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * (self._rate or 0))
        self._last = now

    async def grant(self, want: int) -> int:
        """How many updates may go now (at most ``want``); 0 only when stopped."""
        if self._rate is None:
            return want
        self._refill()
        if self._tokens < min(self._slice, want):
            wait = (min(self._slice, want) - self._tokens) / self._rate
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), wait)  # wakes early on stop
            if self._stop.is_set():
                return 0
            self._refill()
        granted = min(want, int(self._tokens))
        self._tokens -= granted
        return granted


class _Progress:
    """Periodic INFO line with counts and throughput."""

    def __init__(self, venue: str) -> None:
        self._venue = venue
        self._last_at = time.monotonic()
        self._last_events = 0

    def maybe_log(self, updates: int) -> None:
        now = time.monotonic()
        if now - self._last_at < PROGRESS_EVERY_S:
            return
        events = 2 * updates
        rate = (events - self._last_events) / (now - self._last_at)
        log.info(
            "collector venue=%s updates=%d events=%d rate=%.0f events/s",
            self._venue,
            updates,
            events,
            rate,
        )
        self._last_at, self._last_events = now, events


class _Router:
    """Key bytes and partitions of each event key, computed once per key: the producer's
    default partitioner (murmur2, as in Java clients) would hash every message again, and that
    is a tenth of the collector's time. Same partitions as the default, so consumers that
    co-partition with the Java rule still agree."""

    def __init__(self, books: list[int], ticks: list[int]) -> None:
        self._books, self._ticks = books, ticks
        self._choose = DefaultPartitioner()
        self._routes: dict[str, tuple[bytes, int, int]] = {}

    @classmethod
    async def for_topics(cls, prod: AIOKafkaProducer, books: str, ticks: str) -> _Router:
        return cls(
            sorted(await prod.partitions_for(books)), sorted(await prod.partitions_for(ticks))
        )

    def __call__(self, event_key: str) -> tuple[bytes, int, int]:
        route = self._routes.get(event_key)
        if route is None:
            key = event_key.encode()
            route = (
                key,
                self._choose(key, self._books, self._books),
                self._choose(key, self._ticks, self._ticks),
            )
            self._routes[event_key] = route
        return route


async def _settle(futures: list[asyncio.Future[Any]]) -> None:
    """Wait for the broker's acknowledgements; a failed send raises here."""
    if futures:
        await asyncio.gather(*futures)


async def publish_markets(prod: AIOKafkaProducer, settings: Settings, source: Source) -> int:
    """Every market record, keyed by market id, acknowledged before returning."""
    topic, encode = settings.topic("markets"), codec().encode
    futures = [
        await prod.send(topic, encode("market", m), key=m["market_id"].encode())
        for m in source.markets()
    ]
    await _settle(futures)
    metrics.EVENTS_PRODUCED.labels(source.venue, "markets").inc(len(futures))
    return len(futures)


async def stream_updates(
    prod: AIOKafkaProducer,
    settings: Settings,
    source: Source,
    *,
    rate: float | None,
    max_updates: int | None,
    deadline: float | None,
    stop: asyncio.Event,
) -> int:
    """Book and tick of each update, keyed by event key, until a limit or ``stop``; returns the
    number of updates sent (each is one book and one tick)."""
    books, ticks, encode = settings.topic("books"), settings.topic("ticks"), codec().encode
    produced_books = metrics.EVENTS_PRODUCED.labels(source.venue, "books")
    produced_ticks = metrics.EVENTS_PRODUCED.labels(source.venue, "ticks")
    pacer, progress = _Pacer(rate, stop), _Progress(source.venue)
    route = await _Router.for_topics(prod, books, ticks)
    updates = source.updates()
    in_flight: deque[tuple[list[asyncio.Future[Any]], int]] = deque()
    unacked = sent = 0
    while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
        want = CHUNK_UPDATES if max_updates is None else min(CHUNK_UPDATES, max_updates - sent)
        if want <= 0:
            break
        granted = await pacer.grant(want)
        batches = _Batches(prod)
        for book, tick in itertools.islice(updates, granted):
            book["recv_ms"] = tick["recv_ms"] = time.time_ns() // 1_000_000
            key, book_partition, tick_partition = route(book["event_key"])
            batches.add(books, book_partition, key, encode("book", book))
            batches.add(ticks, tick_partition, key, encode("tick", tick))
        n = batches.messages // 2
        in_flight.append((await batches.ship(), batches.messages))
        unacked += batches.messages
        # Wait for acks only when too many are outstanding, so pacing slices and batches overlap
        # with the broker's round trips instead of taking turns with them.
        while unacked > MAX_UNACKED:
            futures, messages = in_flight.popleft()
            await _settle(futures)
            unacked -= messages
        sent += n
        produced_books.inc(n)
        produced_ticks.inc(n)
        progress.maybe_log(sent)
        if n < granted:
            break  # the source has ended
    for futures, _ in in_flight:
        await _settle(futures)
    return sent


class _Batches:
    """One loop turn's messages, grouped into the producer's per-partition record batches.

    ``send_batch`` skips the per-message future and accumulator work of ``send()`` (about 5x
    less CPU per message, the collector's largest cost after Avro). The batches still get the
    idempotent producer's id and sequence numbers when the sender drains them, so a retry never
    duplicates them, and acks=all applies as for any produce request.
    """

    def __init__(self, prod: AIOKafkaProducer) -> None:
        self._prod = prod
        self._open: dict[tuple[str, int], BatchBuilder] = {}
        self._full: list[tuple[str, int, BatchBuilder]] = []
        self.messages = 0

    def add(self, topic: str, partition: int, key: bytes, value: bytes) -> None:
        builder = self._open.get((topic, partition))
        if builder is None:
            builder = self._open[topic, partition] = self._prod.create_batch()
        # timestamp=None: the broker-side timestamp is the send time, like send() does.
        if builder.append(key=key, value=value, timestamp=None) is None:  # batch full
            self._full.append((topic, partition, builder))
            builder = self._open[topic, partition] = self._prod.create_batch()
            builder.append(key=key, value=value, timestamp=None)  # a new batch takes any one
        self.messages += 1

    async def ship(self) -> list[asyncio.Future[Any]]:
        """Queue every batch for sending; each future resolves when the broker acked it."""
        batches = [*self._full, *((t, p, b) for (t, p), b in self._open.items())]
        return [await self._prod.send_batch(b, t, partition=p) for t, p, b in batches]


@contextlib.contextmanager
def _stop_on_sigterm(stop: asyncio.Event) -> Iterator[None]:
    """SIGTERM sets ``stop`` (graceful: flush, then return) unless someone else owns SIGTERM."""
    loop = asyncio.get_running_loop()
    installed = False
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        try:
            loop.add_signal_handler(signal.SIGTERM, stop.set)
            installed = True
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # not the main thread, or no signal support on this platform
    try:
        yield
    finally:
        if installed:
            loop.remove_signal_handler(signal.SIGTERM)


async def run(
    settings: Settings,
    *,
    source: str = "mock",
    seed: int = 7,
    n_events: int = 12,
    n_binaries: int = 8,
    rate: float | None = 200.0,
    max_updates: int | None = None,
    duration: float | None = None,
    stop: asyncio.Event | None = None,
    start_ms: int | None = None,
    step_ms: float | None = None,
) -> dict[str, Any]:
    """Publish every market, then stream books and ticks at ``rate`` updates/s (None or 0: as
    fast as possible) until ``max_updates``, ``duration`` seconds, ``stop`` or SIGTERM (which
    end the run normally, after a flush); returns counts. Cancellation also flushes.
    ``step_ms`` is the mock's event time per update (its default when None); ``1000 / rate``
    makes event time run with the wall clock."""
    src = open_source(
        source,
        seed=seed,
        n_events=n_events,
        n_binaries=n_binaries,
        start_ms=start_ms,
        step_ms=step_ms,
    )
    stop = stop or asyncio.Event()
    started = time.monotonic()
    deadline = None if duration is None else started + duration
    prod = kafka.producer(settings)
    n_markets = n_updates = 0
    try:
        await _start(prod, settings)
        with _stop_on_sigterm(stop):
            n_markets = await publish_markets(prod, settings, src)
            log.info("collector venue=%s published %d markets", src.venue, n_markets)
            n_updates = await stream_updates(
                prod,
                settings,
                src,
                rate=rate,
                max_updates=max_updates,
                deadline=deadline,
                stop=stop,
            )
    finally:
        await prod.stop()  # flushes whatever is still buffered, also on cancellation
    stats = _stats(src, n_markets, n_updates, time.monotonic() - started)
    log.info("collector done %s", stats)
    return stats


async def _start(prod: AIOKafkaProducer, settings: Settings) -> None:
    try:
        await prod.start()
    except KafkaConnectionError as exc:
        raise TransientError(f"Kafka at {settings.kafka_bootstrap} is unreachable: {exc}") from exc


def _stats(src: Source, n_markets: int, n_updates: int, elapsed: float) -> dict[str, Any]:
    count = getattr(src, "count_opportunities", None)
    return {
        "markets": n_markets,
        "books": n_updates,
        "ticks": n_updates,
        "events": 2 * n_updates,
        "opportunities": count(n_updates) if count else 0,
        "elapsed_s": round(elapsed, 3),
    }


# ----------------------------------------------------------------------------------------------
# Frame sources: the live venues and recordings, all through one FramePipeline
# ----------------------------------------------------------------------------------------------

FrameRunner = Callable[
    [Settings, FramePipeline, "str | None", "float | None", asyncio.Event],
    Awaitable[dict[str, Any]],
]


async def _polymarket(
    settings: Settings,
    pipe: FramePipeline,
    arg: str | None,
    speed: float | None,
    stop: asyncio.Event,
) -> dict[str, Any]:
    from marketpulse.venues.polymarket.source import PolymarketSource

    await PolymarketSource(settings, pipe).run(stop)
    return {}


async def _kalshi(
    settings: Settings,
    pipe: FramePipeline,
    arg: str | None,
    speed: float | None,
    stop: asyncio.Event,
) -> dict[str, Any]:
    from marketpulse.venues.kalshi.source import KalshiSource

    return await KalshiSource(settings, pipe).run(stop)


async def _replay(
    settings: Settings,
    pipe: FramePipeline,
    arg: str | None,
    speed: float | None,
    stop: asyncio.Event,
) -> dict[str, Any]:
    from marketpulse.venues.kalshi import KalshiNormalizer
    from marketpulse.venues.replay import kalshi_gap_policy, replay

    if not arg or not Path(arg).is_file():
        raise ConfigError(f"replay needs an existing recording: --source replay:PATH (got {arg!r})")
    # A Kalshi capture is one ticker cut out of a shared subscription: its seq gaps are expected.
    policy = kalshi_gap_policy(arg)
    pipe.use(KalshiNormalizer(depth=settings.collector_book_depth, gap_policy=policy))
    return await replay(arg, pipe, speed, stop=stop)


# name -> runner; "replay" takes its file after a colon (replay:PATH).
FRAME_SOURCES: dict[str, FrameRunner] = {
    "polymarket": _polymarket,
    "kalshi": _kalshi,
    "replay": _replay,
}


def source_names() -> list[str]:
    return [*sorted({*SOURCES, *FRAME_SOURCES} - {"replay"}), "replay:FILE"]


async def run_frames(
    settings: Settings,
    source: str,
    *,
    speed: float | None = None,
    record: Path | None = None,
    raw_topic: bool = False,
    duration: float | None = None,
    stop: asyncio.Event | None = None,
) -> dict[str, Any]:
    """Run a frame source (``polymarket``, ``kalshi``, ``replay:PATH``) through a FramePipeline
    until it ends, ``duration`` passes, ``stop`` or SIGTERM; flushes and returns counts."""
    name, _, arg = source.partition(":")
    runner = FRAME_SOURCES.get(name)
    if runner is None:
        raise ConfigError(f"unknown source {source!r}; valid sources: {', '.join(source_names())}")
    stop = stop or asyncio.Event()
    started = time.monotonic()
    prod = kafka.producer(settings)
    await _start(prod, settings)
    pipe = FramePipeline(
        settings, prod, record=record, raw_topic=raw_topic, observe_lag=name != "replay"
    )
    timer = None
    if duration is not None:
        timer = asyncio.get_running_loop().call_later(duration, stop.set)
    try:
        with _stop_on_sigterm(stop):
            details = await runner(settings, pipe, arg or None, speed, stop)
        await pipe.flush()
    finally:
        if timer is not None:
            timer.cancel()
        pipe.close()
        await prod.stop()
    stats = {
        "source": source,
        "frames": pipe.frames,
        "rejected": pipe.rejected,
        "send_errors": pipe.send_errors,
        "produced": dict(pipe.produced),
        "elapsed_s": round(time.monotonic() - started, 3),
        "details": details,
    }
    log.info("collector done %s", stats)
    return stats
