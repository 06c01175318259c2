"""Benchmark: deterministic investigation over a store of ~1M spans vs a scenario-sized store.

Same generator, same fault (a slow query halfway through), two sizes: the small store is
the baseline the big one is compared with. Each store is investigated --runs times over
windows of different lengths (p50/p95 seconds). Prints one JSON object.
Run: .venv/bin/python -m bench.investigate [--spans 1000000] [--store PATH] [--runs 7]
"""
from __future__ import annotations

import argparse
import json
import os
import time

from capture.store.factory import open_store
from guardian.evals.generator import generate
from guardian.evals.scenarios import BASE_NS, SCENARIOS
from guardian.investigate.deterministic import investigate
from tools.registry import call_tool

SPANS_PER_REQUEST = 9.0  # measured on the generator's endpoint mix (with reporting), to size the run
QUESTION = "Checkout got slow a few minutes ago. Why?"


def build(n_spans: int, path: str | None) -> tuple[object, float]:
    fault = SCENARIOS["slow_query_missing_index"][0]
    duration_s = 3600.0
    rate = n_spans / SPANS_PER_REQUEST / duration_s
    store = open_store(path)
    t0 = time.perf_counter()
    buf = []
    for batch in generate(fault, 7, BASE_NS, duration_s, rate):
        buf += batch
        if len(buf) >= 50_000:
            store.append(buf)
            buf = []
    store.append(buf)
    return store, time.perf_counter() - t0


def _windows(store, runs: int) -> list:
    """The whole range first, then windows ending at the range's end, shorter each time."""
    from capture.store.api import TimeWindow

    rng = store.time_range()
    span = rng.end_ns - rng.start_ns
    out = [None]
    for i in range(1, runs):
        out.append(TimeWindow(rng.end_ns - span // (i + 1), rng.end_ns + 1))
    return out


def _pct(values: list[float], q: float) -> float:
    v = sorted(values)
    return round(v[min(len(v) - 1, int(q * len(v)))], 3)


def measure(n_spans: int, path: str | None, runs: int = 7) -> dict:
    store, load_s = build(n_spans, path)
    times, cpu = [], []
    report = None
    for w in _windows(store, runs):
        t0, c0 = time.perf_counter(), time.process_time()
        got = investigate(store, QUESTION, w)
        # CPU seconds (all threads, DuckDB's too) say more than wall time on a shared, busy host.
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        report = report or got
    inv_s, inv_cpu = times[0], cpu[0]
    tools = {}
    for name in ("list_services", "anomalies", "slow_queries", "errors"):
        t = time.perf_counter()
        out = call_tool(store, name, {})
        tools[name] = round(time.perf_counter() - t, 3)
        assert "error" not in out, out
    top = report.root_causes[0] if report.root_causes else None
    result = {"spans": store.count(), "load_s": round(load_s, 2), "investigate_s": round(inv_s, 3),
              "investigate_cpu_s": round(inv_cpu, 3), "runs": len(times),
              "p50_s": _pct(times, 0.5), "p95_s": _pct(times, 0.95),
              "p50_cpu_s": _pct(cpu, 0.5), "p95_cpu_s": _pct(cpu, 0.95),
              "tool_s": tools,
              "top_cause": f"{top.service}/{top.operation}/{top.kind}" if top else None}
    store.close()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--spans", type=int, default=1_000_000)
    ap.add_argument("--baseline-spans", type=int, default=5_000)
    ap.add_argument("--store", help="file-backed store for the big run (default in memory)")
    ap.add_argument("--runs", type=int, default=7, help="investigations per store (p50/p95)")
    args = ap.parse_args()
    small = measure(args.baseline_spans, None, args.runs)
    big = measure(args.spans, args.store, args.runs)
    print(json.dumps({"baseline": small, "big": big, "loadavg_1m": os.getloadavg()[0],
                      "investigate_ratio": round(big["investigate_s"] / max(small["investigate_s"], 1e-9), 1),
                      "p95_ratio": round(big["p95_s"] / max(small["p95_s"], 1e-9), 1)},
                     indent=2))


if __name__ == "__main__":
    main()
