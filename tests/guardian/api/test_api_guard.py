"""The request guard and input checks: loopback Host and JSON-only POSTs without a token, body
limits before the body is read, 4xx (never 5xx) for absurd numbers and attribute keys, engine
"llm" refused without an LLM, private files."""
from __future__ import annotations

import os
import socket
import stat
import time

import pytest
from fastapi.testclient import TestClient
from serving_support import AUTH, TOKEN, running, seeded_store

from guardian.api.main import create_app


@pytest.fixture
def open_client(store):
    """No token configured: the loopback-only API."""
    with TestClient(create_app(store, {"api": {"token": None}}), base_url="http://127.0.0.1:8080",
                    raise_server_exceptions=False) as c:
        yield c


@pytest.mark.parametrize("path", ["/healthz", "/v1/services", "/v1/reports", "/v1/traces/" + "ab" * 16, "/"])
def test_without_a_token_every_route_refuses_a_foreign_host(open_client, path):
    r = open_client.get(path, headers={"Host": "evil.example:8080"})
    assert r.status_code == 403 and "loopback" in r.json()["detail"]
    for host in ("127.0.0.1:8080", "localhost", "[::1]:8080", "LOCALHOST."):
        assert open_client.get("/healthz", headers={"Host": host}).status_code == 200


def test_with_a_token_other_hosts_are_served(client):
    assert client.get("/v1/services", headers={**AUTH, "Host": "guardian.internal"}).status_code == 200


def test_cross_site_text_plain_post_is_refused(open_client):
    r = open_client.post("/v1/reports/run", content=b"{}", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    r = open_client.post("/v1/reports/run", content=b"")  # a form or beacon with no body
    assert r.status_code == 415
    r = open_client.post("/v1/investigate", content=b'{"question": "x"}',
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415
    assert open_client.post("/v1/reports/run", json={}).status_code == 200


def test_with_a_token_a_bearer_post_needs_no_content_type(client):
    assert client.post("/v1/reports/run").status_code == 401  # still the token's answer first
    assert client.post("/v1/reports/run", headers=AUTH).status_code == 200


def test_body_limit_is_checked_before_the_body_or_the_token(store):
    app = create_app(store, {"api": {"token": TOKEN, "max_body_bytes": 4096}})
    with running(app) as url:
        host, port = url.split("//")[1].split(":")
        with socket.create_connection((host, int(port)), timeout=5) as s:
            # Announce 1 GB and send none of it: the answer must come without the body.
            s.sendall(b"POST /v1/investigate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 1000000000\r\n\r\n")
            t0 = time.monotonic()
            head = s.recv(4096)
            assert head.startswith(b"HTTP/1.1 413") and time.monotonic() - t0 < 3
        with socket.create_connection((host, int(port)), timeout=5) as s:
            chunk = b"x" * 3000
            s.sendall(b"POST /v1/tools/services HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n%s\r\n" % (len(chunk), chunk) * 2)
            assert s.recv(4096).startswith(b"HTTP/1.1 413")


BIG = "9" * 400


@pytest.mark.parametrize("url", [f"/v1/services?since={BIG}", f"/v1/services?start={BIG}&end={BIG}",
                                 f"/v1/service-map?start={BIG}", f"/v1/reports?since={BIG}",
                                 f"/v1/anomalies?since={BIG}", "/v1/services?start=1e400"])
def test_absurd_numbers_are_a_400(client, url):
    client_ = TestClient(client.app, raise_server_exceptions=False)
    r = client_.get(url, headers=AUTH)
    assert r.status_code == 400, r.text


@pytest.mark.parametrize("body", [{"question": "q", "since": BIG}, {"question": "q", "start": BIG, "end": BIG},
                                  {"question": "q", "start": 10 ** 400}])
def test_absurd_investigation_windows_are_a_400(client, body):
    r = TestClient(client.app, raise_server_exceptions=False).post("/v1/investigate", json=body, headers=AUTH)
    assert r.status_code in (400, 422), r.text


@pytest.mark.parametrize("key", ["", "a\\", 'a"b', "x' OR 1=1 --", "é" * 3])
def test_bad_attribute_keys_are_a_400(client, key):
    r = TestClient(client.app, raise_server_exceptions=False).post(
        "/v1/tools/search_spans", json={"attributes": {key: "x"}}, headers=AUTH)
    assert r.status_code == 400 and "attribute key" in r.json()["detail"]
    ok = client.post("/v1/tools/search_spans", json={"attributes": {"url.path": "/charge"}, "limit": 3}, headers=AUTH)
    assert ok.status_code == 200 and ok.json()["spans"]


def test_engine_llm_needs_an_llm(client, monkeypatch):
    for var in ("GUARDIAN_LLM", "GUARDIAN_LLM_BASE_URL", "GUARDIAN_LLM_MODEL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-must-not-leave")
    r = client.post("/v1/investigate", json={"question": "why?", "engine": "llm"}, headers=AUTH)
    assert r.status_code == 400 and "needs an LLM configured" in r.json()["detail"]
    assert not client.app.state.jobs.recent()  # nothing was started


def test_llm_engine_in_settings_falls_back_without_an_llm(store, monkeypatch):
    for var in ("GUARDIAN_LLM", "GUARDIAN_LLM_BASE_URL", "GUARDIAN_LLM_MODEL"):
        monkeypatch.delenv(var, raising=False)
    app = create_app(store, {"api": {"token": TOKEN, "engine": "llm"}})
    assert app.state.settings.api.engine == "deterministic"


def test_store_and_history_files_are_private(tmp_path):
    path = str(tmp_path / "spans.duckdb")
    old = os.umask(0o022)
    try:
        store = seeded_store(path)
        hist = tmp_path / "reports.jsonl"
        app = create_app(store, {"api": {"token": TOKEN}, "schedule": {"history_path": str(hist)}})
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        with TestClient(app) as c:
            assert c.post("/v1/reports/run", headers=AUTH).status_code == 200
        assert stat.S_IMODE(os.stat(hist).st_mode) == 0o600
        store.close()
    finally:
        os.umask(old)
