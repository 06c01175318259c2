"""What a tool is, and the pieces every tool shares: window arguments, span references,
structured errors and size caps.

Rule 1: tools only read the store, through its narrow API.
Rule 2: every result is bounded (limit + truncated + a narrower query to try) and carries
the trace/span ids an answer can cite.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field

from capture.span import Span
from capture.store.api import SpanFilter, SpanStore, TimeWindow, peer_name
from capture.store.window import WindowError, fmt_ns, resolve_window, split_baseline

# Attributes worth showing in a span reference; the rest stays in the store.
KEY_ATTRIBUTES = (
    "http.request.method", "url.path", "http.route", "http.response.status_code",
    "db.system", "db.operation.name", "db.query.text", "db.collection.name",
    "messaging.system", "messaging.destination.name", "messaging.operation.type",
    "rpc.system", "rpc.service", "rpc.method", "rpc.grpc.status_code",
    "server.address", "server.port", "error.type", "dns.question.name",
)
MAX_TEXT = 300  # long SQL or messages are cut to this many characters


class ToolError(Exception):
    """Bad input the caller can fix; call_tool turns it into {"error", "hint"}."""

    def __init__(self, error: str, hint: str):
        super().__init__(error)
        self.error, self.hint = error, hint


class WindowArgs(BaseModel):
    """Where to look. Give `since` or `start`/`end`; neither = the default window."""

    model_config = ConfigDict(extra="forbid")
    since: str | None = Field(None, description="window ending now, e.g. '15m', '2h'")
    start: str | None = Field(None, description="window start: ISO-8601 or unix seconds")
    end: str | None = Field(None, description="window end: ISO-8601 or unix seconds")
    baseline_start: str | None = Field(
        None, description="baseline start (default: the window of equal length just before)")
    baseline_end: str | None = Field(None, description="baseline end")


class Capped(BaseModel):
    """Fields every list-returning result has."""

    truncated: bool = False
    suggestion: str | None = None


class SpanRef(BaseModel):
    """A span as a citation: ids, who, what, how long, how it ended."""

    trace_id: str
    span_id: str
    parent_span_id: str | None = None
    service: str
    name: str
    kind: str
    start_ns: int
    duration_ms: float
    status: str
    status_message: str | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True)
class Tool:
    name: str
    description: str  # when to use it, and where its ids come from
    args_model: type[BaseModel]
    result_model: type[BaseModel]
    fn: Callable[[SpanStore, Any], BaseModel]


def cut(text: Any, n: int = MAX_TEXT) -> str:
    s = str(text)
    return s if len(s) <= n else s[: n - 1] + "…"


def span_ref(s: Span) -> SpanRef:
    attrs = {k: (cut(s.attributes[k]) if isinstance(s.attributes[k], str) else s.attributes[k])
             for k in KEY_ATTRIBUTES if k in s.attributes}
    return SpanRef(trace_id=s.trace_id, span_id=s.span_id, parent_span_id=s.parent_span_id,
                   service=s.service, name=s.name, kind=s.kind, start_ns=s.start_time_unix_nano,
                   duration_ms=round(s.duration_ns / 1e6, 3), status=s.status_code,
                   status_message=cut(s.status_message) if s.status_message else None,
                   attributes=attrs)


def peer_of(s: Span) -> str | None:
    """What a CLIENT/PRODUCER span calls when no server span is linked: the store's rule (peer_name)."""
    return peer_name(s.attributes)


def windows(store: SpanStore, args: WindowArgs) -> tuple[TimeWindow, TimeWindow]:
    """(current, baseline) from window arguments; ToolError on nonsense."""
    try:
        window = resolve_window(store, args.since, args.start, args.end)
        if args.baseline_start or args.baseline_end:
            if args.since is None and args.start is None and args.end is None:
                raise WindowError("a baseline needs an explicit window (since or start/end)")
            baseline = resolve_window(store, None, args.baseline_start,
                                      args.baseline_end or str(window.start_ns))
            return window, baseline
        if args.since is None and args.start is None and args.end is None:
            return split_baseline(store, window)
        n = window.end_ns - window.start_ns
        return window, TimeWindow(window.start_ns - n, window.start_ns)
    except WindowError as e:
        raise ToolError(str(e), "use since='15m' or start/end as ISO-8601 (2024-05-01T10:00:00Z)"
                                " or unix seconds") from None


def require_data(store: SpanStore, window: TimeWindow) -> None:
    """ToolError when the window holds no span, with the store's range as the hint."""
    if store.spans(SpanFilter(window=window, limit=1)):
        return
    rng = store.time_range()
    hint = ("the store is empty: capture or import spans first" if rng is None else
            f"the store holds spans from {fmt_ns(rng.start_ns)} to {fmt_ns(rng.end_ns)};"
            " pass start/end inside that range")
    raise ToolError("no spans in the requested window", hint)


def cap(items: list, limit: int, suggestion: str) -> tuple[list, bool, str | None]:
    """First `limit` items, whether more were dropped, and what to ask instead."""
    if len(items) > limit:
        return items[:limit], True, suggestion
    return items, False, None


def spread_spans(store: SpanStore, flt: SpanFilter, total: int, slices: int = 4) -> list[Span]:
    """Up to `total` spans matching flt, taken evenly from `slices` parts of its window.

    The first N by start time would all come from the window's beginning."""
    w = flt.window
    if w is None:
        return store.spans(replace(flt, limit=total))
    step = max((w.end_ns - w.start_ns) // slices, 1)
    out: list[Span] = []
    for i in range(slices):
        end = w.end_ns if i == slices - 1 else w.start_ns + (i + 1) * step
        part = TimeWindow(w.start_ns + i * step, end)
        out += store.spans(replace(flt, window=part, limit=max(total // slices, 1)))
    return out


def sample_traces(store: SpanStore, flt: SpanFilter, n: int = 3) -> list[str]:
    """Up to n distinct trace ids of spans matching the filter (for citations)."""
    flt.limit = max(n * 4, 10)
    seen: list[str] = []
    for s in store.spans(flt):
        if s.trace_id not in seen:
            seen.append(s.trace_id)
        if len(seen) >= n:
            break
    return seen
