"""The tools over HTTP (/v1/tools, /v1/tools/{name}) and GET /v1/anomalies, on the real registry."""
from __future__ import annotations

from serving_support import AUTH


def test_list_and_describe_tools(client):
    tools = client.get("/v1/tools", headers=AUTH).json()["tools"]
    names = {t["name"] for t in tools}
    assert {"anomalies", "list_services", "get_trace"} <= names
    spec = client.get("/v1/tools/anomalies", headers=AUTH).json()
    assert spec["parameters"]["type"] == "object" and "since" in spec["parameters"]["properties"]
    assert "baseline" in spec["description"]
    r = client.get("/v1/tools/launch_missiles", headers=AUTH)
    assert r.status_code == 404 and "GET /v1/tools" in r.json()["detail"]


def test_call_a_tool(client):
    r = client.post("/v1/tools/anomalies", json={"since": "10m"}, headers=AUTH)
    assert r.status_code == 200
    top = r.json()["anomalies"][0]
    assert top["service"] in ("payments", "checkout", "frontend") and top["trace_ids"]
    assert any(a["service"] == "payments" for a in r.json()["anomalies"])
    assert not any(a["service"] == "recommend" for a in r.json()["anomalies"])


def test_nonsense_arguments_get_a_structured_error(client):
    r = client.post("/v1/tools/anomalies", json={"since": "banana", "limit": -4}, headers=AUTH)
    assert r.status_code == 400
    body = r.json()
    assert body["error"] and body["hint"]
    r = client.post("/v1/tools/anomalies", json={"colour": "blue"}, headers=AUTH)
    assert r.status_code == 400 and "colour" in r.json()["hint"]
    r = client.post("/v1/tools/anomalies", content=b"{not json", headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 422
    r = client.post("/v1/tools/anomalies", json=[1, 2], headers=AUTH)
    assert r.status_code == 422
    assert client.post("/v1/tools/nope", json={}, headers=AUTH).status_code == 404


def test_anomalies_endpoint(client):
    body = client.get("/v1/anomalies?since=10m", headers=AUTH).json()
    assert body["anomalies"] and body["window"]["end_ns"] > body["window"]["start_ns"]
    assert any(a["service"] == "payments" and a["kind"] in ("error_rate", "new_error")
               for a in body["anomalies"])
    one = client.get("/v1/anomalies?since=10m&service=recommend", headers=AUTH).json()
    assert one["anomalies"] == []
    assert len(client.get("/v1/anomalies?since=10m&limit=1", headers=AUTH).json()["anomalies"]) == 1
    r = client.get("/v1/anomalies?start=2001-01-01T00:00:00Z&end=2001-01-01T00:10:00Z", headers=AUTH)
    assert r.status_code == 400 and "no spans" in r.json()["error"] and r.json()["hint"]
    assert client.get("/v1/anomalies?limit=lots", headers=AUTH).status_code == 422
