"""Fixtures of the API tests: a seeded real store and an app over it (token "t0ken")."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from serving_support import TOKEN, seeded_store

from guardian.api.main import create_app


@pytest.fixture(scope="module")
def store():
    s = seeded_store()
    yield s
    s.close()


@pytest.fixture
def client(store):
    with TestClient(create_app(store, {"api": {"token": TOKEN}})) as c:
        yield c
