"""Event-time windows kept as plain JSON lists (they live in Faust tables): a token's recent
prices for the spike and trend rules, and per-bucket volumes for the endgame rule.

Every function returns a new list rather than mutating its input: table values are written
whole, and a caller holding the old value (a step not applied yet) must not see it change.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

Samples = list[list[float]]  # [[ts_ms, value], ...] in event-time order

# Bounds the state of one token whatever the tick rate: a window of a busy token is thinned to
# its latest samples (rules judge the oldest sample in the window, so thinning is conservative).
MAX_SAMPLES = 256


def _ts(sample: Sequence[float]) -> float:
    return float(sample[0])


def push(samples: Sequence[Sequence[float]], ts_ms: int, value: float, keep_ms: int) -> Samples:
    """`samples` plus (ts_ms, value), in event-time order, trimmed to `keep_ms` before the
    latest sample. A late sample lands in its place; one older than the window is dropped.
    (A shallow copy: the samples themselves are never mutated, only the list.)"""
    out: Samples = list(samples)  # type: ignore[arg-type]
    if not out or out[-1][0] <= ts_ms:
        out.append([ts_ms, value])  # the usual case: in event-time order
    else:
        out.insert(bisect.bisect_right(out, float(ts_ms), key=_ts), [ts_ms, value])
    first = bisect.bisect_left(out, float(out[-1][0] - keep_ms), key=_ts)
    if first:
        del out[:first]
    if len(out) > MAX_SAMPLES:
        del out[: len(out) - MAX_SAMPLES]
    return out


def within(samples: Sequence[Sequence[float]], ts_ms: int, window_ms: int) -> Samples:
    """Samples with ts_ms - window_ms <= ts <= ts_ms (samples are in event-time order)."""
    lo = bisect.bisect_left(samples, float(ts_ms - window_ms), key=_ts)
    hi = bisect.bisect_right(samples, float(ts_ms), key=_ts)
    return list(samples[lo:hi])  # type: ignore[arg-type]


def add_volume(
    buckets: Sequence[Sequence[float]], ts_ms: int, size: float, bucket_ms: int, keep: int
) -> Samples:
    """Per-bucket volumes [[bucket_start, volume], ...] with `size` added at `ts_ms`; only the
    latest `keep` + 1 buckets are kept (the current one and its history)."""
    start = ts_ms - ts_ms % bucket_ms
    out = [list(b) for b in buckets]
    for b in out:
        if b[0] == start:
            b[1] += size
            break
    else:
        out.insert(bisect.bisect_right([b[0] for b in out], start), [start, size])
    return out[-(keep + 1) :]
