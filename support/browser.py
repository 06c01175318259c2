"""Debian's chromium driven by Playwright for the console's browser tests: launch it headless,
collect page errors, save screenshots. Skips (pytest) when playwright or chromium is missing."""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterator

CHROMIUM = os.environ.get("GUARDIAN_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


@contextlib.contextmanager
def chromium() -> Iterator[object]:
    """A headless chromium Browser (Playwright sync API)."""
    import pytest

    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (scripts/setup.sh installs it)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu",
                                    # no calls of its own to Google's services: on a host
                                    # whose traffic is captured they would show as a service
                                    "--disable-background-networking", "--disable-component-update",
                                    "--disable-sync", "--no-first-run", "--disable-domain-reliability",
                                    "--disable-client-side-phishing-detection"])
        try:
            yield b
        finally:
            b.close()


@contextlib.contextmanager
def new_page(browser) -> Iterator[object]:
    """A page in its own context; its uncaught script errors collect in page.console_errors."""
    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.console_errors = errors
    try:
        yield pg
    finally:
        ctx.close()


def screenshot(page, folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def sign_in(page, url: str, token: str) -> None:
    page.goto(url + "/")
    page.fill("#token", token)
    page.click("button[type=submit]")
