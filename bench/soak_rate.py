"""Agent memory over time at a constant span rate: the agent's own ingest path (queue, rows,
enricher, linker, DuckDB store with its configured memory limit) fed by a generator instead of
eBPF, the scheduled anomaly report every 30 s, and RSS, DuckDB's memory (duckdb_memory()), the
store file and optionally tracemalloc sampled at intervals. No kernel probes, no servers.

    python -m bench.soak_rate --rate 5000 --minutes 6 [--tracemalloc] --json

Prints one JSON object (and writes it with --out): samples, and RSS start/max/end and its slope
after the warm-up. It does not judge."""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.soaklib.probe import report, rss_mb, slope_per_min
from capture.span import Span

TICK_S = 0.02


def log(msg: str) -> None:
    print(f"[soak_rate {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class RateSource:
    """Client/server HTTP pairs and Redis client spans at `rate` spans per second, shaped like the
    capture's (resource holds only process.pid; the agent's enricher adds the rest)."""

    def __init__(self, rate: float, pids: list[int], seed: int = 7) -> None:
        self.rate = rate
        self.pids = pids
        self.rng = random.Random(seed)
        self.made = 0
        self._res = {pid: {"process.pid": pid} for pid in pids}

    def start(self) -> None:
        pass

    def stats(self) -> dict[str, int]:
        return {"generated_spans": self.made}

    def close(self) -> None:
        pass

    def _pair(self, now: int) -> list[Span]:
        r = self.rng
        client, server = r.sample(self.pids, 2)
        cport = r.randrange(30000, 60000)
        dur = r.randrange(200_000, 20_000_000)
        start = now - dur - r.randrange(0, 5_000_000)
        path = f"/api/v1/item/{r.randrange(50)}"
        status = 500 if r.random() < 0.01 else 200
        common = {"http.request.method": "GET", "url.path": path, "http.response.status_code": status,
                  "network.protocol.name": "http", "server.address": "127.0.0.1", "server.port": 8080,
                  "client.address": "127.0.0.1", "client.port": cport}
        tid = "%032x" % r.getrandbits(128)
        st = "ERROR" if status == 500 else "UNSET"
        c = Span(trace_id=tid, span_id="%016x" % r.getrandbits(64), parent_span_id=None, name=f"GET {path}",
                 kind="CLIENT", start_time_unix_nano=start, end_time_unix_nano=start + dur, status_code=st,
                 attributes=dict(common), resource=self._res[client])
        s = Span(trace_id="%032x" % r.getrandbits(128), span_id="%016x" % r.getrandbits(64), parent_span_id=None,
                 name=f"GET {path}", kind="SERVER", start_time_unix_nano=start + 50_000,
                 end_time_unix_nano=start + dur - 50_000, status_code=st, attributes=dict(common),
                 resource=self._res[server])
        return [c, s]

    def _redis(self, now: int) -> Span:
        r = self.rng
        dur = r.randrange(50_000, 2_000_000)
        return Span(trace_id="%032x" % r.getrandbits(128), span_id="%016x" % r.getrandbits(64), parent_span_id=None,
                    name="GET", kind="CLIENT", start_time_unix_nano=now - dur, end_time_unix_nano=now,
                    status_code="UNSET",
                    attributes={"db.system": "redis", "db.operation.name": "GET", "server.address": "127.0.0.1",
                                "server.port": 6379, "client.address": "127.0.0.1",
                                "client.port": r.randrange(30000, 60000)},
                    resource=self._res[r.choice(self.pids)])

    def run(self, on_spans, stop: threading.Event) -> None:
        owed = 0.0
        nxt = time.monotonic()
        while not stop.is_set():
            owed += self.rate * TICK_S
            now = time.time_ns()
            batch: list[Span] = []
            while owed >= 3:
                batch += self._pair(now)
                batch.append(self._redis(now))
                owed -= 3
            self.made += len(batch)
            on_spans(batch)
            nxt += TICK_S
            time.sleep(max(0.0, nxt - time.monotonic()))


def duckdb_memory(store) -> dict[str, int]:
    """MB per tag of DuckDB's buffer manager (non-zero ones) and its total."""
    con = getattr(store, "_con", None)
    if con is None:
        return {}
    with store._lock:
        rows = con.execute("SELECT tag, memory_usage_bytes, temporary_storage_bytes FROM duckdb_memory()").fetchall()
    out = {tag.lower(): round(used / 2**20, 1) for tag, used, _ in rows if used}
    out["total"] = round(sum(r[1] for r in rows) / 2**20, 1)
    spill = sum(r[2] for r in rows)
    if spill:
        out["spilled"] = round(spill / 2**20, 1)
    return out


def hwm_mb() -> float | None:
    """Peak resident set of this process so far (VmHWM): spikes between samples count too."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return None


def file_mb(path: str | None) -> float | None:
    if not path:
        return None
    return round(sum(os.path.getsize(p) for p in (path, path + ".wal") if os.path.exists(p)) / 2**20, 1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.soak_rate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=5000.0, help="spans per second")
    ap.add_argument("--minutes", type=float, default=6.0)
    ap.add_argument("--warmup-s", type=float, default=120.0, help="the slope is taken after this")
    ap.add_argument("--sample-s", type=float, default=5.0)
    ap.add_argument("--report-s", type=float, default=30.0, help="the scheduled anomaly report's interval")
    ap.add_argument("--path", help="store file (default: a new one in a temporary directory)")
    ap.add_argument("--memory-limit-mb", type=int, help="default: store.memory_limit_mb of the configuration")
    ap.add_argument("--duckdb-set", action="append", default=[], metavar="NAME=VALUE",
                    help="a DuckDB setting on the store's connection after it opened (an A/B of settings)")
    ap.add_argument("--tracemalloc", action="store_true", help="Python allocations too (slower)")
    ap.add_argument("--out", help="write the result here")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)

    import pyarrow as pa

    from capture.config import AgentConfig
    from capture.enrich.enricher import Enricher
    from capture.store.factory import open_store
    from guardian.agent_daemon import Agent
    from tools.registry import call_tool

    if a.tracemalloc:
        import tracemalloc

        tracemalloc.start(8)
    pa.set_memory_pool(pa.system_memory_pool())  # as guardian agent does
    tmp = None
    path = a.path
    if not path:
        tmp = tempfile.mkdtemp(prefix="guardian-soak-rate-")
        path = str(Path(tmp) / "store.duckdb")
    cfg = AgentConfig()
    if a.memory_limit_mb:
        cfg.store.memory_limit_mb = a.memory_limit_mb
    store = open_store(path, max_age_s=cfg.store.max_age_s, max_spans=cfg.store.max_spans,
                       memory_limit_mb=cfg.store.memory_limit_mb, threads=cfg.store.threads)
    for kv in a.duckdb_set:
        name, value = kv.split("=", 1)
        store._con.execute(f"SET {name} = '{value}'")
    pids = [os.getpid(), os.getppid(), 1] + [int(p) for p in os.listdir("/proc") if p.isdigit()][:20]
    source = RateSource(a.rate, sorted(set(pids)))
    agent = Agent(cfg, store, source, None, Enricher())
    from capture.live import tune_gc

    tune_gc()
    samples: list[dict] = []
    reports = {"ok": 0, "failed": 0, "errors": []}
    t0 = time.monotonic()
    done = threading.Event()
    snap0 = None

    def sampler() -> None:
        nonlocal snap0
        next_report = t0 + a.report_s
        while not done.wait(a.sample_s):
            now = time.monotonic()
            if now >= next_report:
                next_report += a.report_s
                r = call_tool(store, "anomalies", {"since": "60s"})
                if "error" in r:
                    reports["failed"] += 1
                    reports["errors"] = (reports["errors"] + [str(r["error"])[:200]])[-3:]
                else:
                    reports["ok"] += 1
            s = {"t": round(now - t0, 1), "rss_mb": rss_mb(os.getpid()), "duckdb_mb": duckdb_memory(store),
                 "file_mb": file_mb(path), "stored": agent.stored, "received": agent.received,
                 "dropped": agent.dropped, "hwm_mb": hwm_mb(), "pending": agent.linker.pending, "store_spans": store.count()}
            if a.tracemalloc:
                s["py_traced_mb"] = round(tracemalloc.get_traced_memory()[0] / 2**20, 1)
                if snap0 is None and now - t0 >= a.warmup_s:
                    snap0 = tracemalloc.take_snapshot()
            samples.append(s)
            log(json.dumps(s))

    th = threading.Thread(target=sampler, daemon=True)
    th.start()
    threading.Timer(a.minutes * 60, agent.stop.set).start()
    log(f"{a.rate:g} spans/s for {a.minutes:g} min; store {path}, memory_limit {cfg.store.memory_limit_mb} MB")
    agent.run()
    done.set()
    th.join()
    growth = []
    if a.tracemalloc and snap0 is not None:
        for st in tracemalloc.take_snapshot().compare_to(snap0, "lineno")[:12]:
            growth.append(f"{st.traceback[0].filename}:{st.traceback[0].lineno} {st.size_diff / 2**20:+.2f} MB "
                          f"({st.count_diff:+d} blocks)")
    warm = [(x["t"], x["rss_mb"]) for x in samples if x["t"] >= a.warmup_s and x["rss_mb"] is not None]
    rss = [x["rss_mb"] for x in samples if x["rss_mb"] is not None]
    result = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "uptime": os.getloadavg(),
        "rate_per_s": a.rate, "minutes": a.minutes, "warmup_s": a.warmup_s,
        "memory_limit_mb": cfg.store.memory_limit_mb, "duckdb_set": a.duckdb_set,
        "rss_mb": {"start": rss[0] if rss else None, "max": max(rss, default=None), "end": rss[-1] if rss else None,
                   "peak_hwm": hwm_mb(),
                   "slope_mb_per_min_after_warmup": None if (s := slope_per_min(warm)) is None else round(s, 3)},
        "stored": agent.stored, "received": agent.received, "dropped": agent.dropped,
        "store_errors": agent.store_errors, "reports": reports, "tracemalloc_growth_after_warmup": growth,
        "samples": samples,
    }
    store.close()
    if tmp:
        shutil.rmtree(tmp, ignore_errors=True)
    report(result, a.out, a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
