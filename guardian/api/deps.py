"""Dependencies shared by the routers: app state, bearer-token auth, the time window of a query."""
from __future__ import annotations

import hmac

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from capture.store.api import SpanStore, TimeWindow
from guardian.api.settings import Settings
from capture.store.window import WindowError, resolve_window

_bearer = HTTPBearer(auto_error=False, description="GUARDIAN_API_TOKEN (or api.token in the config file)")


def get_store(request: Request) -> SpanStore:
    return request.app.state.store


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def token_ok(expected: str | None, header_value: str | None) -> bool:
    """Constant-time check of an `Authorization: Bearer <token>` value; no token configured = open."""
    if not expected:
        return True
    scheme, _, given = (header_value or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected.encode())


def require_token(
    request: Request, creds: HTTPAuthorizationCredentials | None = Depends(_bearer)
) -> None:
    expected = request.app.state.settings.api.token
    header = f"{creds.scheme} {creds.credentials}" if creds else None
    if not token_ok(expected, header):
        raise HTTPException(
            401, "missing or wrong bearer token (Authorization: Bearer $GUARDIAN_API_TOKEN)",
            headers={"WWW-Authenticate": "Bearer"},
        )


def window_query(request: Request, since: str | None = None, start: str | None = None,
                 end: str | None = None) -> TimeWindow:
    """Query parameters since|start,end as a TimeWindow (default: capture.store.window's); bad ones are a 400."""
    try:
        return resolve_window(request.app.state.store, since, start, end)
    except WindowError as e:
        raise HTTPException(400, str(e)) from None


def window_json(w: TimeWindow) -> dict:
    return {"start_ns": w.start_ns, "end_ns": w.end_ns}
