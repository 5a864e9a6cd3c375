"""Replay of recordings (the collector's JSONL and the Kalshi capture format) into a FrameSink."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from pathlib import Path

import pytest

from marketpulse.collect import frame_to_json
from marketpulse.errors import ConfigError
from marketpulse.venues.base import Frame
from marketpulse.venues.replay import CAPTURE_CONN, kalshi_gap_policy, replay


class ListSink:
    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.times: list[float] = []

    async def frame(self, frame: Frame) -> None:
        self.frames.append(frame)
        self.times.append(time.monotonic())


FRAMES = [
    Frame("kalshi", "ws:kalshi", "kalshi-ws-0", 1_000, b'{"type":"ok"}'),
    Frame("polymarket", "ws:market", "pm-ws-1", 1_150, '{"é":1}'.encode()),
    Frame("kalshi", "rest:kalshi/markets", "kalshi-rest", 1_300, b"\xff\xfe not utf-8"),
]


def write_recording(path: Path) -> None:
    path.write_text("".join(frame_to_json(f) + "\n" for f in FRAMES))


async def test_collector_recording_round_trips_byte_for_byte(tmp_path: Path) -> None:
    rec = tmp_path / "rec.jsonl"
    write_recording(rec)
    sink = ListSink()
    stats = await replay(rec, sink, None)
    assert sink.frames == FRAMES  # venue, channel, conn_id, recv_ms and the exact bytes
    assert stats["frames"] == 3 and stats["frames:kalshi"] == 2 and stats["frames:polymarket"] == 1
    assert kalshi_gap_policy(rec) == "hold"


async def test_speed_follows_recorded_gaps(tmp_path: Path) -> None:
    rec = tmp_path / "rec.jsonl"
    write_recording(rec)  # frames 150 ms and 300 ms after the first
    sink = ListSink()
    await replay(rec, sink, 2.0)  # twice as fast: 75 ms and 150 ms
    offsets = [t - sink.times[0] for t in sink.times]
    assert 0.07 <= offsets[1] < 0.14 and 0.145 <= offsets[2] < 0.25
    fast = ListSink()
    stats = await replay(rec, fast, None)
    assert stats["elapsed_s"] < 0.1


async def test_kalshi_capture_format_gzip(tmp_path: Path) -> None:
    events = [
        {"recv_ms": 5, "event": {"type": "orderbook_delta", "sid": 1, "seq": 9, "msg": {"a": "é"}}},
        {"recv_ms": 6, "event": {"type": "trade", "sid": 2, "seq": 3, "msg": {}}},
    ]
    cap = tmp_path / "cap.ndjson.gz"
    with gzip.open(cap, "wt") as fh:
        fh.write("\n".join(json.dumps(e) for e in events) + "\n")
    sink = ListSink()
    stats = await replay(cap, sink)
    assert [(f.venue, f.channel, f.conn_id, f.recv_ms) for f in sink.frames] == [
        ("kalshi", "ws:kalshi", CAPTURE_CONN, 5),
        ("kalshi", "ws:kalshi", CAPTURE_CONN, 6),
    ]
    assert [json.loads(f.payload) for f in sink.frames] == [e["event"] for e in events]
    assert stats["frames"] == 2 and kalshi_gap_policy(cap) == "count"


async def test_damaged_lines_are_counted_and_skipped(tmp_path: Path) -> None:
    rec = tmp_path / "rec.jsonl"
    good = frame_to_json(FRAMES[0])
    rec.write_text(
        f'{{"venue": "kalshi"\n{good}\n[1,2]\n\n{{"recv_ms": "x", "event": {{}}}}\n{good}\n'
    )
    sink = ListSink()
    stats = await replay(rec, sink)
    assert stats["frames"] == 2 and stats["bad_lines"] == 3
    assert kalshi_gap_policy(rec) == "hold"  # the first line that parses decides


async def test_stop_ends_a_replay(tmp_path: Path) -> None:
    rec = tmp_path / "rec.jsonl"
    write_recording(rec)
    stop = asyncio.Event()
    stop.set()
    stats = await replay(rec, ListSink(), None, stop=stop)
    assert stats["frames"] == 0 and stats["stopped"] == 1


async def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        await replay(tmp_path / "missing.jsonl", ListSink())
    with pytest.raises(ConfigError, match="cannot read"):
        kalshi_gap_policy(tmp_path / "missing.jsonl")
    rec = tmp_path / "rec.jsonl"
    write_recording(rec)
    with pytest.raises(ConfigError, match="speed"):
        await replay(rec, ListSink(), 0)
