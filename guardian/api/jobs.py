"""Investigations as jobs on a bounded worker pool, shared by the HTTP API and Slack.

An LLM investigation can take tens of seconds: it never runs on the event loop. At most
`max_jobs` run at once and as many wait; beyond that `submit` raises `Busy` (HTTP 429).
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from capture.store.api import SpanStore, TimeWindow
from guardian.api.metrics import ApiMetrics

log = logging.getLogger(__name__)
KEEP_FINISHED = 200  # finished jobs kept for polling, oldest dropped first


class Busy(Exception):
    """Too many investigations running or queued."""


@dataclass
class Job:
    id: str
    question: str
    window: TimeWindow | None
    engine: str
    status: str = "queued"  # queued | running | done | failed
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    report: Any = None  # the Report model once done
    error: str | None = None
    source: str = "question"  # question | alert | slack | schedule
    meta: dict[str, Any] = field(default_factory=dict)  # e.g. the alert that started it
    steps: list[dict[str, Any]] = field(default_factory=list)  # what ran so far, for the console
    future: Future | None = field(default=None, repr=False)

    def step(self, name: str, detail: str = "") -> None:
        """Record what the investigation is doing (the console shows these as they come)."""
        self.steps.append({"at": time.time(), "step": name, "detail": detail})

    def to_dict(self) -> dict[str, Any]:
        d = {
            "id": self.id, "status": self.status, "question": self.question, "engine": self.engine,
            "window": {"start_ns": self.window.start_ns, "end_ns": self.window.end_ns} if self.window else None,
            "created_at": self.created_at, "started_at": self.started_at, "finished_at": self.finished_at,
            "source": self.source, "steps": list(self.steps),
        }
        if self.meta:
            d["meta"] = self.meta
        if self.report is not None:
            d["report"] = self.report.model_dump(mode="json")
        if self.error:
            d["error"] = self.error
        return d


def _default_investigate(store: SpanStore, question: str, window: TimeWindow | None, engine: str):
    from guardian.investigate.engine import investigate

    return investigate(store, question, window, engine=engine)


def _found(report: Any) -> str:
    causes = getattr(report, "root_causes", None) or []
    if not causes:
        return "no root cause found"
    top = causes[0]
    return f"top cause {top.service} {top.operation or ''} ({top.kind}, {top.confidence:.0%})".replace("  ", " ")


class Jobs:
    def __init__(self, store: SpanStore, max_jobs: int = 2, metrics: ApiMetrics | None = None,
                 investigate: Callable[..., Any] | None = None):
        self.store, self.max_jobs, self.metrics = store, max_jobs, metrics
        self._investigate = investigate or _default_investigate
        self._pool = ThreadPoolExecutor(max_workers=max_jobs, thread_name_prefix="investigate")
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        # Called with (job, report) after the engine, before the job is done: memory's prior and
        # similar incidents; each may return a changed report.
        self.after: list[Callable[[Job, Any], Any]] = []

    def submit(self, question: str, window: TimeWindow | None, engine: str = "auto",
               on_done: Callable[[Job], None] | None = None, source: str = "question",
               meta: dict[str, Any] | None = None, first_step: tuple[str, str] | None = None) -> Job:
        with self._lock:
            pending = sum(j.status in ("queued", "running") for j in self._jobs.values())
            if pending >= 2 * self.max_jobs:
                raise Busy(f"{pending} investigations already running or queued; retry later")
            job = Job(uuid.uuid4().hex[:16], question, window, engine, source=source, meta=dict(meta or {}))
            if first_step:
                job.step(*first_step)
            self._jobs[job.id] = job
            self._trim()
        if self.metrics:
            self.metrics.running.inc()
        job.future = self._pool.submit(self._run, job, on_done)
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def recent(self, limit: int = 50) -> list[Job]:
        """Newest first."""
        with self._lock:
            return list(reversed(self._jobs.values()))[:limit]

    def _run(self, job: Job, on_done: Callable[[Job], None] | None) -> Job:
        job.started_at = time.time()
        job.status = "running"
        report, error = None, None
        job.step("investigate", f"{job.engine} engine over the window")
        try:
            from guardian.api.steps import StepStore

            report = self._investigate(StepStore(self.store, job), job.question, job.window, job.engine)
            job.step("report", _found(report))
            for hook in self.after:
                report = hook(job, report) or report
        except Exception as e:  # a failed investigation is reported to the asker, never lost
            log.exception("investigation %s failed", job.id)
            error = f"{type(e).__name__}: {e}"
        job.report, job.error, job.finished_at = report, error, time.time()
        job.status = "failed" if error else "done"  # last: a poller never sees half a result
        if self.metrics:
            self.metrics.running.dec()
            self.metrics.investigations.labels(job.status).inc()
        if on_done:
            try:
                on_done(job)
            except Exception:  # delivery (e.g. Slack down) must not kill the worker
                log.exception("delivering investigation %s failed", job.id)
        return job

    def _trim(self) -> None:
        finished = [k for k, j in self._jobs.items() if j.status in ("done", "failed")]
        for k in finished[: max(0, len(self._jobs) - KEEP_FINISHED)]:
            del self._jobs[k]

    def shutdown(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=True)
