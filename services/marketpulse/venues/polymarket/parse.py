"""Strict readers for Polymarket's JSON values: decimal strings, millisecond timestamps, JSON
strings inside JSON. Each raises BadMessage with a reason instead of a bare ValueError."""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any

from marketpulse.errors import BadMessage

# Timestamps below this are seconds (the Data API), above it milliseconds (the CLOB).
_SECONDS_BELOW = 100_000_000_000


def loads(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BadMessage("bad_json", str(exc)[:200]) from exc


def obj(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadMessage("bad_shape", f"{what} is {type(value).__name__}, not an object")
    return value


def text(msg: dict[str, Any], field: str) -> str:
    value = msg.get(field)
    if not isinstance(value, str) or not value:
        raise BadMessage("missing_field", f"{field!r} missing or not a string")
    return value


def opt_text(value: Any) -> str | None:
    """An optional string field (e.g. a book hash): anything that is not a string is absent."""
    return value if isinstance(value, str) else None


def number(value: Any, field: str) -> float:
    """A finite decimal (string or JSON number)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise BadMessage("bad_number", f"{field}={value!r}")
    try:
        out = float(value)
    except (ValueError, OverflowError) as exc:
        raise BadMessage("bad_number", f"{field}={value!r}") from exc
    if not math.isfinite(out):
        raise BadMessage("bad_number", f"{field}={value!r}")
    return out


def price(value: Any, field: str = "price") -> float:
    out = number(value, field)
    if not 0.0 <= out <= 1.0:
        raise BadMessage("bad_price", f"{field}={value!r} outside [0, 1]")
    return out


def size(value: Any, field: str = "size") -> float:
    out = number(value, field)
    if out < 0:
        raise BadMessage("bad_size", f"{field}={value!r} is negative")
    return out


def opt_price(value: Any, field: str) -> float | None:
    return None if value in (None, "") else price(value, field)


def ts_ms(value: Any, field: str = "timestamp") -> int:
    """Epoch milliseconds from ms (CLOB, string or number) or seconds (Data API)."""
    out = number(value, field)
    if out < 0 or out > 10**14:
        raise BadMessage("bad_timestamp", f"{field}={value!r}")
    return int(out * 1000) if out < _SECONDS_BELOW else int(out)


def iso_ms(value: Any) -> int | None:
    """Epoch ms of an ISO date or datetime (Gamma's endDate, updatedAt); None when absent."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise BadMessage("bad_date", f"{value!r}") from exc
    if parsed.tzinfo is None:
        from datetime import UTC

        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def str_list(value: Any, field: str) -> list[str]:
    """Gamma's JSON-encoded string arrays (``outcomes``, ``clobTokenIds``), or a real array."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise BadMessage("bad_field", f"{field} is not a JSON array") from exc
    if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value):
        raise BadMessage("bad_field", f"{field} is not an array of strings")
    return [str(v) for v in value]
