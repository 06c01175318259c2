"""Benchmark: linking accuracy on a real multi-service app on loopback with known call trees.

The app (support/linking_app.py: Python -> Python -> Redis, threaded, plus a
variant with an asyncio service) logs every span with its real 4-tuple, thread and times and
its true parent. Scored: batch linking and stream linking of those spans, and with --live the
spans the eBPF capture of `guardian agent` produced for the same app. Baseline: no linker
(every captured span its own trace), i.e. 0 links found.
Run: .venv/bin/python -m bench.linking [--requests 120] [--live]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import tempfile

from capture.traces.linker import link_all
from capture.traces.stream import StreamLinker
from support.linking_app import accuracy, http_spans_logged, map_captured, run_app, spans_from_log


def stream_link(spans, window_s: float = 0.5):
    spans = sorted(spans, key=lambda s: s.end_time_unix_nano)
    stream, out = StreamLinker(window_s=window_s), []
    for i in range(0, len(spans), 25):
        out += stream.add(spans[i:i + 25])
    return out + stream.flush()


def recorded(requests: int, async_stock: bool) -> dict:
    with tempfile.TemporaryDirectory() as d:
        log = run_app(d, requests=requests, concurrency=4, async_stock=async_stock)
        spans, truth = spans_from_log(log)
        batch = accuracy(link_all(spans), truth)
        cross = accuracy(spans, truth, only=lambda s: s.kind == "SERVER")
        inproc = accuracy(spans, truth, only=lambda s: s.kind == "CLIENT")
        spans, truth = spans_from_log(log)
        stream = accuracy(stream_link(spans), truth)
    return {"batch": batch, "stream": stream, "cross_process": cross, "in_process": inproc}


def live(requests: int) -> dict:
    from capture.store.api import SpanFilter, TimeWindow
    from capture.store.factory import open_store
    from support.agent_proc import AgentProcess
    from support.cgroups import temp_cgroup

    # the app in a cgroup of its own and the agent scoped to it: its span counter then counts the
    # app's spans only, and the services stay up until the capture has read them (tests/guardian/
    # test_agent_live.py says why)
    with tempfile.TemporaryDirectory() as d, temp_cgroup("guardian-bench-linking") as (cgroup, cgroup_dir):
        path = os.path.join(d, "live.duckdb")
        config = os.path.join(d, "agent.yaml")
        with open(config, "w") as f:  # plaintext app: no TLS uprobes
            f.write("capture:\n  options: {tls: false, seed_existing: false}\n"
                    f"  scope: {{cgroup: {cgroup}}}\nlinker:\n  window_s: 1\n"
                    "log:\n  format: text\n")
        agent = AgentProcess("--store", path, "--config", config, ready_timeout=240)
        try:
            log = run_app(d, requests=requests, concurrency=4, cgroup_dir=cgroup_dir,
                          before_stop=lambda log: agent.wait_settled(
                              "guardian_agent_spans_received_total", http_spans_logged(log), timeout=180))
            logged, truth = spans_from_log(log)
            n_http = http_spans_logged(log)
        finally:
            agent.stop(signal.SIGTERM, timeout=120)
        store = open_store(path)
        lo = min(s.start_time_unix_nano for s in logged) - 10**9
        hi = max(s.end_time_unix_nano for s in logged) + 10**9
        captured = store.spans(SpanFilter(window=TimeWindow(lo, hi), limit=1_000_000))
        store.close()
    mapping = map_captured(captured, logged)
    checked = correct = 0
    for sid, cap in mapping.items():
        parent = truth.get(sid)
        if parent and parent in mapping:
            checked += 1
            correct += cap.parent_span_id == mapping[parent].span_id and cap.trace_id == mapping[parent].trace_id
    return {"logged_spans": len(logged), "http_spans_logged": n_http, "captured_and_matched": len(mapping),
            "links_checkable": checked, "links_correct": correct,
            "accuracy": round(correct / checked, 4) if checked else 0.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=120)
    ap.add_argument("--live", action="store_true", help="also score the live eBPF capture (root)")
    args = ap.parse_args()
    out = {"threaded": recorded(args.requests, False), "with_async_service": recorded(args.requests, True),
           "baseline_no_linker_accuracy": 0.0}
    if args.live:
        out["live_ebpf"] = live(args.requests)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
