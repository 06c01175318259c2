"""Scheduled reports on a store file keep the process's heap bounded: DuckDB keeps ~4 kB of glibc heap
per hash join outside its buffer pool until its database is closed, and the store reopens its file
after `reopen_after_queries` reads (capture/store/duckdb_store.py REOPEN_AFTER_QUERIES)."""
from __future__ import annotations

import gc

import pytest
from serving_support import incident_spans

from capture.store.factory import open_store

from guardian import heap, rss
from guardian.api.settings import ScheduleSettings
from guardian.schedule.scheduler import Scheduler

REPORTS = 60  # ~20 reads each: without the reopen ~60 kB of glibc heap a report, ~3.6 MB in all
BOUND_MB = 1.5  # with it, at most 100 reads' worth is kept (~0.3 MB)


def _heap_in_use() -> int:
    gc.collect()
    if heap._LIBC is not None:
        heap._LIBC.malloc_trim(0)
    return rss.malloc()["in_use"]


@pytest.mark.skipif(not rss.malloc(), reason="glibc's mallinfo2 only")
def test_reports_keep_the_heap_bounded_by_reopening_the_store(tmp_path):
    store = open_store(str(tmp_path / "guardian.duckdb"))
    try:
        store.append(incident_spans(seconds=300))
        store.reopen_after_queries, store.reopen_min_s = 100, 0.0
        sched = Scheduler(store, ScheduleSettings(interval_s=3600, window="30m",
                                                  history_path=str(tmp_path / "reports.jsonl")))
        first = [sched.run_once() for _ in range(10)][-1]  # DuckDB's caches and the tools' imports warm
        before, reopens = _heap_in_use(), store.reopens
        for _ in range(REPORTS):
            last = sched.run_once()
        grown = (_heap_in_use() - before) / rss.MB
        assert grown < BOUND_MB, f"glibc's heap in use grew {grown:.1f} MB over {REPORTS} reports"
        assert store.reopens - reopens >= REPORTS * 20 // 100 - 1  # ~20 reads a report
        # the same answers from the reopened database
        assert last["anomalies"] == first["anomalies"] and last["anomaly_count"] > 0
        assert store.count() == store._rows("SELECT count(*) FROM span_rows")[0][0] > 0
    finally:
        store.close()
