"""Fixtures of the Slack tests: a seeded store, a stand-in for Slack's Web API, an app wired to it."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))  # serving_support
from serving_support import SLACK_SECRET, RecordingServer, seeded_store  # noqa: E402

from guardian.api.main import create_app  # noqa: E402


@pytest.fixture(scope="module")
def store():
    s = seeded_store()
    yield s
    s.close()


@pytest.fixture
def slack_api():
    with RecordingServer() as srv:
        yield srv


@pytest.fixture
def app(store, slack_api):
    return create_app(store, {"api": {"token": "t"}, "slack": {
        "signing_secret": SLACK_SECRET, "bot_token": "xoxb-test", "api_url": slack_api.url + "/api/",
        "window": "10m"}})


@pytest.fixture
def client(app):
    with TestClient(app) as c:
        yield c
