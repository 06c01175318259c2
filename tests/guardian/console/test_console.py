"""The web console in a real headless Chromium against a live `guardian serve` over a seeded store:
sign-in (missing or bad token -> sign-in page; cookie HttpOnly + SameSite=Strict, token never in a
URL), and every page showing the store's real services and numbers; screenshots as artifacts."""
from __future__ import annotations

import re

import httpx
import pytest
from serving_support import AUTH, TOKEN

pytestmark = pytest.mark.slow


def sign_in(page, url: str, token: str = TOKEN) -> None:
    page.goto(url + "/")
    page.fill("#token", token)
    page.click("button[type=submit]")


def test_missing_or_bad_token_gets_the_sign_in_page(page, server, shot):
    page.goto(server + "/#/map")
    assert page.locator("form#login").is_visible() and page.locator("#main").count() == 0
    shot(page, "sign-in")
    sign_in(page, server, "not-the-token")
    page.wait_for_selector("#error:has-text('Wrong token')")
    assert page.locator("form#login").is_visible()
    assert not page.context.cookies()
    # A forged cookie is no session either.
    page.context.add_cookies([{"name": "guardian_session", "value": "forged", "url": server}])
    page.goto(server + "/")
    assert page.locator("form#login").is_visible()
    assert httpx.get(server + "/v1/services", cookies={"guardian_session": "forged"}).status_code == 401


def test_sign_in_sets_a_safe_cookie_and_the_token_stays_out_of_urls(page, server, shot):
    urls: list[str] = []
    page.on("request", lambda r: urls.append(r.url))
    sign_in(page, server)
    page.wait_for_selector("g.node")
    cookie = next(c for c in page.context.cookies() if c["name"] == "guardian_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and TOKEN not in cookie["value"]
    assert urls and not any(TOKEN in u for u in urls)
    # The cookie works for the API from the page, and a cross-site form POST cannot use it:
    # without a JSON content type a cookie-authenticated POST is refused.
    r = httpx.post(server + "/v1/reports/run", cookies={"guardian_session": cookie["value"]},
                   content=b"x", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    assert page.evaluate("document.cookie") == ""  # HttpOnly: not readable by scripts


def test_service_map_shows_the_real_services_and_numbers(page, server, shot):
    sign_in(page, server)
    page.wait_for_selector("g.node")
    graph = httpx.get(server + "/v1/service-graph", headers=AUTH).json()
    names = {n["name"] for n in graph["nodes"]}
    assert {"frontend", "checkout", "payments", "recommend"} <= names
    drawn = set(page.locator("g.node").evaluate_all("els => els.map(e => e.dataset.node)"))
    assert drawn == names
    assert page.locator("g.node[data-node=postgresql] text").first.text_content() == "postgresql"
    edge = next(e for e in graph["edges"] if e["client"] == "checkout" and e["server"] == "payments")
    label = page.locator("g.edge[data-edge='checkout->payments'] text").text_content()
    shown = float(re.search(r"([\d.]+)% err", label).group(1))
    # the default window follows the clock: allow for the seconds between the page and this call
    assert abs(shown - 100 * edge["error_rate"]) < 1.5 and shown > 15 and edge["health"] == "failing"
    assert page.locator("g.node[data-node=payments] rect").first.get_attribute("stroke") == "#c53030"  # anomalous
    shot(page, "service-map")
    page.click("g.node[data-node=payments]")
    page.wait_for_selector("h1:has-text('payments')")
    assert page.url.endswith("#/service/payments")


def test_service_page_has_charts_operations_queries_and_errors(page, server, shot):
    sign_in(page, server)
    page.wait_for_selector("g.node")
    page.goto(server + "/#/service/payments")
    page.wait_for_selector(".chart polyline")
    assert page.locator(".chart polyline").count() == 3
    ops = page.locator("table").nth(0).text_content()
    assert "POST /charge" in ops
    red = httpx.post(server + "/v1/tools/red", json={"service": "payments", "by": "operation"}, headers=AUTH).json()
    charge = next(i for i in red["items"] if i["operation"] == "POST /charge")
    row = page.locator("tr", has_text="POST /charge").first.text_content()
    shown = float(re.search(r"([\d.]+)%", row).group(1))
    assert abs(shown - 100 * charge["current"]["error_rate"]) < 1.5 and shown > 15
    body = page.locator("#main").text_content()
    assert "SELECT balance FROM accounts" in body and "payments POST /charge" in body  # query with its caller
    assert "card processor timeout" in body or "503" in body  # the recent errors
    shot(page, "service-payments")


def test_trace_search_and_waterfall(page, server, shot):
    sign_in(page, server)
    page.wait_for_selector("g.node")
    page.goto(server + "/#/traces?service=payments&status=ERROR&attr=url.path%3D%2Fcharge")
    page.wait_for_selector("form.search ~ table tbody tr a[data-trace]")
    rows = page.locator("form.search ~ table tbody tr")
    assert rows.count() > 5 and "payments" in rows.first.text_content() and "ERROR" in rows.first.text_content()
    shot(page, "traces")
    first = page.locator("form.search ~ table a[data-trace]").first
    tid = first.get_attribute("data-trace")
    first.click()
    page.wait_for_selector(".wf-row")
    spans = httpx.get(f"{server}/v1/traces/{tid}", headers=AUTH).json()["spans"]
    assert page.locator(".wf-row").count() == len(spans) == 6
    assert page.locator(".wf-bar.critical").count() >= 3 and page.locator(".wf-bar.error").count() >= 1
    page.locator(".wf-row", has_text="POST /charge").last.click()
    detail = page.locator("#span-detail").text_content()
    assert "url.path" in detail and "/charge" in detail and "card processor timeout" in detail
    assert "linked from (parent)" in detail
    shot(page, "trace-waterfall")


def test_investigate_shows_steps_report_and_trace_links(page, server, shot):
    sign_in(page, server)
    page.wait_for_selector("g.node")
    page.goto(server + "/#/investigate")
    page.fill("textarea[name=question]", "why does checkout fail?")
    page.click("form#ask button[type=submit]")
    page.wait_for_selector("#status:has-text('done')", timeout=60000)
    steps = page.locator("ol.steps li").all_text_contents()
    assert any("query" in s for s in steps) and any(s.startswith(tuple("0123456789")) for s in steps)
    assert "payments" in page.locator(".report .cause").first.text_content()
    shot(page, "investigation")
    link = page.locator(".report .evidence a[data-trace]").first
    tid = link.get_attribute("data-trace")
    assert re.fullmatch(r"[0-9a-f]{32}", tid)
    link.click()
    page.wait_for_selector(".wf-row")
    assert page.url.endswith(f"#/trace/{tid}") and tid in page.locator("h1").text_content()
    page.go_back()
    page.wait_for_selector("#mark-right")
    page.click("#mark-right")
    page.wait_for_selector("text=Marked right")
    inc = httpx.get(server + "/v1/incidents?outcome=right", headers=AUTH).json()["incidents"]
    assert inc and inc[0]["cause_service"] == "payments"
    page.goto(server + "/#/investigate")
    page.wait_for_selector("text=Past investigations")
    assert "why does checkout fail?" in page.locator("table").text_content()


def test_timeline_shows_reports_and_anomalies(page, server, shot):
    assert httpx.post(server + "/v1/reports/run", headers=AUTH).status_code == 200
    sign_in(page, server)
    page.wait_for_selector("g.node")
    page.goto(server + "/#/timeline")
    page.wait_for_selector("text=Scheduled and on-demand anomaly reports")
    body = page.locator("#main").text_content()
    assert "error rate" in body and "api" in body
    assert page.locator(".timeline circle").count() >= 2
    shot(page, "timeline")
    assert not page.console_errors
