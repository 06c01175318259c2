"""Benchmark: the DuckDB span store over 1M spans, with a naive baseline beside each figure.

Ingest rate (spans/s) vs row-by-row INSERTs; resident memory per span vs a Python list of
Span objects; p95 latency of each store query the tools use vs a Python scan of that list.
Prints a table (and --json for one JSON object).
--bare: only DuckDB's INSERT cost per span of each row layout (ids as hex text or as keys, the
resource as JSON per row or as a key), the same spans as Arrow tables inserted ROW_GROUP_ROWS at a
time (one thread, into a file, then a checkpoint), and the store's layout INSERT_ROWS at a time (as
DuckDBStore holds them), layouts interleaved.
--agent-path: the agent's whole store path, CPU µs per span: Rows (capture.rows.to_rows) appended
in 2,000-span batches to a store file as the agent's (memory limit 64 MB, 2 threads), settle and
hold after each, then a flush; with --tree DIR (repeatable) each checkout's store in turn, in its
own process, the trees' order reversed every other round.
Run: .venv/bin/python -m bench.store [--spans 1000000] [--path FILE] [--memory-limit-mb 64] [--bare]
                                     [--agent-path [--tree DIR ...] [--rounds N]]
"""
from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import time
from collections import defaultdict
from typing import Callable, Iterator

from capture.span import Span
from capture.store.api import SpanFilter, TimeWindow
from capture.store.factory import open_store

S = 1_000_000_000
MS = 1_000_000
T0 = 1_700_000_000 * S
SERVICES = [f"svc-{i:02d}" for i in range(20)]
OPS = [f"GET /api/v1/r{i}" for i in range(10)]


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def gen(n: int, duration_s: float = 3600.0, seed: int = 1) -> Iterator[list[Span]]:
    """Traces of 5 spans (SERVER -> CLIENT -> SERVER -> CLIENT db, + INTERNAL) over duration_s."""
    rnd = random.Random(seed)
    batch: list[Span] = []
    per_trace = 5
    step = int(duration_s * S / max(n // per_trace, 1))
    for t in range(n // per_trace):
        start = T0 + t * step
        a, b = rnd.choice(SERVICES), rnd.choice(SERVICES)
        op = rnd.choice(OPS)
        dur = int(rnd.lognormvariate(3, 0.6) * MS)
        err = rnd.random() < 0.02
        res_a = {"service.name": a, "process.pid": 1000 + SERVICES.index(a), "host.name": "node-1",
                 "k8s.namespace.name": "shop"}
        res_b = {"service.name": b, "process.pid": 2000 + SERVICES.index(b), "host.name": "node-2",
                 "k8s.namespace.name": "shop"}
        http = {"http.request.method": "GET", "url.path": op[4:], "http.response.status_code": 500 if err else 200,
                "network.transport": "tcp", "thread.id": rnd.randint(1, 64)}
        root = Span(name=op, kind="SERVER", start_time_unix_nano=start, end_time_unix_nano=start + dur,
                    status_code="ERROR" if err else "UNSET", attributes=dict(http), resource=res_a)
        cl = Span(name=op, kind="CLIENT", start_time_unix_nano=start + dur // 10, end_time_unix_nano=start + dur * 9 // 10,
                  trace_id=root.trace_id, parent_span_id=root.span_id, status_code=root.status_code,
                  attributes={**http, "server.address": b, "server.port": 8080}, resource=res_a)
        sv = Span(name=op, kind="SERVER", start_time_unix_nano=start + dur // 5, end_time_unix_nano=start + dur * 4 // 5,
                  trace_id=root.trace_id, parent_span_id=cl.span_id, status_code=root.status_code,
                  attributes=dict(http), resource=res_b)
        db = Span(name="SELECT orders", kind="CLIENT", start_time_unix_nano=start + dur // 4,
                  end_time_unix_nano=start + dur // 2, trace_id=root.trace_id, parent_span_id=sv.span_id,
                  attributes={"db.system": "postgresql", "db.query.text": "SELECT * FROM orders WHERE id = $1",
                              "server.address": "pg", "server.port": 5432}, resource=res_b)
        inner = Span(name="render", kind="INTERNAL", start_time_unix_nano=start + dur // 2,
                     end_time_unix_nano=start + dur * 3 // 5, trace_id=root.trace_id, parent_span_id=sv.span_id,
                     resource=res_b)
        batch += (root, cl, sv, db, inner)
        if len(batch) >= 10_000:
            yield batch
            batch = []
    if batch:
        yield batch


def p95(fn: Callable[[int], object], runs: int) -> float:
    times = []
    for i in range(runs):
        t = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t)
    times.sort()
    return times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))] * 1000


def _quantiles(values: list[int]) -> tuple[float, float, float]:
    q = statistics.quantiles(values, n=100) if len(values) > 1 else values * 99
    return q[49], q[94], q[98]


def python_red(spans: list[Span], w: TimeWindow, by_op: bool) -> dict:
    groups: dict[tuple, list[int]] = defaultdict(list)
    for s in spans:
        if s.kind == "SERVER" and w.start_ns <= s.start_time_unix_nano < w.end_ns:
            groups[(s.service, s.name if by_op else None)].append(s.duration_ns)
    return {k: (len(v), _quantiles(v)) for k, v in groups.items()}


def python_map(spans: list[Span], w: TimeWindow) -> dict:
    ws = [s for s in spans if w.start_ns <= s.start_time_unix_nano < w.end_ns]
    by_id = {s.span_id: s for s in ws}
    edges: dict[tuple, list[int]] = defaultdict(list)
    for s in ws:
        p = by_id.get(s.parent_span_id or "")
        if s.kind == "SERVER" and p is not None and p.kind == "CLIENT":
            edges[(p.service, s.service)].append(p.duration_ns)
    return {k: (len(v), _quantiles(v)) for k, v in edges.items()}


def _cpu_s() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def bare(n: int, rounds: int) -> dict:
    """DuckDB's INSERT (+ CHECKPOINT) µs of CPU (the process's, all threads: on a shared host the
    wall clock measures the neighbours) per span of each layout, median over `rounds` (interleaved)."""
    import os
    import tempfile

    import duckdb
    import pyarrow as pa

    from capture.store.columns import arrow_batch, encode_json, keyed_batch
    from capture.store.duckdb_store import INSERT_ROWS, ROW_GROUP_ROWS

    spans = [s for b in gen(n) for s in b]
    keys: dict[str, int] = {}
    text = arrow_batch(spans)
    keyed = keyed_batch(spans, lambda r: keys.setdefault(encode_json(r).decode(), len(keys)))
    layouts = {
        "ids as hex text, resource JSON per row (previous)": text,
        "ids as hex text, resource key": text.drop_columns(["resource"]).append_column(
            "resource_key", keyed.column("resource_key")),
        "ids as keys, resource JSON per row": keyed.drop_columns(["resource_key"]).append_column(
            "resource", text.column("resource")),
        "ids as keys, resource key (this store)": keyed,
    }
    # the store's layout in INSERTs of INSERT_ROWS (two row groups), as DuckDBStore holds them
    layouts[f"ids as keys, resource key, inserts of {INSERT_ROWS} rows"] = keyed
    times: dict[str, list[float]] = {k: [] for k in layouts}
    for _ in range(rounds):
        for name, table in layouts.items():
            step = INSERT_ROWS if name.endswith(" rows") else ROW_GROUP_ROWS
            with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
                con = duckdb.connect(os.path.join(tmp, "s.duckdb"), config={"threads": 1})
                con.register("_b", table.slice(0, 0))
                con.execute("CREATE TABLE t AS SELECT * FROM _b")
                con.unregister("_b")
                t = _cpu_s()
                for i in range(0, n, step):
                    con.register("_b", table.slice(i, step))
                    con.execute("INSERT INTO t SELECT * FROM _b")
                    con.unregister("_b")
                con.execute("CHECKPOINT")
                times[name].append(1e6 * (_cpu_s() - t) / n)
                size = os.path.getsize(os.path.join(tmp, "s.duckdb"))
                con.close()
            times.setdefault(name + " file bytes per span", []).append(size / n)
    del pa
    return {"spans": n, "rounds": rounds, "load": os.getloadavg()[0], "insert_cpu_us_per_span_median": {
        k: round(statistics.median(v), 2) for k, v in times.items() if not k.endswith("per span")},
        "file_bytes_per_span": {k[:-len(" file bytes per span")]: round(statistics.median(v), 1)
                                for k, v in times.items() if k.endswith("per span")}}


_AGENT_PATH = """
import json, os, resource, sys, tempfile
from bench.store import gen
from capture.rows import to_rows
from capture.store.factory import open_store
n = int(sys.argv[1])
shared = {}  # one resource dict per process, as the agent's enricher hands them (gen: one per trace)
for b in (spans := [s for b in gen(n, duration_s=60) for s in b]):
    b.resource = shared.setdefault(tuple(b.resource.items()), b.resource)
batches = [to_rows(spans[i:i + 2000]) for i in range(0, n, 2000)]
del spans
cpu = lambda: sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
with tempfile.TemporaryDirectory() as tmp:
    store = open_store(os.path.join(tmp, "s.duckdb"), max_spans=10 * n, memory_limit_mb=64, threads=2)
    rss0, c = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, cpu()
    for b in batches:
        store.append(b)
        store.settle()
        store.hold()
    store.flush()
    print(json.dumps({"cpu_us_per_span": 1e6 * (cpu() - c) / n,
                      "file_bytes_per_span": os.path.getsize(os.path.join(tmp, "s.duckdb")) / n,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
    store.close()
"""


def agent_path(n: int, trees: list[str], rounds: int) -> dict:
    """The agent's store path in each tree (its own process each time), trees alternated."""
    import os
    import subprocess
    import sys

    out: dict[str, list[dict]] = {t: [] for t in trees}
    for r in range(rounds):
        for tree in trees if r % 2 == 0 else trees[::-1]:
            run = subprocess.run([sys.executable, "-c", _AGENT_PATH, str(n)], cwd=tree, capture_output=True,
                                 text=True, check=True, env=dict(os.environ, PYTHONPATH=tree))
            last = run.stdout.strip().splitlines()[-1]  # (DuckDB may draw a progress bar before it)
            out[tree].append({**json.loads(last), "load": os.getloadavg()[0]})
    return {"spans": n, "rounds": rounds, "runs": out, "cpu_us_per_span_median": {
        t: round(statistics.median(x["cpu_us_per_span"] for x in v), 2) for t, v in out.items()},
        "peak_rss_mb_median": {t: round(statistics.median(x["peak_rss_mb"] for x in v), 1) for t, v in out.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spans", type=int, default=1_000_000)
    ap.add_argument("--path", help="file-backed store (default: in memory)")
    ap.add_argument("--memory-limit-mb", type=int, help="DuckDB's memory limit (the agent's store.memory_limit_mb)")
    ap.add_argument("--release-every-s", type=float,
                    help="how often a store file empties its buffer pool (capture/store/duckdb_store.py)")
    ap.add_argument("--max-spans", type=int, help="the store's count retention (the agent's store.max_spans)")
    ap.add_argument("--hold", action="store_true",
                    help="hold the pool near half the memory limit after every batch as the agent's worker does "
                         "(DuckDBStore.hold)")
    ap.add_argument("--runs", type=int, default=20, help="runs per store query (p95 over them)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--bare", action="store_true", help="only DuckDB's insert cost per span of each row layout")
    ap.add_argument("--rounds", type=int, default=5, help="--bare, --agent-path: rounds (median)")
    ap.add_argument("--agent-path", action="store_true", help="only the agent's store path, CPU per span")
    ap.add_argument("--tree", action="append", help="--agent-path: the checkouts to compare (default: this one)")
    args = ap.parse_args()
    n = args.spans
    if args.agent_path:
        import os

        trees = [os.path.abspath(t) for t in args.tree or [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]]
        print(json.dumps(agent_path(n, trees, args.rounds), indent=2))
        return
    if args.bare:
        print(json.dumps(bare(n, args.rounds), indent=2))
        return

    # Ingest (generation timed separately and subtracted).
    gc.collect()
    rss0 = rss_bytes()
    if args.release_every_s is not None:
        from capture.store import duckdb_store

        duckdb_store.RELEASE_EVERY_S = args.release_every_s
    store = open_store(args.path, memory_limit_mb=args.memory_limit_mb, max_spans=args.max_spans)
    gen_s = ingest_s = 0.0
    pool_max = spilled_max = 0  # duckdb_memory() after every batch
    it = gen(n)
    while True:
        t = time.perf_counter()
        batch = next(it, None)
        gen_s += time.perf_counter() - t
        if batch is None:
            break
        t = time.perf_counter()
        store.append(batch)
        if args.hold:
            store.hold()
        ingest_s += time.perf_counter() - t
        if args.memory_limit_mb:
            m = store.memory()
            pool_max, spilled_max = max(pool_max, m["pool"]), max(spilled_max, m["spilled"])
    del batch, it
    gc.collect()
    rss_store = rss_bytes() - rss0
    with open("/proc/self/status") as f:  # the peak so far: the ingest's (the baselines come later)
        hwm_ingest = round(int(f.read().split("VmHWM:")[1].split()[0]) / 1024, 1)
    count = store.count()

    # Baseline ingest: row-by-row INSERTs (what batching avoids), on a sample.
    import duckdb

    sample = next(gen(20_000, seed=2))
    con = duckdb.connect()
    con.execute("CREATE TABLE t (trace_id VARCHAR, span_id VARCHAR, parent VARCHAR, name VARCHAR, kind VARCHAR,"
                " s BIGINT, e BIGINT, svc VARCHAR, attrs JSON, res JSON)")
    t = time.perf_counter()
    for s in sample[:5000]:
        con.execute("INSERT INTO t VALUES (?,?,?,?,?,?,?,?,?,?)",
                    [s.trace_id, s.span_id, s.parent_span_id, s.name, s.kind, s.start_time_unix_nano,
                     s.end_time_unix_nano, s.service, json.dumps(s.attributes), json.dumps(s.resource)])
    row_rate = 5000 / (time.perf_counter() - t)
    con.close()

    tr = store.time_range()
    full = TimeWindow(tr.start_ns, tr.end_ns)
    last15 = TimeWindow(tr.end_ns - 15 * 60 * S, tr.end_ns)
    ids = [s.trace_id for s in store.spans(SpanFilter(window=full, kind="SERVER", limit=args.runs * 7))][::7]
    rnd = random.Random(3)
    svc = lambda i: SERVICES[i % len(SERVICES)]  # noqa: E731
    queries: dict[str, tuple[Callable[[int], object], Callable[[list[Span], int], object]]] = {
        "spans(service, 15m window)": (
            lambda i: store.spans(SpanFilter(window=last15, service=svc(i), limit=100)),
            lambda L, i: [s for s in L if s.service == svc(i) and last15.start_ns <= s.start_time_unix_nano < last15.end_ns][:100]),
        "spans(status=ERROR, slowest)": (
            lambda i: store.spans(SpanFilter(window=full, status_code="ERROR", order="duration_desc", limit=50)),
            lambda L, i: sorted((s for s in L if s.status_code == "ERROR"), key=lambda s: -s.duration_ns)[:50]),
        "spans(min_duration 100ms)": (
            lambda i: store.spans(SpanFilter(window=last15, min_duration_ns=100 * MS, limit=100)),
            lambda L, i: [s for s in L if s.duration_ns >= 100 * MS and s.start_time_unix_nano >= last15.start_ns][:100]),
        "spans(attribute =)": (
            lambda i: store.spans(SpanFilter(window=last15, attributes={"http.response.status_code": "500"}, limit=100)),
            lambda L, i: [s for s in L if str(s.attributes.get("http.response.status_code")) == "500"
                          and s.start_time_unix_nano >= last15.start_ns][:100]),
        "trace(id)": (
            lambda i: store.trace(ids[i % len(ids)]),
            lambda L, i: sorted((s for s in L if s.trace_id == ids[i % len(ids)]), key=lambda s: s.start_time_unix_nano)),
        "traces(service, ERROR)": (
            lambda i: store.traces(SpanFilter(window=full, service=svc(i), status_code="ERROR"), limit=10),
            None),
        "red(by service, 1h)": (lambda i: store.red(full), lambda L, i: python_red(L, full, False)),
        "red(by operation, 1h)": (lambda i: store.red(full, by="operation"), lambda L, i: python_red(L, full, True)),
        "red(service, 60s buckets)": (lambda i: store.red(full, interval_s=60, service=svc(i)), None),
        "service_map(1h)": (lambda i: store.service_map(full), lambda L, i: python_map(L, full)),
        "services(15m)": (lambda i: store.services(last15),
                          lambda L, i: sorted({s.service for s in L if s.start_time_unix_nano >= last15.start_ns})),
        "time_range()": (lambda i: store.time_range(), None),
    }
    del rnd
    store_p95 = {name: p95(q, args.runs) for name, (q, _) in queries.items()}

    # Baselines: the same spans as a Python list (memory and scans).
    store.close()
    gc.collect()
    rss1 = rss_bytes()
    spans_list = [s for b in gen(n) for s in b]
    gc.collect()
    rss_list = rss_bytes() - rss1
    base_p95 = {name: p95(lambda i, b=b: b(spans_list, i), 3) for name, (_, b) in queries.items() if b}

    out = {
        "spans": count,
        "ingest_spans_per_s": round(count / ingest_s),
        "store_releases": getattr(store, "releases", None),  # buffer pool emptied during the ingest
        "store_holds": getattr(store, "holds", None),  # pool past half the limit: checkpointed / released
        "pool_max_mb": round(pool_max / 2**20, 1), "spilled_max_mb": round(spilled_max / 2**20, 1),
        "vm_hwm_after_ingest_mb": hwm_ingest,
        "ingest_baseline_row_inserts_per_s": round(row_rate),
        "generation_s": round(gen_s, 1),
        "rss_bytes_per_span": round(rss_store / max(count, 1), 1),
        "rss_baseline_python_list_bytes_per_span": round(rss_list / max(n, 1), 1),
        "query_p95_ms": {k: round(v, 2) for k, v in store_p95.items()},
        "query_baseline_python_scan_p95_ms": {k: round(v, 1) for k, v in base_p95.items()},
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"spans: {count:,} ({'file ' + args.path if args.path else 'in memory'})")
    print(f"{'metric':<36} {'store':>14} {'baseline':>14}")
    print(f"{'ingest spans/s':<36} {out['ingest_spans_per_s']:>14,} {out['ingest_baseline_row_inserts_per_s']:>14,}  (row-by-row INSERT)")
    print(f"{'resident bytes per span':<36} {out['rss_bytes_per_span']:>14,.0f} {out['rss_baseline_python_list_bytes_per_span']:>14,.0f}  (Python list of Span)")
    print(f"{'query p95 (ms)':<36} {'store':>14} {'python scan':>14}")
    for k, v in out["query_p95_ms"].items():
        b = out["query_baseline_python_scan_p95_ms"].get(k)
        print(f"  {k:<34} {v:>14.2f} {('%14.1f' % b) if b is not None else '             -'}")


if __name__ == "__main__":
    main()
