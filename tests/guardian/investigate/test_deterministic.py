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
                                  "consumer_stopped", "db_pool_exhaustion", "coincident_herring"])
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


def test_engine_dispatch(stores, monkeypatch):
    store = stores("payments_5xx")
    monkeypatch.delenv("GUARDIAN_LLM", raising=False)
    monkeypatch.delenv("GUARDIAN_LLM_BASE_URL", raising=False)
    assert engine.investigate(store, "q", None, engine="auto").engine.type == "deterministic"
    monkeypatch.setenv("GUARDIAN_LLM", "off")
    assert not engine.llm_configured()
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
