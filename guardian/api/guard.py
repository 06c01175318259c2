"""The request guard in front of every route: body size, Host (DNS rebinding) and CSRF checks.

Rule 1: a body bigger than `max_body_bytes` is refused from its Content-Length before anything
reads it, and a chunked one is cut off as soon as it passes the limit: before routing, token
checks or JSON parsing spend work on it.
Rule 2: with no token configured the API is loopback-only, so a request whose Host is not a
loopback name is refused on every route (a DNS-rebinding page sends its own name as Host).
Rule 3: a state-changing request a browser could send cross-site (no Authorization header:
either no token is configured, or a console session cookie authenticates it) must declare a
JSON content type, which a cross-site page cannot send without a CORS preflight we never answer.
Slack (form-encoded, signed) and MCP (own checks) are exempt from rule 3.
Does not check tokens: guardian.api.deps does that.
"""
from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CSRF_EXEMPT = ("/slack/", "/mcp")
SESSION_COOKIE = "guardian_session"


def host_name(host_header: str) -> str:
    """'127.0.0.1:8080' -> '127.0.0.1', '[::1]:80' -> '[::1]', 'Localhost.' -> 'localhost'."""
    h = host_header.strip().lower()
    if h.startswith("["):
        return h[: h.find("]") + 1] if "]" in h else h
    return h.rsplit(":", 1)[0].rstrip(".") if ":" in h else h.rstrip(".")


def is_json_type(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


async def _refuse(send: Send, status: int, reason: str) -> None:
    body = json.dumps({"detail": reason}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class RequestGuard:
    def __init__(self, app: ASGIApp, token: str | None, max_body_bytes: int):
        self.app, self.token, self.max_body = app, token, max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
        if not self.token and host_name(headers.get("host", "")) not in LOOPBACK_NAMES:
            await _refuse(send, 403, "no API token is configured, so only loopback Host names are served "
                                     "(set GUARDIAN_API_TOKEN to serve other names)")
            return
        length = headers.get("content-length")
        if length is not None:
            if not length.strip().isdigit():
                await _refuse(send, 400, "bad Content-Length")
                return
            if int(length) > self.max_body:
                await _refuse(send, 413, f"body of {length} bytes is over the limit of {self.max_body}")
                return
        path = scope.get("path", "")
        if (scope["method"] in STATE_CHANGING and not path.startswith(CSRF_EXEMPT)
                and "authorization" not in headers
                and (not self.token or f"{SESSION_COOKIE}=" in headers.get("cookie", ""))
                and not is_json_type(headers.get("content-type", ""))):
            await _refuse(send, 415, "state-changing requests need Content-Type: application/json "
                                     "(or an Authorization header)")
            return
        await self._bounded(scope, receive, send)

    async def _bounded(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Count body bytes as the app reads them; past the limit, answer 413 ourselves and tell the
        app the client left (a raised error would be turned into a 400 by FastAPI's body parsing)."""
        seen, started, refused = [0], [False], [False]

        async def counting_receive() -> Message:
            if refused[0]:
                return {"type": "http.disconnect"}
            msg = await receive()
            if msg["type"] == "http.request":
                seen[0] += len(msg.get("body", b""))
                if seen[0] > self.max_body:
                    refused[0] = True
                    if not started[0]:
                        started[0] = True
                        await _refuse(send, 413, f"body is over the limit of {self.max_body} bytes")
                    return {"type": "http.disconnect"}
            return msg

        async def tracking_send(msg: Message) -> None:
            if refused[0]:
                return  # the 413 is already out; drop what the app says after the disconnect
            if msg["type"] == "http.response.start":
                started[0] = True
            await send(msg)

        await self.app(scope, counting_receive, tracking_send)
