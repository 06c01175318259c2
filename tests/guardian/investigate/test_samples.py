"""The investigator's local filter agrees with the store's, and sampling spreads over the window."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from capture.store.api import SpanFilter, TimeWindow
from guardian.evals.scenarios import load_store
from guardian.investigate.samples import Memo, match
from tools.base import spread_spans

ROOT = Path(__file__).resolve().parents[3] / "evals" / "scenarios"


@pytest.fixture(scope="module")
def store():
    s = load_store(ROOT / "stock_deadlock")
    yield s
    s.close()


def test_match_agrees_with_store_filter(store):
    rng = store.time_range()
    half = TimeWindow((rng.start_ns + rng.end_ns) // 2, rng.end_ns)
    everything = store.spans(SpanFilter(limit=10**6))
    for flt in (SpanFilter(service="inventory", kind="CLIENT"),
                SpanFilter(window=half, status_code="ERROR"),
                SpanFilter(name="UPDATE stock", attributes={"db.system": "postgresql"}),
                SpanFilter(min_duration_ns=50_000_000, service="frontend"),
                SpanFilter(attributes={"server.port": "5432", "db.operation.name": "UPDATE"})):
        want = {s.span_id for s in store.spans(replace(flt, limit=10**6))}
        got = {s.span_id for s in everything if match(s, flt)}
        assert want and got == want, flt


def test_spread_spans_covers_the_whole_window(store):
    rng = store.time_range()
    got = spread_spans(store, SpanFilter(window=rng), 40, slices=4)
    assert len(got) == 40
    quarter = (rng.end_ns - rng.start_ns) // 4
    assert {(s.start_time_unix_nano - rng.start_ns) // quarter for s in got} == {0, 1, 2, 3}


def test_memo_asks_the_store_once(store):
    calls = []

    class Counting:
        def service_map(self, w):
            calls.append(w)
            return store.service_map(w)

    m = Memo(Counting())  # type: ignore[arg-type]
    w = store.time_range()
    assert m.service_map(w) == m.service_map(w)
    assert len(calls) == 1
