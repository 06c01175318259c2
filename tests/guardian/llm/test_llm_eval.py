"""`guardian eval` with an LLM engine: the hook reports steps and tokens per case."""
from __future__ import annotations

import json

from guardian.evals.runner import run_eval, table
from guardian.evals.scenarios import write_scenarios
from tests.guardian.llm.fake_openai import FakeOpenAI


def confirm_top(request: dict) -> dict:
    """A model that checks nothing and confirms the findings' top cause with its first trace.
    The findings come as the result of the agent's deterministic_findings call (a tool message)."""
    findings = next(m for m in request["messages"] if m["role"] == "tool")
    brief = json.loads(findings["content"])
    top = brief["root_causes"][0]
    return {"content": json.dumps({"verdict": "confirm", "service": top["service"], "operation": top["operation"],
                                   "kind": top["kind"], "description": "confirmed",
                                   "trace_ids": top["trace_ids"][:1], "summary": "s", "suggested_fix": "f"})}


def test_llm_engine_is_scored_with_steps_and_tokens(tmp_path, monkeypatch):
    write_scenarios(tmp_path, ["payments_5xx"])
    with FakeOpenAI() as fake:
        fake.default = confirm_top
        monkeypatch.setenv("GUARDIAN_LLM_BASE_URL", fake.base_url)
        monkeypatch.setenv("GUARDIAN_LLM_MODEL", "scripted")
        result = run_eval(tmp_path, ["deterministic", "llm"])
    det, llm = result.cases
    assert llm.engine == "llm" and llm.steps == 1 and llm.tokens == 120 and det.steps is None
    assert llm.top1 == det.top1 and llm.answer == det.answer  # confirming keeps the deterministic answer
    scores = {s.engine: s for s in result.scores}
    assert scores["llm"].mean_steps == 1 and scores["deterministic"].mean_steps is None
    assert "1 steps, 120 tokens" in table(result)


def test_engine_dispatcher_hands_findings_to_the_agent(tmp_path, monkeypatch):
    """guardian.investigate.engine (engine="llm"/"auto") -> guardian.llm.agent.investigate."""
    from guardian.evals.scenarios import load_store
    from guardian.investigate.engine import investigate

    write_scenarios(tmp_path, ["payments_5xx"])
    store = load_store(tmp_path / "payments_5xx")
    try:
        with FakeOpenAI() as fake:
            fake.default = confirm_top
            monkeypatch.setenv("GUARDIAN_LLM_BASE_URL", fake.base_url)
            monkeypatch.setenv("GUARDIAN_LLM_MODEL", "scripted")
            rep = investigate(store, "why do payments fail?", None, engine="auto")
        det = investigate(store, "why do payments fail?", None, engine="deterministic")
    finally:
        store.close()
    assert (rep.engine.type, rep.engine.model) == ("llm", "scripted") and det.engine.type == "deterministic"
    assert rep.root_causes[0].service == det.root_causes[0].service == "payments"
    task, findings = fake.requests[0]["messages"][1], fake.requests[0]["messages"][3]
    assert findings["role"] == "tool" and task["role"] == "user"
    assert "payments" in findings["content"] and det.root_causes[0].evidence[0].trace_id in findings["content"]
    assert det.root_causes[0].evidence[0].trace_id not in task["content"]  # captured data stays in tool messages
