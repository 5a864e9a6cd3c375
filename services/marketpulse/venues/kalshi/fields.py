"""Strict readers of Kalshi's wire fields. Prices are dollar strings ("0.4200") and counts are
fixed-point strings ("13.00"); both become ``Decimal`` so that a book rebuilt from thousands of
deltas is exact. The legacy integer-cent fields are never read: since 2026 they may read 0."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from marketpulse.errors import BadMessage

ONE = Decimal(1)
MAX_MS = 95_617_584_000_000  # 5000-01-01: later "times" are garbage (and overflow Avro longs)
ZERO = Decimal(0)


def obj(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadMessage("malformed", f"{what} is {type(value).__name__}, expected an object")
    return value


def text(msg: dict[str, Any], name: str) -> str:
    value = msg.get(name)
    if not isinstance(value, str) or not value:
        raise BadMessage("missing_field", f"{name} missing or not a non-empty string")
    return value


def decimal(value: Any, name: str) -> Decimal:
    """A decimal *string*: numbers in JSON would already have lost exactness."""
    if not isinstance(value, str):
        raise BadMessage("bad_field", f"{name}={value!r} is not a decimal string")
    try:
        d = Decimal(value)
    except InvalidOperation:
        raise BadMessage("bad_field", f"{name}={value!r} is not a decimal") from None
    if not d.is_finite():
        raise BadMessage("bad_field", f"{name}={value!r} is not finite")
    return d


def price(value: Any, name: str) -> Decimal:
    p = decimal(value, name)
    if not ZERO <= p <= ONE:
        raise BadMessage("bad_price", f"{name}={value!r} outside [0, 1] dollars")
    return p


def count(value: Any, name: str) -> Decimal:
    c = decimal(value, name)
    if c < 0:
        raise BadMessage("bad_size", f"{name}={value!r} is negative")
    return c


def levels(value: Any, name: str) -> dict[Decimal, Decimal]:
    """``[["0.4200", "13.00"], ...]`` → {price: size}; a missing side is an empty side."""
    if value is None:
        return {}
    if not isinstance(value, list):
        raise BadMessage("malformed", f"{name} is not a list of levels")
    out: dict[Decimal, Decimal] = {}
    for level in value:
        if not isinstance(level, list) or len(level) != 2:
            raise BadMessage("malformed", f"{name} level {level!r} is not [price, size]")
        size = count(level[1], f"{name}.size")
        if size > 0:
            out[price(level[0], f"{name}.price")] = size
    return out


def ts_ms(msg: dict[str, Any], default: int) -> int:
    """Venue event time in epoch ms: ``ts_ms``, else ``ts`` (epoch seconds or ISO 8601)."""
    value = msg.get("ts_ms")
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return _bounded(value, "ts_ms")
    value = msg.get("ts")
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return _bounded(value * 1000, "ts")
    if isinstance(value, str) and value:
        return iso_ms(value, "ts")
    return default


def _bounded(ms: int, name: str) -> int:
    if ms > MAX_MS:
        raise BadMessage("bad_field", f"{name} is beyond year 5000")
    return ms


def iso_ms(value: Any, name: str) -> int:
    if not isinstance(value, str):
        raise BadMessage("bad_field", f"{name}={value!r} is not an ISO 8601 time")
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadMessage("bad_field", f"{name}={value!r} is not an ISO 8601 time") from None
    # Kalshi writes UTC ("Z"); a time without an offset is read as UTC, never as local time.
    return int((when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp() * 1000)


def optional_iso_ms(msg: dict[str, Any], name: str) -> int | None:
    value = msg.get(name)
    return None if value in (None, "") else iso_ms(value, name)


def optional_float(msg: dict[str, Any], name: str) -> float | None:
    value = msg.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise BadMessage("bad_field", f"{name}={value!r} is not a number")
    try:
        number = float(value)
    except ValueError:
        raise BadMessage("bad_field", f"{name}={value!r} is not a number") from None
    if not math.isfinite(number):
        raise BadMessage("bad_field", f"{name}={value!r} is not finite")
    return number
