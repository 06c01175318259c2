"""The console's pages and sign-in: GET / (the app, or the sign-in page without a valid session),
GET /console/static/<asset>, POST /console/login (JSON {"token"} -> session cookie), POST
/console/logout. The pages read the /v1 API with the cookie; nothing here reads the store."""
from __future__ import annotations

import hmac
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from guardian.api.deps import session_ok
from guardian.api.guard import SESSION_COOKIE

router = APIRouter(include_in_schema=False)
STATIC = Path(__file__).resolve().parent / "static"
ASSETS = {"app.js": "text/javascript", "app.css": "text/css", "login.js": "text/javascript",
          "charts.js": "text/javascript", "pages.js": "text/javascript"}
# Scripts and styles only from us; no inline script, no framing, no referrer leaking trace ids.
HEADERS = {"Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                      "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
           "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store",
           "X-Content-Type-Options": "nosniff"}


def signed_in(request: Request) -> bool:
    return not request.app.state.settings.api.token or session_ok(request)


@router.get("/")
def index(request: Request) -> HTMLResponse:
    page = "app.html" if signed_in(request) else "login.html"
    return HTMLResponse((STATIC / page).read_text(), headers=HEADERS)


@router.get("/console/static/{name}")
def asset(name: str) -> FileResponse:
    if name not in ASSETS:
        raise HTTPException(404, "no such asset")
    return FileResponse(STATIC / name, media_type=ASSETS[name], headers={"X-Content-Type-Options": "nosniff"})


class Login(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: str = Field(min_length=1, max_length=1000)


@router.post("/console/login")
def login(body: Login, request: Request) -> Response:
    expected = request.app.state.settings.api.token
    if not expected:
        return Response(status_code=204)  # nothing to sign in to: loopback-only and open
    sessions, client = request.app.state.sessions, request.client.host if request.client else "?"
    if sessions.throttled(client):
        raise HTTPException(429, "too many wrong tokens; wait a minute", headers={"Retry-After": "60"})
    if not hmac.compare_digest(body.token.encode(), expected.encode()):
        sessions.failed(client)
        raise HTTPException(401, "wrong token")
    resp = Response(status_code=204)
    resp.set_cookie(SESSION_COOKIE, sessions.create(), max_age=12 * 3600, path="/",
                    httponly=True, samesite="strict", secure=request.url.scheme == "https")
    return resp


@router.post("/console/logout")
def logout(request: Request) -> Response:
    request.app.state.sessions.revoke(request.cookies.get(SESSION_COOKIE))
    resp = Response(status_code=204)
    resp.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return resp
