"""Incident memory: every investigation kept (SQLite, 0600), marked right or wrong over the API and
Slack's signed interactive payloads, similar past incidents listed, confirmed causes as a prior."""
from __future__ import annotations

import json
import os
import stat
import time
from urllib.parse import urlencode

from fastapi.testclient import TestClient
from serving_support import AUTH, SLACK_SECRET, TOKEN, RecordingServer, slack_headers

from guardian.api.main import create_app
from guardian.memory.prior import apply_prior
from guardian.report import Report, RootCause


def _ask(c, question="why does checkout fail?"):
    r = c.post("/v1/investigate", json={"question": question, "since": "15m"}, headers=AUTH)
    assert r.status_code == 200, r.text
    return r.json(), c.get("/v1/investigations?limit=1", headers=AUTH).json()["investigations"][0]["id"]


def test_outcomes_similar_incidents_and_persistence(store, tmp_path):
    path = str(tmp_path / "memory.sqlite")
    settings = {"api": {"token": TOKEN}, "memory": {"path": path}}
    with TestClient(create_app(store, settings)) as c:
        first, first_id = _ask(c)
        assert first["similar"] == [] and first["root_causes"][0]["service"] == "payments"
        r = c.post(f"/v1/investigations/{first_id}/outcome", headers=AUTH,
                   json={"outcome": "right", "note": "card processor outage", "by": "alice"})
        assert r.status_code == 200 and r.json()["cause_service"] == "payments" and r.json()["outcome"] == "right"
        assert c.post("/v1/investigations/nope/outcome", json={"outcome": "right"}, headers=AUTH).status_code == 404
        assert c.post(f"/v1/investigations/{first_id}/outcome", json={"outcome": "maybe"},
                      headers=AUTH).status_code == 422
        second, _ = _ask(c)
        past = second["similar"][0]
        assert past["id"] == first_id and past["cause"]["service"] == "payments" and past["similarity"] > 0.5
        assert second["prior"] and second["prior"][0]["service"] == "payments"
        assert second["prior"][0]["to"] > second["prior"][0]["from"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    # A restarted server remembers.
    with TestClient(create_app(store, settings)) as c:
        rows = c.get("/v1/incidents", headers=AUTH).json()["incidents"]
        assert len(rows) == 2 and [r["outcome"] for r in rows] == [None, "right"]
        assert c.get("/v1/incidents?outcome=right", headers=AUTH).json()["incidents"][0]["id"] == first_id


def test_prior_reorders_only_what_the_engine_ranked():
    def report():
        return Report(summary="s", root_causes=[
            RootCause(rank=1, service="checkout", kind="error", confidence=0.6),
            RootCause(rank=2, service="postgres:5432", operation="SELECT", kind="latency", confidence=0.5)])
    confirmed = [{"id": "a", "similarity": 0.8, "outcome": "wrong",
                  "reported": {"service": "checkout"}, "cause": {"service": "postgres", "operation": "SELECT"}}]
    rep = report()
    moves = apply_prior(rep, confirmed, 0.3)
    assert [rc.service for rc in rep.root_causes] == ["postgres:5432", "checkout"]
    assert [rc.rank for rc in rep.root_causes] == [1, 2]
    assert rep.root_causes[0].confidence == round(0.5 + 0.3 * 0.8, 3)
    assert rep.root_causes[1].confidence == round(0.6 - 0.3 * 0.8 / 2, 3) and len(moves) == 2
    elsewhere = [{"id": "b", "similarity": 1.0, "outcome": "right", "reported": {"service": "redis"},
                  "cause": {"service": "redis"}}]
    rep = report()
    assert apply_prior(rep, elsewhere, 0.3) == [] and [rc.service for rc in rep.root_causes] == ["checkout",
                                                                                                  "postgres:5432"]
    rep = report()
    assert apply_prior(rep, confirmed, 0.0) == [] and rep.root_causes[0].service == "checkout"


def test_slack_buttons_mark_an_investigation(store):
    with RecordingServer() as slack_api:
        app = create_app(store, {"api": {"token": TOKEN}, "slack": {
            "signing_secret": SLACK_SECRET, "bot_token": "xoxb-test", "api_url": slack_api.url + "/api/"}})
        with TestClient(app) as c:
            _, inv = _ask(c)
            payload = {"type": "block_actions", "user": {"id": "U7"}, "channel": {"id": "C1"},
                       "message": {"ts": "1700000000.000100"},
                       "state": {"values": {"guardian_cause": {"cause": {"type": "plain_text_input",
                                                                         "value": "postgres: pool exhausted"}}}},
                       "actions": [{"action_id": "guardian_wrong", "value": inv, "type": "button"}]}
            body = urlencode({"payload": json.dumps(payload)}).encode()
            hdrs = {"Content-Type": "application/x-www-form-urlencoded"}
            assert c.post("/slack/interactive", content=body,
                          headers={**hdrs, **slack_headers("wrong-secret", body)}).status_code == 401
            signed = {**hdrs, **slack_headers(SLACK_SECRET, body)}
            r = c.post("/slack/interactive", content=body, headers=signed)
            assert r.status_code == 200 and r.json()["marked"] == [{"id": inv, "outcome": "wrong", "cause": "postgres"}]
            assert c.post("/slack/interactive", content=body, headers=signed).status_code == 409  # replay
            row = app.state.memory.store.get(inv)
            assert (row["outcome"], row["cause_service"], row["note"], row["marked_by"]) == (
                "wrong", "postgres", "pool exhausted", "slack:U7")
            ack = slack_api.wait_for(lambda calls: [x for x in calls if "marked this investigation wrong"
                                                    in x["body"].get("text", "")])
            assert ack[0]["body"]["thread_ts"] == "1700000000.000100"
            bad = urlencode({"payload": "{not json"}).encode()
            assert c.post("/slack/interactive", content=bad,
                          headers={**hdrs, **slack_headers(SLACK_SECRET, bad)}).status_code == 400


def test_slack_reports_carry_the_feedback_buttons(store):
    with RecordingServer() as slack_api:
        app = create_app(store, {"api": {"token": TOKEN}, "slack": {
            "signing_secret": SLACK_SECRET, "bot_token": "xoxb-test", "api_url": slack_api.url + "/api/"}})
        with TestClient(app) as c:
            form = urlencode({"command": "/guardian", "text": "why does checkout fail?", "channel_id": "C9",
                              "user_id": "U1"}).encode()
            assert c.post("/slack/commands", content=form, headers=slack_headers(SLACK_SECRET, form)).status_code == 200
            calls = slack_api.wait_for(lambda calls: [x for x in calls if any(
                b.get("type") == "actions" for b in x["body"].get("blocks") or [])], timeout=60)
            buttons = [b for b in calls[-1]["body"]["blocks"] if b["type"] == "actions"][0]["elements"]
            inv = buttons[0]["value"]
            assert {b["action_id"] for b in buttons} == {"guardian_right", "guardian_wrong"}
            deadline = time.monotonic() + 10
            while app.state.memory.store.get(inv) is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert app.state.memory.store.get(inv)["source"] == "slack"


def test_memory_measure_on_repeated_eval_faults(tmp_path):
    """The measurement (python -m guardian.memory.measure), through the API: a confirmed cause lifts
    the same fault's true cause when it comes again, and another incident's confirmed cause does
    not push a different fault's cause out of first place."""
    import shutil
    from pathlib import Path

    from guardian.memory.measure import measure

    root = Path(__file__).resolve().parents[3] / "evals" / "scenarios"
    for name in ("payments_5xx", "redis_slow"):
        shutil.copytree(root / name, tmp_path / name)
    rows = measure(tmp_path, 0.15, ("same", "running"))
    same = {r["case"]: r for r in rows if r["mode"] == "same"}
    running = {r["case"]: r for r in rows if r["mode"] == "running"}
    assert set(same) == set(running) == {"payments_5xx", "redis_slow"}
    for r in same.values():
        assert r["without"] == 1 and r["with"] == 1
        assert r["margin_with"] > r["margin_without"]  # the prior moved the confirmed cause up
    assert running["payments_5xx"]["margin_with"] == running["payments_5xx"]["margin_without"]  # memory empty
    r = running["redis_slow"]  # memory holds payments' confirmed 5xx: a different fault
    assert r["with"] == 1 and r["margin_with"] >= r["margin_without"] - 0.15


def _two_changes(d, seed: int) -> None:
    """A recorded window where two things changed at once (payments half failing, inventory 40 ms
    slower): the engine ranks payments first by a hair; the real cause was inventory."""
    import gzip
    import json

    from guardian.evals.generator import Fault, generate
    from guardian.evals.scenarios import BASE_NS

    d.mkdir(parents=True)
    (d / "question.txt").write_text("Checkout is slow and some checkouts fail. Why?\n")
    (d / "expected.json").write_text(json.dumps({
        "service": "inventory", "operation": None, "kind": "latency", "fault_class": "two_changes",
        "topology": "generated"}))
    fault = Fault(errors={"payments POST /charge": (0.5, 503, "card processor timeout", "")},
                  extra_self_ms={"inventory": 40})
    with gzip.open(d / "spans.jsonl.gz", "wt") as f:
        for batch in generate(fault, seed, BASE_NS, 360, 1.5):
            f.write("".join(s.to_json() + "\n" for s in batch))


def test_a_confirmed_cause_changes_the_ranking_of_a_repeat(tmp_path):
    """Where the engine ranks the real cause second, confirming it (POST .../outcome: wrong, the
    cause was inventory) puts it first the next time the fault comes: on the same recording and on
    another recording of the same fault. Without memory the repeat stays second."""
    from guardian.memory.measure import measure, summary

    _two_changes(tmp_path / "first", 4242)
    _two_changes(tmp_path / "again", 4243)
    rows = measure(tmp_path, 0.15, ("same", "pairs"))
    assert len(rows) == 4
    for r in rows:
        assert r["without"] == 2 and r["with"] == 1, r
    assert {(r["case"], r["first"]) for r in rows if r["mode"] == "pairs"} == {("again", "first"), ("first", "again")}
    s = next(x for x in summary(rows) if x["mode"] == "pairs" and x["topology"] == "all")
    assert s["top1_without"] == 0 and s["top1_with"] == 2 and s["moved_up"] == 2 and s["moved_down"] == 0
    assert measure(tmp_path, 0.0, ("same",))[0]["with"] == 2  # weight 0: memory is only listed, no prior


def test_prior_is_weaker_for_a_different_kind():
    rep = Report(summary="s", root_causes=[RootCause(rank=1, service="redis", kind="latency", confidence=0.5)])
    apply_prior(rep, [{"id": "a", "similarity": 1.0, "outcome": "right", "reported": {"service": "redis"},
                       "cause": {"service": "redis", "kind": "error"}}], 0.2)
    assert rep.root_causes[0].confidence == 0.6
