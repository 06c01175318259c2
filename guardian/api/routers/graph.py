"""GET /v1/service-graph (nodes with their kind and RED, edges with RED and health) and
GET /v1/services/{name}/series (RED over time): what the console's map and service page draw.

A node's kind comes from the calls into it: db.system -> database (cache for redis/memcached),
messaging.system -> broker, dns.* -> dns, a captured service -> service, anything else external.
"""
from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool

from capture.store.api import SpanFilter, SpanStore, TimeWindow
from guardian.api.deps import get_store, require_token, window_json, window_query

router = APIRouter(prefix="/v1", tags=["services"], dependencies=[Depends(require_token)])
CACHES = {"redis", "memcached", "valkey"}
MAX_POINTS = 120


def _kind(store: SpanStore, window: TimeWindow, client: str, server: str, services: set[str]) -> str:
    if server in services:
        return "service"
    got = store.spans(SpanFilter(window=window, service=client, peer=server, limit=1))
    if got:
        a = got[0].attributes
        system = str(a.get("db.system") or a.get("db.system.name") or "")
        if system:
            return "cache" if system.lower() in CACHES else "database"
        if a.get("messaging.system"):
            return "broker"
        if any(k.startswith("dns.") for k in a):
            return "dns"
    return "external"


def _graph(store: SpanStore, window: TimeWindow, health: dict) -> dict:
    services = set(store.services(window))
    red = {r.service: r for r in store.red(window, by="service")}
    edges = store.service_map(window)
    nodes: dict[str, dict] = {s: {"name": s, "kind": "service"} for s in services}
    for e in edges:
        for name in (e.client, e.server):
            if name not in nodes:
                nodes[name] = {"name": name, "kind": _kind(store, window, e.client, name, services)
                               if name == e.server else "service"}
    for name, n in nodes.items():
        r = red.get(name)
        n["red"] = {k: v for k, v in asdict(r).items() if k not in ("service", "operation", "interval_start_ns")} \
            if r else None
    return {"window": window_json(window), "nodes": sorted(nodes.values(), key=lambda n: n["name"]),
            "edges": [{**asdict(e), "health": health.get((e.client, e.server), "ok")} for e in edges]}


@router.get("/service-graph")
async def service_graph(request: Request, window: TimeWindow = Depends(window_query),
                        store: SpanStore = Depends(get_store)) -> dict:
    """Nodes (services, databases, caches, brokers, DNS, external hosts) and edges with RED; edge
    health (ok, failing, slower, new...) compares against the window before, as the service_map tool does."""
    from tools.registry import call_tool

    args = {"start": str(window.start_ns), "end": str(window.end_ns), "limit": 200}
    result = await run_in_threadpool(call_tool, store, "service_map", args)
    health = {(e["client"], e["server"]): e.get("health", "ok") for e in result.get("edges", [])} \
        if isinstance(result, dict) else {}
    return await run_in_threadpool(_graph, store, window, health)


@router.get("/services/{name}/series")
async def series(name: str, window: TimeWindow = Depends(window_query), store: SpanStore = Depends(get_store),
                 interval_s: int | None = Query(None, ge=1, le=86400)) -> dict:
    """RED of one service per interval (default: the window in about 60 points)."""
    step = interval_s or max(1, int(window.seconds // 60))
    if window.seconds / step > MAX_POINTS:
        step = int(window.seconds // MAX_POINTS) + 1
    rows = await run_in_threadpool(store.red, window, "service", step, name)
    return {"window": window_json(window), "service": name, "interval_s": step,
            "points": [{k: v for k, v in asdict(r).items() if k not in ("service", "operation")} for r in rows]}
