"""Scheduled anomaly reports: every `interval_s` or on a `cron` (UTC), run the anomalies tool,
post the report to Slack and/or a webhook, and keep every run in the history.

One daemon thread; a run that fails (store error, Slack down) is recorded and the next one
still happens. `run_once` is also what POST /v1/reports/run and `/guardian anomalies` call.
An investigation attached to a report is kept in the incident memory (when given) like the API's.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

import httpx
from croniter import croniter

from capture.store.api import SpanStore, TimeWindow
from guardian.api.settings import ScheduleSettings
from guardian.report import untrusted
from guardian.schedule.history import ReportHistory
from capture.store.window import fmt_ns

log = logging.getLogger(__name__)
MAX_LISTED = 10  # anomalies written out in the text; the JSON keeps them all


def describe(anomaly: dict[str, Any]) -> str:
    """One line of captured names and numbers, inert in Markdown and Slack (guardian.report.untrusted)."""
    if anomaly.get("description"):
        return untrusted(anomaly["description"])
    who = "/".join(str(anomaly[k]) for k in ("service", "operation") if anomaly.get(k))
    return untrusted(f"{anomaly.get('kind', 'anomaly')} on {who or 'unknown'}")


def render(record: dict[str, Any]) -> str:
    """Markdown text of one anomaly report."""
    w = record["window"]
    head = f"# Guardian anomaly report\n\nWindow: {fmt_ns(w['start_ns'])} to {fmt_ns(w['end_ns'])}\n"
    if record.get("error"):
        return head + f"\nNo report: {record['error']}"
    items = record["anomalies"]
    if not items:
        return head + "\nNo anomalies: every service is within its baseline."
    lines = [f"{i}. {describe(a)}" + (f" (trace `{a['trace_ids'][0]}`)" if a.get("trace_ids") else "")
             for i, a in enumerate(items[:MAX_LISTED], 1)]
    more = f"\n…and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else ""
    return head + f"\n**{len(items)} anomalies**, worst first:\n\n" + "\n".join(lines) + more


class Scheduler:
    def __init__(self, store: SpanStore, settings: ScheduleSettings, slack=None, metrics=None,
                 history: ReportHistory | None = None, engine: str = "auto", memory=None):
        self.store, self.settings, self.slack, self.metrics = store, settings, slack, metrics
        self.engine = engine
        self.memory = memory  # guardian.memory.hook.Memory: similar incidents, prior, record
        self.history = history or ReportHistory(settings.history_path, settings.history_max)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._run_lock = threading.Lock()  # a manual run and a scheduled one never overlap

    def next_fire(self, after: float) -> float:
        """Unix time of the next run after `after`."""
        if self.settings.cron:
            return croniter(self.settings.cron, after).get_next(float)
        return after + float(self.settings.interval_s or 0)

    def run_once(self, trigger: str = "schedule", channel: str | None = None) -> dict[str, Any]:
        """Detect, deliver, record; returns the history record."""
        from tools.registry import call_tool

        with self._run_lock:
            args = {"since": self.settings.window} if self.settings.window else {}
            result = call_tool(self.store, "anomalies", args)
            at_ns = time.time_ns()
            record: dict[str, Any] = {
                "id": uuid.uuid4().hex[:16], "at_ns": at_ns, "trigger": trigger,
                "window": result.get("window") or {"start_ns": at_ns, "end_ns": at_ns},
                "anomalies": result.get("anomalies", []), "deliveries": {},
            }
            if "error" in result:
                record["error"] = f"{result['error']} ({result.get('hint', '')})"
            record["anomaly_count"] = len(record["anomalies"])
            record["text"] = render(record)
            if self.settings.investigate and record["anomaly_count"]:
                self._investigate(record)
            if not record.get("error") and (record["anomaly_count"] or not self.settings.only_anomalies):
                self._deliver(record, channel)
            evicted = self.history.add(record)
            if self.metrics:
                self.metrics.history_evicted.inc(evicted)
                failed = any(v != "ok" for v in record["deliveries"].values())
                self.metrics.reports.labels("delivery_failed" if failed else "ok").inc()
            return record

    def _investigate(self, record: dict[str, Any]) -> None:
        """Attach the report of an investigation of the top anomaly (in the record and the text)."""
        from guardian.investigate.engine import investigate

        w = record["window"]
        question = f"What is causing this: {describe(record['anomalies'][0])}?"
        try:
            report = investigate(self.store, question, TimeWindow(w["start_ns"], w["end_ns"]), self.engine)
        except Exception as e:  # the anomaly report still goes out without it
            log.exception("investigation of scheduled report %s failed", record["id"])
            record["investigation_error"] = f"{type(e).__name__}: {e}"
            return
        if self.memory is not None:
            self._remember(record, question, TimeWindow(w["start_ns"], w["end_ns"]), report)
        record["investigation"] = report.model_dump(mode="json")
        record["text"] += "\n\n" + report.to_markdown()

    def _remember(self, record: dict[str, Any], question: str, window: TimeWindow, report: Any) -> None:
        """Similar incidents and the prior on the report, then recorded under the report's id (source
        "schedule"), so that people can mark it like an investigation they asked for."""
        from guardian.memory.hook import remember

        top = record["anomalies"][0]
        services = [str(top[k]) for k in ("service", "caller") if top.get(k)]
        try:
            remember(self.memory, record["id"], "schedule", question, window, report, services)
            record["incident_id"] = record["id"]
        except Exception:  # the report still goes out without its memory
            log.exception("recording the investigation of scheduled report %s failed", record["id"])

    def _deliver(self, record: dict[str, Any], channel: str | None) -> None:
        channel = channel or self.settings.slack_channel
        if channel and self.slack is not None:
            try:
                self.slack.post(channel, record["text"], markdown=True)
                record["deliveries"]["slack"] = "ok"
            except Exception as e:  # slack_sdk raises several kinds; the run must still be recorded
                record["deliveries"]["slack"] = f"failed: {e}"
        if self.settings.webhook_url:
            payload = {k: record[k] for k in ("id", "at_ns", "trigger", "window", "anomaly_count",
                                               "anomalies", "text")}
            try:
                httpx.post(self.settings.webhook_url, json=payload, timeout=10).raise_for_status()
                record["deliveries"]["webhook"] = "ok"
            except httpx.HTTPError as e:
                record["deliveries"]["webhook"] = f"failed: {e}"

    def start(self) -> None:
        if not self.settings.enabled or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="guardian-schedule", daemon=True)
        self._thread.start()
        log.info("scheduled anomaly reports: %s", self.settings.cron or f"every {self.settings.interval_s}s")

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        while True:
            now = time.time()
            if self._stop.wait(max(0.0, self.next_fire(now) - now)):
                return
            try:
                self.run_once()
            except Exception:  # keep the schedule alive; the failure is in the log
                log.exception("scheduled anomaly report failed")
