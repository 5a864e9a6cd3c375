"""Per-subscription sequence tracking. Kalshi numbers every message of a subscription (``sid``)
with ``seq``; the numbers are shared by all the tickers of that subscription, so a gap can only
be seen per sid, never per ticker. The live connection and the normalizer both keep one."""

from __future__ import annotations

from enum import Enum


class Step(Enum):
    FIRST = "first"  # first message seen on this sid: nothing to compare with
    NEXT = "next"  # seq = previous + 1
    GAP = "gap"  # seq jumped forward: messages were missed
    STALE = "stale"  # seq at or below one already seen: a duplicate or reordering


class SeqTracker:
    def __init__(self) -> None:
        self._last: dict[int, int] = {}

    def step(self, sid: int, seq: int) -> Step:
        last = self._last.get(sid)
        if last is None:
            self._last[sid] = seq
            return Step.FIRST
        if seq <= last:
            return Step.STALE
        self._last[sid] = seq
        return Step.NEXT if seq == last + 1 else Step.GAP

    def forget(self, sid: int) -> None:
        self._last.pop(sid, None)
