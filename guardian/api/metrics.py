"""Prometheus metrics of the API, on a registry the caller may share (e.g. `guardian agent`'s own)."""
from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from starlette.types import ASGIApp, Receive, Scope, Send


class ApiMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter("guardian_api_requests", "HTTP requests served",
                                ["method", "route", "status"], registry=r)
        self.latency = Histogram("guardian_api_request_seconds", "HTTP request latency",
                                 ["route"], registry=r)
        self.investigations = Counter("guardian_investigations", "Investigations finished",
                                      ["status"], registry=r)
        self.running = Gauge("guardian_investigations_running", "Investigations running or queued",
                             registry=r)
        self.slack_events = Counter("guardian_slack_events", "Slack requests handled",
                                    ["kind", "outcome"], registry=r)
        self.reports = Counter("guardian_scheduled_reports", "Scheduled anomaly reports run",
                               ["outcome"], registry=r)
        self.history_evicted = Counter("guardian_report_history_evicted", "Scheduled reports dropped from "
                                       "the history past schedule.history_max (guardian/schedule/history.py)",
                                       registry=r)


class StoreMetrics:
    """The store's own counters, read at scrape time: whoever serves the API (`guardian serve`, the
    hub, the agent) shows what its store did. Counters a store does not keep are left out."""

    COUNTERS = {"drains": ("guardian_store_drains", "times DuckDB's eviction queues were emptied to give back "
                           "the heap their dead entries kept (DuckDBStore.drain)")}

    def __init__(self, store):
        self.store = store

    def describe(self) -> list:
        return []

    def collect(self):
        for attr, (name, doc) in self.COUNTERS.items():
            value = getattr(self.store, attr, None)
            if value is not None:
                c = CounterMetricFamily(name, doc)
                c.add_metric([], value)
                yield c


class MetricsMiddleware:
    """Counts requests by route template (not raw path) so trace ids don't explode cardinality."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0, status = time.perf_counter(), [500]

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            name = getattr(route, "path", None) or ("/mcp" if scope["path"].startswith("/mcp") else "other")
            self.metrics.requests.labels(scope["method"], name, str(status[0])).inc()
            self.metrics.latency.labels(name).observe(time.perf_counter() - t0)
