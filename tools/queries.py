"""Slowest and failing database/cache queries, grouped by statement, with their callers."""
from __future__ import annotations

import re

from pydantic import BaseModel, Field

from capture.span import Span
from capture.store.api import SpanFilter, SpanStore
from tools.base import Capped, Tool, WindowArgs, cap, cut, require_data, windows

# db.system values (OpenTelemetry semconv) probed when the service map names none.
DB_SYSTEMS = ("postgresql", "mysql", "mariadb", "redis", "mongodb", "cassandra", "memcached",
              "sqlite", "mssql", "oracle", "elasticsearch", "etcd", "clickhouse", "couchbase")
PER_SYSTEM = 500  # slowest spans read per database system


class QueryGroup(BaseModel):
    db_system: str
    statement: str = Field(description="db.query.text with literals replaced, or the span name")
    operation: str
    count: int = Field(description="calls among the slowest/failing sample")
    errors: int
    max_ms: float
    avg_ms: float
    callers: list[str] = Field(description="service that ran it, with its endpoint when known")
    sample_trace_ids: list[str]
    sample_span_ids: list[str]
    error_messages: list[str] = Field(default_factory=list)


class SlowQueriesArgs(WindowArgs):
    service: str | None = Field(None, description="only queries run by this service")
    db_system: str | None = Field(None, description="e.g. postgresql, mysql, redis")
    min_duration_ms: float | None = Field(None, ge=0, le=1e9)
    limit: int = Field(10, ge=1, le=50)


class SlowQueriesResult(Capped):
    queries: list[QueryGroup]


def _statement(s: Span) -> str:
    text = s.attributes.get("db.query.text") or s.attributes.get("db.statement")
    if not text:
        return s.name
    text = re.sub(r"'(?:[^']|'')*'", "?", str(text))  # literals vary per call, plans don't
    return cut(re.sub(r"\b\d+(\.\d+)?\b", "?", text), 400)


def _systems(store: SpanStore, args: SlowQueriesArgs, window) -> list[str]:
    if args.db_system:
        return [args.db_system]
    named = {e.server for e in store.service_map(window)} & set(DB_SYSTEMS)
    if named:
        return sorted(named)
    return [d for d in DB_SYSTEMS if store.spans(SpanFilter(
        window=window, kind="CLIENT", attributes={"db.system": d}, limit=1))]


def slow_queries(store: SpanStore, args: SlowQueriesArgs) -> SlowQueriesResult:
    window, _ = windows(store, args)
    require_data(store, window)
    min_ns = int(args.min_duration_ms * 1e6) if args.min_duration_ms else None
    groups: dict[tuple[str, str], QueryGroup] = {}
    seen: set[str] = set()
    for system in _systems(store, args, window):
        for status, order in ((None, "duration_desc"), ("ERROR", "start")):
            for s in store.spans(SpanFilter(window=window, service=args.service, kind="CLIENT",
                                            status_code=status, min_duration_ns=min_ns,
                                            attributes={"db.system": system}, order=order,
                                            limit=PER_SYSTEM)):
                if s.span_id in seen:
                    continue
                seen.add(s.span_id)
                _add(groups, system, s)
    ranked = sorted(groups.values(), key=lambda g: -g.max_ms)
    for g in ranked:
        g.avg_ms = round(g.avg_ms / max(g.count, 1), 3)
    failing = [g for g in ranked if g.errors]
    slow = [g for g in ranked if not g.errors]
    # Slowest first, but never let slow ones crowd out every failing statement.
    merged = slow[: max(args.limit - min(len(failing), args.limit // 2), 0)] + failing
    merged.sort(key=lambda g: -g.max_ms)
    merged, trunc, sugg = cap(merged, args.limit, "pass service, db_system or min_duration_ms")
    _endpoints(store, merged[:5])
    return SlowQueriesResult(queries=merged, truncated=trunc or len(ranked) > len(merged),
                             suggestion=sugg or ("pass service or db_system to see more"
                                                 if len(ranked) > len(merged) else None))


def _add(groups: dict, system: str, s: Span) -> None:
    stmt = _statement(s)
    g = groups.get((system, stmt))
    if g is None:
        g = groups[(system, stmt)] = QueryGroup(
            db_system=system, statement=stmt, operation=s.name, count=0, errors=0, max_ms=0.0,
            avg_ms=0.0, callers=[], sample_trace_ids=[], sample_span_ids=[])
    ms = s.duration_ns / 1e6
    g.count += 1
    g.avg_ms += ms  # a sum until slow_queries divides it
    g.max_ms = round(max(g.max_ms, ms), 3)
    if s.service not in g.callers:
        g.callers.append(s.service)
    if s.status_code == "ERROR":
        g.errors += 1
        if s.status_message and len(g.error_messages) < 3 and s.status_message not in g.error_messages:
            g.error_messages.append(cut(s.status_message, 200))
    if len(g.sample_trace_ids) < 3:
        g.sample_trace_ids.append(s.trace_id)
        g.sample_span_ids.append(s.span_id)


def _endpoints(store: SpanStore, groups: list[QueryGroup]) -> None:
    """Name the caller's endpoint (the parent span) for the first sample of each group."""
    for g in groups:
        spans = {s.span_id: s for s in store.trace(g.sample_trace_ids[0])}
        me = spans.get(g.sample_span_ids[0])
        parent = spans.get(me.parent_span_id) if me and me.parent_span_id else None
        if parent is not None:
            label = f"{parent.service} {parent.name}"
            g.callers = [label] + [c for c in g.callers if c != parent.service]


TOOLS = [
    Tool("slow_queries",
         "The slowest and the failing database and cache calls (SQL, Redis, Mongo …) grouped by "
         "statement (literals removed), with max/avg time, errors and the calling service and "
         "endpoint. Use it when a service is slow or failing and it talks to a database. "
         "sample_trace_ids / sample_span_ids are the slowest calls of each statement.",
         SlowQueriesArgs, SlowQueriesResult, slow_queries),
]
