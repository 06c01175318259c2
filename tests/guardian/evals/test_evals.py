"""Scenarios are reproducible from the generator, the scorer is right, `guardian eval` scores."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

from capture.span import Span
from guardian.cli.main import main
from guardian.evals.runner import matches, run_eval
from guardian.evals.scenarios import SCENARIOS, load_scenarios, read_spans, write_scenarios
from guardian.report import RootCause

ROOT = Path(__file__).resolve().parents[3] / "evals" / "scenarios"


def test_committed_scenarios_match_the_generator(tmp_path):
    names = ["payments_5xx", "consumer_stopped"]
    write_scenarios(tmp_path, names)
    for name in names:
        for f in ("question.txt", "expected.json"):
            assert (tmp_path / name / f).read_bytes() == (ROOT / name / f).read_bytes(), (name, f)
        # Compare what is inside: another zlib may compress the same lines differently.
        fresh = gzip.decompress((tmp_path / name / "spans.jsonl.gz").read_bytes())
        assert fresh == gzip.decompress((ROOT / name / "spans.jsonl.gz").read_bytes()), name
    assert {s.name for s in load_scenarios(ROOT)} == set(SCENARIOS)


def test_scenario_spans_follow_the_capture_shape():
    spans = [s for batch in read_spans(ROOT / "dns_failure") for s in batch]
    by_id = {s.span_id: s for s in spans}
    servers = [s for s in spans if s.kind == "SERVER" and s.parent_span_id in by_id]
    assert servers and all(by_id[s.parent_span_id].kind == "CLIENT" for s in servers)
    db = next(s for s in spans if "db.system" in s.attributes)
    assert {"db.query.text", "db.operation.name", "server.address", "server.port"} <= set(db.attributes)
    http = next(s for s in spans if s.kind == "SERVER")
    assert {"http.request.method", "url.path", "http.response.status_code"} <= set(http.attributes)
    assert any(s.attributes.get("error.type") == "SERVFAIL" for s in spans)
    assert Span.from_dict(db.to_dict()) == db


def _rc(service, kind, operation=None):
    return RootCause(rank=1, service=service, operation=operation, kind=kind, confidence=0.5)


def test_matches():
    exp = {"service": "coredns:53", "aliases": ["dns"], "operation": None, "kind": "dependency",
           "kind_aliases": ["error"]}
    assert matches(_rc("coredns:53", "dependency"), exp)
    assert matches(_rc("coredns", "error", "DNS A"), exp)  # port ignored, kind alias
    assert matches(_rc("DNS", "dependency"), exp)
    assert not matches(_rc("coredns", "latency"), exp)
    exp = {"service": "postgresql", "operation": "SELECT orders", "kind": "latency"}
    assert matches(_rc("postgresql", "latency", "select orders"), exp)
    assert matches(_rc("postgresql", "latency"), exp)  # no operation claimed: service decides
    assert not matches(_rc("postgresql", "latency", "SELECT sales"), exp)
    assert not matches(_rc("checkout", "latency", "SELECT orders"), exp)


def test_run_eval_scores_every_scenario():
    result = run_eval(ROOT, ["deterministic"])
    (score,) = result.scores
    assert score.cases == len(SCENARIOS)
    assert score.top1 >= 0.9 and score.top3 >= score.top1
    assert not any(c.red_herring_top1 for c in result.cases)
    assert all(c.seconds < 10 for c in result.cases)


def test_eval_cli_json(capsys):
    assert main(["eval", str(ROOT), "--only", "tls_failure", "--only", "healthy",
                 "--engine", "deterministic", "--json", "--min-top1", "1.0"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {c["scenario"] for c in data["cases"]} == {"tls_failure", "healthy"}
    assert data["scores"][0]["top1"] == 1.0


def test_eval_cli_table_and_missing_dir(capsys, tmp_path):
    assert main(["eval", str(ROOT), "--only", "redis_slow", "--engine", "deterministic"]) == 0
    out = capsys.readouterr().out
    assert "redis_slow" in out and "top-1 100%" in out
    assert main(["eval", str(tmp_path / "nope")]) == 2


def test_eval_json_figures_per_class_and_topology(capsys, tmp_path):
    """Lab-shaped cases (fault_class, topology, neighbours, window): graded score, abstention,
    latency percentiles, per class and per topology, beside the per-engine shape."""
    from guardian.evals.variants import make_variant

    for name, cls, topo in (("payments_5xx", "exception", "shop"), ("healthy", "none", "shop"),
                            ("redis_slow", "slow_query", "mesh")):
        d = make_variant(ROOT / name, tmp_path / name, [])
        exp = json.loads((d / "expected.json").read_text())
        exp.update(fault_class=cls, topology=topo, neighbours=["checkout"])
        if name == "redis_slow":  # the wrong service named, but a neighbour of the right one
            exp.update(service="checkout", aliases=[], kind="latency")
        (d / "expected.json").write_text(json.dumps(exp))
    assert main(["eval", str(tmp_path), "--engine", "deterministic", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {c["scenario"] for c in data["cases"]} == {"payments_5xx", "healthy", "redis_slow"}
    assert data["scores"][0]["cases"] == data["n_cases"] == 3
    assert data["per_class"]["exception"]["top1"] == 1.0
    assert data["per_class"]["slow_query"]["top1"] == 0.0
    assert data["abstain"] == 1.0  # the healthy window named no cause
    by = {c["scenario"]: c for c in data["cases"]}
    assert by["payments_5xx"]["graded"] == 100 and by["healthy"]["graded"] == 100
    assert by["redis_slow"]["graded"] == 0  # redis is no neighbour of checkout as written here
    assert data["graded"] == round(200 / 3, 1)
    assert set(data["per_topology"]) == {"shop", "mesh"} and data["per_topology"]["shop"]["cases"] == 2
    assert 0 < data["p50_s"] <= data["p95_s"]


def test_graded_score():
    from guardian.evals.runner import graded

    exp = {"service": "payments", "aliases": ["payments:8081"], "operation": "POST /charge",
           "kind": "error", "neighbours": ["checkout"]}
    assert graded(_rc("payments:8081", "error", "POST /charge"), exp) == 100
    assert graded(_rc("payments", "latency"), exp) == 65  # no operation named: the service only
    assert graded(_rc("payments", "error", "GET /health"), exp) == 65
    assert graded(_rc("checkout", "error"), exp) == 35
    assert graded(_rc("frontend", "error"), exp) == 0 and graded(None, exp) == 0
    assert graded(None, {"kind": "none"}) == 100 and graded(_rc("x", "error"), {"kind": "none"}) == 0
