"""GET /v1/investigations/{id}/events over a real uvicorn server: the steps of a running
investigation arrive while it runs (the engine is held at a gate after its first query), then the
rest and a last `done` event with the report; unknown ids and missing tokens are refused."""
from __future__ import annotations

import json
import threading

import httpx
from serving_support import AUTH, TOKEN, running

from guardian.api.main import create_app
from guardian.investigate.engine import investigate


def gated_engine(gate: threading.Event, reached: threading.Event):
    def run(store, question, window, engine):
        store.services(window)  # a noted query: the first step the stream must show
        reached.set()
        assert gate.wait(30), "the test never opened the gate"
        return investigate(store, question, window, engine="deterministic")
    return run


def sse(lines):
    """(event, data) pairs from an SSE line iterator."""
    name, data = None, []
    for line in lines:
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif line == "" and name:
            yield name, json.loads("\n".join(data))
            name, data = None, []


def test_steps_stream_while_the_investigation_runs(store):
    gate, reached = threading.Event(), threading.Event()
    app = create_app(store, {"api": {"token": TOKEN}, "memory": {"path": None}},
                     investigate_fn=gated_engine(gate, reached))
    try:
        _stream_while_held(app, gate, reached)
    finally:
        gate.set()


def _stream_while_held(app, gate, reached):
    with running(app) as url, httpx.Client(base_url=url, headers=AUTH, timeout=30) as c:
        job = c.post("/v1/investigate", json={"question": "why does checkout fail?", "since": "15m",
                                              "async": True}).json()
        assert reached.wait(20)
        seen: list[tuple[str, dict]] = []
        with c.stream("GET", f"/v1/investigations/{job['id']}/events") as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            events = sse(r.iter_lines())
            for ev in events:
                seen.append(ev)
                if ev[0] == "step" and ev[1]["step"] == "query":
                    break
            # The engine is still held: what came so far came while it ran.
            assert c.get(f"/v1/investigations/{job['id']}").json()["status"] == "running"
            assert ("status", {"status": "running"}) in seen
            assert [e[1]["step"] for e in seen if e[0] == "step"] == ["investigate", "query"]
            assert "services" in seen[-1][1]["detail"] and seen[-1][1]["index"] == 1
            gate.set()
            for ev in events:
                seen.append(ev)
        names = [e[0] for e in seen]
        assert names[-1] == "done" and names.count("done") == 1
        done = seen[-1][1]
        assert done["status"] == "done" and done["report"]["root_causes"][0]["service"] == "payments"
        steps = {e[1]["index"]: e[1] for e in seen if e[0] == "step"}
        assert [steps[i]["step"] for i in sorted(steps)] == [s["step"] for s in done["steps"]]
        assert {"report", "memory"} <= {s["step"] for s in steps.values()}
        # A finished job streams its steps and `done` at once.
        with c.stream("GET", f"/v1/investigations/{job['id']}/events") as r:
            again = list(sse(r.iter_lines()))
        assert again[-1][0] == "done" and len([e for e in again if e[0] == "step"]) == len(done["steps"])
        assert c.get("/v1/investigations/nope/events").status_code == 404
        assert httpx.get(f"{url}/v1/investigations/{job['id']}/events").status_code == 401


def test_an_open_stream_does_not_hold_the_agents_api_at_stop(store):
    """The agent's API server stops within its grace period while a client still follows a
    running investigation (uvicorn would otherwise wait for the stream to end)."""
    import time

    from guardian.agent_daemon import ApiServer
    from guardian.api.main import SHUTDOWN_GRACE_S
    from serving_support import free_port

    gate, reached = threading.Event(), threading.Event()
    app = create_app(store, {"api": {"token": TOKEN}}, investigate_fn=gated_engine(gate, reached))
    port = free_port()
    api = ApiServer(app, "127.0.0.1", port)
    api.start()
    got: list[str] = []

    def follow(job_id):
        try:
            with httpx.stream("GET", f"http://127.0.0.1:{port}/v1/investigations/{job_id}/events",
                              headers=AUTH, timeout=60) as r:
                for line in r.iter_lines():
                    got.append(line)
        except httpx.HTTPError:
            pass  # cut by the stopping server

    try:
        job = httpx.post(f"http://127.0.0.1:{port}/v1/investigate", headers=AUTH, timeout=30,
                         json={"question": "why?", "since": "15m", "async": True}).json()
        assert reached.wait(20)
        follower = threading.Thread(target=follow, args=(job["id"],), daemon=True)
        follower.start()
        deadline = time.monotonic() + 10
        while not any(line.startswith("event: step") for line in got):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        t0 = time.monotonic()
        api.stop()
        assert not api.thread.is_alive() and time.monotonic() - t0 < SHUTDOWN_GRACE_S + 3
        follower.join(5)
        assert not follower.is_alive()
    finally:
        gate.set()
