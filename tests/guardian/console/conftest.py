"""Fixtures of the console tests: a live `guardian serve` over a seeded store file, and Debian's
chromium driven by Playwright (screenshots go to tests/guardian/console/artifacts/, gitignored)."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))  # serving_support, test_api_serve
from serving_support import TOKEN, seeded_store  # noqa: E402
from test_api_serve import _serve, _stop  # noqa: E402

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM = os.environ.get("GUARDIAN_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = tmp_path_factory.mktemp("console")
    path = str(d / "spans.duckdb")
    seeded_store(path).close()
    cfg = d / "guardian.yaml"
    cfg.write_text(f"memory:\n  path: {d / 'memory.sqlite'}\n")
    proc, url = _serve(["--store", path, "--config", str(cfg)], {"GUARDIAN_API_TOKEN": TOKEN})
    try:
        yield url
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (scripts/setup.sh installs it)")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.console_errors = errors
    yield pg
    ctx.close()


@pytest.fixture
def shot():
    def take(page, name: str) -> Path:
        path = ARTIFACTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path
    return take
