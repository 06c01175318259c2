"""OTLP JSON lines (the OpenTelemetry Collector file exporter: one ExportTraceServiceRequest
per line) to spans. OTLP/JSON writes ids as hex, enums as ints or names, int64 as strings.
Lines in Guardian's own span shape (`guardian capture --json`) are read as they are."""
from __future__ import annotations

import base64
import json
from typing import Any, Iterator, TextIO

from capture.span import Span

_KINDS = {0: "INTERNAL", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
_STATUS = {0: "UNSET", 1: "OK", 2: "ERROR"}


def any_value(v: dict[str, Any]) -> Any:
    if "stringValue" in v:
        return v["stringValue"]
    if "intValue" in v:
        return int(v["intValue"])
    if "doubleValue" in v:
        return float(v["doubleValue"])
    if "boolValue" in v:
        return bool(v["boolValue"])
    if "arrayValue" in v:
        return [any_value(x) for x in (v["arrayValue"].get("values") or [])]
    if "kvlistValue" in v:
        return {kv["key"]: any_value(kv.get("value") or {}) for kv in v["kvlistValue"].get("values") or []}
    if "bytesValue" in v:
        return base64.b64decode(v["bytesValue"]).hex()
    return None


def attributes(items: list[dict[str, Any]] | None) -> dict[str, Any]:
    return {kv["key"]: any_value(kv.get("value") or {}) for kv in items or []}


def _enum(value: Any, table: dict[int, str], prefix: str) -> str:
    if isinstance(value, int):
        return table.get(value, table[0])
    if isinstance(value, str):
        name = value.removeprefix(prefix)
        return name if name in table.values() else table[0]
    return table[0]


def _hex_id(value: str | None, size: int) -> str | None:
    """Hex as the spec says; base64 from protobuf's generic JSON mapping is accepted too."""
    if not value:
        return None
    if len(value) == size * 2:
        return value.lower()
    raw = base64.b64decode(value)
    return raw.hex() if len(raw) == size else None


def request_spans(req: dict[str, Any]) -> Iterator[Span]:
    """Spans of one ExportTraceServiceRequest (already decoded from JSON)."""
    for rs in req.get("resourceSpans") or req.get("resource_spans") or []:
        resource = attributes((rs.get("resource") or {}).get("attributes"))
        for ss in rs.get("scopeSpans") or rs.get("instrumentationLibrarySpans") or []:
            for sp in ss.get("spans") or []:
                status = sp.get("status") or {}
                trace_id = _hex_id(sp.get("traceId"), 16)
                span_id = _hex_id(sp.get("spanId"), 8)
                if not trace_id or not span_id:
                    continue
                yield Span(
                    name=sp.get("name", ""),
                    kind=_enum(sp.get("kind", 0), _KINDS, "SPAN_KIND_"),
                    start_time_unix_nano=int(sp.get("startTimeUnixNano", 0)),
                    end_time_unix_nano=int(sp.get("endTimeUnixNano", 0)),
                    status_code=_enum(status.get("code", 0), _STATUS, "STATUS_CODE_"),
                    status_message=status.get("message", ""),
                    attributes=attributes(sp.get("attributes")),
                    resource=resource,
                    trace_id=trace_id,
                    span_id=span_id,
                    parent_span_id=_hex_id(sp.get("parentSpanId"), 8),
                )


def read_otlp_json(f: TextIO) -> Iterator[Span]:
    """Spans of every line; a line that is not valid JSON raises ValueError with its number."""
    for n, line in enumerate(f, 1):
        line = line.strip()
        if not line:
            continue
        try:
            req = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"line {n}: not JSON ({e.msg})") from None
        if "span_id" in req and "start_time_unix_nano" in req:  # Guardian's own span JSON
            try:
                yield Span.from_dict(req)
            except (KeyError, TypeError, ValueError) as e:
                raise ValueError(f"line {n}: not a span ({e})") from None
            continue
        yield from request_spans(req)
