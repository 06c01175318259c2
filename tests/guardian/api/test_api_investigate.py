"""POST /v1/investigate with the real deterministic investigator: sync report, markdown, async job
polling, bad input, and the cap on concurrent investigations."""
from __future__ import annotations

import threading
import time

from fastapi.testclient import TestClient
from serving_support import AUTH, TOKEN

from guardian.api.main import create_app


def _top(report: dict) -> dict:
    return report["root_causes"][0]


def test_sync_investigation_returns_the_report(client, store):
    r = client.post("/v1/investigate", json={"question": "why is checkout failing?", "since": "10m",
                                             "engine": "deterministic"}, headers=AUTH)
    assert r.status_code == 200
    report = r.json()
    assert _top(report)["service"] == "payments" and _top(report)["kind"] == "error"
    assert report["engine"]["type"] == "deterministic" and report["question"] == "why is checkout failing?"
    tid = _top(report)["evidence"][0]["trace_id"]
    assert store.trace(tid)  # cited evidence exists
    assert client.get(f"/v1/traces/{tid}", headers=AUTH).status_code == 200
    assert {"summary", "blast_radius", "suggested_fix", "window"} <= set(report)


def test_markdown_on_request(client):
    r = client.post("/v1/investigate", json={"question": "what is broken?", "since": "10m"},
                    headers={**AUTH, "Accept": "text/markdown"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/markdown")
    assert r.text.startswith("# Guardian investigation") and "**payments**" in r.text


def test_async_investigation_is_polled(client):
    r = client.post("/v1/investigate", json={"question": "what broke?", "start": str(time.time() - 600),
                                             "end": str(time.time()), "async": True}, headers=AUTH)
    assert r.status_code == 202
    job = r.json()
    assert job["poll"] == f"/v1/investigations/{job['id']}"
    deadline = time.monotonic() + 60
    while True:
        body = client.get(job["poll"], headers=AUTH).json()
        if body["status"] in ("done", "failed"):
            break
        assert body["status"] in ("queued", "running") and time.monotonic() < deadline
        time.sleep(0.05)
    assert body["status"] == "done" and _top(body["report"])["service"] == "payments"
    assert body["finished_at"] >= body["started_at"] >= body["created_at"]
    assert client.get("/v1/investigations/0123456789abcdef", headers=AUTH).status_code == 404
    listed = client.get("/v1/investigations?limit=5", headers=AUTH).json()["investigations"]
    assert listed[0]["id"] == job["id"] and listed[0]["status"] == "done" and "report" not in listed[0]


def test_malformed_requests_are_4xx(client):
    cases = [
        ({}, 422), ({"question": ""}, 422), ({"question": 42}, 422),
        ({"question": "x", "since": "10m", "surprise": 1}, 422),
        ({"question": "x", "engine": "magic"}, 422),
        ({"question": "x", "since": "soon"}, 400),
        ({"question": "x", "start": "2024-02-01T00:00:00Z", "end": "2024-01-01T00:00:00Z"}, 400),
        ({"question": "x", "since": "10m", "start": "2024-01-01T00:00:00Z"}, 400),
    ]
    for body, status in cases:
        r = client.post("/v1/investigate", json=body, headers=AUTH)
        assert r.status_code == status, (body, r.text)
        assert r.json()["detail"]
    r = client.post("/v1/investigate", content=b"question=why", headers={**AUTH, "Content-Type": "text/plain"})
    assert r.status_code == 422


def test_concurrent_investigations_are_capped(store):
    release = threading.Event()

    def slow_investigation(store, question, window, engine):  # stands in for a long LLM run
        release.wait(30)
        raise RuntimeError("model endpoint went away")

    app = create_app(store, {"api": {"token": TOKEN, "max_jobs": 1}}, investigate_fn=slow_investigation)
    with TestClient(app) as c:
        ask = {"question": "slow?", "since": "10m", "async": True}
        ids = [c.post("/v1/investigate", json=ask, headers=AUTH).json()["id"] for _ in range(2)]
        r = c.post("/v1/investigate", json=ask, headers=AUTH)
        assert r.status_code == 429 and r.headers["retry-after"] and "already running" in r.json()["detail"]
        deadline = time.monotonic() + 10  # the worker thread marks its job running when it starts
        while (statuses := [c.get(f"/v1/investigations/{i}", headers=AUTH).json()["status"] for i in ids]) \
                != ["running", "queued"]:
            assert statuses in (["queued", "queued"],) and time.monotonic() < deadline, statuses
            time.sleep(0.02)
        release.set()
        deadline = time.monotonic() + 10
        while c.get(f"/v1/investigations/{ids[1]}", headers=AUTH).json()["status"] != "failed":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        failed = c.get(f"/v1/investigations/{ids[0]}", headers=AUTH).json()
        assert failed["status"] == "failed" and "model endpoint went away" in failed["error"]
        r = c.post("/v1/investigate", json={"question": "slow?", "since": "10m"}, headers=AUTH)
        assert r.status_code == 500 and "model endpoint went away" in r.json()["detail"]
        assert 'guardian_investigations_total{status="failed"} 3.0' in c.get("/metrics", headers=AUTH).text
