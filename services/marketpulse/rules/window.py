"""Event-time windows kept as plain JSON lists (they live in Faust tables): a token's recent
prices for the spike and trend rules, and per-bucket volumes for the endgame rule.

Every function returns a new list rather than mutating its input: table values are written
whole, and a caller holding the old value (a step not applied yet) must not see it change.

A window in a table is two values (`push_parts`): the whole window as of its last new bucket,
and the later values of that last bucket. A busy token's samples mostly land in the last
bucket, so most of its table writes are one sample (about 30 bytes of JSON) instead of the
whole window (up to 257 samples, about 6 KB, re-encoded and sent to the changelog each time).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

Samples = list[list[float]]  # [[ts_ms, value], ...] in event-time order

# A window of `keep_ms` holds at most MAX_SAMPLES time buckets of keep_ms / MAX_SAMPLES each
# (2.3 s for a 10-minute window), whatever the tick rate: a busy token's window still spans its
# whole time, and its state (written to the changelog on every change) stays small.
MAX_SAMPLES = 256


def _ts(sample: Sequence[float]) -> float:
    return float(sample[0])


def resolution_ms(keep_ms: int) -> int:
    """The time bucket of a window kept for `keep_ms`."""
    return max(1, keep_ms // MAX_SAMPLES)


def push(
    samples: Sequence[Sequence[float]],
    ts_ms: int,
    value: float,
    keep_ms: int,
    *,
    add: bool = False,
) -> Samples:
    """`samples` plus (ts_ms, value), in event-time order, trimmed to `keep_ms` before the
    latest sample. One sample per time bucket (`resolution_ms`): a value landing in a bucket
    that has one replaces it if it is as late or later (a price: the bucket's last), or is
    added to it with `add` (a volume: the bucket's total, at the later time). A late sample
    lands in its place; one older than the window is dropped. (A shallow copy: the samples
    themselves are never mutated, only the list.)"""
    out: Samples = list(samples)  # type: ignore[arg-type]
    res = resolution_ms(keep_ms)
    bucket = ts_ms // res
    if not out or out[-1][0] <= ts_ms:
        i = len(out)  # the usual case: in event-time order
    else:
        i = bisect.bisect_right(out, float(ts_ms), key=_ts)
    # The sample already in this bucket, if any: just before the new one, or (late) just after.
    j = next((k for k in (i - 1, i) if 0 <= k < len(out) and out[k][0] // res == bucket), None)
    if j is None:
        out.insert(i, [ts_ms, value])
    elif add:
        out[j] = [max(out[j][0], ts_ms), out[j][1] + value]
    elif ts_ms >= out[j][0]:
        out[j] = [ts_ms, value]
    first = bisect.bisect_left(out, float(out[-1][0] - keep_ms), key=_ts)
    if first:
        del out[:first]
    if len(out) > MAX_SAMPLES + 1:  # a window spans MAX_SAMPLES buckets, plus a partial one
        del out[: len(out) - MAX_SAMPLES - 1]
    return out


def joined(
    stored: Sequence[Sequence[float]], head: Sequence[float] | None, keep_ms: int
) -> Samples:
    """The window a table holds as `stored` (written when a bucket closes) and `head` (its last
    bucket's later values): `head` stands in for the last sample while in the same bucket."""
    out: Samples = list(stored)  # type: ignore[arg-type]
    if head is not None and out:
        res = resolution_ms(keep_ms)
        if head[0] // res == out[-1][0] // res:
            out[-1] = list(head)
    return out


def push_parts(
    stored: Sequence[Sequence[float]],
    head: Sequence[float] | None,
    ts_ms: int,
    value: float,
    keep_ms: int,
    *,
    add: bool = False,
) -> tuple[Samples, Samples | None, list[float] | None]:
    """`push` onto the window `joined(stored, head)`: (the new window, the new `stored` value
    or None if unchanged, the new `head` or None if unchanged). A sample in the window's last
    bucket that trims nothing changes only `head` (one sample to write); anything else (a new
    bucket, a late sample, a trim) rewrites `stored`, and `head` too if it would shadow the
    new last sample with an older value."""
    window = joined(stored, head, keep_ms)
    res = resolution_ms(keep_ms)
    last = window[-1] if window else None
    if last is not None and ts_ms // res == last[0] // res:
        if add:
            new = [max(last[0], ts_ms), last[1] + value]
        elif ts_ms >= last[0]:
            new = [ts_ms, value]
        else:
            return window, None, None  # a late price: the bucket keeps its latest
        if window[0][0] >= new[0] - keep_ms:  # the new latest trims nothing
            window[-1] = new
            return window, None, new
    out = push(window, ts_ms, value, keep_ms, add=add)
    shadowed = head is not None and head[0] // res == out[-1][0] // res and head != out[-1]
    return out, out, list(out[-1]) if shadowed else None


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
