"""Read endpoints on the seeded store: services, service map, traces, metrics, bad input."""
from __future__ import annotations

from serving_support import AUTH, TOKEN, seeded_store
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, Counter

from capture.store.api import SpanFilter
from guardian.api.main import create_app


def test_services_with_red(client):
    body = client.get("/v1/services", headers=AUTH).json()
    by_name = {s["name"]: s for s in body["services"]}
    assert set(by_name) >= {"frontend", "checkout", "payments", "recommend"}
    assert by_name["payments"]["errors"] > 50 and 0.1 < by_name["payments"]["error_rate"] < 0.4
    assert by_name["recommend"]["errors"] == 0 and by_name["recommend"]["count"] > 500
    assert body["window"]["end_ns"] > body["window"]["start_ns"]


def test_service_map_edges(client):
    edges = client.get("/v1/service-map?since=30m", headers=AUTH).json()["edges"]
    pairs = {(e["client"], e["server"]) for e in edges}
    assert {("frontend", "checkout"), ("checkout", "payments")} <= pairs
    assert any(e["client"] == "payments" and "postgresql" in e["server"] for e in edges)


def test_trace_by_id(client, store):
    tid = store.spans(SpanFilter(service="payments", limit=1))[0].trace_id
    body = client.get(f"/v1/traces/{tid.upper()}", headers=AUTH).json()
    assert body["trace_id"] == tid and len(body["spans"]) == 6
    assert {s["resource"]["service.name"] for s in body["spans"]} == {"frontend", "checkout", "payments"}
    assert set(body["spans"][0]) >= {"trace_id", "span_id", "parent_span_id", "name", "kind", "attributes"}


def test_bad_input_is_a_clear_4xx(client):
    r = client.get("/v1/traces/not-a-trace", headers=AUTH)
    assert r.status_code == 400 and "32 hex" in r.json()["detail"]
    r = client.get("/v1/traces/" + "0" * 32, headers=AUTH)
    assert r.status_code == 404 and "not in the store" in r.json()["detail"]
    r = client.get("/v1/services?since=yesterday-ish", headers=AUTH)
    assert r.status_code == 400 and "duration" in r.json()["detail"]
    r = client.get("/v1/service-map?start=2024-01-02T00:00:00Z&end=2024-01-01T00:00:00Z", headers=AUTH)
    assert r.status_code == 400 and "after start" in r.json()["detail"]
    assert client.get("/v1/nothing-here", headers=AUTH).status_code == 404


def test_metrics_count_requests_and_share_a_callers_registry(store):
    registry = CollectorRegistry()
    drops = Counter("guardian_capture_drops", "dropped events", registry=registry)
    drops.inc(3)
    with TestClient(create_app(store, {"api": {"token": TOKEN}}, registry=registry)) as c:
        c.get("/v1/services", headers=AUTH)
        c.get("/v1/traces/" + "1" * 32, headers=AUTH)
        text = c.get("/metrics", headers=AUTH).text
    assert 'guardian_api_requests_total{method="GET",route="/v1/services",status="200"} 1.0' in text
    assert 'route="/v1/traces/{trace_id}",status="404"' in text  # the template, not the raw id
    assert "guardian_capture_drops_total 3.0" in text


def _metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def test_metrics_show_the_store_files_drains(tmp_path):
    store = seeded_store(str(tmp_path / "spans.duckdb"))
    store.drain_after_queries, store.drain_min_s = 5, 0.0  # (200 reads, 10 s apart, by default)
    try:
        with TestClient(create_app(store, {"api": {"token": TOKEN}})) as c:
            assert _metric(c.get("/metrics", headers=AUTH).text, "guardian_store_drains_total") == 0.0
            for _ in range(4):
                assert c.post("/v1/reports/run", headers=AUTH, json={}).status_code == 200
            drains = _metric(c.get("/metrics", headers=AUTH).text, "guardian_store_drains_total")
        assert drains == store.drains >= 4 * 20 // 5 - 1  # ~20 reads a report
    finally:
        store.close()


def test_an_in_memory_store_has_no_drains_to_show(store):
    # (its blocks are its data: emptying its queues would spill them; the counter stays at 0)
    with TestClient(create_app(store, {"api": {"token": TOKEN}})) as c:
        assert _metric(c.get("/metrics", headers=AUTH).text, "guardian_store_drains_total") == 0.0
