"""Events API and slash command end to end: signed requests in, acked at once, the report from the
real deterministic investigator posted in thread to a local stand-in for Slack's Web API."""
from __future__ import annotations

import json
import time
from urllib.parse import urlencode

from serving_support import SLACK_SECRET, slack_headers

from guardian.slack.client import SlackPoster
from guardian.slack.format import BLOCK_LIMIT


def _event(client, event: dict, event_id="Ev01", **headers):
    body = json.dumps({"type": "event_callback", "team_id": "T1", "event_id": event_id,
                       "event_time": int(time.time()), "event": event}).encode()
    t0 = time.monotonic()
    r = client.post("/slack/events", content=body,
                    headers={"Content-Type": "application/json", **slack_headers(SLACK_SECRET, body, **headers)})
    return r, time.monotonic() - t0


def _command(client, **fields):
    body = urlencode({"command": "/guardian", "team_id": "T1", "user_id": "U42", **fields}).encode()
    return client.post("/slack/commands", content=body, headers={
        "Content-Type": "application/x-www-form-urlencoded", **slack_headers(SLACK_SECRET, body)})


def _in_thread(ts):
    return lambda calls: [c for c in calls if c["body"].get("thread_ts") == ts]


def test_app_mention_is_acked_fast_and_answered_in_thread(client, slack_api):
    ts = "1700000100.000200"
    r, took = _event(client, {"type": "app_mention", "user": "U42", "channel": "C1", "ts": ts,
                              "text": "<@U0GUARD> why is checkout failing?"})
    assert r.status_code == 200 and r.json() == {"ok": True}
    assert took < 3.0  # Slack's deadline; the investigation runs after the ack
    calls = _in_thread(ts)(slack_api.wait_for(_in_thread(ts), timeout=60))
    text = "\n".join(c["body"]["text"] for c in calls)
    assert all(c["path"] == "/api/chat.postMessage" and c["body"]["channel"] == "C1" for c in calls)
    assert calls[0]["auth"] == "Bearer xoxb-test"
    assert "payments" in text and "*Root causes*" in text  # markdown turned into mrkdwn
    assert all(len(c["body"]["text"]) <= BLOCK_LIMIT for c in calls)
    assert calls[0]["body"]["blocks"][0]["text"]["type"] == "mrkdwn"


def test_slack_retries_are_deduplicated(client, app, slack_api):
    ts = "1700000200.000300"
    event = {"type": "app_mention", "user": "U42", "channel": "C1", "ts": ts, "text": "<@U0GUARD> what broke?"}
    first, _ = _event(client, event, event_id="EvRetry")
    again, _ = _event(client, event, event_id="EvRetry", **{"X-Slack-Retry-Num": "1",
                                                               "X-Slack-Retry-Reason": "http_timeout"})
    assert first.json() == {"ok": True} and again.json() == {"ok": True, "duplicate": True}
    slack_api.wait_for(_in_thread(ts), timeout=60)
    assert len(app.state.jobs._jobs) == 1


def test_direct_message_is_answered_in_its_thread(client, slack_api):
    ts = "1700000300.000400"
    r, _ = _event(client, {"type": "message", "channel_type": "im", "user": "U42", "channel": "D9",
                           "ts": ts, "text": "is payments healthy?"}, event_id="EvDM")
    assert r.json() == {"ok": True}
    calls = _in_thread(ts)(slack_api.wait_for(_in_thread(ts), timeout=60))
    assert calls[0]["body"]["channel"] == "D9"


def test_bot_messages_and_other_events_are_ignored(client, app, slack_api):
    bot = {"type": "message", "channel_type": "im", "bot_id": "B1", "channel": "D9", "ts": "1.2", "text": "report"}
    assert _event(client, bot, event_id="EvBot")[0].json()["ignored"] == "message"
    edit = {"type": "message", "subtype": "message_changed", "channel_type": "im", "channel": "D9", "ts": "1.3"}
    assert _event(client, edit, event_id="EvEdit")[0].json()["ignored"] == "message"
    joined = {"type": "member_joined_channel", "channel": "C1", "user": "U42"}
    assert _event(client, joined, event_id="EvJoin")[0].json()["ignored"] == "member_joined_channel"
    time.sleep(0.3)
    assert app.state.jobs._jobs == {} and slack_api.calls == []


def test_empty_mention_gets_the_usage(client, slack_api):
    r, _ = _event(client, {"type": "app_mention", "channel": "C1", "ts": "5.5", "text": "<@U0GUARD>"},
                  event_id="EvEmpty")
    assert r.json() == {"ok": True}
    calls = slack_api.wait_for(lambda c: len(c) >= 1, timeout=10)
    assert "/guardian" in calls[0]["body"]["text"] and calls[0]["body"]["thread_ts"] == "5.5"


def test_slash_command_acks_then_answers_in_a_thread(client, slack_api):
    r = _command(client, text="why is checkout failing?", channel_id="C2")
    assert r.status_code == 200
    assert r.json()["response_type"] == "ephemeral" and "Investigating" in r.json()["text"]
    calls = slack_api.wait_for(lambda c: any(x["body"].get("thread_ts") for x in c), timeout=60)
    question, answer = calls[0], [c for c in calls if c["body"].get("thread_ts")]
    assert question["body"]["channel"] == "C2" and "thread_ts" not in question["body"]
    assert "<@U42> asked: why is checkout failing?" in question["body"]["text"]
    assert answer[0]["body"]["thread_ts"] == "1700000000.000001"  # the stand-in's ts of the question
    assert "payments" in "\n".join(c["body"]["text"] for c in answer)


def test_slash_command_help_and_anomalies(client, slack_api):
    r = _command(client, text="help", channel_id="C2")
    assert "/guardian" in r.json()["text"] and r.json()["response_type"] == "ephemeral"
    r = _command(client, text="anomalies", channel_id="C3")
    assert "anomalies" in r.json()["text"]
    calls = slack_api.wait_for(lambda c: len(c) >= 1, timeout=30)
    assert calls[0]["body"]["channel"] == "C3" and "anomaly report" in calls[0]["body"]["text"]
    assert "payments" in calls[0]["body"]["text"]


def test_long_messages_are_split_into_one_thread(slack_api):
    poster = SlackPoster("xoxb-test", slack_api.url + "/api")
    text = "\n".join(f"- evidence line {i}: " + "w" * 120 for i in range(100))  # ~14k chars
    first = poster.post("C7", text)
    calls = slack_api.calls
    assert len(calls) == len(text) // BLOCK_LIMIT + 1 and first == "1700000000.000001"
    assert "thread_ts" not in calls[0]["body"]
    assert all(c["body"]["thread_ts"] == first for c in calls[1:])
    assert "\n".join(c["body"]["text"] for c in calls) == text


def test_slack_refusing_our_post_is_survived(store):
    from fastapi.testclient import TestClient
    from serving_support import RecordingServer

    from guardian.api.main import create_app

    refuse = lambda path, body, n: (200, {"ok": False, "error": "channel_not_found"})  # noqa: E731
    with RecordingServer(reply=refuse) as slack_api:
        app = create_app(store, {"api": {"token": "t"}, "slack": {
            "signing_secret": SLACK_SECRET, "bot_token": "xoxb-test", "api_url": slack_api.url + "/api/"}})
        with TestClient(app) as client:
            r, _ = _event(client, {"type": "app_mention", "channel": "C404", "ts": "9.9",
                                   "text": "<@U0GUARD> what broke in the last 10m?"}, event_id="EvGone")
            assert r.status_code == 200
            slack_api.wait_for(lambda c: len(c) >= 1, timeout=60)
            job = next(iter(app.state.jobs._jobs.values()))
            job.future.result(timeout=60)
            assert job.status == "done"  # the report was made; only its delivery failed
            assert job.window.end_ns - job.window.start_ns == 600 * 10**9  # "last 10m" from the question
            assert client.get("/healthz").status_code == 200


def test_a_slow_investigation_gets_a_progress_note_first(store, slack_api):
    import threading

    from fastapi.testclient import TestClient

    from guardian.api.main import create_app
    from guardian.investigate.engine import investigate

    release = threading.Event()

    def slow(store, question, window, engine):  # an LLM run takes a while; the report is the real one
        release.wait(30)
        return investigate(store, question, window, "deterministic")

    app = create_app(store, {"api": {"token": "t"}, "slack": {
        "signing_secret": SLACK_SECRET, "bot_token": "xoxb-test", "api_url": slack_api.url + "/api/"}},
        investigate_fn=slow)
    app.state.slack.progress_after_s = 0.2
    with TestClient(app) as client:
        _event(client, {"type": "app_mention", "channel": "C1", "ts": "7.7",
                        "text": "<@U0GUARD> why is checkout failing?"}, event_id="EvSlow")
        first = slack_api.wait_for(lambda c: len(c) >= 1, timeout=10)[0]["body"]
        assert first["thread_ts"] == "7.7" and first["text"].startswith("Still investigating (running)")
        release.set()
        calls = slack_api.wait_for(lambda c: len(c) >= 2, timeout=60)
        assert "payments" in calls[1]["body"]["text"] and calls[1]["body"]["thread_ts"] == "7.7"
