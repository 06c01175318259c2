"""Run a test module on both store engines: DuckDB and ClickHouse's engine (chDB, in-process).

`engine` is a fixture that makes open_store(None) give that engine's store; a conftest makes
it autouse for the folders whose answers must not depend on the engine."""
from __future__ import annotations

import pytest

from capture.store import factory

ENGINES = ["duckdb", "chdb"]


@pytest.fixture(params=ENGINES)
def engine(request, monkeypatch):
    monkeypatch.setattr(factory, "DEFAULT_ENGINE", request.param)
    return request.param
