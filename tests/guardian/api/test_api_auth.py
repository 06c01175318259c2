"""Bearer-token auth: open /healthz and docs, 401 elsewhere without the right token, loopback without one."""
from __future__ import annotations

import pytest
from serving_support import AUTH
from fastapi.testclient import TestClient

from guardian.api.deps import token_ok
from guardian.api.main import create_app
from guardian.api.settings import load_settings

PROTECTED = ["/v1/services", "/v1/service-map", "/v1/anomalies", "/v1/tools", "/v1/reports",
             "/metrics", "/v1/traces/" + "ab" * 16, "/v1/investigations/nope"]


def test_healthz_and_docs_are_open(client):
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok" and r.json()["spans"] > 1000
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/docs").status_code == 200


@pytest.mark.parametrize("path", PROTECTED)
def test_everything_else_needs_the_token(client, path):
    assert client.get(path).status_code == 401
    r = client.get(path, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert client.get(path, headers={"Authorization": "Basic t0ken"}).status_code == 401
    assert client.get(path, headers=AUTH).status_code in (200, 404)


def test_post_endpoints_need_the_token_too(client):
    assert client.post("/v1/investigate", json={"question": "x"}).status_code == 401
    assert client.post("/v1/tools/services", json={}).status_code == 401
    assert client.post("/v1/reports/run").status_code == 401
    assert client.post("/mcp", json={}).status_code == 401


def test_token_compare():
    assert token_ok("abc", "Bearer abc") and token_ok("abc", "bearer abc")
    assert not token_ok("abc", "Bearer abd") and not token_ok("abc", None) and not token_ok("abc", "abc")
    assert token_ok(None, None)  # no token configured: open (and loopback-only, below)


def test_no_token_means_open_api_bound_to_loopback(store):
    settings = load_settings(env={})
    assert settings.bind_host("0.0.0.0") == ("127.0.0.1", settings.bind_host("0.0.0.0")[1])
    assert "binding to 127.0.0.1" in settings.bind_host("0.0.0.0")[1]
    assert load_settings(env={"GUARDIAN_API_TOKEN": "x"}).bind_host("0.0.0.0") == ("0.0.0.0", None)
    with TestClient(create_app(store, settings), base_url="http://127.0.0.1:8080") as c:
        assert c.get("/v1/services").status_code == 200


def test_token_from_config_file(tmp_path, store):
    cfg = tmp_path / "guardian.yaml"
    cfg.write_text("api:\n  token: from-file\n  port: 9999\n")
    settings = load_settings(cfg, env={})
    assert settings.api.token == "from-file" and settings.api.port == 9999
    assert load_settings(cfg, env={"GUARDIAN_API_TOKEN": "from-env"}).api.token == "from-env"
    with TestClient(create_app(store, settings)) as c:
        assert c.get("/v1/services", headers={"Authorization": "Bearer from-file"}).status_code == 200
        assert c.get("/v1/services", headers=AUTH).status_code == 401
