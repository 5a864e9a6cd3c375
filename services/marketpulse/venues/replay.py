"""Replay of recorded venue traffic through the live pipeline.

Reads a recording and hands every frame to a ``FrameSink`` (the collector's ``FramePipeline``),
which normalizes it exactly as it does live traffic. Two line formats, plain or gzip (``.gz``):

  * the collector's own recording, one frame per line:
    ``{"venue", "channel", "conn_id", "recv_ms", "payload"}`` where ``payload`` is the frame's
    text (or ``payload_b64``: base64 of its bytes, for frames that are not UTF-8);
  * a Kalshi WebSocket capture (the gold15m format): ``{"recv_ms": ..., "event": <frame>}``.

Timing: ``speed`` X replays the recorded gaps between ``recv_ms`` values X times faster (1.0 =
real time); ``None`` = as fast as the sink takes them. Frames keep their recorded ``recv_ms``,
so a replay produces the same records every time.

A Kalshi capture usually holds one ticker cut out of a subscription shared with other tickers,
so its ``seq`` numbers jump between that ticker's messages: normalize it with
``KalshiNormalizer(gap_policy=kalshi_gap_policy(path))`` ("count": gaps counted, not fatal).
A collector recording holds every frame of its connections, resnapshots included, and replays
with the live policy ("hold").
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import io
import json
import logging
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

from marketpulse import metrics
from marketpulse.errors import ConfigError
from marketpulse.venues.base import Frame, FrameSink
from marketpulse.venues.kalshi.normalize import WS_CHANNEL, GapPolicy

log = logging.getLogger(__name__)

CAPTURE_CONN = "capture"  # conn_id of frames read from a Kalshi capture (it names none)
_SLEEP_MIN_S = 0.002  # closer than this to a frame's due time: send it now


def kalshi_gap_policy(path: str | Path) -> GapPolicy:
    """``count`` for a Kalshi capture (filtered: seq gaps are expected), else ``hold``. Decided
    by the first line that parses; ConfigError when the file cannot be read."""
    try:
        with _open(Path(path)) as fh:
            for line in fh:
                try:
                    return "count" if _is_capture(json.loads(line)) else "hold"
                except ValueError:
                    continue  # blank or damaged: replay() counts it
    except OSError as exc:
        raise ConfigError(f"cannot read recording {path}: {exc}") from None
    return "hold"


async def replay(
    path: str | Path,
    sink: FrameSink,
    speed: float | None = None,
    *,
    stop: asyncio.Event | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Feed every frame of ``path`` to ``sink``; returns counts (frames by venue, bad lines,
    elapsed seconds). ``progress`` None shows a progress bar when stderr is a terminal."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"recording {file} does not exist")
    if speed is not None and speed <= 0:
        raise ConfigError(f"speed must be > 0 (or None for max), got {speed}")
    show = sys.stderr.isatty() if progress is None else progress
    counts: Counter[str] = Counter()
    started = time.monotonic()
    first_recv: int | None = None
    with (
        _open(file) as fh,
        tqdm(desc=f"replay {file.name}", unit="frame", disable=not show, mininterval=0.5) as bar,
    ):
        for frame in _frames(fh, counts):
            if stop is not None and stop.is_set():
                counts["stopped"] = 1
                break
            if speed is not None:
                first_recv = frame.recv_ms if first_recv is None else first_recv
                await _wait_until(started + (frame.recv_ms - first_recv) / 1000.0 / speed)
            await sink.frame(frame)
            counts[f"frames:{frame.venue}"] += 1
            counts["frames"] += 1
            bar.update()
    stats: dict[str, Any] = dict(counts)
    stats.setdefault("frames", 0)
    stats["elapsed_s"] = round(time.monotonic() - started, 3)
    log.info("replay %s done %s", file, stats)
    return stats


async def _wait_until(due: float) -> None:
    delay = due - time.monotonic()
    if delay > _SLEEP_MIN_S:
        await asyncio.sleep(delay)


def _open(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return path.open(encoding="utf-8")


def _is_capture(line: Any) -> bool:
    return isinstance(line, dict) and "event" in line and "payload" not in line


def _frames(lines: IO[str], counts: Counter[str]) -> Iterator[Frame]:
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield _frame(json.loads(line))
        except (ValueError, KeyError, TypeError) as exc:
            # A damaged line of the recording is not a venue frame: count it and go on.
            counts["bad_lines"] += 1
            metrics.COLLECTOR_REJECTS.labels("replay", "bad_line").inc()
            log.warning("replay: line %d skipped (%s: %s)", number, type(exc).__name__, exc)


def _frame(line: Any) -> Frame:
    if not isinstance(line, dict):
        raise TypeError(f"line is a {type(line).__name__}, expected an object")
    recv_ms = line["recv_ms"]
    if not isinstance(recv_ms, int) or isinstance(recv_ms, bool):
        raise TypeError(f"recv_ms={recv_ms!r} is not an integer")
    if _is_capture(line):
        # The capture stored each frame as parsed JSON; compact JSON is the closest to the wire.
        payload = json.dumps(line["event"], separators=(",", ":"), ensure_ascii=False)
        return Frame("kalshi", WS_CHANNEL, CAPTURE_CONN, recv_ms, payload.encode())
    return Frame(
        venue=_str(line, "venue"),
        channel=_str(line, "channel"),
        conn_id=_str(line, "conn_id"),
        recv_ms=recv_ms,
        payload=_payload(line),
    )


def _payload(line: dict[str, Any]) -> bytes:
    if "payload_b64" in line:
        return base64.b64decode(line["payload_b64"], validate=True)
    payload = line["payload"]
    if isinstance(payload, str):
        return payload.encode()
    raise TypeError("payload is not a string")


def _str(line: dict[str, Any], name: str) -> str:
    value = line[name]
    if not isinstance(value, str) or not value:
        raise TypeError(f"{name}={value!r} is not a non-empty string")
    return value
