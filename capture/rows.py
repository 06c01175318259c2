"""Spans as compact rows from the capture to the store (capture.export._otlp_wire.Row: untracked
by the collector, attributes as JSON text, the linker's facts read once); `span_of` gives the Span
back. Does not change Span; without the compiled module spans pass as they are.
"""
from __future__ import annotations

import sys
from typing import Any

import orjson

from capture.span import Span
from capture.store.api import PEER_KINDS, peer_name
from capture.store.columns import encode_json
from capture.traces.linker import TRACEPARENT, _thread, conn_key

try:
    from capture.export._otlp_wire import Row
except ImportError:  # no compiler at set-up
    Row = None
try:
    from capture import _rows
except ImportError:  # not built: row_of for each span
    _rows = None

# distinct (connection, thread) kept shared; cleared when full. Filled by every short connection,
# it is memory the agent holds for nothing until the clear: sized for the connections alive at once
_FACTS_MAX = 8_192
_facts: dict[tuple, tuple] = {}
_clears = 0  # the Python path's (the compiled one counts its own: facts_clears)


def facts_clears() -> int:
    """Times the facts table was full and cleared (guardian_agent_row_facts_clears): a clear a
    minute or more means more connections alive at once than _FACTS_MAX, or a flood of short ones."""
    return _clears + (_rows.clears() if _rows is not None else 0)


# freed pymalloc arenas kept mapped for the capture thread's next rows (capture/_rows.c keep_arenas):
# rows are made on the capture thread and freed in batches on the worker, and each arena mapped
# afresh is faulted in page by page. 16 MiB at most held warm (arenas are 1 MiB in 3.11)
KEEP_ARENAS = 16


def keep_arenas(n: int = KEEP_ARENAS) -> bool:
    """Keep up to `n` freed pymalloc arenas for reuse, process-wide (the agent's; call once, any
    thread holding the GIL). False where capture._rows is not built."""
    if _rows is None:
        return False
    _rows.keep_arenas(n)
    return True


def arenas() -> dict[str, int]:
    """The arena cache's counts: kept now, its bound, arenas handed out again, arenas mapped."""
    return _rows.arenas() if _rows is not None else {}


def facts_held() -> int:
    """Entries in the facts table now (at most _FACTS_MAX)."""
    return len(_facts)


def _facts_of(s: Span) -> tuple:
    """(connection key, thread, traceparent): one shared tuple per distinct value, since a
    keep-alive connection's spans all carry the same (a tuple per span would cost more than its
    attributes' JSON). A traceparent is new with each request: nothing to share."""
    global _clears
    tp = s.attributes.get(TRACEPARENT)
    f = (conn_key(s), _thread(s), tp)
    if tp is not None:
        return f
    shared = _facts.get(f)
    if shared is None:
        if len(_facts) >= _FACTS_MAX:
            _facts.clear()
            _clears += 1
        shared = _facts[f] = f
    return shared


def row_of(s: Span) -> Any:
    """One span as its Row (a Row as it is: the compiled path's, ConnTracker.spans_as_rows)."""
    if type(s) is Row:
        return s
    a = s.attributes
    kind = s.kind
    return Row(s.name, kind, s.start_time_unix_nano, s.end_time_unix_nano, s.status_code,
               s.status_message or "", None, s.resource, s.trace_id, s.span_id, s.parent_span_id,
               encode_json(a).decode(), _facts_of(s), None, peer_name(a) if kind in PEER_KINDS else None)


def to_rows(spans: list[Span]) -> list[Any]:
    """The spans as Rows (or the same list when Rows are not built); the Spans can die now.
    In C where setup.py built capture/_rows.c (the same Rows: tests/capture/test_rows_c.py)."""
    if Row is None:
        return spans
    if _rows is not None:
        return _rows.rows(spans, _facts, _FACTS_MAX)
    return [row_of(s) for s in spans]


# a row's own fields (not the resource dict or the connection facts: shared by many rows)
_OWN = ("name", "start_time_unix_nano", "end_time_unix_nano", "status_message", "trace_id", "span_id",
        "parent_span_id", "attrs_json", "peer")
_SAMPLE = 4
_ROWS_PER_SAMPLE = 32  # a small batch samples fewer rows: the capture hands one over per ring read


def row_bytes(r: Any) -> int:
    """The bytes one row holds of its own: the object and its strings (a Span: its attributes dict
    and their strings too)."""
    if not is_row(r):
        a = getattr(r, "attributes", None) or {}
        return (sys.getsizeof(r) + sys.getsizeof(a) + sum(sys.getsizeof(k) + sys.getsizeof(v) for k, v in a.items())
                + sum(sys.getsizeof(getattr(r, f, None)) for f in ("name", "trace_id", "span_id", "parent_span_id")))
    return sys.getsizeof(r) + sum(sys.getsizeof(getattr(r, f)) for f in _OWN)


def batch_bytes(rows: list[Any]) -> int:
    """About the bytes a batch of rows holds: the mean of a few rows spread over it (one per
    _ROWS_PER_SAMPLE, at most _SAMPLE), times its length (a cost per batch, not per row: the
    capture thread hands over a batch per ring read, at most capture.live.BATCH records and fewer
    at a moderate rate; four rows looked at cost 0.48 µs per span of 32-span batches, one 0.19;
    attribute text varies, so the queue's byte bound is approximate by that much)."""
    n = len(rows)
    if not n:
        return 0
    sample = max(1, min(_SAMPLE, n // _ROWS_PER_SAMPLE))
    step = max(1, n // sample)
    picks = rows[::step][:sample]
    return n * sum(row_bytes(r) for r in picks) // len(picks)


def is_row(s: Any) -> bool:
    return Row is not None and type(s) is Row


def span_of(r: Any) -> Span:
    """A row as the Span it was made from (a Span is returned as it is)."""
    if not is_row(r):
        return r
    return Span(r.name, r.kind, r.start_time_unix_nano, r.end_time_unix_nano, r.status_code,
                orjson.loads(r.attrs_json), r.resource, r.trace_id, r.span_id, r.parent_span_id,
                r.status_message)


if _rows is not None and (Row is None or not _rows.bind(Span, Row, row_of)):
    _rows = None  # (a Span or Row without its fields in slots)
