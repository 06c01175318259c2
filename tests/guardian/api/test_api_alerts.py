"""Alert-driven investigations: a real Alertmanager sends its webhook to a live `guardian serve`;
payload checks, generic mapping, dedupe, resolve, rate limit and window rules on the app."""
from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import httpx
import pytest
from alertmanager_support import BINARY, alertmanager
from fastapi.testclient import TestClient
from serving_support import AUTH, TOKEN, RecordingServer
from test_api_serve import _serve, _stop

from guardian.alerts.payloads import Alert
from guardian.alerts.receiver import alert_window
from guardian.api.main import create_app


def iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f000Z")


def am_payload(*alerts: dict, status: str = "firing") -> dict:
    """Alertmanager's webhook JSON (version 4) as it sends it."""
    return {"version": "4", "groupKey": '{}:{alertname="PaymentsErrors"}', "truncatedAlerts": 0,
            "status": status, "receiver": "guardian", "groupLabels": {"alertname": "PaymentsErrors"},
            "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am:9093", "alerts": list(alerts)}


def am_alert(fp: str, starts_ns: int, status: str = "firing", ends_ns: int | None = None, **labels) -> dict:
    return {"status": status, "labels": {"alertname": "PaymentsErrors", **labels},
            "annotations": {"summary": "payments 5xx above 20%"}, "startsAt": iso(starts_ns),
            "endsAt": iso(ends_ns) if ends_ns else "0001-01-01T00:00:00Z",
            "generatorURL": "http://prom:9090/graph", "fingerprint": fp}


def wait_done(client, job_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/v1/investigations/{job_id}", headers=AUTH).json()
        if job["status"] in ("done", "failed") or time.monotonic() > deadline:
            return job
        time.sleep(0.1)


@pytest.fixture
def slack_api():
    with RecordingServer() as srv:
        yield srv


@pytest.fixture
def alert_client(store, slack_api):
    app = create_app(store, {"api": {"token": TOKEN}, "slack": {
        "bot_token": "xoxb-test", "api_url": slack_api.url + "/api/"},
        "alerts": {"slack_channels": {"guardian": "C-ONCALL"}, "max_investigations": 3}})
    with TestClient(app) as c:
        yield c


@pytest.mark.skipif(not BINARY, reason="prometheus-alertmanager is not installed (scripts/setup.sh installs it)")
def test_real_alertmanager_webhook_starts_an_investigation(tmp_path):
    from serving_support import seeded_store

    path = str(tmp_path / "spans.duckdb")
    seeded_store(path).close()
    with RecordingServer() as slack_api:
        cfg = tmp_path / "guardian.yaml"
        cfg.write_text(json.dumps({"slack": {"bot_token": "xoxb-test", "api_url": slack_api.url + "/api/"},
                                   "alerts": {"slack_channels": {"guardian": "C-ONCALL"}}}))
        proc, url = _serve(["--store", path, "--config", str(cfg)], {"GUARDIAN_API_TOKEN": TOKEN})
        try:
            with alertmanager(tmp_path, f"{url}/v1/alerts/alertmanager", TOKEN) as am:
                now = time.time_ns()
                alert = {"labels": {"alertname": "PaymentsErrors", "service": "payments", "severity": "page"},
                         "annotations": {"summary": "payments 5xx above 20%"},
                         "startsAt": iso(now - 8 * 60 * 10**9), "generatorURL": "http://prom/graph"}
                assert httpx.post(f"{am}/api/v2/alerts", json=[alert], timeout=5).status_code == 200
                job = _wait_for_alert_job(url, "PaymentsErrors")
                assert job["status"] == "done", job
                meta = job["meta"]
                assert meta["alert"]["source"] == "alertmanager" and meta["alert"]["receiver"] == "guardian"
                assert meta["alert"]["labels"]["service"] == "payments" and meta["services"] == ["payments"]
                assert len(meta["alert"]["fingerprint"]) == 16  # Alertmanager's own fingerprint
                w = job["window"]  # lookback 5m before the start, capped at 15m
                assert abs(w["start_ns"] - (now - 13 * 60 * 10**9)) < 5 * 10**9
                assert w["end_ns"] - w["start_ns"] <= 15 * 60 * 10**9
                assert job["report"]["root_causes"][0]["service"] == "payments"
                posted = slack_api.wait_for(lambda calls: [c for c in calls if c["body"].get("channel") == "C-ONCALL"],
                                            timeout=30)
                assert "PaymentsErrors" in posted[0]["body"]["text"] and "payments" in posted[0]["body"]["text"]
                # A second alert in the same group makes Alertmanager send both again: the first is a repeat.
                other = {"labels": {"alertname": "PaymentsErrors", "service": "no-such-service"},
                         "startsAt": iso(now - 60 * 10**9)}
                assert httpx.post(f"{am}/api/v2/alerts", json=[other], timeout=5).status_code == 200
                events = _wait_events(url, lambda ev: any(e["action"] == "duplicate" for e in ev))
                started = [e for e in events if e["action"] == "started"]
                assert len(started) == 2 and sum(e["action"] == "duplicate" for e in events) >= 1
                unknown = [e for e in started if e["services"] == []]
                assert unknown, "an unknown service still gets an investigation over the whole window"
                # Resolving: Alertmanager sends status resolved; it is noted, nothing new starts.
                resolved = {**alert, "endsAt": iso(time.time_ns() - 10**9)}
                assert httpx.post(f"{am}/api/v2/alerts", json=[resolved], timeout=5).status_code == 200
                events = _wait_events(url, lambda ev: any(e["action"] == "resolved" for e in ev))
                assert sum(e["action"] == "started" for e in events) == 2
                job = httpx.get(f"{url}/v1/investigations/{job['id']}", headers=AUTH).json()
                assert job["meta"]["resolved_at_ns"] > 0
        finally:
            _stop(proc)


def _wait_for_alert_job(url: str, name: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = httpx.get(f"{url}/v1/investigations", headers=AUTH).json()["investigations"]
        mine = [j for j in jobs if j["source"] == "alert" and j["meta"]["alert"]["name"] == name]
        if mine and mine[-1]["status"] in ("done", "failed"):
            return httpx.get(f"{url}/v1/investigations/{mine[-1]['id']}", headers=AUTH).json()
        time.sleep(0.2)
    raise AssertionError("no alert investigation appeared")


def _wait_events(url: str, cond, timeout: float = 30) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        events = httpx.get(f"{url}/v1/alerts", headers=AUTH).json()["alerts"]
        if cond(events) or time.monotonic() > deadline:
            return events
        time.sleep(0.2)


@pytest.mark.parametrize("body, reason", [
    ({"alerts": []}, "version"),
    ({"version": "4", "alerts": []}, "non-empty list"),
    ({"version": "4", "alerts": [{"status": "firing", "labels": {}}]}, "alertname"),
    ({"version": "4", "alerts": [{"status": "burning", "labels": {"alertname": "x"}}]}, "status"),
    ({"version": "4", "alerts": [{"status": "firing", "labels": {"alertname": "x"}, "startsAt": "noon"}]},
     "startsAt"),
    ({"version": "4", "alerts": [{"status": "firing", "labels": {"alertname": "x"}}]}, "startsAt: required"),
    ({"version": "4", "alerts": ["x"]}, "expected an object"),
    ([1, 2], "webhook JSON object"),
])
def test_malformed_alertmanager_payloads_are_400_with_the_reason(alert_client, body, reason):
    r = alert_client.post("/v1/alerts/alertmanager", json=body, headers=AUTH)
    assert r.status_code == 400 and reason in r.json()["detail"], r.text


def test_not_json_and_no_token(alert_client):
    r = alert_client.post("/v1/alerts/alertmanager", content=b"{nope", headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["detail"]
    assert alert_client.post("/v1/alerts/alertmanager", json=am_payload()).status_code == 401


def test_dedupe_resolve_and_rate_limit(alert_client, slack_api):
    now = time.time_ns()
    first = alert_client.post("/v1/alerts/alertmanager", headers=AUTH,
                              json=am_payload(am_alert("fp1", now - 5 * 60 * 10**9, service="payments")))
    assert first.status_code == 202
    out = first.json()["alerts"][0]
    assert out["action"] == "started" and out["services"] == ["payments"]
    job = wait_done(alert_client, out["investigation"])
    assert job["status"] == "done" and job["source"] == "alert"
    assert [s["step"] for s in job["steps"]][:2] == ["alert", "investigate"]
    assert "payments" in job["question"]
    again = alert_client.post("/v1/alerts/alertmanager", headers=AUTH,
                              json=am_payload(am_alert("fp1", now - 5 * 60 * 10**9, service="payments")))
    assert again.json()["alerts"][0] == {**again.json()["alerts"][0], "action": "duplicate",
                                         "investigation": out["investigation"]}
    slack = slack_api.wait_for(lambda calls: [c for c in calls if c["body"].get("channel") == "C-ONCALL"])
    assert "PaymentsErrors" in slack[0]["body"]["text"]
    # Two more start (limit 3 per window), the fourth is rate-limited, and a resolve is noted.
    burst = [am_alert(f"fp{i}", now - 60 * 10**9, service="checkout") for i in (2, 3, 4)]
    actions = [a["action"] for a in alert_client.post("/v1/alerts/alertmanager", headers=AUTH,
                                                      json=am_payload(*burst)).json()["alerts"]]
    assert actions == ["started", "started", "rate_limited"]
    res = alert_client.post("/v1/alerts/alertmanager", headers=AUTH, json=am_payload(
        am_alert("fp1", now - 5 * 60 * 10**9, "resolved", now - 10**9), status="resolved"))
    assert res.json()["alerts"][0]["action"] == "resolved"
    assert alert_client.get(f"/v1/investigations/{out['investigation']}", headers=AUTH).json()["meta"]["resolved_at_ns"]
    listed = alert_client.get("/v1/alerts", headers=AUTH).json()["alerts"]
    assert [e["action"] for e in listed][:2] == ["resolved", "rate_limited"]
    for e in listed:  # let the reports reach the Slack stand-in before it stops
        if e["action"] == "started":
            wait_done(alert_client, e["investigation"])
    slack_api.wait_for(lambda calls: [x for x in calls if x["body"].get("channel") == "C-ONCALL"][2:])


def test_generic_pagerduty_style_and_custom_mapping(store):
    mapping = {"items": "alerts", "fingerprint": "alert.alias", "status": "action", "firing": ["Create"],
               "resolved": ["Close"], "title": "alert.message", "service": "alert.details.service",
               "labels": "alert.details", "starts_at": "alert.createdAt"}
    with RecordingServer() as hook:
        app = create_app(store, {"api": {"token": TOKEN}, "alerts": {"generic": mapping,
                                                                     "webhook_url": hook.url + "/hook"}})
        _generic_case(app, hook)
    _pagerduty_default(store)


def _generic_case(app, hook):
    with TestClient(app) as c:
        body = {"alerts": [{"action": "Create", "alert": {"alias": "og-1", "message": "Checkout errors",
                                                         "details": {"service": "checkout"},
                                                         "createdAt": int(time.time()) - 120}}]}
        r = c.post("/v1/alerts/generic", json=body, headers=AUTH)
        assert r.status_code == 202 and r.json()["alerts"][0]["services"] == ["checkout"]
        job = wait_done(c, r.json()["alerts"][0]["investigation"])
        assert job["meta"]["alert"]["source"] == "generic" and job["report"]["root_causes"]
        bad = c.post("/v1/alerts/generic", json={"alerts": [{"action": "Snooze", "alert": {"message": "x"}}]},
                     headers=AUTH)
        assert bad.status_code == 400 and "action is 'Snooze'" in bad.json()["detail"]
        posted = hook.wait_for(lambda calls: [x for x in calls if x["path"] == "/hook"], timeout=30)[0]["body"]
        assert posted["investigation"] == job["id"] and posted["alert"]["name"] == "Checkout errors"
        assert posted["report"]["root_causes"] and "Checkout errors" in posted["text"]


def _pagerduty_default(store):
    # The default mapping reads PagerDuty's Events API v2.
    with TestClient(create_app(store, {"api": {"token": TOKEN}})) as c:
        pd = {"routing_key": "r", "event_action": "trigger", "dedup_key": "pd-1",
              "payload": {"summary": "payments failing", "source": "payments", "severity": "critical"}}
        r = c.post("/v1/alerts/generic", json=pd, headers=AUTH)
        assert r.status_code == 202 and r.json()["alerts"][0]["services"] == ["payments"]
        r = c.post("/v1/alerts/generic", json={"event_action": "trigger", "payload": {}}, headers=AUTH)
        assert r.status_code == 400 and "payload.summary" in r.json()["detail"]


def test_window_rules():
    now = 10**18
    m = 60 * 10**9
    a = Alert("f", "firing", "x", starts_at_ns=now - 60 * m)  # firing for an hour: onset kept, capped
    w = alert_window(a, 300, 900, now)
    assert (w.start_ns, w.end_ns) == (now - 65 * m, now - 50 * m)
    b = Alert("f", "resolved", "x", starts_at_ns=now - 10 * m, ends_at_ns=now - 8 * m)
    assert (lambda w: (w.start_ns, w.end_ns))(alert_window(b, 300, 900, now)) == (now - 15 * m, now - 8 * m)
    c = Alert("f", "firing", "x", starts_at_ns=now + 10 * m)  # clock skew: the lookback before now
    w = alert_window(c, 300, 900, now)
    assert (w.start_ns, w.end_ns) == (now - 5 * m, now)
