"""Speed of the venue collector alone, on recorded frames.

``bench_collector`` replays real Polymarket market-channel traffic (the recorded fixtures in
``../shared/fixtures/real/polymarket``, cycled: current-format ``price_change`` deltas, full-depth
``book`` snapshots, ``last_trade_price``) through a FramePipeline into the real broker: JSON parse
-> normalize (order books kept, checked against the venue's best bid/ask) -> Avro -> produce,
acknowledged. It then produces the very same pre-serialized records with a bare producer, and
reports both rates and their ratio. The Polymarket firehose is estimated at 250-500 messages/s
(VENUES.md); ``firehose_multiple`` says how many such firehoses one process keeps up with.
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any

from marketpulse import kafka
from marketpulse.errors import ConfigError
from marketpulse.frames import FramePipeline
from marketpulse.settings import Settings
from marketpulse.venues.base import Frame
from marketpulse.venues.polymarket.normalize import PolymarketNormalizer

FIREHOSE_MSGS_S = 500  # the top of VENUES.md's 250-500 messages/s estimate


def default_fixtures() -> Path:
    return (
        Path(__file__).resolve().parents[3] / ".." / "shared" / "fixtures" / "real" / "polymarket"
    )


def recorded_frames(fixtures: Path, n: int) -> tuple[list[Frame], int]:
    """``n`` market-channel frames cycled from the real captures (timestamps moved forward so
    every frame is newer than the last), and the number of venue messages they hold."""
    ws = fixtures / "ws"
    if not ws.is_dir():
        raise ConfigError(f"recorded Polymarket frames not found in {ws}")
    capture = json.loads((ws / "polyarb_ws_market_capture.json").read_bytes())
    snapshot, deltas = capture[0], capture[1:]
    books = [
        json.loads(x)
        for x in (ws / "ssmd_polymarket_book.jsonl").read_bytes().splitlines()
        if x.strip()
    ]
    trades = [
        json.loads(x)
        for x in (ws / "ssmd_polymarket_last_trade_price.jsonl").read_bytes().splitlines()
        if x.strip()
    ]
    cycle: list[Any] = [*deltas, *books, *trades]
    frames = [Frame("polymarket", "ws:market", "bench", 0, json.dumps(snapshot).encode())]
    messages = len(snapshot)
    ts = 1_800_000_000_000
    for i, msg in enumerate(itertools.islice(itertools.cycle(cycle), n - 1)):
        ts += 1
        msg = {**msg, "timestamp": str(ts)}
        frames.append(Frame("polymarket", "ws:market", "bench", i, json.dumps(msg).encode()))
        messages += 1
    return frames, messages


async def bench_collector(
    settings: Settings, *, frames: int = 50_000, fixtures: Path | None = None
) -> dict[str, Any]:
    """Normalized events/s of one collector process on recorded frames, against a bare producer
    of the same bytes. ``settings.topic_prefix`` should be fresh (topics are created)."""
    batch, n_messages = recorded_frames(fixtures or default_fixtures(), frames)
    await kafka.create_topics(settings)

    # Dry run: what the pipeline will produce, serialized, for the bare-producer baseline.
    dry = PolymarketNormalizer(depth=settings.collector_book_depth)
    pre = FramePipeline(settings, prod=None, normalizers={"polymarket": dry})  # type: ignore[arg-type]
    serialized = [pre.encode(out) for f in batch for out in dry.normalize(f)]

    prod = kafka.producer(settings)
    await prod.start()
    try:
        pipe = FramePipeline(
            settings,
            prod,
            normalizers={"polymarket": PolymarketNormalizer(depth=settings.collector_book_depth)},
        )
        wall, cpu = time.perf_counter(), time.process_time()
        for f in batch:
            await pipe.frame(f)
        await pipe.flush()
        coll_wall, coll_cpu = time.perf_counter() - wall, time.process_time() - cpu
        events = sum(pipe.produced.values())

        wall, cpu = time.perf_counter(), time.process_time()
        for topic, key, value in serialized:
            await prod.send(topic, value, key=key)
        await prod.flush()
        bare_wall, bare_cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        await prod.stop()
    if pipe.rejected or events != len(serialized):
        raise AssertionError(f"bench stream not clean: {pipe.rejected} rejected, {events} events")
    collector_eps = events / coll_wall
    bare_eps = len(serialized) / bare_wall
    msgs_per_s = n_messages / coll_wall
    return {
        "frames": len(batch),
        "venue_messages": n_messages,
        "events": events,
        "collector_events_per_s": round(collector_eps),
        "collector_messages_per_s": round(msgs_per_s),
        "collector_cpu_s": round(coll_cpu, 3),
        "collector_wall_s": round(coll_wall, 3),
        "bare_producer_events_per_s": round(bare_eps),
        "bare_producer_cpu_s": round(bare_cpu, 3),
        "ratio_to_bare_producer": round(collector_eps / bare_eps, 3),
        "firehose_multiple": round(msgs_per_s / FIREHOSE_MSGS_S, 1),
        # Per second of this process's CPU: the one-core figure, whatever else shares the machine
        # (the broker runs on the same cores in a local bench).
        "collector_events_per_cpu_s": round(events / coll_cpu),
        "firehose_multiple_per_cpu_s": round(n_messages / coll_cpu / FIREHOSE_MSGS_S, 1),
    }
