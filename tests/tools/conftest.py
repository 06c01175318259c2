"""Stores loaded with committed eval scenarios (recorded windows of realistic traffic)."""
from __future__ import annotations

from pathlib import Path

import pytest

from capture.store import factory
from guardian.evals.scenarios import load_store
from tests.engines import ENGINES

SCENARIOS = Path(__file__).resolve().parents[2] / "evals" / "scenarios"


def load(name: str, engine: str = "duckdb"):
    """A scenario in a fresh in-memory store of that engine (the tools must answer alike on each)."""
    old, factory.DEFAULT_ENGINE = factory.DEFAULT_ENGINE, engine
    try:
        return load_store(SCENARIOS / name)
    finally:
        factory.DEFAULT_ENGINE = old


@pytest.fixture(scope="module", params=ENGINES)
def store(request):
    """payments POST /charge starts failing halfway; recommendations and reporting always fail."""
    s = load("payments_5xx", request.param)
    yield s
    s.close()


@pytest.fixture(scope="module", params=ENGINES)
def slow_store(request):
    """postgresql SELECT orders becomes slow halfway (missing index)."""
    s = load("slow_query_missing_index", request.param)
    yield s
    s.close()
