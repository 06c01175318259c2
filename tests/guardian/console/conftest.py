"""Fixtures of the console tests: a live `guardian serve` over a seeded store file, and Debian's
chromium driven by Playwright (screenshots go to tests/guardian/console/artifacts/, gitignored)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))  # serving_support, test_api_serve
from serving_support import TOKEN, seeded_store  # noqa: E402
from test_api_serve import _serve, _stop  # noqa: E402

from support.browser import chromium, new_page, screenshot  # noqa: E402

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


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
    with chromium() as b:
        yield b


@pytest.fixture
def page(browser):
    with new_page(browser) as pg:
        yield pg


@pytest.fixture
def shot():
    return lambda page, name: screenshot(page, ARTIFACTS, name)
