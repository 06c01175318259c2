"""Fixtures of the schedule tests: a seeded store and stand-ins for Slack's Web API and a webhook."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))  # serving_support
from serving_support import RecordingServer, seeded_store  # noqa: E402


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
def webhook():
    with RecordingServer(reply=lambda path, body, n: (200, {"received": n})) as srv:
        yield srv
