"""Routes over the execution stage (`marketpulse execute`): read its intents, positions and
PnL from the warehouse, and control it through the intent_commands topic.

The API never changes an intent itself: it publishes a command (create from a signal,
approve, reject, cancel, kill, resume) and the stage answers with intent events, which the sink
loads. So a decision is visible in `GET /api/intents/{id}` once the stage has applied it and the
sink has loaded it; the 409/404 checks here read the warehouse, and the stage re-checks every
command against its own, newer state."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from fastapi.types import DecoratedCallable
from pydantic import BaseModel, ConfigDict, Field

from marketpulse.api import ledger
from marketpulse.api.admin import PublisherDep
from marketpulse.api.auth import require_api_key
from marketpulse.api.querying import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    Limit,
    WarehouseDep,
    decode_cursor,
    encode_cursor,
    page_of,
    time_range,
    unprocessable,
)
from marketpulse.api.resources import SIGNAL_COLUMNS
from marketpulse.execution.ids import intent_id_for
from marketpulse.warehouse import Warehouse

router = APIRouter(tags=["execution"])

KILL_SWITCH_KEY = "risk"  # the key of kill/resume commands (schemas/topics.yaml)

IntentId = Annotated[str, Path(min_length=1, max_length=200)]
Actor = Annotated[
    str | None,
    Field(
        pattern=r"^[A-Za-z0-9_.@-]{1,64}$",
        description="Who decides; recorded as actor `api:<by>` (default `api`)",
    ),
]
Reason = Annotated[str, Field(max_length=500, description="Why; kept on the intent event")]


# ---- request and response bodies -----------------------------------------------------------


class NewIntent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    signal_id: str = Field(min_length=1, max_length=200)
    by: Actor = None
    reason: Reason = ""


class CommandBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    by: Actor = None
    reason: Reason = ""


class Accepted(BaseModel):
    command_id: str = Field(description="Unique per request; the stage applies it once")
    action: str
    intent_id: str = Field(description="The intent it concerns (empty for kill/resume)")
    topic: str
    partition: int
    offset: int


_MUTATING: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or wrong X-API-Key"},
    503: {"description": "Kafka unreachable"},
}
_DECISION: dict[int | str, dict[str, Any]] = {
    **_MUTATING,
    404: {"description": "No such intent (or the sink has not loaded it yet)"},
    409: {"description": "The intent's current state does not allow it"},
}


# ---- commands ------------------------------------------------------------------------------


def _actor(by: str | None) -> str:
    return f"api:{by}" if by else "api"


async def _command(pub: PublisherDep, key: str, action: str, **fields: str) -> Accepted:
    command_id = uuid.uuid4().hex
    record: dict[str, Any] = {
        "command_id": command_id,
        "action": action,
        "ts_ms": int(time.time() * 1000),
        **fields,
    }
    try:
        meta = await pub.publish("intent_commands", "intent_command", key, record)
    except Exception as exc:
        raise HTTPException(status_code=503, detail=f"Kafka did not take it: {exc}") from None
    return Accepted(
        command_id=command_id,
        action=action,
        intent_id=fields.get("intent_id", ""),
        topic=meta.topic,
        partition=meta.partition,
        offset=meta.offset,
    )


def signal_record(wh: Warehouse, signal_id: str) -> dict[str, Any] | None:
    """The signal as its Avro record (signal.avsc), rebuilt from the warehouse."""
    rows = wh.query(
        f"SELECT {SIGNAL_COLUMNS} FROM signals FINAL WHERE signal_id = {{id:String}} LIMIT 1 "
        "SETTINGS use_skip_indexes_if_final = 1",
        {"id": signal_id},
    )
    if not rows:
        return None
    r = rows[0]
    return {
        "signal_id": r["signal_id"],
        "rule_id": r["rule_id"],
        "rule_version": r["rule_version"],
        "level": r["level"],
        "subject": r["subject"],
        "event_key": r["event_key"],
        "market_ids": list(r["market_ids"]),
        "ts_ms": r["ts_ms"],
        "trigger_recv_ms": r["recv_ms"],
        "edge_bps": r["edge_bps"],
        "edge_score": r["edge_score"],
        "size": r["size"],
        "notional": r["notional"],
        "legs": json.loads(r["legs_json"]),
        "evidence": dict(r["evidence"]),
        "summary": r["summary"],
    }


@router.post(
    "/api/intents",
    response_model=Accepted,
    status_code=202,
    dependencies=[Depends(require_api_key)],
    responses={
        **_MUTATING,
        404: {"description": "No such signal"},
        409: {"description": "The signal already has an intent"},
    },
)
async def create_intent(body: NewIntent, wh: WarehouseDep, pub: PublisherDep) -> Accepted:
    """Ask the stage to turn a signal into an intent (sized and risk-checked there). The
    intent's id is derived from the signal id, so it is known now and a repeat names the same
    intent."""
    signal = await asyncio.to_thread(signal_record, wh, body.signal_id)
    if signal is None:
        raise HTTPException(status_code=404, detail=f"no signal {body.signal_id!r}")
    existing = await asyncio.to_thread(ledger.intent_of_signal, wh, body.signal_id)
    if existing is not None:
        raise HTTPException(
            status_code=409,
            detail=f"signal {body.signal_id!r} already has intent {existing['intent_id']} "
            f"({existing['status']})",
        )
    intent_id = intent_id_for(body.signal_id)
    signal_json = json.dumps(signal, sort_keys=True, separators=(",", ":"))
    return await _command(
        pub,
        intent_id,
        "create",
        intent_id=intent_id,
        signal_id=body.signal_id,
        signal_json=signal_json,
        actor=_actor(body.by),
        reason=body.reason,
    )


async def _decide(
    action: str, intent_id: str, body: CommandBody, wh: Warehouse, pub: PublisherDep
) -> Accepted:
    state = await asyncio.to_thread(ledger.intent_state, wh, intent_id)
    if state is None:
        raise HTTPException(status_code=404, detail=f"no intent {intent_id!r}")
    allowed = ledger.ALLOWED_FROM[action]
    if state["status"] not in allowed:
        raise HTTPException(
            status_code=409,
            detail=f"cannot {action} intent {intent_id}: it is {state['status']}, and {action} "
            f"needs it {' or '.join(sorted(allowed))}",
        )
    return await _command(
        pub,
        intent_id,
        action,
        intent_id=intent_id,
        signal_id=state["signal_id"],
        actor=_actor(body.by),
        reason=body.reason,
    )


def _decision(action: str) -> Callable[[DecoratedCallable], DecoratedCallable]:
    """The route decorator of one decision on an intent."""
    return router.post(
        f"/api/intents/{{intent_id}}/{action}",
        response_model=Accepted,
        status_code=202,
        dependencies=[Depends(require_api_key)],
        responses=_DECISION,
    )


@_decision("approve")
async def approve(
    intent_id: IntentId, wh: WarehouseDep, pub: PublisherDep, body: CommandBody | None = None
) -> Accepted:
    """Approve a suggested intent (semi_auto mode); the execution stage then works it."""
    return await _decide("approve", intent_id, body or CommandBody(), wh, pub)


@_decision("reject")
async def reject(
    intent_id: IntentId, wh: WarehouseDep, pub: PublisherDep, body: CommandBody | None = None
) -> Accepted:
    """Reject a suggested intent."""
    return await _decide("reject", intent_id, body or CommandBody(), wh, pub)


@_decision("cancel")
async def cancel(
    intent_id: IntentId, wh: WarehouseDep, pub: PublisherDep, body: CommandBody | None = None
) -> Accepted:
    """Cancel an intent that is suggested, approved or partially filled."""
    return await _decide("cancel", intent_id, body or CommandBody(), wh, pub)


@router.post(
    "/api/risk/kill",
    response_model=Accepted,
    status_code=202,
    dependencies=[Depends(require_api_key)],
    responses=_MUTATING,
)
async def kill(pub: PublisherDep, body: CommandBody | None = None) -> Accepted:
    """Trip the kill switch: the stage approves and fills nothing until `resume`."""
    body = body or CommandBody()
    return await _command(pub, KILL_SWITCH_KEY, "kill", actor=_actor(body.by), reason=body.reason)


@router.post(
    "/api/risk/resume",
    response_model=Accepted,
    status_code=202,
    dependencies=[Depends(require_api_key)],
    responses=_MUTATING,
)
async def resume(pub: PublisherDep, body: CommandBody | None = None) -> Accepted:
    """Reset the kill switch."""
    body = body or CommandBody()
    return await _command(pub, KILL_SWITCH_KEY, "resume", actor=_actor(body.by), reason=body.reason)


# ---- reads ---------------------------------------------------------------------------------


@router.get("/api/intents", response_model=ledger.IntentPage)
def intents(
    wh: WarehouseDep,
    status: Annotated[
        list[ledger.IntentStatus] | None,
        Query(description="Current status; repeat for several"),
    ] = None,
    rule: Annotated[str | None, Query(max_length=100)] = None,
    level: Annotated[Literal["P1", "P2", "P3"] | None, Query()] = None,
    market: Annotated[
        str | None, Query(max_length=200, description="Intents with a leg in it")
    ] = None,
    since: Annotated[str | None, Query(description="Created at or after (ISO 8601 or ms)")] = None,
    until: Annotated[str | None, Query(description="Created before (ISO 8601 or ms)")] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> ledger.IntentPage:
    """Each intent's current state (its highest-seq event), newest first. A since..until range
    may span at most 31 days."""
    limit = min(limit, MAX_LIMIT)
    since_ms, until_ms = time_range(since, until)
    before = None
    if cursor:
        c_ts, c_id = decode_cursor("intents", cursor, 2)
        if not isinstance(c_ts, int) or not isinstance(c_id, str):
            raise unprocessable("cursor is not a cursor of /api/intents")
        before = (c_ts, c_id)
    rows = ledger.query_intents(
        wh,
        statuses=list(status or []),
        rule=rule,
        level=level,
        market=market,
        since_ms=since_ms,
        until_ms=until_ms,
        limit=limit,
        before=before,
    )
    page, more = page_of(rows, limit)
    nxt = (
        encode_cursor("intents", [page[-1]["created_ms"], page[-1]["intent_id"]]) if more else None
    )
    return ledger.IntentPage(
        items=[ledger.intent_model(r) for r in page], limit=limit, next_cursor=nxt
    )


@router.get(
    "/api/intents/{intent_id}",
    response_model=ledger.IntentDetail,
    responses={404: {"description": "No such intent"}},
)
def intent(intent_id: IntentId, wh: WarehouseDep) -> ledger.IntentDetail:
    """One intent: its current state and every lifecycle event, with risk checks and fills."""
    state = ledger.intent_state(wh, intent_id)
    if state is None:
        raise HTTPException(status_code=404, detail=f"no intent {intent_id!r}")
    events = ledger.intent_events(wh, intent_id)
    return ledger.IntentDetail(
        intent=ledger.intent_model(state), events=[ledger.event_model(e) for e in events]
    )


@router.get("/api/positions", response_model=ledger.PositionPage)
def positions(
    wh: WarehouseDep,
    status: Annotated[
        list[ledger.PositionStatus] | None,
        Query(description="Default: open only; repeat for several"),
    ] = None,
    rule: Annotated[str | None, Query(max_length=100)] = None,
    market: Annotated[str | None, Query(max_length=200)] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> ledger.PositionPage:
    """Paper positions (latest version of each), by position id."""
    limit = min(limit, MAX_LIMIT)
    after = decode_cursor("positions", cursor, 1)[0] if cursor else None
    if after is not None and not isinstance(after, str):
        raise unprocessable("cursor is not a cursor of /api/positions")
    rows = ledger.query_positions(
        wh,
        statuses=list(status or ["open"]),
        rule=rule,
        market=market,
        limit=limit,
        after=after,
    )
    page, more = page_of(rows, limit)
    nxt = encode_cursor("positions", [page[-1]["position_id"]]) if more else None
    return ledger.PositionPage(
        items=[ledger.position_model(r) for r in page], limit=limit, next_cursor=nxt
    )


@router.get("/api/pnl", response_model=ledger.Pnl)
def pnl(
    wh: WarehouseDep,
    rule: Annotated[str | None, Query(max_length=100)] = None,
    by: Annotated[
        Literal["rule", "day"], Query(description="day: also per rule and day (needs a range)")
    ] = "rule",
    since: Annotated[str | None, Query(description="by=day: first day (ISO 8601 or ms)")] = None,
    until: Annotated[str | None, Query(description="by=day: end, exclusive")] = None,
) -> ledger.Pnl:
    """Per rule: realised and unrealised PnL, fees, open exposure and position counts, plus
    the total. With by=day, also each rule's PnL as of the end of each day in since..until (at
    most 31 days)."""
    since_ms, until_ms = time_range(since, until)
    rules = ledger.rule_pnl(wh, rule)
    days = None
    if by == "day":
        if since_ms is None or until_ms is None:
            raise unprocessable("by=day needs since and until")
        first = datetime.fromtimestamp(since_ms / 1000, UTC).date()
        last = datetime.fromtimestamp((until_ms - 1) / 1000, UTC).date()
        days = ledger.daily_pnl(wh, rule, first, (last - first).days + 1)
    elif since_ms is not None or until_ms is not None:
        raise unprocessable("since and until apply to by=day only")
    return ledger.Pnl(rules=rules, total=ledger.totals(rules), days=days)
