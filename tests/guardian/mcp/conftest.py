"""Fixtures of the MCP tests: a seeded store (in memory, and as a file for the stdio server)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))  # serving_support
from serving_support import seeded_store  # noqa: E402


@pytest.fixture(scope="module")
def store():
    s = seeded_store()
    yield s
    s.close()


@pytest.fixture(scope="module")
def store_file(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("mcp") / "spans.duckdb")
    seeded_store(path).close()
    return path
