"""The API key guarding every mutating route: one FastAPI dependency, `require_api_key`.

Use it as `dependencies=[Depends(require_api_key)]` on a route or router (or the `ApiKey`
alias as a parameter). The key is `settings.api_key` (MPX_API_KEY), compared in constant time
so the response time says nothing about how much of a guess was right."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader

from marketpulse.settings import Settings, get_settings

API_KEY_HEADER = "X-API-Key"

# auto_error=False: a missing header is answered by us (401 with a clear reason), not FastAPI's
# generic 403; the scheme still documents the header in OpenAPI ("Authorize" in /docs).
_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="MPX_API_KEY")


def _settings(request: Request) -> Settings:
    """The app's settings when create_app stored them, else the process-wide ones."""
    found = getattr(request.app.state, "settings", None)
    return found if isinstance(found, Settings) else get_settings()


def key_matches(given: str, expected: str) -> bool:
    """Constant-time comparison of two keys (bytes, so non-ASCII input cannot raise)."""
    return hmac.compare_digest(given.encode(), expected.encode())


def require_api_key(request: Request, key: Annotated[str | None, Security(_header)] = None) -> None:
    """401 when the `X-API-Key` header is missing or wrong."""
    if not key:
        raise HTTPException(
            status_code=401,
            detail=f"missing {API_KEY_HEADER} header: mutating routes need the API key",
            headers={"WWW-Authenticate": API_KEY_HEADER},
        )
    if not key_matches(key, _settings(request).api_key.get_secret_value()):
        raise HTTPException(
            status_code=401,
            detail=f"wrong {API_KEY_HEADER}",
            headers={"WWW-Authenticate": API_KEY_HEADER},
        )


ApiKey = Annotated[None, Depends(require_api_key)]
