"""Scheduled anomaly reports: when they fire (interval, cron), what they post (Slack, webhook),
and the history (kept on disk, queryable over the API)."""
from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from serving_support import AUTH, TOKEN, RecordingServer

from guardian.api.main import create_app
from guardian.api.settings import ScheduleSettings, load_settings
from guardian.schedule.history import ReportHistory
from guardian.schedule.scheduler import Scheduler
from guardian.slack.service import SlackService


def _ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


def test_next_fire_by_interval_and_cron(store):
    assert Scheduler(store, ScheduleSettings(interval_s=300)).next_fire(1000.0) == 1300.0
    cron = Scheduler(store, ScheduleSettings(cron="*/15 9-17 * * 1-5"))  # UTC
    assert cron.next_fire(_ts("2024-05-06T09:07:00")) == _ts("2024-05-06T09:15:00")
    assert cron.next_fire(_ts("2024-05-06T17:50:00")) == _ts("2024-05-07T09:00:00")
    assert cron.next_fire(_ts("2024-05-10T17:45:00")) == _ts("2024-05-13T09:00:00")  # Fri -> Mon


def test_schedule_settings_from_env_and_yaml(tmp_path):
    s = load_settings(env={"GUARDIAN_SCHEDULE_INTERVAL": "60", "GUARDIAN_SCHEDULE_WEBHOOK_URL": "http://h/x"})
    assert s.schedule.interval_s == 60 and s.schedule.enabled and s.schedule.webhook_url == "http://h/x"
    cfg = tmp_path / "g.yaml"
    cfg.write_text("schedule:\n  cron: '0 * * * *'\n  slack_channel: C9\n  window: 30m\n")
    s = load_settings(cfg, env={})
    assert (s.schedule.cron, s.schedule.slack_channel, s.schedule.window) == ("0 * * * *", "C9", "30m")
    assert not load_settings(env={}).schedule.enabled
    with pytest.raises(ValidationError, match="cron"):
        ScheduleSettings(cron="every tuesday")
    with pytest.raises(ValidationError):
        ScheduleSettings(interval_s=-5)


def test_run_posts_to_slack_and_webhook_and_keeps_history(store, slack_api, webhook, tmp_path):
    hist = tmp_path / "reports.jsonl"
    settings = load_settings(env={}, overrides={
        "slack": {"bot_token": "xoxb-test", "api_url": slack_api.url + "/api/"},
        "schedule": {"interval_s": 3600, "slack_channel": "C-ops", "webhook_url": webhook.url + "/hook",
                     "history_path": str(hist), "window": "10m"}})
    slack = SlackService(settings.slack, jobs=None, metrics=None)
    record = Scheduler(store, settings.schedule, slack).run_once()
    assert record["anomaly_count"] >= 1 and record["deliveries"] == {"slack": "ok", "webhook": "ok"}
    assert record["anomalies"][0]["trace_ids"]
    posted = slack_api.calls[0]["body"]
    assert posted["channel"] == "C-ops" and "payments" in posted["text"] and "anomaly report" in posted["text"]
    hook = webhook.calls[0]
    assert hook["path"] == "/hook" and hook["body"]["id"] == record["id"]
    assert hook["body"]["anomaly_count"] == record["anomaly_count"] and "text" in hook["body"]
    # the history survives a restart
    reloaded = ReportHistory(str(hist))
    assert reloaded.get(record["id"])["anomaly_count"] == record["anomaly_count"]
    assert json.loads(hist.read_text().splitlines()[0])["id"] == record["id"]


def test_a_failed_delivery_is_recorded_and_the_next_run_still_happens(store, tmp_path):
    with RecordingServer(reply=lambda p, b, n: (500, {"oops": True})) as broken:
        settings = ScheduleSettings(interval_s=3600, webhook_url=broken.url + "/hook", window="10m")
        sched = Scheduler(store, settings)
        first, second = sched.run_once(), sched.run_once()
    assert first["deliveries"]["webhook"].startswith("failed") and "500" in first["deliveries"]["webhook"]
    assert second["id"] != first["id"] and len(sched.history.list()) == 2


def test_empty_window_is_recorded_not_posted(store, webhook):
    sched = Scheduler(store, ScheduleSettings(interval_s=1, webhook_url=webhook.url, window="1ms"))
    time.sleep(0.01)
    record = sched.run_once()
    assert record["error"].startswith("no spans") and record["deliveries"] == {} and webhook.calls == []


def test_the_schedule_fires_by_itself_and_history_is_queryable(store, webhook):
    app = create_app(store, {"api": {"token": TOKEN}, "schedule": {
        "interval_s": 0.3, "webhook_url": webhook.url + "/hook", "window": "10m"}})
    with TestClient(app) as c:
        webhook.wait_for(lambda calls: len(calls) >= 2, timeout=30)
        body = c.get("/v1/reports", headers=AUTH).json()
        assert body["schedule"] == 0.3 and len(body["reports"]) >= 2
        newest = body["reports"][0]
        assert newest["at_ns"] >= body["reports"][1]["at_ns"] and newest["trigger"] == "schedule"
        assert c.get(f"/v1/reports/{newest['id']}", headers=AUTH).json()["id"] == newest["id"]
        manual = c.post("/v1/reports/run", headers=AUTH).json()
        assert manual["trigger"] == "api" and manual["anomaly_count"] >= 1
        assert c.get("/v1/reports?limit=1&anomalies_only=true", headers=AUTH).json()["reports"][0]["anomaly_count"]
        assert c.get("/v1/reports/nope", headers=AUTH).status_code == 404
        assert c.get("/v1/reports?since=last-tuesday", headers=AUTH).status_code == 400
        assert c.get("/v1/reports?limit=0", headers=AUTH).status_code == 422
        future = time.time() + 3600
        assert c.get(f"/v1/reports?since={future:.0f}", headers=AUTH).json()["reports"] == []
    n = len(webhook.calls)
    time.sleep(0.8)
    assert len(webhook.calls) == n  # app shutdown stopped the scheduler


def test_a_report_can_carry_an_investigation_of_the_top_anomaly(store, webhook):
    settings = ScheduleSettings(interval_s=60, webhook_url=webhook.url, window="10m", investigate=True)
    record = Scheduler(store, settings, engine="deterministic").run_once()
    report = record["investigation"]
    assert report["root_causes"][0]["service"] == "payments"
    assert report["question"].startswith("What is causing this:")
    assert "# Guardian investigation" in webhook.calls[0]["body"]["text"]


def test_captured_text_in_a_report_is_inert():
    from guardian.schedule.scheduler import describe
    from guardian.slack.format import to_mrkdwn

    line = describe({"description": "GET /x](https://evil.example/p) <!channel> error rate 0% -> 40%"})
    slack = to_mrkdwn(line)
    assert "<https://evil" not in slack and "<!channel>" not in slack and "](https://evil" not in line
    assert "0% -&gt; 40%" in slack and "`https://evil.example/p)`" in line


def test_an_investigation_of_a_scheduled_report_is_kept_in_the_incident_memory(store, tmp_path):
    """Like the API's: recorded under the report's id with source "schedule", listed by
    GET /v1/incidents, and the next one finds it as a similar past incident once marked."""
    app = create_app(store, {"api": {"token": TOKEN, "engine": "deterministic"},
                             "memory": {"path": str(tmp_path / "memory.db")},
                             "schedule": {"interval_s": 3600, "window": "10m", "investigate": True}})
    with TestClient(app) as c:
        first = c.post("/v1/reports/run", headers=AUTH).json()
        assert first["investigation"]["root_causes"][0]["service"] == "payments"
        assert first["incident_id"] == first["id"]
        incidents = c.get("/v1/incidents", headers=AUTH).json()["incidents"]
        mine = [i for i in incidents if i["id"] == first["id"]]
        assert mine and mine[0]["source"] == "schedule" and mine[0]["top_service"] == "payments"
        assert mine[0]["question"].startswith("What is causing this:")
        app.state.memory.store.mark(first["id"], "right", by="test")
        second = c.post("/v1/reports/run", headers=AUTH).json()
        assert [s["id"] for s in second["investigation"]["similar"]] == [first["id"]]
