"""Records (request + response) of a connection -> spans with OpenTelemetry attributes."""
from __future__ import annotations

import random
from dataclasses import fields

from capture import scrub
from capture.connection import EPOCH, Connection
from capture.protocols.base import Record
from capture.span import Span

_IDS_PER_DRAW = 256
_ids: list[str] = []  # 48 hex digits each: a trace id and a span id, drawn many at a time


def _new_ids() -> tuple[str, str]:
    """capture.span.new_ids() drawn in bulk: one random draw and one hex conversion for many
    spans instead of one each (a visible share of the per-span cost on the capture's hot path)."""
    if not _ids:
        blob = random.getrandbits(192 * _IDS_PER_DRAW).to_bytes(24 * _IDS_PER_DRAW, "little").hex()
        _ids.extend([blob[i:i + 48] for i in range(0, len(blob), 48)])
    ids = _ids.pop()
    span_id = ids[32:]
    return ids[:32], span_id if span_id != "0000000000000000" else "0000000000000001"


def record_to_span(rec: Record, conn: Connection) -> Span:
    """Build the span of one exchange, seen from the process that owns `conn`."""
    kind = rec.kind or ("SERVER" if conn.role == "SERVER" else "CLIENT")
    attrs = rec.attributes  # each record's dict is fresh: no copy on the hot path
    message = scrub.record(attrs, rec.status_message)
    # each end that is known (a short-lived client may be gone before /proc tells its side)
    client, server = (conn.local, conn.remote) if conn.role != "SERVER" else (conn.remote, conn.local)
    if server:
        attrs.setdefault("server.address", server[0])
        attrs.setdefault("server.port", server[1])
    if client:
        attrs.setdefault("client.address", client[0])
        attrs.setdefault("client.port", client[1])
    attrs.setdefault("network.transport", conn.transport)
    if conn.request_tid:
        attrs.setdefault("thread.id", conn.request_tid)
    if conn.source not in ("syscall", "pcap"):
        attrs.setdefault("tls.library", conn.source)
    if conn.epoch:
        attrs.setdefault(EPOCH, conn.epoch)
    status = rec.status
    # HTTP semconv: 4xx is an error for the client (its request failed), not for the server.
    if kind == "CLIENT" and status != "ERROR":
        code = attrs.get("http.response.status_code")
        if isinstance(code, int) and code >= 400:
            status = "ERROR"
            attrs.setdefault("error.type", str(code))
    trace_id, span_id = _new_ids()
    # positional: a dataclass __init__ taking eleven keywords costs more than the rest of this
    # function (_SPAN_FIELDS below pins the order)
    return Span(rec.name, kind, rec.start_ns, rec.end_ns if rec.end_ns > rec.start_ns else rec.start_ns,
                status, attrs, conn.resource,  # the resource is shared by the connection's spans
                trace_id, span_id, None, message)


_SPAN_FIELDS = ("name", "kind", "start_time_unix_nano", "end_time_unix_nano", "status_code", "attributes",
                "resource", "trace_id", "span_id", "parent_span_id", "status_message")
if tuple(f.name for f in fields(Span)) != _SPAN_FIELDS:
    raise ImportError(f"capture.span.Span's fields changed: record_to_span() passes {_SPAN_FIELDS} by position")
