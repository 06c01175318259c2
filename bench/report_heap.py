"""The process's heap over scheduled anomaly reports on a store file, the store's drain of DuckDB's
eviction queues off and on in the same command (capture/store/duckdb_store.py DRAIN_AFTER_QUERIES: an
entry of a queue whose block is gone keeps ~200 B of glibc heap until DuckDB purges the queue, past
32k entries). No kernel probes.

    python -m bench.report_heap --reports 240 [--out FILE]

Prints one JSON object: per arm, RSS, glibc's heap in use (after malloc_trim) and DuckDB's pool
after the warm-up and at each quarter of the reports; reads, drains and the time a drain took.
It does not judge."""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from capture.store import duckdb_store
from capture.store.factory import open_store
from guardian import heap, rss
from guardian.api.settings import ScheduleSettings
from guardian.schedule.scheduler import Scheduler

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "guardian" / "api"))
from serving_support import incident_spans  # noqa: E402 - the API tests' recorded incident


def _snap(store) -> dict[str, float]:
    gc.collect()
    if heap._LIBC is not None:
        heap._LIBC.malloc_trim(0)
    return {"rss_mb": round(rss.by_mapping()["total"] / rss.MB, 1),
            "glibc_in_use_mb": round(rss.malloc().get("in_use", 0) / rss.MB, 2),
            "duckdb_pool_mb": round(store.memory()["pool"] / rss.MB, 2)}


def arm(drain_after: int | None, reports: int, warm: int = 20) -> dict:
    d = tempfile.mkdtemp(prefix="report-heap-")
    store = open_store(os.path.join(d, "guardian.duckdb"), memory_limit_mb=64, threads=2)
    try:
        for seed in range(10):
            store.append(incident_spans(seed=seed))
        store.flush()
        store.drain_after_queries = drain_after
        sched = Scheduler(store, ScheduleSettings(window="3600s", history_path=os.path.join(d, "reports.jsonl")))
        for _ in range(warm):
            sched.run_once()
        out = {"after_warm": _snap(store), "quarters": []}
        t = time.monotonic()
        for i in range(reports):
            sched.run_once()
            if (i + 1) % max(1, reports // 4) == 0:
                out["quarters"].append(_snap(store))
        out.update(s_per_report=round((time.monotonic() - t) / reports, 3), drains=store.drains,
                   reads_since_drain=store.queries)
        t = time.monotonic()
        store.drain()
        out["drain_s"] = round(time.monotonic() - t, 3)
        return out
    finally:
        store.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.report_heap", description=__doc__.split("\n\n")[0])
    p.add_argument("--reports", type=int, default=240)
    p.add_argument("--out", help="also write the JSON here")
    a = p.parse_args(argv)
    heap.tune()
    result = {"load_start": os.getloadavg()[0], "reports": a.reports,
              "off": arm(None, a.reports), "on": arm(duckdb_store.DRAIN_AFTER_QUERIES, a.reports)}
    result["load_end"] = os.getloadavg()[0]
    text = json.dumps(result)
    if a.out:
        Path(a.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
