"""The agent daemon: capture → enrich → link → store → export, plus the HTTP API.

Threads: the capture loop hands span batches to a queue bounded in batches and in spans
(full = batch dropped and counted, so a slow store never stalls the ring buffer nor grows
the agent's memory with the host's traffic), as compact rows (capture.rows) from there to the
store; one worker links, stores and exports;
uvicorn serves the API. Shutdown links what is pending, flushes the store and the exporter.
"""
from __future__ import annotations

import json
import logging
import queue
import threading
import time
from typing import Any, Iterable

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from capture.batchqueue import BatchQueue
from capture.config import AgentConfig
from capture.enrich.enricher import Enricher
from capture.protocols import problems
from capture.rows import Row, batch_bytes, facts_clears, facts_held, keep_arenas, span_of, to_rows
from capture.sources.base import Source
from capture.span import Span
from capture.store.api import SpanStore
from capture.scope import from_config as scope_from_config
from capture.traces.linker import resources_of
from capture.traces.stream import StreamLinker
from guardian import heap, rss
from guardian.memtrace import MemTrace
from guardian.shed import Shedder

log = logging.getLogger("guardian.agent")


class JsonFormatter(logging.Formatter):
    """One JSON object per log line: ts, level, logger, msg (+ exception)."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": round(record.created, 3), "level": record.levelname, "logger": record.name,
               "msg": record.getMessage()}
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


class _Collector:
    """Agent counters for Prometheus, read at scrape time."""

    def __init__(self, agent: "Agent"):
        self.agent = agent

    def describe(self) -> list:
        return []

    def collect(self) -> Iterable[Any]:
        a = self.agent
        counters = {
            "guardian_agent_spans_received": ("spans handed over by the capture", a.received),
            "guardian_agent_spans_stored": ("spans written to the store", a.stored),
            "guardian_agent_spans_dropped": ("spans dropped because the ingest queue was full", a.dropped),
            "guardian_agent_spans_shed_kept": ("spans kept past the full ingest queue: errors and quiet "
                                               "processes' spans (guardian/shed.py)", a.shed.kept),
            "guardian_agent_spans_linked": ("spans that got a parent from the linker", a.linker.linked),
            "guardian_agent_linker_forced_spans": ("spans released before their window: the linker held "
                                                   "linker.max_pending_spans", a.linker.forced),
            "guardian_agent_linker_context_trimmed_spans": ("released spans dropped from the linker's context "
                                                            "before their window", a.linker.context_trimmed),
            "guardian_agent_store_errors": ("store appends that failed", a.store_errors),
            "guardian_agent_memory_paged_out_bytes": ("file-backed resident bytes dropped after the start "
                                                      "(guardian/heap.py FilePager)",
                                                      a.pager.paged_out if a.pager is not None else 0),
            "guardian_agent_store_holds": ("times the store's pool passed half its memory limit (or an in-memory "
                                           "store's checkpoint was due) and was emptied (DuckDBStore.hold)",
                                           getattr(a.store, "holds", 0)),
            "guardian_agent_ingest_queue_refused_bytes": ("span batches the ingest queue refused for its bytes "
                                                          "(store.queue_mb)", a.queue.refused_bytes),
            "guardian_agent_spans_unflushed": ("spans left unstored at shutdown: its flush ran out of time "
                                               "(SHUTDOWN_FLUSH_S)", a.unflushed),
            "guardian_agent_row_facts_clears": ("times the rows' shared connection-facts table was full and "
                                                "cleared (capture/rows.py)", facts_clears()),
        }
        if a.scope is not None:
            counters["guardian_agent_scope_dropped_spans"] = (
                "spans of processes outside this agent's scope (capture.scope)", a.scope.dropped)
        if a.sink is not None:
            counters["guardian_agent_export_spans"] = ("spans accepted by the OTLP endpoint", a.sink.exported)
            counters["guardian_agent_export_failed_spans"] = ("spans the OTLP endpoint refused", a.sink.failed)
            counters["guardian_agent_export_dropped_spans"] = ("spans dropped: export queue full", a.sink.dropped)
            counters.update(getattr(a.sink, "counters", dict)())  # a Shipper's queue and rejections
        for name, (doc, value) in counters.items():
            c = CounterMetricFamily(name, doc)
            c.add_metric([], value)
            yield c
        gauges = {
            "guardian_agent_ingest_queue_batches": ("span batches waiting for the worker", a.queue.qsize()),
            "guardian_agent_ingest_queue_spans": ("spans waiting for the worker", a.queued_spans),
            "guardian_agent_ingest_queue_bytes": ("bytes of the spans waiting for the worker (about)",
                                                  a.queue.bytes),
            "guardian_agent_linker_pending_spans": ("spans waiting for their peers", a.linker.pending),
            "guardian_agent_store_spans": ("spans in the store", a.store.count()),
        }
        if a.sink is not None:
            gauges.update(getattr(a.sink, "gauges", dict)())
        for name, (doc, value) in gauges.items():
            g = GaugeMetricFamily(name, doc)
            g.add_metric([], value)
            yield g
        yield from memory_gauges(a.memory())
        # The capture's own counters (kernel drops, parse errors, ...) under one labelled family.
        stats = a.capture_stats()
        c = CounterMetricFamily("guardian_capture_events", "capture counters (drops, parse errors, ...)",
                                labels=["counter"])
        for key, value in sorted(stats.items()):
            c.add_metric([key], value)
        yield c
        # the same parser counters by kind, per protocol: what an alert on lost or garbled traffic reads
        p = CounterMetricFamily("guardian_parser_problems", "parser problems per protocol (lost bytes, garbled "
                                "messages, bounds hit, unpaired requests/responses)", labels=["protocol", "problem"])
        for (proto, problem), value in sorted(problems.totals(stats).items()):
            p.add_metric([proto, problem], value)
        yield p


def memory_gauges(m: dict[str, Any]) -> Iterable[Any]:
    """Agent.memory() as gauge families: the resident set by class of mapping and the largest files
    (labels `kind`, `file`), each allocator's view, the queue and the tables."""
    g = GaugeMetricFamily("guardian_agent_memory_rss_bytes", "resident bytes by class of mapping "
                          "(guardian/rss.py; their sum: kind=total)", labels=["kind"])
    for kind, v in m["rss"].items():
        if isinstance(v, int):
            g.add_metric([kind], v)
    yield g
    g = GaugeMetricFamily("guardian_agent_memory_file_bytes", "resident bytes of the largest mapped files",
                          labels=["file"])
    for name, v in m["rss"]["files"].items():
        g.add_metric([name], v)
    yield g
    for part, doc in (("malloc", "glibc's heap (mallinfo2)"), ("python", "Python's allocator (blocks)"),
                      ("store", "the store's buffer pool (duckdb_memory())"), ("queue", "the ingest queue"),
                      ("tables", "the agent's tables (entries)")):
        g = GaugeMetricFamily(f"guardian_agent_memory_{part}", doc, labels=["what"])
        for k, v in m.get(part, {}).items():
            g.add_metric([k], v)
        yield g


WORKER_BATCH = 4096  # spans the worker gathers from the queue before linking and storing
# After SIGTERM the worker links and stores what is queued for at most this long, and no later than
# EXIT_BUDGET_S after the signal (the live capture's last drain of its rings takes up to 3 s of it)
# but for FLUSH_AT_LEAST_S; what is left then (queued batches, spans waiting for their peers) is
# counted (guardian_agent_spans_unflushed) and logged, not stored: `guardian agent` exits within
# about 5 s of SIGTERM with a full backlog
SHUTDOWN_FLUSH_S = 2.0
EXIT_BUDGET_S = 3.5
FLUSH_AT_LEAST_S = 0.5


class Agent:
    def __init__(self, config: AgentConfig, store: SpanStore, source: Source, sink: Any = None,
                 enricher: Enricher | None = None, queue_batches: int = 16384,
                 max_queued_spans: int | None = None, trim_every_s: float | None = heap.TRIM_EVERY_S,
                 shed: Shedder | None = None, page_out: bool = False):
        self.config = config
        self.store = store
        self.source = source
        self.sink = sink
        self.enricher = enricher
        self.linker = StreamLinker(config.linker.window_s, int(config.linker.slack_ms * 1e6),
                                   max_pending=config.linker.max_pending_spans)
        self.scope = scope_from_config(getattr(config.capture, "scope", None))
        # spans waiting for the worker, at most (store.queue_spans): this bounds the agent's
        # memory while the store falls behind (the bound is the queue's: queue.max_spans)
        bound = max_queued_spans or config.store.queue_spans
        self.queue = BatchQueue(queue_batches, bound, reserve_spans=bound // 4,
                                max_bytes=config.store.queue_mb * rss.MB)
        # past the bound, errors and quiet processes' spans still go into the reserve (guardian/shed.py)
        self.shed = shed if shed is not None else Shedder()
        self.stop = threading.Event()
        self.received = self.stored = self.dropped = self.store_errors = 0
        self.unflushed = 0  # spans left unstored when the shutdown's flush ran out of time
        self.flush_s = SHUTDOWN_FLUSH_S
        self._flush_by: float | None = None  # set at shutdown: the worker's deadline
        self.stop_asked: float | None = None  # when SIGTERM came (request_stop), monotonic
        self.exit_phases: dict[str, float] = {}  # seconds each step of the shutdown took (logged)
        self.registry = CollectorRegistry()
        self.registry.register(_Collector(self))
        self._worker = threading.Thread(target=self._work, name="agent-worker", daemon=True)
        # what the process freed goes back to the system from the worker's loop (guardian/heap.py)
        self.trimmer = heap.Trimmer(trim_every_s) if trim_every_s else None
        # file pages only the start used dropped from the resident set (guardian/heap.py): `guardian agent`
        self.pager = heap.FilePager() if page_out else None
        self._hold = getattr(store, "hold", None)  # a store's pool held near half its memory limit
        self.log_memory = threading.Event()  # set (SIGUSR1): the worker logs memory() as one JSON line
        # the debug mode (log.memory_trace_frames): SIGUSR2 sets log_growth, the worker logs what grew
        frames = config.log.memory_trace_frames
        self.memtrace = MemTrace(frames) if frames else None
        self.log_growth = threading.Event()

    def request_stop(self) -> None:
        """The signal handler's: stop, and remember when (the shutdown's flush ends EXIT_BUDGET_S after)."""
        if self.stop_asked is None:
            self.stop_asked = time.monotonic()
        self.stop.set()

    def capture_stats(self) -> dict[str, int]:
        try:
            return {k: int(v) for k, v in self.source.stats().items()}
        except Exception:  # noqa: BLE001 - a scrape must not fail because the capture is closing
            return {}

    def on_spans(self, spans: list[Span]) -> None:
        """Called on the capture thread: never blocks."""
        if not spans:
            return
        if self.scope is not None:
            spans = self.scope.keep(spans)  # capture.scope: this agent's node (netns/cgroup) only
        n = len(spans)
        self.received += n
        # rows are made only for spans the queue takes: at saturation most are not
        if self.queue.room(n):
            rows = to_rows(spans)
            if self.queue.offer(rows, nbytes=batch_bytes(rows)):
                return
        keep = self.shed.keep(spans)
        if keep and self.queue.offer(kept := to_rows(keep), reserve=True, nbytes=batch_bytes(kept)):
            self.shed.kept += len(keep)
            n -= len(keep)
        self.dropped += n

    def memory(self) -> dict[str, Any]:
        """The resident set by source (guardian/rss.py) and what the agent's own parts hold, in bytes
        and counts: one JSON object (the SIGUSR1 log line; the guardian_agent_memory_* gauges)."""
        out: dict[str, Any] = {"rss": rss.by_mapping(), "status": rss.status(), "malloc": rss.malloc(),
                               "python": rss.python_heap()}
        memory = getattr(self.store, "memory", None)
        if memory is not None:
            try:
                out["store"] = memory()
            except Exception:  # noqa: BLE001 - a store closing under a scrape
                out["store"] = {}
        out["queue"] = {"spans": self.queue.spans, "bytes": self.queue.bytes, "batches": self.queue.qsize()}
        out["tables"] = {"linker_pending": self.linker.pending, "linker_context": self.linker.context,
                         "store_spans": self.store.count(),
                         "row_facts": facts_held()}
        tracker = getattr(self.source, "tracker", None)
        if tracker is not None:
            out["tables"]["connections"] = tracker.tracked
        if self.enricher is not None:
            out["tables"]["processes"] = len(self.enricher._cache)
        return out

    @property
    def queued_spans(self) -> int:
        """Spans waiting for the worker (the capture thread adds, the worker takes)."""
        return self.queue.spans

    def _enrich(self, spans: list[Span]) -> None:
        if self.enricher is None:
            return
        # spans of one process share one resource: each looked at once (the live capture's come
        # enriched already: resource_for is the enricher's, and nothing is left to do)
        lacking = {id(r) for r in resources_of(spans) if r.get("process.pid") and "service.name" not in r}
        if not lacking:
            return
        done: dict[int, dict] = {}  # one enriched copy per resource
        for s in spans:
            r = s.resource
            if id(r) in lacking:
                if (new := done.get(id(r))) is None:
                    new = done[id(r)] = {**self.enricher.resource(int(r["process.pid"])), **r}
                s.resource = new

    def _emit(self, spans: list[Span]) -> None:
        if not spans:
            return
        try:
            self.stored += self.store.append(spans)
        except Exception:  # noqa: BLE001 - keep capturing; the counter and the log tell
            self.store_errors += 1
            log.exception("store append failed (%d spans)", len(spans))
        if self.sink is not None:
            self.sink.submit([span_of(s) for s in spans])

    def _work(self) -> None:
        while True:
            try:
                batch = self.queue.get(timeout=0.5)
            except queue.Empty:
                batch = []  # idle: still release spans whose window has passed
            if batch is None:
                break
            if self._flush_by is not None and time.monotonic() >= self._flush_by:
                self._give_up(batch)
                return
            stopping = False
            while len(batch) < WORKER_BATCH:  # the capture hands over small batches: gather
                try:
                    more = self.queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    break
                batch.extend(more)
            if batch:
                self.queue.taken(len(batch))
            self._enrich(batch)
            self._emit(self.linker.add(batch) if batch else self.linker.idle())
            try:
                self.store.settle()  # what the store held back for a larger insert, once old enough
                if self._hold is not None:
                    self._hold()
            except Exception:  # noqa: BLE001 - keep storing; the counter and the log tell
                self.store_errors += 1
                log.exception("settling or holding the store failed")
            if self.trimmer is not None:
                self.trimmer.maybe()
            if self.pager is not None:
                self.pager.maybe()
            if self.log_memory.is_set():
                self.log_memory.clear()
                # asked for: written whatever the configured level (at that level, INFO at least)
                log.log(max(logging.INFO, log.getEffectiveLevel()), "memory %s",
                        json.dumps(self.memory(), separators=(",", ":")))
            if self.log_growth.is_set():
                self.log_growth.clear()
                if self.memtrace is not None:
                    log.log(max(logging.INFO, log.getEffectiveLevel()), "memory growth %s",
                            json.dumps({**self.memtrace.report(), "malloc": rss.malloc()}, separators=(",", ":")))
            if stopping:
                break
        if self._flush_by is not None and time.monotonic() >= self._flush_by:
            self._give_up([])
            return
        self._emit(self.linker.flush())

    def _give_up(self, batch: list) -> None:
        """The shutdown's flush out of time: what is queued and what waits in the linker counted and
        logged, not stored."""
        n = len(batch) + self.linker.pending
        while True:
            try:
                more = self.queue.get_nowait()
            except queue.Empty:
                break
            if more is not None:
                n += len(more)
        self.unflushed += n
        log.warning("shutdown: %d spans not stored (the flush's %.1f s ran out)", n, self.flush_s)

    def run(self) -> None:
        """Block until stop is set (signal), then drain, link, flush."""
        tracker = getattr(self.source, "tracker", None)
        if tracker is not None:  # the live capture's HTTP/1 exchanges made as rows, never as Spans
            tracker.spans_as_rows(Row)
            keep_arenas()  # made on the capture thread, freed on the worker's: arenas kept warm
        if self.memtrace is not None:
            self.memtrace.start()
        self._worker.start()
        try:
            self.source.run(self.on_spans, self.stop)
        finally:
            t = time.monotonic()
            self._flush_by = t + self.flush_s
            if self.stop_asked is not None:
                self._flush_by = min(self._flush_by, max(self.stop_asked + EXIT_BUDGET_S, t + FLUSH_AT_LEAST_S))
            if self.memtrace is not None:
                # tracing off first: with it on, the draining, the store's flush and above all the
                # interpreter's last collection took close to a minute under load (SIGTERM seemed
                # ignored); a report the worker is writing now comes out empty
                self.memtrace.stop()
                log.info("memory trace off")
            t = self.exit_step_done("memtrace", t)
            self.queue.put(None)
            self._worker.join()
            t = self.exit_step_done("worker", t)
            if self.sink is not None:
                self.sink.close()
                t = self.exit_step_done("export", t)
            self.store.flush()
            self.exit_step_done("store_flush", t)
            log.info("stopped: %d spans received, %d stored, %d dropped, %d unflushed", self.received,
                     self.stored, self.dropped, self.unflushed)

    def exit_step_done(self, name: str, since: float) -> float:
        """Record the seconds since `since` (time.monotonic) as the shutdown's step `name` in
        exit_phases; returns now, the next step's start. `guardian agent` times its own steps too."""
        now = time.monotonic()
        self.exit_phases[name] = round(now - since, 3)
        return now


def minimal_app(agent: Agent) -> Any:
    """/healthz and /metrics only: used when the full API cannot be built."""
    from fastapi import FastAPI, Response
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    app = FastAPI(title="Guardian agent")

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok", "spans": agent.store.count()}

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(agent.registry), media_type=CONTENT_TYPE_LATEST)

    return app


class ApiServer:
    """uvicorn in a thread (signal handling stays with the agent)."""

    def __init__(self, app: Any, host: str, port: int):
        import uvicorn

        from guardian.api.main import SHUTDOWN_GRACE_S

        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on",
                                                    timeout_graceful_shutdown=SHUTDOWN_GRACE_S))
        self.server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        self.thread = threading.Thread(target=self.server.run, name="api", daemon=True)

    def start(self, timeout_s: float = 20.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the API server did not start (port in use?)")
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
