"""Search spans (and the traces they belong to) by service, operation, status, duration, attribute."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from capture.store.api import SpanFilter, SpanStore
from tools.base import Capped, SpanRef, Tool, WindowArgs, cap, require_data, span_ref, windows


class SearchArgs(WindowArgs):
    service: str | None = Field(None, description="service name from list_services")
    operation: str | None = Field(None, description="span name, e.g. 'GET /cart' or 'SELECT orders'")
    kind: Literal["SERVER", "CLIENT", "INTERNAL", "PRODUCER", "CONSUMER"] | None = None
    status: Literal["OK", "ERROR", "UNSET"] | None = None
    min_duration_ms: float | None = Field(None, ge=0, le=1e9)
    attributes: dict[str, str] = Field(default_factory=dict,
                                       description="equality on attribute values, e.g. "
                                                   "{'http.response.status_code': '500'}")
    trace_id: str | None = None
    order: Literal["start", "duration_desc"] = "duration_desc"
    limit: int = Field(20, ge=1, le=100)


class SearchResult(Capped):
    spans: list[SpanRef]
    trace_ids: list[str] = Field(description="distinct traces of the spans, in result order")


def search_spans(store: SpanStore, args: SearchArgs) -> SearchResult:
    window, _ = windows(store, args)
    require_data(store, window)
    flt = SpanFilter(window=None if args.trace_id else window, service=args.service,
                     name=args.operation, kind=args.kind, status_code=args.status,
                     min_duration_ns=int(args.min_duration_ms * 1e6) if args.min_duration_ms else None,
                     trace_id=args.trace_id, attributes=dict(args.attributes),
                     limit=args.limit + 1, order=args.order)
    found = store.spans(flt)
    found, trunc, sugg = cap(found, args.limit, "add service, operation, status or min_duration_ms")
    refs = [span_ref(s) for s in found]
    return SearchResult(spans=refs, trace_ids=list(dict.fromkeys(r.trace_id for r in refs)),
                        truncated=trunc, suggestion=sugg)


TOOLS = [
    Tool("search_spans",
         "Find spans (and so traces) by service, operation, kind, status, minimum duration or "
         "attribute value, slowest first by default. Use it to get example requests for a symptom "
         "(e.g. failing POST /checkout, queries slower than 500 ms). Returns span and trace ids "
         "taken from the store; open a trace with get_trace.",
         SearchArgs, SearchResult, search_spans),
]
