"""Fixtures of the API tests: a seeded real store and an app over it (token "t0ken")."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parent))  # serving_support, in any import mode
from serving_support import TOKEN, seeded_store  # noqa: E402

from guardian.api.main import create_app  # noqa: E402


@pytest.fixture(scope="module")
def store():
    s = seeded_store()
    yield s
    s.close()


@pytest.fixture
def client(store):
    with TestClient(create_app(store, {"api": {"token": TOKEN}})) as c:
        yield c
