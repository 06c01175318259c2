"""What happens to a received alert: deduplicated, rate-limited, turned into an investigation over
its window and the services its labels name, and the report delivered to Slack and/or a webhook.

Rule 1: the same firing fingerprint with the same start is one incident: repeats (Alertmanager
re-sends every group_interval) are noted, not investigated again, for `dedupe_s`.
Rule 2: a resolved alert never starts an investigation; it is noted on the one it started.
Rule 3: at most `max_investigations` alert investigations per `rate_window_s`; the rest are
noted as rate_limited (an alert storm must not starve questions people ask).
Rule 4: the window opens `lookback` before the alert started and ends when it ended (or now),
never longer than `max_window` (the onset is kept: that is where the cause shows).
Does not parse payloads (guardian.alerts.payloads) or rank causes (guardian.investigate).
"""
from __future__ import annotations

import logging
import re
import threading
import time
from collections import OrderedDict, deque
from typing import Any

import httpx

from capture.store.api import SpanStore, TimeWindow
from guardian.alerts.payloads import Alert
from guardian.api.jobs import Busy, Job, Jobs
from guardian.report import untrusted
from capture.store.window import parse_duration

log = logging.getLogger(__name__)
KEEP_EVENTS = 500
_NAME = re.compile(r"[^\w .:/-]+")


def alert_window(alert: Alert, lookback_s: float, max_s: float, now_ns: int) -> TimeWindow:
    start = (alert.starts_at_ns or now_ns) - int(lookback_s * 1e9)
    end = min(alert.ends_at_ns or now_ns, now_ns)
    if end <= start:  # an alert from the future (clock skew): the lookback before now
        start, end = now_ns - int(lookback_s * 1e9), now_ns
    return TimeWindow(start, min(end, start + int(max_s * 1e9)))


def _host(name: str) -> str:
    host, _, port = name.lower().rpartition(":")
    return host if host and port.isdigit() else name.lower()


def named_services(alert: Alert, label_keys: list[str], known: list[str]) -> list[str]:
    """Services of the store the alert's labels name (exactly, or without a port); [] when none."""
    by_host: dict[str, str] = {}
    for k in known:
        by_host.setdefault(_host(k), k)
        by_host.setdefault(k.lower(), k)
    out: list[str] = []
    for key in label_keys:
        v = alert.labels.get(key)
        if not v:
            continue
        hit = by_host.get(v.lower()) or by_host.get(_host(v))
        if hit and hit not in out:
            out.append(hit)
    return out


def question_for(alert: Alert, services: list[str]) -> str:
    """Only the alert's name (cleaned) and store service names: annotations stay out of prompts."""
    name = _NAME.sub(" ", alert.name).strip()[:120] or "alert"
    where = f" on {', '.join(services)}" if services else ""
    return f"Alert {name} is firing{where}: what is broken and why?"


class AlertReceiver:
    def __init__(self, store: SpanStore, jobs: Jobs, settings, slack=None, engine: str = "auto"):
        self.store, self.jobs, self.settings, self.slack, self.engine = store, jobs, settings, slack, engine
        self.lookback_s = parse_duration(settings.lookback)
        self.max_s = parse_duration(settings.max_window)
        self._active: OrderedDict[str, dict[str, Any]] = OrderedDict()  # fingerprint -> incident
        self._started: deque[float] = deque()
        self.events: deque[dict[str, Any]] = deque(maxlen=KEEP_EVENTS)
        self._lock = threading.Lock()

    def receive(self, alerts: list[Alert], now_ns: int | None = None) -> list[dict[str, Any]]:
        """One outcome per alert: started | duplicate | resolved | rate_limited | busy."""
        now_ns = now_ns or time.time_ns()
        return [self._one(a, now_ns) for a in alerts]

    def _one(self, alert: Alert, now_ns: int) -> dict[str, Any]:
        with self._lock:
            self._expire(now_ns)
            known = self._active.get(alert.fingerprint)
            if alert.status == "resolved":
                if known:
                    known["resolved_at_ns"] = alert.ends_at_ns or now_ns
                    job = self.jobs.get(known["job_id"]) if known.get("job_id") else None
                    if job:
                        job.meta["resolved_at_ns"] = known["resolved_at_ns"]
                        job.step("resolved", "the alert resolved")
                    del self._active[alert.fingerprint]
                return self._note(alert, "resolved", known and known.get("job_id"))
            if known and known["starts_at_ns"] == alert.starts_at_ns:
                known["repeats"] += 1
                return self._note(alert, "duplicate", known.get("job_id"))
            if not self._allowed(now_ns):
                return self._note(alert, "rate_limited", None)
            incident = {"starts_at_ns": alert.starts_at_ns, "seen_ns": now_ns, "repeats": 0, "job_id": None}
            self._active[alert.fingerprint] = incident
        window = alert_window(alert, self.lookback_s, self.max_s, now_ns)
        services = named_services(alert, self.settings.service_labels, self.store.services(window))
        meta = {"alert": alert.to_dict(), "services": services}
        try:
            step = ("alert", f"{alert.name}: window from {self.lookback_s:.0f}s before the start, services "
                             f"{', '.join(services) or 'all (no label names a known service)'}")
            job = self.jobs.submit(question_for(alert, services), window, self.engine, on_done=self._deliver,
                                   source="alert", meta=meta, first_step=step)
        except Busy:
            with self._lock:
                self._active.pop(alert.fingerprint, None)
            return self._note(alert, "busy", None)
        incident["job_id"] = job.id
        return self._note(alert, "started", job.id, services)

    def _allowed(self, now_ns: int) -> bool:
        now = now_ns / 1e9
        while self._started and self._started[0] < now - self.settings.rate_window_s:
            self._started.popleft()
        if len(self._started) >= self.settings.max_investigations:
            return False
        self._started.append(now)
        return True

    def _expire(self, now_ns: int) -> None:
        horizon = now_ns - int(self.settings.dedupe_s * 1e9)
        for fp in [fp for fp, i in self._active.items() if i["seen_ns"] < horizon]:
            del self._active[fp]

    def _note(self, alert: Alert, action: str, job_id: str | None, services: list[str] | None = None) -> dict:
        event = {"at": time.time(), "fingerprint": alert.fingerprint, "name": alert.name, "status": alert.status,
                 "action": action, "investigation": job_id, "source": alert.source}
        if services is not None:
            event["services"] = services
        self.events.append(event)
        return event

    # -- delivery --
    def channel_for(self, job: Job) -> str | None:
        receiver = (job.meta.get("alert") or {}).get("receiver")
        return self.settings.slack_channels.get(receiver or "") or self.settings.slack_channel

    def _deliver(self, job: Job) -> None:
        alert = job.meta.get("alert") or {}
        head = f"Alert {untrusted(alert.get('name', ''))} ({alert.get('status', '')})"
        text = (f"{head}: investigation failed: {job.error}" if job.status != "done"
                else f"{head}\n\n{job.report.to_markdown()}")
        channel = self.channel_for(job)
        if channel and self.slack is not None:
            from guardian.slack.interactive import feedback_blocks

            ts = self.slack.reply(channel, text, markdown=True,
                                  extra_blocks=feedback_blocks(job.id) if job.status == "done" else None)
            job.meta["slack"] = {"channel": channel, "ts": ts}
        if self.settings.webhook_url:
            payload = {"investigation": job.id, "alert": alert, "status": job.status,
                       "report": job.report.model_dump(mode="json") if job.report else None, "text": text}
            try:
                httpx.post(self.settings.webhook_url, json=payload, timeout=10).raise_for_status()
                job.meta["webhook"] = "delivered"
            except httpx.HTTPError as e:
                log.error("alert report webhook failed: %s", e)
                job.meta["webhook"] = f"failed: {e}"
