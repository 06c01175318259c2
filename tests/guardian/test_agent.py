"""`guardian agent` as a real process on replayed spans: ready, API, metrics, OTLP export to a
real receiver, SIGTERM/SIGINT linking what is pending and flushing the store, exit 0."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from capture.span import Span
from tests.capture.export.receivers import GrpcReceiver
from support.agent_proc import AgentProcess, run_cli

MS = 1_000_000
T0 = 1_700_000_000_000_000_000


def request(i: int) -> list[Span]:
    """frontend SERVER -> CLIENT -> cart SERVER, as the capture emits them (unlinked, child first)."""
    o = T0 + i * 50 * MS
    conn = {"client.address": "127.0.0.1", "client.port": 40000 + i, "server.address": "127.0.0.1",
            "server.port": 8081, "network.transport": "tcp"}
    fe = {"service.name": "frontend", "process.pid": 100, "host.name": "h"}
    cart = {"service.name": "cart", "process.pid": 200, "host.name": "h"}
    return [
        Span(name="GET /cart", kind="SERVER", start_time_unix_nano=o + 2 * MS, end_time_unix_nano=o + 8 * MS,
             status_code="ERROR" if i % 5 == 0 else "UNSET", attributes={**conn, "thread.id": 201}, resource=cart),
        Span(name="GET /cart", kind="CLIENT", start_time_unix_nano=o + MS, end_time_unix_nano=o + 9 * MS,
             attributes={**conn, "thread.id": 101 + i % 3}, resource=fe),
        Span(name="GET /", kind="SERVER", start_time_unix_nano=o, end_time_unix_nano=o + 10 * MS,
             attributes={"thread.id": 101 + i % 3, "client.address": "127.0.0.1", "client.port": 50000 + i,
                         "server.address": "127.0.0.1", "server.port": 8080, "network.transport": "tcp"},
             resource=fe),
    ]


def write_replay(path, n: int) -> None:
    with open(path, "w") as f:
        for i in range(n):
            f.writelines(s.to_json() + "\n" for s in request(i))


def replayed_agent(tmp_path, env: dict[str, str], requests: int = 50) -> AgentProcess:
    """`guardian agent` on a file store, replaying `requests` recorded requests (3 spans each),
    all received; JSON logs."""
    replay = tmp_path / "replay.jsonl"
    write_replay(replay, requests)
    agent = AgentProcess("--store", str(tmp_path / "a.duckdb"), "--replay", str(replay),
                         env={"GUARDIAN_LOG_FORMAT": "json", **env})
    try:
        agent.wait_metric("guardian_agent_spans_received_total", 3 * requests)
    except BaseException:
        agent.kill()
        raise
    return agent


def guardian(*args: str) -> subprocess.CompletedProcess:
    return run_cli(*args)


def guardian_process(*args: str) -> subprocess.CompletedProcess:
    """A real process: `guardian agent` sets up logging and signals for the whole process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUARDIAN_")}
    return subprocess.run([sys.executable, "-m", "guardian.cli.main", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def test_agent_replay_api_metrics_export_and_sigterm(tmp_path):
    replay, store = tmp_path / "spans.jsonl", tmp_path / "agent.duckdb"
    write_replay(replay, 100)
    with GrpcReceiver() as receiver:
        config = tmp_path / "agent.yaml"
        config.write_text(f"linker:\n  window_s: 0.5\nexport:\n  otlp_endpoint: 127.0.0.1:{receiver.port}\n"
                          "  otlp_protocol: grpc\n  metrics: false\nlog:\n  format: json\n")
        agent = AgentProcess("--store", str(store), "--config", str(config), "--replay", str(replay))
        try:
            assert agent.json("/healthz")["status"] == "ok"
            assert agent.wait_metric("guardian_agent_spans_received_total", 300) == 300
            agent.wait_metric("guardian_agent_spans_stored_total", 300)  # released once idle
            assert agent.json("/healthz")["spans"] == 300
            assert agent.metric("guardian_agent_spans_linked_total") == 200
            assert agent.metric("guardian_agent_linker_forced_spans_total") == 0  # 300 spans: within its bound
            assert agent.metric("guardian_agent_spans_dropped_total") == 0
            assert agent.metric('guardian_capture_events_total{counter="replay.spans"}') == 300
            assert agent.metric("guardian_agent_ingest_queue_batches") == 0
            api_traces = guardian("traces", "--api", agent.url, "--json", "--limit", "5")
            assert api_traces.returncode == 0, api_traces.stderr
            lines = [json.loads(x) for x in api_traces.stdout.splitlines()]
            assert len(lines) == 5 and all(len(t["spans"]) == 3 for t in lines)
        finally:
            rc = agent.stop(signal.SIGTERM)
        assert rc == 0, "".join(agent.stderr)
        logs = [json.loads(x) for x in agent.stderr if x.startswith("{")]
        assert any("stopped: 300 spans received, 300 stored" in r["msg"] for r in logs)
        exported = {sp.span_id.hex(): sp for _, sp in receiver.got.spans()}
        assert len(exported) == 300
    out = guardian("traces", "--store", str(store), "--json", "--limit", "200")
    traces = [json.loads(x) for x in out.stdout.splitlines()]
    assert len(traces) == 100
    for t in traces:
        spans = {s["span_id"]: s for s in t["spans"]}
        assert set(t) == {"trace_id", "spans"} and len(spans) == 3
        assert all(s["trace_id"] == t["trace_id"] for s in spans.values())
        root = next(s for s in spans.values() if s["parent_span_id"] is None)
        client = next(s for s in spans.values() if s["kind"] == "CLIENT")
        server = next(s for s in spans.values() if s["name"] == "GET /cart" and s["kind"] == "SERVER")
        assert client["parent_span_id"] == root["span_id"] and server["parent_span_id"] == client["span_id"]
        assert set(root) >= {"trace_id", "span_id", "parent_span_id", "name", "kind", "start_time_unix_nano",
                             "end_time_unix_nano", "status_code", "attributes", "resource"}
        assert exported[root["span_id"]].trace_id.hex() == t["trace_id"]
    one = guardian("trace", traces[0]["trace_id"], "--store", str(store), "--json")
    assert json.loads(one.stdout)["trace_id"] == traces[0]["trace_id"]
    services = json.loads(guardian("services", "--store", str(store), "--json").stdout)
    assert {s["name"]: (s["count"], s["errors"]) for s in services} == {"cart": (100, 20), "frontend": (100, 0)}


def test_sigint_links_and_stores_what_is_pending(tmp_path):
    replay, store = tmp_path / "spans.jsonl", tmp_path / "agent.duckdb"
    write_replay(replay, 40)
    agent = AgentProcess("--store", str(store), "--replay", str(replay),
                         env={"GUARDIAN_LINKER_WINDOW_S": "600", "GUARDIAN_LOG_FORMAT": "text"})
    try:
        agent.wait_metric("guardian_agent_spans_received_total", 120)
        assert agent.metric("guardian_agent_linker_pending_spans") == 120  # waiting for peers
        assert agent.metric("guardian_agent_spans_stored_total") == 0
    finally:
        rc = agent.stop(signal.SIGINT)
    assert rc == 0, "".join(agent.stderr)
    traces = [json.loads(x) for x in guardian("traces", "--store", str(store), "--json", "--limit", "100").stdout.splitlines()]
    assert len(traces) == 40 and all(len(t["spans"]) == 3 for t in traces)


def test_capture_unavailable_or_bad_config_fails_clearly(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("store:\n  colour: red\n")
    r = guardian_process("agent", "--config", str(bad))
    assert r.returncode == 2 and "unknown key 'colour'" in r.stderr
    r = guardian_process("agent", "--replay", str(tmp_path / "missing.jsonl"))
    assert r.returncode == 1 and "missing.jsonl" in r.stderr
