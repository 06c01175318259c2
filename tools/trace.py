"""One trace as a tree, with each span's self time and the trace's critical path.

The tree helpers (children, self time, critical path) are shared with the investigator.
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from capture.span import Span
from capture.store.api import SpanStore
from tools.base import Capped, SpanRef, Tool, ToolError, cut, span_ref


class Tree:
    """Parent/child index of one trace's spans; spans whose parent is missing are roots."""

    def __init__(self, spans: list[Span]):
        self.spans = sorted(spans, key=lambda s: s.start_time_unix_nano)
        self.by_id = {s.span_id: s for s in self.spans}
        self.children: dict[str, list[Span]] = {s.span_id: [] for s in self.spans}
        self.roots: list[Span] = []
        for s in self.spans:
            if s.parent_span_id in self.by_id and s.parent_span_id != s.span_id:
                self.children[s.parent_span_id].append(s)
            else:
                self.roots.append(s)

    def self_ns(self, s: Span) -> int:
        """Duration not covered by any child (children clipped to the span, overlaps merged)."""
        lo, hi = s.start_time_unix_nano, s.end_time_unix_nano
        ivs = sorted((max(c.start_time_unix_nano, lo), min(c.end_time_unix_nano, hi))
                     for c in self.children[s.span_id])
        covered, cur_a, cur_b = 0, None, None
        for a, b in ivs:
            if b <= a:
                continue
            if cur_b is None or a > cur_b:
                covered += (cur_b - cur_a) if cur_b is not None else 0
                cur_a, cur_b = a, b
            else:
                cur_b = max(cur_b, b)
        covered += (cur_b - cur_a) if cur_b is not None else 0
        return max(hi - lo - covered, 0)

    def wait_before_children_ns(self, s: Span) -> int | None:
        """Time from the span's start to its first child's start (None without children)."""
        kids = self.children[s.span_id]
        if not kids:
            return None
        return max(min(c.start_time_unix_nano for c in kids) - s.start_time_unix_nano, 0)

    def critical_path(self, s: Span) -> list[Span]:
        """Spans that bound the end-to-end time: the last-finishing child, then backwards."""
        path = [s]
        cursor = s.end_time_unix_nano
        for c in sorted(self.children[s.span_id], key=lambda c: -c.end_time_unix_nano):
            if c.end_time_unix_nano <= cursor:
                path += self.critical_path(c)
                cursor = c.start_time_unix_nano
        return path

    def descendants(self, s: Span) -> list[Span]:
        out, stack = [], list(self.children[s.span_id])
        while stack:
            c = stack.pop()
            out.append(c)
            stack += self.children[c.span_id]
        return out

    def depth(self, s: Span) -> int:
        d = 0
        while s.parent_span_id in self.by_id and d < 1000:
            s = self.by_id[s.parent_span_id]
            d += 1
        return d


class TraceNode(SpanRef):
    depth: int
    self_ms: float
    critical: bool = False


class TraceArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    trace_id: str = Field(..., min_length=1, max_length=64,
                          description="a trace id from another tool's result")
    max_spans: int = Field(100, ge=1, le=500)


class TraceResult(Capped):
    trace_id: str
    span_count: int
    duration_ms: float
    services: list[str]
    errors: int
    spans: list[TraceNode] = Field(description="depth-first, parents before children")
    critical_path: list[str] = Field(description="span ids, root first")


def get_trace(store: SpanStore, args: TraceArgs) -> TraceResult:
    spans = store.trace(args.trace_id)
    if not spans:
        raise ToolError(f"unknown trace {cut(args.trace_id, 64)!r}",
                        "take trace ids from search_spans, anomalies or errors results")
    t = Tree(spans)
    root = max(t.roots, key=lambda s: s.duration_ns)
    crit = t.critical_path(root)
    on_path = {s.span_id for s in crit}
    ordered: list[tuple[Span, int]] = []
    stack = [(r, 0) for r in reversed(t.roots)]
    while stack:
        s, d = stack.pop()
        ordered.append((s, d))
        stack += [(c, d + 1) for c in reversed(t.children[s.span_id])]
    nodes = [TraceNode(**span_ref(s).model_dump(), depth=d, self_ms=round(t.self_ns(s) / 1e6, 3),
                       critical=s.span_id in on_path) for s, d in ordered]
    if len(nodes) > args.max_spans:
        # Keep what explains the trace: the critical path and errors first.
        keep = sorted(nodes, key=lambda n: (not n.critical, n.status != "ERROR", -n.duration_ms))
        ids = {n.span_id for n in keep[: args.max_spans]}
        nodes = [n for n in nodes if n.span_id in ids]
        trunc, sugg = True, "pass a larger max_spans (<= 500)"
    else:
        trunc, sugg = False, None
    lo = min(s.start_time_unix_nano for s in spans)
    hi = max(s.end_time_unix_nano for s in spans)
    return TraceResult(trace_id=args.trace_id, span_count=len(spans),
                       duration_ms=round((hi - lo) / 1e6, 3),
                       services=sorted({s.service for s in spans}),
                       errors=sum(1 for s in spans if s.status_code == "ERROR"),
                       spans=nodes, critical_path=[s.span_id for s in crit],
                       truncated=trunc, suggestion=sugg)


TOOLS = [
    Tool("get_trace",
         "One request end to end: its spans as a tree (depth-first, with each span's own time "
         "excluding children) and the critical path that bounds its latency. Use it to walk a slow "
         "or failing request down to the span responsible. The trace_id must come from another "
         "tool's result (search_spans, anomalies, errors, slow_queries).",
         TraceArgs, TraceResult, get_trace),
]
