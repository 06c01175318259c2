"""Errors grouped by service, operation, status and message; and what kind an error is."""
from __future__ import annotations

import re

from pydantic import BaseModel, Field

from capture.span import Span
from capture.store.api import SpanFilter, SpanStore, TimeWindow
from tools.base import Capped, Tool, WindowArgs, cap, cut, require_data, spread_spans, windows

# The call never reached a working server: name resolution, connect, TLS.
_DEPENDENCY = re.compile(r"nxdomain|servfail|no such host|name resolution|resolv|dns|refused|"
                         r"unreachable|reset by peer|certificate|handshake|\btls\b|\bssl\b|x509|"
                         r"connect(ion)? (error|failed|timeout)", re.I)
# Something ran out: pools, threads, queues, quotas.
_SATURATION = re.compile(r"pool|exhaust|too many (connections|clients|requests)|"
                         r"resource_exhausted|queue (is )?full|rate limit|throttl|"
                         r"acquir|capacity|overload|max_?connections", re.I)
SAMPLE_SPANS = 2000  # error spans read per window, spread over it; groups count within it


def error_code(s: Span) -> str:
    a = s.attributes
    for key in ("http.response.status_code", "rpc.grpc.status_code", "db.response.status_code",
                "error.type"):
        if a.get(key) not in (None, ""):
            return f"{key.split('.')[0]} {a[key]}"
    return "error"


def error_text(s: Span) -> str:
    return " ".join(str(x) for x in (s.status_message, s.attributes.get("error.type"),
                                     s.attributes.get("http.response.status_code")) if x)


def classify_error(s: Span) -> str:
    """'dependency' | 'saturation' | 'error' from what the span says about its failure."""
    text = error_text(s)
    if _SATURATION.search(text) or str(s.attributes.get("http.response.status_code")) == "429":
        return "saturation"
    if _DEPENDENCY.search(text):
        return "dependency"
    return "error"


def _normalize(msg: str) -> str:
    # Ids and numbers vary per request; the group should not.
    return cut(re.sub(r"\b[0-9a-f]{8,}\b|\d+", "N", msg), 160)


class ErrorGroup(BaseModel):
    service: str
    operation: str
    kind: str
    code: str
    message: str
    error_class: str  # dependency | saturation | error
    count: int
    baseline_count: int = 0
    new: bool = False
    first_seen_ns: int
    last_seen_ns: int
    sample_trace_ids: list[str] = Field(default_factory=list)
    sample_span_ids: list[str] = Field(default_factory=list)


def error_groups(store: SpanStore, window: TimeWindow, service: str | None = None,
                 baseline: TimeWindow | None = None) -> list[ErrorGroup]:
    """Errors in the window grouped by signature, most frequent first."""
    def sig(s: Span) -> tuple:
        return (s.service, s.name, s.kind, error_code(s), _normalize(s.status_message or ""))

    groups: dict[tuple, ErrorGroup] = {}
    for s in spread_spans(store, SpanFilter(window=window, service=service, status_code="ERROR"),
                          SAMPLE_SPANS):
        k = sig(s)
        g = groups.get(k)
        if g is None:
            g = groups[k] = ErrorGroup(service=k[0], operation=k[1], kind=k[2], code=k[3],
                                       message=k[4], error_class=classify_error(s), count=0,
                                       first_seen_ns=s.start_time_unix_nano,
                                       last_seen_ns=s.start_time_unix_nano)
        g.count += 1
        g.last_seen_ns = max(g.last_seen_ns, s.start_time_unix_nano)
        if len(g.sample_trace_ids) < 3 and s.trace_id not in g.sample_trace_ids:
            g.sample_trace_ids.append(s.trace_id)
            g.sample_span_ids.append(s.span_id)
    if baseline is not None:
        before: dict[tuple, int] = {}
        for s in spread_spans(store, SpanFilter(window=baseline, service=service,
                                                status_code="ERROR"), SAMPLE_SPANS):
            before[sig(s)] = before.get(sig(s), 0) + 1
        for k, g in groups.items():
            g.baseline_count = before.get(k, 0)
            g.new = g.baseline_count == 0
    return sorted(groups.values(), key=lambda g: -g.count)


class ErrorsArgs(WindowArgs):
    service: str | None = Field(None, description="only this service (from list_services)")
    limit: int = Field(20, ge=1, le=100)


class ErrorsResult(Capped):
    groups: list[ErrorGroup]
    sampled: bool = Field(False, description="more error spans than were read: counts are a sample")


def errors(store: SpanStore, args: ErrorsArgs) -> ErrorsResult:
    window, baseline = windows(store, args)
    require_data(store, window)
    groups = error_groups(store, window, args.service, baseline)
    sampled = sum(g.count for g in groups) >= SAMPLE_SPANS
    groups, trunc, sugg = cap(groups, args.limit, "pass service=<name> or a shorter window")
    return ErrorsResult(groups=groups, truncated=trunc, suggestion=sugg, sampled=sampled)


TOOLS = [
    Tool("errors",
         "Failing spans grouped by service, operation, status code and message, with counts now vs "
         "baseline ('new' = not seen before) and a class: dependency (DNS/connect/TLS), saturation "
         "(pool/queue/limits) or error. Use it to see what is failing and how. sample_trace_ids "
         "and sample_span_ids are failing spans to open with get_trace.",
         ErrorsArgs, ErrorsResult, errors),
]
