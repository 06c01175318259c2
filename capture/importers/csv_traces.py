"""Traces from CSV with a column mapping (trace id, span id, parent id, service, operation,
start, end or duration, status; optional kind). Unmapped columns become attributes.

Times: unix seconds/ms/us/ns (told apart by magnitude) or ISO-8601. Without a kind column, a
span is SERVER when it is a root or its parent belongs to another service, else INTERNAL, so
RED and the service map work on the imported data.
"""
from __future__ import annotations

import csv
import hashlib
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Iterator, TextIO

from capture.span import KINDS, Span

FIELDS = ("trace_id", "span_id", "parent_id", "service", "operation", "start", "end", "duration",
          "status", "kind")
_UNITS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
_ERROR_WORDS = {"error", "err", "failed", "failure", "fail", "true", "status_code_error"}
_OK_WORDS = {"ok", "success", "succeeded", "false", "status_code_ok"}


def parse_mapping(items: list[str] | None) -> dict[str, str]:
    """["service=svc", ...] → {"service": "svc"}; unknown fields raise ValueError."""
    out = {}
    for item in items or []:
        for part in item.split(","):
            key, _, col = part.partition("=")
            key = key.strip()
            if key not in FIELDS or not col:
                raise ValueError(f"bad mapping {part!r}: use FIELD=COLUMN with FIELD in {', '.join(FIELDS)}")
            out[key] = col.strip()
    return out


def to_ns(value: str) -> int:
    value = value.strip()
    try:
        x = Decimal(value)  # exact: float would round ns timestamps
    except InvalidOperation:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1_000
    for limit, factor in ((1e17, 1), (1e14, 1_000), (1e11, 1_000_000)):
        if abs(x) >= limit:
            return int(x * factor)
    return int(x * 1_000_000_000)


def status_of(value: str) -> str:
    v = value.strip().lower()
    if not v or v == "unset":
        return "UNSET"
    if v in _ERROR_WORDS:
        return "ERROR"
    if v in _OK_WORDS:
        return "OK"
    if v.isdigit():  # HTTP status (>= 500 is the server's failure) or an OTLP status code
        n = int(v)
        return "ERROR" if n >= 500 or n == 2 else "OK"
    return "ERROR"


def _id(value: str, size: int) -> str:
    """Ids as given when hex of the right size, else a stable hash of the text."""
    v = value.strip().lower().replace("-", "")
    if len(v) == size * 2 and all(c in "0123456789abcdef" for c in v):
        return v
    return hashlib.blake2b(value.encode(), digest_size=size).hexdigest()


def read_csv(f: TextIO, mapping: dict[str, str] | None = None,
             duration_unit: str = "ms") -> Iterator[Span]:
    cols = {k: (mapping or {}).get(k, k) for k in FIELDS}
    reader = csv.DictReader(f)
    header = reader.fieldnames or []
    for need in ("trace_id", "span_id", "service", "operation", "start"):
        if cols[need] not in header:
            raise ValueError(f"CSV has no column {cols[need]!r} for {need} (columns: {', '.join(header)})")
    if cols["end"] not in header and cols["duration"] not in header:
        raise ValueError(f"CSV needs an end column ({cols['end']!r}) or a duration column ({cols['duration']!r})")
    unit = _UNITS[duration_unit]
    mapped = {c for c in cols.values() if c in header}
    spans = []
    for n, row in enumerate(reader, 2):
        try:
            spans.append(_row_span(row, cols, unit, mapped))
        except (ValueError, InvalidOperation, TypeError, AttributeError) as e:
            raise ValueError(f"row {n}: {e.__class__.__name__} {e}".strip()) from None
    by_id = {(s.trace_id, s.span_id): s for s in spans}
    for s in spans:
        if not s.kind:
            p = by_id.get((s.trace_id, s.parent_span_id)) if s.parent_span_id else None
            s.kind = "SERVER" if p is None or p.service != s.service else "INTERNAL"
    return iter(spans)


def _row_span(row: dict[str, str], cols: dict[str, str], unit: int, mapped: set[str]) -> Span:
    """One CSV row as a span (kind left empty when the file has none: inferred by the caller)."""
    start = to_ns(row[cols["start"]])
    if row.get(cols["end"]):
        end = to_ns(row[cols["end"]])
    else:
        end = start + int(Decimal(row[cols["duration"]].strip()) * unit)
    parent = (row.get(cols["parent_id"]) or "").strip()
    kind = (row.get(cols["kind"]) or "").strip().upper().removeprefix("SPAN_KIND_")
    return Span(
        name=row[cols["operation"]], kind=kind if kind in KINDS else "",
        start_time_unix_nano=start, end_time_unix_nano=end,
        status_code=status_of(row.get(cols["status"]) or ""),
        attributes={k: v for k, v in row.items() if k not in mapped and k and v not in (None, "")},
        resource={"service.name": row[cols["service"]]},
        trace_id=_id(row[cols["trace_id"]], 16), span_id=_id(row[cols["span_id"]], 8),
        parent_span_id=_id(parent, 8) if parent and parent not in ("0", "null", "None") else None)
