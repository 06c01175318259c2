"""Scheduled reports on a store file keep the process's heap bounded: every block a DuckDB query unpins
leaves an entry in its eviction queues that keeps ~200 B of glibc heap once the block is gone, until
DuckDB purges the queue (past 32k entries), and the store empties the queues after
`drain_after_queries` reads (capture/store/duckdb_store.py DRAIN_AFTER_QUERIES)."""
from __future__ import annotations

import gc

import pytest
from serving_support import incident_spans

from capture.store.factory import open_store

from guardian import heap, rss
from guardian.api.settings import ScheduleSettings
from guardian.schedule.scheduler import Scheduler

REPORTS = 60  # ~20 reads each: without the drain ~19 kB of glibc heap a report, ~1.15 MB in all
WITHOUT_MB = 0.6  # more than this kept without the drain (the cause is what the test says it is)
BOUND_MB = 0.3  # with it, at most 100 reads' worth is kept (measured: 0.01 MB)


def _heap_in_use() -> int:
    gc.collect()
    if heap._LIBC is not None:
        heap._LIBC.malloc_trim(0)
    return rss.malloc()["in_use"]


def _reports(path: str, drain_after: int | None) -> tuple[float, int, dict, dict]:
    """MB of glibc heap the reports kept, the store's drains, the first and last report."""
    store = open_store(path)
    try:
        store.append(incident_spans(seconds=300))
        store.drain_after_queries, store.drain_min_s = drain_after, 0.0
        sched = Scheduler(store, ScheduleSettings(interval_s=3600, window="30m", history_path=f"{path}.reports"))
        first = [sched.run_once() for _ in range(10)][-1]  # DuckDB's caches and the tools' imports warm
        before, drains = _heap_in_use(), store.drains
        for _ in range(REPORTS):
            last = sched.run_once()
        assert store.count() == store._rows("SELECT count(*) FROM span_rows")[0][0] > 0
        return (_heap_in_use() - before) / rss.MB, store.drains - drains, first, last
    finally:
        store.close()


@pytest.mark.skipif(not rss.malloc(), reason="glibc's mallinfo2 only")
def test_reports_keep_the_heap_bounded_by_draining_the_store(tmp_path):
    kept, drains, first, last = _reports(str(tmp_path / "without.duckdb"), None)
    assert drains == 0 and kept > WITHOUT_MB, f"without the drain the reports kept only {kept:.1f} MB"
    kept, drains, first, last = _reports(str(tmp_path / "with.duckdb"), 100)
    assert kept < BOUND_MB, f"glibc's heap in use grew {kept:.1f} MB over {REPORTS} reports"
    assert drains >= REPORTS * 20 // 100 - 1  # ~20 reads a report
    # the same answers after the drains
    assert last["anomalies"] == first["anomalies"] and last["anomaly_count"] > 0
