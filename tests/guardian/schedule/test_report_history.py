"""The report history's bound (guardian/schedule/history.py): it holds the newest `max_items` records
under more input than it holds, with a file or without, counts what it dropped, keeps only an index
in memory when it has a file, compacts the file, and reloads what it kept."""
from __future__ import annotations

import json
import os
import stat

import pytest

from guardian.api.metrics import ApiMetrics
from guardian.api.settings import ScheduleSettings
from guardian.schedule.history import ReportHistory
from guardian.schedule.scheduler import Scheduler


def _record(i: int, anomalies: int | None = None) -> dict:
    n = i % 3 if anomalies is None else anomalies
    return {"id": f"r{i:04d}", "at_ns": 1_000 + i, "trigger": "schedule", "anomaly_count": n,
            "anomalies": [{"service": "s", "x": "y" * 200}] * n, "text": "t" * 300, "deliveries": {}}


@pytest.mark.parametrize("on_file", [False, True])
def test_the_history_stays_at_its_bound_and_counts_what_it_dropped(tmp_path, on_file):
    path = str(tmp_path / "reports.jsonl") if on_file else None
    h = ReportHistory(path, max_items=10)
    dropped = sum(h.add(_record(i)) for i in range(57))
    assert len(h) == 10 and h.evicted == dropped == 47
    newest = h.list(limit=100)
    assert [r["id"] for r in newest] == [f"r{i:04d}" for i in range(56, 46, -1)]
    assert h.get("r0056")["anomaly_count"] == 56 % 3 and h.get("r0046") is None
    assert [r["id"] for r in h.list(limit=2, since_ns=1_000 + 50, only_anomalies=True)] == ["r0056", "r0055"]
    if on_file:
        assert not h._items  # memory holds where the records are, not the records
        lines = (tmp_path / "reports.jsonl").read_text().splitlines()
        assert 10 <= len(lines) < 20 and json.loads(lines[-1])["id"] == "r0056"  # compacted past 2 x 10
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        again = ReportHistory(path, max_items=10)
        assert [r["id"] for r in again.list(limit=100)] == [r["id"] for r in newest]


def test_a_torn_last_line_is_skipped_and_the_next_record_kept(tmp_path):
    path = tmp_path / "reports.jsonl"
    h = ReportHistory(str(path), max_items=5)
    h.add(_record(1))
    with open(path, "a") as f:
        f.write('{"id": "torn", "at_')  # a crash in the middle of a write
    again = ReportHistory(str(path), max_items=5)
    again.add(_record(2))
    assert [r["id"] for r in again.list()] == ["r0002", "r0001"]
    assert [r["id"] for r in ReportHistory(str(path), max_items=5).list()] == ["r0002", "r0001"]


def test_the_scheduler_counts_evictions_on_metrics(store, tmp_path):
    metrics = ApiMetrics()
    sched = Scheduler(store, ScheduleSettings(interval_s=3600, window="10m", history_max=2,
                                              history_path=str(tmp_path / "h.jsonl")), metrics=metrics)
    ids = [sched.run_once()["id"] for _ in range(5)]
    assert [r["id"] for r in sched.history.list()] == ids[:-3:-1]
    assert metrics.registry.get_sample_value("guardian_report_history_evicted_total") == 3
