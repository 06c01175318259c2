"""bench.llm_eval: the fixed lab subset, and a run against a scripted OpenAI-compatible server."""
from __future__ import annotations

import json

import pytest
from tests.guardian.llm.fake_openai import FakeOpenAI
from tests.guardian.llm.test_llm_eval import confirm_top

from bench import llm_eval
from guardian.evals.scenarios import load_scenarios


def test_subset_is_fixed_stratified_and_never_held_out():
    picked = llm_eval.subset()
    lab = load_scenarios(llm_eval.LAB)
    classes = sorted({str(s.expected.get("fault_class")) for s in lab})
    assert len(picked) == 30 and len({s.name for s in picked}) == 30
    assert [s.name for s in picked] == [s.name for s in llm_eval.subset()]
    # The first round holds one case of every class, in class order: a cut run stays stratified.
    assert [s.expected["fault_class"] for s in picked[:len(classes)]] == classes
    assert {s.expected["topology"] for s in picked} == {s.expected["topology"] for s in lab}
    with pytest.raises(ValueError):
        llm_eval.subset(llm_eval.ROOT / "evals" / "heldout")


def overrule_with_made_up_id(request: dict) -> dict:
    """A model that blames another service than the findings, citing an id nobody returned."""
    brief = json.loads(next(m for m in request["messages"] if m["role"] == "tool")["content"])
    other = "gateway" if brief["root_causes"] and brief["root_causes"][0]["service"] != "gateway" else "orders"
    return {"content": json.dumps({"verdict": "overrule", "service": other, "operation": None, "kind": "latency",
                                   "description": "d", "trace_ids": ["ab" * 16], "summary": "s"})}


@pytest.mark.parametrize("reply, said", [(confirm_top, "confirm"), (overrule_with_made_up_id, "overrule refused")])
def test_run_writes_both_engines_per_case(tmp_path, reply, said):
    out = tmp_path / "r.json"
    with FakeOpenAI() as fake:
        fake.default = reply
        doc = llm_eval.run("scripted", 2, out, base_url=fake.base_url)
    saved = json.loads(out.read_text())
    assert saved["subset"] == [s.name for s in llm_eval.subset()[:2]] and len(saved["cases"]) == 2
    assert set(saved["summary"]) == {"deterministic", "llm"}
    for row in saved["cases"]:
        det, llm = row["deterministic"], row["llm"]
        assert det["engine"] == "deterministic" and llm["steps"] == 1 and llm["tokens"] == 120
        assert llm["answer"] == det["answer"] and llm["top1"] == det["top1"]  # nothing overruled
        assert llm_eval.verdict(row) == said
        assert all(c["exists"] == (said == "confirm") for c in row["model"]["cited"])
    text = llm_eval.analyse(doc)
    assert "accepted overrules without a cited trace the store holds: none" in text
    assert ("overrule refused" in text) == (said != "confirm")
    # The recorded answers through today's checks, without the model: the same answers stand.
    for row in llm_eval.recheck(doc)["cases"]:
        assert row["rechecked"] == {"answer": row["deterministic"]["answer"], "top1": row["deterministic"]["top1"]}
        assert all(c["in_window"] == c["exists"] for c in row["model"]["cited"])


def test_resume_keeps_the_cases_done_and_runs_the_rest(tmp_path):
    out = tmp_path / "r.json"
    with FakeOpenAI() as fake:
        fake.default = confirm_top
        llm_eval.run("scripted", 1, out, base_url=fake.base_url)
        first = json.loads(out.read_text())["cases"][0]
        llm_eval.run("scripted", 3, out, base_url=fake.base_url, resume=True)
        asked = len(fake.requests)
    saved = json.loads(out.read_text())
    assert [c["case"] for c in saved["cases"]] == [s.name for s in llm_eval.subset()[:3]]
    assert saved["cases"][0] == first and len(saved["resumed"]) == 1 and "finished" in saved
    assert set(saved["summary"]) == {"deterministic", "llm"}
    assert asked == 3  # one model call per case, none again for the case already done
    with pytest.raises(SystemExit):  # a file of another engine is not mixed in
        llm_eval.run("other", 4, out, base_url=None, resume=True)
