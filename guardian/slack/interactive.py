"""POST /slack/interactive: the report's "Right" / "Wrong" buttons, with the real cause typed in
the input block above them, recorded in incident memory.

Signed like every Slack request (guardian.slack.events rules 1 and 4: checked on the raw body,
accepted once). `feedback_blocks` builds the blocks posted under a report.
"""
from __future__ import annotations

import json
import logging
from urllib.parse import parse_qs

from fastapi import APIRouter, BackgroundTasks, HTTPException, Request

from guardian.slack.events import _once, _verified_body

log = logging.getLogger(__name__)
router = APIRouter(prefix="/slack", tags=["slack"])
RIGHT, WRONG, CAUSE_BLOCK, CAUSE_INPUT = "guardian_right", "guardian_wrong", "guardian_cause", "cause"


def feedback_blocks(investigation_id: str) -> list[dict]:
    """An input for the real cause and the two buttons; the buttons carry the investigation id."""
    return [
        {"type": "input", "block_id": CAUSE_BLOCK, "optional": True,
         "label": {"type": "plain_text", "text": "Real cause (if the report is wrong)"},
         "element": {"type": "plain_text_input", "action_id": CAUSE_INPUT,
                     "placeholder": {"type": "plain_text", "text": "service [operation]: what happened"}}},
        {"type": "actions", "block_id": "guardian_feedback", "elements": [
            {"type": "button", "action_id": RIGHT, "style": "primary", "value": investigation_id,
             "text": {"type": "plain_text", "text": "Right"}},
            {"type": "button", "action_id": WRONG, "style": "danger", "value": investigation_id,
             "text": {"type": "plain_text", "text": "Wrong"}}]},
    ]


def parse_cause(text: str | None) -> tuple[str | None, str | None, str | None]:
    """'postgres SELECT orders: missing index' -> ('postgres', 'SELECT orders', 'missing index')."""
    text = (text or "").strip()
    if not text:
        return None, None, None
    head, _, note = text.partition(": ")  # "payments:8081" keeps its port; ": " starts the note
    parts = head.strip().split(" ", 1)
    return parts[0][:200] or None, (parts[1].strip()[:300] if len(parts) > 1 else None), note.strip()[:2000] or None


def _plain(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@router.post("/interactive")
async def interactive(request: Request, background: BackgroundTasks) -> dict:
    body = await _verified_body(request, "interactive")
    _once(request, "interactive")
    try:
        payload = json.loads(parse_qs(body.decode("utf-8", "replace"))["payload"][0])
        kind = payload["type"]
    except (KeyError, IndexError, ValueError, TypeError):
        raise HTTPException(400, "expected a form-encoded Slack interaction with a JSON 'payload'") from None
    if kind != "block_actions":
        return {"ok": True, "ignored": kind}
    actions = [a for a in payload.get("actions") or [] if isinstance(a, dict) and a.get("action_id") in (RIGHT, WRONG)]
    if not actions:
        return {"ok": True, "ignored": "no Guardian action"}
    user = (payload.get("user") or {}).get("id") or "slack"
    values = ((payload.get("state") or {}).get("values") or {}).get(CAUSE_BLOCK) or {}
    service, operation, note = parse_cause((values.get(CAUSE_INPUT) or {}).get("value"))
    store = request.app.state.memory.store
    marked = []
    for a in actions:
        outcome = "right" if a["action_id"] == RIGHT else "wrong"
        row = store.mark(str(a.get("value") or ""), outcome, service,
                         operation, None, note, f"slack:{user}")
        if row is None:
            raise HTTPException(404, f"no investigation {a.get('value')!r} in memory")
        marked.append({"id": row["id"], "outcome": outcome, "cause": row["cause_service"]})
    channel = (payload.get("channel") or {}).get("id")
    thread = (payload.get("message") or {}).get("thread_ts") or (payload.get("message") or {}).get("ts")
    if channel:
        m = marked[-1]
        text = f"<@{user}> marked this investigation {m['outcome']}" + (
            f"; real cause: {_plain(m['cause'])}" if m["outcome"] == "wrong" and m["cause"] else "") + ". Noted for next time."
        background.add_task(request.app.state.slack.reply, channel, text, thread)
    request.app.state.slack.metrics.slack_events.labels("interactive", "accepted").inc()
    return {"ok": True, "marked": marked}
