"""GET /v1/services (with RED) and GET /v1/service-map (edges with RED) over a window."""
from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool

from capture.store.api import SpanStore, TimeWindow
from guardian.api.deps import get_store, require_token, window_json, window_query

router = APIRouter(prefix="/v1", tags=["services"], dependencies=[Depends(require_token)])


def _services(store: SpanStore, window: TimeWindow) -> list[dict]:
    red = {r.service: r for r in store.red(window, by="service")}
    out = []
    for name in store.services(window):
        row = red.get(name)
        stats = {k: v for k, v in asdict(row).items() if k not in ("service", "operation", "interval_start_ns")} \
            if row else {"count": 0}
        out.append({"name": name, **stats})
    return out


@router.get("/services")
async def services(window: TimeWindow = Depends(window_query), store: SpanStore = Depends(get_store)) -> dict:
    """Services seen in the window with their RED (count, errors, rate, error rate, p50/p95/p99 ms).

    Services that only call others (no SERVER spans) have count 0 here; see the service map."""
    return {"window": window_json(window), "services": await run_in_threadpool(_services, store, window)}


@router.get("/service-map")
async def service_map(window: TimeWindow = Depends(window_query), store: SpanStore = Depends(get_store)) -> dict:
    """Edges client -> server with the RED of those calls."""
    edges = await run_in_threadpool(store.service_map, window)
    return {"window": window_json(window), "edges": [asdict(e) for e in edges]}
