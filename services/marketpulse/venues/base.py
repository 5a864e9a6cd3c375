"""The contract between venue connections, normalizers and the collector pipeline.

A venue connection (WebSocket shard, REST poller, replay file) turns what it receives into
``Frame`` objects, byte for byte, and hands them to a ``FrameSink`` (the collector's
``FramePipeline``). The pipeline may record the frame, then gives it to the venue's
``Normalizer``, which returns catalog records. Keeping the raw bytes until the normalizer has
run is what makes recording, replay and dead letters exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Frame:
    """One raw frame as received from a venue."""

    venue: str  # "polymarket" | "kalshi"
    channel: str  # e.g. "ws:market", "rest:books", "rest:gamma", "data:trades", "ws:kalshi"
    conn_id: str  # connection/shard id, e.g. "pm-ws-3"
    recv_ms: int  # receive wall-clock time, epoch ms
    payload: bytes  # raw bytes exactly as received


# (catalog topic id e.g. "books", key, Avro record dict)
Out = tuple[str, str, dict[str, Any]]


class Normalizer(Protocol):
    """Venue-specific; may be stateful (order books)."""

    venue: str

    def normalize(self, frame: Frame) -> list[Out]:
        """Records for one frame; raises errors.BadMessage(kind, detail) for a bad payload."""
        ...


class FrameSink(Protocol):
    """What venue connections deliver frames to."""

    async def frame(self, frame: Frame) -> None: ...
