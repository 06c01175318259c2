"""Shared by the API, Slack, schedule and MCP tests: a seeded real store, a stand-in for Slack's
Web API and for a webhook (real HTTP servers on loopback), Slack request signing, a uvicorn runner.

The seeded incident: frontend -> checkout -> payments -> postgres, steady for 10 minutes, then
for the last 10 minutes payments POST /charge fails 40% of the time (503, "card processor
timeout") while an unrelated service, recommend, is healthy throughout.
"""
from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import random
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

from capture.span import Span, new_trace_id
from capture.store.factory import open_store

TOKEN = "t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


def _span(name, kind, svc, start, dur_ms, parent=None, status="OK", msg="", **attrs):
    return Span(name=name, kind=kind, start_time_unix_nano=start,
                end_time_unix_nano=start + int(dur_ms * 1e6), status_code=status, status_message=msg,
                attributes=attrs, resource={"service.name": svc},
                trace_id=parent.trace_id if parent else new_trace_id(),
                parent_span_id=parent.span_id if parent else None)


def incident_spans(now_ns: int | None = None, seconds: int = 1200, seed: int = 7) -> list[Span]:
    """One checkout trace and one recommend trace per second; payments fails in the last half."""
    rnd = random.Random(seed)
    now_ns = now_ns or time.time_ns()
    t0 = now_ns - seconds * 10**9
    out: list[Span] = []
    for i in range(seconds):
        start = t0 + i * 10**9 + rnd.randrange(0, 10**8)
        failing = i >= seconds // 2 and rnd.random() < 0.4
        fe = _span("GET /checkout", "SERVER", "frontend", start, 40, **{
            "http.request.method": "GET", "url.path": "/checkout",
            "http.response.status_code": 502 if failing else 200}, status="ERROR" if failing else "OK")
        fc = _span("POST /checkout", "CLIENT", "frontend", start + 10**6, 36, fe,
                   status="ERROR" if failing else "OK",
                   **{"http.request.method": "POST", "url.path": "/checkout", "server.address": "checkout",
                      "http.response.status_code": 502 if failing else 200})
        co = _span("POST /checkout", "SERVER", "checkout", start + 2 * 10**6, 34, fc,
                   status="ERROR" if failing else "OK",
                   **{"http.request.method": "POST", "url.path": "/checkout",
                      "http.response.status_code": 502 if failing else 200})
        cc = _span("POST /charge", "CLIENT", "checkout", start + 3 * 10**6, 30, co,
                   status="ERROR" if failing else "OK",
                   **{"http.request.method": "POST", "url.path": "/charge", "server.address": "payments",
                      "http.response.status_code": 503 if failing else 200})
        pay = _span("POST /charge", "SERVER", "payments", start + 4 * 10**6, 28, cc,
                    status="ERROR" if failing else "OK", msg="card processor timeout" if failing else "",
                    **{"http.request.method": "POST", "url.path": "/charge",
                       "http.response.status_code": 503 if failing else 200})
        db = _span("SELECT", "CLIENT", "payments", start + 5 * 10**6, 3 + rnd.random(), pay, **{
            "db.system": "postgresql", "db.operation.name": "SELECT",
            "db.query.text": "SELECT balance FROM accounts WHERE id = $1"})
        rec = _span("GET /recommend", "SERVER", "recommend", start + 5 * 10**8, 8 + rnd.random() * 4,
                    **{"http.request.method": "GET", "url.path": "/recommend",
                       "http.response.status_code": 200})
        out += [fe, fc, co, cc, pay, db, rec]
    return out


def seeded_store(path: str | None = None, now_ns: int | None = None):
    store = open_store(path)
    store.append(incident_spans(now_ns))
    store.flush()
    return store


# -- Slack -----------------------------------------------------------------------------------

def slack_headers(secret: str, body: bytes, ts: int | None = None, **extra: str) -> dict[str, str]:
    """Headers Slack sends: X-Slack-Signature is v0=HMAC-SHA256(secret, "v0:{ts}:{body}")."""
    ts = int(time.time()) if ts is None else ts
    sig = hmac.new(secret.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": str(ts), "X-Slack-Signature": f"v0={sig}", **extra}


class _Recorder(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's naming)
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        srv = self.server
        ctype = self.headers.get("Content-Type", "")
        body = json.loads(raw) if "json" in ctype else {k: v[0] for k, v in parse_qs(raw.decode()).items()}
        with srv.cond:
            srv.calls.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
            status, reply = srv.reply(self.path, body, len(srv.calls))
            srv.cond.notify_all()
        data = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):  # keep test output clean
        pass


class RecordingServer:
    """A real HTTP server on loopback that records every POST (Slack Web API or webhook stand-in)."""

    def __init__(self, reply=None):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
        self.httpd.calls, self.httpd.cond = [], threading.Condition()
        self.httpd.reply = reply or self.slack_ok
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @staticmethod
    def slack_ok(path, body, n):
        return 200, {"ok": True, "channel": body.get("channel"), "ts": f"1700000000.{n:06d}"}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    @property
    def calls(self) -> list[dict]:
        with self.httpd.cond:
            return list(self.httpd.calls)

    def wait_for(self, predicate, timeout: float = 30.0) -> list[dict]:
        """Block until predicate(calls) is true; the calls, or AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        with self.httpd.cond:
            while not predicate(self.httpd.calls):
                left = deadline - time.monotonic()
                assert left > 0, f"timed out; calls so far: {self.httpd.calls}"
                self.httpd.cond.wait(left)
            return list(self.httpd.calls)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


# -- serving ---------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(app, port: int | None = None):
    """Serve an ASGI app with uvicorn in a thread on loopback; yields its base URL."""
    import uvicorn

    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
