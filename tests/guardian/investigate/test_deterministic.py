"""The deterministic investigator on recorded fault scenarios, and the engine dispatcher."""
from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from guardian.evals.runner import matches
from guardian.evals.scenarios import load_scenarios, load_store
from guardian.investigate import engine
from guardian.investigate.deterministic import investigate
from guardian.report import EngineInfo, Report

ROOT = Path(__file__).resolve().parents[3] / "evals" / "scenarios"
BY_NAME = {s.name: s for s in load_scenarios(ROOT)}


@pytest.fixture(scope="module")
def stores():
    opened = {}

    def get(name):
        if name not in opened:
            opened[name] = load_store(ROOT / name)
        return opened[name]

    yield get
    for s in opened.values():
        s.close()


@pytest.mark.parametrize("name", ["slow_query_missing_index", "payments_5xx", "dns_failure",
                                  "consumer_stopped", "db_pool_exhaustion", "coincident_herring",
                                  "redis_stalls", "consumer_stopped_fetching"])
def test_top_cause_is_the_injected_fault(stores, name):
    sc = BY_NAME[name]
    report = investigate(stores(name), sc.question)
    top = report.root_causes[0]
    assert matches(top, sc.expected), top
    assert top.service not in sc.red_herrings
    assert 0.5 <= top.confidence <= 0.95
    assert report.engine.type == "deterministic"


def test_evidence_cites_real_spans_and_numbers(stores):
    store = stores("slow_query_missing_index")
    report = investigate(store, "Checkout got slow a few minutes ago. Why?")
    top = report.root_causes[0]
    assert len(top.evidence) >= 3
    for ev in top.evidence:
        spans = {s.span_id: s for s in store.trace(ev.trace_id)}
        assert ev.span_id in spans and ev.verified
        assert spans[ev.span_id].name == "SELECT orders"
        assert "SELECT * FROM orders" in ev.description  # the SQL is shown
    assert "->" in top.description and "ms" in top.description  # before -> during numbers
    assert "EXPLAIN" in report.suggested_fix and "index" in report.suggested_fix
    assert {"frontend", "checkout", "postgresql"} <= set(report.blast_radius.services)
    assert "frontend POST /checkout" in report.blast_radius.endpoints
    assert report.anomalies and report.window.start_ns < report.window.end_ns


def test_healthy_window_claims_nothing(stores):
    report = investigate(stores("healthy"), "Is anything broken right now?")
    assert all(rc.confidence < 0.3 for rc in report.root_causes)
    assert "No significant change" in report.summary


def test_report_json_and_markdown(stores):
    report = investigate(stores("payments_5xx"), "Users get errors when they check out.")
    data = json.loads(report.model_dump_json())
    assert {"summary", "root_causes", "blast_radius", "suggested_fix", "engine", "question",
            "window", "anomalies"} <= set(data)
    rc = data["root_causes"][0]
    assert {"rank", "service", "operation", "kind", "confidence", "evidence"} <= set(rc)
    assert {"trace_id", "span_id", "description", "verified"} <= set(rc["evidence"][0])
    assert Report.model_validate(data) == report
    md = report.to_markdown()
    for heading in ("## Summary", "## Root causes", "## Blast radius", "## Suggested fix"):
        assert heading in md
    assert rc["evidence"][0]["trace_id"] in md


def test_engine_dispatch(stores, monkeypatch, tmp_path):
    store = stores("payments_5xx")
    monkeypatch.delenv("GUARDIAN_LLM", raising=False)
    monkeypatch.delenv("GUARDIAN_LLM_BASE_URL", raising=False)
    assert engine.investigate(store, "q", None, engine="auto").engine.type == "deterministic"
    monkeypatch.setenv("GUARDIAN_LLM", "off")
    assert not engine.llm_configured()
    # The YAML config file selects the model as well as the environment does.
    cfg = tmp_path / "guardian.yaml"
    cfg.write_text("llm:\n  provider: local\n")
    monkeypatch.delenv("GUARDIAN_LLM")
    monkeypatch.setenv("GUARDIAN_CONFIG", str(cfg))
    assert engine.llm_configured()
    monkeypatch.delenv("GUARDIAN_CONFIG")
    with pytest.raises(ValueError):
        engine.investigate(store, "q", None, engine="magic")

    seen = {}

    def fake_llm(store_, question, window, findings):
        seen["findings"] = findings
        return findings.model_copy(update={"engine": EngineInfo(type="llm", model="fake")})

    # The real agent is another module's; the dispatcher only needs its investigate().
    monkeypatch.setitem(sys.modules, "guardian.llm.agent", types.SimpleNamespace(investigate=fake_llm))
    monkeypatch.setenv("GUARDIAN_LLM_BASE_URL", "http://127.0.0.1:9/v1")
    assert engine.llm_configured()
    out = engine.investigate(store, "q", None, engine="auto")
    assert out.engine.type == "llm"
    assert seen["findings"].engine.type == "deterministic" and seen["findings"].root_causes


def test_odd_data_does_not_crash():
    """Unlinked spans, missing services, zero durations, only clients: a report, no exception."""
    import random

    from capture.span import Span
    from capture.store.factory import open_store
    from tools.registry import TOOLS, call_tool

    rng = random.Random(3)
    t0 = 1_700_000_000 * 10**9
    spans = []
    for i in range(1500):
        start = t0 + i * 100_000_000
        late = i > 1000
        spans.append(Span(
            name=rng.choice(["GET /", "SELECT x", "", "publish"]),
            kind=rng.choice(["SERVER", "CLIENT", "PRODUCER", "CONSUMER", "INTERNAL"]),
            start_time_unix_nano=start,
            end_time_unix_nano=start + rng.choice([0, 1, 10**6, 10**9 if late else 10**6]),
            status_code=rng.choice(["OK", "UNSET", "ERROR"] if late else ["OK", "UNSET"]),
            attributes=rng.choice([{}, {"db.system": "postgresql"}, {"server.address": "x"},
                                   {"http.response.status_code": "oops"}]),
            resource=rng.choice([{}, {"service.name": "a"}, {"service.name": "b"}]),
            parent_span_id=rng.choice([None, "ffffffffffffffff", f"{i - 1:016x}"]),
            span_id=f"{i:016x}", trace_id=f"{i // 3:032x}", status_message=rng.choice(["", "boom"])))
    store = open_store(None)
    store.append(spans)
    report = investigate(store, "anything wrong with a?")
    assert report.summary
    Report.model_validate(report.model_dump())
    for name in TOOLS:
        args = {"trace_id": spans[0].trace_id} if name == "get_trace" else \
            {"service": "a"} if name == "dependencies" else {}
        out = call_tool(store, name, args)
        assert isinstance(out, dict)
    store.close()


def _unlinked(spans):
    """Each service's part of a request as its own trace (capture without cross-service links)."""
    by_id = {s.span_id: s for s in spans}
    kids = {}
    for s in spans:
        kids.setdefault(s.parent_span_id, []).append(s)
    for s in spans:
        if s.kind in ("SERVER", "CONSUMER") and s.parent_span_id in by_id:
            s.parent_span_id = None
            stack = [s]
            while stack:
                x = stack.pop()
                x.trace_id = s.span_id * 2
                stack += [k for k in kids.get(x.span_id, []) if k.kind not in ("SERVER", "CONSUMER")]
    return spans


@pytest.mark.parametrize("name", ["payments_5xx", "slow_query_missing_index"])
def test_unlinked_calls_still_point_downstream(name):
    from capture.store.factory import open_store
    from guardian.evals.scenarios import read_spans

    sc = BY_NAME[name]
    store = open_store(None)
    store.append(_unlinked([s for b in read_spans(sc.path) for s in b]))
    top = investigate(store, sc.question).root_causes[0]
    store.close()
    assert matches(top, sc.expected), top


def test_stopped_consumer_evidence(stores):
    store = stores("consumer_stopped")
    top = investigate(store, "Orders are not being fulfilled anymore").root_causes[0]
    assert top.kind == "traffic" and top.service == "fulfillment"
    unanswered = [e for e in top.evidence if "no fulfillment span answered it" in e.description]
    assert unanswered
    spans = store.trace(unanswered[0].trace_id)
    assert not any(s.kind == "CONSUMER" for s in spans)  # the publish really went unanswered
    assert any(s.kind == "PRODUCER" and s.span_id == unanswered[0].span_id for s in spans)


def test_stalled_server_is_blamed_not_its_callers(stores):
    """Calls that wait unread at a linked server: the server's latency, cited on the calls."""
    store = stores("redis_stalls")
    top = investigate(store, "Why is the shop slow?").root_causes[0]
    assert (top.service, top.kind) == ("redis", "latency")
    for ev in top.evidence:
        spans = {s.span_id: s for s in store.trace(ev.trace_id)}
        assert spans[ev.span_id].kind == "CLIENT"  # the caller's span shows the wait
        assert "-> redis" in ev.description and "before redis began the request" in ev.description


def test_peer_wait_splits_a_call():
    from capture.span import Span
    from guardian.investigate.walk import peer_wait, self_times
    from tools.trace import Tree

    def span(sid, parent, service, kind, start_ms, dur_ms):
        return Span(name="GET", kind=kind, start_time_unix_nano=start_ms * 10**6,
                    end_time_unix_nano=(start_ms + dur_ms) * 10**6, resource={"service.name": service},
                    trace_id="t" * 32, span_id=sid, parent_span_id=parent)

    tree = Tree([span("a", None, "api", "SERVER", 0, 200), span("b", "a", "api", "CLIENT", 10, 160),
                 span("c", "b", "cache", "SERVER", 150, 5)])
    assert peer_wait(tree, tree.by_id["b"]) == (("cache", "GET"), 140 * 10**6)
    assert peer_wait(tree, tree.by_id["a"]) is None  # not a call
    own = {k: (v[0] // 10**6, v[1] // 10**6) for k, v in self_times(tree, tree.by_id["a"]).items()}
    # cache: its 5 ms, the 140 ms unread and the 15 ms its reply took to reach api (the callee's
    # network or ingress); api: its own 40 ms, and no wait counted for the call (it waited on
    # the call, not for a pool)
    assert own == {("cache", "GET"): (160, 0), ("api", "GET"): (40, 10)}
    assert self_times(tree, tree.by_id["a"])[("cache", "GET")][3] == 155 * 10**6  # the gap


def test_caller_only_service_drops():
    """A worker seen only by its calls: stopped -> a traffic drop of its own; starved (its input
    stopped arriving) or waiting on slow callees -> none."""
    from tools.anomalies import _caller_drops
    from tools.services import Edge
    from tools.stats import RedStats

    def edge(client, server, cur, base, p95=(2.0, 2.0)):
        return Edge(client=client, server=server, health="ok",
                    current=RedStats(count=cur, rate_per_s=cur / 20, p50_ms=p95[0] / 2, p95_ms=p95[0]),
                    baseline=RedStats(count=base, rate_per_s=base / 20, p50_ms=p95[1] / 2, p95_ms=p95[1]))

    served = {"shop", "broker", "db"}
    stopped = [edge("shop", "broker", 40, 40), edge("worker", "broker", 2, 80), edge("worker", "db", 1, 40)]
    assert [a.service for a in _caller_drops(stopped, served)] == ["worker"]
    starved = [edge("shop", "broker", 5, 40), edge("worker", "broker", 10, 80), edge("worker", "db", 5, 40)]
    assert _caller_drops(starved, served) == []
    waiting = [edge("worker", "db", 10, 40, p95=(900.0, 2.0))]
    assert _caller_drops(waiting, served) == []
