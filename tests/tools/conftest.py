"""Stores loaded with committed eval scenarios (recorded windows of realistic traffic)."""
from __future__ import annotations

from pathlib import Path

import pytest

from guardian.evals.scenarios import load_store

SCENARIOS = Path(__file__).resolve().parents[2] / "evals" / "scenarios"


def load(name: str):
    return load_store(SCENARIOS / name)


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
