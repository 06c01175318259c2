"""Service-level tools: services with health, the service map, one service's dependencies."""
from __future__ import annotations

from pydantic import BaseModel, Field

from capture.store.api import EdgeRow, SpanFilter, SpanStore, TimeWindow
from tools.base import (Capped, Tool, ToolError, WindowArgs, cap, require_data,
                        sample_traces, windows)
from tools.stats import HEALTH_ORDER, RedStats, from_row, health


class ServiceHealth(BaseModel):
    service: str
    health: str
    current: RedStats
    baseline: RedStats
    sample_trace_ids: list[str] = Field(default_factory=list)


class ListServicesArgs(WindowArgs):
    limit: int = Field(50, ge=1, le=200)


class ListServicesResult(Capped):
    window: dict[str, int]
    services: list[ServiceHealth]


def _sample(store: SpanStore, window: TimeWindow, service: str, failing: bool) -> list[str]:
    flt = SpanFilter(window=window, service=service,
                     status_code="ERROR" if failing else None,
                     order="start" if failing else "duration_desc")
    return sample_traces(store, flt, 2)


def list_services(store: SpanStore, args: ListServicesArgs) -> ListServicesResult:
    window, baseline = windows(store, args)
    require_data(store, window)
    cur = {r.service: r for r in store.red(window)}
    base = {r.service: r for r in store.red(baseline)}
    names = sorted(set(cur) | set(base) | set(store.services(window)))
    rows = []
    for name in names:
        c, b = from_row(cur.get(name)), from_row(base.get(name))
        rows.append(ServiceHealth(service=name, health=health(c, b), current=c, baseline=b))
    rows.sort(key=lambda r: (HEALTH_ORDER[r.health], -r.current.count))
    rows, trunc, sugg = cap(rows, args.limit, "pass a larger limit or look at one service with red")
    for r in rows:
        r.sample_trace_ids = _sample(store, window, r.service, r.health == "failing")
    return ListServicesResult(window={"start_ns": window.start_ns, "end_ns": window.end_ns},
                              services=rows, truncated=trunc, suggestion=sugg)


class Edge(BaseModel):
    client: str
    server: str
    health: str
    current: RedStats
    baseline: RedStats
    sample_trace_ids: list[str] = Field(default_factory=list)


class ServiceMapArgs(WindowArgs):
    service: str | None = Field(None, description="only edges touching this service")
    limit: int = Field(100, ge=1, le=500)


class ServiceMapResult(Capped):
    edges: list[Edge]


def edge_samples(store: SpanStore, window: TimeWindow, client: str, server: str,
                 failing: bool) -> list[str]:
    """Trace ids of calls on an edge: the server's spans, else the client's calls to the peer."""
    status = "ERROR" if failing else None
    order = "start" if failing else "duration_desc"
    got = sample_traces(store, SpanFilter(window=window, service=server, kind="SERVER",
                                          status_code=status, order=order), 2)
    if not got:  # calls to a peer no server span answers (a database, a broker): the store's peer rule
        got = sample_traces(store, SpanFilter(window=window, service=client, peer=server,
                                              status_code=status, order=order), 2)
    return got


def compare_edges(store: SpanStore, window: TimeWindow, baseline: TimeWindow) -> list[Edge]:
    """Every edge seen in window or baseline, with both RED and a health verdict."""
    cur = {(e.client, e.server): e for e in store.service_map(window)}
    base = {(e.client, e.server): e for e in store.service_map(baseline)}
    out = []
    for key in sorted(set(cur) | set(base)):  # sorted: ties in count keep one order, run to run
        c: EdgeRow | None = cur.get(key)
        b: EdgeRow | None = base.get(key)
        cs, bs = from_row(c), from_row(b)
        out.append(Edge(client=key[0], server=key[1], health=health(cs, bs), current=cs, baseline=bs))
    out.sort(key=lambda e: -e.current.count)
    return out


def _with_samples(store: SpanStore, window: TimeWindow, edges: list[Edge]) -> None:
    for e in edges:
        e.sample_trace_ids = edge_samples(store, window, e.client, e.server, e.health == "failing")


def service_map(store: SpanStore, args: ServiceMapArgs) -> ServiceMapResult:
    window, baseline = windows(store, args)
    require_data(store, window)
    edges = compare_edges(store, window, baseline)
    if args.service:
        edges = [e for e in edges if args.service in (e.client, e.server)]
    edges, trunc, sugg = cap(edges, args.limit, "pass service=<name> to see the edges of one service")
    _with_samples(store, window, edges[:20])
    return ServiceMapResult(edges=edges, truncated=trunc, suggestion=sugg)


class DependenciesArgs(WindowArgs):
    service: str = Field(..., description="the calling service (a name from list_services)")
    limit: int = Field(50, ge=1, le=200)


class DependenciesResult(Capped):
    service: str
    dependencies: list[Edge]


def dependencies(store: SpanStore, args: DependenciesArgs) -> DependenciesResult:
    window, baseline = windows(store, args)
    require_data(store, window)
    edges = [e for e in compare_edges(store, window, baseline) if e.client == args.service]
    if not edges and args.service not in store.services(window):
        known = ", ".join(store.services(window)[:20])
        raise ToolError(f"unknown service {args.service!r} in this window", f"known services: {known}")
    edges.sort(key=lambda e: (HEALTH_ORDER[e.health], -e.current.count))
    edges, trunc, sugg = cap(edges, args.limit, "pass a larger limit")
    _with_samples(store, window, edges)
    return DependenciesResult(service=args.service, dependencies=edges, truncated=trunc,
                              suggestion=sugg)


TOOLS = [
    Tool("list_services",
         "Start here: every service in the window with its RED (rate, errors, p50/p95/p99) now and "
         "in the baseline, and a health verdict (failing/stopped/degraded/ok). Service names come "
         "from the captured spans; sample_trace_ids are real trace ids to open with get_trace.",
         ListServicesArgs, ListServicesResult, list_services),
    Tool("service_map",
         "Who calls whom: edges client -> server with RED now vs baseline and health. Use it to see "
         "how a failure propagates; servers that are databases or brokers appear by their system "
         "name (postgresql, redis) or host:port. sample_trace_ids come from calls on the edge.",
         ServiceMapArgs, ServiceMapResult, service_map),
    Tool("dependencies",
         "A service's downstream dependencies (databases, caches, brokers, other services) and their "
         "health now vs baseline. Use it when a service is failing or slow to find which dependency "
         "is responsible. The service name comes from list_services.",
         DependenciesArgs, DependenciesResult, dependencies),
]
