"""Each tool on recorded scenario data: the fault shows, red herrings don't, ids are real."""
from __future__ import annotations

from tools.registry import call_tool


def _ids_exist(store, trace_ids):
    assert trace_ids
    for tid in trace_ids:
        assert store.trace(tid), tid


def test_list_services_health(store):
    out = call_tool(store, "list_services", {})
    health = {s["service"]: s for s in out["services"]}
    assert health["payments"]["health"] == "failing"
    assert health["checkout"]["health"] == "failing"
    # Red herrings fail as much before as during: not a change.
    assert health["recommendations"]["health"] == "ok"
    assert health["recommendations"]["current"]["errors"] > 0
    assert health["reporting"]["health"] == "ok"
    assert out["services"][0]["health"] == "failing"  # worst first
    _ids_exist(store, health["payments"]["sample_trace_ids"])


def test_service_map_edges(store):
    edges = {(e["client"], e["server"]): e for e in call_tool(store, "service_map", {})["edges"]}
    assert edges[("checkout", "payments")]["health"] == "failing"
    assert ("checkout", "postgresql") in edges  # databases appear by db.system
    assert ("checkout", "fulfillment") in edges  # producer -> consumer
    one = call_tool(store, "service_map", {"service": "inventory"})["edges"]
    assert one and all("inventory" in (e["client"], e["server"]) for e in one)


def test_dependencies_of_checkout(store):
    out = call_tool(store, "dependencies", {"service": "checkout"})
    deps = {d["server"]: d for d in out["dependencies"]}
    assert out["dependencies"][0]["server"] == "payments"
    assert deps["payments"]["current"]["error_rate"] > deps["payments"]["baseline"]["error_rate"]
    assert {"inventory", "redis", "postgresql"} <= set(deps)
    _ids_exist(store, deps["payments"]["sample_trace_ids"])


def test_red_compares_with_baseline(store):
    out = call_tool(store, "red", {"service": "payments", "operation": "POST /charge"})
    (item,) = out["items"]
    assert item["baseline"]["error_rate"] == 0
    assert item["current"]["error_rate"] > 0.2
    assert item["health"] == "failing"
    _ids_exist(store, item["sample_trace_ids"])
    by_service = call_tool(store, "red", {"by": "service"})["items"]
    assert all(i["operation"] is None for i in by_service)


def test_errors_grouped_and_new_flagged(store):
    groups = call_tool(store, "errors", {})["groups"]
    npe = [g for g in groups if "NullPointerException" in g["message"]]
    assert npe and npe[0]["service"] == "payments" and npe[0]["new"] is True
    recs = [g for g in groups if g["service"] == "recommendations"]
    assert recs and recs[0]["new"] is False and recs[0]["baseline_count"] > 0
    _ids_exist(store, npe[0]["sample_trace_ids"])


def test_search_spans_filters(store):
    out = call_tool(store, "search_spans", {"service": "payments", "status": "ERROR", "limit": 5})
    assert out["spans"] and all(s["service"] == "payments" and s["status"] == "ERROR"
                                for s in out["spans"])
    out = call_tool(store, "search_spans", {"attributes": {"http.response.status_code": "500"},
                                            "kind": "SERVER", "limit": 5})
    assert out["spans"] and all(s["attributes"]["http.response.status_code"] == 500
                                for s in out["spans"])
    out = call_tool(store, "search_spans", {"min_duration_ms": 1000, "limit": 50})
    assert all(s["duration_ms"] >= 1000 for s in out["spans"])
    assert {s["service"] for s in out["spans"]} == {"reporting"}  # only the slow report job


def test_get_trace_tree_and_critical_path(store):
    tid = call_tool(store, "search_spans", {"service": "payments", "status": "ERROR",
                                            "limit": 1})["trace_ids"][0]
    out = call_tool(store, "get_trace", {"trace_id": tid})
    spans = {s["span_id"]: s for s in out["spans"]}
    root = out["spans"][0]
    assert root["depth"] == 0 and root["service"] == "frontend"
    assert out["critical_path"][0] == root["span_id"]
    assert "payments" in out["services"] and out["errors"] >= 3
    for s in out["spans"]:
        assert s["self_ms"] <= s["duration_ms"] + 1e-6
        if s["parent_span_id"] in spans:
            assert spans[s["parent_span_id"]]["depth"] == s["depth"] - 1
    small = call_tool(store, "get_trace", {"trace_id": tid, "max_spans": 2})
    assert small["truncated"] and len(small["spans"]) == 2
    assert all(s["critical"] for s in small["spans"])


def test_slow_queries_finds_the_slow_statement_and_its_caller(slow_store):
    out = call_tool(slow_store, "slow_queries", {"service": "checkout"})
    top = out["queries"][0]
    assert top["db_system"] == "postgresql" and top["operation"] == "SELECT orders"
    assert "ORDER BY created_at" in top["statement"] and top["statement"].endswith("LIMIT ?")
    assert top["max_ms"] > 300
    assert top["callers"][0] == "checkout POST /orders"
    _ids_exist(slow_store, top["sample_trace_ids"])
    # Across all services the constant 1.5 s report query is the slowest: listed, not hidden.
    everything = call_tool(slow_store, "slow_queries", {})["queries"]
    assert everything[0]["operation"] == "SELECT sales"


def test_anomalies_rank_the_fault_and_skip_red_herrings(store):
    out = call_tool(store, "anomalies", {})
    found = out["anomalies"]
    assert found[0]["kind"] == "error_rate"
    assert any(a["service"] == "payments" and a["operation"] == "POST /charge" for a in found[:3])
    assert not any(a["service"] in ("recommendations", "reporting") for a in found)
    _ids_exist(store, found[0]["trace_ids"])
    assert out["baseline"]["end_ns"] <= out["window"]["start_ns"]


def test_explicit_baseline_window(store):
    rng = store.time_range()
    mid = (rng.start_ns + rng.end_ns) // 2
    out = call_tool(store, "red", {"start": str(mid / 1e9), "end": str(rng.end_ns / 1e9),
                                   "baseline_start": str(rng.start_ns / 1e9),
                                   "baseline_end": str(mid / 1e9),
                                   "service": "payments"})
    assert out["items"][0]["health"] == "failing"
