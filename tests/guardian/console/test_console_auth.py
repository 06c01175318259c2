"""The console's sign-in over HTTP (no browser): pages, headers, session cookie, logout."""
from __future__ import annotations

from fastapi.testclient import TestClient
from serving_support import TOKEN, seeded_store

from guardian.api.main import create_app


def test_sign_in_cookie_and_logout():
    store = seeded_store()
    try:
        with TestClient(create_app(store, {"api": {"token": TOKEN}})) as c:
            page = c.get("/")
            assert page.status_code == 200 and 'id="login"' in page.text and TOKEN not in page.text
            csp = page.headers["content-security-policy"]
            assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
            assert page.headers["x-frame-options"] == "DENY" and page.headers["cache-control"] == "no-store"
            assert c.get("/console/static/app.js").status_code == 200
            assert c.get("/console/static/..%2Fsessions.py").status_code == 404
            assert c.post("/console/login", json={"token": "nope"}).status_code == 401
            form = c.post("/console/login", content=b'{"token": "t0ken"}', headers={"Content-Type": "text/plain"})
            assert form.status_code in (415, 422) and "set-cookie" not in form.headers  # no cross-site form sign-in
            r = c.post("/console/login", json={"token": TOKEN})
            cookie = r.headers["set-cookie"]
            assert r.status_code == 204 and "HttpOnly" in cookie and "SameSite=strict" in cookie and TOKEN not in cookie
            assert 'id="main"' in c.get("/").text
            assert c.get("/v1/services").status_code == 200  # the cookie authenticates the API
            assert c.post("/v1/reports/run", content=b"x", headers={"Content-Type": "text/plain"}).status_code == 415
            assert c.post("/v1/reports/run", json={}).status_code == 200
            assert c.post("/console/logout", json={}).status_code == 204
            assert c.get("/v1/services").status_code == 401 and 'id="login"' in c.get("/").text
        with TestClient(create_app(store, {"api": {"token": TOKEN}})) as c:
            codes = [c.post("/console/login", json={"token": f"guess{i}"}).status_code for i in range(11)]
            assert codes == [401] * 10 + [429]  # guessing is throttled per client
            assert c.post("/console/login", json={"token": TOKEN}).status_code == 429
        with TestClient(create_app(store, {"api": {"token": None}}), base_url="http://localhost:8080") as c:
            assert 'id="main"' in c.get("/").text  # no token: loopback-only and open
            assert c.get("/", headers={"Host": "evil.example"}).status_code == 403
    finally:
        store.close()
