"""The deterministic investigator gives the same report on ClickHouse (chDB) as on DuckDB,
for every recorded scenario: same causes in the same order, same confidence, same evidence."""
from __future__ import annotations

from pathlib import Path

import pytest

from capture.store import factory
from guardian.evals.runner import matches
from guardian.evals.scenarios import load_scenarios, load_store
from guardian.investigate.deterministic import investigate

ROOT = Path(__file__).resolve().parents[2] / "evals" / "scenarios"
SCENARIOS = load_scenarios(ROOT)


def _report(sc, engine: str, monkeypatch):
    monkeypatch.setattr(factory, "DEFAULT_ENGINE", engine)
    store = load_store(sc.path)
    try:
        assert type(store).__name__ == {"duckdb": "DuckDBStore", "chdb": "ClickHouseStore"}[engine]
        return investigate(store, sc.question)
    finally:
        store.close()


@pytest.mark.parametrize("sc", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_same_report_on_both_engines(sc, monkeypatch):
    duck = _report(sc, "duckdb", monkeypatch)
    ch = _report(sc, "chdb", monkeypatch)
    strip = {"duration_s"}
    assert ch.model_dump(exclude=strip) == duck.model_dump(exclude=strip)
    if sc.expected.get("service") and ch.root_causes:
        assert matches(ch.root_causes[0], sc.expected) == matches(duck.root_causes[0], sc.expected)
