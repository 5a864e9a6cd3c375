"""The API's alert and replay routes (mounted by `api.create_app`), behind the API key.

POST /api/alerts/test    a test message on every (or the named) alert channel
POST /api/admin/replay   plan (default) or execute a consumer-group rewind"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, Field

from marketpulse.api.auth import require_api_key
from marketpulse.errors import ConfigError
from marketpulse.settings import Settings, get_settings


class AlertTest(BaseModel):
    channels: list[str] | None = Field(
        default=None, description="Channel names from the routes file; default: every channel"
    )


class ReplayRequest(BaseModel):
    group: str = Field(description="Consumer group to move (it must have no active member)")
    to: str = Field(description="earliest | latest | ISO 8601 time | topic:partition:offset")
    topics: list[str] | None = Field(
        default=None, description="Catalog ids or topic names; default: the group's topics"
    )
    execute: bool = Field(default=False, description="False: only show the plan")
    reset_state: bool = Field(
        default=False, description="Also empty a Faust worker's tables (needed to replay one)"
    )


def _settings(request: Request) -> Settings:
    found = getattr(request.app.state, "settings", None)
    return found if isinstance(found, Settings) else get_settings()


router = APIRouter(dependencies=[Depends(require_api_key)])


@router.post("/api/alerts/test", tags=["alerts"])
async def alerts_test(request: Request, body: AlertTest | None = None) -> dict[str, Any]:
    """Send a test alert; per channel: delivered or not, attempts, reason, dry run."""
    from marketpulse.alerts.service import send_test

    try:
        return await send_test(_settings(request), body.channels if body else None)
    except ConfigError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from exc


@router.post("/api/admin/replay", tags=["admin"])
async def admin_replay(request: Request, body: ReplayRequest) -> dict[str, Any]:
    """Rewind a consumer group: per partition current offset, target, messages to read.
    Dry run unless `execute`; refused (409) while the group has active members."""
    from marketpulse.replay import replay

    try:
        plan = await replay(
            _settings(request),
            body.group,
            body.to,
            body.topics,
            execute_it=body.execute,
            reset_state=body.reset_state,
        )
    except ConfigError as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from exc
    return plan.as_dict()
