"""POST /slack/events (Events API) and POST /slack/commands (slash command).

Rule 1: the signature (v0 HMAC-SHA256 over "v0:{ts}:{raw body}", ts within 5 minutes) is
checked on the raw body before anything is parsed; a bad or stale one is a 401.
Rule 2: Slack wants an answer within 3 s, so handlers only acknowledge; investigations run
on the job pool and their reports are posted in the thread through the Web API.
Rule 3: Slack retries events it thinks were lost: event ids seen recently are acknowledged
and dropped.
Rule 4: a signed request is accepted once. Events with an event_id are deduplicated by it
(rule 3, remembered longer than a signature stays valid); for slash commands and events
without one, signatures seen within the 5-minute validity window are remembered, so a captured
request cannot be replayed. Slack's own retries carry a new timestamp, hence a new signature.
"""
from __future__ import annotations

import json
import re
from urllib.parse import parse_qs

from fastapi import APIRouter, BackgroundTasks, HTTPException, Request

from guardian.slack.service import SlackService

router = APIRouter(prefix="/slack", tags=["slack"])
MAX_BODY = 1 << 20  # Slack's event payloads are a few KB; don't hash megabytes for an attacker
_MENTION = re.compile(r"<@[A-Z0-9]+(\|[^>]*)?>")
USAGE = ("Ask me about your services, e.g. `/guardian why is checkout slow in the last 30m?` or mention "
         "me with a question. `/guardian anomalies` posts the current anomaly report.")


async def _verified_body(request: Request, kind: str) -> bytes:
    svc: SlackService = request.app.state.slack
    if svc.verifier is None:
        raise HTTPException(503, "Slack is not configured: set SLACK_SIGNING_SECRET (and SLACK_BOT_TOKEN)")
    body = await request.body()
    if len(body) > MAX_BODY:
        raise HTTPException(413, f"Slack payloads are small; this one is {len(body)} bytes")
    headers = {k.lower(): v for k, v in request.headers.items()}
    try:
        ok = svc.verifier.is_valid_request(body, headers)
    except (ValueError, TypeError):  # a timestamp that is not a number, a non-ASCII signature
        ok = False
    if not ok:
        svc.metrics.slack_events.labels(kind, "bad_signature").inc()
        raise HTTPException(401, "invalid or stale Slack signature")
    return body


def _once(request: Request, kind: str) -> None:
    """Rule 4 for requests no id dedupes: the same signature twice is a replay."""
    svc: SlackService = request.app.state.slack
    if not svc.signatures.first_time(request.headers.get("x-slack-signature", "")):
        svc.metrics.slack_events.labels(kind, "replayed").inc()
        raise HTTPException(409, "this signed request was already received (replay refused)")


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
    if not event_id:
        _once(request, "event")
    elif not svc.recent.first_time(event_id):
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
        background.add_task(svc.reply, channel, USAGE, thread_ts)
    else:
        background.add_task(svc.investigate, request.app.state.store, question, channel, thread_ts,
                            request.app.state.settings.api.engine)
    return {"ok": True}


@router.post("/commands")
async def commands(request: Request, background: BackgroundTasks) -> dict:
    """Slash command: `/guardian <question>` or `/guardian anomalies`; acked at once, answered in channel."""
    body = await _verified_body(request, "command")
    _once(request, "command")
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
        ts = svc.reply(channel, f"<@{user}> asked: {text}" if user else f"Question: {text}")
        svc.investigate(request.app.state.store, text, channel, ts, request.app.state.settings.api.engine)

    background.add_task(start)
    return {"response_type": "ephemeral", "text": f"Investigating: {text}. The report will be posted in a thread."}
