"""Where the agent's resident memory is, over time, with live eBPF capture at a fixed request rate:
the agent's own path (LiveCapture scoped in the kernel to this bench's cgroup, queue, enricher,
linker, DuckDB store file) in this process, nginx driven by `hey` at a constant rate beside it.

    python -m bench.soak_live --rate 1000 --minutes 10 [--new-conns] [--tracemalloc] --json

Samples, with guardian/rss.py's readers (those of the agent's SIGUSR1 line and /metrics), the RSS
by class of mapping, glibc's malloc arenas (mallinfo2) and Python's allocator; DuckDB's buffer
manager, the capture's tables, and optionally Python's allocations (tracemalloc); prints one JSON object with each series' start/end and its slope after
the warm-up. It does not judge. Needs root and a writable cgroup v2 hierarchy."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.soaklib.cgroup import SoakCgroup
from bench.soaklib.probe import report, slope_per_min
from bench.soak_rate import duckdb_memory, log
from guardian import rss


def malloc_mb() -> dict[str, float]:
    """glibc's heap over all arenas (guardian/rss.py malloc), in MB: arena, mmapped, in_use, free."""
    return {k: round(v / rss.MB, 1) for k, v in rss.malloc().items()}


def rss_parts_mb(pid: int | str = "self") -> dict[str, float]:
    """VmRSS, VmHWM, RssAnon, RssFile and the resident set by class of mapping (guardian/rss.py
    by_mapping: ring, heap, anon, stack, file, other; they add up to `total`), in MB."""
    out = {k.lower(): round(v / rss.MB, 1) for k, v in rss.status(pid).items() if k != "RssShmem"}
    parts = rss.by_mapping(pid)
    out.update({k: round(parts[k] / rss.MB, 1) for k in (*rss.CLASSES, "total")})
    return out


def python_mb() -> dict[str, float]:
    """Python's allocator (guardian/rss.py python_heap): pymalloc's arenas and the small blocks in use, in MB."""
    h = rss.python_heap()
    return {"arenas": round(h.get("arena_bytes", 0) / rss.MB, 1), "in_use": round(h.get("in_use_bytes", 0) / rss.MB, 1)}


def series(samples: list[dict], warmup_s: float) -> dict[str, dict]:
    """start/end/max and the slope after the warm-up of every numeric series (flattened keys)."""
    flat: dict[str, list[tuple[float, float]]] = {}
    for s in samples:
        for k, v in s.items():
            if isinstance(v, dict):
                for k2, v2 in v.items():
                    if isinstance(v2, (int, float)):
                        flat.setdefault(f"{k}.{k2}", []).append((s["t"], v2))
            elif isinstance(v, (int, float)) and k != "t":
                flat.setdefault(k, []).append((s["t"], v))
    out = {}
    for k, pts in flat.items():
        warm = [p for p in pts if p[0] >= warmup_s]
        slope = slope_per_min(warm)
        out[k] = {"start": pts[0][1], "end": pts[-1][1], "max": max(v for _, v in pts),
                  "slope_per_min_after_warmup": None if slope is None else round(slope, 3)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.soak_live", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=int, default=1000, help="requests per second (hey, 10 workers)")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--warmup-s", type=float, default=120.0, help="slopes are taken after this")
    ap.add_argument("--sample-s", type=float, default=10.0)
    ap.add_argument("--new-conns", action="store_true", help="a new connection per request (hey -disable-keepalive)")
    ap.add_argument("--tracemalloc", action="store_true", help="Python allocations too (slower)")
    ap.add_argument("--heap", choices=["agent", "glibc"], default="agent",
                    help="agent: the C heap as guardian agent sets it (guardian/heap.py); glibc: its defaults")
    ap.add_argument("--out", help="write the result here")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)

    from capture.config import AgentConfig
    from capture.enrich.enricher import Enricher
    from capture.live import CaptureOptions, LiveCapture, tune_gc
    from capture.store.factory import open_store
    from guardian.agent_daemon import Agent
    from guardian.cli.agent import _system_allocator_for_arrow
    from guardian.heap import TRIM_EVERY_S
    from support.http_servers import nginx_server

    if a.heap == "agent":
        from guardian import heap

        heap.tune()
    if a.tracemalloc:
        import tracemalloc

        tracemalloc.start(8)
    cg = SoakCgroup(f"guardian-soak-live-{os.getpid()}").join()  # nginx and hey inherit it
    tmp = tempfile.mkdtemp(prefix="guardian-soak-live-")
    path = str(Path(tmp) / "store.duckdb")
    result: dict = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "uptime_start": os.getloadavg(),
                    "rate_per_s": a.rate, "minutes": a.minutes, "new_conns": a.new_conns, "cgroup": cg.path,
                    "heap": a.heap}
    try:
        with nginx_server() as (port, _):
            cfg = AgentConfig()
            enricher = Enricher()
            source = LiveCapture(CaptureOptions(cgroup=cg.path), resource_for=enricher.resource)
            t_load = time.monotonic()
            source.start()
            result["ready_s"] = round(time.monotonic() - t_load, 1)
            _system_allocator_for_arrow()
            store = open_store(path, max_age_s=cfg.store.max_age_s, max_spans=cfg.store.max_spans,
                               memory_limit_mb=cfg.store.memory_limit_mb, threads=cfg.store.threads)
            agent = Agent(cfg, store, source, None, enricher, trim_every_s=None if a.heap == "glibc" else TRIM_EVERY_S)
            tune_gc()
            result["rss_at_ready"] = rss_parts_mb()
            hey = ["hey", "-z", f"{a.minutes * 60:.0f}s", "-c", "10", "-q", str(max(1, a.rate // 10))]
            if a.new_conns:
                hey.append("-disable-keepalive")
            load = subprocess.Popen([*hey, f"http://127.0.0.1:{port}/"], stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL, text=True)
            samples: list[dict] = []
            done = threading.Event()
            t0 = time.monotonic()
            snap0 = None

            def sampler() -> None:
                nonlocal snap0
                while not done.wait(a.sample_s):
                    now = time.monotonic() - t0
                    try:  # the kernel's counters only: the capture's own tables change under a reader here
                        st = {f"kernel.{k}": v for k, v in source.loader.kernel_stats().items()}
                    except Exception:  # noqa: BLE001 - closing
                        st = {}
                    s = {"t": round(now, 1), "rss": rss_parts_mb(), "malloc": malloc_mb(), "python": python_mb(),
                         "duckdb_mb": duckdb_memory(store).get("total"),
                         "tables": {"conns": source.tracker.tracked, "enricher": len(enricher._cache),
                                    "linker_pending": agent.linker.pending, "queued": agent.queued_spans},
                         "received": agent.received, "stored": agent.stored, "dropped": agent.dropped,
                         "ring_drops": st.get("kernel.ringbuf_drops", 0),
                         "scope_skipped": st.get("kernel.scope_skipped", 0)}
                    if a.tracemalloc:
                        s["py_traced_mb"] = round(tracemalloc.get_traced_memory()[0] / 2**20, 1)
                        if snap0 is None and now >= a.warmup_s:
                            snap0 = tracemalloc.take_snapshot()
                    samples.append(s)
                    log(json.dumps({k: v for k, v in s.items() if k in ("t", "rss", "malloc", "duckdb_mb", "tables")}))
                    if load.poll() is not None:
                        agent.stop.set()

            th = threading.Thread(target=sampler, daemon=True)
            th.start()
            log(f"{a.rate} req/s for {a.minutes:g} min to nginx :{port}; agent scoped to {cg.path}")
            try:
                agent.run()
            finally:
                done.set()
                source.close()
            th.join()
            out = load.communicate(timeout=60)[0]
            result["hey_requests"] = next((int(line.split()[1]) for line in out.splitlines()
                                           if "responses" in line and line.strip().startswith("[200]")), None)
            if a.tracemalloc and snap0 is not None:
                result["tracemalloc_growth_after_warmup"] = [
                    f"{st.traceback[0].filename}:{st.traceback[0].lineno} {st.size_diff / 2**20:+.2f} MB "
                    f"({st.count_diff:+d} blocks)"
                    for st in tracemalloc.take_snapshot().compare_to(snap0, "lineno")[:15]]
            result.update({"received": agent.received, "stored": agent.stored, "dropped": agent.dropped,
                           "series": series(samples, a.warmup_s), "samples": samples,
                           "uptime_end": os.getloadavg()})
            store.close()
    finally:
        cg.leave()
        shutil.rmtree(tmp, ignore_errors=True)
    report(result, a.out, a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
