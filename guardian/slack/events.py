"""POST /slack/events (Events API) and POST /slack/commands (slash command).

Rule 1: the signature (v0 HMAC-SHA256 over "v0:{ts}:{raw body}", ts within 5 minutes) is
checked on the raw body before anything is parsed; a bad or stale one is a 401.
Rule 2: Slack wants an answer within 3 s, so handlers only acknowledge; investigations run
on the job pool and their reports are posted in the thread through the Web API.
Rule 3: Slack retries events it thinks were lost: event ids seen recently are acknowledged
and dropped.
"""
from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections import OrderedDict
from urllib.parse import parse_qs

from fastapi import APIRouter, BackgroundTasks, HTTPException, Request
from slack_sdk.signature import SignatureVerifier

from guardian.api.jobs import Busy, Job
from guardian.slack.client import SlackPoster
from guardian.window import WindowError, resolve_window

log = logging.getLogger(__name__)
router = APIRouter(prefix="/slack", tags=["slack"])
_MENTION = re.compile(r"<@[A-Z0-9]+(\|[^>]*)?>")
USAGE = ("Ask me about your services, e.g. `/guardian why is checkout slow?` or mention me with a question. "
         "`/guardian anomalies` posts the current anomaly report.")


class RecentIds:
    """Event ids seen in the last `ttl_s` seconds (bounded), to drop Slack's retries."""

    def __init__(self, ttl_s: float = 3600, max_size: int = 10000):
        self.ttl_s, self.max_size = ttl_s, max_size
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def first_time(self, key: str) -> bool:
        now = time.monotonic()
        with self._lock:
            while self._seen and (len(self._seen) >= self.max_size
                                  or next(iter(self._seen.values())) < now - self.ttl_s):
                self._seen.popitem(last=False)
            if key in self._seen:
                return False
            self._seen[key] = now
            return True


class SlackService:
    """Slack settings, the Web API poster and the dedupe memory of one app."""

    def __init__(self, settings, jobs, metrics, verifier_clock=None):
        self.settings, self.jobs, self.metrics = settings, jobs, metrics
        self.recent = RecentIds()
        self.verifier = None
        if settings.signing_secret:
            self.verifier = (SignatureVerifier(settings.signing_secret, verifier_clock) if verifier_clock
                             else SignatureVerifier(settings.signing_secret))
        self.poster = SlackPoster(settings.bot_token, settings.api_url) if settings.bot_token else None

    def post(self, channel: str, text: str, thread_ts: str | None = None, markdown: bool = False) -> str | None:
        if self.poster is None:
            log.warning("SLACK_BOT_TOKEN not set: cannot post to %s", channel)
            return None
        return self.poster.post(channel, text, thread_ts, markdown)

    def investigate(self, store, question: str, channel: str, thread_ts: str | None, engine: str) -> None:
        """Submit an investigation whose report (or failure) lands in the thread."""
        def deliver(job: Job) -> None:
            if job.status == "done":
                self.post(channel, job.report.to_markdown(), thread_ts, markdown=True)
            else:
                self.post(channel, f"Sorry, the investigation failed: {job.error}", thread_ts)

        try:
            window = resolve_window(store, self.settings.window)
            self.jobs.submit(question, window, engine, on_done=deliver)
        except (Busy, WindowError) as e:
            self.post(channel, f"Can't investigate right now: {e}", thread_ts)


async def _verified_body(request: Request, kind: str) -> bytes:
    svc: SlackService = request.app.state.slack
    if svc.verifier is None:
        raise HTTPException(503, "Slack is not configured: set SLACK_SIGNING_SECRET (and SLACK_BOT_TOKEN)")
    body = await request.body()
    try:
        ok = svc.verifier.is_valid_request(body, dict(request.headers))
    except ValueError:  # a timestamp header that is not a number
        ok = False
    if not ok:
        svc.metrics.slack_events.labels(kind, "bad_signature").inc()
        raise HTTPException(401, "invalid or stale Slack signature")
    return body


def _question(text: str) -> str:
    return _MENTION.sub("", text or "").strip()


@router.post("/events")
async def events(request: Request, background: BackgroundTasks) -> dict:
    """Events API: url_verification, app_mention and direct messages (answered in thread)."""
    body = await _verified_body(request, "event")
    svc: SlackService = request.app.state.slack
    try:
        payload = json.loads(body)
        kind = payload["type"]
    except (ValueError, KeyError, TypeError):
        raise HTTPException(400, "expected a JSON Slack event payload with a 'type'") from None
    if kind == "url_verification":
        return {"challenge": payload.get("challenge", "")}
    if kind != "event_callback" or not isinstance(payload.get("event"), dict):
        return {"ok": True, "ignored": kind}
    event_id = str(payload.get("event_id") or "")
    if event_id and not svc.recent.first_time(event_id):
        svc.metrics.slack_events.labels("event", "duplicate").inc()
        return {"ok": True, "duplicate": True}
    event = payload["event"]
    is_dm = event.get("type") == "message" and event.get("channel_type") == "im"
    from_bot = event.get("bot_id") or event.get("subtype")  # our own replies come back as events
    if not (event.get("type") == "app_mention" or is_dm) or from_bot or not event.get("channel"):
        return {"ok": True, "ignored": event.get("type")}
    question = _question(event.get("text", ""))
    channel, thread_ts = event["channel"], event.get("thread_ts") or event.get("ts")
    svc.metrics.slack_events.labels("event", "accepted").inc()
    if not question:
        background.add_task(svc.post, channel, USAGE, thread_ts)
    else:
        background.add_task(svc.investigate, request.app.state.store, question, channel, thread_ts,
                            request.app.state.settings.api.engine)
    return {"ok": True}


@router.post("/commands")
async def commands(request: Request, background: BackgroundTasks) -> dict:
    """Slash command: `/guardian <question>` or `/guardian anomalies`; acked at once, answered in channel."""
    body = await _verified_body(request, "command")
    svc: SlackService = request.app.state.slack
    form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
    channel = form.get("channel_id")
    if not form.get("command") or not channel:
        raise HTTPException(400, "expected a form-encoded slash command with 'command' and 'channel_id'")
    text = form.get("text", "").strip()
    svc.metrics.slack_events.labels("command", "accepted").inc()
    if not text or text.lower() == "help":
        return {"response_type": "ephemeral", "text": USAGE}
    if text.lower() == "anomalies":
        background.add_task(request.app.state.scheduler.run_once, "slack", channel)
        return {"response_type": "ephemeral", "text": "Looking for anomalies; the report will be posted here."}

    def start() -> None:
        user = form.get("user_id")
        ts = svc.post(channel, f"<@{user}> asked: {text}" if user else f"Question: {text}")
        svc.investigate(request.app.state.store, text, channel, ts, request.app.state.settings.api.engine)

    background.add_task(start)
    return {"response_type": "ephemeral", "text": f"Investigating: {text}. The report will be posted in a thread."}
