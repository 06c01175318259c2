"""Userspace cost of the capture's hot path, in CPU µs per ring-buffer event.

  record  nginx + hey at a fixed rate under a live capture whose tracker only keeps the raw
          ring records; they are saved to a file with the port and the processes' resources
  replay  the saved records through a fresh ConnTracker + Pipeline + the `--json` printer
          writing to /dev/null, as the live drain loop and `guardian capture --json` do (a flush every BATCH events);
          prints process-CPU µs per event and spans produced, best of --repeat runs (and the
          sum of each batch's best, steadier on a host shared with other work)
  stages  where the time per record goes: the replay cut after each stage (decode and connection
          table; + parse and pair; + span build; + the printer), best of --repeat, µs per record;
          then the compiled path (capture/_fastpath.c) through the span and the printer, and
          through the printer with its spans made as lines (as `guardian capture --json` has it)

--pair (replay, stages) first turns the recorded records into what the kernel's HTTP/1 pairing
sends (capture.pairing: one record per exchange), so the two paths' userspace cost per request
compares on the same traffic; figures per record then count the paired records.

Replaying one recorded file with two checkouts compares their per-event cost on the same
input (--out: their spans, to diff without ids). Where other work shares the CPU, instruction
counts are steadier than CPU time: `valgrind --tool=callgrind` of a replay with --limit N and
with --limit 5N, the difference divided by 4N. File: a magic line, a u32-length-prefixed JSON
header, then u32-length-prefixed records.

With --redis, record captures redis-benchmark (GET/SET over random keys, -P 1 and 16) and a
redis-py client (misses, errors, pipelines, MULTI/EXEC, a 100 kB value, pub/sub) against a
redis-server instead, with 2x the commands sent as its "requests" (both ends of each command).

  agent   the agent's ingest path on the records (capture.live's batches -> Agent.on_spans -> its
          worker's steps: linker, DuckDB store file), run in this thread: CPU µs per span in the capture
          thread's share, the linker and the store, best of --repeat; "python" runs the Python
          specification of each compiled part (Spans, rows.row_of, linker.link_python,
          StreamLinker._release_python), "compiled" the agent as built, alternately; with --tree,
          each checkout's compiled agent on its own code in turn (both orders), with the agent's heap
          settings (guardian.heap.tune), the store split into its columns and DuckDB's insert
  link    the worker's enrich + link step alone (Agent._enrich, StreamLinker.add with the agent's
          settings) on the recording's spans made --copies times one after another in stream time (a
          sustained load: the linker in its flood regime, max_pending reached), CPU µs per span, each
          --tree on its own code in turn, both orders

Run: .venv/bin/python -m bench.events record FILE [--seconds 3] [--rate 10000] [--paired FILE2]   (as root) [--redis]
     .venv/bin/python -m bench.events replay FILE [--repeat 5] [--out SPANS.jsonl] [--limit N] [--batch N] [--ring] [--pair] [--python]
     .venv/bin/python -m bench.events stages FILE [--repeat 7] [--pair]
     .venv/bin/python -m bench.events agent FILE [--repeat 3] [--tree DIR ... [--rounds 2] [--json OUT]]
     .venv/bin/python -m bench.events link FILE [--tree DIR ...] [--copies 5] [--batch 400] [--rounds 2] [--json OUT]
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import gzip
import json
import os
import struct
import sys
import threading
import time
from pathlib import Path

from capture import fastpath
from capture.conntrack import ConnTracker
from capture.live import BATCH  # events between two flushes of the pipeline (--batch)
from capture.pipeline import Pipeline
from capture.procnet import SockEntry
from support import results as bench_results
from support.rings import mapped_ring

MAGIC = b"guardian-events 1\n"
_LEN = struct.Struct("<I")


def save(path: str, header: dict, records: list[bytes]) -> None:
    with (gzip.open if path.endswith(".gz") else open)(path, "wb") as f:
        blob = json.dumps(header, default=str).encode()
        f.write(MAGIC + _LEN.pack(len(blob)) + blob)
        f.write(b"".join(_LEN.pack(len(r)) + r for r in records))


def load(path: str, paired: bool = False) -> tuple[dict, list[bytes]]:
    """The recording's header and records; `paired`: as the kernel's pairing would send them."""
    header, records = _load(path)
    if paired:
        from capture.pairing import pair

        records = list(pair(records, held_at_end=True))
    return header, records


def _load(path: str) -> tuple[dict, list[bytes]]:
    data = Path(path).read_bytes()
    if path.endswith(".gz"):
        data = gzip.decompress(data)
    if not data.startswith(MAGIC):
        raise ValueError(f"{path}: not a bench.events recording")
    pos = len(MAGIC)
    records = []
    while pos < len(data):
        (n,) = _LEN.unpack_from(data, pos)
        records.append(data[pos + 4:pos + 4 + n])
        pos += 4 + n
    return json.loads(records[0]), records[1:]


# redis-py's cases, in a process of their own (the capture never observes its own process)
REDIS_PY = """
import sys, redis
r = redis.Redis(host="127.0.0.1", port=int(sys.argv[1]), password=sys.argv[2])
for i in range(50):
    r.set(f"py:{i}", f"value-{i}")
    r.get(f"py:{i}")
    r.get(f"missing:{i}")
try:
    r.incr("py:1")
except redis.ResponseError:
    pass
pipe = r.pipeline(transaction=False)
for i in range(40):
    pipe.set(f"pipe:{i}", "x" * 10)
    pipe.get(f"pipe:{i}")
pipe.execute()
tx = r.pipeline(transaction=True)
tx.incr("counter")
tx.get("counter")
tx.execute()
r.set("big", b"z" * 100_000)
r.get("big")
sub = r.pubsub()
sub.subscribe("news")
sub.get_message(timeout=1)
r.publish("news", "hello")
sub.get_message(timeout=1)
sub.close()
r.close()
"""


def redis_workload(port: int, password: str, requests: int) -> dict:
    """What `record --redis` sends: redis-benchmark GET/SET at -P 1 and 16, then REDIS_PY.
    Returns the commands sent, at least (each makes a span at both ends)."""
    import subprocess

    sent = 0
    for pipeline in (1, 16):
        subprocess.run(["redis-benchmark", "-p", str(port), "-a", password, "-n", str(requests), "-c", "4",
                        "-P", str(pipeline), "-r", "1000", "-t", "get,set", "-q"], capture_output=True,
                       timeout=300, check=True)
        sent += 2 * requests  # and each client's AUTH, redis-benchmark's CONFIG GETs
    subprocess.run([sys.executable, "-c", REDIS_PY, str(port), password], capture_output=True, timeout=120,
                   check=True)
    return {"requests": sent + 150 + 80 + 2}


def record(path: str, seconds: int, rate: int, paired_path: str | None = None, redis: int = 0) -> None:
    """nginx + hey under a capture that keeps the raw records; with `paired_path`, a second
    capture with exchanges paired in the kernel runs beside it on the same traffic and its
    records are saved there (the same requests, recorded both ways). `redis`: redis-server and
    redis_workload with that many requests per redis-benchmark run instead."""
    from bench.capture import hey
    from capture import abi
    from capture.enrich.enricher import Enricher
    from capture.live import CaptureOptions, LiveCapture
    from support.http_servers import nginx_server
    from support.servers import redis_instance

    @contextlib.contextmanager
    def server():
        if redis:
            with redis_instance() as r:
                yield r["port"], lambda: redis_workload(r["port"], r["password"], redis)
        else:
            with nginx_server() as (port, _):
                yield port, lambda: hey(f"http://127.0.0.1:{port}/", seconds, rate)

    with server() as (port, workload):
        caps, kept, stops, runners = [], [], [], []
        for pair in ([False, True] if paired_path else [False]):
            cap = LiveCapture(CaptureOptions(port=port, tls=False, pair=pair))
            cap.start()
            records: list[bytes] = []
            cap.tracker.feed = records.extend  # keep the raw records, parse nothing now
            caps.append(cap)
            kept.append(records)
        for cap in caps:
            stops.append(threading.Event())
            runners.append(threading.Thread(target=cap.run, args=(lambda spans: None, stops[-1])))
            runners[-1].start()
        try:
            result = workload()
            time.sleep(0.5)  # drain
        finally:
            for stop in stops:
                stop.set()
            for runner in runners:
                runner.join()
            kernel = [cap.stats() for cap in caps]
            for cap in caps:
                cap.close()
        # what the live enricher says of each process (hey's may be gone: its comm is used)
        pids = {abi.EVENT_STRUCT.unpack_from(r)[3] for records in kept for r in records if len(r) >= abi.EVENT_SIZE}
        enricher = Enricher()
        resources = {pid: enricher.resource(pid) for pid in pids}
    for out, records, stats, paired in zip((path, paired_path), kept, kernel, (False, True)):
        header = {"port": port, "requests": result["requests"], "rps": result.get("rps", 0), "paired": paired,
                  "kernel_drops": stats.get("kernel.ringbuf_drops", 0), "resources": resources}
        save(out, header, records)
        print(json.dumps({"file": out, "events": len(records),
                          **{k: v for k, v in header.items() if k != "resources"}}))


class _Sockets:
    """Stands in for /proc at replay time: accepted sockets' local end is the server port."""

    def __init__(self, port: int) -> None:
        self.local = ("127.0.0.1", port)

    def lookup(self, pid: int, fd: int, remote: tuple[str, int] | None = None,
               inode: int | None = None) -> SockEntry | None:
        return SockEntry(self.local, remote, "01", 0, "tcp") if remote else None


def recorded_tracker(header: dict, pipeline: Pipeline, compiled: bool = True,
                     boot_offset_ns: int = 0) -> ConnTracker:
    """A connection tracker for a recording's records, its processes' resources and sockets as
    the recording saw them."""
    resources = {int(pid): res for pid, res in header["resources"].items()}
    return ConnTracker(pipeline, lambda pid: resources.get(pid, {}), port=header["port"],
                       sockets=_Sockets(header["port"]), boot_offset_ns=boot_offset_ns, compiled=compiled)


def feed_all(tracker: ConnTracker, pipeline: Pipeline, records: list[bytes], batch: int = BATCH) -> None:
    """Every record in batches as the live loop reads them, then every connection closed."""
    for i in range(0, len(records), batch):
        tracker.feed(records[i:i + batch])
        pipeline.flush()
    tracker.close_all()
    pipeline.flush()


def replay_once(header: dict, records: list[bytes], out_path: str, batch: int = BATCH,
                ring: bool = False, compiled: bool = True, lines: bool = True) -> tuple[list[float], int]:
    """One pass over `records`; returns (process CPU seconds of each batch, spans). With
    `ring`, the records are read out of a mapped ring buffer first, as the live loop does."""
    from guardian.cli.capture import _printer

    resources = {int(pid): res for pid, res in header["resources"].items()}
    with open(out_path, "w") as out:
        with contextlib.redirect_stdout(out):  # the printer writes where stdout is when made
            emit = _printer(as_json=True)
        pipeline = Pipeline(emit)
        tracker = ConnTracker(pipeline, lambda pid: resources.get(pid, {}), port=header["port"],
                              sockets=_Sockets(header["port"]), boot_offset_ns=0, compiled=compiled)
        if lines:
            tracker.spans_as_lines()  # as `guardian capture --json` does
        feed, flush, clock = tracker.feed, pipeline.flush, time.process_time
        reader = mapped_ring(records) if ring else None
        gc.collect()
        batches = []
        for i in range(0, len(records), batch):
            start = clock()
            feed(reader.read(batch) if reader is not None else records[i:i + batch])
            flush()
            batches.append(clock() - start)
        start = clock()
        tracker.close_all()
        flush()
        batches.append(clock() - start)
    return batches, pipeline.stats["spans"]


def replay(path: str, repeat: int, out_path: str, limit: int = 0, batch: int = BATCH,
           ring: bool = False, paired: bool = False, compiled: bool = True, lines: bool = True) -> None:
    """Best of `repeat` runs, and the sum of each batch's best time over the runs: on a shared
    host the second filters out most of what other processes cost this one (caches, preemption)."""
    header, records = load(path, paired)
    records = records[:limit] if limit else records
    gc.freeze()  # as capture.live.tune_gc does for the live agent
    gc.set_threshold(50_000, 20, 50)
    runs = [replay_once(header, records, out_path, batch, ring, compiled, lines) for _ in range(repeat)]
    per_event = [sum(batches) / len(records) * 1e6 for batches, _ in runs]
    floor = sum(min(b) for b in zip(*(batches for batches, _ in runs))) / len(records) * 1e6
    print(json.dumps({"events": len(records), "spans": runs[0][1], "requests": header["requests"],
                      "us_per_event": round(min(per_event), 2), "us_per_event_batch_floor": round(floor, 2),
                      "us_per_event_runs": [round(x, 2) for x in per_event], "through_ring": ring,
                      "paired": paired, "compiled": compiled, "lines": lines, "us_per_span": round(min(per_event) * len(records) / max(runs[0][1], 1), 2)}))


def stages(path: str, repeat: int, paired: bool = False) -> dict:
    """CPU µs per record of the replay cut after each stage: each stage's own cost is the
    difference from the one before. Also per span (the spans the whole replay makes), which
    compares the paired and unpaired records of one recording. The stages are those of the
    Python path; the compiled path (capture/_fastpath.c, the records it takes: decode through
    span in one C loop) is then measured through the span and through the printer on the same
    records, each record it does not take going through the Python path as live."""
    import capture.pipeline as pipeline_module
    from guardian.cli.capture import _printer

    header, records = load(path, paired)
    resources = {int(pid): res for pid, res in header["resources"].items()}
    gc.freeze()
    gc.set_threshold(50_000, 20, 50)
    to_span = pipeline_module.record_to_span

    made = [0]

    def once(stage: str, compiled: bool = False) -> float:
        sink: list = []
        emit = sink.extend
        if stage in ("print", "lines"):
            with contextlib.redirect_stdout(devnull):
                emit = _printer(as_json=True)
        pipeline = Pipeline(emit)
        if stage == "decode":
            pipeline.data = pipeline.exchange = lambda *a, **k: None  # the connection table only
        pipeline_module.record_to_span = (lambda rec, conn: rec) if stage == "parse" else to_span
        tracker = ConnTracker(pipeline, lambda pid: resources.get(pid, {}), port=header["port"],
                              sockets=_Sockets(header["port"]), boot_offset_ns=0, compiled=compiled)
        if stage == "lines":
            tracker.spans_as_lines()
        start = time.process_time()
        for i in range(0, len(records), BATCH):
            tracker.feed(records[i:i + BATCH])
            pipeline.flush()
        took = time.process_time() - start
        pipeline_module.record_to_span = to_span
        if stage == "span" and not compiled:
            made[0] = pipeline.stats["spans"]
        return took / len(records) * 1e6

    with open(os.devnull, "w") as devnull:
        out = {stage: round(min(once(stage) for _ in range(repeat)), 2) for stage in ("decode", "parse", "span", "print")}
        fast = ({stage: round(min(once(stage, True) for _ in range(repeat)), 2) for stage in ("span", "print", "lines")}
                if fastpath.table(0) is not None else {})
    spans = max(made[0], 1)
    print(json.dumps({"records": len(records), "spans": made[0], "paired": paired, "us_per_record_through": out,
                      "us_per_span_through": {k: round(v * len(records) / spans, 2) for k, v in out.items()},
                      "compiled_us_per_span_through": {k: round(v * len(records) / spans, 2) for k, v in fast.items()}}))
    return out


def agent_once(header: dict, records: list[bytes], compiled: bool) -> tuple[int, dict[str, float]]:
    """One pass of the agent's ingest path over `records`: (spans stored, CPU µs per span by part)."""
    import queue
    import tempfile

    from capture import rows
    from capture.config import AgentConfig
    from capture.store.duckdb_store import DuckDBStore
    from capture.traces import linker
    from guardian.agent_daemon import WORKER_BATCH, Agent

    saved = linker._link, rows._rows
    if not compiled:
        linker._link = rows._rows = None

    class Source:
        def stats(self) -> dict:
            return {}

    resources = {int(pid): res for pid, res in header["resources"].items()}
    cfg = AgentConfig()
    with tempfile.TemporaryDirectory(prefix="bench-agent-") as tmp:
        store = DuckDBStore(str(Path(tmp, "spans.duckdb")), max_age_s=cfg.store.max_age_s,
                            max_spans=cfg.store.max_spans, memory_limit_mb=cfg.store.memory_limit_mb,
                            threads=cfg.store.threads)
        agent = Agent(cfg, store, Source(), trim_every_s=None)
        pipeline = Pipeline(agent.on_spans)
        tracker = ConnTracker(pipeline, lambda pid: resources.get(pid, {}), port=header["port"],
                              sockets=_Sockets(header["port"]), boot_offset_ns=0)
        if compiled:
            tracker.spans_as_rows(rows.Row)  # as Agent.run does for the live capture
            rows.keep_arenas()
        took = {"capture": 0.0, "link": 0.0, "store": 0.0}
        clock = time.process_time

        def work(final: bool = False) -> None:  # the worker's loop, in this thread
            while True:
                try:
                    batch = agent.queue.get_nowait()
                except queue.Empty:
                    break
                while len(batch) < WORKER_BATCH:
                    try:
                        batch.extend(agent.queue.get_nowait())
                    except queue.Empty:
                        break
                agent.queue.taken(len(batch))
                t0 = clock()
                agent._enrich(batch)
                out = agent.linker.add(batch)
                t1 = clock()
                agent._emit(out)
                took["link"] += t1 - t0
                took["store"] += clock() - t1
            if final:
                t0 = clock()
                out = agent.linker.flush()
                t1 = clock()
                agent._emit(out)
                took["link"] += t1 - t0
                took["store"] += clock() - t1

        gc.collect()
        for i in range(0, len(records), BATCH):
            t0 = clock()
            tracker.feed(records[i:i + BATCH])
            pipeline.flush()
            took["capture"] += clock() - t0
            if agent.queue.spans >= WORKER_BATCH:
                work()
        t0 = clock()
        tracker.close_all()
        pipeline.flush()
        took["capture"] += clock() - t0
        work(final=True)
        t0 = clock()
        store.count()  # what the store held back for a larger insert goes in (a read's first step)
        took["store"] += clock() - t0
        store.close()
    linker._link, rows._rows = saved
    n = max(agent.stored, 1)
    return agent.stored, {k: v / n * 1e6 for k, v in took.items()}


def agent_bench(path: str, repeat: int) -> dict:
    """agent_once of the Python specification and of the compiled agent, alternately; best of
    `repeat` per part."""
    header, records = load(path)
    gc.freeze()
    gc.set_threshold(50_000, 20, 50)
    best: dict[str, dict[str, float]] = {"python": {}, "compiled": {}}
    stored = {}
    for _ in range(repeat):
        for mode in best:
            stored[mode], us = agent_once(header, records, mode == "compiled")
            for k, v in us.items():
                best[mode][k] = min(best[mode].get(k, v), v)
    out = {"records": len(records), "requests": header["requests"], "spans_stored": stored,
           "load": os.getloadavg(), **{f"{mode}_us_per_span": {k: round(v, 2) for k, v in us.items()}
                                       | {"total": round(sum(us.values()), 2)} for mode, us in best.items()}}
    print(json.dumps(out))
    return out


# The agent's ingest path (agent_once, compiled) run by each checkout (--tree) on its own code, with the
# agent's heap settings (guardian.heap.tune, as `guardian agent` sets them before any thread: blocks of
# 256 kB or more mapped and unmapped each time); the store's step split into the columns it builds
# (capture.store.columns.keyed_batch) and the rest (DuckDB's insert); also the minor page faults per span
# (the process's, all steps: a count other work on the host does not change). It uses only what
# bench.events and the store have long had
AGENT_STEP = """
import gc, json, os, resource, sys, time
from guardian import heap
heap.tune()
from bench.events import agent_once, load
from capture.store import duckdb_store
path, repeat = sys.argv[1], int(sys.argv[2])
header, records = load(path)
gc.freeze()
gc.set_threshold(50_000, 20, 50)
keyed, spent = duckdb_store.keyed_batch, [0.0]

def timed(*a, **k):
    t0 = time.process_time()
    try:
        return keyed(*a, **k)
    finally:
        spent[0] += time.process_time() - t0

duckdb_store.keyed_batch = timed
best = {}
for _ in range(repeat):
    spent[0] = 0.0
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    stored, us = agent_once(header, records, True)
    us["page_faults"] = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / max(stored, 1)
    us["columns"] = 1e6 * spent[0] / max(stored, 1)
    us["insert"] = us["store"] - us["columns"]
    us["total"] = us["capture"] + us["link"] + us["store"]
    for k, v in us.items():
        best[k] = min(best.get(k, v), v)
print(json.dumps({"stored": stored, "us_per_span": {k: round(v, 3) for k, v in best.items()}, "load": os.getloadavg(),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))
"""


def agent_trees(path: str, trees: list[Path], repeat: int, rounds: int) -> dict:
    """AGENT_STEP in each checkout, in turn, `rounds` times (both orders when 2): CPU µs per span of
    the capture thread, the linker, the columns and the rest of the store, on the same recording."""
    import subprocess

    runs: dict[str, list] = {str(t): [] for t in trees}
    for r in range(rounds):
        for tree in (trees if r % 2 == 0 else trees[::-1]):
            env = {**os.environ, "PYTHONPATH": str(tree)}
            got = subprocess.run([sys.executable, "-c", AGENT_STEP, path, str(repeat)],
                                 env=env, cwd=tree, capture_output=True, text=True, check=True)
            runs[str(tree)].append(json.loads(got.stdout.strip().splitlines()[-1]))
    best = {t: {k: min(x["us_per_span"][k] for x in v) for k in v[0]["us_per_span"]} for t, v in runs.items()}
    out = {"file": path, "repeat": repeat, "load": os.getloadavg(), "runs": runs, "best_us_per_span": best}
    print(json.dumps(out))
    return out


# The worker's linking step, run by each checkout (--tree) on its own code: the recording's spans
# made `copies` times, each copy after the last in stream time (as a sustained load gives), through
# Agent._enrich and StreamLinker.add in the worker's batches, with the agent's linker settings.
# It runs on older checkouts too: it uses only what bench.events has long had (not feed_all)
LINK_STEP = """
import gc, json, sys, time
from bench.events import load, _Sockets, BATCH
from capture import rows
from capture.config import AgentConfig
from capture.conntrack import ConnTracker
from capture.enrich.enricher import Enricher
from capture.pipeline import Pipeline
from capture.traces.stream import StreamLinker
from guardian.agent_daemon import Agent
path, copies, repeat, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
header, records = load(path)
resources = {int(pid): res for pid, res in header["resources"].items()}
gc.freeze()
gc.set_threshold(50_000, 20, 50)
span_ns = max(1, int.from_bytes(records[-1][:8], "little") - int.from_bytes(records[0][:8], "little"))

def spans():
    out = []
    for k in range(copies):
        pipeline = Pipeline(out.extend)
        tracker = ConnTracker(pipeline, lambda pid: resources.get(pid, {}), port=header["port"],
                              sockets=_Sockets(header["port"]), boot_offset_ns=k * (span_ns + 200_000_000))
        tracker.spans_as_rows(rows.Row)
        for i in range(0, len(records), BATCH):
            tracker.feed(records[i:i + BATCH])
            pipeline.flush()
        tracker.close_all()
        pipeline.flush()
    return out

class Source:
    def stats(self):
        return {}

class Store:
    def count(self):
        return 0

best, linked = None, 0
for _ in range(repeat):
    made = spans()
    cfg = AgentConfig()
    agent = Agent(cfg, Store(), Source(), enricher=Enricher(), trim_every_s=None)
    agent._enrich(made)  # the live capture's spans come enriched: what is timed is the look
    gc.collect()
    t0 = time.process_time()
    for i in range(0, len(made), batch):
        b = made[i:i + batch]
        agent._enrich(b)
        agent.linker.add(b)
    agent.linker.flush()
    us = 1e6 * (time.process_time() - t0) / len(made)
    best = us if best is None else min(best, us)
    linked = agent.linker.linked
print(json.dumps({"spans": len(made), "linked": linked, "forced": agent.linker.forced, "us_per_span": round(best, 3)}))
"""


def link_bench(path: str, trees: list[Path], copies: int, repeat: int, batch: int, rounds: int) -> dict:
    """LINK_STEP in each checkout, in turn, `rounds` times (both orders when 2): CPU µs per span of
    the worker's enrich + link step on the same recording."""
    import subprocess

    runs: dict[str, list] = {str(t): [] for t in trees}
    for r in range(rounds):
        for tree in (trees if r % 2 == 0 else trees[::-1]):
            env = {**os.environ, "PYTHONPATH": str(tree)}
            got = subprocess.run([sys.executable, "-c", LINK_STEP, path, str(copies), str(repeat), str(batch)],
                                 env=env, cwd=tree, capture_output=True, text=True, check=True)
            runs[str(tree)].append(json.loads(got.stdout.strip().splitlines()[-1]))
    out = {"file": path, "copies": copies, "batch": batch, "load": os.getloadavg(), "runs": runs,
           "best_us_per_span": {t: min(x["us_per_span"] for x in v) for t, v in runs.items()}}
    print(json.dumps(out))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    rec = sub.add_parser("record", help="capture nginx + hey and save the raw ring records")
    rec.add_argument("file")
    rec.add_argument("--seconds", type=int, default=3)
    rec.add_argument("--rate", type=int, default=10000, help="requests per second (hey)")
    rec.add_argument("--paired", metavar="FILE2", help="also record the same traffic paired in the kernel, into FILE2")
    rec.add_argument("--redis", type=int, default=0, metavar="N",
                     help="redis-server under redis-benchmark (N requests at -P 1 and 16) and redis-py instead")
    rep = sub.add_parser("replay", help="feed saved records through tracker + pipeline + printer")
    rep.add_argument("file")
    rep.add_argument("--repeat", type=int, default=5)
    rep.add_argument("--out", default=os.devnull, metavar="FILE", help="where the spans go (default /dev/null)")
    rep.add_argument("--limit", type=int, default=0, metavar="N", help="only the first N events")
    rep.add_argument("--batch", type=int, default=BATCH, metavar="N",
                     help=f"events between two flushes (default {BATCH}, as capture.live)")
    rep.add_argument("--ring", action="store_true",
                     help="read the records out of a mapped ring buffer (capture.ringbuf) first")
    rep.add_argument("--pair", action="store_true", help="replay the records as the kernel's HTTP/1 pairing sends them")
    rep.add_argument("--python", action="store_true", help="the Python path only (no capture/_fastpath.c)")
    rep.add_argument("--spans", action="store_true",
                     help="the compiled path makes Span objects for the printer (not their lines, as the CLI has it)")
    st = sub.add_parser("stages", help="µs per record through each stage of the hot path")
    st.add_argument("file")
    st.add_argument("--repeat", type=int, default=7)
    st.add_argument("--pair", action="store_true", help="the records as the kernel's HTTP/1 pairing sends them")
    ag = sub.add_parser("agent", help="CPU µs per span of the agent's ingest path, Python vs compiled")
    ag.add_argument("file")
    ag.add_argument("--repeat", type=int, default=3)
    ag.add_argument("--tree", action="append", type=Path, default=None, metavar="DIR",
                    help="each checkout on its own code, compiled, with the agent's heap settings (per step)")
    ag.add_argument("--rounds", type=int, default=2, help="with --tree: runs of each checkout, alternating their order")
    ag.add_argument("--json", metavar="FILE")
    lk = sub.add_parser("link", help="CPU µs per span of the worker's enrich + link step, per checkout (--tree)")
    lk.add_argument("file")
    lk.add_argument("--tree", action="append", type=Path, default=None, metavar="DIR")
    lk.add_argument("--copies", type=int, default=5, help="the recording's spans this many times, one after another")
    lk.add_argument("--repeat", type=int, default=3)
    lk.add_argument("--batch", type=int, default=400, help="spans per worker batch (hey 10k: ~400 per 20 ms poll)")
    lk.add_argument("--rounds", type=int, default=2, help="runs of each checkout, alternating their order")
    lk.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    if args.cmd == "link":
        got = link_bench(args.file, args.tree or [Path(__file__).resolve().parent.parent], args.copies, args.repeat,
                         args.batch, args.rounds)
        if args.json:
            bench_results.write(args.json, got)
    elif args.cmd == "agent" and args.tree:
        got = agent_trees(args.file, args.tree, args.repeat, args.rounds)
        if args.json:
            bench_results.write(args.json, got)
    elif args.cmd == "agent":
        agent_bench(args.file, args.repeat)
    elif args.cmd == "stages":
        stages(args.file, args.repeat, args.pair)
    elif args.cmd == "record":
        record(args.file, args.seconds, args.rate, args.paired, args.redis)
    else:
        replay(args.file, args.repeat, args.out, args.limit, args.batch, args.ring, args.pair, not args.python,
               not args.spans)
    return 0


if __name__ == "__main__":
    sys.exit(main())
