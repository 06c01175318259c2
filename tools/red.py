"""RED (rate, errors, duration) of a service or its operations, now vs a baseline window."""
from __future__ import annotations

from pydantic import BaseModel, Field

from capture.store.api import SpanFilter, SpanStore
from tools.base import Capped, Tool, ToolError, WindowArgs, cap, require_data, sample_traces, windows
from tools.stats import HEALTH_ORDER, RedStats, from_row, health


class RedItem(BaseModel):
    service: str
    operation: str | None
    health: str
    current: RedStats
    baseline: RedStats
    sample_trace_ids: list[str] = Field(default_factory=list)


class RedArgs(WindowArgs):
    service: str | None = Field(None, description="a service from list_services (default: all)")
    operation: str | None = Field(None, description="one operation (span name, e.g. 'GET /cart')")
    by: str = Field("operation", pattern="^(service|operation)$",
                    description="'service' for one row per service, 'operation' per endpoint")
    limit: int = Field(30, ge=1, le=200)


class RedResult(Capped):
    items: list[RedItem]


def red(store: SpanStore, args: RedArgs) -> RedResult:
    window, baseline = windows(store, args)
    require_data(store, window)
    by = "operation" if args.operation else args.by
    cur = {(r.service, r.operation): r for r in store.red(window, by=by, service=args.service)}
    base = {(r.service, r.operation): r for r in store.red(baseline, by=by, service=args.service)}
    keys = [k for k in set(cur) | set(base) if args.operation in (None, k[1])]
    if not keys and args.service and args.service not in store.services(window):
        raise ToolError(f"no SERVER spans for service {args.service!r}",
                        "take a name from list_services; databases and caches have RED in service_map")
    items = []
    for svc, op in keys:
        c, b = from_row(cur.get((svc, op))), from_row(base.get((svc, op)))
        items.append(RedItem(service=svc, operation=op, health=health(c, b), current=c, baseline=b))
    items.sort(key=lambda i: (HEALTH_ORDER[i.health], -i.current.count))
    items, trunc, sugg = cap(items, args.limit, "pass service=<name> (and operation=<name>)")
    for i in items[:10]:
        failing = i.health == "failing"
        i.sample_trace_ids = sample_traces(store, SpanFilter(
            window=window, service=i.service, name=i.operation,
            kind=None, status_code="ERROR" if failing else None,
            order="start" if failing else "duration_desc"), 2)
    return RedResult(items=items, truncated=trunc, suggestion=sugg)


TOOLS = [
    Tool("red",
         "Rate, error rate and p50/p95/p99 latency of a service's endpoints (SERVER/CONSUMER spans) "
         "in the window compared with the baseline window, with health per row. Use it to confirm "
         "or size a symptom. Service and operation names come from list_services / search_spans; "
         "sample_trace_ids are slow or failing requests of that row.",
         RedArgs, RedResult, red),
]
