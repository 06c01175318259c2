"""`create_app(store, config)`: the FastAPI app served by `guardian serve` and `guardian agent`.

Auth: a bearer token (or the console's session cookie, signed in with it) on everything except
/healthz, the OpenAPI docs (/docs, /openapi.json: they describe the API, hold no data), the
console's sign-in page and assets, and /slack/* (Slack signs its requests instead).
The caller owns the store (and closes it); the app owns its job pool, scheduler and MCP sessions.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from typing import Any, Callable

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from capture.store.api import SpanStore
from guardian import __version__
from guardian.api.deps import token_ok
from guardian.api.files import restrict_store
from guardian.api.guard import RequestGuard
from guardian.api.jobs import Jobs
from guardian.api.mcp_mount import LazyMcp
from guardian.api.metrics import ApiMetrics, MetricsMiddleware, StoreMetrics
from guardian.alerts.receiver import AlertReceiver
from guardian.api.routers import (alerts, anomalies, graph, health, investigate, memory, reports, services, tools,
                                  traces)
from guardian.console import routes as console
from guardian.console.sessions import Sessions
from guardian.memory.hook import Memory
from guardian.memory.store import MemoryStore
from guardian.api.settings import Settings, as_settings
from guardian.schedule.scheduler import Scheduler
from guardian.slack import events as slack_events
from guardian.slack import interactive as slack_interactive
from guardian.slack.service import SlackService

log = logging.getLogger(__name__)
# Seconds a stopping server waits for open requests (an event stream, a synchronous investigation)
# before cancelling them.
SHUTDOWN_GRACE_S = 5


class _BearerOnly:
    """The token check for a mounted ASGI app (MCP) that FastAPI dependencies don't reach."""

    def __init__(self, app: ASGIApp, token: str | None):
        self.app, self.token = app, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        auth = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
        if scope["type"] == "http" and not token_ok(self.token, auth):
            resp = JSONResponse({"detail": "missing or wrong bearer token"}, 401,
                                headers={"WWW-Authenticate": "Bearer"})
            await resp(scope, receive, send)
            return
        await self.app(scope, receive, send)


def create_app(
    store: SpanStore,
    config: Settings | Mapping[str, Any] | None = None,
    *,
    registry: CollectorRegistry | None = None,
    investigate_fn: Callable[..., Any] | None = None,
    mcp: bool = True,
) -> FastAPI:
    """The API over `store`. `registry`: a Prometheus registry to add our metrics to (served at
    /metrics with whatever the caller registered); `investigate_fn`: replaces the engine (tests)."""
    settings = as_settings(config)
    if settings.api.engine == "llm":
        from guardian.investigate.engine import llm_configured

        if not llm_configured():
            log.error('api.engine is "llm" but no LLM is configured: using the deterministic engine')
            settings = settings.model_copy(deep=True)
            settings.api.engine = "deterministic"
    restrict_store(store)
    metrics = ApiMetrics(registry)
    metrics.registry.register(StoreMetrics(store))
    jobs = Jobs(store, settings.api.max_jobs, metrics, investigate_fn)
    incident_memory = Memory(MemoryStore(settings.memory.path), settings.memory.prior_weight)
    jobs.after.append(incident_memory.after_investigation)
    slack = SlackService(settings.slack, jobs, metrics)
    scheduler = Scheduler(store, settings.schedule, slack if settings.slack.bot_token else None, metrics,
                          engine=settings.api.engine, memory=incident_memory)
    alert_receiver = AlertReceiver(store, jobs, settings.alerts, slack if settings.slack.bot_token else None,
                                   engine=settings.api.engine)
    mcp_endpoint = LazyMcp(store, loopback_only=not settings.api.token) if mcp else None

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        scheduler.start()
        try:
            async with (mcp_endpoint.running() if mcp_endpoint else contextlib.nullcontext()):
                yield
        finally:
            scheduler.stop()
            jobs.shutdown(wait=False)

    app = FastAPI(
        title="Guardian API", version=__version__, lifespan=lifespan,
        description="Investigations, anomalies, services, traces and the investigation tools over "
                    "Guardian's span store. Bearer token on everything but /healthz, the docs and "
                    "/slack/* (Slack-signed).",
    )
    app.state.store, app.state.settings, app.state.metrics = store, settings, metrics
    app.state.jobs, app.state.slack, app.state.scheduler = jobs, slack, scheduler
    app.state.alerts, app.state.memory, app.state.sessions = alert_receiver, incident_memory, Sessions()
    for module in (health, investigate, anomalies, services, graph, traces, tools, reports, alerts, memory,
                   slack_events, slack_interactive, console):
        app.include_router(module.router)
    if mcp_endpoint is not None:
        app.add_route("/mcp", _BearerOnly(mcp_endpoint, settings.api.token),
                      methods=["GET", "POST", "DELETE"], include_in_schema=False)
    app.add_middleware(RequestGuard, token=settings.api.token, max_body_bytes=settings.api.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app
