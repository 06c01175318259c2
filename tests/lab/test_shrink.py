"""lab.shrink on made-up traces: what may go (ordinary traces of busy operations, extra baseline
traces) and what must stay (failing, slow or rare traces, links between spans), deterministic;
and the recorder's class balancing and --with parsing."""
from __future__ import annotations

import argparse
import random
from collections import Counter

from lab import record, shrink

WS = 1_000_000_000_000  # window start (ns)


def _trace(i: int, t: int, slow: bool = False, error: bool = False, quiet: bool = False) -> list[dict]:
    tid = f"{random.Random(i).getrandbits(128):032x}"
    root = f"{random.Random(-i).getrandbits(64):016x}"
    child = f"{random.Random(i + 10**9).getrandbits(64):016x}"
    leaf = "rare" if quiet else "api"
    d = 50_000_000 if slow else 2_000_000 + (i % 7) * 10_000

    def span(sid, parent, svc, name, kind, dur, status="UNSET"):
        return {"trace_id": tid, "span_id": sid, "parent_span_id": parent, "name": name, "kind": kind,
                "start_time_unix_nano": t, "end_time_unix_nano": t + dur, "status_code": status,
                "attributes": {"server.port": 80}, "resource": {"service.name": svc}}

    return [span(root, None, "web", "GET /", "SERVER", d + 1_000_000),
            span(child, root, leaf, "GET /x", "SERVER", d, "ERROR" if error else "UNSET")]


def _case() -> list[dict]:
    spans = []
    for i in range(400):  # baseline: one trace every 100 ms before the window
        spans += _trace(i, WS - 40_000_000_000 + i * 100_000_000)
    for i in range(400, 800):
        t = WS + (i - 400) * 100_000_000
        spans += _trace(i, t, slow=i % 10 == 0, error=i % 25 == 0, quiet=i % 50 == 1)
    return spans


def test_shrink_keeps_the_evidence_and_links():
    spans = _case()
    out, info = shrink.shrink(spans, WS, baseline_spans=500, budget=600)
    assert info["spans_after"] < len(spans) / 2
    assert info["baseline_trace_share"] < 1 and info["ordinary_trace_share"] < 1
    ids = {s["span_id"] for s in out}
    # every kept child still points at its kept parent; ids are counters now
    assert all(s["parent_span_id"] in ids for s in out if s["parent_span_id"])
    assert all(len(s["trace_id"]) == 32 and len(s["span_id"]) == 16 for s in out)
    window = [s for s in out if s["start_time_unix_nano"] >= WS]
    n_slow = sum(s["name"] == "GET /x" and s["end_time_unix_nano"] - s["start_time_unix_nano"] > 10**7 for s in window)
    n_err = sum(s["status_code"] == "ERROR" for s in window)
    n_rare = sum(s["resource"]["service.name"] == "rare" for s in window)
    assert (n_slow, n_err, n_rare) == (40, 16, 8)  # every slow, failing and quiet-operation trace
    # the same input gives the same bytes
    again, _ = shrink.shrink(_case(), WS, baseline_spans=500, budget=600)
    assert again == out


def test_shrink_leaves_small_cases_whole_but_renumbered():
    spans = _case()[:200] + _case()[800:1000]
    out, info = shrink.shrink(spans, WS, baseline_spans=10_000, budget=10_000)
    assert info["spans_after"] == len(spans) and info["ordinary_trace_share"] == 1.0
    assert [s["name"] for s in out] == [s["name"] for s in spans]
    assert out[0]["trace_id"] == f"{1:032x}" and out[0]["span_id"] == f"{1:016x}"


def test_schedule_balances_classes_against_cases_already_there():
    from lab.topology import FaultPlan

    plans = [FaultPlan(c, "svc", "latency", lambda r, s: None, "slow", "x") for c in ("a", "b", "c")]
    got = record.schedule(random.Random(3), plans, 9, 0.0, Counter({"a": 4, "b": 1}))
    n = Counter(p.fault_class for p in got) + Counter({"a": 4, "b": 1})
    assert sum(n.values()) == 14 and max(n.values()) - min(n.values()) <= 1


def test_with_group_reads_topology_seed_cases_out_and_port_base():
    base = argparse.Namespace(topology="mesh12", seed=13, cases=5, out="evals/lab", port_base=None, workdir=None)
    g = record.with_group(base, "shop:104:7:evals/heldout:25000")
    assert (g.topology, g.seed, g.cases, g.out, g.port_base) == ("shop", 104, 7, "evals/heldout", 25000)
    assert g.workdir == "/tmp/guardian-lab-shop-s104" and base.topology == "mesh12"


def test_entry_coverage_counts_load_generator_requests_against_its_rate(tmp_path):
    import gzip
    import json

    from lab.coverage import coverage, entry_rate

    d = tmp_path / "case"
    d.mkdir()
    ws, we = WS, WS + 10 * 10**9
    (d / "expected.json").write_text(json.dumps({"topology": "shop", "load": "normal",
                                                 "window_start_ns": ws, "window_end_ns": we}))
    sent = int(entry_rate("shop") * 10)
    spans = [{"kind": "CLIENT", "start_time_unix_nano": ws + i * 10**9 // 4, "resource": {"service.name": "loadgen"}}
             for i in range(sent // 2)]
    spans += [{"kind": "SERVER", "start_time_unix_nano": ws, "resource": {"service.name": "frontend"}}] * 9
    with gzip.open(d / "spans.jsonl.gz", "wt") as f:
        f.write("".join(json.dumps(s) + "\n" for s in spans))
    assert coverage(d) == 0.5
