"""What every read route of the API shares: the warehouse dependency, page-size and time-range
caps, opaque keyset cursors, time parsing and LIKE escaping. User values never reach SQL text:
routes bind them as `{name:Type}` parameters."""

from __future__ import annotations

import base64
import binascii
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Query, Request

from marketpulse.warehouse import Warehouse

MAX_LIMIT = 500
DEFAULT_LIMIT = 50
MAX_RANGE = timedelta(days=31)


def get_warehouse(request: Request) -> Warehouse:
    return request.app.state.warehouse  # type: ignore[no-any-return]


WarehouseDep = Annotated[Warehouse, Depends(get_warehouse)]
Limit = Annotated[int, Query(ge=1, description=f"Page size, capped at {MAX_LIMIT}")]


def dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def opt_dt(ms: int | None) -> datetime | None:
    return None if ms is None else dt(ms)


def unprocessable(detail: str) -> HTTPException:
    return HTTPException(status_code=422, detail=detail)


def encode_cursor(kind: str, key: list[Any]) -> str:
    """Opaque to clients: the sort key of the last row served, tagged with its endpoint."""
    raw = json.dumps({"k": kind, "v": key}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(kind: str, cursor: str, arity: int) -> list[Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
        key = data["v"]
        if data["k"] != kind or not isinstance(key, list) or len(key) != arity:
            raise ValueError
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise unprocessable(f"cursor is not a cursor of /api/{kind}") from None
    return key


_EPOCH_MS = re.compile(r"^-?\d{1,15}$")


def parse_time(name: str, value: str) -> int:
    """ISO 8601 (naive means UTC) or epoch milliseconds → epoch milliseconds."""
    if _EPOCH_MS.match(value):
        return int(value)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise unprocessable(
            f"{name}: expected ISO 8601 (2026-01-31T12:00:00Z) or epoch milliseconds, "
            f"got {value[:40]!r}"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def time_range(
    since: str | None, until: str | None, cap: timedelta = MAX_RANGE
) -> tuple[int | None, int | None]:
    lo = parse_time("since", since) if since is not None else None
    hi = parse_time("until", until) if until is not None else None
    if lo is not None and hi is not None:
        if lo >= hi:
            raise unprocessable("since must be before until")
        if hi - lo > cap.total_seconds() * 1000:
            raise unprocessable(f"since..until spans more than {cap.days} days")
    return lo, hi


def add_time_range(
    conditions: list[str],
    params: dict[str, Any],
    since_ms: int | None,
    until_ms: int | None,
    column: str = "ts",
) -> None:
    """`column` within [since, until), as bound parameters."""
    if since_ms is not None:
        conditions.append(f"{column} >= fromUnixTimestamp64Milli({{since:Int64}}, 'UTC')")
        params["since"] = since_ms
    if until_ms is not None:
        conditions.append(f"{column} < fromUnixTimestamp64Milli({{until:Int64}}, 'UTC')")
        params["until"] = until_ms


def add_filters(conditions: list[str], params: dict[str, Any], **filters: Any) -> None:
    """The common optional filters, each a bound parameter, skipped when not given:
    rule, level, market (a signal's or intent's market ids contain it), statuses (any of)."""
    for name, condition in _FILTERS:
        if filters.get(name):
            conditions.append(condition)
            params[name] = filters[name]


# add_filters' filters, in the order their conditions are written: (name, condition)
_FILTERS = (
    ("statuses", "has({statuses:Array(String)}, status)"),
    ("rule", "rule_id = {rule:String}"),
    ("level", "level = {level:String}"),
    ("market", "has(market_ids, {market:String})"),
)


def like_pattern(text: str) -> str:
    """`%text%` with LIKE's wildcards in `text` escaped: the user searches for literal text."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def where(conditions: list[str]) -> str:
    # Only fixed fragments from the route modules are joined here; user values stay in
    # parameters.
    return " AND ".join(conditions) if conditions else "1"


def page_of(rows: list[dict[str, Any]], limit: int) -> tuple[list[dict[str, Any]], bool]:
    """The rows of a page and whether there is a next one (queries ask for `limit + 1`)."""
    return rows[:limit], len(rows) > limit
