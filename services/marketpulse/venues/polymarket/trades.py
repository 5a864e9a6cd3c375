"""Trades with wallets from the Data API, polled with a durable complete-through boundary.

The API pages with ``offset`` but refuses offsets past 10,000, so the poller reads closed time
windows ``[start, end]`` (seconds) page by page, oldest boundary first. A window whose rows do not
fit under the offset cap is split in half; a window of one second that still overflows cannot be
read completely, and that is reported, never hidden: a **possible-data-loss** dead letter (stage
``collector``, kind ``possible_data_loss``, payload = the window as JSON) and the
``mpx_collector_possible_data_loss_total`` counter. A dead letter rather than a new record type:
it needs no schema change, lands in the warehouse with every other loss, and alerts on the DLQ
already cover it.

Durability: after a window's frames are produced *and acknowledged* (the pipeline is flushed), its
end is written to a small state file (atomic rename). A restart resumes from it: windows overlap by
``OVERLAP_S`` and the normalizer de-duplicates on (transactionHash, asset, proxyWallet, side, size,
price), so nothing is lost or published twice across a crash. A state file rather than a Kafka
topic: one writer, read once at start, and no consumer needed to recover it; the cost is that the
file must live on a persistent volume (``MPX_COLLECTOR_STATE_DIR``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Protocol

from marketpulse import metrics
from marketpulse.errors import BadMessage, MarketPulseError
from marketpulse.venues.base import Frame, FrameSink
from marketpulse.venues.polymarket import VENUE
from marketpulse.venues.polymarket.ratelimit import VenueHttp

log = logging.getLogger(__name__)

CHANNEL = "data:trades"
OFFSET_CAP = 10_000  # the API answers 400 beyond this offset
SETTLE_S = 10  # a window closes this long after its end, so late rows are in
OVERLAP_S = 5  # re-read this much before the boundary (duplicates are dropped)
FIRST_LOOKBACK_S = 300  # without a boundary, start this far back


class Pipeline(FrameSink, Protocol):
    async def flush(self) -> None: ...

    async def dead_letter(self, source: str, err: BadMessage, payload: bytes) -> None: ...


class Boundary:
    """The complete-through time (epoch seconds) in a JSON state file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> int | None:
        try:
            return int(json.loads(self.path.read_text())["complete_through_s"])
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            raise BadMessage("bad_state", f"{self.path}: {exc}") from exc

    def save(self, through_s: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"complete_through_s": through_s}))
        os.replace(tmp, self.path)  # atomic: a crash leaves the old or the new boundary


class TradesPoller:
    def __init__(
        self,
        http: VenueHttp,
        data_url: str,
        pipeline: Pipeline,
        boundary: Boundary,
        *,
        page: int = 1000,
        poll_s: float = 5.0,
        offset_cap: int = OFFSET_CAP,
    ) -> None:
        self.http = http
        self.url = f"{data_url}/trades"
        self.pipeline = pipeline
        self.boundary = boundary
        self.page = page
        self.poll_s = poll_s
        self.offset_cap = offset_cap

    async def poll_once(self, now_s: int | None = None) -> int:
        """Read every closed window since the boundary; returns the new boundary."""
        now_s = now_s if now_s is not None else int(time.time())
        through = self.boundary.load()
        start = (through - OVERLAP_S) if through is not None else now_s - FIRST_LOOKBACK_S
        end = now_s - SETTLE_S
        if end <= start:
            return through if through is not None else start
        await self.read_window(start, end)
        await self.pipeline.flush()  # acknowledged by the broker before the boundary moves
        self.boundary.save(end)
        return end

    async def read_window(self, start: int, end: int) -> None:
        """Every page of ``[start, end]``; halves the window when it would pass the offset cap."""
        pages: list[bytes] = []
        offset = 0
        while True:
            body = await self.http.get(
                "data:/trades", self.url, params=self._params(start, end, offset)
            )
            rows = _row_count(body)
            pages.append(body)
            if rows < self.page:
                break
            offset += self.page
            if offset + self.page > self.offset_cap:
                if end > start:
                    mid = (start + end) // 2
                    await self.read_window(start, mid)
                    await self.read_window(mid + 1, end)
                    return  # the halves re-read these rows; their pages are not delivered
                await self._possible_loss(start, end, offset)
                break
        for body in pages:
            await self.pipeline.frame(
                Frame(VENUE, CHANNEL, "pm-data", time.time_ns() // 1_000_000, body)
            )

    def _params(self, start: int, end: int, offset: int) -> dict[str, Any]:
        return {
            "start": start,
            "end": end,
            "limit": self.page,
            "offset": offset,
            "takerOnly": "false",  # maker rows too: several rows per transaction are legitimate
        }

    async def _possible_loss(self, start: int, end: int, offset: int) -> None:
        metrics.COLLECTOR_POSSIBLE_LOSS.labels(VENUE, CHANNEL).inc()
        detail = f"window [{start}, {end}] holds more than {offset} trades; the rest is unreadable"
        log.error("polymarket trades: possible data loss: %s", detail)
        window = {
            "start_s": start,
            "end_s": end,
            "rows_read": offset,
            "offset_cap": self.offset_cap,
        }
        await self.pipeline.dead_letter(
            f"{VENUE}:{CHANNEL}",
            BadMessage("possible_data_loss", detail),
            json.dumps(window).encode(),
        )

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.poll_once()
            except MarketPulseError as exc:  # the boundary did not move: the window is retried
                log.warning("polymarket trades: %s", exc)
            except Exception:  # same, for anything unexpected (logged with its traceback)
                log.exception("polymarket trades poll failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.poll_s)


def _row_count(body: bytes) -> int:
    try:
        rows = json.loads(body)
    except ValueError:
        return 0  # the frame becomes a dead letter; this window ends here
    return len(rows) if isinstance(rows, list) else 0
