"""Dependencies shared by the routers: app state, auth (a bearer token, or a console session
cookie signed in with it), the time window of a query."""
from __future__ import annotations

import hmac

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from capture.store.api import SpanStore, TimeWindow
from guardian.api.settings import Settings
from guardian.api.validate import window_or_400

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


def session_ok(request: Request) -> bool:
    """A console session cookie (guardian.console.sessions) signed in with the token."""
    from guardian.api.guard import SESSION_COOKIE

    sessions = getattr(request.app.state, "sessions", None)
    return sessions is not None and sessions.valid(request.cookies.get(SESSION_COOKIE))


def require_token(
    request: Request, creds: HTTPAuthorizationCredentials | None = Depends(_bearer)
) -> None:
    expected = request.app.state.settings.api.token
    header = f"{creds.scheme} {creds.credentials}" if creds else None
    if not token_ok(expected, header) and not (creds is None and session_ok(request)):
        raise HTTPException(
            401, "missing or wrong bearer token (Authorization: Bearer $GUARDIAN_API_TOKEN)",
            headers={"WWW-Authenticate": "Bearer"},
        )


def window_query(request: Request, since: str | None = None, start: str | None = None,
                 end: str | None = None) -> TimeWindow:
    """Query parameters since|start,end as a TimeWindow (default: capture.store.window's); bad ones are a 400."""
    return window_or_400(request.app.state.store, since, start, end)


def window_json(w: TimeWindow) -> dict:
    return {"start_ns": w.start_ns, "end_ns": w.end_ns}
