"""Stores loaded with committed eval scenarios (recorded windows of realistic traffic)."""
from __future__ import annotations

from pathlib import Path

import pytest

from capture.store.factory import open_store
from guardian.evals.scenarios import read_spans

SCENARIOS = Path(__file__).resolve().parents[2] / "evals" / "scenarios"


def load(name: str):
    store = open_store(None)
    for batch in read_spans(SCENARIOS / name):
        store.append(batch)
    return store


@pytest.fixture(scope="module")
def store():
    """payments POST /charge starts failing halfway; recommendations and reporting always fail."""
    s = load("payments_5xx")
    yield s
    s.close()


@pytest.fixture(scope="module")
def slow_store():
    """postgresql SELECT orders becomes slow halfway (missing index)."""
    s = load("slow_query_missing_index")
    yield s
    s.close()
