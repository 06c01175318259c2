"""The investigate page shows the steps as they run: in a real headless Chromium against a live
uvicorn server whose engine (the real deterministic one) is held at a gate after its first query,
the page shows that step with the status `running` from the event stream, without polling; once
released, the remaining steps and the report arrive on the same stream."""
from __future__ import annotations

import threading

import pytest
from serving_support import TOKEN, running, seeded_store

from guardian.api.main import create_app
from guardian.investigate.engine import investigate

pytestmark = pytest.mark.slow


def test_steps_appear_while_the_investigation_runs(page, shot):
    gate, reached = threading.Event(), threading.Event()

    def held(store, question, window, engine):
        store.services(window)
        reached.set()
        assert gate.wait(60), "the test never opened the gate"
        return investigate(store, question, window, engine="deterministic")

    store = seeded_store()
    try:
        app = create_app(store, {"api": {"token": TOKEN}}, investigate_fn=held)
        with running(app) as url:
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            page.goto(url + "/")
            page.fill("#token", TOKEN)
            page.click("button[type=submit]")
            page.wait_for_selector("g.node")
            page.goto(url + "/#/investigate")
            page.fill("textarea[name=question]", "why does checkout fail?")
            page.click("form#ask button[type=submit]")
            assert reached.wait(30)
            page.wait_for_selector("ol.steps li:has-text('services()')", timeout=20000)
            assert page.locator("#status").text_content() == "running"
            assert page.locator(".report").count() == 0
            job_id = page.url.rsplit("/", 1)[1]
            page.wait_for_timeout(1500)  # polling would have asked again within this time
            polls = [u for u in requests if u.endswith(f"/v1/investigations/{job_id}")]
            streams = [u for u in requests if u.endswith(f"/v1/investigations/{job_id}/events")]
            assert len(polls) == 1 and len(streams) == 1, (polls, streams)
            shot(page, "investigation-running")
            gate.set()
            page.wait_for_selector("#status:has-text('done')", timeout=30000)
            steps = page.locator("ol.steps li").all_text_contents()
            assert any("memory" in s for s in steps) and any("report" in s for s in steps)
            assert "payments" in page.locator(".report .cause").first.text_content()
            assert len([u for u in requests if u.endswith(f"/v1/investigations/{job_id}")]) == 1
            assert not page.console_errors
            shot(page, "investigation-streamed")
    finally:
        gate.set()
        store.close()
