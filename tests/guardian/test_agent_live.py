"""`guardian agent` with live eBPF capture on a real multi-service app (Python -> Python ->
Redis on loopback): the captured spans come out linked into the app's known call trees.

The app runs in a cgroup of its own and the agent is scoped to it (capture.scope): the agent's span
counter then counts the app's spans only, so the services stay up until the capture has read
them all. Waiting on a host-wide counter, a busy host's other traffic ended the wait early and the
enricher read services that were exiting (no environment, no command line: named after the
interpreter, "python", instead of OTEL_SERVICE_NAME)."""
from __future__ import annotations

import os
import signal

import pytest

from capture.store.api import SpanFilter, TimeWindow
from capture.store.factory import open_store
from support.cgroups import temp_cgroup
from support.linking_app import http_spans_logged, map_captured, run_app, spans_from_log
from support.agent_proc import AgentProcess

# BCC compiles the probes at start: seconds on an idle machine, minutes on a crowded one.
pytestmark = [pytest.mark.ebpf, pytest.mark.slow, pytest.mark.timeout(600)]


def bpf_or_skip() -> None:
    if os.geteuid() != 0 and os.environ.get("CI") != "true":
        pytest.skip("eBPF capture needs root")


@pytest.fixture
def app_cgroup():
    with temp_cgroup("guardian-test-app") as made:
        yield made


def test_live_agent_links_a_real_app(tmp_path, app_cgroup):
    bpf_or_skip()
    cgroup, cgroup_dir = app_cgroup
    store_path = tmp_path / "live.duckdb"
    config = tmp_path / "agent.yaml"
    # The app is plaintext: no TLS uprobes (their start-up scan of every process is slow on a busy host).
    config.write_text("capture:\n  options: {tls: false, seed_existing: false}\n"
                      f"  scope: {{cgroup: {cgroup}}}\nlinker:\n  window_s: 1\n"
                      "log:\n  format: text\n")
    try:
        agent = AgentProcess("--store", str(store_path), "--config", str(config), ready_timeout=420)
    except AssertionError as e:
        if "CaptureUnavailable" in str(e) and os.environ.get("CI") != "true":
            pytest.skip(f"BPF cannot load here: {e}")
        raise
    try:
        # Keep the services up until the capture has delivered their spans: the enricher reads
        # /proc of live processes (a capture running late would see them gone).
        log = run_app(str(tmp_path), requests=30, concurrency=3, cgroup_dir=cgroup_dir,
                      before_stop=lambda log: agent.wait_settled(
                          "guardian_agent_spans_received_total", http_spans_logged(log), timeout=120))
        logged, truth = spans_from_log(log)
    finally:
        rc = agent.stop(signal.SIGTERM, timeout=120)
    assert rc == 0, "".join(agent.stderr[-30:])
    store = open_store(str(store_path))
    lo = min(s.start_time_unix_nano for s in logged) - 10**9
    hi = max(s.end_time_unix_nano for s in logged) + 10**9
    # The test's own client is outside the scope; matching by connection and time picks the app's.
    captured = store.spans(SpanFilter(window=TimeWindow(lo, hi), limit=1_000_000))
    store.close()
    mapping = map_captured(captured, logged)
    http_logged = [s for s in logged if "db.system" not in s.attributes]
    assert len(mapping) >= 0.9 * len(http_logged), (len(mapping), len(http_logged))  # Redis spans: parser permitting
    # Expected parent of a captured span = the capture of the logged span's true parent.
    checked = correct = 0
    for sid, cap in mapping.items():
        parent = truth.get(sid)
        if parent and parent in mapping:
            checked += 1
            correct += cap.parent_span_id == mapping[parent].span_id and cap.trace_id == mapping[parent].trace_id
    print(f"live linking: {correct}/{checked} parent links correct, {len(mapping)}/{len(logged)} logged spans captured")
    named = {mapping[s.span_id].service for s in http_logged if s.span_id in mapping and s.kind == "SERVER"}
    assert named == {"frontend", "pricing", "stock"}  # OTEL_SERVICE_NAME read from /proc by the enricher
    assert checked >= 0.8 * len([s for s in http_logged if truth.get(s.span_id)])
    assert correct >= 0.95 * checked
